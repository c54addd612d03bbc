"""Report as the API takes it: a loaded model or its info, results only; save into a folder writes report.html."""

from __future__ import annotations

import pytest

import headscope
from headscope.results import AttentionViews


@pytest.fixture(scope="module")
def scan(tiny_gpt2):
    return headscope.scan_induction(tiny_gpt2, seq_len=8, batch=2, ablate=False, sample=False, progress=False)


def test_a_loaded_model_is_read_as_its_info(tiny_gpt2, scan):
    page = headscope.Report(tiny_gpt2, [scan])
    assert page.model == tiny_gpt2.info() == scan.model
    assert f"headscope report: {tiny_gpt2.name}" in page.to_html()
    assert headscope.Report(tiny_gpt2.bridge, [scan]).model["n_layers"] == 2


def test_results_only(tiny_gpt2, scan):
    with pytest.raises(headscope.BadInput, match="results must be headscope results; item 1 is 1 \\(int\\)"):
        headscope.Report(tiny_gpt2, [scan, 1])
    with pytest.raises(headscope.BadInput, match="model must be a model's info dict or a loaded model, got str"):
        headscope.Report("gpt2", [scan])
    assert headscope.Report(scan.model, scan).results == [scan]  # one result alone


def test_save_into_a_folder_writes_report_html_there(scan, tmp_path):
    page = headscope.Report(scan.model, [scan, AttentionViews.of(scan)])
    assert page.save(tmp_path) == tmp_path / "report.html"
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert page.save(tmp_path / "a" / "page.html") == tmp_path / "a" / "page.html"


def test_save_into_a_folder_never_replaces_a_report_it_was_not_told_to(scan, tmp_path):
    mine = tmp_path / "report.html"
    mine.write_text("my notes")
    page = headscope.Report(scan.model, [scan])
    with pytest.raises(headscope.BadInput, match="already holds a report.html"):
        page.save(tmp_path)
    assert mine.read_text() == "my notes"
    assert page.save(mine) == mine  # named, it is replaced, as a save does
    assert mine.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_a_read_back_scan_s_page_says_why_it_has_no_attention_views(tiny_gpt2):
    """From JSON the scan holds no attention samples: the page's attention section was left out without a word."""
    scan = headscope.scan_induction(tiny_gpt2, seq_len=8, batch=2, ablate=False, progress=False)  # draws a sample
    assert scan.samples
    back = type(scan).from_json(scan.to_json())
    assert not back.samples
    html = headscope.Report(back.model, [back, AttentionViews.of(back)]).to_html()
    assert "No attention views" in html and "read back from JSON" in html
    # the scan that wrote it draws its views, with no such line
    assert "No attention views" not in headscope.Report(scan.model, [scan, AttentionViews.of(scan)]).to_html()
