"""headscope's benchmark suite, one command: speed, load time and long-sequence memory, side by side.

    HEADSCOPE_CACHE=... python benchmarks/run.py               # everything (CPU; + CUDA if present)
    python benchmarks/run.py --quick                          # a smoke run: fewer rounds, shorter sequence
    python benchmarks/run.py --sections speed --threads 2     # one section

Each section runs in its own fresh process (memory peaks and load times need one):

- speed  (benchmarks/speed.py): the scan vs a plain transformers forward pass (sdpa and
  eager) vs TransformerLens detect_head for its three patterns, interleaved rounds, medians;
- load   (benchmarks/load.py): first load (GGUF -> cache) vs load from the cache vs plain
  transformers;
- memory (benchmarks/memory.py): peak memory above the loaded model of the scan at
  seq-len 2048 (4,097 tokens), batch 1, next to a plain forward pass of the same tokens;
- explorer (benchmarks/explorer.py, registered): the live explorer's first view of a 100- and a
  1,000-token text and its head and position switches, model warm (wall and CPU time);
- circuits (benchmarks/circuits.py, registered, not in the default set: ``--sections all`` or
  ``--sections circuits``): path patching of every sender to one receiver in one batched run vs
  one forward pass per sender, on the induction task (10 x 101 tokens).

When a CUDA GPU is visible, speed and memory run again on it. The load average is printed
at the start of the suite and of every section: timings taken while other heavy processes
run are wrong (``--wait-quiet`` waits for a quiet machine first). Results are printed as a
summary with the aims of issue #3 and written as JSON (``--out``).

Sections register themselves. Besides the three above, every ``benchmarks/*.py`` whose source
holds a top-level literal ``SUITE = {"section": NAME, "runs": [[ARG, ...], ...]}`` is a section
(``floor.py``: issue 22's aims; circuits and explorer add theirs the same way). run.py runs it
once per entry of ``runs`` (and ``quick_runs`` under ``--quick``, if given), each in a fresh
process with ``--model``, ``--threads`` and, when ``"per_device": True`` (the default),
``--device``; ``"default": False`` leaves it out of the default set (``--sections all`` runs it). Every ``RESULT`` record it prints that carries ``aims`` (a list of ``{"item",
"what", "aim", "measured", "met"}``, optionally ``"cpu_measured"``: the same ratio in process
CPU time, and ``"flop_ratio"``: the ratio of the matrix-product FLOPs the two sides do) is shown in the summary's table of aims, one line per aim, next to its measurement.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _bench import load_average, machine, say  # noqa: E402

GiB = 2**30


def section(script: str, *args: str) -> list[dict]:
    """Run ``benchmarks/<script>`` in a fresh process, its progress on our stderr; return its RESULT records."""
    cmd = [sys.executable, str(HERE / script), *args]
    say(f"\n$ {' '.join(cmd[1:])}   (load average {load_average()[0]:.2f})")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = []
    for line in proc.stdout:
        if line.startswith("RESULT "):
            out.append(json.loads(line[7:]))
        else:
            sys.stderr.write(line)
    if proc.wait():
        say(f"  !! {script} failed with exit code {proc.returncode}")
        return [{"section": script, "failed": proc.returncode, "args": list(args)}]
    return out


BUILT_IN = ("speed", "load", "memory")


def registered(folder: Path = HERE) -> dict[str, dict]:
    """``{section name: its SUITE dict + "script"}`` for every script that declares a ``SUITE`` literal."""
    found: dict[str, dict] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_") or path.name == "run.py":
            continue
        try:
            tree = ast.parse(path.read_text())
        except (OSError, SyntaxError):
            continue
        for node in tree.body:
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
            if isinstance(target, ast.Name) and target.id == "SUITE":
                try:
                    suite = ast.literal_eval(node.value)
                except ValueError:
                    say(f"  !! {path.name}: SUITE is not a literal; skipped")
                    continue
                found[suite["section"]] = {**suite, "script": path.name}
    return found


def wait_quiet(limit: float, max_wait: float) -> None:
    t0 = time.time()
    while load_average()[0] > limit and time.time() - t0 < max_wait:
        say(f"waiting for a quiet machine: load average {load_average()[0]:.2f} > {limit}")
        time.sleep(20)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sections",
        default=None,
        help=f"comma-separated, or 'all' (default: those marked default): {', '.join(BUILT_IN)} and the registered "
        f"ones ({', '.join(registered())})",
    )
    p.add_argument("--devices", default=None, help="cpu,cuda (default: cpu, plus cuda when available)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads in every process")
    p.add_argument("--model", default="smollm2-135m-instruct-q4")
    p.add_argument("--reps", type=int, default=5, help="interleaved speed rounds")
    p.add_argument("--tl-reps", type=int, default=5, help="rounds TransformerLens takes part in")
    p.add_argument("--long-seq-len", type=int, default=2048)
    p.add_argument("--quick", action="store_true", help="2 rounds, 1 TL round, seq-len 256 for memory, 1 cached load")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        metavar="LOAD",
        help="before starting, wait (up to --max-wait s) until the 1-minute load average is below LOAD",
    )
    p.add_argument("--max-wait", type=float, default=1800)
    p.add_argument("--out", type=Path, default=Path("benchmark-results.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.tl_reps, args.long_seq_len = 2, 1, 256
    import torch

    devices = (args.devices or ("cpu,cuda" if torch.cuda.is_available() else "cpu")).split(",")
    suites = registered()
    default = [*BUILT_IN, *(k for k, v in suites.items() if v.get("default", True))]
    sections = [*BUILT_IN, *suites] if args.sections == "all" else (args.sections or ",".join(default)).split(",")
    unknown = [x for x in sections if x not in BUILT_IN and x not in suites]
    if unknown:  # a warning, not an error: a section may still be wired into this file by hand
        say(
            f"!! not built in and not registered (no SUITE literal): {', '.join(unknown)}; known: "
            f"{', '.join([*BUILT_IN, *suites])}"
        )
    if args.wait_quiet is not None:
        wait_quiet(args.wait_quiet, args.max_wait)
    torch.set_num_threads(args.threads)
    info = machine()
    say(
        f"headscope benchmarks on {info['cpu']} ({info['cores']} cores, {info['ram_gib']} GiB), torch "
        f"{info['torch']}, {args.threads} threads; load average at start {info['load_average']}"
        + (f"; GPU {info['gpu']}" if "gpu" in info else "")
    )
    common = ["--model", args.model, "--threads", str(args.threads)]
    results: list[dict] = []
    for dev in devices:
        if "speed" in sections:
            results += section(
                "speed.py", *common, "--device", dev, "--reps", str(args.reps), "--tl-reps", str(args.tl_reps)
            )
            if not args.quick:  # TransformerLens side by side at 2 x 1,025 tokens too (issue 22, item 6)
                reps = str(min(args.reps, 3))
                long = ["--seq-len", "512", "--batch", "2", "--reps", reps, "--tl-reps", str(min(args.tl_reps, 3))]
                results += section("speed.py", *common, "--device", dev, *long)
        if "memory" in sections:
            for what in ("scan", "hf-eager", "hf-sdpa"):
                results += section(
                    "memory.py", *common, "--device", dev, "--seq-len", str(args.long_seq_len), "--what", what
                )
        for name, suite in suites.items():
            if name not in sections or (dev != devices[0] and not suite.get("per_device", True)):
                continue
            dev_args = ["--device", dev] if suite.get("per_device", True) else []
            for run in (suite.get("quick_runs") if args.quick else None) or suite["runs"]:
                results += section(suite["script"], *common, *dev_args, *run)
    if "load" in sections:
        results += section("load.py", *common, "--cached-reps", "1" if args.quick else "3")
    info["load_average_end"] = [round(x, 2) for x in load_average()]
    report = {"machine": info, "argv": sys.argv[1:], "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(summary(report))
    say(f"\nwrote {args.out}")
    return 1 if any("failed" in r for r in results) else 0


def summary(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"\n== headscope benchmarks: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, torch {m['torch']}, "
        f"transformers {m['transformers']}, TransformerLens {m['transformer_lens']}, "
        f"{m['torch_threads']} threads" + (f", GPU {m['gpu']}" if "gpu" in m else ""),
        f"   load average at start {m['load_average']}, at end {m['load_average_end']}",
    ]
    aims = [(r.get("device", ""), a) for r in report["results"] for a in r.get("aims", [])]
    for r in report["results"]:
        if "aims" in r and "failed" not in r:
            continue  # shown in the table of aims below
        if "failed" in r:
            lines.append(f"-- {r['section']} FAILED (exit {r['failed']}) {' '.join(r['args'])}")
        elif r["section"] == "speed":
            med, rat = r["median_s"], r["ratios"]
            busy = r.get("others_cpu_share_max")
            lines.append(
                f"-- speed on {r['device']}: batch {r['batch']} x {r['n_tokens']} tokens, "
                f"{len(r['times_s']['scan'])} interleaved rounds, medians"
                + (
                    ""
                    if busy is None
                    else f" (other processes took at most {100 * busy:.0f}% of the CPU during any timed run)"
                )
                + ":"
            )
            for k, v in med.items():
                lines.append(f"   {k:<24} {v:8.3f} s  ({len(r['times_s'][k])} runs)")
            for k, v in rat.items():
                lines.append(f"   {k:<30} {v:6.2f}x")
            lines.append(
                f"   aim: scan <= 1.2x plain forward: {_ok(rat['scan / hf_sdpa'] <= 1.2)} vs sdpa, "
                f"{_ok(rat['scan / hf_eager'] <= 1.2)} vs eager"
            )
            if "tl_detect_head / scan" in rat:
                lines.append(f"   aim: >= 10x faster than TL detect_head x3: {_ok(rat['tl_detect_head / scan'] >= 10)}")
        elif r["section"] == "memory":
            above = r.get("cuda_peak_above_model", r["rss_peak_above_model"])
            kind = "CUDA allocated" if "cuda_peak_above_model" in r else "RSS"
            extra = f", chunk {r['chunk_size']}" if "chunk_size" in r else ""
            lines.append(
                f"-- memory on {r['device']}: {r['what']:<8} seq-len {r['seq_len']} ({r['n_tokens']} tokens), "
                f"batch 1: {r['run_s']:.1f} s, peak {kind} {above / GiB:.2f} GiB above the loaded model "
                f"(model RSS {r['rss_before_run'] / GiB:.2f} GiB{extra}"
                + (
                    f"; others took {100 * r['others_cpu_share']:.0f}% of the CPU"
                    if r.get("others_cpu_share") is not None
                    else ""
                )
                + ")"
                + (f"; aim < 4 GiB: {_ok(above < 4 * GiB)}" if r["what"].startswith("scan") else "")
            )
        elif r["section"] == "circuits":
            lines.append(
                f"-- circuits on {r['device']}: {r['n_examples']} x {r['n_tokens']} tokens; cache {r['cache_s']:.1f} s; "
                f"{r['senders_logits']} senders -> logits batched {r['path_logits_batched_s']:.2f} s; "
                f"{r['senders_keys']} senders -> {r['receiver']} batched {r['path_keys_batched_s']:.1f} s vs one pass "
                f"per sender {r['per_sender_pass_s']:.2f} s x {r['senders_keys']} = {r['naive_keys_extrapolated_s']:.0f} s "
                f"({r['speedup_keys']}x)"
            )
        elif r["section"] == "eap":
            lines.append(
                f"-- edge attribution ({r['method']}) on {r['device']}: {r['n_edges']} edges, {r['n_examples']} x "
                f"{r['n_tokens']} tokens: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, peak +"
                f"{r['peak_rss_above_model_gib']} GiB; load {r['load_before']} -> {r['load_after']}"
            )
        elif r["section"] == "load":
            lines.append(
                f"-- load {r['model']}: first load {r['first_load_s']:.1f} s (conversion "
                f"{r['first_convert_s']} s), from the cache {r['cached_load_s']:.2f} s "
                f"({r['first / cached']:.0f}x faster), plain transformers {r['hf_load_s']:.2f} s; "
                f"imports {r['import_s']:.1f} s"
            )
    if aims:
        lines.append(
            "-- aims, each next to its measurement (wall-clock ratio of medians; CPU-time ratio in brackets;"
            " where counted, the ratio of matrix-product FLOPs in square brackets):"
        )
        # The load at the start is other work's (nothing of the suite runs yet); later, the suite's own
        # threads are in the load average, so what other processes took is read from /proc/stat.
        others = [r["others_cpu_share_max"] for r in report["results"] if r.get("others_cpu_share_max") is not None]
        if m["load_average"][0] > 0.5 * (m["cores"] or 1) or (others and max(others) > 0.25):
            lines.append(
                "   !! the machine was busy (load average above half its cores at the start, or other processes "
                "took over 25% of the CPU during a timed run): wall-clock ratios are unreliable, read the CPU-time "
                "ones and rerun quiet (--wait-quiet)"
            )
        for dev, a in aims:
            cpu = "" if a.get("cpu_measured") is None else f" ({a['cpu_measured']:.2f} CPU)"
            if a.get("flop_ratio") is not None:  # the arithmetic the two sides do, counted (floor.py's causal part)
                cpu += f" [{a['flop_ratio']:.2f} FLOPs]"
            item = f"#{a['item']}" if "item" in a else ""
            lines.append(
                f"   {item:<4} {dev:<5} {a['what']:<92} {a['measured']:>6.2f}{cpu:<25} aim {a['aim']:<8} {_ok(a['met'])}"
            )
    return "\n".join(lines)


def _ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
