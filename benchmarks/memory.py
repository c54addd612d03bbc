"""Peak memory of one long-sequence run, measured in this process (run it in a fresh one).

``--what scan`` runs ``scan_induction(seq_len=L, batch=1, ablate=False, sample=False)``
([BOS] + r + r: 2L + 1 tokens); ``--what scan-full`` adds the causal check (top_k + 2 more
passes); ``--what hf-eager`` / ``hf-sdpa`` run one plain ``transformers`` forward pass of the
same tokens, for comparison (a forward pass alone already holds the logits, n x vocab
floats, and with eager attention one layer's n x n scores and pattern per head).

Memory is the process's resident set (RSS): sampled every 2 ms by a thread during the run
(peak above the RSS just before it, i.e. above the loaded model), and ``ru_maxrss`` (the
kernel's lifetime peak) before and after. On CUDA it is ``torch.cuda.max_memory_allocated``
above the allocation after loading.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _bench import _busy_jiffies, emit, load_average, others_share, say, set_threads, sync  # noqa: E402

GiB = 2**30


class RssSampler:
    """Peak RSS of this process while the ``with`` block runs, sampled every ``every`` seconds."""

    def __init__(self, every: float = 0.002):
        import psutil

        self.proc = psutil.Process()
        self.every = every
        self.peak = 0
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.every)

    def __enter__(self):
        self.start = self.proc.memory_info().rss
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct-q4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--what", default="scan", choices=("scan", "scan-full", "hf-eager", "hf-sdpa"))
    p.add_argument("--max-memory", type=float, default=None, help="scan's --max-memory (GiB)")
    args = p.parse_args(argv)

    import headscope
    from headscope.models.loading import resolve_source
    from headscope.scan.induction_scan import scan_induction
    from headscope.scan.sequences import repeated_tokens

    threads = set_threads(args.threads)
    device = args.device
    cuda = device.startswith("cuda")
    say(
        f"memory: {args.what} {args.model} on {device}, seq-len {args.seq_len}, batch 1, {threads} threads; "
        f"load average {load_average()}"
    )
    t0 = time.perf_counter()
    bridge = headscope.load_model(args.model, device=device)
    rt = repeated_tokens(bridge, seq_len=args.seq_len, batch=1, repeats=2, seed=0)
    if args.what.startswith("hf"):
        from transformers import AutoModelForCausalLM

        path = resolve_source(args.model).path
        del bridge
        model = (
            AutoModelForCausalLM.from_pretrained(path, attn_implementation=args.what[3:], dtype=torch.float32)
            .to(device)
            .eval()
        )

        @torch.no_grad()
        def run():
            return model(rt.tokens.to(device)).logits.shape
    else:
        model = bridge

        def run():
            return scan_induction(
                model,
                seq_len=args.seq_len,
                batch=1,
                ablate=args.what == "scan-full",
                sample=False,
                progress=False,
                max_memory_gb=args.max_memory,
            )

    gc.collect()
    load_s = time.perf_counter() - t0
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    maxrss_loaded = maxrss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    busy, me = _busy_jiffies(), sum(os.times()[:2])
    t0 = time.perf_counter()
    with RssSampler() as rss:
        out = run()
        sync(device)
    run_s = time.perf_counter() - t0
    others = others_share(busy, me, run_s)
    record = {
        "section": "memory",
        "what": args.what,
        "device": device,
        "threads": threads,
        "seq_len": args.seq_len,
        "n_tokens": rt.layout.n_tokens,
        "batch": 1,
        "load_s": load_s,
        "run_s": run_s,
        "param_bytes": params,
        "rss_before_run": rss.start,
        "rss_peak_run": rss.peak,
        "rss_peak_above_model": rss.peak - rss.start,
        "maxrss_after_load": maxrss_loaded,
        "maxrss_after_run": maxrss(),
        "others_cpu_share": others,
        "load_average_end": load_average(),
    }
    if cuda:
        record.update(
            cuda_base=base_cuda,
            cuda_peak=torch.cuda.max_memory_allocated(),
            cuda_peak_above_model=torch.cuda.max_memory_allocated() - base_cuda,
        )
    if not args.what.startswith("hf"):
        record.update(
            chunk_size=out.settings["chunk_size"],
            max_memory_gb=out.settings["max_memory_gb"],
            top_head=out.top_heads("induction", 1)[0],
            loss_later_repeats=out.loss_later_repeats,
            scan_s=out.timings.get("scan_s"),
        )
    say(
        f"  {args.what}: {run_s:.1f} s, RSS {rss.start / GiB:.2f} GiB before, peak {rss.peak / GiB:.2f} GiB "
        f"(+{(rss.peak - rss.start) / GiB:.2f} GiB above the loaded model)"
    )
    emit(record)
    return record


if __name__ == "__main__":
    main()
