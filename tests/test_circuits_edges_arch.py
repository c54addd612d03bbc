"""Edge attribution on other block layouts: parallel attention and MLP (GPT-NeoX, Phi), and the models it refuses.

* Parallel blocks (the MLP reads the block input, as attention does): the graph has no head ->
  own-layer MLP edge; single-edge patches into an MLP and into the logits match the same patch
  made by hand on the Hugging Face model (its own modules hooked, the heads' outputs cut from
  the dense projection's input), and EAP matches finite differences of the patch.
* OPT (no per-head query/key/value input) and Gemma 2 (norms after attention and the MLP) are
  refused before anything is patched, by ``circuit --steps ...,edges``, in one line with exit code 2.
* The check on the model itself (every receiver's input changes by the sum of its senders'
  changes) catches a graph wired wrong: NeoX treated as sequential.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import headscope
from headscope.circuits import induction_task
from headscope.circuits.eap import edge_attribution
from headscope.circuits.edges import EdgeGraph, check_edge_graph, clean_corrupt_metric, patched_metric
from headscope.circuits.tasks import task_metric
from headscope.errors import BadInput

SMALL = dict(
    vocab_size=50257, bos_token_id=50256, eos_token_id=50256, max_position_embeddings=128, initializer_range=0.1
)


def _save(model, tok_dir, out):
    from transformers import AutoTokenizer

    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tok_dir)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def arch_dirs(tmp_path_factory, gpt2_tokenizer_dir):
    """Tiny random models of four layouts: NeoX (parallel, own MLP norm), Phi (parallel, shared norm), OPT, Gemma 2."""
    import transformers as T

    specs = {
        "neox": (T.GPTNeoXConfig, T.GPTNeoXForCausalLM, dict(hidden_size=64, intermediate_size=128,
                 num_hidden_layers=2, num_attention_heads=4, rotary_pct=0.25, use_parallel_residual=True)),
        "phi": (T.PhiConfig, T.PhiForCausalLM, dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, partial_rotary_factor=0.5)),
        "opt": (T.OPTConfig, T.OPTForCausalLM, dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                num_attention_heads=4, word_embed_proj_dim=64)),
        "gemma2": (T.Gemma2Config, T.Gemma2ForCausalLM, dict(hidden_size=64, intermediate_size=128,
                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                   sliding_window=16)),
    }  # fmt: skip
    root = tmp_path_factory.mktemp("archs")
    out = {}
    for name, (C, M, kw) in specs.items():
        torch.manual_seed(0)
        hf = M(C(**SMALL, **kw)).eval()
        with torch.no_grad():  # embeddings of the usual size, so attention is not uniform and edges differ
            hf.get_input_embeddings().weight.mul_(4.0)
        out[name] = _save(hf, gpt2_tokenizer_dir, root / name)
    return out


@pytest.fixture(scope="module")
def parallel(arch_dirs):
    """``{name: (headscope model, HF model)}`` for the two parallel layouts."""
    from transformers import AutoModelForCausalLM

    return {
        n: (
            headscope.load_model(str(arch_dirs[n]), device="cpu"),
            AutoModelForCausalLM.from_pretrained(str(arch_dirs[n])).eval(),
        )
        for n in ("neox", "phi")
    }


# --- the Hugging Face model, hooked by hand ---------------------------------------------------------


def _parts(name, hf):
    """(layers, per-layer attention output projection, per-layer MLP, final norm) of a NeoX or Phi model."""
    if name == "neox":
        base = hf.gpt_neox
        return base.layers, [l.attention.dense for l in base.layers], base.final_layer_norm
    base = hf.model
    return base.layers, [l.self_attn.dense for l in base.layers], base.final_layernorm


def _senders(name, hf, tokens):
    """Every sender's output on ``tokens`` from the HF model: the block-0 input, each head's slice of the
    dense projection (bias left out: it is the same in every run), each MLP's output."""
    layers, dense, _ = _parts(name, hf)
    H = hf.config.num_attention_heads
    seen, handles = {}, []
    handles.append(
        layers[0].register_forward_pre_hook(
            lambda m, a, k: seen.__setitem__("input", (a or (k["hidden_states"],))[0]), with_kwargs=True
        )
    )
    for l, layer in enumerate(layers):
        handles.append(dense[l].register_forward_pre_hook(lambda m, a, l=l: seen.__setitem__(f"z{l}", a[0])))
        handles.append(layer.mlp.register_forward_hook(lambda m, a, o, l=l: seen.__setitem__(f"MLP{l}", o)))
    with torch.no_grad():
        hf(tokens)
    for h in handles:
        h.remove()
    out = {"input": seen["input"]}
    for l in range(len(layers)):
        z, W = seen[f"z{l}"], dense[l].weight  # [b, n, H * dh], [d, H * dh]
        dh = z.shape[-1] // H
        for h in range(H):
            out[f"L{l}H{h}"] = z[..., h * dh : (h + 1) * dh] @ W[:, h * dh : (h + 1) * dh].T
        out[f"MLP{l}"] = seen[f"MLP{l}"]
    return out


def _hf_patched(name, hf, task, receiver, delta):
    """The metric of the clean run with ``delta`` added to one receiver's input: an MLP's (its own copy of the
    block input) or the final norm's."""
    layers, _, final = _parts(name, hf)
    handles = []
    if receiver == "logits":
        handles.append(final.register_forward_pre_hook(lambda m, a: (a[0] + delta,)))
    else:
        l = int(receiver[3:])
        if name == "neox":  # the MLP has its own norm: its input is the block input
            handles.append(layers[l].post_attention_layernorm.register_forward_pre_hook(lambda m, a: (a[0] + delta,)))
        else:  # Phi: the MLP reads the shared norm's output; give it the norm of (block input + delta)
            norm, seen = layers[l].input_layernorm, {}
            handles.append(norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])))
            handles.append(layers[l].mlp.register_forward_pre_hook(lambda m, a: (norm(seen["x"] + delta),)))
    try:
        with torch.no_grad():
            return task_metric(hf(task.clean).logits, task).numpy()
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("name", ["neox", "phi"])
def test_parallel_graph_has_no_head_to_own_mlp_edges(parallel, name):
    model, _ = parallel[name]
    g = EdgeGraph.of(model)
    assert g.parallel and g.shared_norm == (name == "phi")
    for layer in range(2):
        mlp = g.receiver_index(f"MLP{layer}")
        assert not any(g.valid[g.sender_index(f"L{layer}H{h}"), mlp] for h in range(4))
        assert g.valid[g.sender_index("input"), mlp]
    assert g.valid[g.sender_index("MLP0"), g.receiver_index("MLP1")]
    assert g.valid[g.sender_index("L0H2"), g.receiver_index("MLP1")]
    assert g.n_edges == 110 - 8


@pytest.mark.parametrize("name", ["neox", "phi"])
def test_parallel_identities_every_edge_kept_is_clean(parallel, name):
    model, _ = parallel[name]
    task = induction_task(model, n_examples=3, seq_len=5, seed=1)
    g = EdgeGraph.of(model)
    check_edge_graph(model, task, g)
    clean, corrupt = clean_corrupt_metric(model, task)
    assert np.abs(clean - corrupt).max() > 1e-3
    np.testing.assert_allclose(patched_metric(model, task, g.valid, keep=True, graph=g), clean, atol=2e-5)
    np.testing.assert_allclose(patched_metric(model, task, g.valid, keep=False, graph=g), corrupt, atol=2e-5)


@pytest.mark.parametrize("name", ["neox", "phi"])
def test_parallel_single_edge_patches_match_the_hooked_hf_model(parallel, name):
    model, hf = parallel[name]
    task = induction_task(model, n_examples=2, seq_len=5, seed=2)
    g = EdgeGraph.of(model)
    clean, corrupt = _senders(name, hf, task.clean), _senders(name, hf, task.corrupt)
    moved = 0.0
    base = task_metric(hf(task.clean).logits, task).detach().numpy()
    for s, r in [
        ("L0H1", "MLP1"),
        ("MLP0", "MLP1"),
        ("input", "MLP0"),
        ("input", "MLP1"),
        ("L1H2", "logits"),
        ("MLP1", "logits"),
    ]:
        want = _hf_patched(name, hf, task, r, corrupt[s] - clean[s])
        got = patched_metric(model, task, [(g.sender_index(s), g.receiver_index(r))], keep=False, graph=g)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{s} -> {r}")
        moved = max(moved, float(np.abs(want - base).max()))
    assert moved > 1e-2  # the patches change the metric: not a comparison of unpatched runs


@pytest.mark.parametrize("name", ["neox", "phi"])
def test_parallel_eap_equals_finite_differences_of_the_patch(parallel, name):
    model, _ = parallel[name]
    task = induction_task(model, n_examples=2, seq_len=5, seed=1)
    g = EdgeGraph.of(model)
    scores = edge_attribution(model, task, method="eap").scores
    eps = 1e-2
    checked = 0
    for s, r in [("L0H1", "MLP1"), ("MLP0", "MLP1"), ("input", "MLP0"), ("L0H3", "L1H2.k"), ("L1H0", "logits")]:
        u, v = g.sender_index(s), g.receiver_index(r)
        up = patched_metric(model, task, [(u, v)], keep=False, graph=g, scale=eps).mean()
        down = patched_metric(model, task, [(u, v)], keep=False, graph=g, scale=-eps).mean()
        assert scores[u, v] == pytest.approx((up - down) / (2 * eps), rel=3e-2, abs=3e-5), f"{s} -> {r}"
        checked += abs(scores[u, v]) > 1e-4
    assert checked >= 3
    assert np.isnan(scores[g.sender_index("L0H0"), g.receiver_index("MLP0")])  # not an edge on a parallel block


def test_a_graph_wired_wrong_is_refused_by_the_check_on_the_model(parallel):
    """NeoX read as if its MLP came after attention (the old behaviour): the receivers' inputs are not the sums."""
    model, _ = parallel["neox"]
    task = induction_task(model, n_examples=2, seq_len=5)
    wrong = EdgeGraph.build(2, 4, 4, parallel=False)
    with pytest.raises(BadInput, match=r"MLP0 .*not the sum of its senders' outputs"):
        check_edge_graph(model, task, wrong)


# --- refused models -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, why",
    [("opt", r"OPTForCausalLM\) has no hook for each head's own query/key/value input"),
     ("gemma2", r"Gemma2ForCausalLM\) normalises attention's and the MLP's outputs")],
)  # fmt: skip
def test_circuit_edges_is_refused_up_front_in_one_line(arch_dirs, tmp_path, monkeypatch, name, why):
    from typer.testing import CliRunner

    from headscope.cli import app
    from headscope.pipeline import circuit_analysis

    ran = []
    monkeypatch.setattr(circuit_analysis, "cache_run", lambda *a, **k: ran.append(1))  # nothing may run
    out = tmp_path / "c"
    r = CliRunner().invoke(
        app,
        ["circuit", "--model", str(arch_dirs[name]), "--device", "cpu", "--examples", "2", "--seq-len", "4",
         "--steps", "activation,paths,edges", "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and not ran and not out.exists()
    err = " ".join(r.output.split())
    assert "edge attribution (--steps edges) cannot run" in err and "--steps activation,paths" in err
    import re

    assert re.search(why, err), err


def test_circuit_edges_runs_on_phi_from_the_command_line(arch_dirs, tmp_path):
    from typer.testing import CliRunner

    from headscope.cli import app

    args = ["circuit", "--model", str(arch_dirs["phi"]), "--device", "cpu", "--examples", "3", "--seq-len", "5",
            "--steps", "edges", "--ig-steps", "2", "--top-edges", "5", "--edge-sample", "4", "--no-figures",
            "--out", str(tmp_path / "c"), "--json"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    (edges,) = json.loads(r.stdout)["extra"]
    assert edges["attribution"]["n_edges"] == 102
    assert edges["faithfulness"][-1]["faithfulness"] == pytest.approx(1.0, abs=1e-3)
