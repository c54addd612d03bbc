"""`headscope logits` end to end on tiny models (and SmolLM2), the report's Logit effect section, and every bad
input the command must refuse. (The API's docstring examples run under --doctest-modules.)"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import headscope
from headscope.cli import app
from headscope.logits import logit_attribution, ov_circuit
from headscope.qk import composition_scores
from headscope.qk.composition import composition_by_offset
from headscope.render.page import Report
from headscope.render.views.logits_view import logit_sections
from headscope.scan import scan_induction
from headscope.tokens import visible_whitespace

runner = CliRunner()
SMALL = ["--seq-len", "8", "--batch", "2"]
TEXT = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog."
HOSTILE = '<img src=x onerror="window.__pwned=1"> </script><xss-probe> & "quoted"'


def run(*args):
    return runner.invoke(app, ["logits", *map(str, args)])


def said(r) -> str:
    return " ".join(r.output.split())


@pytest.fixture(scope="module")
def gpt2_run(tiny_gpt2_dir, tmp_path_factory):
    """One full run on the tiny GPT-2 with --json, --token and --report: (result, stdout JSON, out dir)."""
    out = tmp_path_factory.mktemp("logits") / "out"
    r = run(
        "--model",
        tiny_gpt2_dir,
        "--device",
        "cpu",
        *SMALL,
        "--top",
        "2",
        "--text",
        TEXT,
        "--token",
        " cat",
        "--out",
        out,
        "--report",
        "--json",
    )
    assert r.exit_code == 0, r.output
    return r, json.loads(r.stdout), out


# --- the command --------------------------------------------------------------------------------
def test_json_is_exactly_logits_json_and_everything_else_goes_to_stderr(gpt2_run):
    r, doc, out = gpt2_run
    assert doc == json.loads((out / "logits.json").read_text())
    assert "Largest direct effects" in r.stderr and "induction story" in r.stderr and "Wrote" in r.stderr
    assert set(doc["definitions"]) >= {"direct logit attribution", "OV circuit row", "induction story"}


def test_default_heads_are_the_strongest_pushers_and_the_top_induction_heads(gpt2_run, tiny_gpt2):
    _, doc, _ = gpt2_run
    reasons = " ".join(h["reason"] for h in doc["heads"])
    assert "push on the next token" in reasons and "induction score" in reasons
    res = logit_attribution(tiny_gpt2, TEXT)  # the pushers, recomputed through the API
    peak = res.heads.max(0)
    best = [f"L{i // peak.shape[1]}H{i % peak.shape[1]}" for i in np.argsort(-peak, axis=None)[:2]]
    assert [h["head"] for h in doc["heads"]][:2] == best


def test_largest_effects_are_the_attributions_numbers_with_readable_labels(gpt2_run, tiny_gpt2):
    _, doc, _ = gpt2_run
    res = logit_attribution(tiny_gpt2, TEXT)
    top = doc["top_effects"][0]
    assert top["text"] == 1
    p = top["position"]
    assert top["where"] == f"{visible_whitespace(res.token_labels[p])} → {visible_whitespace(res.target_labels[p])}"
    assert top["effect"] == pytest.approx(float(res.heads.max()), abs=1e-6)
    text = doc["texts"][0]
    assert text["max_abs_error"] < 1e-4 and text["tokens"] == res.token_labels


def test_ov_rows_of_an_asked_token_come_first_and_equal_ov_circuit(gpt2_run, tiny_gpt2):
    _, doc, _ = gpt2_run
    for entry in doc["ov"]:
        first = entry["tokens"][0]
        assert first["token"] == " cat"
        alone = ov_circuit(tiny_gpt2, entry["head"], [" cat"])
        assert first["self_rank"] == int(alone.self_rank[0])
        assert [p["id"] for p in first["promotes"]] == alone.top_ids[0].tolist()
    shown = {e["head"] for e in doc["ov"]}
    assert {h["head"] for h in doc["heads"]} | {s["label"] for s in doc["stories"]} == shown


def test_ov_legend_names_the_embedding_the_rows_were_read_through(gpt2_run):
    # The rows (and self-ranks) are read through the block-0 effective embedding by default; the
    # terminal's legend once called them the direct token path (bare W_E).
    r, doc, _ = gpt2_run
    assert {e["embedding"] for e in doc["ov"]} == {"block0"}
    legend = " ".join(r.stderr.split())
    assert "through block 0" in legend and "direct token path" not in legend


def test_story_numbers_are_the_scan_and_composition_numbers(gpt2_run, tiny_gpt2):
    _, doc, _ = gpt2_run
    scan = scan_induction(tiny_gpt2, seq_len=8, batch=2, top_k=2, sample=False, progress=False)
    comp = composition_scores(tiny_gpt2, kinds=("K",))
    rises = scan.ablation_rises()
    assert [s["label"] for s in doc["stories"]] == [f"L{l}H{h}" for l, h, _ in scan.top_heads("induction", 2)]
    for s in doc["stories"]:
        l, h = s["layer"], s["head"]
        assert s["induction"] == pytest.approx(scan.scores["induction"][l, h], abs=1e-6)
        assert s["dla_later"] == pytest.approx(scan.scores["direct_logit_later"][l, h], abs=1e-6)
        assert s["ablation_delta_loss"] == pytest.approx(rises[(l, h)], abs=1e-6)
        entry = scan.ablation_of(l, h)
        assert s["ablation_interval"] == pytest.approx(entry["interval"], abs=1e-6)
        assert s["ablation_verdict"] == entry["verdict"]
        for src in s["k_sources"]:
            sl, sh = src["layer"], src["head_index"]
            assert src["k_composition"] == pytest.approx(comp.excess("K")[sl, sh, l, h], abs=1e-9)
            assert src["previous_token"] == pytest.approx(scan.scores["previous_token"][sl, sh])


def test_story_states_the_logit_and_the_loss_with_their_units_and_no_mechanism(gpt2_run):
    from headscope.stats import signed, with_interval

    # Issue 19.7: the direct effect is a centred logit, the ablation cost a cross-entropy; the
    # output says which is which and never turns their gap into a claim about later components.
    r, doc, _ = gpt2_run
    told = " ".join(doc["findings"]) + doc["definitions"]["induction story"] + r.stderr
    for s in doc["stories"]:
        line = next(f for f in doc["findings"] if f.startswith(s["label"]))
        assert f"direct logit effect on the copied token {signed(s['dla_later'])} (centred logit" in line
        lo, hi = s["ablation_interval"]
        said = {"raises": "raises", "lowers": "lowers", "no clear change": "does not clearly change"}
        # the causal check's verdict and interval beside the number (it was a bare number)
        assert (
            f"ablating it {said[s['ablation_verdict']]} the later-repeat cross-entropy: "
            f"{with_interval(s['ablation_delta_loss'], lo, hi)} (nats, 95% interval" in line
        )
    for claim in ("indirect", "works through", "work through"):
        assert claim not in told.lower()


def test_every_file_is_written(gpt2_run):
    _, doc, out = gpt2_run
    for name in ("heads.csv", "effects.csv", "components.csv", "ov.csv", "stories.csv", "repeats.csv"):
        assert len(pd.read_csv(out / name)) > 0, name
    effects = pd.read_csv(out / "effects.csv", keep_default_na=False)
    assert len(effects) == len(doc["texts"][0]["targets"]) * 2 * 4  # every position x every head
    figs = {p.name for p in (out / "figures").iterdir()}
    assert {"dla_text1.png", "repeat_later.png"} <= figs
    assert {f"ov_{e['head']}.png" for e in doc["ov"]} <= figs
    assert all((out / "figures" / f).stat().st_size > 5000 for f in figs)


def test_rotary_gqa_model_runs_with_chosen_heads(tiny_llama_dir, tmp_path):
    r = run(
        "--model",
        tiny_llama_dir,
        "--device",
        "cpu",
        *SMALL,
        "--top",
        "1",
        "--head",
        "2.1,L1H3",
        "--out",
        tmp_path / "o",
        "--no-figures",
        "--json",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [h["head"] for h in doc["heads"]] == ["L2H1", "L1H3"]
    assert all(h["reason"] == "chosen with --head" for h in doc["heads"])
    assert len(doc["stories"]) == 1 and len(doc["texts"]) == 3  # the built-in samples
    assert not (tmp_path / "o" / "figures").exists()


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, says, before_load",
    [
        (["--head", "5x1"], "malformed head '5x1': expected L<layer>H<head> or <layer>.<head>", True),
        (["--head", "9.0"], "layer 9 does not exist; this model has 2 layers (0..1)", False),
        (["--head", "1.7"], "each layer has 4 heads (0..3)", False),
        (["--text", "   "], "--text number 1 holds only whitespace", True),
        (["--token", "antidisestablishment"], "'antidisestablishment' -> 3 tokens", False),
        (["--top", "0"], "--top must be at least 1", True),
        (["--seq-len", "1"], "--seq-len must be at least 2", True),
        (["--max-tokens", "1"], "--max-tokens must be at least 2", True),
        (["--ablation", "half"], "unknown ablation 'half'", True),
    ],
)
def test_bad_input_is_refused_with_a_useful_message(tiny_gpt2_dir, tmp_path, args, says, before_load):
    r = run("--model", tiny_gpt2_dir, "--device", "cpu", *SMALL, "--out", tmp_path / "o", "--no-figures", *args)
    assert r.exit_code == 2, r.output
    assert says in " ".join(r.stderr.split()), r.stderr
    assert "Traceback" not in r.output
    assert ("Loaded" not in r.stderr) == before_load  # checked before the model loads where it can be
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_token_that_is_not_one_token_says_how_it_tokenises(tiny_gpt2_dir, tmp_path):
    r = run("--model", tiny_gpt2_dir, "--device", "cpu", *SMALL, "--out", tmp_path / "o", "--token", "elephant")
    assert r.exit_code == 2
    assert "OV source tokens must be single tokens" in said(r)
    assert "'elephant' -> 2 tokens" in said(r) and "' elephant' is one token" in said(r)


def test_existing_results_are_not_overwritten_without_overwrite(tiny_gpt2_dir, tmp_path):
    out = tmp_path / "out"
    args = ["--model", tiny_gpt2_dir, "--device", "cpu", *SMALL, "--out", out, "--no-figures"]
    assert run(*args, "--head", "1.0").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = run(*args, "--head", "0.1")
    assert r.exit_code == 4 and "already holds results of `headscope logits`" in said(r)
    assert "--overwrite to replace them (they are deleted)" in said(r)
    assert "Loaded" not in r.stderr  # refused before the model loads
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    assert run(*args, "--head", "0.1", "--overwrite").exit_code == 0
    assert json.loads((out / "logits.json").read_text())["heads"][0]["head"] == "L0H1"
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("precious")
    r = run("--model", tiny_gpt2_dir, "--device", "cpu", *SMALL, "--out", foreign, "--head", "1.0", "--overwrite")
    assert r.exit_code == 4 and (foreign / "mine.txt").read_text() == "precious"  # never someone else's files


def test_text_longer_than_the_context_is_cut_and_said(tiny_gpt2_dir, tmp_path):
    r = run(
        "--model",
        tiny_gpt2_dir,
        "--device",
        "cpu",
        *SMALL,
        "--out",
        tmp_path / "o",
        "--no-figures",
        "--head",
        "1.0",
        "--text",
        " word" * 300,
        "--max-tokens",
        "1000",
    )
    assert r.exit_code == 0, r.output
    assert "cut from 301 to 256 tokens" in said(r) and "context of 256 tokens" in said(r)
    doc = json.loads((tmp_path / "o" / "logits.json").read_text())
    assert len(doc["texts"][0]["targets"]) == 255 and any("cut from 301" in n for n in doc["notes"])


# --- the page and the notebook -----------------------------------------------------------------
def test_logits_report_holds_the_logit_section_offline(gpt2_run):
    _, doc, out = gpt2_run
    page = (out / "report.html").read_text()
    assert '<section id="logits"><h2>Logit effect</h2>' in page
    assert "The induction story of the top induction heads" in page
    for s in doc["stories"]:
        assert f">{s['label']}<" in page
    assert page.count("data:image/png;base64,") >= 3  # later-repeat heatmap, tokens x heads, OV bars
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert "direct logit attribution" in page  # in the legend


def test_outside_strings_are_escaped_on_the_page(tiny_gpt2_dir, tmp_path):
    r = run(
        "--model",
        tiny_gpt2_dir,
        "--device",
        "cpu",
        *SMALL,
        "--out",
        tmp_path / "o",
        "--no-figures",
        "--head",
        "1.0",
        "--text",
        HOSTILE,
        "--report",
    )
    assert r.exit_code == 0, r.output
    page = (tmp_path / "o" / "report.html").read_text()
    assert "<xss-probe>" not in page and "<img src=x" not in page and "&lt;xss-probe&gt;" in page


def test_report_command_has_the_logit_section_unless_no_logits(tiny_gpt2_dir, tmp_path):
    base = [
        "report",
        "--model",
        str(tiny_gpt2_dir),
        "--seq-len",
        "6",
        "--batch",
        "2",
        "--top",
        "2",
        "--qk-top",
        "1",
        "--no-qk",
        "--device",
        "cpu",
    ]
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "a.html"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["logit_heads"]
    page = (tmp_path / "a.html").read_text()
    assert 'id="logits"' in page and 'href="#logits"' in page and 'id="heatmaps"' in page
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "b.html"), "--no-logits"])
    assert r.exit_code == 0, r.output
    assert 'id="logits"' not in (tmp_path / "b.html").read_text()


def test_notebook_view_is_the_pages_section(tiny_gpt2):
    a = headscope.analyze_logits(tiny_gpt2, "a b c a b c", top=1, seq_len=6, batch=2, ablate=False)
    nb = a._repr_html_()
    ((_, title, body),) = logit_sections(a)
    assert title == "Logit effect" and body in nb
    assert Report(a.model, [a]).sections()[-1][0] == "legend"
    assert a.stories.stories[0].ablation_delta_loss is None  # no ablation asked: shown as a dash, not 0
    assert json.loads(a.to_json())["stories"][0]["ablation_delta_loss"] is None


# --- SmolLM2 ---------------------------------------------------------------------------------------
@pytest.mark.smollm2
@pytest.mark.slow  # two scans with ablation and two composition passes: ~100 s on 2 busy cores
def test_smollm2_story_of_L18H6_names_a_previous_token_source_with_the_scans_numbers(smollm2, tmp_path):
    r = run(
        "--device",
        "cpu",
        "--seq-len",
        "20",
        "--batch",
        "4",
        "--top",
        "3",
        "--head",
        "L18H6",
        "--text",
        "The cat sat on the mat. The cat sat on the mat.",
        "--out",
        tmp_path / "o",
        "--no-figures",
        "--json",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    story = {s["label"]: s for s in doc["stories"]}["L18H6"]
    assert any(src["previous_token"] >= 0.4 for src in story["k_sources"])  # a previous-token head feeds its keys
    scan = scan_induction(smollm2, seq_len=20, batch=4, top_k=3, sample=False, progress=False)
    # SmolLM2 is rotary: the story reads K-composition averaged over offsets 0-63 (W_K M_d^T W_Q^T at each d)
    by = composition_by_offset(smollm2, [(18, 6)], range(64), kinds=("K",))
    assert doc["composition"]["where"] == f"mean over {by.span}"
    assert story["induction"] == pytest.approx(scan.scores["induction"][18, 6], abs=1e-5)
    assert story["dla_later"] == pytest.approx(scan.scores["direct_logit_later"][18, 6], abs=1e-5)
    assert story["copying"] == pytest.approx(scan.scores["copying"][18, 6], abs=1e-6)
    assert story["ablation_delta_loss"] == pytest.approx(scan.ablation_rises()[(18, 6)], abs=1e-4)
    expect = by.top_sources(18, 6, "K", 3)
    assert [(s["layer"], s["head_index"]) for s in story["k_sources"]] == [(l, h) for l, h, _ in expect]
    for s, (l, h, v) in zip(story["k_sources"], expect, strict=True):
        assert s["k_composition"] == pytest.approx(v, abs=1e-9)
        assert s["previous_token"] == pytest.approx(scan.scores["previous_token"][l, h], abs=1e-5)
    assert story["dla_later"] > 10 * abs(story["dla_first"])  # it does raise the copied token, a little
    assert story["ablation_delta_loss"] > 0.1  # and removing it raises the cross-entropy (a loss: not compared)


# --- the terminal tables ------------------------------------------------------------------------
def _terminal(a) -> str:
    from rich.console import Console

    from headscope.render.views.logits_view import print_logits

    con = Console(width=400, record=True, color_system=None)
    print_logits(con, a)
    return con.export_text()


def test_without_ablation_the_terminal_says_dloss_was_not_measured(tiny_gpt2):
    a = headscope.analyze_logits(tiny_gpt2, TEXT, heads=["1.0"], top=1, seq_len=8, batch=2, ablate=False)
    out = " ".join(_terminal(a).split())
    assert "Δloss: not measured (--no-ablate)" in out
    assert "not ablated" not in out and "when ablated" not in out  # no column, no definition of one
    header = next(line for line in _terminal(a).splitlines() if "K source" in line)
    assert "Δloss" not in header
    from headscope.render.views.logits_view import logit_story_html

    page = logit_story_html(a)  # the page's story panel as well: no column of dashes, no definition of it
    assert "ablation Δloss" not in page and "No ablation ran (--no-ablate)" in page
    a = headscope.analyze_logits(tiny_gpt2, TEXT, heads=["1.0"], top=1, seq_len=8, batch=2, ablation="zero")
    assert "ablation Δloss" in logit_story_html(a) and "output is zero-ablated" in logit_story_html(a)


def test_largest_effects_rows_name_their_position_and_with_several_texts_their_text(tiny_gpt2):
    one = headscope.analyze_logits(tiny_gpt2, TEXT, heads=["1.0"], top=1, seq_len=8, batch=2)
    lines = [" ".join(ln.split()) for ln in _terminal(one).splitlines()]  # cells padded to their column
    header = next(line for line in lines if "token → next" in line)
    assert "pos" in header and "text" not in header  # one text: the position tells rows apart
    for r in one.top_effects(10).itertuples():
        assert any(f"│ {r.position} │ {r.where} │ {r.head_label} │ {r.effect:+.3f}" in ln for ln in lines)
    two = headscope.analyze_logits(tiny_gpt2, [TEXT, "a b c a b c"], heads=["1.0"], top=1, seq_len=8, batch=2)
    lines = [" ".join(ln.split()) for ln in _terminal(two).splitlines()]
    assert "┃ text ┃ pos ┃" in next(line for line in lines if "token → next" in line)
    for r in two.top_effects(10).itertuples():
        assert any(f"│ {r.text} │ {r.position} │ {r.where} │ {r.head_label} │" in ln for ln in lines)
