"""The fused scan vs the eager-hook scan vs a plain sdpa forward, side by side in one process.

On the same token ids ([BOS] + r + r, r = SEQ_LEN random ordinary tokens, BATCH sequences):

- ``hf_sdpa``: ``AutoModelForCausalLM.from_pretrained(<cached dir>, attn_implementation="sdpa")``,
  ``model(tokens).logits`` under ``torch.no_grad()``: the floor;
- ``eager_scan``: ``induction.score_pass``, the scan today (hooks on ``hook_pattern``);
- ``fused_scan``: ``fused.fused_score_pass``, the same four scores and per-position loss through
  the fused kernel (q, k and the row logsumexp per layer, no n x n tensor);
- ``ablate_full`` / ``ablate_restart`` (``--ablation``): one mean-ablation pass of the head
  ``--ablate-head`` (default: the middle layer's head 0) as today (full eager pass from the
  embedding) and restarted from the clean residual at that layer through the fused kernel.

Rounds are interleaved (A B C A B C ...), after one warm-up call of each; medians reported.
``--memory`` also runs each of hf_sdpa / eager_scan / fused_scan once in a fresh process
(``memory``: RSS sampled every 2 ms, peak above the RSS after loading; CUDA: the allocator's
peak above the model) so allocator reuse between modes does not hide a peak.

    python benchmarks/fused.py --seq-len 50 --batch 10 --reps 5             # 10 x 101 tokens
    python benchmarks/fused.py --seq-len 2048 --batch 1 --reps 3 --memory   # 1 x 4,097 tokens
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _bench import (
    emit,
    interleaved,
    load_average,
    machine,
    median,
    say,
    set_threads,
    sync,
)

GiB = 2**30
MODES = ("hf_sdpa", "eager_scan", "fused_scan")


def build(args):
    """Load the bridge, the plain HF model and the tokens once; return {mode: callable}."""
    from transformers import AutoModelForCausalLM

    import headscope
    from headscope.models.loading import resolve_source
    from headscope.scan import ablation as A
    from headscope.scan import fused as F
    from headscope.scan.induction import ablated_later_loss, score_pass
    from headscope.scan.sequences import repeated_tokens

    device = args.device
    bridge = headscope.load_model(args.model, device=device)
    if not F.fused_supported(bridge):
        raise SystemExit(f"fused path unavailable: {F.fused_unsupported_reason(bridge)}")
    rt = repeated_tokens(bridge, seq_len=args.seq_len, batch=args.batch, repeats=2, seed=0)
    chunk = args.batch
    fns = {}
    if "hf_sdpa" in args.modes:
        hf = AutoModelForCausalLM.from_pretrained(resolve_source(args.model).path, attn_implementation="sdpa",
                                                  dtype=torch.float32).to(device).eval()
        tokens = rt.tokens.to(device)

        @torch.no_grad()
        def hf_sdpa():
            return hf(tokens).logits.shape

        fns["hf_sdpa"] = hf_sdpa
    if "eager_scan" in args.modes:
        fns["eager_scan"] = lambda: score_pass(bridge, rt, chunk)
    if "fused_scan" in args.modes:
        fns["fused_scan"] = lambda: F.fused_score_pass(bridge, rt, chunk)
    if args.ablation:
        layer = args.ablate_layer if args.ablate_layer is not None else bridge.cfg.n_layers // 2
        heads = [(layer, 0)]
        _, _, z_mean, resid = F.fused_score_pass(bridge, rt, chunk, keep_z_mean=True, keep_residuals=[layer])
        fns["ablate_full"] = lambda: ablated_later_loss(bridge, rt, heads, chunk, z_mean)
        fns["ablate_restart"] = lambda: A.ablated_later_loss_restart(bridge, rt, heads, chunk, z_mean, resid)
    return fns, rt


def one_memory(args) -> dict:
    """Run ``args.one`` once in this (fresh) process and report its peak memory above the model."""
    sys.path.insert(0, os.path.dirname(__file__))
    from memory import RssSampler

    args.modes = [args.one]
    fns, _ = build(args)
    fn = fns[args.one]
    gc.collect()
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    with RssSampler() as rss:
        fn()
        sync(args.device)
    rec = {"mode": args.one, "run_s": time.perf_counter() - t0, "rss_peak_above_model": rss.peak - rss.start}
    if cuda:
        rec["cuda_peak_above_model"] = torch.cuda.max_memory_allocated() - base
    return rec


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--ablation", action="store_true", help="also time one ablation pass, full vs restarted")
    p.add_argument("--ablate-layer", type=int, default=None)
    p.add_argument("--memory", action="store_true", help="peak memory of each mode, each in a fresh process")
    p.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # internal: one memory run
    args = p.parse_args(argv)
    threads = set_threads(args.threads)

    if args.one:
        rec = one_memory(args)
        print("MEMORY " + json.dumps(rec), flush=True)
        return rec

    say(f"fused: {args.model} on {args.device}, {args.batch} x {2 * args.seq_len + 1} tokens, {threads} threads; "
        f"load average {load_average()}")
    fns, rt = build(args)
    for name, fn in fns.items():  # warm-up
        fn()
    times, others = interleaved(fns, args.reps, args.device, log=say)
    med = {name: median(ts) for name, ts in times.items()}
    record = {"section": "fused", "model": args.model, "device": args.device, "threads": threads,
              "seq_len": args.seq_len, "batch": args.batch, "n_tokens": rt.layout.n_tokens, "reps": args.reps,
              "median_s": med, "times_s": times, "others_cpu_share": others, "machine": machine()}
    if "hf_sdpa" in med:
        record["ratio_to_hf_sdpa"] = {k: v / med["hf_sdpa"] for k, v in med.items()}
    if "ablate_full" in med:
        record["ablation_restart_over_full"] = med["ablate_restart"] / med["ablate_full"]
    if args.memory:
        mem = {}
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--one", mode, "--model", args.model, "--device", args.device,
                   "--threads", str(threads), "--seq-len", str(args.seq_len), "--batch", str(args.batch)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = next((l for l in out.stdout.splitlines() if l.startswith("MEMORY ")), None)
            mem[mode] = json.loads(line[7:]) if line else {"error": out.stderr.strip().splitlines()[-1:]}
            say(f"  memory {mode}: {mem[mode]}")
        record["memory"] = mem
    for name, m in med.items():
        ratio = f" ({m / med['hf_sdpa']:.2f}x hf_sdpa)" if "hf_sdpa" in med else ""
        say(f"  {name}: median {m:.3f} s{ratio}")
    emit(record)
    return record


if __name__ == "__main__":
    main()
