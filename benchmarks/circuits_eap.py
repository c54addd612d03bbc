"""Edge attribution over every edge of SmolLM2: EAP-IG (and EAP) time and peak memory on the induction task.

On ``induction_task(model, 10, 50)`` (10 sequences x 101 tokens), SmolLM2-135M has 301 senders
(the embeddings, 270 heads, 30 MLPs), 481 receivers (270 query inputs, 90 key and 90 value
inputs of the key/value heads, 30 MLP inputs, the logits) and 70,651 edges. One call of
``edge_attribution(model, task, method, ig_steps)`` scores them all: two forward passes without
gradients (clean, corrupted) and ``ig_steps`` forward + backward passes (EAP: one).

Printed and emitted per method: wall seconds, CPU seconds of this process (``time.process_time``:
what the work costs whatever else runs), the CPU share other processes took meanwhile, the load
average before and after, and the peak RSS above the loaded model (sampled every 10 ms); with
``--max-memory`` the examples go through in chunks sized to it (``circuits.eap.chunk_for``).
Aim (issue 20): EAP-IG over every edge in under 2 minutes on a 2-core CPU.

    python benchmarks/circuits_eap.py --threads 2
    python benchmarks/circuits_eap.py --threads 1 --methods eap-ig --max-memory 2   # 2 sequences a pass
    python benchmarks/run.py --sections eap      # registered by SUITE below (not in the default set)
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from _bench import emit, load_average, machine, say, set_threads, timed  # noqa: E402

SUITE = {
    "section": "eap",
    "runs": [[], ["--methods", "eap-ig", "--max-memory", "2"]],
    "quick_runs": [["--methods", "eap"]],
    "default": False,
}
"""How ``benchmarks/run.py`` runs this script (see run.py): not in its default set; ``--sections eap`` or ``all``."""
#: Issue 20, item 10: EAP-IG over every edge of SmolLM2, 10 x 101 tokens, in under 2 minutes.
AIM_S = 120.0


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_during(fn) -> tuple[object, int]:
    """Run ``fn``; return its value and the highest RSS seen meanwhile (sampled every 10 ms)."""
    peak, done = [rss()], threading.Event()

    def watch():
        while not done.wait(0.01):
            peak[0] = max(peak[0], rss())

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        out = fn()
    finally:
        done.set()
        t.join()
    return out, peak[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct-q4")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--examples", type=int, default=10)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--ig-steps", type=int, default=5)
    p.add_argument("--methods", default="eap-ig,eap")
    p.add_argument("--max-memory", type=float, default=None, help="GiB: examples in chunks (default: all at once)")
    args = p.parse_args(argv)
    set_threads(args.threads)
    import headscope
    from headscope.circuits import edge_attribution, induction_task

    info = machine()
    say(f"edge attribution benchmark: {info['cpu']}, {info['torch_threads']} threads, load {info['load_average']}")
    model = headscope.load_model(args.model, device=args.device)
    task = induction_task(model, n_examples=args.examples, seq_len=args.seq_len)
    base = rss()
    for method in args.methods.split(","):
        before = [round(x, 2) for x in load_average()]
        c0 = time.process_time()
        holder: dict = {}
        (t, others) = timed(
            lambda m=method: holder.update(
                peak=peak_rss_during(
                    lambda: edge_attribution(
                        model, task, method=m, ig_steps=args.ig_steps, max_memory_gb=args.max_memory
                    )
                )
            ),
            args.device,
        )
        res, peak = holder["peak"]
        cpu = time.process_time() - c0
        rec = {
            "section": "eap",
            "device": args.device,
            "model": args.model,
            "method": method,
            "ig_steps": args.ig_steps if method == "eap-ig" else None,
            "n_examples": task.n_examples,
            "n_tokens": int(task.clean.shape[1]),
            "n_edges": res.n_edges,
            "wall_s": round(t, 2),
            "cpu_s": round(cpu, 2),
            "others_cpu_share": others,
            "load_before": before,
            "load_after": [round(x, 2) for x in load_average()],
            "peak_rss_above_model_gib": round((peak - base) / 2**30, 2),
            "threads": info["torch_threads"],
            "max_memory_gb": args.max_memory,
            "top_edge": list(res.top(1)[0][:2]),
        }
        if method == "eap-ig":
            what = f"EAP-IG ({args.ig_steps} steps) over {res.n_edges} edges, {task.n_examples} x {rec['n_tokens']} tokens, s"
            rec["aims"] = [
                {"item": 20, "what": what, "aim": f"< {AIM_S:.0f}", "limit": AIM_S, "measured": round(t, 1),
                 "cpu_measured": round(cpu, 1), "met": t < AIM_S}
            ]  # fmt: skip
        say(
            f"  {method}: {res.n_edges} edges in {t:.1f} s wall, {cpu:.1f} s CPU (others took {others}), "
            f"load {before} -> {rec['load_after']}, peak RSS +{rec['peak_rss_above_model_gib']} GiB"
        )
        emit(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
