"""The report page as a file: self-contained, complete, escaped, small; and its commands.

What the page does in a real browser (offline rendering, scripts that must not run) is in
test_report_browser.py.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from headscope.cli import app
from headscope.pipeline import build_report
from headscope.render.html import MAX_VIEW_TOKENS, circuitsvis_bundle, esc, heads_view_html, script_json
from headscope.render.page import Report
from headscope.render.views.induction_view import top_heads_html
from headscope.results import AttentionViews, InductionResult
from headscope.results.attention import AttentionSample
from headscope.results.logit_results import logit_definitions
from headscope.results.qk_results import QK_DEFINITIONS
from headscope.scores import SCORES

DEFINITIONS = {s.name: s.definition for s in SCORES}

runner = CliRunner()

HOSTILE = (
    '<img src=x onerror="window.__pwned=1"> </script><script>window.__pwned=2</script> '
    '" onmouseover="window.__pwned=3" x=\' &amp; <xss-probe>'
)


def islands(page: str) -> list[dict]:
    """The JSON props of every interactive view on the page."""
    found = re.findall(r'<script type="application/json" data-cv-target=[^>]*>(.*?)</script>', page, re.S)
    return [json.loads(m) for m in found]


@pytest.fixture(scope="module")
def report(tiny_llama) -> Report:
    return build_report(tiny_llama, seq_len=8, batch=2, top_k=3, qk_top=1)


@pytest.fixture(scope="module")
def page(report) -> str:
    return report.to_html()


def test_circuitsvis_bundle_is_inlined_once_for_the_whole_page(page):
    bundle = circuitsvis_bundle()
    assert len(bundle) > 1_000_000
    assert page.count(bundle[:200]) == 1
    views = islands(page)
    assert len(views) >= 2  # several views share that one bundle
    assert page.replace(bundle, "").count("<script") == len(views) + 2  # the islands, the bundle, page.js


def test_page_references_nothing_outside_itself(page):
    rest = page.replace(circuitsvis_bundle(), "")
    for attr, value in re.findall(r'\b(src|href|action)\s*=\s*["\']?([^"\'\s>]*)', rest):
        assert value.startswith(("data:", "#")), (attr, value)
    assert "://" not in rest
    assert "default-src 'none'" in page and "connect-src 'none'" in page


def test_page_holds_every_part_the_issue_lists(report, page):
    anchors = re.findall(r'<section id="([^"]+)">', page)
    assert anchors == [
        "top",
        "roles",
        "heatmaps",
        "loss",
        "ablation",
        "attention",
        "qk-heads",
        "qk-live",
        "qk-decomposition",
        "qk-positional",
        "qk-token",
        "composition",
        "logits",
        "legend",
    ]
    res = report.first(InductionResult)
    assert res.model["name"] in page and f"{res.settings['seq_len']} random ordinary tokens" in page
    assert page.count("data:image/png;base64,") >= 5 + 1 + 1 + 3  # heatmaps, loss, ablation, QK figures
    assert top_heads_html(res) in page  # top heads with roles and the causal check
    for name in ("roles", "ablation Δloss"):
        assert f"<dt>{name}</dt>" in page
    for text in [*DEFINITIONS.values(), *QK_DEFINITIONS.values(), *logit_definitions().values()]:  # every definition
        assert esc(text) in page
    kinds = {tuple(v["attentionHeadNames"]) for v in islands(page)}
    assert ("L" in next(iter(kinds))[0]) and len(kinds) >= 2  # induction heads' patterns and QK heads' scores


def test_outside_strings_are_escaped_in_the_markup(report):
    sample = report.first(AttentionViews).samples[-1]
    evil = AttentionSample(
        title=HOSTILE, tokens=[HOSTILE] * len(sample.tokens), heads=sample.heads, patterns=sample.patterns, note=HOSTILE
    )
    scan = report.first(InductionResult)
    page = Report({**report.model, "name": HOSTILE}, [scan, AttentionViews.of(scan, [evil], [HOSTILE])]).to_html()
    assert HOSTILE not in page
    rest = page.replace(circuitsvis_bundle(), "")
    assert "<xss-probe" not in rest and 'onmouseover="' not in rest and 'onerror="' not in rest
    alts = re.findall(r'<img alt="([^"<>]*)" src="data:image/png;base64,', rest)
    assert rest.count("<img") == len(alts)  # only our figures, each with an escaped alt text
    assert all(alts), "every figure says what it shows (its titles) for a screen reader"
    assert page.count(esc(HOSTILE)) >= 4  # title, heading, note, the text as written
    for m in re.findall(r'<script type="application/json" data-cv-target=[^>]*>(.*?)</script>', page, re.S):
        assert "<" not in m and ">" not in m and "&" not in m
    from headscope.tokens import visible_whitespace

    # yet the view gets the token as written (whitespace made visible, the page's one convention)
    assert visible_whitespace(HOSTILE) in [t for v in islands(page) for t in v["tokens"]]


def test_script_json_round_trips_and_cannot_end_its_script():
    value = {"tokens": ["</script>", "<!--", "a & b", "\u2028", '"'], "x": [0.5]}
    s = script_json(value)
    assert not set(s) & set("<>&")
    assert json.loads(s) == value


def test_long_sequences_are_cut_and_the_page_says_so():
    n = MAX_VIEW_TOKENS + 36
    values = np.tril(np.full((2, n, n), 0.123456789))
    html = heads_view_html("v", "long", [f"t{i}" for i in range(n)], values, ["L0H0", "L0H1"])
    (props,) = islands(html)
    assert len(props["tokens"]) == MAX_VIEW_TOKENS
    assert np.array(props["attention"]).shape == (2, MAX_VIEW_TOKENS, MAX_VIEW_TOKENS)
    assert f"showing the first {MAX_VIEW_TOKENS} of {n} tokens" in html
    assert {v for row in props["attention"][0] for v in row} == {0.0, 0.123}  # rounded to 3 decimals


def test_notebook_views_are_the_page_pieces(report, page):
    scan = report.first(InductionResult)
    nb = scan._repr_html_()
    assert top_heads_html(scan) in nb and esc(DEFINITIONS["induction"]) in nb
    scan_only = Report(report.model, [scan, report.first(AttentionViews)])
    inline = scan_only._repr_html_()
    assert inline.count(circuitsvis_bundle()[:200]) == 1
    assert islands(inline) == islands(page)[: len(islands(inline))]  # the same views as on the page


# --- the commands ------------------------------------------------------------------------------
def test_report_command_writes_one_page_and_never_overwrites_silently(tiny_gpt2_dir, tmp_path):
    out = tmp_path / "r.html"
    args = [
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
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["report"] == str(out) and doc["bytes"] == out.stat().st_size and doc["qk_heads"]
    assert out.read_text().startswith("<!DOCTYPE html>")
    out.write_text("precious")
    r = runner.invoke(app, args)
    assert r.exit_code == 4 and "--overwrite" in r.output
    assert out.read_text() == "precious"


@pytest.mark.parametrize("command", ["induction", "qk"])
def test_induction_and_qk_write_a_report_with_report_flag(command, tiny_gpt2_dir, tmp_path):
    small = (
        ["--seq-len", "6", "--batch", "2", "--top", "2", "--no-ablate"]
        if command == "induction"
        else ["--head", "1.0", "--no-figures"]
    )
    r = runner.invoke(
        app,
        [
            command,
            "--model",
            str(tiny_gpt2_dir),
            *small,
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--text",
            "a b c a b c",
            "--report",
        ],
    )
    assert r.exit_code == 0, r.output
    page = (tmp_path / "report.html").read_text()
    assert page.count(circuitsvis_bundle()[:200]) == 1
    assert ('id="heatmaps"' in page) == (command == "induction") and ('id="qk-live"' in page) == (command == "qk")


def test_report_refuses_an_out_that_is_not_an_html_file(tiny_gpt2_dir, tmp_path):
    """``--out x.pdf`` wrote an HTML page named x.pdf without a word."""
    out = tmp_path / "x.pdf"
    r = runner.invoke(app, ["report", "--model", str(tiny_gpt2_dir), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "one HTML page" in " ".join(r.output.split()) and "x.html" in r.output and not out.exists()
