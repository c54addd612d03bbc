"""The scan at the floor (issue 22): each aim measured side by side with what it is held against.

Three parts, each a fresh process when ``benchmarks/run.py`` runs them (``--part``):

- ``speed``: the public ``scan_induction(ablate=False, sample=False)`` with every registry score
  on (attention scores, direct logit effects, the per-position loss; the weight scores from the
  per-model cache) against a plain ``transformers`` sdpa forward of the same token ids loaded
  from the same cached directory, at ``--shapes`` (default 10 x 101 and 1 x 4,097 tokens).
  Aim: at most 1.10x (on a GPU, item 4: 1.5x at 10 x 101, 1.10x at 1 x 4,097).
- ``causal``: the causal check as ``scan_induction`` runs it (each of the top 5 heads, all of
  them, and the random control drawn ``CONTROL_DRAWS`` times, per-sequence losses and bootstrap
  intervals: :func:`headscope.scan.causal.causal_check`, restarted at the first ablated layer
  from the clean residuals kept by the clean pass, losses only at the counted positions)
  against the same plan as full passes from the embedding with full logits
  (``ablated_losses_full``, the reference it is tested against). Aim: at most 0.45.
- ``memory``: ``benchmarks/memory.py`` in fresh processes, the scan against the sdpa forward,
  at 4,097 and 8,191 tokens: peak RSS above the loaded model, glibc's default allocator. Aim:
  at most the forward's + 10%.

Rounds are interleaved (A B A B ...) after one warm-up call of each; medians of the wall time
*and* of the process's CPU time (``time.process_time``: all its threads; on a machine shared with
other work the CPU-time ratio moves less than the wall-clock one). Each record carries
``aims``: ``[{"item", "what", "aim", "limit", "measured", "cpu_measured", "met"}]``, which
``run.py`` prints side by side.

    python benchmarks/floor.py --part speed --threads 1
    python benchmarks/floor.py --part causal --reps 3
    python benchmarks/floor.py --part memory
    python benchmarks/floor.py --part what-if   # item 2 if issue 19 drew its controls from the top heads' layers
    python benchmarks/floor.py --part what-if --what-if top-only        # item 2's floor: no control at all
    python benchmarks/floor.py --part what-if --what-if top-only-later  # ... and no first-repeat loss
    python benchmarks/floor.py --part batch     # whether batching the passes together pays here
    python benchmarks/floor.py --part launches  # item 4 without a GPU: operations (kernel launches) per call
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from unittest import mock

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _bench import emit, load_average, machine, say, set_threads, sync  # noqa: E402

SUITE = {
    "section": "floor",
    "runs": [["--part", "speed"], ["--part", "causal"], ["--part", "memory"], ["--part", "launches"]],
    "quick_runs": [
        ["--part", "speed", "--shapes", "2x20", "--reps", "2"],
        ["--part", "causal", "--causal-shape", "2x20", "--causal-reps", "1"],
        ["--part", "memory", "--memory-seq-lens", "256"],
        ["--part", "launches", "--shapes", "2x20"],
    ],
}
"""How ``benchmarks/run.py`` runs this script (one fresh process per entry; see run.py)."""

SPEED_AIM, CAUSAL_AIM, MEMORY_AIM = 1.10, 0.45, 1.10
GPU_SHORT_AIM = 1.5  # issue 22 item 4: on a GPU, at most 1.5x at 10 x 101 tokens (1.10x at 1 x 4,097)


def speed_aim(device: str, n_tokens: int) -> float:
    """The speed aim for ``n_tokens`` tokens in all on ``device``."""
    return GPU_SHORT_AIM if str(device).startswith("cuda") and n_tokens < 2000 else SPEED_AIM


def interleaved_cpu(fns: dict, reps: int, device: str) -> tuple[dict, dict]:
    """Wall and CPU seconds of each function per round, rounds interleaved, after one warm-up each."""
    for fn in fns.values():
        fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(reps):
        for name, fn in fns.items():
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            say(
                f"  round {r + 1}: {name} {wall[name][-1]:.3f} s wall, {cpu[name][-1]:.3f} s CPU (load {load_average()[0]:.2f})"
            )
    return wall, cpu


def aim(item: int, what: str, limit: float, measured: float, cpu: float | None = None) -> dict:
    return {
        "item": item,
        "what": what,
        "aim": f"<= {limit:.2f}" + ("x" if item != 2 else ""),
        "limit": limit,
        "measured": round(measured, 4),
        "cpu_measured": None if cpu is None else round(cpu, 4),
        "met": measured <= limit,
    }


def _model(args):
    import headscope
    from headscope.scan.induction_scan import weight_score_arrays

    model = headscope.load_model(args.model, device=args.device)
    weight_score_arrays(model)  # the per-model cache a loaded model fills on its first scan
    return model


def part_speed(args) -> dict:
    from transformers import AutoModelForCausalLM

    from headscope.models.loading import resolve_source
    from headscope.scan.induction_scan import scan_induction
    from headscope.scan.sequences import repeated_tokens

    model = _model(args)
    hf = AutoModelForCausalLM.from_pretrained(
        resolve_source(args.model).path, attn_implementation="sdpa", dtype=torch.float32
    )
    hf = hf.to(args.device).eval()
    rows, aims = [], []
    for shape in args.shapes:
        batch, seq_len = (int(x) for x in shape.split("x"))
        rt = repeated_tokens(model, seq_len=seq_len, batch=batch, repeats=2, seed=0)
        tokens = rt.tokens.to(args.device)
        kw = dict(seq_len=seq_len, batch=batch, seed=0, ablate=False, sample=False, progress=False)

        @torch.no_grad()
        def forward(tokens=tokens):
            return hf(tokens, use_cache=False).logits.shape

        fns = {"hf_sdpa": forward, "scan": lambda kw=kw: scan_induction(model, **kw)}
        reps = args.reps if batch * seq_len < 2000 else args.long_reps
        wall, cpu = interleaved_cpu(fns, reps, args.device)
        med = {k: statistics.median(v) for k, v in wall.items()}
        cmed = {k: statistics.median(v) for k, v in cpu.items()}
        n = rt.layout.n_tokens
        rows.append(
            {"batch": batch, "n_tokens": n, "wall_s": wall, "cpu_s": cpu, "median_s": med, "cpu_median_s": cmed}
        )
        what = f"scan_induction (every score) / sdpa forward, {batch} x {n:,} tokens"
        item, limit = (4 if args.device.startswith("cuda") else 1), speed_aim(args.device, batch * n)
        aims.append(aim(item, what, limit, med["scan"] / med["hf_sdpa"], cmed["scan"] / cmed["hf_sdpa"]))
    return {"part": "speed", "shapes": rows, "aims": aims}


def _causal_setup(args):
    """What both causal parts start from: the model, the sequences, the clean pass (every layer's
    residual kept, as ``scan_induction`` keeps them), the top heads and their mean replacement."""
    from headscope.head_labels import top_k
    from headscope.scan.causal import replacement_for
    from headscope.scan.induction_scan import score_pass
    from headscope.scan.sequences import repeated_tokens

    model = _model(args)
    batch, seq_len = (int(x) for x in args.causal_shape.split("x"))
    rt = repeated_tokens(model, seq_len=seq_len, batch=batch, repeats=2, seed=0)
    L = model.n_layers
    scan = score_pass(model, rt, batch, keep_z_mean=True, attention="fused", keep_residuals=range(L))
    top = [(l, h) for l, h, _ in top_k(scan.means["induction"], args.top)]
    repl = replacement_for("mean", model, rt, None, scan.z_mean, batch, True, 0)
    return model, rt, scan, top, repl, batch


def _check_vs_full(args, model, rt, plan, repl, batch, check) -> dict:
    """``check()`` against ``plan`` run as full passes from the embedding with full logits, interleaved."""
    from headscope.scan.induction_scan import ablated_losses_full

    def full():
        return [ablated_losses_full(model, rt, heads, batch, repl) for _, heads in plan]

    wall, cpu = interleaved_cpu({"full_passes": full, "check": check}, args.causal_reps, args.device)
    flops = {"full_passes": matmul_flops(full), "check": matmul_flops(check)}
    say(
        f"  matrix-product FLOPs: check {flops['check'] / 1e9:.0f} G / full passes {flops['full_passes'] / 1e9:.0f} G"
        f" = {flops['check'] / flops['full_passes']:.3f}"
    )
    L = model.n_layers
    return {
        "flops": flops,
        "flop_ratio": flops["check"] / flops["full_passes"],
        "passes": len(plan),
        "blocks_restarted": sum(L - min(l for l, _ in heads) for _, heads in plan),
        "blocks_full": len(plan) * L,
        "wall_s": wall,
        "cpu_s": cpu,
        "median_s": {k: statistics.median(v) for k, v in wall.items()},
        "cpu_median_s": {k: statistics.median(v) for k, v in cpu.items()},
    }


def matmul_flops(fn) -> int:
    """The floating-point operations of ``fn()``'s matrix products (``torch.utils.flop_counter``:
    matmuls, linear layers, batched products, attention), the arithmetic a plan needs whatever
    runs it; elementwise work is not counted. A second computation of item 2's floor beside the
    timings: a time ratio far below this FLOP ratio would mean the two sides do not run the same
    arithmetic equally well."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _ratios(rec: dict) -> tuple[float, float]:
    med, cmed = rec["median_s"], rec["cpu_median_s"]
    return med["check"] / med["full_passes"], cmed["check"] / cmed["full_passes"]


def part_causal(args) -> dict:
    from headscope.scan.causal import ablation_plan, causal_check
    from headscope.scores import CONTROL_DRAWS

    model, rt, scan, top, repl, batch = _causal_setup(args)
    plan = ablation_plan(model.n_layers, model.n_heads, top, 0, CONTROL_DRAWS)

    def check():
        clean = (scan.later_by_sequence, scan.first_by_sequence)
        kw = dict(ablation="mean", z_mean=scan.z_mean, residuals=scan.residuals, chunk=batch, fused=True)
        return causal_check(model, rt, top, clean, **kw)

    rec = _check_vs_full(args, model, rt, plan, repl, batch, check)
    n = rt.layout.n_tokens
    what = f"causal check ({len(plan)} passes: top {len(top)}, all, {CONTROL_DRAWS} control draws) / full passes, {batch} x {n} tokens"
    aims = [{**aim(2, what, CAUSAL_AIM, *_ratios(rec)), "flop_ratio": round(rec["flop_ratio"], 4)}]
    return {"part": "causal", "batch": batch, "n_tokens": n, "top": top, **rec, "aims": aims}


def same_layer_plan(top, n_heads: int, seed: int, controls: int) -> list:
    """Issue 19's plan with each control head drawn from the layer of the top head it stands for.

    Not headscope's plan (that draws from every layer): a what-if, to measure what item 2's ratio
    would be if the science issue chose this control (``--part what-if``)."""
    import numpy as np

    plan = [("head", [h]) for h in top] + [("all_top", list(top))]
    for d in range(controls):
        gen, draw = np.random.default_rng([seed, d]), []
        for layer, _ in top:
            others = [(layer, x) for x in range(n_heads) if (layer, x) not in top and (layer, x) not in draw]
            draw.append(others[int(gen.integers(len(others)))])
        plan.append(("control", sorted(draw)))
    return plan


def top_only_plan(top) -> list:
    """Each top head alone and all together, no control: the least any plan with the top heads can cost."""
    return [("head", [h]) for h in top] + [("all_top", list(top))]


WHAT_IF_PLANS = ("same-layer", "top-only", "top-only-later")
"""``--what-if``: the plans ``part_what_if`` can measure (none of them headscope's plan):

- ``same-layer``: issue 19's plan with each control head drawn from its top head's layer;
- ``top-only``: no control at all, both losses (the floor of any plan that keeps the top heads);
- ``top-only-later``: no control and only the later-repeat loss (no specificity number):
  the plan as it stood before issue 19."""


@torch.no_grad()
def _later_only_losses(model, rt, heads, batch, repl, residuals) -> torch.Tensor:
    """Per-sequence later-repeat loss with ``heads`` ablated, restarted, unembedding only the later-repeat targets."""
    from headscope.scan.ablation import ablation_hooks, first_layer, restart_from
    from headscope.scan.losses import losses_from_normed
    from headscope.scores.layout import later_repeat_targets

    start, positions = first_layer(heads), later_repeat_targets(rt.layout)
    hooks = ablation_hooks(heads, repl, slice(0, batch))
    out = restart_from(model, residuals[start], start, hooks, fused=True, normed=True)
    return losses_from_normed(model, out, rt.tokens, positions).mean(-1)


def part_what_if(args) -> dict:
    """The causal check's cost under another plan (restarted, with intervals) / that plan as full passes."""
    from headscope.scan.ablation import ablated_losses
    from headscope.scan.causal import change
    from headscope.scores import CONTROL_DRAWS

    model, rt, scan, top, repl, batch = _causal_setup(args)
    if args.what_if == "same-layer":
        plan = same_layer_plan(top, model.n_heads, 0, CONTROL_DRAWS)
    else:
        plan = top_only_plan(top)

    def check():  # what causal_check does per entry: restarted losses, then the intervals it reports
        for _, heads in plan:
            if args.what_if == "top-only-later":
                change(
                    _later_only_losses(model, rt, heads, batch, repl, scan.residuals).double().numpy(),
                    scan.later_by_sequence,
                    0,
                )
                continue
            later, first = ablated_losses(model, rt, heads, batch, repl, scan.residuals, fused=True)
            change(later, scan.later_by_sequence, 0), change(first, scan.first_by_sequence, 0)

    rec = _check_vs_full(args, model, rt, plan, repl, batch, check)
    ratio, cpu_ratio = _ratios(rec)
    say(
        f"  what-if, {args.what_if}: check / full passes {ratio:.2f} (CPU time {cpu_ratio:.2f};"
        f" matrix-product FLOPs {rec['flop_ratio']:.2f})"
    )
    plan_rows = [[k, [list(h) for h in heads]] for k, heads in plan]
    return {
        "part": "what_if",
        "plan_kind": args.what_if,
        "plan": plan_rows,
        **rec,
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "aims": [],
    }


def part_batch(args) -> dict:
    """Does batching the plan's passes together pay on this machine? The plain ``transformers`` body
    (no unembedding) per 10 sequences of ``--causal-shape``, at 1x, 4x and 16x that batch, interleaved."""
    from transformers import AutoModelForCausalLM

    from headscope.models.loading import resolve_source

    hf = AutoModelForCausalLM.from_pretrained(
        resolve_source(args.model).path, attn_implementation="sdpa", dtype=torch.float32
    )
    body = hf.to(args.device).eval().model
    batch, seq_len = (int(x) for x in args.causal_shape.split("x"))
    gen = torch.Generator().manual_seed(0)
    fns = {}
    for k in (1, 4, 16):
        tokens = torch.randint(100, hf.config.vocab_size, (k * batch, 2 * seq_len + 1), generator=gen).to(args.device)
        fns[f"x{k}"] = torch.no_grad()(lambda tokens=tokens: body(tokens, use_cache=False).last_hidden_state.shape)
    wall, cpu = interleaved_cpu(fns, args.causal_reps, args.device)
    per = {k: statistics.median(v) / int(k[1:]) for k, v in wall.items()}
    for k, v in per.items():
        say(f"  body, {k} the batch: {v:.3f} s per {batch} sequences ({v / per['x1']:.2f} of x1)")
    return {"part": "batch", "wall_s": wall, "cpu_s": cpu, "per_batch_s": per, "aims": []}


NO_KERNEL = frozenset(
    "view _unsafe_view as_strided slice select unsqueeze squeeze permute transpose t expand reshape alias "
    "detach split split_with_sizes unbind flatten _reshape_alias lift_fresh empty empty_strided empty_like "
    "new_empty new_empty_strided".split()
)
"""Operations that only describe memory (views, allocations): no kernel runs for them on a GPU."""

HOST_SYNC = frozenset("_local_scalar_dense nonzero masked_select _unique2 unique_dim unique_consecutive".split())
"""Operations whose result size or value the host must read: on a GPU each waits for every kernel
queued before it (``.item()``, ``bool(t)``, ``nonzero``, ``unique``...)."""


def count_operations(fn) -> tuple[int, dict[str, int], dict[str, int]]:
    """``(total, by source, host syncs by source)``: the tensor operations ``fn()`` dispatches, views and allocations left out.

    Each is a kernel launch on a GPU (a few launch more than one), so at short sequences, where a
    GPU waits on the host, their number is what the scan pays over a forward. ``by source``: the
    innermost ``headscope`` function that issued them ("model" for the model's own code). The
    third item counts the operations of :data:`HOST_SYNC` among them, the same way."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    by_source: Counter = Counter()
    syncs: Counter = Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name not in NO_KERNEL:
                frame, where = sys._getframe(1), "model"
                while frame is not None:
                    if f"{os.sep}headscope{os.sep}" in frame.f_code.co_filename:
                        where = f"{frame.f_code.co_filename.rsplit(os.sep + 'headscope' + os.sep, 1)[1]}:{frame.f_code.co_name}"
                        break
                    frame = frame.f_back
                by_source[where] += 1
                if name in HOST_SYNC:
                    syncs[where] += 1
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Count():
        fn()
    return sum(by_source.values()), dict(by_source.most_common()), dict(syncs.most_common())


def part_launches(args) -> dict:
    """Item 4's overhead, counted where no GPU is lent: operations (kernel launches on a GPU) per call.

    The public scan (every score, no causal check; this device's route) and its pass with the
    attention scores read per declaration and in one gather (``score_pass(reads_together=...)``:
    a GPU takes the gather), and that pass as a GPU runs it (the gather, and the loss in the GPU's
    larger vocabulary slices, :data:`~headscope.scan.losses.SLICE_ELEMENTS`), against the sdpa
    forward, one warm call each first, at the first ``--shapes`` entry. A count, not a time: it
    says how much of the scan's overhead is small operations, which a GPU pays per launch and a
    CPU barely notices. Then the two score-reading passes are timed (``--reps`` interleaved
    rounds), so a run on any device says which route pays there."""
    from transformers import AutoModelForCausalLM

    from headscope.models.loading import resolve_source
    from headscope.scan import losses
    from headscope.scan.induction_scan import scan_induction, score_pass
    from headscope.scan.sequences import repeated_tokens

    model = _model(args)
    hf = AutoModelForCausalLM.from_pretrained(
        resolve_source(args.model).path, attn_implementation="sdpa", dtype=torch.float32
    )
    hf = hf.to(args.device).eval()
    batch, seq_len = (int(x) for x in args.shapes[0].split("x"))
    rt = repeated_tokens(model, seq_len=seq_len, batch=batch, repeats=2, seed=0)
    tokens = rt.tokens.to(args.device)
    kw = dict(seq_len=seq_len, batch=batch, seed=0, ablate=False, sample=False, progress=False)

    def as_on_a_gpu():  # the GPU's route on this device: reads in one gather, the loss in the GPU's slices
        with mock.patch.dict(losses.SLICE_ELEMENTS, {args.device.split(":")[0]: losses.SLICE_ELEMENTS["other"]}):
            return score_pass(model, rt, batch, reads_together=True)

    fns = {
        "hf_sdpa": lambda: hf(tokens, use_cache=False),
        "scan": lambda: scan_induction(model, **kw),
        "pass_reads_apart": lambda: score_pass(model, rt, batch, reads_together=False),
        "pass_reads_together": lambda: score_pass(model, rt, batch, reads_together=True),
        "pass_as_on_a_gpu": as_on_a_gpu,
    }
    counts = {}
    for name, fn in fns.items():
        with torch.no_grad():
            fn()  # warm: first-call work (caches, checks) is not what a sweep pays per call
        counts[name] = count_operations(fn)
        say(f"  {name}: {counts[name][0]:,} operations, {sum(counts[name][2].values())} host syncs {counts[name][2]}")
    for name in ("pass_reads_apart", "pass_reads_together", "pass_as_on_a_gpu"):
        for where, n in list(counts[name][1].items())[:8]:
            say(f"    {name}, {where}: {n:,}")
    ratios = {k: v[0] / counts["hf_sdpa"][0] for k, v in counts.items() if k != "hf_sdpa"}
    for k, r in ratios.items():
        say(f"  operations, {k} / sdpa forward, {batch} x {rt.layout.n_tokens} tokens: {r:.2f}")
    # which route pays on this device: the two passes timed, interleaved (the count is not a time)
    routes = {k: fns[k] for k in ("pass_reads_apart", "pass_reads_together")}
    with torch.no_grad():
        wall, _ = interleaved_cpu(routes, args.reps, args.device)
    route_s = {k: statistics.median(v) for k, v in wall.items()}
    route_ratio = route_s["pass_reads_together"] / route_s["pass_reads_apart"]
    say(f"  time, pass_reads_together / pass_reads_apart: {route_ratio:.3f} ({route_s})")
    return {
        "part": "launches",
        "batch": batch,
        "n_tokens": rt.layout.n_tokens,
        "operations": {k: v[0] for k, v in counts.items()},
        "by_source": {k: v[1] for k, v in counts.items()},
        "host_syncs": {k: v[2] for k, v in counts.items()},
        "ratios": ratios,
        "route_wall_s": wall,
        "route_median_s": route_s,
        "route_together_over_apart": route_ratio,
        "aims": [],
    }


def part_memory(args) -> dict:
    """memory.py for the scan and the sdpa forward at each length, each in a fresh process."""
    here = os.path.dirname(os.path.abspath(__file__))
    runs, aims = {}, []
    for seq_len in args.memory_seq_lens:
        got = {}
        for what in ("hf-sdpa", "scan"):
            cmd = [sys.executable, os.path.join(here, "memory.py"), "--model", args.model, "--device", args.device]
            cmd += ["--threads", str(args.threads), "--seq-len", str(seq_len), "--what", what]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                say(f"  memory {what} seq-len {seq_len} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            got[what] = json.loads(line[7:])
            say(f"  memory {what} {got[what]['n_tokens']} tokens: +{got[what]['rss_peak_above_model'] / 2**30:.2f} GiB")
        runs[seq_len] = got
        if len(got) == 2:
            key = "cuda_peak_above_model" if "cuda_peak_above_model" in got["scan"] else "rss_peak_above_model"
            n = got["scan"]["n_tokens"]
            ratio = got["scan"][key] / got["hf-sdpa"][key]
            aims.append(aim(3, f"scan peak / sdpa forward peak above the model, 1 x {n:,} tokens", MEMORY_AIM, ratio))
    return {"part": "memory", "runs": runs, "aims": aims}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("speed", "causal", "memory", "what-if", "batch", "launches"), required=True)
    p.add_argument("--what-if", choices=WHAT_IF_PLANS, default="same-layer", help="the plan --part what-if measures")
    p.add_argument("--model", default="smollm2-135m-instruct-q4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--shapes", nargs="+", default=["10x50", "1x2048"], help="BATCHxSEQ_LEN ([BOS] + r + r)")
    p.add_argument("--reps", type=int, default=5, help="interleaved rounds at short lengths")
    p.add_argument("--long-reps", type=int, default=3, help="interleaved rounds at 2,000 tokens and more")
    p.add_argument("--causal-shape", default="10x50")
    p.add_argument("--causal-reps", type=int, default=3)
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--memory-seq-lens", nargs="+", type=int, default=[2048, 4095])
    args = p.parse_args(argv)
    threads = set_threads(args.threads)
    say(f"floor/{args.part}: {args.model} on {args.device}, {threads} threads; load average {load_average()}")
    rec = {"section": "floor", "device": args.device, "threads": threads, "model": args.model}
    rec["load_average_start"] = list(load_average())
    parts = {
        "speed": part_speed,
        "causal": part_causal,
        "memory": part_memory,
        "what-if": part_what_if,
        "batch": part_batch,
        "launches": part_launches,
    }
    rec.update(parts[args.part](args))
    rec["load_average_end"] = list(load_average())
    rec["machine"] = machine()
    for a in rec["aims"]:
        cpu = "" if a["cpu_measured"] is None else f" (CPU time {a['cpu_measured']:.2f})"
        say(
            f"  item {a['item']}: {a['what']}: {a['measured']:.2f}{cpu}, aim {a['aim']}: {'met' if a['met'] else 'NOT met'}"
        )
    emit(rec)
    return rec


if __name__ == "__main__":
    main()
