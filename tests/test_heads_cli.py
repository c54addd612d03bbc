"""`headscope heads` end to end: the role table of every head, its files, its bad inputs, and SmolLM2's kinds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from headscope.cli import app
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


def test_icl_is_skipped_with_a_note_when_the_context_is_too_short(tiny_gpt2_dir, tmp_path):
    # the tiny GPT-2 has 256 positions: Olsson et al.'s token 500 does not exist for it
    r = run("--model", tiny_gpt2_dir, "--seq-len", 6, "--batch", 2, "--device", "cpu", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o" / "heads.json").read_text())
    assert doc["icl"] is None
    assert any("in-context learning score skipped" in n for n in doc["notes"])


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
