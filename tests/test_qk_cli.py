"""`headscope qk` end to end on tiny models (and SmolLM2), and every bad input it must refuse."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from headscope.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["qk", *map(str, args)])


@pytest.fixture()
def gpt2_args(tiny_gpt2_dir, tmp_path):
    return ["--model", tiny_gpt2_dir, "--device", "cpu", "--out", tmp_path / "out"]


def test_json_is_exactly_qk_json_and_everything_else_goes_to_stderr(gpt2_args, tmp_path):
    r = run(*gpt2_args, "--head", "1.2", "--text", "a b c d. a b c d.", "--no-figures", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc == json.loads((tmp_path / "out" / "qk.json").read_text())
    assert doc["heads"][0]["head"] == "L1H2" and doc["heads"][0]["reason"] == "chosen with --head"
    assert doc["model"]["n_layers"] == 2 and doc["model"]["positions"] == "standard"
    assert "rotary applied" not in doc["live"]["definition"] and "no rotary" in doc["live"]["definition"]
    legend = " ".join(r.stderr.split())  # learned positions: the legend does not say rotary was applied
    assert "(rotary applied)" not in legend and "before softmax (no rotary embedding" in legend
    dec = doc["decompositions"][0]
    assert "induction stripe" in dec["how"] and "frozen" in dec["note"]
    assert abs(sum(v["contribution"] for v in dec["key_side"].values()) - dec["score"]) < 1e-4
    assert "chosen heads" in r.stderr and "Wrote" in r.stderr


def test_default_run_picks_heads_by_quick_scan_and_writes_every_output(gpt2_args, tmp_path):
    r = run(*gpt2_args, "--top", "1")
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    doc = json.loads((out / "qk.json").read_text())
    reasons = [h["reason"] for h in doc["heads"]]
    assert any("induction score" in x for x in reasons) and any("previous-token score" in x for x in reasons)
    assert len(doc["live"]["sequences"]) == 3  # the built-in samples
    assert any("quick scan (4 sequences x 20 random tokens" in n for n in doc["notes"])
    for name in ("heads.csv", "scores.csv", "decomposition.csv", "positional.csv", "token_qk.csv", "composition.csv"):
        assert len(pd.read_csv(out / name)) > 0, name
    figs = {p.name for p in (out / "figures").iterdir()}
    heads = [h["head"] for h in doc["heads"]]
    assert {f"live_s{s}_{h}.png" for s in range(3) for h in heads} <= figs  # one per sequence per head
    assert {"grid_s0.png", "positional.png", "composition.png"} <= figs
    assert {f"decomposition_s0_{h}.png" for h in heads} <= figs and {f"token_qk_{h}.png" for h in heads} <= figs
    assert all((out / "figures" / f).stat().st_size > 5000 for f in figs)
    # every figure name docs/qk.md gives (``{S}``, ``{L}``, ``{H}`` standing for numbers) is one written here
    docs = (Path(__file__).parents[1] / "docs" / "qk.md").read_text()
    named = {Path(n).name for n in re.findall(r"`([^`\s]*\{[A-Z]\}[^`\s]*\.png)`", docs)}
    assert {"live_s{S}_L{L}H{H}.png", "decomposition_s{S}_L{L}H{H}.png", "token_qk_L{L}H{H}.png"} <= named
    for name in named:
        pattern = re.escape(name).replace(r"\{S\}", r"\d+").replace(r"\{L\}", r"\d+").replace(r"\{H\}", r"\d+")
        assert any(re.fullmatch(pattern, f) for f in figs), f"docs/qk.md names {name}, written: {sorted(figs)}"


def test_existing_results_are_not_overwritten_without_overwrite(gpt2_args, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    earlier = '{"model": {"name": "an earlier version wrote this"}, "heads": []}'  # results without a manifest
    (out / "qk.json").write_text(earlier)
    r = run(*gpt2_args, "--head", "0.1", "--no-figures")
    assert r.exit_code == 4 and "already holds results" in r.output and "--overwrite" in r.output
    assert (out / "qk.json").read_text() == earlier
    assert run(*gpt2_args, "--head", "0.1", "--no-figures", "--overwrite").exit_code == 0


def test_rotary_gqa_model_runs_with_user_tokens_and_query(tiny_llama_dir, tmp_path):
    r = run(
        "--model",
        tiny_llama_dir,
        "--device",
        "cpu",
        "--out",
        tmp_path / "o",
        "--head",
        "2.1,1.3",
        "--token",
        " cat",
        "--token",
        " dog",
        "--token",
        " mat",
        "--query",
        "-1",
        "--no-figures",
        "--json",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["model"]["n_kv_heads"] == 2 and "rope_theta" in doc["model"]
    assert [t["tokens"] for t in doc["token_circuits"]][0] == [" cat", " dog", " mat"]
    assert all("most-attended key" in d["how"] for d in doc["decompositions"])
    assert "RoPE" in doc["positional"]["method"]
    used = doc["used_offsets"]  # the token circuit is taken at each head's most-attended offset, and says so
    for t in doc["token_circuits"]:
        assert t["offset"] == used[t["head"]]["offset"] and f"offset {t['offset']}" in t["method"]
    assert doc["composition"]["where"] == "Q/K at offset 0" and doc["composition_by_offset"]["offsets"] == list(
        range(64)
    )
    assert all(s["where"] == "mean over offsets 0-63" for v in doc["k_composition_sources"].values() for s in v)
    r = run("--model", tiny_llama_dir, "--device", "cpu", "--out", tmp_path / "t", "--head", "1.3", "--no-figures")
    said = " ".join(r.output.split())  # the terminal table names where the token circuit and K sources are read
    assert r.exit_code == 0 and "token QK at" in said and f"offset {used['L1H3']['offset']}" in said
    assert "before softmax (rotary applied)" in said and "(rotary applied)" in doc["live"]["definition"]
    assert "K-comp sources: score minus the random baseline, mean over offsets 0-63" in said


@pytest.mark.parametrize(
    "args, code, says",
    [
        (["--head", "5x1"], 2, "malformed head '5x1': expected L<layer>H<head> or <layer>.<head>"),
        (["--head", "9.0"], 2, "layer 9 does not exist; this model has 2 layers (0..1)"),
        (["--head", "1.7"], 2, "each layer has 4 heads (0..3)"),
        (["--text", "   "], 2, "holds only whitespace"),
        (
            ["--head", "1.0", "--token", " cat", "--token", "antidisestablishment"],
            2,
            "'antidisestablishment' -> 3 tokens",
        ),
        (["--top", "0"], 2, "--top must be at least 1"),
        (["--head", "1.0", "--text", "one two", "--query", "12"], 2, "outside the sequence of 3 tokens"),
    ],
)
def test_bad_input_is_refused_with_a_useful_message(gpt2_args, args, code, says):
    r = run(*gpt2_args, "--no-figures", *args)
    assert r.exit_code == code, r.output
    assert says in " ".join(r.stderr.split()), r.stderr
    assert "Traceback" not in r.output


def test_query_range_in_the_hint_is_the_range_accepted(gpt2_args):
    """A 3-token text: the hint offers 0..2 and -1..-3, and each end of that range runs."""
    r = run(*gpt2_args, "--no-figures", "--head", "1.0", "--text", "one two", "--query", "50")
    said = " ".join(r.stderr.split())
    assert r.exit_code == 2 and "use a position from 0 to 2 or a negative index from -1 to -3" in said, said
    for q in ("0", "2", "-1", "-3"):
        r = run(*gpt2_args, "--no-figures", "--overwrite", "--head", "1.0", "--text", "one two", "--query", q, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["decompositions"][0]["pairs"][0][0] == int(q) % 3


def test_text_longer_than_the_context_is_truncated_and_reported(gpt2_args, tmp_path):
    r = run(*gpt2_args, "--head", "1.0", "--text", " word" * 300, "--max-tokens", "1000", "--no-figures")
    assert r.exit_code == 0, r.output
    joined = " ".join(r.output.split())
    assert "cut from 301 to 256 tokens" in joined and "context of 256 tokens" in joined
    doc = json.loads((tmp_path / "out" / "qk.json").read_text())
    assert len(doc["live"]["sequences"][0]["tokens"]) == 256
    # cut by --max-tokens, the note names the option (it said "the window of 12 tokens")
    r = run(*gpt2_args, "--head", "1.0", "--text", " word" * 30, "--max-tokens", "12", "--no-figures", "--overwrite")
    assert r.exit_code == 0, r.output
    assert "cut from 31 to 12 tokens (first token included) to fit --max-tokens 12" in " ".join(r.output.split())


@pytest.mark.smollm2
def test_smollm2_head_out_of_range_names_the_valid_range(tmp_path):
    r = run("--head", "40.3", "--device", "cpu", "--out", tmp_path / "o", "--no-figures")
    assert r.exit_code == 2
    assert "layer 40 does not exist; this model has 30 layers (0..29)" in " ".join(r.stderr.split())


@pytest.mark.smollm2
def test_smollm2_runs_on_a_short_text_and_finds_the_previous_token_source(tmp_path):
    r = run(
        "--device",
        "cpu",
        "--out",
        tmp_path / "o",
        "--top",
        "1",
        "--text",
        "The cat sat on the mat. The cat sat on the mat.",
        "--no-figures",
        "--json",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    induction_head = doc["heads"][0]["head"]
    sources = doc["k_composition_sources"][induction_head]
    assert max(s["previous_token"] for s in sources[:3]) > 0.4
    assert any("K-composition sources" in f for f in doc["findings"])


def test_the_closing_line_names_every_file_it_counts(gpt2_args, tmp_path):
    """'Wrote 18 files (qk.json, CSVs, figures/*.png)' counted report.html without naming it."""
    r = run(*gpt2_args, "--head", "1.2", "--text", "a b c d. a b c d.", "--report")
    assert r.exit_code == 0, r.output
    wrote = " ".join(r.stderr[r.stderr.index("Wrote") :].split())
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and not p.name.startswith(".")]
    figures = [p for p in written if p.parent.name == "figures"]
    assert f"Wrote {len(written)} files" in wrote and f"{len(figures)} figures (figures/*.png)" in wrote, wrote
    for p in written:
        assert p in figures or p.name in wrote, (p.name, wrote)
