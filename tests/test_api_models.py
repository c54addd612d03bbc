"""What the API takes as a model: a loaded one; a name, a path or None is BadInput saying to load it first."""

from __future__ import annotations

import pytest

import headscope

ANALYSES = {
    "scan_induction": lambda m: headscope.scan_induction(m, seq_len=8, batch=2),
    "analyze_heads": lambda m: headscope.analyze_heads(m),
    "analyze_logits": lambda m: headscope.analyze_logits(m, "a b"),
    "analyze_qk": lambda m: headscope.analyze_qk(m),
    "qk_scores": lambda m: headscope.qk_scores(m, "0.1", "a b"),
    "decompose_qk": lambda m: headscope.decompose_qk(m, "0.1", "a b"),
    "positional_qk": lambda m: headscope.positional_qk(m, "0.1"),
    "token_qk": lambda m: headscope.token_qk(m, "0.1", [1, 2]),
    "composition_scores": lambda m: headscope.composition_scores(m),
    "logit_attribution": lambda m: headscope.logit_attribution(m, "a b"),
    "ov_circuit": lambda m: headscope.ov_circuit(m, "0.1", [" a"]),
    "build_report": lambda m: headscope.build_report(m),
}


@pytest.mark.parametrize("name", ANALYSES)
def test_a_model_name_or_none_is_bad_input_saying_to_load_it(name):
    with pytest.raises(headscope.BadInput, match="expected a loaded model, got the str 'gpt2'") as err:
        ANALYSES[name]("gpt2")
    assert "headscope.load_model('gpt2')" in err.value.hint
    with pytest.raises(headscope.BadInput, match="expected a loaded model, got None") as err:
        ANALYSES[name](None)
    assert "headscope.load_model(" in err.value.hint
