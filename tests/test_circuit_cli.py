"""`headscope circuit` end to end on the tiny models: files, JSON, the page, the user's pairs file and its
errors; the induction story's measured paths (`headscope logits --paths`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import headscope
from headscope.circuits import induction_task
from headscope.circuits.path_patching import Receiver, paths_through
from headscope.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["circuit", *map(str, args)])


def test_circuit_writes_its_files_json_and_page(tiny_llama_dir, tmp_path):
    out = tmp_path / "c"
    r = run("--model", tiny_llama_dir, "--device", "cpu", "--examples", "3", "--seq-len", "5", "--top", "1",
            "--out", out, "--report", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [a["direction"] for a in data["activation_patching"]] == ["denoise", "noise"]
    assert len(data["activation_patching"][0]["values"]) == 3 and len(data["activation_patching"][0]["values"][0]) == 5
    assert all(p["paths"] for p in data["path_patching"])
    names = {p.name for p in out.rglob("*") if p.is_file()}
    assert {
        "circuit.json",
        "activation_patching.csv",
        "path_patching.csv",
        "report.html",
        "patching_denoise.png",
    } <= names
    page = (out / "report.html").read_text()
    assert "Activation patching (denoise)" in page and "Paths into L" in page
    # a second run into the same --out is refused
    again = run("--model", tiny_llama_dir, "--device", "cpu", "--examples", "3", "--seq-len", "5", "--out", out)
    assert again.exit_code == 4


def test_circuit_on_a_pairs_file_and_its_errors(tiny_gpt2_dir, tmp_path):
    pairs = tmp_path / "ioi.jsonl"
    pairs.write_text(
        '{"clean": "When Mary and John went to the store, John gave a drink to", "corrupt": "When Mary and John '
        'went to the store, Mary gave a drink to", "answer": " Mary", "wrong": " John"}\n'
        '{"clean": "When Tom and James went to the park, James gave a ball to", "corrupt": "When Tom and James '
        'went to the park, Tom gave a ball to", "answer": " Tom", "wrong": " James"}\n'
    )
    out = tmp_path / "o"
    r = run("--model", tiny_gpt2_dir, "--device", "cpu", "--pairs", pairs, "--direction", "denoise", "--out", out,
            "--no-figures", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["task"]["name"] == "ioi" and data["path_patching"][0]["receiver"] == "logits"
    assert len(data["path_patching"][0]["paths"]) == 2 * 4  # every head -> logits
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"clean": "a b c", "corrupt": "a b c d e", "answer": " x", "wrong": " y"}\n')
    r = run("--model", tiny_gpt2_dir, "--device", "cpu", "--pairs", bad, "--out", tmp_path / "b")
    assert r.exit_code == 2 and "line 1" in r.output and "tokens" in r.output
    r = run("--model", tiny_gpt2_dir, "--device", "cpu", "--receivers", "L1H0.x", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "HEAD.INPUT" in r.output
    r = run("--examples", "0", "--out", tmp_path / "y")
    assert r.exit_code == 2 and "--examples" in r.output


def test_the_story_states_measured_paths_with_intervals(tiny_gpt2):
    a = headscope.analyze_logits(tiny_gpt2, "a b c a b c", top=8, seq_len=6, batch=3, ablate=False, paths=True)
    assert {s.layer for s in a.stories.stories} == {0, 1}  # all 8 heads have a story
    assert all(not s.k_paths for s in a.stories.stories if s.layer == 0)  # nothing lies below layer 0
    s = next(s for s in a.stories.stories if s.layer == 1)
    assert [p["head"][:2] for p in s.k_paths] == ["L0"] * len(s.k_paths) and s.k_paths
    assert s.logit_paths[0]["via"] == "direct" and "induction task" in s.paths_about
    for p in s.k_paths + s.logit_paths:
        assert p["low"] <= p["effect"] <= p["high"]
    # the direct path is the path-patching number itself (same task, same caches' definition)
    task = induction_task(tiny_gpt2, n_examples=3, seq_len=6, seed=0)
    ref = paths_through(tiny_gpt2, task, [((s.layer, s.head), Receiver.logits())])
    assert s.logit_paths[0]["effect"] == pytest.approx(float(ref.effect[0]), abs=1e-9)
    assert any("measured by path patching" in f for f in a.findings())
    assert np.isfinite([p["effect"] for p in s.k_paths]).all()
