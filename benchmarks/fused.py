"""The fused scan vs the eager scan vs a plain sdpa forward (and TransformerLens), side by side in one process.

On the same token ids ([BOS] + r + r, r = SEQ_LEN random ordinary tokens, BATCH sequences):

- ``hf_sdpa``: ``AutoModelForCausalLM.from_pretrained(<cached dir>, attn_implementation="sdpa")``,
  ``model(tokens).logits`` under ``torch.no_grad()``: the floor;
- ``scan_eager`` / ``scan_fused``: the public call ``scan_induction(model, ablate=False,
  sample=False, attention=...)``: every registry score (attention scores, direct logit effects,
  copying from the per-model cache) and the per-position loss, through hooks on the full
  pattern (eager) or through the fused kernel, reading q, k and the row logsumexp (fused);
- ``--ablation``: the causal check of ``--top`` heads with one random control draw (each top
  head, all of them, one control: top + 2 passes), ``ablate_full`` as before issue 10
  (``ablated_later_loss``: full eager passes from the embedding) and ``ablate_restart`` as before
  issue 19 (``ablated_later_loss_restart``: fused passes restarted from the clean residual at the
  first ablated layer, the residuals kept from the clean pass); ``ablate_check``: the check as
  ``scan_induction`` runs it now (:func:`headscope.scan.causal.causal_check`: top + 1 + 10
  control draws, restarted, with per-sequence losses and bootstrap intervals);
- ``--tl``: ``tl_detect_head``, TransformerLens 4.3 ``detect_head(model, prompts, name)`` for
  previous_token_head, duplicate_token_head and induction_head as documented (one
  ``run_with_cache`` per prompt and pattern), on the same ids (``model.to_tokens`` replaced by
  a lookup for this benchmark, see benchmarks/speed.py); only time is compared (its "mul"
  measure is another number).

Rounds are interleaved (A B C A B C ...), after one warm-up call of each; medians reported.
``--memory`` also runs each of hf_sdpa / scan_eager / scan_fused once in a fresh process
(RSS sampled every 2 ms, peak above the RSS after loading; CUDA: the allocator's peak above the
model) so allocator reuse between modes does not hide a peak.

    python benchmarks/fused.py --seq-len 50 --batch 10 --reps 5 --ablation --tl        # 10 x 101 tokens
    python benchmarks/fused.py --seq-len 512 --batch 2 --reps 3 --tl --modes scan_fused  # 2 x 1,025 tokens
    python benchmarks/fused.py --seq-len 2048 --batch 1 --reps 3 --memory                # 1 x 4,097 tokens
    python benchmarks/fused.py --seq-len 4095 --batch 1 --reps 1 --memory --modes hf_sdpa scan_fused  # 8,191
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
from _bench import emit, interleaved, load_average, machine, median, say, set_threads, sync  # noqa: E402

MODES = ("hf_sdpa", "scan_eager", "scan_fused")
HEADS = ("previous_token_head", "duplicate_token_head", "induction_head")


def build(args):
    """Load the model (and the plain HF model) and the tokens once; return ({mode: callable}, tokens)."""
    from transformers import AutoModelForCausalLM

    import headscope
    from headscope.models.loading import resolve_source
    from headscope.scan import ablation as A
    from headscope.scan import fused as F
    from headscope.scan.causal import causal_check, control_heads
    from headscope.scan.induction_scan import (
        ablated_later_loss,
        scan_induction,
        score_pass,
        weight_score_arrays,
    )
    from headscope.scan.sequences import repeated_tokens

    device = args.device
    model = headscope.load_model(args.model, device=device)
    if not F.fused_supported(model):
        raise SystemExit(f"fused path unavailable: {F.fused_unsupported_reason(model)}")
    rt = repeated_tokens(model, seq_len=args.seq_len, batch=args.batch, repeats=2, seed=0)
    weight_score_arrays(model)  # the per-model cache a loaded model fills on its first scan
    kw = dict(seq_len=args.seq_len, batch=args.batch, seed=0, ablate=False, sample=False, progress=False)
    fns = {}
    if "hf_sdpa" in args.modes:
        hf = (
            AutoModelForCausalLM.from_pretrained(
                resolve_source(args.model).path, attn_implementation="sdpa", dtype=torch.float32
            )
            .to(device)
            .eval()
        )
        tokens = rt.tokens.to(device)

        @torch.no_grad()
        def hf_sdpa():
            return hf(tokens, use_cache=False).logits.shape

        fns["hf_sdpa"] = hf_sdpa
    if "scan_eager" in args.modes:
        fns["scan_eager"] = lambda: scan_induction(model, attention="eager", **kw)
    if "scan_fused" in args.modes:
        fns["scan_fused"] = lambda: scan_induction(model, attention="fused", **kw)
    if args.ablation:
        chunk = args.batch
        scan = score_pass(model, rt, chunk, keep_z_mean=True, attention="fused", keep_residuals=range(model.n_layers))
        from headscope.head_labels import top_k

        top = [(l, h) for l, h, _ in top_k(scan.means["induction"], args.top)]
        plan = [[h] for h in top] + [top, control_heads(model.n_layers, model.n_heads, top, 0)]
        fns["ablate_full"] = lambda: [ablated_later_loss(model, rt, heads, chunk, scan.z_mean) for heads in plan]
        fns["ablate_restart"] = lambda: [
            A.ablated_later_loss_restart(model, rt, heads, chunk, scan.z_mean, scan.residuals, fused=True)
            for heads in plan
        ]
        fns["ablate_check"] = lambda: causal_check(
            model,
            rt,
            top,
            (scan.later_by_sequence, scan.first_by_sequence),
            ablation="mean",
            z_mean=scan.z_mean,
            residuals=scan.residuals,
            chunk=chunk,
            fused=True,
        )
    if args.tl:
        from transformer_lens.head_detector import detect_head

        prompts = [f"seq{i}" for i in range(args.batch)]
        by_key = {k: rt.tokens[i : i + 1].to(device) for i, k in enumerate(prompts)}
        bridge = model.bridge
        bridge.to_tokens = lambda text, *a, **k: (
            by_key[text] if isinstance(text, str) else torch.cat([by_key[t] for t in text])
        )
        fns["tl_detect_head"] = lambda: [detect_head(bridge, prompts, name) for name in HEADS]
    return fns, rt


def one_memory(args) -> dict:
    """Run ``args.one`` once in this (fresh) process and report its peak memory above the model."""
    from memory import RssSampler

    args.modes, args.ablation, args.tl = [args.one], False, False
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
    p.add_argument("--model", default="smollm2-135m-instruct-q4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--ablation", action="store_true", help="also time the causal check, full vs restarted")
    p.add_argument("--top", type=int, default=5, help="heads the causal check ablates")
    p.add_argument("--tl", action="store_true", help="also time TransformerLens detect_head x 3 patterns")
    p.add_argument("--memory", action="store_true", help="peak memory of each mode, each in a fresh process")
    p.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # internal: one memory run
    args = p.parse_args(argv)
    threads = set_threads(args.threads)

    if args.one:
        rec = one_memory(args)
        print("MEMORY " + json.dumps(rec), flush=True)
        return rec

    say(
        f"fused: {args.model} on {args.device}, {args.batch} x {2 * args.seq_len + 1} tokens, {threads} threads; "
        f"load average {load_average()}"
    )
    fns, rt = build(args)
    for fn in fns.values():  # warm-up
        fn()
    times, others = interleaved(fns, args.reps, args.device, log=say)
    med = {name: median(ts) for name, ts in times.items()}
    record = {
        "section": "fused",
        "model": args.model,
        "device": args.device,
        "threads": threads,
        "seq_len": args.seq_len,
        "batch": args.batch,
        "n_tokens": rt.layout.n_tokens,
        "reps": args.reps,
        "median_s": med,
        "times_s": times,
        "others_cpu_share": others,
        "machine": machine(),
    }
    if "hf_sdpa" in med:
        record["ratio_to_hf_sdpa"] = {k: v / med["hf_sdpa"] for k, v in med.items()}
    if "ablate_full" in med:
        record["ablation_restart_over_full"] = med["ablate_restart"] / med["ablate_full"]
    if "tl_detect_head" in med:
        record["tl_detect_head_over_scan"] = {
            k: med["tl_detect_head"] / med[k] for k in ("scan_eager", "scan_fused") if k in med
        }
    if args.memory:
        mem = {}
        for mode in args.modes:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                mode,
                "--model",
                args.model,
                "--device",
                args.device,
                "--threads",
                str(threads),
                "--seq-len",
                str(args.seq_len),
                "--batch",
                str(args.batch),
            ]
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
