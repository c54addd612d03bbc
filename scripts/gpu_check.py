"""Prove the CUDA path end to end: load, scan in float32 and bfloat16, fused vs eager, ratios, the longest context.

    python scripts/gpu_check.py                      # on a GPU machine (default --device cuda)
    python scripts/gpu_check.py --device cpu --long 0 --no-ratios --batch 2 --seq-len 20   # exercised on CPU
    python scripts/gpu_check.py --device-map auto    # a model spread over the visible GPUs

Steps, each timed: load the model per dtype; run the whole induction scan (every registry
score, loss, copying, causal check; fused attention wherever the model can be routed, CUDA's
memory-efficient kernel returning the row logsumexp); compare bfloat16 scores with float32
ones (scores are always accumulated in float32; the model's own arithmetic is what bfloat16
changes); the fused scan against the eager one (full patterns), every score within 1e-5;
``--ratios`` (default on CUDA): the issue-10 ratios of benchmarks/fused.py on this device
(public scan eager and fused / a plain sdpa forward at 10 x 101 and 1 x 4,097 tokens, causal
check full / restarted, TransformerLens detect_head x 3 / scan at 101 and 1,025 tokens, peak
GPU memory above the model at 4,097 tokens) and issue 22's aims (benchmarks/floor.py: the public
scan / sdpa forward at 10 x 101 and 1 x 4,097, aims 1.5x and 1.10x; the causal check with its
control draws / the same plan as full passes, aim 0.45; peak memory / the forward's, aim 1.10x,
at 4,097 and 8,191 tokens); then the longest context that fits (from the
model's own window down, halving on out-of-memory), batch 1, with its peak GPU memory.
Prints a line per step and a summary; exits 1 if any check fails, 2 if the device is missing.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def fused_ratios(model: str, device: str, reps: int) -> dict:
    """benchmarks/fused.py's side-by-side timings on ``device``, with the ratios issue 10 asks for.

    Per size, every mode of one size runs in one process, interleaved (A B C A B C ...), medians;
    on CUDA the peak memory of each mode above the loaded models is the allocator's.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import fused as bench  # benchmarks/fused.py
    from _bench import interleaved, median

    sizes = [
        ("10x101", 50, 10, list(bench.MODES), True, True),
        ("2x1025", 512, 2, ["scan_fused"], False, True),
        ("1x4097", 2048, 1, list(bench.MODES), False, False),
    ]
    out = {}
    for name, seq_len, batch, modes, ablation, tl in sizes:
        ns = argparse.Namespace(
            model=model, device=device, seq_len=seq_len, batch=batch, modes=modes, ablation=ablation, top=5, tl=tl
        )
        fns, _ = bench.build(ns)
        for fn in fns.values():  # warm-up (kernels, allocator)
            fn()
        times, _ = interleaved(fns, reps, device)
        med = {k: median(v) for k, v in times.items()}
        rec: dict = {"median_s": med}
        if "hf_sdpa" in med:
            rec["over_hf_sdpa"] = {k: med[k] / med["hf_sdpa"] for k in ("scan_eager", "scan_fused")}
        if "ablate_full" in med:
            rec["ablation_restart_over_full"] = med["ablate_restart"] / med["ablate_full"]
        if "tl_detect_head" in med:
            rec["tl_detect_head_over_scan_fused"] = med["tl_detect_head"] / med["scan_fused"]
        if device.startswith("cuda"):
            peaks = {}
            for mode in ("hf_sdpa", "scan_eager", "scan_fused"):
                if mode in fns:
                    _free(device)
                    _peak_reset(device)
                    base = torch.cuda.memory_allocated()
                    fns[mode]()
                    _sync(device)
                    peaks[mode] = (torch.cuda.max_memory_allocated() - base) / 2**30
            rec["peak_gib_above_model"] = peaks
        print(f"ratios {name}: " + json.dumps({k: v for k, v in rec.items() if k != "median_s"}, default=float))
        out[name] = rec
        del fns
        _free(device)
    return out


def floor_aims(model: str, device: str, reps: int, memory: bool) -> dict:
    """benchmarks/floor.py's aims (issue 22) on ``device``: scan / sdpa forward, causal check / full passes, memory;
    and the operations (kernel launches) a scan dispatches against a forward, per score-reading route.

    Every aim is printed next to its measurement; the aims are reported, not checked (a missed
    speed aim is a number to record, not a broken scan).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import floor  # benchmarks/floor.py

    ns = argparse.Namespace(
        model=model,
        device=device,
        threads=torch.get_num_threads(),
        shapes=["10x50", "1x2048"],
        reps=reps,
        long_reps=reps,
        causal_shape="10x50",
        causal_reps=reps,
        top=5,
        memory_seq_lens=[2048, 4095],
    )
    out = {"speed": floor.part_speed(ns), "causal": floor.part_causal(ns), "launches": floor.part_launches(ns)}
    if memory:
        out["memory"] = floor.part_memory(ns)
    for part in out.values():
        for a in part["aims"]:
            print(
                f"aim #{a['item']}: {a['what']}: {a['measured']:.2f}, aim {a['aim']}: {'met' if a['met'] else 'NOT met'}"
            )
        _free(device)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct-q4")
    p.add_argument("--device", default="cuda")
    p.add_argument("--device-map", default=None, help="e.g. auto: load with accelerate's device map instead")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument(
        "--long",
        type=int,
        default=None,
        help="seq-len of the long run (default on CUDA: the longest that fits, from the model's window down; 0 = skip)",
    )
    p.add_argument(
        "--ratios",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure benchmarks/fused.py's ratios on this device (default: on CUDA)",
    )
    p.add_argument("--reps", type=int, default=3, help="interleaved rounds per ratio")
    p.add_argument(
        "--floor-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with the ratios, also issue 22's memory aim (benchmarks/memory.py in fresh processes, 4,097 and 8,191 tokens)",
    )
    p.add_argument("--tolerance", type=float, default=0.1, help="largest |score difference| vs float32 allowed")
    p.add_argument(
        "--min-induction",
        type=float,
        default=None,
        help="fail if the top induction score is lower (default 0.4 for the built-in model)",
    )
    p.add_argument("--no-ablate", action="store_true", help="skip the causal check (a quicker run)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)

    import headscope
    from headscope.errors import HeadscopeError

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"FAIL: --device {device} but torch {torch.__version__} sees no CUDA GPU", file=sys.stderr)
        return 2
    long = args.long if args.long is not None else (-1 if device.startswith("cuda") else 0)  # -1: the longest
    ratios = args.ratios if args.ratios is not None else device.startswith("cuda")
    min_ind = (
        args.min_induction
        if args.min_induction is not None
        else (0.4 if args.model == headscope.DEFAULT_MODEL else None)
    )
    env = f"torch {torch.__version__}"
    if torch.cuda.is_available():
        env += f", CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    print(f"gpu_check: {args.model} on {args.device_map or device} ({env})")

    failures: list[str] = []
    report: dict = {"model": args.model, "device": device, "device_map": args.device_map, "env": env, "runs": {}}

    def check(ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    results = {}
    for dtype in args.dtypes.split(","):
        try:
            _peak_reset(device)
            t0 = time.perf_counter()
            model = headscope.load_model(args.model, device=device, dtype=dtype, device_map=args.device_map)
            _sync(device)
            t_load = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = headscope.scan_induction(
                model, seq_len=args.seq_len, batch=args.batch, ablate=not args.no_ablate, progress=False
            )
            _sync(device)
            t_scan = time.perf_counter() - t0
        except (HeadscopeError, RuntimeError) as exc:
            check(False, f"{dtype}: {type(exc).__name__}: {exc}")
            continue
        results[dtype] = res
        top = ", ".join(f"L{l}H{h} {v:.3f}" for l, h, v in res.top_heads("induction", 5))
        timings = ", ".join(f"{k} {v:.2f} s" for k, v in res.timings.items())
        peak = _peak(device)
        print(
            f"{dtype}: loaded in {t_load:.2f} s on {model.cfg.device}; scan {t_scan:.2f} s ({timings})"
            + (f"; peak GPU memory {peak:.2f} GiB" if peak is not None else "")
        )
        print(f"  top induction heads: {top}")
        print(f"  loss: first repeat {res.loss_first_repeat:.2f}, later repeats {res.loss_later_repeats:.2f} nats")
        report["runs"][dtype] = {
            "load_s": t_load,
            "scan_s": t_scan,
            "timings": res.timings,
            "peak_gib": peak,
            "top_heads": res.top_heads("induction", 5),
            "loss_later": res.loss_later_repeats,
            "loss_first": res.loss_first_repeat,
            "chunk_size": res.settings["chunk_size"],
        }
        finite = all(np.isfinite(a).all() for a in res.scores.values()) and np.isfinite(res.per_position_loss).all()
        check(finite, f"{dtype}: every score and loss is finite")
        check(res.loss_later_repeats < res.loss_first_repeat, f"{dtype}: later repeats are easier than the first")
        if min_ind is not None:
            check(res.top_heads("induction", 1)[0][2] >= min_ind, f"{dtype}: top induction score >= {min_ind}")
        del model

    if "float32" in results:
        ref = results["float32"]
        for dtype, res in results.items():
            if dtype == "float32":
                continue
            diff = max(
                float(np.abs(res.scores[k] - ref.scores[k]).max())
                for k in ("induction", "previous_token", "duplicate_token", "prefix_matching")
            )
            same_top = res.top_heads("induction", 1)[0][:2] in [h[:2] for h in ref.top_heads("induction", 3)]
            report["runs"][dtype]["max_score_diff_vs_float32"] = diff
            check(diff <= args.tolerance, f"{dtype}: scores within {args.tolerance} of float32 (max diff {diff:.4f})")
            check(same_top, f"{dtype}: its top induction head is among float32's top 3")

    # the fused path against the eager one on this device (float32, the run's own settings)
    try:
        model = headscope.load_model(args.model, device=device, device_map=args.device_map)
        runs = {}
        for attention in ("eager", "fused"):
            t0 = time.perf_counter()
            runs[attention] = headscope.scan_induction(
                model,
                seq_len=args.seq_len,
                batch=args.batch,
                sample=False,
                ablate=not args.no_ablate,
                progress=False,
                attention=attention,
            )
            _sync(device)
            print(f"{attention}: scan {time.perf_counter() - t0:.2f} s ({runs[attention].settings['attention']})")
        diff = max(float(np.abs(runs["fused"].scores[k] - runs["eager"].scores[k]).max()) for k in runs["eager"].scores)
        abl = max(
            (abs(a["loss"] - b["loss"]) for a, b in zip(runs["fused"].ablation, runs["eager"].ablation, strict=True)),
            default=0.0,
        )
        report["fused_vs_eager"] = {
            "max_score_diff": diff,
            "max_ablation_loss_diff": abl,
            "max_loss_diff": float(np.abs(runs["fused"].per_position_loss - runs["eager"].per_position_loss).max()),
        }
        check(runs["fused"].settings["attention"] == "fused", "the fused path runs on this device")
        check(diff <= 1e-5, f"fused and eager scores within 1e-5 (max diff {diff:.2e}; ablation losses {abl:.2e})")
        del model, runs
        _free(device)
    except (HeadscopeError, RuntimeError) as exc:
        check(False, f"fused vs eager: {type(exc).__name__}: {exc}")

    if ratios:
        try:
            report["ratios"] = fused_ratios(args.model, device, args.reps)
        except (HeadscopeError, RuntimeError) as exc:
            check(False, f"ratios: {type(exc).__name__}: {exc}")
        try:
            report["floor"] = floor_aims(args.model, device, args.reps, memory=args.floor_memory)
        except (HeadscopeError, RuntimeError) as exc:
            check(False, f"floor aims: {type(exc).__name__}: {exc}")

    if long:
        model = headscope.load_model(args.model, device=device, device_map=args.device_map)
        seq_len = long if long > 0 else (model.n_ctx - 1) // 2
        while seq_len >= 1:
            try:
                _peak_reset(device)
                base = torch.cuda.memory_allocated() / 2**30 if device.startswith("cuda") else None
                t0 = time.perf_counter()
                res = headscope.scan_induction(
                    model, seq_len=seq_len, batch=1, ablate=False, sample=False, progress=False
                )
                _sync(device)
                t_long = time.perf_counter() - t0
            except torch.OutOfMemoryError:
                print(f"long: seq-len {seq_len} does not fit; halving")
                _free(device)
                if long > 0:
                    check(False, f"long run: seq-len {seq_len} does not fit")
                    break
                seq_len //= 2
                continue
            except (HeadscopeError, RuntimeError) as exc:
                check(False, f"long run: {type(exc).__name__}: {exc}")
                break
            peak = _peak(device)
            l, h, v = res.top_heads("induction", 1)[0]
            which = "the longest that fits" if long < 0 else "as asked"
            print(
                f"long: seq-len {seq_len} ({res.settings['n_tokens']} tokens), {which}, batch 1, float32, "
                f"{res.settings['attention']} attention: {t_long:.2f} s, "
                f"top L{l}H{h} {v:.3f}, later-repeat loss {res.loss_later_repeats:.2f}"
                + (f"; peak GPU memory {peak:.2f} GiB ({peak - base:.2f} above the model)" if peak is not None else "")
            )
            report["long"] = {
                "seq_len": seq_len,
                "n_tokens": res.settings["n_tokens"],
                "s": t_long,
                "peak_gib": peak,
                "model_gib": base,
                "attention": res.settings["attention"],
            }
            check(bool(np.isfinite(res.scores["induction"]).all()), f"long: seq-len {seq_len} scores are finite")
            break

    if args.json:
        with open(args.json, "w") as f:
            json.dump({**report, "failures": failures}, f, indent=1, default=str)
    print(f"gpu_check: {'FAILED: ' + '; '.join(failures) if failures else 'all checks passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
