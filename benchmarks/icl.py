"""The in-context learning check of ``headscope heads``: its two routes side by side.

``icl_score`` on SmolLM2 with the three heads ``heads`` ablates by default (L18H6, L17H3, L17H4),
``--windows`` windows of 512 tokens, timed two ways in interleaved rounds after one warm-up:

- ``sliced``: the route every model takes whose logits are its unembedding of the final norm's
  output: clean losses reduced a vocabulary slice at a time, ablated passes unembedding the two
  scored positions only;
- ``full_logits``: the fallback for models that change their logits after the unembedding
  (soft-capping, scaling): each pass's full ``[chunk, n, vocab]`` logits, as every model took
  before. Both routes give the same numbers (``tests/test_kinds.py``).

    python benchmarks/icl.py --windows 24 --reps 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _bench import emit, load_average, machine, say, set_threads  # noqa: E402

SUITE = {
    "section": "icl",
    "runs": [["--windows", "24", "--reps", "2"]],
    "quick_runs": [["--windows", "2", "--reps", "1"]],
    "default": False,
}
"""How ``benchmarks/run.py`` runs this script (``--sections icl`` or ``all``)."""

HEADS = [(18, 6), (17, 3), (17, 4)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct-q4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--windows", type=int, default=24)
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args(argv)
    threads = set_threads(args.threads)

    import headscope
    import headscope.kinds.icl as icl

    model = headscope.load_model(args.model, device=args.device)
    heads = [(l, h) for l, h in HEADS if l < model.cfg.n_layers and h < model.cfg.n_heads] or [(0, 0)]
    say(f"icl: {args.model}, {args.windows} windows, heads {heads}, {threads} threads; load {load_average()}")
    sliced_ok = icl.normed_route_ok

    def run(route: str):
        icl.normed_route_ok = sliced_ok if route == "sliced" else (lambda model: False)
        try:
            return icl.icl_score(model, heads=heads, max_windows=args.windows)
        finally:
            icl.normed_route_ok = sliced_ok

    routes = ("full_logits", "sliced")
    results = {r: run(r) for r in routes}  # warm-up, and the numbers each route gives
    wall: dict[str, list[float]] = {r: [] for r in routes}
    parts: dict[str, list[dict]] = {r: [] for r in routes}
    for rep in range(args.reps):
        for r in routes:
            t0 = time.perf_counter()
            res = run(r)
            wall[r].append(time.perf_counter() - t0)
            parts[r].append(dict(res.timings))
            say(f"  round {rep + 1}: {r} {wall[r][-1]:.1f} s ({res.timings}) load {load_average()[0]:.2f}")
    med = {r: statistics.median(v) for r, v in wall.items()}
    part_med = {r: {k: statistics.median(t[k] for t in parts[r]) for k in parts[r][0]} for r in routes}
    diff = max(
        abs(results["sliced"].icl_score - results["full_logits"].icl_score),
        *(abs(a["delta"] - b["delta"]) for a, b in zip(results["sliced"].ablations, results["full_logits"].ablations)),
    )
    for r in routes:
        say(
            f"  {r}: {med[r]:.1f} s, clean {part_med[r]['icl_clean_s']:.1f} s, ablated {part_med[r]['icl_ablation_s']:.1f} s"
        )
    say(
        f"  sliced / full logits: {med['sliced'] / med['full_logits']:.2f}; largest difference in score or delta {diff:.1e} nats"
    )
    rec = {
        "section": "icl",
        "model": args.model,
        "windows": args.windows,
        "heads": heads,
        "threads": threads,
        "wall_s": wall,
        "median_s": med,
        "parts_median_s": part_med,
        "ratio": med["sliced"] / med["full_logits"],
        "max_abs_diff": diff,
        "machine": machine(),
    }
    emit(rec)
    return rec


if __name__ == "__main__":
    main()
