"""What every score of the registry costs the scan: attention scores only vs all scores on, side by side.

On the same [BOS] + r + r sequences (BATCH x SEQ_LEN random ordinary tokens), interleaved rounds:

- ``pass_attention_only``: the scan's forward pass (``score_pass``) reducing only the four
  original attention scores (induction, prefix matching, previous token, duplicate token): the
  scan before issue 12;
- ``pass_all``: the same pass with every attention score (the attention sink too) and the
  direct-logit reductions of the registry;
- ``scan_all_cached``: ``scan_induction(ablate=False, sample=False)``, every score on, the weight
  scores read back from the on-disk cache (the in-memory cache on the model cleared each round):
  what a second run on the same weights costs.

Then, once (``--first``): each weight score computed from scratch (``head_weights`` first, then
each declaration's ``from_weights``), i.e. what the first run on new weights adds, once per model.

Rounds are interleaved (A B C A B C ...) after one warm-up call of each; medians reported, with the
share of the CPU other processes took meanwhile (this machine is shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from unittest import mock

sys.path.insert(0, os.path.dirname(__file__))
from _bench import emit, interleaved, load_average, machine, median, say, set_threads  # noqa: E402

ORIGINAL = ("induction", "prefix_matching", "previous_token", "duplicate_token")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct-q4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--reps", type=int, default=5, help="interleaved rounds")
    p.add_argument("--first", action="store_true", help="also time each weight score's first computation")
    args = p.parse_args(argv)

    import headscope
    from headscope.folded_weights import head_weights
    from headscope.models.embedding import weight_inputs
    from headscope.scan import induction_scan as I
    from headscope.scan.sequences import repeated_tokens
    from headscope.scores import attention_scores, weight_scores

    threads = set_threads(args.threads)
    say(
        f"scores_cost: {args.model} on {args.device}, {threads} threads, batch {args.batch} x seq-len "
        f"{args.seq_len}; load average at start {load_average()}"
    )
    model = headscope.load_model(args.model, device=args.device)
    rt = repeated_tokens(model, seq_len=args.seq_len, batch=args.batch, repeats=2, seed=0)
    chunk = I.chunk_size_for(rt.layout.n_tokens, model.cfg.n_heads, model.cfg.d_vocab, args.batch, 2.0)
    I.weight_score_arrays(model)  # fill the disk cache, so scan_all_cached reads it back

    def attention_only():
        only = [s for s in attention_scores() if s.name in ORIGINAL]
        with mock.patch.object(I, "attention_scores", lambda: only), mock.patch.object(I, "pass_scores", lambda: []):
            I.score_pass(model, rt, chunk)

    def scan_cached():
        model.cache.pop("weight_scores", None)  # the disk cache stays: a second run on the same weights
        I.scan_induction(model, seq_len=args.seq_len, batch=args.batch, ablate=False, sample=False, progress=False)

    fns = {
        "pass_attention_only": attention_only,
        "pass_all": lambda: I.score_pass(model, rt, chunk),
        "scan_all_cached": scan_cached,
    }
    times, others = interleaved(fns, args.reps, args.device, log=say)
    record: dict = {
        "benchmark": "scores_cost",
        "model": args.model,
        "device": args.device,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "reps": args.reps,
        "machine": machine(),
        "median_s": {k: round(median(v), 4) for k, v in times.items()},
        "times_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "others_cpu_share": others,
    }
    base = record["median_s"]["pass_attention_only"]
    record["ratio_to_attention_only"] = {k: round(v / base, 3) for k, v in record["median_s"].items()}
    if args.first:
        first: dict[str, float] = {}
        t0 = time.perf_counter()
        w = head_weights(model)
        first["head_weights"] = time.perf_counter() - t0
        inputs = weight_inputs(model)
        for decl in weight_scores():
            t0 = time.perf_counter()
            decl.from_weights(w, inputs)
            first[decl.name] = time.perf_counter() - t0
        record["weight_scores_first_s"] = {k: round(v, 3) for k, v in first.items()}
        record["weight_scores_first_total_s"] = round(sum(first.values()), 3)
    record["load_average_end"] = list(load_average())
    for k, v in record["median_s"].items():
        say(f"  {k:22s} {v:8.3f} s  ({record['ratio_to_attention_only'][k]:.2f}x attention only)")
    for k, v in record.get("weight_scores_first_s", {}).items():
        say(f"  first {k:16s} {v:8.3f} s")
    emit(record)
    return record


if __name__ == "__main__":
    main()
