"""What plan_sweep and run_sweep take: names or paths (one alone is one), and plan_sweep's entries; the rest
is BadInput saying what to pass, before any folder is made."""

from __future__ import annotations

import pytest

import headscope


def test_one_name_or_revision_alone_is_one_item_not_its_characters(tiny_gpt2_dir):
    assert [e.model for e in headscope.plan_sweep(str(tiny_gpt2_dir))] == [str(tiny_gpt2_dir)]
    assert [e.model for e in headscope.plan_sweep(tiny_gpt2_dir)] == [str(tiny_gpt2_dir)]
    assert [e.label for e in headscope.plan_sweep("EleutherAI/pythia-70m", "step1000")] == [
        "EleutherAI/pythia-70m@step1000"
    ]


def test_a_loaded_model_or_a_number_is_refused(tiny_gpt2):
    with pytest.raises(headscope.BadInput, match="models must be names or paths; item 0 is a loaded model") as err:
        headscope.plan_sweep([tiny_gpt2])
    assert "pass the name or path it was loaded from" in err.value.hint
    with pytest.raises(headscope.BadInput, match="item 1 is 3 \\(int\\)"):
        headscope.plan_sweep(["gpt2", 3])
    with pytest.raises(headscope.BadInput, match="revisions must be names or paths; item 0 is None"):
        headscope.plan_sweep(["gpt2"], [None])


@pytest.mark.parametrize(
    ("entries", "says", "hint"),
    [
        (["./some/model"], "run_sweep takes the entries plan_sweep makes; item 0 is './some/model'", "plan_sweep(["),
        ("gpt2", "item 0 is 'gpt2' \\(str\\)", "run_sweep(plan_sweep(['gpt2']), out)"),
        ([], "run_sweep got no entries: an empty sweep", "plan_sweep(['gpt2'])"),
    ],
)
def test_run_sweep_refuses_names_and_an_empty_sweep_before_making_the_folder(tmp_path, entries, says, hint):
    out = tmp_path / "out"
    with pytest.raises(headscope.BadInput, match=says) as err:
        headscope.run_sweep(entries, out)
    assert hint in err.value.hint
    assert not out.exists()
