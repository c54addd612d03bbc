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


@pytest.mark.parametrize("spec", [None, 3, 2.5])
def test_load_model_of_none_or_a_number_says_so_not_that_the_hub_is_unreachable(spec):
    with pytest.raises(headscope.BadInput, match=f"load_model takes a model's name or path, got {spec}") as err:
        headscope.load_model(spec)
    assert "load_model('gpt2')" in err.value.hint


def test_load_model_of_a_loaded_model_says_it_is_loaded(tiny_gpt2):
    for loaded in (tiny_gpt2, tiny_gpt2.bridge):
        with pytest.raises(headscope.BadInput, match="load_model got a model that is already loaded") as err:
            headscope.load_model(loaded)
        assert "pass it to the analysis as it is" in err.value.hint


def test_load_model_takes_load_settings(tiny_gpt2_dir):
    m = headscope.load_model(headscope.LoadSettings(str(tiny_gpt2_dir), device="cpu"))
    assert (m.n_layers, m.source.kind, str(m.device)) == (2, "local", "cpu")
    with pytest.raises(headscope.BadInput, match="model path /nope/x does not exist"):
        headscope.load_model(headscope.LoadSettings("/nope/x"))
    with pytest.raises(headscope.BadInput, match="got a LoadSettings and device='cpu' beside it"):
        headscope.load_model(headscope.LoadSettings(str(tiny_gpt2_dir)), device="cpu")
