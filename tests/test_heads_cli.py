"""`headscope heads` end to end: the role table of every head, its files, its bad inputs, and SmolLM2's kinds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import headscope
from headscope.cli import app
from headscope.errors import BadInput
from headscope.head_labels import head_label
from headscope.scores import role_scores, score_names

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["heads", *map(str, args)])


@pytest.fixture()
def small(tiny_gpt2_dir, tmp_path):
    """A fast run on the tiny GPT-2, ICL off; the output dir is fresh per test."""
    return [
        "--model",
        tiny_gpt2_dir,
        "--seq-len",
        6,
        "--batch",
        3,
        "--device",
        "cpu",
        "--no-icl",
        "--out",
        tmp_path / "out",
    ]


def expected_roles(doc) -> dict[str, list[str]]:
    """Roles recomputed from the JSON's own scores and thresholds, independently of headscope's roles()."""
    out: dict[str, list[str]] = {}
    for s in role_scores():
        a = np.asarray(doc["scores"][s.name])
        for l, h in zip(*np.nonzero(a >= doc["thresholds"][s.name]), strict=True):
            out.setdefault(head_label(int(l), int(h)), []).append(s.name)
    return out


def test_json_is_heads_json_and_roles_follow_the_thresholds(small, tmp_path):
    r = run(*small, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert json.loads((tmp_path / "out" / "heads.json").read_text()) == doc
    want = expected_roles(doc)
    assert {e["head"]: e["roles"] for e in doc["roles"]} == want
    for e in doc["roles"]:  # the score behind each role is the head's score, and reaches the threshold
        for name, v in e["scores"].items():
            assert v == pytest.approx(doc["scores"][name][e["layer"]][e["head_index"]], abs=1e-6)
            assert v >= doc["thresholds"][name]
    assert doc["role_counts"] == {s.name: sum(s.name in v for v in want.values()) for s in role_scores()}
    assert doc["icl"] is None and doc["natural_sinks"]["n_tokens"] == 64  # the sink role's setting, on by default
    np.testing.assert_allclose(doc["scores"]["attention_sink"], doc["natural_sinks"]["alpha"], atol=1e-6)
    assert set(doc["legend"]) >= {"roles"} and all(f"≥ {s.threshold}" in " ".join(doc["legend"]) for s in role_scores())
    assert "Roles of every head" in r.stderr and "Heads per role" in r.stderr  # with --json, the table goes to stderr


def test_csv_has_one_row_per_head_with_every_score_and_its_roles(small, tmp_path):
    r = run(*small, "--threshold", "copying=-1")  # every head copies at -1: a role everyone must get
    assert r.exit_code == 0, r.output
    frame = pd.read_csv(tmp_path / "out" / "heads.csv", keep_default_na=False)
    assert len(frame) == 2 * 4
    cols = ["layer", "head", "label", *score_names(), "roles"]
    assert list(frame.columns)[: len(cols)] == cols and "sink_rate" in frame.columns  # then the causal columns
    assert all("copying" in roles.split("+") for roles in frame["roles"])
    doc = json.loads((tmp_path / "out" / "heads.json").read_text())
    assert doc["thresholds"]["copying"] == -1 and doc["role_counts"]["copying"] == 8
    for row in frame.itertuples():
        assert row.roles == "+".join(expected_roles(doc).get(row.label, []))
    assert "8 of 8 heads have at least one" in " ".join(r.stdout.split())  # the table title, however wrapped


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--threshold", "nonsense=1"], "bad --threshold"),
        (["--top", "0"], "--top must be at least 1"),
        (["--icl-windows", "0"], "--icl-windows must be at least 1"),
        (["--file", "/no/such/file.txt", "--icl"], "does not exist"),
        (["--file", "__README__", "--no-icl", "--no-natural-sinks"], "--file is only read by"),
        (["--ablation", "half"], "unknown ablation"),
    ],
)
def test_bad_input_is_refused_before_the_model_loads(small, tmp_path, args, needle):
    args = [str(tmp_path / "r.txt") if a == "__README__" else a for a in args]
    (tmp_path / "r.txt").write_text("some text")
    r = run("--model", "/no/model/here", "--out", tmp_path / "x", "--no-icl", *args)
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(sink_windows=0), "sink_windows must be at least 1 (got 0)"),
        (dict(sink_windows=-1), "sink_windows must be at least 1 (got -1)"),
        (dict(sink_windows=2.5), "sink_windows must be a whole number"),
        (dict(icl_windows=0, natural_sinks=False), "icl_windows (--icl-windows) must be at least 1 (got 0)"),
        (dict(icl_top=-1), "icl_top (--top) cannot be negative (got -1)"),
        (dict(files=[]), "no files were given"),
        (dict(files="/no/such/file.txt"), "/no/such/file.txt is not a file"),
    ],
)
def test_analyze_heads_refuses_bad_input_before_the_model_runs(tiny_gpt2, monkeypatch, kw, needle):
    from headscope.pipeline import roles

    monkeypatch.setattr(roles, "scan_induction", lambda *a, **k: pytest.fail("the scan ran"))
    with pytest.raises(BadInput) as err:
        roles.analyze_heads(tiny_gpt2, progress=False, **kw)
    assert needle in str(err.value) and err.value.hint


def test_analyze_heads_is_exported_at_the_top_level():
    from headscope.pipeline.roles import analyze_heads
    from headscope.results.heads_analysis import HeadsAnalysis

    assert headscope.analyze_heads is analyze_heads and headscope.HeadsAnalysis is HeadsAnalysis
    assert {"analyze_heads", "HeadsAnalysis"} <= set(headscope.__all__)


def test_one_path_is_one_file_and_the_sink_definition_states_the_runs_windows(tiny_gpt2, tmp_path):
    from headscope.render.page import Report

    text = tmp_path / "words.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 100)  # ~1000 GPT-2 tokens
    a = headscope.analyze_heads(
        tiny_gpt2, seq_len=6, batch=2, icl=False, sink_windows=3, files=str(text), progress=False
    )  # a str was read character by character ("/ is not a file")
    assert a.natural_sinks is not None and a.natural_sinks.n_sequences == 3 and "1 files" in a.natural_sinks.source
    said = "averaged over 3 windows of"
    doc = a.to_dict()
    assert said in doc["definitions"]["attention_sink"] and said in doc["natural_sinks"]["definition"]["alpha"]
    assert any(said in v for v in a.legend().values()) and said in a._repr_html_()
    page = Report(a.model, [a.induction, a]).to_html()
    assert said in page and "averaged over 100 windows" not in page  # the page's legend too
    from headscope.render.lookup import view_of
    from headscope.results.sink_scores import DEFINITIONS as SINK_DEFINITIONS

    assert (
        view_of(a).legend(a)["sink rate"] == SINK_DEFINITIONS["sink_rate"]
    )  # the view's filter named a key never written
    assert headscope.analyze_heads(
        tiny_gpt2, seq_len=6, batch=2, icl=False, sink_windows=3, files=text, progress=False
    ).natural_sinks.alpha == pytest.approx(a.natural_sinks.alpha)  # a Path is one file as well


def test_one_icl_window_shows_dashes_for_every_interval_and_says_why(tiny_llama):
    from headscope.render.views.heads_view import describe_icl

    a = headscope.analyze_heads(
        tiny_llama, seq_len=6, batch=2, icl_windows=1, icl_top=1, natural_sinks=False, progress=False
    )
    assert a.icl is not None and a.icl.n_windows == 1 and len(a.icl.ablations) == 1
    assert any("on 1 window: no standard error or 95% interval" in n for n in a.notes)
    html = a._repr_html_()
    assert "nan]" not in html and "[nan" not in html and "+nan" not in html
    assert html.count("[–, –]") == 2  # the score's interval and the head's Δ interval
    assert "one window gives no standard error" in html
    lines = "\n".join(describe_icl(a.icl))
    assert "nan" not in lines and "[–, –]" in lines and "includes 0" not in lines


def test_icl_is_skipped_with_a_note_when_the_context_is_too_short(tiny_gpt2_dir, tmp_path):
    # the tiny GPT-2 has 256 positions: Olsson et al.'s token 500 does not exist for it
    r = run("--model", tiny_gpt2_dir, "--seq-len", 6, "--batch", 2, "--device", "cpu", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o" / "heads.json").read_text())
    assert doc["icl"] is None
    assert any("in-context learning score skipped" in n for n in doc["notes"])


def test_a_file_shorter_than_one_icl_window_is_refused_before_the_scan(tiny_llama_dir, tmp_path, monkeypatch):
    from headscope.pipeline import roles

    def no_scan(*args, **kwargs):
        raise AssertionError("the scan ran before the text was found too short")

    monkeypatch.setattr(roles, "scan_induction", no_scan)
    short = tmp_path / "short.txt"
    short.write_text("short text here.")
    r = run("--model", tiny_llama_dir, "--seq-len", 6, "--batch", 2, "-f", short, "--out", tmp_path / "o")
    assert r.exit_code == 2, r.output
    assert "fewer than one window" in " ".join(r.output.split()) and not (tmp_path / "o").exists()


def test_icl_and_natural_sinks_on_the_tiny_llama(tiny_llama_dir, tmp_path):
    """Two ICL windows, the top induction head ablated; sinks on natural text; the page has every section."""
    r = run(
        "--model",
        tiny_llama_dir,
        "--seq-len",
        6,
        "--batch",
        2,
        "--device",
        "cpu",
        "--icl-windows",
        2,
        "--top",
        1,
        "--natural-sinks",
        "--report",
        "--out",
        tmp_path / "o",
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "o"
    doc = json.loads((out / "heads.json").read_text())
    icl = doc["icl"]
    assert icl["n_windows"] == 2 and icl["early"] == 50 and icl["late"] == 500
    top = np.unravel_index(np.argmax(np.asarray(doc["scores"]["induction"])), (3, 4))
    assert [(e["layer"], e["head"]) for e in icl["ablations"]] == [tuple(int(x) for x in top)]
    assert icl["ablations"][0]["label"] == head_label(*map(int, top))
    # 512 positions, one taken by the BOS: the note says both
    assert any("windows of 511 tokens (the model's context of 512, less the first token)" in n for n in doc["notes"])
    assert doc["natural_sinks"]["n_tokens"] == 64 and np.asarray(doc["natural_sinks"]["alpha"]).shape == (3, 4)
    frame = pd.read_csv(out / "heads.csv")
    assert {"attention_sink", "first_token_random", "sink_rate", "icl_delta"} <= set(frame.columns)
    assert frame["icl_delta"].notna().sum() == 1
    shown = " ".join(r.stdout.split())
    assert "In-context learning score" in shown and "Attention sinks (Gu et al. 2024's setting" in shown
    lo, hi = icl["icl_ci95"]  # the score and each delta are printed with their SE and 95% interval
    assert f"SE {icl['icl_stderr']:.3f}, 95% interval [{lo:+.3f}, {hi:+.3f}]" in shown
    a, b = icl["ablations"][0]["delta_ci95"]
    assert a <= icl["ablations"][0]["delta"] <= b and f"95% interval [{a:+.3f}, {b:+.3f}]" in shown
    assert "first token: the window's first text token" in shown  # GPT-2's BPE adds no BOS, nor does headscope
    page = (out / "report.html").read_text()
    for title in (
        "Roles of every head",
        "In-context learning and the top induction heads",
        "Attention sinks in Gu et al. 2024",
    ):
        assert title in page


def test_notebook_view_and_page_section_list_every_head_with_a_role(tiny_gpt2):
    from headscope.pipeline.roles import analyze_heads
    from headscope.render.page import Report

    a = analyze_heads(tiny_gpt2, seq_len=6, batch=2, icl=False, thresholds={"copying": -1}, progress=False)
    a.induction.model["name"] = "<script>alert(1)</script>"
    html = a._repr_html_()
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert html.count('class="role copying"') == 8  # every head shows the role it was given
    page = Report(a.model, [a.induction]).to_html()
    section = page[page.index('<section id="roles">') :]
    section = section[: section.index("</section>")]
    assert section.count("<tr>") == 1 + 8 + 1 + len(a.role_names())  # table header + 8 heads, counts header + roles
    for s in role_scores():
        assert s.label in section


@pytest.mark.smollm2
def test_smollm2_kinds_successor_sets_and_copy_suppression(smollm2):
    from headscope.pipeline.roles import analyze_heads

    a = analyze_heads(smollm2, icl=False, progress=False)
    sets = a.induction.settings["weight_scores"]["successor"]  # the successor score's WeightScore.notes
    # SmolLM2 splits numbers into digits and " Tue" into two tokens; everything else is one token
    assert sets["sets"] == ["numbers", "number_words", "cardinal_words", "days", "months", "month_prefixes", "letters"]
    assert list(sets["skipped"]) == ["day_prefixes"]
    assert a.weight_notes()[0].startswith("Successor score's ordinal sets: numbers, number_words")
    roles = a.roles()
    suppressors = [lh for lh, r in roles.items() if "copy_suppression" in r]
    assert sorted(suppressors) == [(23, 3), (24, 4)]
    assert a.role_counts()["successor"] == 0  # successor heads are absent by this definition
