"""Speed, side by side in one process: headscope's scan vs the plain forward pass vs TransformerLens.

On the same token ids ([BOS] + r + r, r = SEQ_LEN random ordinary tokens, BATCH sequences):

- ``scan``: headscope's whole attention scan, ``score_pass`` (one hooked forward pass per
  chunk, four attention scores reduced in hooks, per-position loss from the logits);
- ``scan_induction``: ``scan_induction(ablate=False, sample=False)``, i.e. ``scan`` plus the
  copying score from the weights and the bookkeeping around it;
- ``hf_sdpa`` / ``hf_eager``: ``AutoModelForCausalLM.from_pretrained(<cached dir>)`` with
  that attention implementation, ``model(tokens).logits`` under ``torch.no_grad()``: the
  floor (the bridge forces eager attention, because sdpa never forms the pattern);
- ``bridge``: the TransformerBridge's own forward without hooks (what the scan runs on);
- ``tl_detect_head``: TransformerLens 4.3 ``detect_head(model, prompts, name)`` for
  previous_token_head, duplicate_token_head and induction_head, as documented: it takes a
  list of strings and loops per prompt, one ``run_with_cache`` (every activation cached)
  per prompt and pattern, so 3 x BATCH forward passes;
- ``tl_detect_head_cached``: the same, best case: one ``run_with_cache`` per prompt passed
  to the three calls through ``cache=``.

And the scan taken apart, to show where its time over the forward pass goes:
``bridge_scoring_hooks`` (the bridge's forward with the same four pattern reductions in
hooks, no loss), ``scan_loss`` (the scan's per-position loss, ``_token_losses``, on ready
logits) and, for the record, ``loss_cross_entropy_t`` (the same numbers the way the scan
computed them before commit c963b5f: ``F.cross_entropy`` on the ``[batch, vocab, pos]``
transposed view, which made the scan 1.21-1.24x the forward pass).

detect_head only accepts text. Decoding random token ids and tokenizing again does not
give the same ids, so each prompt is a key ("seq0", ...) and ``model.to_tokens`` is
replaced, for this benchmark only, by a lookup returning that prompt's token ids: TL scores
exactly the sequences headscope scores. Its "mul" measure is a different number (the share
of *all* attention on the pattern, first-repeat rows included): only time is compared.

Rounds are interleaved (A B C A B C ...), after one warm-up call of each; medians reported.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _bench import emit, interleaved, load_average, median, say, set_threads  # noqa: E402

HEADS = ("previous_token_head", "duplicate_token_head", "induction_head")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct-q4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--reps", type=int, default=5, help="interleaved rounds")
    p.add_argument("--tl-reps", type=int, default=5, help="rounds TransformerLens takes part in (it is slow)")
    p.add_argument("--no-tl", action="store_true", help="skip TransformerLens detect_head")
    args = p.parse_args(argv)

    from transformers import AutoModelForCausalLM

    import headscope
    from headscope.models.loading import resolve_source
    from headscope.scan.induction_scan import chunk_size_for, scan_induction, score_pass
    from headscope.scan.losses import token_losses as _token_losses
    from headscope.scan.sequences import repeated_tokens
    from headscope.scores import attention_scores, prepare
    from headscope.scores import reduce_pattern as read

    threads = set_threads(args.threads)
    device = args.device
    say(
        f"speed: {args.model} on {device}, {threads} threads, batch {args.batch} x seq-len {args.seq_len}; "
        f"load average at start {load_average()}"
    )
    model = headscope.load_model(args.model, device=device)
    model_dir = resolve_source(args.model).path
    rt = repeated_tokens(model, seq_len=args.seq_len, batch=args.batch, repeats=2, seed=0)
    tokens = rt.tokens.to(device)
    cfg = model.cfg
    chunk = chunk_size_for(rt.layout.n_tokens, cfg.n_heads, cfg.d_vocab, args.batch, 2.0)
    hf = {
        impl: AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=impl, dtype=torch.float32)
        .to(device)
        .eval()
        for impl in ("sdpa", "eager")
    }

    @torch.no_grad()
    def hf_forward(impl):
        return hf[impl](tokens).logits

    @torch.no_grad()
    def bridge_forward():
        return model(tokens)

    layout = rt.layout
    declared = attention_scores()
    prepared = {s.name: prepare(s.reads, tokens, layout) for s in declared}

    def reduce_pattern(pattern, hook):  # every attention score of the registry, as the scan reads it
        for s in declared:
            read(s.reads, pattern, layout, prepared[s.name])

    scoring_hooks = [(f"blocks.{l}.attn.hook_pattern", reduce_pattern) for l in range(cfg.n_layers)]
    with torch.no_grad():
        logits = model(tokens)

    def loss_cross_entropy_t():
        return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")

    fns = {
        "scan": lambda: score_pass(model, rt, chunk),
        "hf_sdpa": lambda: hf_forward("sdpa"),
        "hf_eager": lambda: hf_forward("eager"),
        "bridge": bridge_forward,
        "bridge_scoring_hooks": torch.no_grad()(lambda: model.run_with_hooks(tokens, fwd_hooks=scoring_hooks)),
        "scan_loss": torch.no_grad()(lambda: _token_losses(logits, tokens)),
        "loss_cross_entropy_t": torch.no_grad()(loss_cross_entropy_t),
        "scan_induction": lambda: scan_induction(
            model, seq_len=args.seq_len, batch=args.batch, ablate=False, sample=False, progress=False
        ),
    }
    if not args.no_tl:
        from transformer_lens.head_detector import detect_head

        prompts = [f"seq{i}" for i in range(args.batch)]
        by_key = {k: tokens[i : i + 1] for i, k in enumerate(prompts)}
        # same ids as the scan, see the docstring (detect_head also tokenizes the whole list once)
        model.to_tokens = lambda text, *a, **kw: (
            by_key[text] if isinstance(text, str) else torch.cat([by_key[t] for t in text])
        )

        def tl_detect_head():
            return [detect_head(model, prompts, name) for name in HEADS]

        @torch.no_grad()
        def tl_detect_head_cached():
            out = []
            for key in prompts:
                _, cache = model.run_with_cache(by_key[key], remove_batch_dim=True)
                out.append([detect_head(model, key, name, cache=cache) for name in HEADS])
                del cache
            return out

        fns["tl_detect_head"] = tl_detect_head
        fns["tl_detect_head_cached"] = tl_detect_head_cached

    say("warm-up (one call each)...")
    for name, fn in fns.items():
        if name.startswith("tl_"):
            detect_head(model, prompts[:1], "induction_head")
        else:
            fn()
    reps_for = {"tl_detect_head": args.tl_reps, "tl_detect_head_cached": args.tl_reps}
    times, others = interleaved(fns, args.reps, device, reps_for, log=say)
    med = {k: median(v) for k, v in times.items()}
    ratios = {
        "scan / hf_sdpa": med["scan"] / med["hf_sdpa"],
        "scan / hf_eager": med["scan"] / med["hf_eager"],
        "scan / bridge": med["scan"] / med["bridge"],
        "bridge / hf_eager": med["bridge"] / med["hf_eager"],
        "scan_induction / hf_sdpa": med["scan_induction"] / med["hf_sdpa"],
        "loss_cross_entropy_t / scan_loss": med["loss_cross_entropy_t"] / med["scan_loss"],
    }
    if not args.no_tl:
        ratios["tl_detect_head / scan"] = med["tl_detect_head"] / med["scan"]
        ratios["tl_detect_head_cached / scan"] = med["tl_detect_head_cached"] / med["scan"]
    record = {
        "section": "speed",
        "device": device,
        "threads": threads,
        "model": args.model,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "n_tokens": rt.layout.n_tokens,
        "chunk_size": chunk,
        "times_s": times,
        "others_cpu_share": others,
        "others_cpu_share_max": max((o for v in others.values() for o in v if o is not None), default=None),
        "median_s": med,
        "ratios": ratios,
        "load_average_end": load_average(),
    }
    emit(record)
    return record


if __name__ == "__main__":
    main()
