"""Activation and path patching against independent computations with plain ``transformers`` hooks,
and on models where a path is cut by construction.

The references use only the Hugging Face model and torch forward hooks (no TransformerLens):
the sender's output change is ``(z_corrupt - z_clean)`` of its slice of ``o_proj``'s input times
that slice of ``o_proj``'s weight; the receiver's key input is replaced by the input norm of the
clean residual plus that change; the receiver's layer lets only the receiver's output through.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import headscope
from headscope.circuits import induction_task
from headscope.circuits.activation_patching import activation_patching, patched_metrics
from headscope.circuits.path_patching import Receiver, path_metrics, path_patching
from headscope.circuits.runs import cache_run
from headscope.circuits.tasks import task_metric
from headscope.errors import BadInput


def _hf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


class Parts:
    """The pieces of a HF causal LM the reference needs, for Llama and GPT-2."""

    def __init__(self, hf):
        self.hf = hf
        self.llama = hasattr(hf, "model")
        cfg = hf.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.d_model = cfg.hidden_size
        self.d_head = self.d_model // self.n_heads

    def layers(self):
        return self.hf.model.layers if self.llama else self.hf.transformer.h

    def o_proj(self, l):
        a = self.layers()[l].self_attn if self.llama else self.layers()[l].attn
        return a.o_proj if self.llama else a.c_proj

    def ln1(self, l):
        return self.layers()[l].input_layernorm if self.llama else self.layers()[l].ln_1

    def final_norm(self):
        return self.hf.model.norm if self.llama else self.hf.transformer.ln_f

    def w_o_slice(self, l, h):
        """``[d_head, d_model]``: the rows of W_O that head ``h``'s output goes through."""
        s = slice(h * self.d_head, (h + 1) * self.d_head)
        w = self.o_proj(l).weight
        return w[:, s].T if self.llama else w[s, :]


def _pre_hook(module, fn):
    return module.register_forward_pre_hook(lambda mod, args, kwargs: fn(args, kwargs), with_kwargs=True)


def _first(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _with_first(args, kwargs, x):
    if args:
        return (x, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": x}


@torch.no_grad()
def _record(p: Parts, tokens):
    """Per layer: the residual entering it, ``o_proj``'s input (every head's z, flat); the residual before the final norm."""
    rec: dict = {"resid": {}, "z": {}}
    hooks = []
    for l, layer in enumerate(p.layers()):
        hooks.append(_pre_hook(layer, lambda a, k, l=l: rec["resid"].__setitem__(l, _first(a, k).clone())))
        hooks.append(_pre_hook(p.o_proj(l), lambda a, k, l=l: rec["z"].__setitem__(l, _first(a, k).clone())))
    hooks.append(_pre_hook(p.final_norm(), lambda a, k: rec.__setitem__("final", _first(a, k).clone())))
    try:
        rec["logits"] = p.hf(tokens, use_cache=False).logits
    finally:
        for h in hooks:
            h.remove()
    return rec


@torch.no_grad()
def reference_path(p: Parts, task, sender, receiver: Receiver) -> np.ndarray:
    """The path-patched metric per example (noising: clean run, the sender's corrupted output along the path)."""
    clean, corrupt = _record(p, task.clean), _record(p, task.corrupt)
    ls, hs = sender
    s = slice(hs * p.d_head, (hs + 1) * p.d_head)
    delta = (corrupt["z"][ls][..., s] - clean["z"][ls][..., s]) @ p.w_o_slice(ls, hs)
    hooks = []
    if receiver.input == "logits":
        hooks.append(_pre_hook(p.final_norm(), lambda a, k: _with_first(a, k, clean["final"] + delta)))
    else:
        lr, hr = receiver.layer, receiver.head
        normed = p.ln1(lr)(clean["resid"][lr] + delta)
        if p.llama:  # the receiver's projection reads the patched input; the other heads are restored below
            attn = p.layers()[lr].self_attn
            proj = {"q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj}[receiver.input]
            hooks.append(_pre_hook(proj, lambda a, k: _with_first(a, k, normed)))
        else:  # GPT-2's joint c_attn: splice the patched q, k or v third into its output
            c_attn = p.layers()[lr].attn.c_attn
            part = "qkv".index(receiver.input)
            cols = slice(part * p.d_model, (part + 1) * p.d_model)
            patched = c_attn(normed)

            def splice(mod, args, out):
                out = out.clone()
                out[..., cols] = patched[..., cols]
                return out

            hooks.append(c_attn.register_forward_hook(splice))
        keep = slice(hr * p.d_head, (hr + 1) * p.d_head)

        def only_receiver(a, k):
            z = clean["z"][lr].clone()
            z[..., keep] = _first(a, k)[..., keep]
            return _with_first(a, k, z)

        hooks.append(_pre_hook(p.o_proj(lr), only_receiver))
    try:
        logits = p.hf(task.clean, use_cache=False).logits
    finally:
        for h in hooks:
            h.remove()
    return task_metric(logits, task).double().numpy()


@torch.no_grad()
def reference_activation(p: Parts, task, layer, head) -> np.ndarray:
    """Denoising: the corrupted run with head ``(layer, head)``'s z from the clean run."""
    clean = _record(p, task.clean)
    s = slice(head * p.d_head, (head + 1) * p.d_head)

    def swap(a, k):
        z = _first(a, k).clone()
        z[..., s] = clean["z"][layer][..., s]
        return _with_first(a, k, z)

    h = _pre_hook(p.o_proj(layer), swap)
    try:
        logits = p.hf(task.corrupt, use_cache=False).logits
    finally:
        h.remove()
    return task_metric(logits, task).double().numpy()


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt2"])
def test_path_patching_matches_plain_transformers_hooks(request, name):
    model = request.getfixturevalue(name)
    p = Parts(_hf(request.getfixturevalue(f"{name}_dir")))
    task = induction_task(model, n_examples=3, seq_len=6, seed=2)
    clean, corrupt = cache_run(model, task.clean, task), cache_run(model, task.corrupt, task)
    L, H = model.n_layers, model.n_heads
    paths = [((0, h), Receiver(w, 1, r)) for h in range(H) for w in ("q", "k", "v") for r in (0, H - 1)]
    paths += [((l, h), Receiver.logits()) for l in range(L) for h in range(H)]
    got = path_metrics(model, task, clean, corrupt, paths)
    want = np.stack([reference_path(p, task, s, r) for s, r in paths])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # the check can fail: the paths move the metric by much more than the tolerance
    assert np.abs(want - clean.metric.double().numpy()).max() > 1e-2


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt2"])
def test_activation_patching_matches_plain_transformers_hooks(request, name):
    model = request.getfixturevalue(name)
    p = Parts(_hf(request.getfixturevalue(f"{name}_dir")))
    task = induction_task(model, n_examples=3, seq_len=6, seed=3)
    clean, corrupt = cache_run(model, task.clean, task), cache_run(model, task.corrupt, task)
    got = patched_metrics(model, task, corrupt, clean)  # denoising: [L, H + 1, n_ex]
    for l in range(model.n_layers):
        for h in range(model.n_heads):
            np.testing.assert_allclose(got[l, h], reference_activation(p, task, l, h), atol=1e-4, rtol=0)
    # patching the last layer's MLP from the clean run, with nothing above it, shifts the metric exactly by
    # the MLP's output change read through the final norm: compared with the cached final residuals
    last = model.n_layers - 1
    final = corrupt.resid_final + clean.mlp_out[last] - corrupt.mlp_out[last]
    bridge = model.bridge
    with torch.no_grad():
        ref = task_metric(bridge.unembed(bridge.ln_final(final)), task).double().numpy()
    np.testing.assert_allclose(got[last, model.n_heads], ref, atol=1e-4, rtol=0)


def test_a_run_patched_with_its_own_activations_is_unchanged(tiny_llama):
    """Restarting from a cached residual and swapping in the run's own activations gives its metric back."""
    task = induction_task(tiny_llama, n_examples=3, seq_len=5, seed=4)
    corrupt = cache_run(tiny_llama, task.corrupt, task)
    same = patched_metrics(tiny_llama, task, corrupt, corrupt)
    np.testing.assert_allclose(same, np.broadcast_to(corrupt.metric.double().numpy(), same.shape), atol=1e-5)


@pytest.fixture()
def cut_llama(tiny_llama_dir, tmp_path):
    """The tiny Llama with two paths cut by construction: layer 0 head 1 writes nothing (its W_O columns are 0),
    and layer 1's key/value head 0 reads nothing (its W_K rows are 0, so its keys are 0 whatever comes in)."""
    hf = _hf(tiny_llama_dir)
    d_head = hf.config.hidden_size // hf.config.num_attention_heads
    with torch.no_grad():
        hf.model.layers[0].self_attn.o_proj.weight[:, d_head : 2 * d_head] = 0
        hf.model.layers[1].self_attn.k_proj.weight[:d_head] = 0
    hf.save_pretrained(str(tmp_path))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(tiny_llama_dir)).save_pretrained(str(tmp_path))
    return headscope.load_model(str(tmp_path), device="cpu")


def test_paths_cut_by_construction_carry_nothing_and_the_others_do(cut_llama):
    task = induction_task(cut_llama, n_examples=4, seq_len=6, seed=5)
    # L0H1 writes nothing: no path from it carries anything
    for r in (Receiver("k", 1, 2), Receiver("q", 2, 0), Receiver.logits()):
        pp = path_patching(cut_llama, task, [(0, 1)], r)
        assert abs(pp.effect[0]) < 1e-6
    # layer 1's query heads 0 and 1 read key/value head 0, whose keys are 0: nothing reaches them via K
    keys0 = path_patching(cut_llama, task, None, Receiver("k", 1, 0))
    assert np.abs(keys0.effect).max() < 1e-6
    assert "key/value head 0" in " ".join(keys0.notes)
    # ... while the same senders do reach query head 2 (key/value head 1) and the values of head 0
    assert np.abs(path_patching(cut_llama, task, None, Receiver("k", 1, 2)).effect).max() > 1e-4
    assert np.abs(path_patching(cut_llama, task, None, Receiver("v", 1, 0)).effect).max() > 1e-4


def test_results_have_intervals_around_their_values_and_say_the_direction(tiny_gpt2):
    task = induction_task(tiny_gpt2, n_examples=5, seq_len=6, seed=6)
    for d in ("denoise", "noise"):
        ap = activation_patching(tiny_gpt2, task, d)
        assert ap.values.shape == (2, 5) and ap.direction == d
        assert (ap.low <= ap.values + 1e-9).all() and (ap.values <= ap.high + 1e-9).all()
        assert ap.to_dict()["columns"][-1] == "MLP"
    per_pos = activation_patching(tiny_gpt2, task, "denoise", per_position=True)
    assert per_pos.values.shape == (2, 5) and per_pos.position_values.shape == (2, 5, task.clean.shape[1])
    assert (per_pos.position_low <= per_pos.position_values + 1e-9).all()
    assert (per_pos.position_values <= per_pos.position_high + 1e-9).all()
    pp = path_patching(tiny_gpt2, task, None, Receiver("k", 1, 0))
    lo, hi = pp.effect_interval(0)
    assert lo <= pp.effect[0] <= hi


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_per_position_is_measured_besides_the_whole_sequence_which_stays_as_without_it(tiny_gpt2, direction):
    import pandas as pd

    task = induction_task(tiny_gpt2, n_examples=4, seq_len=5, seed=7)
    whole = activation_patching(tiny_gpt2, task, direction)
    both = activation_patching(tiny_gpt2, task, direction, per_position=True)
    # the whole-sequence numbers are the run without per_position's: values, intervals, changes, top, the frame
    for name in ("values", "low", "high", "change", "change_low", "change_high"):
        np.testing.assert_array_equal(getattr(both, name), getattr(whole, name))
    assert both.top(20) == whole.top(20) and both.top_change(20) == whole.top_change(20)
    pd.testing.assert_frame_equal(both.to_frame(), whole.to_frame())
    n_tok = task.clean.shape[1]
    assert both.position_values.shape == (2, 5, n_tok) and not len(whole.position_values)
    assert both.positions[1:] == [f"repeat {r}, token {j}" for r in (1, 2) for j in range(5)]
    # position 0 holds the same token in both runs and sees nothing else: patching it alone changes nothing
    np.testing.assert_allclose(both.position_change[..., 0], 0, atol=1e-6)
    # in the last layer a component's output at one position reaches only that position's logits, and the metric
    # is a mean over positions: the one-position changes add up to the whole-sequence change
    np.testing.assert_allclose(both.position_change[-1].sum(-1), both.change[-1], atol=1e-6)
    assert np.abs(both.change[-1]).max() > 1e-3  # the check can fail
    frame = both.position_frame()
    assert len(frame) == 2 * 5 * n_tok and list(frame.columns)[3:5] == ["position", "token"]
    row = frame[(frame.component == "L1H2") & (frame.position == 7)].iloc[0]
    assert (row.token, row.value) == ("repeat 2, token 1", both.position_values[1, 2, 7])
    with pytest.raises(BadInput, match="whole sequence only"):
        whole.position_frame()


def test_a_sender_above_its_receiver_and_a_bad_receiver_are_refused(tiny_gpt2):
    from headscope.pipeline.circuit_analysis import parse_receiver

    task = induction_task(tiny_gpt2, n_examples=2, seq_len=5)
    with pytest.raises(BadInput, match="not below"):
        path_patching(tiny_gpt2, task, [(1, 0)], Receiver("k", 1, 2))
    with pytest.raises(BadInput, match="HEAD.INPUT"):
        parse_receiver("L1H0.z", 2)
    with pytest.raises(BadInput):
        parse_receiver("L9H0.k", 2, 4)


@pytest.mark.parametrize(
    "receiver, match",
    [
        (Receiver("x", 1, 0), "not one of q, k, v, qkv"),  # used to patch nothing and read effect 0
        (Receiver("kv", 1, 0), "not one of"),
        (Receiver("k", 40, 0), "layer 40 does not exist"),
        (Receiver("k", 1, 9), "head 9 does not exist"),
        (Receiver("k"), "names no head"),
        ("L1H0.z", "HEAD.INPUT"),
        (3, "HEAD.INPUT"),
    ],
)
def test_path_patching_refuses_a_receiver_the_model_does_not_have(tiny_gpt2, receiver, match):
    task = induction_task(tiny_gpt2, n_examples=2, seq_len=5)
    with pytest.raises(BadInput, match=match):
        path_patching(tiny_gpt2, task, None, receiver)


def test_path_patching_takes_a_receiver_label(tiny_gpt2):
    task = induction_task(tiny_gpt2, n_examples=2, seq_len=5)
    by_label = path_patching(tiny_gpt2, task, None, "L1H0.k")
    by_object = path_patching(tiny_gpt2, task, None, Receiver("k", 1, 0))
    assert by_label.receiver == "L1H0.k"
    np.testing.assert_array_equal(by_label.effect, by_object.effect)


def test_the_noise_table_says_which_way_is_lost_and_names_mlps_as_everywhere_else(tiny_gpt2):
    from rich.console import Console

    from headscope.render.lookup import view_of

    task = induction_task(tiny_gpt2, n_examples=2, seq_len=5)
    res = activation_patching(tiny_gpt2, task, direction="noise")
    res.gap = {**res.gap, "meaningful": True}  # a random tiny model has no real gap: show the normalised table
    con = Console(record=True, width=250)
    view_of(res).terminal(res, con)
    text = con.export_text()
    assert "gap lost (1 - normalised)" in text and "lower = more lost" in text
    lab, v, _, _ = res.top(1)[0]
    assert f"{1 - v:+.3f}" in next(line for line in text.splitlines() if line.lstrip("│ ").startswith(lab))
    assert "MLP1" in res.to_frame()["component"].tolist() and not any("LMLP" in c for c in res.to_frame()["component"])
