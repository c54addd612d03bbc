"""`headscope induction` end to end on a tiny GPT-2, and every bad input it must refuse."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from headscope.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["induction", *map(str, args)])


@pytest.fixture()
def small(tiny_gpt2_dir, tmp_path):
    """Common args for a fast run on the tiny GPT-2; the output dir is fresh per test."""
    return [
        "--model",
        tiny_gpt2_dir,
        "--seq-len",
        6,
        "--batch",
        3,
        "--top",
        2,
        "--device",
        "cpu",
        "--out",
        tmp_path / "out",
    ]


def test_json_goes_to_stdout_alone_and_matches_scores_json(small, tmp_path):
    r = run(*small, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["model"]["n_layers"] == 2 and doc["model"]["n_heads"] == 4
    assert doc["settings"]["seq_len"] == 6
    on_disk = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert on_disk == doc
    assert len(doc["ablation"]) == 2 + 1 + 10  # two heads, all together, ten control draws
    assert all(e["interval"][0] <= e["loss_increase"] <= e["interval"][1] for e in doc["ablation"])


def test_controls_sets_how_many_random_control_draws_the_causal_check_makes(small):
    r = run(*small, "--controls", 3, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [e["kind"] for e in doc["ablation"]].count("control") == 3
    assert doc["settings"]["controls"] == 3
    assert "drawn at random, 3 times" in doc["definitions"]["ablation"]  # the legend says what this run did
    legend = " ".join(run(*small, "--controls", 3, "--overwrite").output.split())
    assert "drawn at random, 3 times" in legend and "10 times" not in legend


def test_the_top_heads_table_fits_an_80_column_terminal_with_every_head_and_interval_whole(small, monkeypatch):
    import re

    monkeypatch.setenv("COLUMNS", "80")  # a terminal 80 columns wide (a pipe gets PIPE_WIDTH)
    r = run(*small)
    assert r.exit_code == 0, r.output
    rows = [line for line in r.stdout.splitlines() if re.match(r"^L\d+H\d+ ", line)]
    assert len(rows) == 2  # --top 2, each on one line: nothing folded
    assert all(len(line) <= 80 for line in r.stdout.splitlines())
    num = r"[+-]\d\.(?:\d\d|\de[+-]\d\d)"  # 2 places, or a tiny model's 1e-3 effects in scientific notation
    assert all(re.search(rf"{num} \[{num},{num}\]", line) for line in rows), rows


def test_a_pipe_gets_whole_tables_not_80_columns(small, monkeypatch):
    from headscope.cli._common import PIPE_WIDTH

    monkeypatch.delenv("COLUMNS", raising=False)
    r = run(*small)
    assert r.exit_code == 0, r.output
    assert max(len(line) for line in r.stdout.splitlines()) > 80
    assert all(len(line) <= PIPE_WIDTH for line in r.stdout.splitlines())


def test_writes_csv_and_every_figure(small, tmp_path):
    r = run(*small, "--text", "one two three. one two three.")
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "Δloss [95%]" in said and "control, 10 draws of 2 other heads" in said
    assert "[low, high]: 95% bootstrap interval" in said  # the legend's brackets are text, not markup
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert {
        "scores.json",
        "scores.csv",
        "heatmap_induction.png",
        "heatmap_copying.png",
        "loss_by_position.png",
        "ablation.png",
        "attention_repeated.png",
        "attention_text_1.png",
    } <= names
    header = (out / "scores.csv").read_text().splitlines()[0]
    from headscope.scores import SCORES
    from headscope.scores.reads import on_natural_text

    ablation = ["ablation_delta", "ablation_low", "ablation_high", "ablation_verdict", "ablation_first_repeat_delta"]
    # one column per score of the registry read on the scan (attention_sink is read on natural text: `heads`),
    # then the causal check of each singly ablated head
    on_scan = [s.name for s in SCORES if not on_natural_text(s.reads)]
    assert header == ",".join(["layer", "head", "label", *on_scan, "roles", *ablation])
    assert header.startswith("layer,head,label,induction,prefix_matching,previous_token,duplicate_token,copying,")
    assert all((out / n).stat().st_size > 1000 for n in names if n.endswith(".png"))


def test_existing_results_are_never_overwritten_silently(small, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    earlier = '{"model": {"name": "an earlier version wrote this"}, "scores": {}}'  # results without a manifest
    (out / "scores.json").write_text(earlier)
    r = run(*small)
    assert r.exit_code == 4
    assert "already holds results" in r.output and "--overwrite" in r.output
    assert (out / "scores.json").read_text() == earlier
    assert run(*small, "--overwrite").exit_code == 0
    assert json.loads((out / "scores.json").read_text())["model"]["n_layers"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seq-len", "1"], "--seq-len must be at least 2"),
        (["--batch", "0"], "--batch must be at least 1"),
        (["--repeats", "1"], "--repeats must be at least 2"),
        (["--seq-len", "200"], "the largest --seq-len for --repeats 2 is 127"),
        (["--device", "tpu"], "unknown device"),
        (["--dtype", "float8"], "unknown dtype"),
        (["--text", "   "], "--text number 1 holds only whitespace"),
        (["--text", ""], "--text number 1 is empty"),
        (["--threshold", "induction"], "bad --threshold"),
        (["--ablation", "half"], "unknown ablation"),
    ],
)
def test_bad_input_gives_a_clear_message_and_nonzero_exit(small, args, message, tmp_path):
    r = run(*small, *args)
    assert r.exit_code != 0
    assert message in " ".join(r.output.split()), r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "out" / "scores.json").exists()


def test_cuda_without_a_gpu_says_so(small):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda is valid here")
    r = run(*small, "--device", "cuda")
    assert r.exit_code == 2 and "no CUDA GPU" in r.output


def test_file_that_is_not_utf8_is_refused(small, tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\xe9 caf\xe9".encode("latin-1"))
    r = run(*small, "--file", f)
    assert r.exit_code == 2 and "is not UTF-8" in r.output


def test_debug_shows_the_traceback_and_keeps_the_exit_code(small):
    r = runner.invoke(app, ["induction", *map(str, small), "--batch", "0", "--debug"])
    assert r.exit_code == 2 and "Traceback" in r.stderr and "BadInput" in r.stderr and "hint:" in r.stderr


def test_model_without_bos_token_uses_eos_and_says_so(tmp_path, tiny_gpt2_dir):
    import shutil

    from transformers import AutoTokenizer

    d = tmp_path / "nobos"
    shutil.copytree(tiny_gpt2_dir, d)
    tok = AutoTokenizer.from_pretrained(str(d))
    tok.bos_token = None
    tok.save_pretrained(str(d))
    r = run(
        "--model",
        d,
        "--seq-len",
        5,
        "--batch",
        2,
        "--top",
        1,
        "--no-ablate",
        "--device",
        "cpu",
        "--out",
        tmp_path / "o",
        "--json",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["settings"]["bos_token_id"] == 50256 and doc["settings"]["n_tokens"] == 11
    assert doc["settings"]["bos_source"].startswith("eos (the tokenizer has no BOS token")


def test_without_bos_or_eos_sequences_start_with_the_random_tokens(tiny_gpt2):
    from dataclasses import replace

    from headscope.models import FirstToken
    from headscope.scan.sequences import repeated_tokens

    stub = replace(tiny_gpt2, first_token=FirstToken.choose(None, None), cache={})
    rt = repeated_tokens(stub, seq_len=4, batch=2, repeats=3)
    assert rt.tokens.shape == (2, 12) and not rt.layout.bos
    assert (rt.tokens[:, :4] == rt.tokens[:, 4:8]).all() and (rt.tokens != 50256).all()
