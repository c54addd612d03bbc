"""Scale: reduced precision, device maps, the memory budget, the GPU check script.

No timings are asserted here (benchmarks/ measures speed); these tests check that each
path gives the right numbers on the CPU, which is all this machine has.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import headscope
from headscope.cli import app
from headscope.scan.sequences import repeated_tokens

ROOT = Path(__file__).resolve().parents[1]


def _script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _scan(model, **kw):
    return headscope.scan_induction(model, ablate=False, sample=False, progress=False, **kw)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_scores_from_half_precision_patterns_are_accumulated_in_float32(tiny_llama_dir, dtype):
    """The pattern is as precise as the model's dtype; summing it must not lose more.

    Reference: the same half-precision patterns, captured from the model, reduced in float64.
    Summing 120 bfloat16 numbers in bfloat16 would be off by ~1e-3; float32 keeps ~1e-7.
    The eager path reads those very patterns (the fused path recomputes the few entries it needs
    in float32 from q, k and the logsumexp, so it differs from a half-precision pattern by ~1e-5).
    """
    model = headscope.load_model(str(tiny_llama_dir), device="cpu", dtype=dtype)
    seq_len, batch = 30, 4
    res = _scan(model, seq_len=seq_len, batch=batch, attention="eager")
    rt = repeated_tokens(model, seq_len=seq_len, batch=batch)
    patterns = {}
    with torch.no_grad():
        model.run_with_hooks(
            rt.tokens,
            fwd_hooks=[
                (f"blocks.{l}.attn.hook_pattern", lambda p, hook: patterns.__setitem__(hook.name, p.clone()))
                for l in range(model.cfg.n_layers)
            ],
        )
    for l in range(model.cfg.n_layers):
        p = patterns[f"blocks.{l}.attn.hook_pattern"]
        assert p.dtype == getattr(torch, dtype)
        q0 = rt.layout.later_start
        stripe = p.double().diagonal(offset=1 - seq_len, dim1=-2, dim2=-1)[..., q0 - seq_len + 1 :]
        expected = stripe.mean(dim=(0, -1)).numpy()
        np.testing.assert_allclose(res.scores["induction"][l], expected, atol=1e-6)
    assert all(a.dtype == np.float64 for a in res.scores.values())


@pytest.mark.smollm2
def test_bfloat16_smollm2_finds_the_same_induction_heads_as_float32(smollm2):
    fp32 = _scan(smollm2, seq_len=20, batch=3)
    bf16 = _scan(headscope.load_model("smollm2-135m-instruct-q4", device="cpu", dtype="bfloat16"), seq_len=20, batch=3)
    for name in ("induction", "prefix_matching", "previous_token", "duplicate_token"):
        assert np.abs(bf16.scores[name] - fp32.scores[name]).max() < 0.05, name
    assert [h[:2] for h in bf16.top_heads("induction", 3)] == [h[:2] for h in fp32.top_heads("induction", 3)]
    assert abs(bf16.loss_later_repeats - fp32.loss_later_repeats) < 0.3
    assert bf16.top_heads("induction", 1)[0][2] > 0.5


def test_device_map_auto_loads_and_scans(tiny_gpt2_dir, tiny_gpt2):
    """accelerate's device map (here: everything on the CPU) gives the scores of a plain load."""
    mapped = headscope.load_model(str(tiny_gpt2_dir), device_map="auto")
    a, b = _scan(mapped, seq_len=8, batch=2), _scan(tiny_gpt2, seq_len=8, batch=2)
    np.testing.assert_allclose(a.scores["induction"], b.scores["induction"], atol=1e-6)


@pytest.mark.parametrize("command", ["induction", "sweep"])
def test_device_map_is_an_option_of_the_scanning_commands(command):
    r = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert r.exit_code == 0 and "--device-map" in r.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="says what --device-map does where no GPU is")
def test_device_map_without_a_gpu_says_the_model_runs_on_the_cpu(tiny_gpt2_dir, tmp_path):
    args = ["induction", "-m", str(tiny_gpt2_dir), "--seq-len", "8", "--batch", "2", "--no-ablate"]
    r = CliRunner().invoke(app, [*args, "--device-map", "auto", "--out", str(tmp_path / "a")], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "--device-map auto found no GPU: the model runs on the CPU" in r.output
    plain = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b")], terminal_width=200)
    assert plain.exit_code == 0 and "found no GPU" not in plain.output


def test_memory_budget_sets_the_chunk_size_and_is_stated(tiny_gpt2):
    roomy = _scan(tiny_gpt2, seq_len=16, batch=5)
    tight = _scan(tiny_gpt2, seq_len=16, batch=5, max_memory_gb=1e-6)
    assert roomy.settings["chunk_size"] == 5 and roomy.settings["max_memory_gb"] == 2.0
    assert tight.settings["chunk_size"] == 1 and tight.settings["max_memory_gb"] == 1e-6
    for name in roomy.scores:
        np.testing.assert_allclose(tight.scores[name], roomy.scores[name], atol=1e-6)
    np.testing.assert_allclose(tight.per_position_loss, roomy.per_position_loss, atol=1e-5)


@pytest.mark.smollm2
def test_gpu_check_script_runs_on_the_cpu(smollm2, tmp_path, capsys):
    gpu_check = _script(ROOT / "scripts" / "gpu_check.py", "gpu_check")
    rc = gpu_check.main(
        [
            "--device",
            "cpu",
            "--batch",
            "2",
            "--seq-len",
            "12",
            "--long",
            "24",
            "--no-ablate",
            "--json",
            str(tmp_path / "gc.json"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "float32: loaded in" in out and "bfloat16: loaded in" in out and "all checks passed" in out
    assert "top induction heads: L" in out and "long: seq-len 24 (49 tokens)" in out
    assert "ok   fused and eager scores within 1e-5" in out and "ok   the fused path runs on this device" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where there is no GPU")
def test_gpu_check_without_a_gpu_exits_2(capsys):
    gpu_check = _script(ROOT / "scripts" / "gpu_check.py", "gpu_check")
    assert gpu_check.main(["--device", "cuda"]) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err


def test_benchmark_summary_states_the_aims_and_the_machine():
    """The benchmark itself is not run in the suite; its report is, on made-up numbers."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        run = _script(ROOT / "benchmarks" / "run.py", "bench_run")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    machine = {
        "cpu": "Test CPU",
        "cores": 2,
        "ram_gib": 24,
        "torch": "2",
        "transformers": "5",
        "transformer_lens": "4.3",
        "torch_threads": 2,
        "load_average": [0.1, 0.1, 0.1],
        "load_average_end": [0.2, 0.1, 0.1],
    }
    speed = {
        "section": "speed",
        "device": "cpu",
        "batch": 10,
        "n_tokens": 101,
        "times_s": {k: [1.0] for k in ("scan", "hf_sdpa", "hf_eager", "tl_detect_head")},
        "median_s": {"scan": 1.1, "hf_sdpa": 1.0, "hf_eager": 1.0, "tl_detect_head": 20.0},
        "ratios": {"scan / hf_sdpa": 1.1, "scan / hf_eager": 1.1, "tl_detect_head / scan": 18.0},
    }
    memory = {
        "section": "memory",
        "what": "scan",
        "device": "cpu",
        "seq_len": 2048,
        "n_tokens": 4097,
        "run_s": 60,
        "rss_peak_above_model": 5 * 2**30,
        "rss_before_run": 2**29,
        "chunk_size": 1,
    }
    text = run.summary({"machine": machine, "results": [speed, memory]})
    assert "Test CPU, 2 cores" in text and "load average at start [0.1, 0.1, 0.1]" in text
    assert "scan <= 1.2x plain forward: met vs sdpa" in text
    assert ">= 10x faster than TL detect_head x3: met" in text
    assert "5.00 GiB above the loaded model" in text and "aim < 4 GiB: NOT met" in text
