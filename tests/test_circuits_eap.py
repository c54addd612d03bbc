"""Edge attribution (EAP, EAP-IG) and edge patching against independent computations and wired answers.

* A plain-torch GPT-2 forward (weights from the Hugging Face model, every receiver's input its
  own tensor) gives EAP and EAP-IG scores by autograd and single-edge patches by hand; the
  bridge-hook code must agree.
* On a grouped-query Llama (RMSNorm, rotary), EAP scores match finite differences of the
  bridge's own edge patching, for query, key/value-head and MLP receivers.
* Patching identities: every edge kept = clean, none kept = corrupted (and the reverse).
* A hand-wired model where only two heads write: every edge outside their path scores 0 and
  patches to no change.
* The trained toy model: the previous-token head -> induction head key edge (K-composition).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import headscope
from headscope.circuits import induction_task
from headscope.circuits.eap import edge_attribution
from headscope.circuits.edges import EdgeGraph, clean_corrupt_metric, patched_metric
from headscope.circuits.faithfulness import edge_circuit, rank_agreement, sample_edges, spearman, top_overlap
from headscope.circuits.tasks import task_metric
from headscope.errors import BadInput


@pytest.fixture(scope="module")
def gpt2_bumpy(bumpy_gpt2_dir):
    """The bumpy 2-layer GPT-2 (conftest.py) as headscope loads it, and as plain transformers does."""
    from transformers import GPT2LMHeadModel

    return headscope.load_model(str(bumpy_gpt2_dir), device="cpu"), GPT2LMHeadModel.from_pretrained(
        str(bumpy_gpt2_dir)
    ).eval()


# --- an independent reference: GPT-2 written out, one input tensor per receiver ---------------


def _ln(x, mod):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], mod.weight, mod.bias, mod.eps)


def ref_forward(hf, emb, extra):
    """Logits of a plain-torch GPT-2 and every sender's output; ``extra[v]`` is added to receiver ``v``'s input.

    ``emb`` ``[batch, n, d]`` is the token + position embedding. Receivers are named as
    :class:`EdgeGraph` names them. Returns ``(logits, {sender: output})``.
    """
    tr = hf.transformer
    H = hf.config.n_head
    d = emb.shape[-1]
    dh = d // H
    resid, outs = emb, {"input": emb}
    n = emb.shape[1]
    mask = torch.ones(n, n, dtype=torch.bool).tril()
    for layer, blk in enumerate(tr.h):
        W, b = blk.attn.c_attn.weight, blk.attn.c_attn.bias  # Conv1D: x @ W + b, [d, 3d]
        Wo = blk.attn.c_proj.weight  # [d, d]
        attn = 0
        for h in range(H):
            cols = slice(h * dh, (h + 1) * dh)
            qkv = []
            for i, kind in enumerate("qkv"):
                x = resid + extra.get(f"L{layer}H{h}.{kind}", 0)
                w = W[:, i * d : (i + 1) * d][:, cols]
                qkv.append(_ln(x, blk.ln_1) @ w + b[i * d : (i + 1) * d][cols])
            q, k, v = qkv
            s = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
            a = s.masked_fill(~mask, float("-inf")).softmax(-1)
            out = (a @ v) @ Wo[cols]
            outs[f"L{layer}H{h}"] = out
            attn = attn + out
        resid = resid + attn + blk.attn.c_proj.bias
        x = resid + extra.get(f"MLP{layer}", 0)
        mlp = blk.mlp.c_proj(blk.mlp.act(blk.mlp.c_fc(_ln(x, blk.ln_2))))
        outs[f"MLP{layer}"] = mlp
        resid = resid + mlp
    x = resid + extra.get("logits", 0)
    return hf.lm_head(_ln(x, tr.ln_f)), outs


def _embed(hf, tokens):
    tr = hf.transformer
    return tr.wte(tokens) + tr.wpe(torch.arange(tokens.shape[1]))[None]


def ref_scores(hf, task, graph, steps):
    """EAP (``steps=None``) or EAP-IG scores by autograd on the reference forward."""
    with torch.no_grad():
        e_clean, e_corrupt = _embed(hf, task.clean), _embed(hf, task.corrupt)
        _, clean = ref_forward(hf, e_clean, {})
        _, corrupt = ref_forward(hf, e_corrupt, {})
    alphas = [1.0] if steps is None else [k / steps for k in range(steps)]
    grads = {v: 0 for v in graph.receivers}
    for alpha in alphas:
        extra = {v: torch.zeros_like(e_clean, requires_grad=True) for v in graph.receivers}
        logits, _ = ref_forward(hf, e_corrupt + alpha * (e_clean - e_corrupt), extra)
        task_metric(logits, task).mean().backward()
        for v in graph.receivers:
            grads[v] = grads[v] + extra[v].grad / len(alphas)
    out = np.full((len(graph.senders), len(graph.receivers)), np.nan)
    for u, s in enumerate(graph.senders):
        for r, v in enumerate(graph.receivers):
            if graph.valid[u, r]:
                out[u, r] = float(((corrupt[s] - clean[s]) * grads[v]).sum())
    return out


@pytest.mark.parametrize("method, steps", [("eap", None), ("eap-ig", 3)])
def test_scores_match_autograd_on_a_written_out_gpt2(gpt2_bumpy, method, steps):
    model, hf = gpt2_bumpy
    task = induction_task(model, n_examples=2, seq_len=5, seed=3)
    graph = EdgeGraph.of(model)
    ours = edge_attribution(model, task, method=method, ig_steps=steps or 1).scores
    ref = ref_scores(hf, task, graph, steps)
    ok = graph.valid
    assert np.isnan(ours[~ok]).all()
    scale = np.abs(ref[ok]).max()
    assert scale > 1e-3  # the comparison is not between zeros
    np.testing.assert_allclose(ours[ok], ref[ok], atol=2e-4 * scale, rtol=2e-3)


def test_single_edge_patch_matches_the_written_out_gpt2(gpt2_bumpy):
    model, hf = gpt2_bumpy
    task = induction_task(model, n_examples=2, seq_len=5, seed=4)
    graph = EdgeGraph.of(model)
    with torch.no_grad():
        e_clean = _embed(hf, task.clean)
        _, clean = ref_forward(hf, e_clean, {})
        _, corrupt = ref_forward(hf, _embed(hf, task.corrupt), {})
        for s, r in [("L0H2", "L1H1.k"), ("input", "L1H3.q"), ("L0H0", "MLP1"), ("MLP0", "logits"), ("L1H2", "MLP1")]:
            logits, _ = ref_forward(hf, e_clean, {r: corrupt[s] - clean[s]})
            want = task_metric(logits, task).numpy()
            got = patched_metric(model, task, [(graph.sender_index(s), graph.receiver_index(r))], keep=False)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# --- patching identities and finite differences on a grouped-query Llama ---------------------


def test_keeping_every_edge_is_clean_and_none_is_corrupt(tiny_llama):
    task = induction_task(tiny_llama, n_examples=3, seq_len=5)
    g = EdgeGraph.of(tiny_llama)
    clean, corrupt = clean_corrupt_metric(tiny_llama, task)
    assert np.abs(clean - corrupt).max() > 1e-3
    none = np.zeros_like(g.valid)
    for keep, mask, want in [
        (True, g.valid, clean),
        (True, none, corrupt),
        (False, g.valid, corrupt),
        (False, none, clean),
    ]:
        np.testing.assert_allclose(patched_metric(tiny_llama, task, mask, keep=keep, graph=g), want, atol=2e-5)


def test_grouped_query_receivers_are_key_value_heads(tiny_llama):
    g = EdgeGraph.of(tiny_llama)  # 3 layers, 4 query heads over 2 key/value heads
    assert [r for r in g.receivers if r.startswith("L2")] == [
        "L2H0.q", "L2H1.q", "L2H2.q", "L2H3.q", "L2KV0.k", "L2KV1.k", "L2KV0.v", "L2KV1.v",
    ]  # fmt: skip
    # senders: input + 3 x (4 heads + MLP); edges: 8 attention receivers x (1, 6, 11) earlier senders,
    # MLPs x (5, 10, 15), logits x 16
    assert len(g.senders) == 16 and g.n_edges == 8 * (1 + 6 + 11) + (5 + 10 + 15) + 16
    # a head's edge into a receiver of its own layer or earlier is not an edge
    with pytest.raises(BadInput, match="not an edge"):
        patched_metric(
            tiny_llama, induction_task(tiny_llama, 2, 4), [(g.sender_index("L1H0"), g.receiver_index("L1KV0.k"))]
        )


def test_eap_equals_finite_differences_of_the_patch_on_llama(tiny_llama):
    """EAP's score is d metric / d (fraction of the edge corrupted) at 0: compare with a central difference."""
    task = induction_task(tiny_llama, n_examples=2, seq_len=5, seed=1)
    g = EdgeGraph.of(tiny_llama)
    scores = edge_attribution(tiny_llama, task, method="eap").scores
    eps = 1e-2  # float32 model: a central difference's error is O(eps^2), its rounding O(1e-7 / eps)
    checked = 0
    for s, r in [("L0H1", "L1H2.q"), ("L0H3", "L2KV1.k"), ("input", "L1KV0.v"), ("MLP0", "MLP1"), ("L2H0", "logits")]:
        u, v = g.sender_index(s), g.receiver_index(r)
        up = patched_metric(tiny_llama, task, [(u, v)], keep=False, graph=g, scale=eps).mean()
        down = patched_metric(tiny_llama, task, [(u, v)], keep=False, graph=g, scale=-eps).mean()
        assert scores[u, v] == pytest.approx((up - down) / (2 * eps), rel=2e-2, abs=2e-5), f"{s} -> {r}"
        checked += abs(scores[u, v]) > 1e-4
    assert checked >= 3  # not a comparison of zeros


# --- a model wired by hand ----------------------------------------------------------------------


def test_only_the_wired_path_has_edges(tiny_gpt2_dir, tmp_path):
    """Zero every head's output projection except L0H1's and L1H3's, and the MLPs: nothing else can matter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2_dir)).eval()
    dh = 16
    with torch.no_grad():
        for layer, keep in ((0, 1), (1, 3)):
            w = hf.transformer.h[layer].attn.c_proj.weight  # [H * d_head, d]: rows are heads
            rows = torch.ones(w.shape[0], dtype=torch.bool)
            rows[keep * dh : (keep + 1) * dh] = False
            w[rows] = 0
            hf.transformer.h[layer].mlp.c_proj.weight.zero_()
            hf.transformer.h[layer].mlp.c_proj.bias.zero_()
        hf.transformer.wte.weight.mul_(10)
    hf.save_pretrained(str(tmp_path / "wired"))
    AutoTokenizer.from_pretrained(str(tiny_gpt2_dir)).save_pretrained(str(tmp_path / "wired"))
    model = headscope.load_model(str(tmp_path / "wired"), device="cpu")
    task = induction_task(model, n_examples=3, seq_len=5)
    g = EdgeGraph.of(model)
    res = edge_attribution(model, task, method="eap-ig", ig_steps=3)
    senders = {"input", "L0H1", "L1H3"}
    path = {"L0H1.q", "L0H1.k", "L0H1.v", "L1H3.q", "L1H3.k", "L1H3.v", "logits"}
    wired = np.array([[s in senders for s in g.senders]]).T & np.array([[r in path for r in g.receivers]]) & g.valid
    assert np.abs(res.scores[g.valid & ~wired]).max() < 1e-6
    # the edges that score are wired ones (a wired edge may still score 0: the corruption changes
    # only the first repeat, and a query or logit there is not read by the metric)
    n_live = int((np.abs(res.scores[wired]) > 1e-6).sum())
    assert n_live >= 6
    top = {(s, r) for s, r, _ in res.top(n_live)}
    assert top <= {(g.senders[u], g.receivers[v]) for u, v in np.argwhere(wired)}
    clean, _ = clean_corrupt_metric(model, task)
    for s, r in [("L0H2", "L1H3.k"), ("input", "L1H0.q"), ("L1H0", "logits")]:
        moved = patched_metric(model, task, [(g.sender_index(s), g.receiver_index(r))], keep=False, graph=g)
        np.testing.assert_allclose(moved, clean, atol=1e-5)
    # the wired edges alone, kept clean with everything else corrupted, are the whole behaviour
    kept = patched_metric(model, task, wired, keep=True, graph=g)
    np.testing.assert_allclose(kept, clean, atol=1e-4)


# --- the trained toy model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    """The toy recipe trained 800 steps (~40 s on a quiet thread): a previous-token head in layer 0, induction heads in layer 1."""
    from headscope.toy import train_toy

    out = tmp_path_factory.mktemp("toy") / "run"
    train_toy(out, steps=800, every=800, log_every=800, eval_batch=8, threads=1)
    return headscope.load_model(str(sorted((out / "checkpoints").iterdir())[-1]), device="cpu")


@pytest.mark.slow
def test_toy_previous_token_head_feeds_the_induction_heads_key(toy_model):
    from headscope.scan import scan_induction

    scan = scan_induction(toy_model, seq_len=20, batch=8, ablate=False)
    ind = np.asarray(scan.scores["induction"])
    prev = np.asarray(scan.scores["previous_token"])
    h_ind, h_prev = int(ind[1].argmax()), int(prev[0].argmax())
    assert ind[1, h_ind] > 0.4 and prev[0, h_prev] > 0.3  # the toy formed its circuit

    task = induction_task(toy_model, n_examples=16, seq_len=20)
    g = EdgeGraph.of(toy_model)
    clean, corrupt = clean_corrupt_metric(toy_model, task)
    for method in ("eap", "eap-ig"):
        res = edge_attribution(toy_model, task, method=method, ig_steps=5)
        head_to_key = [(s, r) for s, r, _ in res.top(res.n_edges) if s.startswith("L0") and r.endswith(".k")]
        sender, receiver = head_to_key[0]
        assert sender == f"L0H{h_prev}", method  # the previous-token head ...
        assert ind[1, int(receiver[3])] > 0.4, method  # ... into the key of an induction head
    # measured, not estimated: corrupting that one edge costs a large share of the behaviour
    u, v = g.sender_index(f"L0H{h_prev}"), g.receiver_index(f"L1H{h_ind}.k")
    lost = (clean - patched_metric(toy_model, task, [(u, v)], keep=False, graph=g)).mean() / (clean - corrupt).mean()
    assert lost > 0.15


@pytest.mark.slow
def test_toy_circuit_of_half_the_edges_restores_most_of_the_behaviour(toy_model):
    task = induction_task(toy_model, n_examples=16, seq_len=20)
    res = edge_circuit(toy_model, task, top_edges=50, points=(0, 10, 50), n_sample=20)
    by_k = {row["n_edges"]: row for row in res.curve}
    assert abs(by_k[0]["faithfulness"]) < 1e-4 and abs(by_k[max(by_k)]["faithfulness"] - 1) < 1e-4
    assert by_k[50]["faithfulness"] > 0.8 and by_k[50]["low"] <= by_k[50]["faithfulness"] <= by_k[50]["high"]
    assert res.agreement["n"] == 20 and res.agreement["spearman"] > 0.5


def test_a_circuits_graph_figure_draws_the_edges_its_faithfulness_was_measured_on(tiny_gpt2):
    """The written figure said "Top 30 edges" while the circuit, its table and its page had --top-edges 20."""
    task = induction_task(tiny_gpt2, n_examples=2, seq_len=4)
    res = edge_circuit(tiny_gpt2, task, top_edges=7, points=(0, 7), n_sample=4)
    fig = res._figure("graph")  # as the command's files draw it: no k given
    assert fig.axes[0].get_title().startswith("Top 7 edges")


def test_the_graph_draws_every_edge_even_several_from_one_sender_into_one_head(tiny_gpt2):
    """A DiGraph kept one edge per (sender, head): input -> L1H0.v (a top edge) vanished behind input -> L1H0.k."""
    task = induction_task(tiny_gpt2, n_examples=2, seq_len=4)
    res = edge_attribution(tiny_gpt2, task, method="eap")
    top = res.top(60)
    pairs = [(s, r.rsplit(".", 1)[0]) for s, r, _ in top]
    assert len(set(pairs)) < len(pairs)  # the case: one sender into two inputs of the same head
    ax = res._figure("graph", 60).axes[0]
    assert len(ax.patches) == len(top)  # one arrow per edge


def _drawn_arrows(fig) -> tuple[np.ndarray, float, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The graph as drawn, in display units: the node centres, the node radius, and for each arrow its path (line
    and head) as points at most a pixel apart, its tail point and its head's outline."""
    fig.canvas.draw()
    ax = fig.axes[0]
    (nodes,) = ax.collections  # the node markers
    centres = ax.transData.transform(nodes.get_offsets())
    radius = float(np.sqrt(nodes.get_sizes()[0]) / 2 * fig.dpi / 72)
    arrows = []
    for arrow in ax.patches:
        polys = ax.transData.transform_path(arrow.get_path()).to_polygons(closed_only=False)  # curves flattened
        pts = [np.linspace(a, b, int(np.hypot(*(b - a))) + 2) for poly in polys for a, b in zip(poly, poly[1:])]
        arrows.append((np.concatenate(pts), polys[0][0], polys[-1]))
    return centres, radius, arrows


def _arrows_through_nodes(fig) -> list[tuple[int, int, float]]:
    """(arrow, node, how far inside) for every drawn arrow that passes through a node other than the two it joins
    (the node its tail starts at and the node its head points into), and every arrow that leaves the axes."""
    centres, radius, arrows = _drawn_arrows(fig)
    box = fig.axes[0].bbox
    bad = []
    for i, (pts, tail, head) in enumerate(arrows):
        src = int(np.argmin(np.linalg.norm(centres - tail, axis=1)))
        dst = int(np.argmin(np.linalg.norm(centres[:, None] - head[None], axis=2).min(axis=1)))
        # the tail starts at its sender's edge, the head's tip at its receiver's (drawn back a little for a wide line)
        assert np.linalg.norm(centres[src] - tail) < radius + 3
        assert np.linalg.norm(centres[dst] - head, axis=1).min() < radius + 10
        gaps = np.linalg.norm(pts[:, None] - centres[None], axis=2).min(axis=0) - radius
        bad += [(i, j, -float(gaps[j])) for j in range(len(centres)) if j not in (src, dst) and gaps[j] < 0]
        if (pts < np.array(box.min) - 1).any() or (pts > np.array(box.max) + 1).any():
            bad.append((i, -1, 0.0))  # outside the axes: clipped, not drawn
    return bad


def test_no_edge_runs_through_a_node_it_does_not_connect(tiny_llama):
    """A long arc (SmolLM2's L23H3 -> logits) ran through the nodes of the columns between its ends, so the
    figure showed an edge into a node it never reached. Read off the drawn figure at two sizes: every arrow's
    path stays outside every node but its own two, and inside the axes."""
    task = induction_task(tiny_llama, n_examples=2, seq_len=4)
    res = edge_circuit(tiny_llama, task, top_edges=20, points=(0, 20), n_sample=4)
    fig = res._figure("graph")
    centres, radius, arrows = _drawn_arrows(fig)
    # the case: drawn straight from end to end, some edge would pass through a node between
    straight = [
        (np.linalg.norm(centres - tail, axis=1).argmin(), np.linalg.norm(centres - pts[-1], axis=1).argmin())
        for pts, tail, _ in arrows
    ]
    t = np.linspace(0, 1, 400)[:, None]
    assert any(
        (np.linalg.norm((centres[a] + t * (centres[b] - centres[a]))[:, None] - np.delete(centres, [a, b], 0)[None], axis=2) < radius).any()
        for a, b in straight
    )  # fmt: skip
    assert len(arrows) == 20  # every edge drawn
    assert _arrows_through_nodes(fig) == []
    fig.set_size_inches(fig.get_figwidth() * 0.8, fig.get_figheight() * 1.2)  # the routes follow the size drawn at
    assert _arrows_through_nodes(fig) == []


# --- the pieces -----------------------------------------------------------------------------------


def test_rank_agreement_sample_has_the_top_edges_and_a_random_rest(tiny_gpt2):
    task = induction_task(tiny_gpt2, n_examples=2, seq_len=4)
    res = edge_attribution(tiny_gpt2, task, method="eap")
    edges = sample_edges(res, n=10, seed=0)
    assert len({tuple(e) for e in edges.tolist()}) == 10
    assert [tuple(e) for e in edges[:5].tolist()] == [tuple(e) for e in res.ranked()[:5].tolist()]
    agree = rank_agreement(tiny_gpt2, task, res, n=6)
    assert agree["n"] == 6 and -1 <= agree["spearman"] <= 1 and len(agree["edges"]) == 6


def test_overlap_and_spearman_on_hand_cases():
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    from headscope.results.edge_results import EdgeScores

    s = np.array([[4.0, 3.0, 2.0, 1.0]])
    a = EdgeScores({}, {}, "eap", None, ["u"], list("abcd"), s)
    b = EdgeScores({}, {}, "eap", None, ["u"], list("abcd"), s[:, ::-1].copy())
    assert top_overlap(a, b, ks=(2, 4)) == {2: 0.0, 4: 1.0}


def test_negative_edge_counts_are_refused(tiny_gpt2):
    """top_edges=-3 made a 'circuit' of all but 3 edges (a slice [:-3]) with a curve point at -3 edges."""
    task = induction_task(tiny_gpt2, n_examples=2, seq_len=4)
    for kw, match in ((dict(top_edges=-3), "top_edges must be at least 0"), (dict(n_sample=-1), "n_sample must")):
        with pytest.raises(BadInput, match=match):
            edge_circuit(tiny_gpt2, task, **kw)
    with pytest.raises(BadInput, match="whole number >= 0"):
        edge_attribution(tiny_gpt2, task, method="eap").top(-1)


def test_bad_method_and_steps_are_refused(tiny_gpt2):
    task = induction_task(tiny_gpt2, n_examples=2, seq_len=4)
    with pytest.raises(BadInput, match="eap, eap-ig"):
        edge_attribution(tiny_gpt2, task, method="acdc")
    with pytest.raises(BadInput, match="ig-steps"):
        edge_attribution(tiny_gpt2, task, method="eap-ig", ig_steps=0)


def test_the_split_hooks_are_switched_off_again(tiny_gpt2):
    task = induction_task(tiny_gpt2, n_examples=2, seq_len=4)
    edge_attribution(tiny_gpt2, task, method="eap")
    cfg = tiny_gpt2.bridge.cfg
    assert not cfg.use_split_qkv_input and not cfg.use_attn_result and not cfg.use_hook_mlp_in


# --- SmolLM2 (real weights) -----------------------------------------------------------------------


@pytest.mark.smollm2
def test_smollm2_l16h0_feeds_l18h6s_keys_and_patching_is_exact(smollm2):
    """docs/circuits.md: L16H0 -> L18H6's key/value head (KV2) is SmolLM2's strongest head-to-head edge."""
    task = induction_task(smollm2, n_examples=4, seq_len=30, seed=5)
    res = edge_attribution(smollm2, task, method="eap-ig", ig_steps=3)
    heads = [(s, r) for s, r, _ in res.top(res.n_edges) if s.startswith("L") and r.startswith("L")]
    assert heads[0] == ("L16H0", "L18KV2.k")  # L18H6 is query head 6 of KV head 6 // 3 = 2
    g = EdgeGraph.of(smollm2)
    clean, corrupt = clean_corrupt_metric(smollm2, task)
    np.testing.assert_allclose(patched_metric(smollm2, task, g.valid, keep=True, graph=g), clean, rtol=1e-4, atol=1e-3)


# --- the command ----------------------------------------------------------------------------------


def test_circuit_command_runs_the_edges_step(tiny_llama_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from headscope.cli import app

    out = tmp_path / "c"
    args = ["circuit", "--model", str(tiny_llama_dir), "--device", "cpu", "--examples", "3", "--seq-len", "5",
            "--steps", "edges", "--method", "eap-ig", "--ig-steps", "2", "--top-edges", "5", "--edge-sample", "4",
            "--out", str(out), "--report", "--json"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    (edges,) = json.loads(r.stdout)["extra"]
    assert edges["kind"] == "edge-circuit" and len(edges["circuit"]) == 5 and edges["attribution"]["ig_steps"] == 2
    assert edges["faithfulness"][-1]["faithfulness"] == pytest.approx(1.0, abs=1e-4)
    assert edges["rank_agreement"]["n"] == 4 and set(edges["stability"]["jaccard"]) == {"10", "5", "100"}
    names = {p.name for p in out.rglob("*") if p.is_file()}
    assert {"edges.csv", "faithfulness.csv", "edgecircuit_graph.png", "edgecircuit_faithfulness.png"} <= names
    assert "Edge circuit" in (out / "report.html").read_text()
    bad = CliRunner().invoke(app, [*args[:-4], "--method", "acdc", "--out", str(tmp_path / "d")])
    assert bad.exit_code == 2 and "eap, eap-ig" in bad.output


def test_chunked_attribution_gives_the_same_scores(tiny_llama):
    """Examples go through in chunks (to bound memory); the scores are still means over every example."""
    task = induction_task(tiny_llama, n_examples=5, seq_len=5, seed=2)
    whole = edge_attribution(tiny_llama, task, method="eap-ig", ig_steps=2).scores
    parts = edge_attribution(tiny_llama, task, method="eap-ig", ig_steps=2, chunk=2).scores
    np.testing.assert_allclose(parts, whole, rtol=1e-4, atol=1e-6)
    tight = edge_attribution(tiny_llama, task, method="eap-ig", ig_steps=2, max_memory_gb=1e-6).scores  # 1 a pass
    np.testing.assert_allclose(tight, whole, rtol=1e-4, atol=1e-6)


def test_the_terminal_edge_table_title_fits_a_narrow_terminal(tiny_llama):
    """The title carried the timing ("EAP-IG: top edges of 1234 (38.5 s wall, 61.0 s CPU)") and wrapped at 80 columns."""
    from rich.console import Console

    from headscope.render.lookup import view_of

    scores = edge_attribution(tiny_llama, induction_task(tiny_llama, n_examples=2, seq_len=5), method="eap")
    console = Console(width=60, record=True, color_system=None)
    view_of(scores).terminal(scores, console)
    lines = console.export_text().splitlines()
    assert lines[0].strip() == f"EAP: top 15 of {scores.n_edges:,} edges"
    assert lines[-1].startswith("EAP took ") and "s wall" in lines[-1]
