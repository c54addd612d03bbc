// headscope report: render the circuitsvis views from their JSON islands, and make tabs and
// tables work. Runs once, after circuitsvis's bundle (which defines the global CircuitsVis).
(function () {
  "use strict";

  // One JSON island per view: a script element of type application/json whose data-cv-target names
  // the element to draw into and data-cv-component the circuitsvis component; a failure shows in
  // place and on the console.
  document.querySelectorAll("script[data-cv-target]").forEach(function (island) {
    if (island.dataset.cvDone) return;
    island.dataset.cvDone = "1";
    var target = document.getElementById(island.dataset.cvTarget);
    try {
      if (typeof CircuitsVis === "undefined") throw new Error("the circuitsvis bundle did not load");
      var component = CircuitsVis[island.dataset.cvComponent];
      if (!component) throw new Error("circuitsvis has no component " + island.dataset.cvComponent);
      CircuitsVis.render(target.id, component, JSON.parse(island.textContent));
      target.dataset.rendered = "1";
    } catch (err) {
      target.textContent = "This interactive view could not be drawn: " + err.message;
      console.error("headscope: attention view " + island.dataset.cvTarget + " failed:", err);
    }
  });

  // Tabs: in a .tabs bar, each button's data-tab names its .tabpanel; a hidden panel has class "off"
  // (moved off-screen but still laid out, so its charts keep their size).
  document.querySelectorAll(".hs .tabs").forEach(function (bar) {
    var buttons = Array.prototype.slice.call(bar.querySelectorAll("button[data-tab]"));
    buttons.forEach(function (b) {
      b.addEventListener("click", function () {
        buttons.forEach(function (o) {
          var on = o === b;
          o.setAttribute("aria-selected", on ? "true" : "false");
          document.getElementById(o.dataset.tab).classList.toggle("off", !on);
        });
      });
    });
  });

  // Sortable tables: click a header; numbers sort by data-v, text by its content.
  document.querySelectorAll(".hs table.sortable").forEach(function (table) {
    var body = table.tBodies[0];
    table.querySelectorAll("th").forEach(function (th, col) {
      th.classList.add("sortable");
      th.title = "click to sort";
      var descending = true;
      th.addEventListener("click", function () {
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[col], y = b.cells[col];
          var nx = parseFloat(x.dataset.v), ny = parseFloat(y.dataset.v);
          var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.textContent.localeCompare(y.textContent);
          return descending ? -c : c;
        });
        descending = !descending;
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });

  // Figures shrunk to fit the column (the composition map at 40 % in an 800 px window, its labels
  // a few pixels high) open at their own size on a click, scrolling sideways inside their figure;
  // a second click fits them again. Only a figure drawn smaller than it is becomes "zoomable".
  function fitFigure(img) {
    var fig = img.closest("figure");
    if (!fig || !img.naturalWidth) return;
    var full = fig.classList.contains("full");
    if (!full && !img.clientWidth) return;  // not laid out (a closed <details>): judged when it opens
    var zoomable = full || img.naturalWidth > img.clientWidth + 1;
    fig.classList.toggle("zoomable", zoomable);
    img.title = !zoomable ? "" : full ? "click to fit the page" : "click to see at full size";
  }
  var figureImages = Array.prototype.slice.call(document.querySelectorAll(".hs figure img"));
  figureImages.forEach(function (img) {
    img.addEventListener("click", function () {
      var fig = img.closest("figure");
      if (!fig.classList.contains("zoomable")) return;
      fig.classList.toggle("full");
      fitFigure(img);
    });
    if (img.complete) fitFigure(img);
    else img.addEventListener("load", function () { fitFigure(img); });
  });
  function refit() { figureImages.forEach(fitFigure); }
  window.addEventListener("resize", refit);
  document.addEventListener("toggle", refit, true);  // a <details> opened: its figures now have a width

  // Filters: an input.filter whose data-filter names a table hides the rows that lack its text.
  document.querySelectorAll(".hs input.filter[data-filter]").forEach(function (input) {
    var table = document.getElementById(input.dataset.filter);
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        r.hidden = q !== "" && r.textContent.toLowerCase().indexOf(q) < 0;
      });
    });
  });
})();
