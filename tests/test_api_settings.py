"""Settings as the API takes them: a ScanSettings or a mapping of its fields; anything else is BadInput."""

from __future__ import annotations

import pytest

import headscope
from headscope.settings import ScanSettings

FAST = {"seq_len": 8, "batch": 2, "ablate": False}


def test_a_mapping_of_fields_is_read_as_settings(tiny_gpt2):
    res = headscope.scan_induction(tiny_gpt2, FAST, sample=False, progress=False)
    assert res.settings["seq_len"] == 8 and res.settings["batch"] == 2
    same = headscope.scan_induction(tiny_gpt2, ScanSettings(**FAST), sample=False, progress=False)
    assert res.scores["induction"].tolist() == same.scores["induction"].tolist()
    # keywords still win over the mapping
    assert ScanSettings.from_keywords({"seq_len": 8, "batch": 4}, batch=2).batch == 2


def test_analyze_logits_takes_a_mapping(tiny_gpt2):
    a = headscope.analyze_logits(tiny_gpt2, "a b c a b c", None, {"seq_len": 8, "batch": 2}, top=1)
    assert len(a.stories.stories) == 1


@pytest.mark.parametrize("call", ["scan_induction", "analyze_logits"])
def test_an_unknown_key_or_another_type_is_bad_input(tiny_gpt2, call):
    fn = getattr(headscope, call)
    with pytest.raises(headscope.BadInput, match="unknown scan setting\\(s\\) seqlen") as err:
        fn(tiny_gpt2, settings={"seqlen": 8})
    assert "seq_len" in err.value.hint
    with pytest.raises(headscope.BadInput, match="settings must be a ScanSettings or a mapping of its fields, got int"):
        fn(tiny_gpt2, settings=8)


def test_run_sweep_takes_a_mapping_on_its_own_defaults(tiny_gpt2_dir, tmp_path):
    res = headscope.run_sweep(
        headscope.plan_sweep([str(tiny_gpt2_dir)]), tmp_path / "out", settings={"seq_len": 8, "batch": 2}, figure=False
    )
    assert res.settings["seq_len"] == 8 and res.settings["ablate"] is False  # the sweep's default: no causal check
