// headscope explorer: type a text, click a head, see what its attention score is made of (QK) and what it writes (OV, logits).
// Plain JavaScript, no build step. Every string from the server or the user reaches the page through
// textContent (never innerHTML); the pattern is drawn by circuitsvis (React escapes its tokens).
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var state = { text: "", head: null, pos: null, target: "", corrupt: "", wrong: "" };
  var pathsPos = null; // the position the causal paths on the page were patched at (null: none shown)
  var page = Math.random().toString(36).slice(2) + Date.now().toString(36); // this page's id: newer requests supersede older
  var seqs = { text: 0, head: 0, qk: 0, position: 0, paths: 0 };
  var view = null; // the last /api/text answer
  var row = null; // the chosen head's attention row from pos (tokens shading)
  var token = null;
  var sortCol = null, sortDesc = true;

  // --- the token an exposed server requires: from the address (#token=...), kept for this tab only ---
  (function () {
    var h = new URLSearchParams(location.hash.slice(1));
    if (h.get("token")) { sessionStorage.setItem("headscope-token", h.get("token")); }
    token = sessionStorage.getItem("headscope-token");
  })();

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
  function visible(t) { return String(t).replace(/ /g, "\u00b7").replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192"); }
  function fmt(v, nd) { return v === null || v === undefined ? "–" : Number(v).toFixed(nd === undefined ? 3 : nd); }
  function status(msg, isError) { var s = $("status"); s.textContent = msg; s.className = isError ? "error" : "muted"; }
  // an error shown in the card it belongs to (replacing what the card showed: no stale numbers), and at the top
  function cardError(box, msg) { status(msg, true); clear($(box)).appendChild(el("p", msg, "error")); }
  function answered() { if ($("status").className === "error") status(""); } // a later answer clears an earlier error

  // --- the state lives in the address: text, head, position, token to explain ---
  function readHash() {
    var h = new URLSearchParams(location.hash.slice(1));
    state.text = h.get("text") || "";
    state.head = h.get("head");
    state.pos = h.has("pos") && /^\d+$/.test(h.get("pos")) ? parseInt(h.get("pos"), 10) : null;
    state.target = h.get("target") || "";
    state.corrupt = h.get("corrupt") || "";
    state.wrong = h.get("wrong") || "";
  }
  function writeHash() {
    var h = new URLSearchParams();
    h.set("text", state.text);
    if (state.head) h.set("head", state.head);
    if (state.pos !== null) h.set("pos", String(state.pos));
    if (state.target) h.set("target", state.target);
    if (state.corrupt) h.set("corrupt", state.corrupt);
    if (state.corrupt && state.wrong) h.set("wrong", state.wrong);
    history.replaceState(null, "", "#" + h.toString());
  }

  function post(call, body, channel) {
    if (channel) { seqs[channel] += 1; body.page = page; body.seq = seqs[channel]; }
    var headers = { "Content-Type": "application/json" };
    if (token) headers["X-Headscope-Token"] = token;
    return fetch("/api/" + call, { method: "POST", headers: headers, body: JSON.stringify(body) }).catch(function () {
      throw new Error("no answer from the headscope server at " + location.host + ": is headscope serve still running? Start it again, then repeat the last click (the page keeps its state)");
    }).then(function (r) {
      if (r.status === 409) return null; // superseded by a newer request of this page
      var kind = r.headers.get("Content-Type") || "";
      if (!r.ok) {
        return r.json().catch(function () { return {}; }).then(function (e) {
          var msg = (e.error || ("HTTP " + r.status)) + (e.hint ? " (" + e.hint + ")" : "");
          throw new Error(msg);
        });
      }
      if (channel && body.seq !== seqs[channel]) return null; // an answer to an older request: drop it
      return kind.indexOf("application/json") === 0 ? r.json() : r.text();
    });
  }

  // --- the text: tokens and the heads x scores table ---
  function analyse() {
    var text = $("text").value;
    if (!text.trim()) { status("Type a text first.", true); return; }
    status("Analysing…");
    var t0 = performance.now();
    post("text", { text: text }, "text").then(function (v) {
      if (!v) return;
      view = v; state.text = text; pathsPos = null; clear($("paths"));
      var said = [];
      if (state.pos !== null && state.pos >= v.n_tokens) said.push("position " + state.pos + " is past the text's " + v.n_tokens + " tokens: showing the last");
      if (state.pos === null || state.pos >= v.n_tokens) state.pos = v.n_tokens - 1;
      if (state.head && !headExists(state.head)) said.push(state.head + " is not a head of " + v.model + " (layers 0.." + (v.rows[v.rows.length - 1].layer) + ", heads 0.." + (v.rows[v.rows.length - 1].index) + "): showing " + defaultHead(v));
      if (!state.head || !headExists(state.head)) state.head = defaultHead(v);
      drawNotes(v, said); drawTable(v); drawTokens();
      $("save").disabled = false;
      status(v.n_tokens + " tokens, analysed in " + ((performance.now() - t0) / 1000).toFixed(2) + " s (server " + v.seconds.toFixed(2) + " s)");
      writeHash();
      loadHead(); loadPosition(); loadQK();
      if (state.corrupt) patch();
    }).catch(function (e) { status(e.message + (view ? " — the views below are still of the text analysed before" : ""), true); });
  }
  function headExists(h) { return view.rows.some(function (r) { return r.head === h; }); }
  function defaultHead(v) {
    var c = v.columns.findIndex(function (col) { return col.key === "random:induction"; });
    if (c < 0) return v.rows[0].head;
    var best = v.rows[0];
    v.rows.forEach(function (r) { if ((r.values[c] || -1) > (best.values[c] || -1)) best = r; });
    return best.head;
  }
  function drawNotes(v, said) {
    var box = clear($("notes"));
    v.notes.concat(said || []).forEach(function (n) { box.appendChild(el("p", n, "note")); });
    $("model").textContent = v.model + " · " + v.n_tokens + " tokens";
  }
  function drawTable(v) {
    var head = clear($("heads").tHead), body = clear($("heads").tBodies[0]);
    var tr = el("tr");
    var th0 = el("th", "head"); th0.dataset.col = "-1"; tr.appendChild(th0);
    v.columns.forEach(function (c, i) { var th = el("th", c.header); th.title = c.title; th.dataset.col = String(i); tr.appendChild(th); });
    head.appendChild(tr);
    Array.prototype.forEach.call(tr.cells, function (th) { th.addEventListener("click", function () { sortBy(parseInt(th.dataset.col, 10)); }); });
    v.rows.forEach(function (r) {
      var row = el("tr"); row.dataset.head = r.head; row.dataset.order = String(r.layer * 1000 + r.index);
      row.appendChild(el("td", r.head));
      r.values.forEach(function (x) { var td = el("td", fmt(x)); td.dataset.v = x === null ? "" : String(x); row.appendChild(td); });
      row.addEventListener("click", function () { selectHead(r.head); });
      body.appendChild(row);
    });
    if (sortCol !== null) { sortDesc = !sortDesc; sortBy(sortCol); }
    markHead();
  }
  function sortBy(col) {
    sortDesc = sortCol === col ? !sortDesc : true; sortCol = col;
    var body = $("heads").tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x, y;
      if (col < 0) { x = +a.dataset.order; y = +b.dataset.order; }
      else { x = parseFloat(a.cells[col + 1].dataset.v); y = parseFloat(b.cells[col + 1].dataset.v); if (isNaN(x)) x = -Infinity; if (isNaN(y)) y = -Infinity; }
      return sortDesc ? y - x : x - y;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function markHead() {
    Array.prototype.forEach.call($("heads").tBodies[0].rows, function (r) {
      var on = r.dataset.head === state.head;
      r.classList.toggle("sel", on);
      if (on) { var box = r.closest(".scroll"); box.scrollTop = r.offsetTop - box.clientHeight / 3; }
    });
  }
  function drawTokens() {
    var box = clear($("tokens")), sel = null;
    var max = row ? Math.max.apply(null, row.slice(1).concat([1e-9])) : 1;
    view.tokens.forEach(function (t, i) {
      var s = el("span", visible(t), "tok" + (i === state.pos ? " sel" : ""));
      s.dataset.pos = String(i);
      if (row && i < row.length) {
        var a = Math.min(1, row[i] / max);
        s.style.background = "rgba(31, 119, 180, " + (0.08 + 0.8 * a).toFixed(3) + ")";
        if (a > 0.55) s.style.color = "#fff";
        s.title = "position " + i + " · attention " + fmt(row[i], 4);
      } else { s.title = "position " + i; }
      s.addEventListener("click", function () { selectPos(i); });
      box.appendChild(s);
      if (i === state.pos) sel = s;
    });
    if (sel && (sel.offsetTop < box.scrollTop || sel.offsetTop + sel.offsetHeight > box.scrollTop + box.clientHeight)) {
      box.scrollTop = sel.offsetTop - box.clientHeight / 2;
    }
  }
  function selectHead(h) { state.head = h; markHead(); writeHash(); loadHead(); loadQK(); }
  function selectPos(p) {
    state.pos = p; writeHash(); drawTokens(); loadHead(); loadPosition(); loadQK();
    if (state.corrupt) { clear($("paths")); pathsPos = null; $("paths-title").textContent = "Causal paths into this prediction (press Patch for position " + p + ")"; }
  }

  // --- the chosen head: pattern, QK decomposition, OV ---
  function loadHead() {
    if (!view) return;
    $("pattern-title").textContent = "Attention pattern of " + state.head + " (loading…)";
    post("head", { text: state.text, head: state.head, pos: state.pos }, "head").then(function (h) {
      if (!h) return;
      answered(); row = h.row; drawTokens();
      drawPattern(h); drawWrite(h);
    }).catch(function (e) { $("pattern-title").textContent = "Attention pattern of " + state.head; cardError("pattern-box", e.message); });
  }
  // asked after the pattern and the logit view: the server computes one request at a time in order,
  // so the page is usable (pattern, logit view) before the slower QK/OV card fills in
  function loadQK() {
    if (!view) return;
    $("qk-title").textContent = "QK of " + state.head + " (computing…)";
    post("qk", { text: state.text, head: state.head, pos: state.pos }, "qk").then(function (h) {
      if (!h) return;
      answered(); drawQK(h.qk); drawOV(h);
    }).catch(function (e) { $("qk-title").textContent = "QK of " + state.head; cardError("qk", e.message); });
  }
  function drawPattern(h) {
    var w = h.window;
    $("pattern-title").textContent = "Attention pattern of " + h.head;
    $("pattern-note").textContent = "queries down, keys across; hover a cell to read its weight" +
      (w[0] > 0 || w[1] < view.n_tokens ? "; positions " + w[0] + "–" + (w[1] - 1) + " of " + view.n_tokens + " (rows are the model's own: keys before the window are not drawn; the numbers on the axes count from position " + w[0] + ")" : "");
    var old = $("pattern-box"), fresh = el("div"); fresh.id = "pattern-box"; old.parentNode.replaceChild(fresh, old);
    var tokens = view.tokens.slice(w[0], w[1]).map(visible);
    try {
      CircuitsVis.render("pattern-box", CircuitsVis.AttentionPattern, { tokens: tokens, attention: h.pattern, maxValue: 1, minValue: 0, showAxisLabels: true });
      fresh.dataset.head = h.head; fresh.dataset.pos = String(h.position);
    } catch (err) { fresh.textContent = "The pattern could not be drawn: " + err.message; }
  }
  // a table in its own sideways-scrolling box (never wider than its card); a cell is text, a number,
  // {tk: token} (a token chip) or {toks: [{token, effect}]} (a list of token chips that wraps)
  function table(cols, rows) {
    var box = el("div", null, "table-scroll"), t = box.appendChild(el("table")), hr = el("tr");
    cols.forEach(function (c, i) { hr.appendChild(el("th", c, rows.length && rows[0][i] && rows[0][i].toks ? "toks" : "")); });
    t.appendChild(el("thead")).appendChild(hr);
    var b = t.appendChild(el("tbody"));
    rows.forEach(function (r) {
      var tr = el("tr");
      r.forEach(function (c) {
        var td = el("td");
        if (c && c.tk !== undefined) { td.appendChild(el("span", visible(c.tk), "tk")); }
        else if (c && c.toks !== undefined) { td.className = "toks"; tokList(c.toks).forEach(function (x) { td.appendChild(x); td.appendChild(document.createTextNode(" ")); }); }
        else if (typeof c === "number") { td.textContent = fmt(c); td.className = c > 0 ? "pos" : c < 0 ? "neg" : ""; }
        else td.textContent = c;
        tr.appendChild(td);
      });
      b.appendChild(tr);
    });
    return box;
  }
  function drawQK(q) {
    $("qk-title").textContent = "QK of " + q.head + ": what the score is made of";
    var p = q.pairs[0];
    $("qk-how").textContent = q.how + ". Score " + fmt(q.score) + " (model " + fmt(q.model_score) + "; pre-softmax, score units), attention weight " + fmt(q.attention) +
      ". Each component's share of the score, minus its mean over every key the query sees (what the softmax responds to): an attribution, not an ablation; " + q.note;
    var box = clear($("qk")), grid = el("div", null, "cols");
    var kdiv = el("div"), qdiv = el("div");
    kdiv.appendChild(el("b", "key side (token " + p[1] + ": what lifts this key), score units"));
    var qkCols = ["component", "vs mean key", "share"];
    kdiv.appendChild(table(qkCols, q.key.map(function (c) { return [c.component, c.vs_mean, c.contribution]; })));
    qdiv.appendChild(el("b", "query side (token " + p[0] + "), score units"));
    qdiv.appendChild(table(qkCols, q.query.map(function (c) { return [c.component, c.vs_mean, c.contribution]; })));
    grid.appendChild(kdiv); grid.appendChild(qdiv); box.appendChild(grid);
  }
  // one unbreakable item per token (its chip and its effect); a list wraps between items
  function tokList(xs) {
    return xs.map(function (x) {
      var item = el("span", null, "tok-item");
      item.appendChild(el("span", visible(x.token), "tk"));
      item.appendChild(document.createTextNode(" " + fmt(x.effect, 2)));
      return item;
    });
  }
  function drawWrite(h) {
    $("ov-title").textContent = "OV of " + h.head + ": what it writes";
    var box = clear($("write"));
    box.appendChild(el("b", "At position " + h.position + " it writes (its output through the unembedding, direct path):"));
    box.appendChild(table(["", "tokens (centred logit)"], [["promotes", { toks: h.write.promotes }], ["suppresses", { toks: h.write.suppresses }]]));
  }
  function drawOV(h) {
    var box = clear($("ov"));
    box.appendChild(el("b", "Attending to the tokens it attends to most here (first token left out), it would write (OV circuit, block-0 effective embedding):"));
    box.appendChild(table(["source", "self-rank (1 = copies)", "promotes (logit per unit final-norm scale)", "suppresses (same units)"], h.ov.sources.map(function (s) {
      return [{ tk: s.token }, String(s.self_rank), { toks: s.promotes.slice(0, 5) }, { toks: s.suppresses.slice(0, 5) }];
    })));
    box.appendChild(el("p", h.ov.convention, "muted"));
  }

  // --- the chosen position: predictions and every head's direct logit effect ---
  function loadPosition() {
    if (!view) return;
    var target = $("target").value;
    post("position", { text: state.text, pos: state.pos, target: target || null }, "position").then(function (v) {
      if (!v) return;
      answered(); state.target = target;
      $("logit-title").textContent = "Logit view at position " + v.position + " (" + visible(v.token) + " → " + visible(v.target) + ")";
      var box = clear($("logits")), grid = el("div", null, "cols");
      var a = el("div"), b = el("div");
      a.appendChild(el("b", "top predictions"));
      a.appendChild(table(["token", "probability"], v.predictions.map(function (p) { return [{ tk: p.token }, p.prob]; })));
      b.appendChild(el("b", "heads' direct effect on the logit of " + visible(v.target) + " (" + v.target_is + ")"));
      b.appendChild(table(["head", "direct effect (centred logit)"], v.top_heads.map(function (x) { return [x.head, x.effect]; })));
      grid.appendChild(a); grid.appendChild(b); box.appendChild(grid);
      box.appendChild(el("p", "In centred logits: all heads together " + fmt(v.heads_total) + "; every component " + fmt(v.logit) + " vs the model's own " + fmt(v.model_logit) + ". " +
        (v.target_kind === "next" ? "" : "The definition below says \u201cthe actual next token\u201d; here it is " + visible(v.target) + ", " + v.target_is + ". ") + v.definition, "muted"));
      writeHash();
    }).catch(function (e) { $("logit-title").textContent = "Logit view at position " + state.pos; cardError("logits", e.message); });
  }

  // --- causal paths into the prediction (path patching to the logits) ---
  function patch() {
    state.corrupt = $("corrupt").value; state.wrong = $("wrong").value; pathsPos = null;
    if (!view || !state.corrupt.trim()) { clear($("paths")); state.corrupt = ""; writeHash(); return; }
    $("paths-title").textContent = "Causal paths into the prediction at position " + state.pos + " (patching…)";
    var body = { text: state.text, pos: state.pos, corrupt: state.corrupt, target: state.target || null, wrong: state.wrong || null };
    post("paths", body, "paths").then(function (v) {
      if (!v) return;
      answered(); writeHash(); pathsPos = v.position;
      $("paths-title").textContent = "Causal paths into the prediction at position " + v.position;
      var box = clear($("paths"));
      // the gap the shares divide by has the wrong sign: the saved page's warning, and the changes in the metric
      if (v.warning) box.appendChild(el("p", v.warning, "note gap-warning"));
      box.appendChild(el("p", "logit(" + visible(v.answer) + ") − logit(" + visible(v.wrong) + "), in logits: " + fmt(v.clean_metric) + " on the text, " +
        fmt(v.corrupt_metric) + " on the corrupted text (" + visible(v.answer) + ": " + v.answer_is + "; " + visible(v.wrong) + ": " + v.wrong_is + "). " + v.notes.join("; "), "muted"));
      box.appendChild(table(["sender → logits", v.column], v.paths.map(function (p) { return [p.sender, p[v.shown]]; })));
    }).catch(function (e) { $("paths-title").textContent = "Causal paths into this prediction"; cardError("paths", e.message); });
  }

  function save() {
    status("Writing the page…");
    // the causal paths go on the saved page only when they are on this page, for this position (and wrong token)
    var shown = pathsPos === state.pos;
    var body = { text: state.text, head: state.head, pos: state.pos, target: state.target || null, corrupt: shown ? state.corrupt || null : null, wrong: shown ? state.wrong || null : null };
    post("save", body).then(function (html) {
      var url = URL.createObjectURL(new Blob([html], { type: "text/html" }));
      var a = el("a"); a.href = url; a.download = "headscope-" + state.head + "-pos" + state.pos + ".html";
      document.body.appendChild(a); a.click(); a.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 5000);
      status("Saved " + a.download + ": one self-contained page, like headscope report's.");
    }).catch(function (e) { status(e.message, true); });
  }

  $("run").addEventListener("click", function () { state.pos = null; analyse(); });
  $("text").addEventListener("keydown", function (e) { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { state.pos = null; analyse(); } });
  $("explain").addEventListener("click", loadPosition);
  $("target").addEventListener("keydown", function (e) { if (e.key === "Enter") loadPosition(); });
  $("save").addEventListener("click", save);
  $("patch").addEventListener("click", patch);
  $("filter").addEventListener("input", function () {
    var q = this.value.trim().toLowerCase();
    Array.prototype.forEach.call($("heads").tBodies[0].rows, function (r) { r.hidden = q !== "" && r.dataset.head.toLowerCase().indexOf(q) < 0; });
  });

  readHash();
  $("text").value = state.text || "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.";
  $("target").value = state.target;
  $("corrupt").value = state.corrupt;
  $("wrong").value = state.wrong;
  var info = {};
  if (token) info["X-Headscope-Token"] = token;
  fetch("/api/info", { headers: info }).then(function (r) { return r.json(); }).then(function (i) {
    if (i.model) $("model").textContent = i.model + " · " + i.n_layers + " layers × " + i.n_heads + " heads · texts up to " + i.max_tokens + " tokens";
    else status(i.error || "the server refused", true);
  });
  if (state.text) analyse();
})();
