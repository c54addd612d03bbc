"""The live explorer (`headscope serve`): its numbers against the project's own analyses, its API, its limits.

The computations are checked against independent runs of the analyses they reuse (the eager
pattern, :func:`headscope.qk.decompose_qk` on a fresh eager capture, :func:`headscope.logit_attribution`
on the same token ids, :func:`headscope.ov_circuit`); the API through Starlette's in-process client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import re
import threading
import time

import numpy as np
import pytest
import torch

import headscope
from headscope.errors import BadInput
from headscope.explorer import Explorer
from headscope.explorer.app import Limits, make_app
from headscope.explorer.gate import Busy, Gate, Superseded
from headscope.explorer.state import text_layout
from headscope.models.inputs import TokenSequence, encode
from headscope.render.lookup import view_of
from headscope.scan.attention_sample import attention_patterns

TEXT = "The cat sat on the mat. The cat sat on the mat."


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_gpt2"])
def explorer(request):
    return Explorer(request.getfixturevalue(request.param), max_tokens=128)


@pytest.fixture(scope="module")
def llama_explorer(tiny_llama):
    return Explorer(tiny_llama, max_tokens=128)


def test_pattern_and_row_are_the_eager_pattern(explorer):
    st = explorer.state(TEXT)
    eager = attention_patterns(explorer.model, st.seq.tensor(), [(1, 2), (0, 1)])
    assert np.allclose(st.pattern(1, 2), eager[0], atol=1e-5)
    assert np.allclose(st.pattern(0, 1), eager[1], atol=1e-5)
    assert np.allclose(st.row(1, 2, 7), eager[0][7, :8], atol=1e-5)
    with torch.no_grad():  # the logits the page reads come from the kept final residual
        full = explorer.model.bridge(st.seq.tensor())[0]
    assert torch.allclose(st.logits(slice(0, st.n)), full, atol=1e-4)
    assert torch.allclose(st.logits(7), full[7], atol=1e-4)
    # a window's rows are the model's own rows, cut
    assert np.allclose(st.pattern(1, 2, 3, 9), eager[0][3:9, 3:9], atol=1e-5)


def test_text_scores_match_the_scan_reduction_on_a_repeated_text(explorer):
    m = explorer.model
    text = " cat dog bird fish tree moon" * 3  # GPT-2 BPE: six single tokens, each with its space, three times
    ids = encode(m, text).ids
    first = ids[:1] if m.first_token.id is not None else []
    st = explorer.state(text)
    assert (st.layout.seq_len, st.layout.repeats) == (6, 3)
    pat = attention_patterns(m, torch.tensor([ids]), [(l, h) for l in range(m.n_layers) for h in range(m.n_heads)])
    pat = pat.reshape(m.n_layers, m.n_heads, len(ids), len(ids))
    i = np.arange(len(first) + 6, len(ids))  # repeats 2..3
    induction = pat[:, :, i, i - 5].mean(-1)  # key = query - seq_len + 1 (hand-written, not the registry's reads)
    prev = pat[:, :, np.arange(1, len(ids)), np.arange(0, len(ids) - 1)].mean(-1)
    assert np.allclose(st.scores["induction"], induction, atol=1e-5)
    assert np.allclose(st.scores["previous_token"], prev, atol=1e-5)


def test_a_text_without_repeats_reads_no_later_repeat_score(explorer):
    st = explorer.state(TEXT)
    assert st.layout.repeats == 1
    assert st.scores["induction"] is None and st.scores["duplicate_token"] is None
    assert st.scores["previous_token"].shape == (explorer.model.n_layers, explorer.model.n_heads)
    v = explorer.text_view(TEXT)
    keys = [c["key"] for c in v["columns"]]
    # every row's values are the scores themselves, in column order
    col = keys.index("text:previous_token")
    assert v["rows"][5]["values"][col] == pytest.approx(
        st.scores["previous_token"][v["rows"][5]["layer"], v["rows"][5]["index"]], abs=1e-4
    )
    assert "text:previous_token" in keys and "text:induction" not in keys and "random:induction" in keys
    assert any("not one piece repeated" in n for n in v["notes"])
    assert len(v["rows"]) == explorer.model.n_layers * explorer.model.n_heads


def test_layout_finds_the_smallest_exact_period():
    assert (text_layout([0, 5, 6, 5, 6, 5, 6], True).seq_len, text_layout([0, 5, 6, 5, 6, 5, 6], True).repeats) == (
        2,
        3,
    )
    assert text_layout([5, 6, 5, 6, 5], False).repeats == 1
    assert text_layout([0, 5], True).repeats == 1


@pytest.mark.parametrize("head, pos", [((1, 2), 9), ((1, 0), 13), ((0, 1), 4), ((1, 3), 0)])
def test_qk_view_is_decompose_qk_on_an_eager_capture(explorer, head, pos):
    """The explorer's one-pair decomposition (decompose_pair) against decompose_qk on a fresh eager capture."""
    st = explorer.state(TEXT)
    d = explorer.qk(st, *head, pos)
    ref = headscope.qk.decompose_qk(explorer.model, head, st.seq, query=pos)
    assert d.pairs == ref.pairs and d.how == ref.how
    assert d.key_names == ref.key_names and d.query_names == ref.query_names
    for field in ("key_contrib", "key_vs_mean", "query_contrib", "query_vs_mean", "pair_contrib"):
        assert np.allclose(getattr(d, field), getattr(ref, field), atol=1e-5), field
    assert d.score == pytest.approx(ref.score, abs=1e-5) and d.attention == pytest.approx(ref.attention, abs=1e-5)
    assert abs(d.score - d.model_score) < 1e-4
    full = explorer.qk_full(st, *head, pos)  # decompose_qk itself on the cached activations
    assert np.allclose(full.key_vs_mean, d.key_vs_mean, atol=1e-8)


def test_logit_view_is_logit_attribution_on_the_same_ids(explorer):
    st = explorer.state(TEXT)
    tok = explorer.model.tokenizer
    named = tok(" dog", add_special_tokens=False)["input_ids"]
    assert len(named) == 1
    last = st.n - 1  # no next token there: the top prediction, or the named one
    for pos, target in ((6, None), (6, " dog"), (last, None), (last, " dog")):
        t = explorer.target(st, pos, target)
        la = explorer.logit_attribution(st, pos, t)
        ids = st.seq.ids[: pos + 1] + [t]
        ref = headscope.logit_attribution(explorer.model, TokenSequence("", ids, [str(i) for i in ids]))
        assert np.allclose(la.heads, ref.heads, atol=1e-4)
        assert np.allclose(la.model_logit, ref.model_logit, atol=1e-4)
        assert la.max_abs_error < 1e-3
        one = explorer.direct(st, pos, t, start=pos)  # what the position view reads: the last row alone
        assert np.allclose(one.heads[0], la.heads[-1], atol=1e-8)
    pv = explorer.position_view(TEXT, 6, " dog")
    assert pv["target_id"] == named[0] and not pv["actual_next"]
    assert abs(sum(p["prob"] for p in pv["predictions"])) <= 1.0 + 1e-6
    # the head's actual write at pos, read at the target, is its direct effect there
    w = explorer.write(st, 1, 2, 6)
    assert {x["token"] for x in w["promotes"]}.isdisjoint({x["token"] for x in w["suppresses"]})


def test_logit_and_path_views_say_which_token_they_explain(llama_explorer):
    """At the text's last position there is no next token: the view explains the top prediction and says so."""
    ex = llama_explorer
    last = ex.state(TEXT).n - 1
    kinds = {(p, t): ex.position_view(TEXT, p, t) for p, t in ((6, None), (6, " dog"), (last, None))}
    assert [v["target_kind"] for v in kinds.values()] == ["next", "named", "top"]
    assert kinds[(6, None)]["actual_next"] and kinds[(6, None)]["target_is"] == "the actual next token"
    assert kinds[(last, None)]["target_is"].startswith("the model's top prediction")
    assert kinds[(6, " dog")]["target_is"] == "the token you named"
    corrupt = "A dog ran on the rug. The dog ran on the rug."
    pv = ex.paths_view(TEXT, 6, corrupt)
    assert pv["answer_is"] == "the actual next token" and pv["wrong_is"].startswith("the corrupted")
    assert ex.paths_view(TEXT, 6, corrupt, wrong=" dog")["wrong_is"] == "the token you named"


def test_an_empty_corrupted_text_is_named_as_the_corrupted_text(llama_explorer):
    with pytest.raises(headscope.BadInput, match="the corrupted text is empty") as e:
        llama_explorer.paths_view(TEXT, 6, "   ")
    assert "your text is empty" not in str(e.value) and "word swapped" in str(e.value)


def test_ov_view_is_ov_circuit(explorer):
    st = explorer.state(TEXT)
    ov = explorer.ov(st, 1, 2, 9)
    ref = headscope.logits.ov_circuit(explorer.model, "L1H2", ov.token_ids, k=8)
    assert np.allclose(ov.top_values, ref.top_values, atol=1e-5)
    assert (ov.self_rank == ref.self_rank).all()


def test_bad_requests_to_the_engine_say_what_to_do(llama_explorer):
    ex = llama_explorer
    with pytest.raises(BadInput, match="outside the text"):
        ex.head_view(TEXT, "L0H0", 999)
    with pytest.raises(BadInput):
        ex.head_view(TEXT, "L9H0", 1)
    with pytest.raises(BadInput, match="the token to explain must be a single token") as e:
        ex.position_view(TEXT, 3, " hippopotamus-like")
    assert "leave the box empty" in (e.value.hint or "")  # the page's words, not a token set's
    with pytest.raises(BadInput, match="the wrong token must be a single token"):
        ex.paths_view(TEXT, 6, "A dog ran on the rug. The dog ran on the rug.", wrong=" hippopotamus-like")
    with pytest.raises(BadInput, match="your text is empty") as e:
        ex.text_view("   ")
    assert "--text" not in (e.value.hint or "") and "into the box" in (e.value.hint or "")  # the page has no flags


def test_cache_is_bounded_and_keyed_by_text(tiny_llama):
    ex = Explorer(tiny_llama, max_tokens=64, cache_mb=0.001)
    a = ex.state("one text here")
    assert ex.state("one text here") is a  # cached: the same pass
    ex.state("another text")
    assert list(ex._texts) == ["another text"]  # over budget: the oldest left


def test_saved_page_is_a_report_page(llama_explorer):
    html = llama_explorer.page_html(TEXT, "L1H2", 9)
    assert html.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in html
    for anchor in ('id="top"', 'id="attention"', 'id="qk-decomposition"', 'id="ov-rows"', 'id="dla"'):
        assert anchor in html
    with_paths = llama_explorer.page_html(TEXT, "L1H2", 6, corrupt="A dog ran on the rug. The dog ran on the rug.")
    assert 'id="paths-logits"' in with_paths


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}">')
    return page[start : page.index("</section>", start)]


def test_saved_paths_show_no_interval_from_one_example_as_the_live_page(llama_explorer):
    """The saved page's path patching is of one example, as the live page's: it says so, as the live page
    does, and shows no 95% interval (a bootstrap over one example is its value at both ends)."""
    corrupt = "A dog ran on the rug. The dog ran on the rug."
    live = llama_explorer.paths_view(TEXT, 6, corrupt)
    paths = _section(llama_explorer.page_html(TEXT, "L1H2", 6, corrupt=corrupt), "paths-logits")
    said = "one example: the interval is a single value"
    assert said in live["notes"] and said in paths  # the same words on both pages
    assert "interval</th>" not in paths and "95%" not in paths
    assert not re.search(r"\[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", paths)  # no zero-width [a, a] bracket
    assert paths.count("<tr>") == 1 + len(live["paths"])  # the same paths, one row each
    for p in live["paths"][:3]:
        assert f'<td class="t">{p["sender"]}</td>' in paths


def test_saved_paths_say_what_was_patched_as_the_live_page_does(llama_explorer):
    """Read on its own, the saved page's path section names both texts, the two tokens compared and the
    metric on the clean and corrupted runs: the numbers the live page shows above its table."""
    corrupt = "A dog ran on the rug. The dog ran on the rug."
    live = llama_explorer.paths_view(TEXT, 6, corrupt)
    paths = html.unescape(_section(llama_explorer.page_html(TEXT, "L1H2", 6, corrupt=corrupt), "paths-logits"))
    assert f"logit of {live['answer']!r} minus logit of {live['wrong']!r} at position 6" in paths
    assert "the text up to position 6:" in paths and "the corrupted text up to it:" in paths
    assert "noising 1 example" in paths
    assert f"clean {live['clean_metric']:+.3f}, corrupted {live['corrupt_metric']:+.3f} (logits)" in paths
    assert len(live["notes"]) == 2 and live["notes"][-1] == "read at position 6"  # the live page shows the rest


def test_path_intervals_are_shown_where_they_were_measured(llama_explorer):
    """Over two examples or more an interval is measured, and the path view shows it."""
    st = llama_explorer.state(TEXT)
    pp, _, _ = llama_explorer.paths(st, 6, "A dog ran on the rug. The dog ran on the rug.")
    two = dataclasses.replace(pp, n_examples=2, low=pp.values - 0.1, high=pp.values + 0.1, notes=[])
    body = "".join(s.html for s in view_of(two).sections(two))
    assert "95% interval</th>" in body and "single value" not in body
    assert re.search(r"\[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", body)


# --- the API -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(llama_explorer):
    from starlette.testclient import TestClient

    return TestClient(
        make_app(llama_explorer, limits=Limits(max_body=4096, max_chars=2000)), base_url="http://127.0.0.1"
    )


def test_api_views(client):
    v = client.post("/api/text", json={"text": TEXT}).json()
    assert v["n_tokens"] == len(v["tokens"])
    h = client.post("/api/head", json={"text": TEXT, "head": "L1H2", "pos": 5}).json()
    assert h["head"] == "L1H2" and len(h["row"]) == 6 and len(h["pattern"]) == v["n_tokens"]
    q = client.post("/api/qk", json={"text": TEXT, "head": "L1H2", "pos": 5}).json()
    assert q["qk"]["pairs"][0][0] == 5 and q["ov"]["sources"]
    p = client.post("/api/position", json={"text": TEXT, "pos": 5, "target": None}).json()
    assert len(p["heads"]) == client.get("/api/info").json()["n_layers"] and p["actual_next"]
    r = client.post("/api/save", json={"text": TEXT, "head": "L1H2", "pos": 5})
    assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment")


def test_every_response_is_locked_down(client):
    for r in (client.get("/"), client.get("/static/explorer.js"), client.post("/api/text", json={"text": TEXT})):
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-eval" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/../../pyproject.toml").status_code == 404
    assert client.get("/static/page.py").status_code == 404
    assert client.get("/", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding


@pytest.mark.parametrize(
    "body, status, says",
    [
        ("not json", 400, "not JSON"),
        ("[1, 2]", 400, "JSON object"),
        (json.dumps({"text": TEXT, "model": "gpt2"}), 400, "unknown field"),
        (json.dumps({"text": TEXT, "file": "/etc/passwd"}), 400, "unknown field"),
        (json.dumps({"text": 5}), 400, "must be str"),
        (json.dumps({}), 400, "needs 'text'"),
        (json.dumps({"text": ""}), 400, "empty"),
        (json.dumps({"text": "x" * 2001}), 413, "over the limit"),
        (json.dumps({"text": "x" * 5000}), 413, "request body over"),
        (json.dumps({"text": TEXT, "seq": -1, "page": "p"}), 400, "seq"),
        (json.dumps({"text": TEXT, "seq": True, "page": "p"}), 400, "seq"),
    ],
)
def test_malformed_requests_get_a_clear_error(client, body, status, says):
    r = client.post("/api/text", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert says in r.json()["error"]


def test_a_content_length_that_is_not_a_number_is_a_bad_request_not_a_too_large_one(client):
    headers = {"content-type": "application/json", "content-length": "abc"}
    r = client.post("/api/text", content=json.dumps({"text": TEXT}), headers=headers)
    assert r.status_code == 400, r.text
    assert "Content-Length" in r.json()["error"]


@pytest.mark.parametrize(
    "doc, says",
    [
        ({"head": "L1H9", "pos": 1}, "head"),
        ({"head": "5.x", "pos": 1}, "head"),
        ({"head": "L1H2", "pos": 10_000}, "outside the text"),
        ({"head": "L1H2", "pos": "3"}, "'pos' must be"),
        ({"head": "L1H2", "pos": 1.5}, "'pos' must be"),
    ],
)
def test_bad_heads_and_positions(client, doc, says):
    r = client.post("/api/head", json={"text": TEXT, **doc})
    assert r.status_code == 400 and says in r.json()["error"]


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script></script><img src=x onerror=alert(2)>",
        "émoji 😀 ﷽ \u202e right-to-left \u0000 nul",
        "\n\n\t  spaces  \n",
        "a" * 1999,
    ],
)
def test_hostile_texts_come_back_as_data(client, text):
    r = client.post("/api/text", json={"text": text})
    assert r.status_code == 200
    v = r.json()
    assert r.headers["content-type"].startswith("application/json")
    assert v["n_tokens"] >= 2 and all(isinstance(t, str) for t in v["tokens"])
    saved = client.post("/api/save", json={"text": text, "head": "L0H0", "pos": 1}).text
    assert "<script>alert(1)" not in saved and "onerror=alert" not in saved.replace("onerror=alert(2)&gt;", "")


def test_a_long_text_is_cut_to_the_window_and_says_so(client):
    v = client.post("/api/text", json={"text": "word " * 300}).json()
    assert v["n_tokens"] == 128 and any(n.startswith("your text cut from") for n in v["notes"])


def test_exposed_server_needs_its_token(llama_explorer):
    from starlette.testclient import TestClient

    c = TestClient(make_app(llama_explorer, token="s3cret"), base_url="http://127.0.0.1")
    assert c.post("/api/text", json={"text": TEXT}).status_code == 403
    assert c.post("/api/text", json={"text": TEXT}, headers={"x-headscope-token": "nope"}).status_code == 403
    assert c.get("/api/info").status_code == 403
    assert c.post("/api/text", json={"text": TEXT}, headers={"x-headscope-token": "s3cret"}).status_code == 200


# --- the gate: one at a time, bounded, superseded ---------------------------------------------------


def test_gate_refuses_past_its_queue_and_supersedes_older_requests():
    async def main():
        gate = Gate(max_waiting=3)
        order = []

        def slow(name):
            def fn():
                time.sleep(0.05)
                order.append(name)
                return name

            return fn

        tasks = [asyncio.create_task(gate.run(slow(f"a{i}"), "page", "head", i)) for i in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await gate.run(slow("x"), "other", "head", 0)
        got = await asyncio.gather(*tasks, return_exceptions=True)
        return order, got, gate

    order, got, gate = asyncio.run(main())
    assert order == ["a0", "a2"]  # a1 was still waiting when a2 arrived: superseded, never run
    assert isinstance(got[1], Superseded) and got[2] == "a2"
    assert (gate.served, gate.refused, gate.superseded, gate.admitted) == (2, 1, 1, 0)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_fifty_concurrent_requests_on_a_slow_model_are_answered_or_refused(tiny_llama):
    """A model slowed by a sleep in every forward pass; 50 requests at once from 50 threads."""
    import httpx
    import uvicorn

    ex = Explorer(tiny_llama, max_tokens=64)
    ex.scan()
    app = make_app(ex, gate=Gate(max_waiting=8))
    orig = ex.state

    def slow_state(text):
        time.sleep(0.05)
        return orig(text)

    ex.state = slow_state  # type: ignore[method-assign]
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    statuses: list[int] = []

    def one(i: int) -> None:
        r = httpx.post(f"{url}/api/text", json={"text": f"text number {i % 5} of the load"}, timeout=60)
        statuses.append(r.status_code)
        if r.status_code == 503:
            assert "busy" in r.json()["error"] and r.headers["retry-after"] == "1"

    def burst() -> None:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    try:
        burst()  # warm-up burst: caches, thread pools, allocator
        rss = _rss_mb()
        statuses.clear()
        for _ in range(3):
            burst()
        grown = _rss_mb() - rss
        assert len(statuses) == 150 and set(statuses) <= {200, 503}
        assert statuses.count(200) >= 8 and statuses.count(503) >= 1
        assert httpx.get(f"{url}/api/info").json()["n_layers"] == tiny_llama.n_layers  # alive
        assert grown < 50, f"memory grew {grown:.0f} MB over 150 requests"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.smollm2
def test_smollm2_explorer_smoke(smollm2):
    """On the real weights: a repeated text reads the later-repeat scores, and the views agree with the model."""
    ex = Explorer(smollm2, max_tokens=256)
    text = " The quick brown fox jumps over the lazy dog." * 2
    v = ex.text_view(text)
    assert v["layout"]["repeats"] == 2
    st = ex.state(text)
    pat = attention_patterns(smollm2, st.seq.tensor(), [(18, 6)])[0]
    n = st.layout.seq_len
    i = np.arange(1 + n, st.n)
    assert st.scores["induction"][18, 6] == pytest.approx(pat[i, i - n + 1].mean(), abs=1e-4)
    d = ex.qk(st, 18, 6, st.n - 2)
    assert d.max_abs_error < 1e-3 and abs(d.score - d.model_score) < 1e-3
    la = ex.logit_attribution(st, st.n - 2, st.seq.ids[-1])
    assert la.max_abs_error < 1e-2


def test_causal_paths_are_the_direct_paths_patched_by_hand(llama_explorer):
    """Path patching to the logits, checked by hand: the clean run with one head's output change
    (corrupted minus clean, through its output projection) added to the final residual."""
    ex = llama_explorer
    m = ex.model
    text, corrupt = " The cat sat on the mat. The cat", " The dog ran to the car. The cat"
    st, cs = ex.state(text), ex.state(corrupt)
    assert st.n == cs.n
    pos = st.n - 1
    pp, answer, wrong = ex.paths(st, pos, corrupt, target=" sat")
    assert answer == m.tokenizer(" sat", add_special_tokens=False)["input_ids"][0]
    assert wrong in cs.logits(pos).topk(2).indices.tolist()
    bridge = m.bridge

    @torch.no_grad()
    def metric(extra=None):
        hooks = [] if extra is None else [("ln_final.hook_in", lambda x, hook: x + extra)]
        logits = bridge.run_with_hooks(st.seq.tensor(), fwd_hooks=hooks)[0, pos]
        return float(logits[answer] - logits[wrong])

    zc, zx = st.acts, cs.acts
    clean, bad = metric(), None
    with torch.no_grad():
        logits_bad = bridge(cs.seq.tensor())[0, pos]
    bad = float(logits_bad[answer] - logits_bad[wrong])
    assert pp.clean_metric == pytest.approx(clean, abs=1e-4) and pp.corrupt_metric == pytest.approx(bad, abs=1e-4)
    for i in np.argsort(-np.abs(pp.effect))[:3]:
        l, h = (int(x) for x in pp.senders[i][1:].split("H"))
        dz = torch.zeros_like(zc[f"blocks.{l}.attn.hook_z"])
        dz[:, h] = zx[f"blocks.{l}.attn.hook_z"][: st.n, h] - zc[f"blocks.{l}.attn.hook_z"][:, h]
        o = bridge.blocks[l].attn.o
        with torch.no_grad():
            delta = o(dz.reshape(1, st.n, -1)) - o(torch.zeros(1, st.n, dz[0].numel()))
        value = (metric(delta) - bad) / (clean - bad)
        assert pp.values[i] == pytest.approx(value, abs=1e-3)


def test_causal_paths_refuse_what_they_cannot_patch(client):
    r = client.post("/api/paths", json={"text": TEXT, "pos": 9, "corrupt": "short"})
    assert r.status_code == 400 and "needs at least" in r.json()["error"]
    r = client.post("/api/paths", json={"text": TEXT, "pos": 5, "corrupt": TEXT})
    assert r.status_code == 400 and "same as the text" in r.json()["error"]
    assert "at or before position 5" in r.json()["hint"]  # a change at the position itself counts
    r = client.post("/api/paths", json={"text": TEXT, "pos": 5})
    assert r.status_code == 400 and "needs 'corrupt'" in r.json()["error"]
    ok = client.post(
        "/api/paths", json={"text": TEXT, "pos": 6, "corrupt": "A dog ran on the rug. The dog ran on the rug."}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["paths"] and ok.json()["position"] == 6


def test_paths_whose_gap_is_the_wrong_way_round_show_changes_and_say_why_as_the_saved_page(client):
    """A hand-built gap of the wrong sign: a working patch with its two texts swapped (the token explained and
    the wrong token kept), so the "corrupted" run favours the answer more than the clean one. Shares of that gap
    mean nothing: the live view says so in the saved page's words and shows the changes in the metric, the rows
    and column the saved page shows; the JSON carries the gap as the result's JSON does."""
    corrupt = "A dog ran on the rug. The dog ran on the rug."
    fwd = client.post("/api/paths", json={"text": TEXT, "pos": 6, "corrupt": corrupt}).json()
    assert fwd["clean_metric"] > fwd["corrupt_metric"]  # the way round the task expects
    assert fwd["normalised_meaningful"] and fwd["gap"]["meaningful"] and fwd["gap"]["problem"] is None
    assert fwd["gap"]["mean"] == pytest.approx(fwd["clean_metric"] - fwd["corrupt_metric"], abs=2e-4)
    assert fwd["gap"]["low"] == fwd["gap"]["high"] == fwd["gap"]["mean"]  # one example: the interval is the value
    assert (fwd["shown"], fwd["column"], fwd["warning"]) == ("effect", "share of the gap (effect)", None)

    doc = {"text": corrupt, "pos": 6, "corrupt": TEXT, "target": fwd["answer"], "wrong": fwd["wrong"]}
    r = client.post("/api/paths", json=doc)
    assert r.status_code == 200, r.text
    back = r.json()
    assert (back["answer"], back["wrong"]) == (fwd["answer"], fwd["wrong"])
    assert (back["clean_metric"], back["corrupt_metric"]) == (fwd["corrupt_metric"], fwd["clean_metric"])
    gap = back["gap"]
    assert gap["mean"] == pytest.approx(-fwd["gap"]["mean"], abs=2e-4) and gap["mean"] < 0
    assert gap["expected"] == "clean > corrupted" and not gap["meaningful"] and not back["normalised_meaningful"]
    assert "the wrong way round for this task" in gap["problem"]
    assert back["shown"] == "change" and back["column"] == "change in logit_diff"
    assert back["warning"] == f"Not meaningful as shares of the gap: {gap['problem']}."
    changes = [p["change"] for p in back["paths"]]
    assert changes == sorted(changes, key=abs, reverse=True) and any(changes)
    for p in back["paths"]:  # noising: the share is the change over minus the gap, so the change is the raw one
        assert p["effect"] == pytest.approx(-p["change"] / gap["mean"], abs=2e-3)

    saved = client.post("/api/save", json={**doc, "head": "L1H2"})
    assert saved.status_code == 200, saved.text
    section = _section(saved.text, "paths-logits")
    words = html.unescape(re.sub(r"<[^>]+>", "", section))
    assert back["warning"] in words  # the same sentence on both pages
    assert '<th class="">change in logit_diff</th>' in section and "share of the gap" not in section.split("<table")[1]
    cells = re.findall(r'<td class="t">(L\d+H\d+)</td><td class="t">logits</td><td data-v="([^"]+)"', section)
    assert [(s, float(v)) for s, v in cells] == [(p["sender"], p["change"]) for p in back["paths"]]


def test_every_route_is_in_the_docs_with_its_fields(llama_explorer):
    """docs/explorer.md's API reference names every route the app serves, and each call's fields in its row."""
    from pathlib import Path

    from headscope.explorer.app import FIELDS, PAGE_FIELDS

    doc = (Path(__file__).resolve().parents[1] / "docs" / "explorer.md").read_text(encoding="utf-8")
    paths = [r.path for r in make_app(llama_explorer).routes]  # type: ignore[attr-defined]
    assert {"/", "/static/{name}", "/api/info"} < set(paths) and len(paths) == 3 + len(FIELDS)
    for path in paths:
        assert f"`{path}`" in doc or f" {path}`" in doc, f"{path} is not in docs/explorer.md"
    for call, fields in FIELDS.items():
        (row,) = [line for line in doc.splitlines() if line.startswith(f"| `POST /api/{call}`")]
        for name, (_, required) in fields.items():
            assert f"`{name}`" in row, f"/api/{call}'s field {name!r} is not in its row of docs/explorer.md"
            assert (f"`{name}` (required" in row) == required, f"/api/{call}'s {name!r}: required or not?"
    for name in PAGE_FIELDS:
        assert f"`{name}`" in doc


@pytest.mark.parametrize(
    "args, says",
    [
        (["--host", "0.0.0.0"], "--expose"),
        (["--host", "192.168.1.5"], "--expose"),
        (["--port", "0"], "--port"),
        (["--max-tokens", "1"], "--max-tokens"),
        (["--queue", "0"], "--queue"),
    ],
)
def test_serve_refuses_unsafe_or_bad_options_before_loading(args, says, monkeypatch):
    """`headscope serve` checks its options before any model loads (the loader would fail the test)."""
    from typer.testing import CliRunner

    import headscope.models
    from headscope.cli import app

    monkeypatch.setattr(headscope.models, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    result = CliRunner().invoke(app, ["serve", "--no-browser", *args])
    assert result.exit_code == 2, result.output
    assert says in result.output


def test_serve_on_a_taken_port_fails_before_loading_and_says_which(monkeypatch):
    """Another program listens on the port: `headscope serve` says so at once (exit 2, a hint), before any
    model loads (the loader would fail the test), and never prints an address."""
    import socket

    from typer.testing import CliRunner

    import headscope.models
    from headscope.cli import app

    monkeypatch.setattr(headscope.models, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    with socket.socket() as other:  # a plain listener, as another program would hold it
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--no-browser", "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"127.0.0.1:{port}" in result.output and "already in use" in result.output
    assert "choose another --port (or stop the program using it)" in result.output
    assert "headscope explorer on" not in result.output


def test_bind_says_what_is_wrong_with_the_address():
    import socket

    from headscope.explorer.app import bind

    with pytest.raises(BadInput, match="not an address of this machine") as info:
        bind("192.0.2.1", 0)  # TEST-NET-1: on no machine
    assert "--host" in (info.value.hint or "")
    with bind("127.0.0.1", 0) as sock:  # bound and listening: a connection is queued before serving starts
        socket.create_connection(sock.getsockname(), timeout=5).close()
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    other = socket.socket(socket.AF_INET6)
    try:
        other.bind(("::1", 0))
    except OSError:
        other.close()
        pytest.skip("no IPv6 loopback here")
    with other:
        other.listen()
        with pytest.raises(BadInput, match=r"\[::1\]:\d+: the address is already in use"):
            bind("::1", other.getsockname()[1])


def _serve(model_dir):
    """``headscope serve`` on ``model_dir`` in a child process (Ctrl-C as a terminal gives it): ``(proc, port,
    lines)``, read up to the line that says the address."""
    import os
    import socket
    import subprocess
    import sys

    from _signals import sigint_as_default

    with socket.socket() as probe:  # a port free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "headscope", "serve", "--no-browser", "--device", "cpu"]
    cmd += ["--model", str(model_dir), "--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        preexec_fn=sigint_as_default,
    )
    lines: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if "headscope explorer on" in line:
            break
    return proc, port, lines


def _stop(proc, sig) -> tuple[int, str]:
    """Send ``sig`` and wait: the exit code and the rest of what the server said."""
    import subprocess

    proc.send_signal(sig)
    try:
        rest = proc.stderr.read()
        return proc.wait(30), rest
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_serve_says_what_it_prepares_and_the_address_only_once_it_answers(tiny_llama_dir):
    """The real command on a tiny model: a line says what the pause after loading is for, then the
    address, which answers by the time it is printed."""
    import signal

    import httpx

    proc, port, lines = _serve(tiny_llama_dir)
    try:
        said = "".join(lines)
        assert f"headscope explorer on http://127.0.0.1:{port}/" in said, said
        assert httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=10).json()["n_layers"] == 3
        prepared = [i for i, line in enumerate(lines) if line.startswith("Preparing the explorer")]
        loaded = [i for i, line in enumerate(lines) if line.startswith("Loaded ")]
        assert loaded and prepared and loaded[0] < prepared[0] < len(lines) - 1, said
        assert "the address follows" in lines[prepared[0]]
    finally:
        _stop(proc, signal.SIGINT)


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_stopping_serve_says_it_stopped_the_explorer_not_a_results_command_line(tiny_llama_dir, sig, code):
    """Ctrl-C or SIGTERM is how the server stops: it says where it stopped and that it writes no files (a save is
    the browser's download), not "nothing half-written was left; earlier results are as they were", the line of a
    command that writes results; the exit code is still the shell's for the signal (130, 143)."""
    import signal

    import httpx

    from headscope.explorer.app import ServeRun

    proc, port, _ = _serve(tiny_llama_dir)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=10).status_code == 200
    finally:
        rc, rest = _stop(proc, getattr(signal, sig))
    run = ServeRun()
    run.address = f"http://127.0.0.1:{port}/"
    assert rc == code, rest
    assert rest.strip().splitlines()[-1] == run.stopped(), rest
    assert "stopped the explorer at" in rest and "earlier results" not in rest and "Traceback" not in rest


def test_the_stop_line_says_what_happened_to_the_requests_in_progress():
    from headscope.explorer.app import ServeRun

    run = ServeRun()
    assert run.stopped().startswith("stopped before the explorer started serving")
    run.address = "http://127.0.0.1:8765/"
    assert run.stopped().startswith("stopped the explorer at http://127.0.0.1:8765/; it writes no files")
    run.in_progress = 2
    assert run.stopped().endswith("; the 2 requests in progress were answered first")
    run.unanswered = 1
    said = run.stopped()
    assert "the 1 request in progress was answered first" in said
    assert said.endswith("1 request in progress was cut short by the second Ctrl-C and answered with an error, "
                         "not a view (a save cut short downloads nothing)")  # fmt: skip
