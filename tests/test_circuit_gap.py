"""The clean - corrupted gap every normalised number divides by: measured with its interval, and said when it is no gap.

* Constructed metrics: a clear gap is meaningful; a gap whose 95% interval includes 0, or whose sign
  is the wrong way round (clean favours the answer less than corrupted; for the loss, clean is
  higher), is not, and the sentence says which.
* A tiny random GPT-2 whose clean run scores lower than its corrupted one: the analysis notes it
  first, every result carries the gap and ``normalised_meaningful = False``, and the changes in
  the metric it shows instead agree with the normalised values times the gap. The same task with
  the answer and the wrong token swapped (the gap's sign flips) is meaningful and has no note.
* The command: a note line, raw changes in the table, the fields in the JSON, the warning on the page.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from headscope.circuits import induction_task
from headscope.circuits.tasks import clean_corrupt_gap
from headscope.pipeline.circuit_analysis import CircuitSettings, analyze_circuit


def test_gap_verdicts_on_constructed_metrics():
    rng = np.random.default_rng(0)
    clean = 2.0 + 0.1 * rng.standard_normal(10)
    g = clean_corrupt_gap(clean, np.zeros(10), "logit_diff")
    assert g["meaningful"] and g["problem"] is None and 1.9 < g["low"] < g["mean"] < g["high"] < 2.1

    noisy = rng.standard_normal(10)  # mean near 0, spread 1: the interval straddles 0
    g = clean_corrupt_gap(noisy - noisy.mean() + 0.05, np.zeros(10), "logit_diff")
    assert not g["meaningful"] and g["low"] < 0 < g["high"] and "includes 0" in g["problem"]

    g = clean_corrupt_gap(np.zeros(10), clean, "logit_diff")  # corrupted favours the answer more: wrong way round
    assert not g["meaningful"] and g["mean"] < 0 and "scores lower than the corrupted one" in g["problem"]

    # the loss: lower is better, so a clean loss below the corrupted one is the right way round
    assert clean_corrupt_gap(np.ones(10), clean + 1, "loss")["meaningful"]
    g = clean_corrupt_gap(clean + 1, np.ones(10), "loss")
    assert not g["meaningful"] and "scores higher than the corrupted one" in g["problem"]


def _swapped(task):
    return dataclasses.replace(task, answer=task.wrong, wrong=task.answer)


def test_wrong_sign_gap_is_said_and_changes_are_kept(tiny_gpt2):
    task = induction_task(tiny_gpt2, n_examples=3, seq_len=5)  # this random model: clean below corrupted
    s = CircuitSettings(direction="denoise", receivers=["logits"])
    a = analyze_circuit(tiny_gpt2, task, s)
    gap = a.task["gap"]
    assert gap["mean"] < 0 and gap["high"] < 0 and not gap["meaningful"]
    assert a.notes[0] == gap["problem"] and "wrong way round" in gap["problem"]
    (ap,), (pp,) = a.activation, a.paths
    assert not ap.normalised_meaningful and not pp.normalised_meaningful
    # the change shown instead is in the metric's units: the normalised value times the gap it divided by
    np.testing.assert_allclose(ap.change, ap.values * gap["mean"], rtol=1e-6, atol=1e-9)
    assert ap.change.shape == ap.values.shape and (ap.change_low <= ap.change + 1e-12).all()
    assert (ap.change <= ap.change_high + 1e-12).all()
    # path patching noises the clean run: change = patched - clean = -(effect x gap)
    np.testing.assert_allclose(pp.change, -pp.effect * gap["mean"], rtol=1e-6, atol=1e-9)
    d = ap.to_dict()
    assert d["normalised_meaningful"] is False and d["gap"]["meaningful"] is False and len(d["change"]) == 2

    b = analyze_circuit(tiny_gpt2, _swapped(task), s)  # the same runs, the gap's sign flipped
    assert b.task["gap"]["mean"] == pytest.approx(-gap["mean"]) and b.task["gap"]["meaningful"]
    assert not any("gap" in n for n in b.notes) and b.activation[0].normalised_meaningful


def test_circuit_command_says_the_gap_includes_zero(tiny_gpt2_dir, tmp_path):
    from typer.testing import CliRunner

    from headscope.cli import app

    out = tmp_path / "c"
    args = ["circuit", "--model", str(tiny_gpt2_dir), "--device", "cpu", "--examples", "4", "--seq-len", "10",
            "--direction", "denoise", "--receivers", "logits", "--out", str(out), "--report", "--json"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "note: the clean - corrupted gap in logit_diff is" in text and "which includes 0" in text
    assert "change in logit_diff" in text  # raw changes in the table, not shares of a gap that is no gap
    d = json.loads(r.stdout)
    assert d["task"]["gap"]["meaningful"] is False and d["task"]["gap"]["low"] < 0 < d["task"]["gap"]["high"]
    assert d["activation_patching"][0]["normalised_meaningful"] is False
    assert "change" in d["path_patching"][0]["paths"][0]
    page = (out / "report.html").read_text()
    assert "Not meaningful as shares of the gap" in page and "clean - corrupted gap (95% interval)" in page
