"""A scan handed to analyze_qk / analyze_logits must be this model's: another model's scan is refused."""

from __future__ import annotations

import pytest

import headscope


@pytest.fixture(scope="module")
def gpt2_scan(tiny_gpt2):
    return headscope.scan_induction(tiny_gpt2, seq_len=8, batch=2, ablate=False, sample=False, progress=False)


def test_another_models_scan_is_refused_by_analyze_logits(tiny_llama, gpt2_scan):
    with pytest.raises(headscope.BadInput, match="n_layers 2 \\(the model has 3\\)"):
        headscope.analyze_logits(tiny_llama, "a b c a b c", scan=gpt2_scan)


def test_another_models_scan_is_refused_by_analyze_qk(tiny_llama, gpt2_scan):
    with pytest.raises(headscope.BadInput, match="not of"):
        headscope.analyze_qk(tiny_llama, "a b c a b c", scan=gpt2_scan)


def test_something_else_as_scan_is_refused(tiny_gpt2, gpt2_scan):
    with pytest.raises(headscope.BadInput, match="scan must be an InductionResult"):
        headscope.analyze_qk(tiny_gpt2, "a b c a b c", scan=gpt2_scan.to_dict())


def test_the_models_own_scan_read_back_is_taken(tiny_gpt2, gpt2_scan):
    again = headscope.InductionResult.from_json(gpt2_scan.to_json())
    a = headscope.analyze_logits(tiny_gpt2, "a b c a b c", top=1, scan=again)
    assert a.scan is again


def test_settings_beside_a_scan_are_refused_not_ignored(tiny_gpt2, gpt2_scan):
    with pytest.raises(headscope.BadInput, match="seq_len would be ignored"):
        headscope.analyze_logits(tiny_gpt2, "a b c a b c", scan=gpt2_scan, seq_len=20)
    with pytest.raises(headscope.BadInput, match="settings would be ignored"):
        headscope.analyze_logits(tiny_gpt2, "a b c a b c", settings={"batch": 4}, scan=gpt2_scan)


def test_paths_with_a_scan_run_on_the_scans_sequences(tiny_gpt2, gpt2_scan, monkeypatch):
    from headscope.pipeline import logit_analysis

    seen = {}

    def record(model, heads, batch, seq_len, seed, max_memory_gb):
        seen.update(batch=batch, seq_len=seq_len, seed=seed)
        return None

    monkeypatch.setattr(logit_analysis, "story_paths", record)
    headscope.analyze_logits(tiny_gpt2, "a b c a b c", top=1, scan=gpt2_scan, paths=True)
    ran = gpt2_scan.settings
    assert seen == {"batch": ran["batch"], "seq_len": ran["seq_len"], "seed": ran["seed"]}
