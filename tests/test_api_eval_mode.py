"""A model left in train mode (dropout on) gives the same numbers as in eval mode, and keeps its modes."""

from __future__ import annotations

import numpy as np
import pytest

import headscope


@pytest.fixture
def training(tiny_gpt2):
    """The shared tiny GPT-2 (dropout 0.1) in train mode, with one submodule the user keeps in eval."""
    tiny_gpt2.bridge.train()
    frozen = tiny_gpt2.bridge.blocks[0]
    frozen.eval()
    modes = {name: m.training for name, m in tiny_gpt2.bridge.named_modules()}
    yield tiny_gpt2, modes
    tiny_gpt2.bridge.eval()


def _same_modes(model, modes):
    return {name: m.training for name, m in model.bridge.named_modules()} == modes


def test_scan_in_train_mode_has_no_dropout_and_leaves_the_modes(training, tiny_gpt2):
    model, modes = training
    kw = dict(seq_len=8, batch=3, top_k=2, controls=2, sample=False, progress=False)
    trained = headscope.scan_induction(model, **kw)
    assert _same_modes(model, modes)
    model.bridge.eval()
    clean = headscope.scan_induction(model, **kw)
    assert trained.loss_later_repeats == pytest.approx(clean.loss_later_repeats, abs=1e-6)
    for name in ("induction", "previous_token"):
        np.testing.assert_allclose(trained.scores[name], clean.scores[name], atol=1e-6)


def test_text_analyses_in_train_mode_match_eval_and_leave_the_modes(training):
    model, modes = training
    text = "a b c a b c"
    live = headscope.qk_scores(model, "1.2", text)
    dla = headscope.logit_attribution(model, text)
    assert _same_modes(model, modes)
    model.bridge.eval()
    np.testing.assert_allclose(live.patterns[0], headscope.qk_scores(model, "1.2", text).patterns[0], atol=1e-6)
    np.testing.assert_allclose(dla.heads, headscope.logit_attribution(model, text).heads, atol=1e-6)


def test_modes_come_back_after_a_failed_call(training):
    model, modes = training
    with pytest.raises(headscope.BadInput):
        headscope.qk_scores(model, "1.2", "")
    assert _same_modes(model, modes)
