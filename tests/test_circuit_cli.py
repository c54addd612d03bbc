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
    # two pairs (one is refused for its count before any tokenizing), the first of which does not line up
    bad.write_text('{"clean": "a b c", "corrupt": "a b c d e", "answer": " x", "wrong": " y"}\n' * 2)
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


def flat(r) -> str:
    """The command's output on one line (rich wraps long lines and draws boxes)."""
    return " ".join(r.output.replace("│", " ").split())


def test_a_sender_or_receiver_the_model_lacks_is_refused_before_any_patching(tiny_gpt2_dir, tmp_path, monkeypatch):
    import headscope.pipeline.circuit_analysis as ca

    def no_work(*args, **kwargs):
        raise AssertionError("patching started although a head does not exist")

    monkeypatch.setattr(ca, "cache_run", no_work)
    out = tmp_path / "o"
    # the tiny GPT-2 has 2 layers x 4 heads: L1H4 (a head too many) and L2H0 (a layer too many) do not exist
    for option, spec in (("--receivers", "logits,L1H4.q"), ("--senders", "L0H1,L2H0")):
        r = run("--model", tiny_gpt2_dir, "--device", "cpu", "--examples", "3", "--seq-len", "5", option, spec,
                "--out", out)  # fmt: skip
        text = flat(r)
        assert r.exit_code == 2, r.output
        assert option in text and ("L1H4" in text or "L2H0" in text) and "2 layers x 4 heads" in text, text
        assert "L0H0 to L1H3" in text and "hint:" in text and "Traceback" not in r.output
        assert not out.exists()


def test_paths_no_sender_can_reach_are_refused_before_the_model_loads(tmp_path):
    out = tmp_path / "o"
    # a sender in a later layer than its receiver, and a receiver in layer 0 (no head lies before it);
    # the model is never loaded (it would fail with exit code 3), nothing is written
    for args, said in (
        (["--senders", "L20H0", "--receivers", "L18H6.k"], "L20H0 (layer 20) -> L18H6.k (layer 18)"),
        (["--senders", "L3H0,L18H1", "--receivers", "L18H6.k"], "L18H1 (layer 18) -> L18H6.k"),
        (["--receivers", "L0H0.k"], "layer 0 has no earlier head"),
        (["--receivers", "logits,L0H0.k"], "into L0H0.k"),
    ):
        r = run("--model", "no-such-model-is-ever-loaded", *args, "--out", out)
        text = flat(r)
        assert r.exit_code == 2, r.output
        assert "senders must be in layers before the receiver's" in text and said in text, text
        assert "L3H0 (layer" not in text and not out.exists()


def test_paths_only_some_receivers_can_take_are_skipped_with_a_note_and_the_files_named(tiny_gpt2_dir, tmp_path):
    out = tmp_path / "o"
    r = run("--model", tiny_gpt2_dir, "--device", "cpu", "--examples", "3", "--seq-len", "5", "--steps", "paths",
            "--senders", "L0H1,L1H0", "--receivers", "L1H2.k,logits", "--no-figures", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads((out / "circuit.json").read_text())
    got = {p["receiver"]: sorted(x["sender"] for x in p["paths"]) for p in data["path_patching"]}
    assert got == {"L1H2.k": ["L0H1"], "logits": ["L0H1", "L1H0"]}, got
    text = flat(r)
    assert "path L1H0 -> L1H2.k skipped" in text, text
    # the closing line names what was written: no activation patching ran, so there is no CSV of it
    written = {p.name for p in out.iterdir()} - {".headscope.json"}
    assert {"circuit.json", "path_patching.csv"} <= written and "activation_patching.csv" not in written
    wrote = text[text.index("Wrote") :]
    assert "(circuit.json, path_patching.csv)" in wrote and "activation" not in wrote and "CSVs" not in wrote, wrote


def test_a_task_of_one_example_is_refused_its_intervals_would_be_a_single_sample(tiny_gpt2_dir, tiny_gpt2, tmp_path):
    out = tmp_path / "o"
    r = run("--model", "no-such-model-is-ever-loaded", "--examples", "1", "--out", out)  # refused before loading
    text = flat(r)
    assert r.exit_code == 2 and "--examples 1" in text and "intervals need at least 2 examples" in text, text
    pairs = tmp_path / "one.jsonl"
    pairs.write_text(
        '{"clean": "When Mary and John went to the store, John gave a drink to", "corrupt": "When Mary and John '
        'went to the store, Mary gave a drink to", "answer": " Mary", "wrong": " John"}\n'
    )
    r = run("--model", "no-such-model-is-ever-loaded", "--pairs", pairs, "--out", out)  # refused before loading
    text = flat(r)
    assert r.exit_code == 2 and "1 pair" in text and "intervals need at least 2 examples" in text, text
    assert not out.exists()
    # the same rule for a task built in Python
    from headscope.errors import BadInput
    from headscope.pipeline.circuit_analysis import analyze_circuit

    with pytest.raises(BadInput, match="at least 2 examples"):
        analyze_circuit(tiny_gpt2, induction_task(tiny_gpt2, n_examples=1, seq_len=5))


@pytest.mark.parametrize("kind", ["binary", "directory", "not json", "no pairs"])
def test_a_bad_pairs_file_is_one_line_exit_2_before_the_model_loads(tmp_path, kind):
    # was: a binary file gave a raw UnicodeDecodeError traceback (exit 1), after the model had loaded
    pair = '{"clean": "a b", "corrupt": "a c", "answer": " x", "wrong": " y"}\n'
    pairs = tmp_path / "pairs.jsonl"
    if kind == "binary":
        pairs.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    elif kind == "directory":
        pairs.mkdir()
    elif kind == "not json":
        pairs.write_text(pair + "not json\n")
    else:
        pairs.write_text("\n  \n")
    out = tmp_path / "o"
    r = run("--model", "no-such-model-is-ever-loaded", "--pairs", pairs, "--out", out)
    text = flat(r)
    assert "Traceback" not in r.output and "no-such-model" not in text, text
    said = {
        "binary": "is not UTF-8 text (byte",
        "directory": "is a directory, not a file",
        "not json": "line 2 is not JSON",
        "no pairs": "holds no pairs",
    }[kind]
    assert r.exit_code == 2 and said in text, text
    assert not out.exists()


@pytest.mark.parametrize("steps", ["", ",", "activation,activation"])
def test_steps_naming_no_step_or_one_twice_is_refused_before_the_model_loads(tmp_path, steps):
    # was: --steps "" ran no step and wrote an empty circuit.json, exit 0; a step named twice ran twice
    r = run("--model", "no-such-model-is-ever-loaded", "--steps", steps, "--out", tmp_path / "o")
    text = flat(r)
    said = "more than once" if steps.startswith("activation") else "names no step"
    assert r.exit_code == 2 and said in text and "no-such-model" not in text, text
    assert not (tmp_path / "o").exists()


def test_per_position_adds_its_own_files_and_leaves_the_whole_sequence_ones_as_without_it(tiny_gpt2_dir, tmp_path):
    """The tester's command: --per-position patches one position at a time *as well* (help, docs/circuits.md)."""
    import pandas as pd

    from headscope.results import CircuitAnalysis

    common = ("--model", tiny_gpt2_dir, "--device", "cpu", "--direction", "noise", "--senders", "L0H1",
              "--receivers", "logits", "--examples", "2", "--seq-len", "5")  # fmt: skip
    r = run(*common, "--out", tmp_path / "whole")
    assert r.exit_code == 0, r.output
    r = run(*common, "--per-position", "--out", tmp_path / "pos")
    assert r.exit_code == 0, r.output
    whole, pos = tmp_path / "whole", tmp_path / "pos"
    # the whole-sequence table is the run without --per-position's, byte for byte, and says it is the whole sequence
    assert (pos / "activation_patching.csv").read_bytes() == (whole / "activation_patching.csv").read_bytes()
    assert "noise, whole sequence patched" in " ".join(r.output.split())
    by = pd.read_csv(pos / "activation_patching_by_position.csv", keep_default_na=False)
    assert list(by.columns) == ["component", "layer", "unit", "position", "token", "direction", "value", "low", "high"]
    assert len(by) == 2 * 5 * 11 and set(by.direction) == {"noise"}
    assert not (whole / "activation_patching_by_position.csv").exists()
    assert by[by.component == "L1H0"].token.tolist()[1:] == [f"repeat {k}, token {j}" for k in (1, 2) for j in range(5)]
    assert (pos / "figures" / "patching_noise_by_position.png").is_file()
    assert not (whole / "figures" / "patching_noise_by_position.png").exists()
    # circuit.json: the whole-sequence values as before, the per-position ones beside them, both read back
    doc = json.loads((pos / "circuit.json").read_text())["activation_patching"][0]
    assert doc["values"] == json.loads((whole / "circuit.json").read_text())["activation_patching"][0]["values"]
    assert np.array(doc["by_position"]["values"]).shape == (2, 5, 11) and len(doc["by_position"]["positions"]) == 11
    back = CircuitAnalysis.from_json(pos).activation[0]
    got = back.position_frame()
    assert got.token.tolist() == by.token.tolist()
    np.testing.assert_allclose(got.value, by.value, atol=5e-5)
