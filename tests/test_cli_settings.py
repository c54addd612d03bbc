"""Settings made once and passed down whole, and the command line's shared plumbing (issue 18, points 3 and 4).

Each drift the issue found has a test here: ``heads --attention`` and ``logits --attention`` reach
the scan (before, they were dropped and the scan ran "auto"); ``max_memory_gb`` has one default
from every entry point (before: 2.0 in some places, None in others); ``induction`` draws its text
views through ``build_report`` with the page's window (before: its own copy with 96 tokens); its
list of other roles is the registry's; a command module that fails to import is an error.
"""

from __future__ import annotations

import json
import re
import sys

import pytest
import typer.main
from typer.testing import CliRunner

import headscope
import headscope.cli as cli
from headscope.cli import app
from headscope.errors import BadInput
from headscope.pipeline.report_builder import build_report
from headscope.pipeline.roles import analyze_heads
from headscope.pipeline.sweep import plan_sweep, run_sweep
from headscope.render.html import MAX_VIEW_TOKENS
from headscope.scan.fused import fused_supported
from headscope.scores import role_scores
from headscope.settings import DEFAULT_MEMORY_GB, ScanSettings

runner = CliRunner()
SCAN = ["--seq-len", "6", "--batch", "2", "--device", "cpu"]


# --- the drifts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["eager", "fused"])
def test_heads_attention_reaches_the_scan(tiny_gpt2_dir, tiny_gpt2, tmp_path, attention):
    assert fused_supported(tiny_gpt2)  # so "auto" runs fused, and eager can only come from the option
    out = tmp_path / "out"
    r = runner.invoke(
        app, ["heads", "--model", str(tiny_gpt2_dir), *SCAN, "--no-icl", "--attention", attention, "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert json.loads((out / "heads.json").read_text())["settings"]["attention"] == attention


@pytest.mark.parametrize("attention", ["eager", "fused"])
def test_logits_attention_reaches_the_scan(tiny_gpt2_dir, tmp_path, attention):
    out = tmp_path / "out"
    args = ["logits", "--model", str(tiny_gpt2_dir), *SCAN, "--top", "1", "--no-figures", "--out", str(out)]
    r = runner.invoke(app, [*args, "--text", "a b c a b c", "--attention", attention])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "logits.json").read_text())["scan"]["settings"]["attention"] == attention


def test_unknown_attention_is_refused_by_heads_and_logits_before_loading(tiny_gpt2_dir, tmp_path):
    for command in ("heads", "logits"):
        r = runner.invoke(app, [command, "--model", str(tiny_gpt2_dir), "--attention", "flash", "--out", str(tmp_path)])
        assert r.exit_code == 2 and "unknown attention 'flash'" in r.stderr and "Loaded" not in r.stderr, command


def test_every_entry_point_has_the_one_memory_default(tiny_gpt2, tiny_gpt2_dir, tmp_path):
    small = dict(seq_len=6, batch=2, progress=False)
    assert headscope.scan_induction(tiny_gpt2, ablate=False, sample=False, **small).settings["max_memory_gb"] == 2.0
    assert DEFAULT_MEMORY_GB == 2.0
    heads = analyze_heads(tiny_gpt2, icl=False, **small)
    logits = headscope.analyze_logits(tiny_gpt2, "a b c a b c", top=1, ablate=False, seq_len=6, batch=2)
    report = build_report(tiny_gpt2, ["a b c a b c"], qk=False, logits=False, ablate=False, **small)
    sweep = run_sweep(plan_sweep([str(tiny_gpt2_dir)]), tmp_path / "sweep", figure=False, seq_len=6, batch=2)
    assert sweep.ok, sweep.failures
    entry = json.loads(next((tmp_path / "sweep" / "entries").glob("*.json")).read_text())
    budgets = {
        "analyze_heads": heads.induction.settings["max_memory_gb"],
        "analyze_logits": logits.scan.settings["max_memory_gb"],
        "build_report": report.first(headscope.InductionResult).settings["max_memory_gb"],
        "run_sweep": entry["result"]["settings"]["max_memory_gb"],
        "None means the default": headscope.scan_induction(
            tiny_gpt2, ablate=False, sample=False, max_memory_gb=None, **small
        ).settings["max_memory_gb"],
    }
    assert budgets == dict.fromkeys(budgets, DEFAULT_MEMORY_GB)


def test_every_command_with_a_memory_budget_defaults_to_the_one_constant():
    group = typer.main.get_command(app)
    defaults = {}
    for name, command in group.commands.items():
        for param in command.params:
            if param.name == "max_memory" and name != "qk":  # qk's --max-memory is another budget (its own doc)
                defaults[name] = param.default
    assert set(defaults) == {"induction", "heads", "logits", "report", "sweep", "circuit"}
    assert defaults == dict.fromkeys(defaults, DEFAULT_MEMORY_GB)


# --- settings: one object, the keywords still work ------------------------------------------------


def test_keywords_and_a_settings_object_give_the_same_scan(tiny_gpt2):
    by_keywords = headscope.scan_induction(tiny_gpt2, seq_len=6, batch=2, top_k=2, sample=False, progress=False)
    settings = ScanSettings(seq_len=6, batch=2, top_k=2)
    by_object = headscope.scan_induction(tiny_gpt2, settings, sample=False, progress=False)
    assert by_keywords.settings == by_object.settings
    for name in by_keywords.scores:
        assert (by_keywords.scores[name] == by_object.scores[name]).all(), name
    assert by_keywords.ablation == by_object.ablation
    # a keyword replaces that field of the object, the rest stays
    wider = headscope.scan_induction(tiny_gpt2, settings, batch=3, ablate=False, sample=False, progress=False)
    assert (wider.settings["batch"], wider.settings["seq_len"], wider.settings["ablation"]) == (3, 6, None)


def test_a_misspelt_setting_is_an_error_not_ignored(tiny_gpt2):
    with pytest.raises(TypeError, match="seq_length"):
        headscope.scan_induction(tiny_gpt2, seq_length=6)
    with pytest.raises(TypeError, match="max_memory"):
        headscope.analyze_logits(tiny_gpt2, "a b a b", max_memory=1.0)


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("ablation", "half", "unknown ablation 'half'"),
        ("attention", "flash", "unknown attention 'flash'"),
        ("top_k", 0, "top_k \\(--top\\) must be at least 1"),
        ("max_memory_gb", 0.0, "--max-memory\\) must be"),
        ("max_memory_gb", float("nan"), "--max-memory\\) must be"),
        ("batch", 1, "one sequence gives none"),
        ("seq_len", "10", "seq_len must be a whole number, got '10'"),
        ("batch", 10.5, "batch must be a whole number"),
        ("top_k", True, "top_k must be a whole number"),
        ("thresholds", {"inducton": 0.5}, "threshold 'inducton' is not a role score"),
        ("thresholds", {"induction": 7}, "induction scores lie in"),
        ("thresholds", {"induction": "high"}, "is not a number"),
    ],
)
def test_settings_check_refuses_what_no_model_can_run(field, value, says):
    with pytest.raises(BadInput, match=says):
        ScanSettings(**{field: value}).check()


# --- the thin command line ------------------------------------------------------------------------


def test_induction_text_views_use_the_page_window(tiny_gpt2_dir, tmp_path):
    long_text = " ".join(f"word{i}" for i in range(200))
    out = tmp_path / "out"
    r = runner.invoke(
        app, ["induction", "--model", str(tiny_gpt2_dir), *SCAN, "--top", "2", "--text", long_text, "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert f"to {MAX_VIEW_TOKENS} tokens (first token included)" in r.stderr  # before: its own window of 96


def test_induction_lists_every_other_role_of_the_registry(tiny_gpt2_dir, tmp_path):
    r = runner.invoke(app, ["induction", "--model", str(tiny_gpt2_dir), *SCAN, "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    scored = json.loads((tmp_path / "out" / "scores.json").read_text())["scores"]
    # every role whose score this scan computed (the attention-sink role is read on natural text: heads, report)
    others = [s for s in role_scores() if s.name != "induction" and s.name in scored]
    assert len(others) > 2  # more than the fixed pair (previous-token, duplicate-token) it used to show
    for s in others:
        assert f"{s.label.capitalize()} heads: " in r.stdout, s.name
    assert "attention_sink" not in scored and "Attention-sink heads: " not in r.stdout


def test_a_role_no_head_reaches_names_no_head_for_it(tiny_gpt2_dir, tmp_path):
    """Before: "Successor heads: L23H3 0.15, ..." listed the top scorers of a role none of them held."""
    out = tmp_path / "out"
    args = ["induction", "--model", str(tiny_gpt2_dir), *SCAN, "--out", str(out)]
    r = runner.invoke(app, [*args, "--threshold", "previous_token=1", "--threshold", "duplicate_token=0"])
    assert r.exit_code == 0, r.output
    scores = json.loads((out / "scores.json").read_text())["scores"]
    best_prev = max(v for row in scores["previous_token"] for v in row)
    assert best_prev < 1
    line = next(x for x in r.stdout.splitlines() if x.startswith("Previous-token heads: "))
    assert line.startswith("Previous-token heads: none at >= 1 (highest: ") and f"{best_prev:.2f})" in line
    line = next(x for x in r.stdout.splitlines() if x.startswith("Duplicate-token heads: "))
    assert "none" not in line and len(line.split(", ")) == 3  # every head holds it: the best 3 named


@pytest.mark.parametrize("item, says", [("induction=-5", "[0, 1]"), ("copying=7", "[-1, 1]")])
def test_a_threshold_outside_the_score_s_range_is_refused(item, says):
    from headscope.cli._common import parse_thresholds

    with pytest.raises(BadInput, match=re.escape(says)):
        parse_thresholds([item])
    assert parse_thresholds(["induction=0", "copying=-1"]) == {"induction": 0.0, "copying": -1.0}


def test_a_threshold_given_twice_is_refused_not_overwritten():
    from headscope.cli._common import parse_thresholds

    with pytest.raises(BadInput, match=re.escape("--threshold induction is given twice (0.3 and 0.5)")):
        parse_thresholds(["induction=0.3", "induction=0.5"])


def test_the_api_checks_thresholds_as_the_command_line_does(tiny_gpt2):
    """``thresholds={"inducton": 0.5}`` used to run, keep the misspelt key and leave induction at its default."""
    with pytest.raises(BadInput, match="'inducton' is not a role score"):
        headscope.scan_induction(tiny_gpt2, seq_len=6, batch=2, ablate=False, thresholds={"inducton": 0.5})
    res = headscope.scan_induction(tiny_gpt2, seq_len=6, batch=2, ablate=False, thresholds={"induction": 0.3})
    assert res.thresholds["induction"] == 0.3


def test_qk_and_logits_refuse_an_empty_token_the_same_way(tiny_gpt2_dir, tmp_path):
    for command in ("qk", "logits"):
        r = runner.invoke(app, [command, "--model", str(tiny_gpt2_dir), "--token", "", "--out", str(tmp_path)])
        assert r.exit_code == 2 and "--token '' is empty" in r.stderr and "Loaded" not in r.stderr, command


def test_every_command_module_is_registered():
    from pathlib import Path

    on_disk = {p.stem for p in Path(cli.__file__).parent.glob("cmd_*.py")}
    assert set(cli.COMMANDS) == on_disk


def test_a_command_module_that_fails_to_import_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(ModuleNotFoundError, match="cmd_not_written"):
        cli._register(("cmd_not_written",))  # before: skipped without a word
    (tmp_path / "cmd_broken.py").write_text("import headscope_no_such_dependency\n")
    monkeypatch.setattr(cli, "__path__", [*cli.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "headscope.cli.cmd_broken", raising=False)
    with pytest.raises(ModuleNotFoundError, match="headscope_no_such_dependency"):
        cli._register(("cmd_broken",))


@pytest.mark.parametrize("command", ["fetch", *[c.removeprefix("cmd_").replace("_", "-") for c in cli.COMMANDS]])
def test_every_command_help_works(command):
    r = runner.invoke(app, [command, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.stdout and "--debug" in r.stdout


def test_one_sequence_gets_no_interval_so_no_causal_check(tiny_gpt2_dir, tmp_path):
    # a bootstrap over one sequence is a zero-width "interval" and a verdict from one sample
    one = ["--model", str(tiny_gpt2_dir), "--seq-len", "5", "--batch", "1", "--device", "cpu"]
    r = runner.invoke(app, ["induction", *one, "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--batch 2 or more" in r.output and "--no-ablate" in r.output
    assert not (tmp_path / "o").exists()
    ok = runner.invoke(app, ["induction", *one, "--no-ablate", "--out", str(tmp_path / "p")])
    assert ok.exit_code == 0, ok.output


def test_a_score_the_scan_did_not_compute_is_a_clear_error(tiny_gpt2):
    res = headscope.scan_induction(tiny_gpt2, seq_len=6, batch=2, ablate=False)
    with pytest.raises(BadInput, match="unknown score 'inductoin'") as e:
        res.top_heads("inductoin")
    assert "induction" in str(e.value)  # the hint lists the scores it has
    with pytest.raises(BadInput, match="did not compute 'attention_sink'"):  # a registry score read on natural text
        res.top_heads("attention_sink")
    with pytest.raises(BadInput, match="unknown score 'foo'"):
        res.plot_scores("foo")
    assert res.top_heads("induction", 1)[0][:2] == res.top_heads("induction", 3)[0][:2]


def test_scores_json_reads_back_into_a_result(tiny_gpt2_dir, tmp_path):
    """A notebook user reloads what `headscope induction` wrote, to replot or query it without rerunning."""
    from headscope.results import InductionResult

    out = tmp_path / "out"
    r = runner.invoke(app, ["induction", "--model", str(tiny_gpt2_dir), *SCAN, "--out", str(out)])
    assert r.exit_code == 0, r.output
    written = json.loads((out / "scores.json").read_text())
    back = InductionResult.from_json(out)  # the folder; its scores.json path works the same
    again = back.to_dict()
    # the control's spread is recomputed from the written (rounded) draws: equal to the 6th decimal
    assert again.pop("ablation_control")["median"] == pytest.approx(written.pop("ablation_control")["median"], abs=2e-6)
    assert again == written and InductionResult.from_json(out / "scores.json") == back
    assert back.ablation and back.verdicts() and back.plot_ablation() is not None
    (tmp_path / "bad.json").write_text('{"model": {}}')
    with pytest.raises(BadInput, match="not the JSON of an induction scan"):
        InductionResult.from_json(tmp_path / "bad.json")


def test_every_command_with_an_out_folder_takes_the_short_form_too():
    import typer.main

    from headscope.cli import app

    group = typer.main.get_command(app)
    missing = [
        name
        for name, command in group.commands.items()  # type: ignore[attr-defined]
        for p in command.params
        if "--out" in p.opts and "-o" not in p.opts
    ]
    assert missing == []
