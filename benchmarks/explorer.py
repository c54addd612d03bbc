"""The live explorer's response times (issue #21's aims), model warm, on the views the page asks for.

    python benchmarks/explorer.py --threads 2 --reps 5

What the page asks when a text is analysed is four calls: the text view (the one pass, the
scores table), the chosen head's view (its pattern and what it writes), its QK decomposition
and OV rows, and the position's logit view. Timed, each round on texts not seen before (no
cache hit):

- ``first_view_100``: those four calls on a ~100-token text (aim: within 1 s);
- ``head_switch``: the head view of another head on the same text (aim: within 100 ms);
- ``position_switch``: the head view and the logit view at another position (aim: 100 ms);
- ``qk_switch``: the QK decomposition and OV of the other head at the other position, which
  the page asks for beside the head view and draws when it comes (no aim in the issue); the
  other head is in the last layer, where the decomposition has the most components;
- ``first_view_1000``: the four calls on a ~1,000-token text (aim: within 5 s).

Wall time and this process's CPU time are both recorded, with the CPU share other processes
took meanwhile: on a shared machine the wall time is what a user waits, the CPU time what the
explorer costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import _busy_jiffies, emit, load_average, median, others_share, say, set_threads  # noqa: E402

SUITE = {"section": "explorer", "runs": [["--reps", "3"]], "quick_runs": [["--reps", "1"]]}
"""How ``benchmarks/run.py`` runs this script (one fresh process per entry; see run.py)."""

AIMS = {"first_view_100": 1.0, "head_switch": 0.1, "position_switch": 0.1, "qk_switch": None, "first_view_1000": 5.0}
WHAT = {
    "first_view_100": "explorer: first view of a 100-token text (s)",
    "head_switch": "explorer: head switch, pattern and what it writes (s)",
    "position_switch": "explorer: position switch, pattern and logit view (s)",
    "first_view_1000": "explorer: first view of a 1,000-token text (s)",
}


def texts(tokenizer, n_tokens: int, count: int, skip: int = 0) -> list[str]:
    """``count`` different pieces of CPython's pydoc text, each about ``n_tokens`` tokens."""
    from headscope.kinds.documents import pydoc_topics

    ids = tokenizer("\n\n".join(t for _, t in pydoc_topics()), add_special_tokens=False)["input_ids"]
    start = skip * n_tokens
    return [tokenizer.decode(ids[start + i * n_tokens : start + (i + 1) * n_tokens]) for i in range(count)]


def clock(fn) -> dict:
    busy, me = _busy_jiffies(), sum(os.times()[:2])
    cpu0, t0 = time.process_time(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    return {"wall": wall, "cpu": time.process_time() - cpu0, "others": others_share(busy, me, wall)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct-q4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    set_threads(args.threads)
    import headscope
    from headscope.explorer import Explorer

    say(f"explorer: {args.model} on {args.device}, {args.threads} threads; load average {load_average()}")
    m = headscope.load_model(args.model, device=args.device)
    ex = Explorer(m, max_tokens=1100)
    scan = ex.scan()
    top = scan.top_heads("induction", 1)[0]
    head_a = f"L{top[0]}H{top[1]}"
    head_b = f"L{m.n_layers - 1}H0"
    short = texts(m.tokenizer, 99, args.reps + 1)  # + the first token: 100
    long = texts(m.tokenizer, 999, args.reps + 1, skip=1)

    def first(text: str, pos: int) -> None:
        ex.text_view(text)
        ex.head_view(text, head_a, pos)
        ex.qk_view(text, head_a, pos)
        ex.position_view(text, pos)

    first(short[-1], 50)  # warm: allocator, thread pools, first-call costs
    times: dict[str, list[dict]] = {k: [] for k in AIMS}
    for r in range(args.reps):
        times["first_view_100"].append(clock(lambda: first(short[r], 60)))
        times["head_switch"].append(clock(lambda: ex.head_view(short[r], head_b, 60)))
        times["position_switch"].append(
            clock(lambda: (ex.head_view(short[r], head_b, 90), ex.position_view(short[r], 90)))
        )
        times["qk_switch"].append(clock(lambda: ex.qk_view(short[r], head_b, 90)))
        times["first_view_1000"].append(clock(lambda: first(long[r], 900)))
        n_long = ex.state(long[r]).n
        say(
            f"  round {r + 1}: "
            + ", ".join(f"{k} {v[-1]['wall']:.3f} s (cpu {v[-1]['cpu']:.3f} s)" for k, v in times.items())
            + f"; long text {n_long} tokens; load average {load_average()[0]:.2f}"
        )
    record = {
        "section": "explorer",
        "model": args.model,
        "device": args.device,
        "threads": args.threads,
        "heads": [head_a, head_b],
        "n_tokens": [ex.state(short[0]).n, ex.state(long[0]).n],
        "cache_mb_per_text": [round(ex.state(t).nbytes / 2**20, 1) for t in (short[0], long[0])],
        "median_s": {k: median([x["wall"] for x in v]) for k, v in times.items()},
        "median_cpu_s": {k: median([x["cpu"] for x in v]) for k, v in times.items()},
        "times_s": {k: [round(x["wall"], 4) for x in v] for k, v in times.items()},
        "others_cpu_share_max": max((x["others"] or 0) for v in times.values() for x in v),
        "aims_s": AIMS,
        "load_average_end": load_average(),
    }
    record["aims"] = [
        {
            "item": 21,
            "what": WHAT[k],
            "aim": f"<= {limit:g} s",
            "limit": limit,
            "measured": round(record["median_s"][k], 4),
            "cpu_measured": round(record["median_cpu_s"][k], 4),
            "met": record["median_s"][k] <= limit,
        }
        for k, limit in AIMS.items()
        if limit is not None
    ]
    emit(record)
    return record


if __name__ == "__main__":
    main()
