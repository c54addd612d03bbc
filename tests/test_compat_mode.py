"""Analyses on a bridge a user switched into TransformerLens's compatibility mode.

``TransformerBridge.enable_compatibility_mode()`` (what TransformerLens 4 tells users of
``HookedTransformer`` to call) re-registers every hook under its legacy alias, so a hook added
as ``blocks.0.attn.hook_q_input`` fires with ``hook.name == "blocks.0.hook_q_input"``; by
default it also processes the weights as HookedTransformer does (fold the norms' gains and
biases, centre the writing weights and the unembedding, fold the value biases into ``b_O``).
headscope keys what its hooks store by the name it asked for, so both must give the numbers of
the same model without compatibility mode:

* ``no_processing=True`` changes only the hook names: every analysis must agree with the plain
  bridge to float32 rounding.
* With the weight processing, the forward pass computes the same function in other
  coordinates. The analyses below must still agree with the plain bridge, because each is
  invariant to it: an edge score is ``delta_u . grad_v`` at a receiver that a norm reads, and a
  LayerNorm's gradient is orthogonal to the all-ones direction that centring removes; patching
  and attention read logits differences and patterns, which the processing keeps. The one
  change by design is direct logit attribution: folding the value biases moves ``b_V W_O`` out
  of the heads into the attention bias, so there the heads plus the bias are compared, and the
  scan's per-head ``direct_logit_*`` and uncentred ``copying_direct`` move (the scan says so in
  a note); its attention, copying, composition and loss numbers do not.

The GPT-2 here has norms and biases that are not the identity / zero, so folding them changes
every weight (a freshly initialised GPT-2's unit gains would make folding a no-op).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import headscope
from headscope.circuits import induction_task
from headscope.circuits.activation_patching import activation_patching
from headscope.circuits.eap import edge_attribution
from headscope.circuits.edges import EdgeGraph, patched_metric, split_inputs
from headscope.circuits.faithfulness import faithfulness_curve
from headscope.circuits.path_patching import Receiver, path_patching

MODES = {"aliases": {"no_processing": True}, "processed": {}}


def _compat(path, mode: str):
    """A fresh load of ``path`` (never the shared fixtures: the mode cannot be switched off) in compatibility mode."""
    m = headscope.load_model(str(path), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.bridge.enable_compatibility_mode(disable_warnings=True, **MODES[mode])
    assert m.bridge.compatibility_mode
    return m


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, bumpy_gpt2_dir, tiny_llama_dir):
    """``(plain model, {mode: the same weights in compatibility mode})``."""
    path = bumpy_gpt2_dir if request.param == "gpt2" else tiny_llama_dir
    plain = headscope.load_model(str(path), device="cpu")
    return plain, {mode: _compat(path, mode) for mode in MODES}


def _close(got, want, rel: float):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    scale = np.nanmax(np.abs(want))
    assert scale > 1e-3  # the comparison is not between zeros
    np.testing.assert_allclose(got, want, rtol=0, atol=rel * scale)


def test_hooks_fire_under_their_aliases_in_compatibility_mode(bumpy_gpt2_dir):
    """The cause of the bug: a hook's ``hook.name`` is not the name it was added under."""
    m = _compat(bumpy_gpt2_dir, "aliases")
    fired = []
    with split_inputs(m):
        m.run_with_hooks(
            torch.tensor([[1, 2, 3]]),
            fwd_hooks=[("blocks.0.attn.hook_q_input", lambda x, hook: fired.append(hook.name))],
        )
    assert fired == ["blocks.0.hook_q_input"]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_edge_attribution_is_unchanged_by_compatibility_mode(pair, mode, method):
    plain, compat = pair
    task = induction_task(plain, n_examples=3, seq_len=5, seed=1)
    want = edge_attribution(plain, task, method=method, ig_steps=2).scores
    got = edge_attribution(compat[mode], task, method=method, ig_steps=2).scores
    valid = EdgeGraph.of(plain).valid
    assert np.isnan(got[~valid]).all()
    _close(got[valid], want[valid], 1e-4)


@pytest.mark.parametrize("mode", list(MODES))
def test_edge_patching_and_faithfulness_are_unchanged_by_compatibility_mode(pair, mode):
    plain, compat = pair
    m = compat[mode]
    task = induction_task(plain, n_examples=3, seq_len=5, seed=2)
    scores = edge_attribution(plain, task, method="eap")
    g = EdgeGraph.of(plain)
    top = [tuple(e) for e in scores.ranked()[:6]]
    for keep in (True, False):  # a circuit kept clean, and the same edges corrupted alone
        want = patched_metric(plain, task, top, keep=keep, graph=g)
        _close(patched_metric(m, task, top, keep=keep, graph=g), want, 1e-4)
    want_rows = faithfulness_curve(plain, task, scores, points=(1, 5, 20))[0]
    got_rows = faithfulness_curve(m, task, scores, points=(1, 5, 20))[0]
    _close([r["metric"] for r in got_rows], [r["metric"] for r in want_rows], 1e-4)


@pytest.mark.parametrize("mode", list(MODES))
def test_activation_and_path_patching_are_unchanged_by_compatibility_mode(pair, mode):
    plain, compat = pair
    task = induction_task(plain, n_examples=3, seq_len=5, seed=3)
    for direction in ("denoise", "noise"):
        want = activation_patching(plain, task, direction=direction).values
        _close(activation_patching(compat[mode], task, direction=direction).values, want, 1e-4)
    last = plain.n_layers - 1
    for receiver in (Receiver("k", last, 0), Receiver("v", last, 1), Receiver.logits()):
        want = path_patching(plain, task, None, receiver).values
        _close(path_patching(compat[mode], task, None, receiver).values, want, 1e-4)


@pytest.mark.parametrize("mode", list(MODES))
def test_scan_attention_and_logit_attribution_are_unchanged_by_compatibility_mode(pair, mode):
    plain, compat = pair
    m = compat[mode]
    kw = dict(seq_len=8, batch=2, sample=False, progress=False)
    want, got = headscope.scan_induction(plain, **kw), headscope.scan_induction(m, **kw)
    assert set(got.scores) == set(want.scores)
    # by design (module docstring): folded value biases move direct_logit_*, centring moves copying_direct
    moved = {"direct_logit_later", "direct_logit_first", "copying_direct"} if mode == "processed" else set()
    for name in set(want.scores) - moved:
        np.testing.assert_allclose(got.scores[name], want.scores[name], rtol=1e-4, atol=1e-5, err_msg=name)
    noted = [n for n in got.notes if "enable_compatibility_mode" in n]
    assert len(noted) == (1 if mode == "processed" else 0) and not any("compatibility" in n for n in want.notes)
    np.testing.assert_allclose(got.per_position_loss, want.per_position_loss, rtol=1e-5, atol=1e-5)
    text = "the cat sat on the mat and the cat"
    want_qk, got_qk = headscope.qk_scores(plain, ["L1H0"], text), headscope.qk_scores(m, ["L1H0"], text)
    _close(got_qk.scores, want_qk.scores, 1e-5)
    want_dla, got_dla = headscope.logit_attribution(plain, text), headscope.logit_attribution(m, text)
    _close(got_dla.model_logit, want_dla.model_logit, 1e-5)
    for name in ("embed", "MLP0"):
        _close(got_dla.components[name], want_dla.components[name], 1e-5)

    # folding the value biases (processed mode) moves b_V W_O from the heads into attn_bias: their sum is kept
    def heads_and_bias(r):
        return r.heads.sum((1, 2)) + r.components.get("attn_bias", 0.0)

    _close(heads_and_bias(got_dla), heads_and_bias(want_dla), 1e-5)
    if mode == "aliases":
        _close(got_dla.heads, want_dla.heads, 1e-5)


def _same(got, want, path="view"):
    """Nested view dicts equal: strings and shapes exactly, numbers within 1e-4 of the largest."""
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for k in want:
            if k not in ("seconds", "elapsed_s", "ms"):
                _same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _same(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert got is not None and abs(got - want) <= 1e-4 * max(1.0, abs(want)), (path, got, want)
    else:
        assert got == want, (path, got, want)


def test_the_explorer_shows_the_same_views_on_a_compatibility_mode_bridge(pair):
    # Names only: the processed mode shows activations in processed coordinates, by design.
    from headscope.explorer.engine import Explorer
    from headscope.settings import ScanSettings

    plain, compat = pair
    text = "the cat sat on the mat and the cat sat"
    settings = ScanSettings(seq_len=8, batch=2)  # the bumpy GPT-2's context is 64 tokens
    want = Explorer(plain, max_tokens=64, scan_settings=settings)
    got = Explorer(compat["aliases"], max_tokens=64, scan_settings=settings)
    _same(got.text_view(text), want.text_view(text))
    _same(got.head_view(text, "L1H0", 5), want.head_view(text, "L1H0", 5))
    _same(got.qk_view(text, "L1H1", 6), want.qk_view(text, "L1H1", 6))
    _same(got.position_view(text, 7), want.position_view(text, 7))
