"""Causal-circuit measurements on SmolLM2: path patching batched over every sender vs one pass per sender.

On the induction task (10 x 101 tokens: ``induction_task(model, 10, 50)``), after caching the clean
and corrupted runs once (``cache_s``):

- ``path_logits_batched``: every head (30 x 9 = 270 senders) -> the logits directly, one batched
  run (``path_patching(..., Receiver.logits())``: no block is run at all);
- ``path_keys_batched``: every earlier head (162 senders) -> L18H6's keys, one batched run
  (copies stacked along the batch, restarted at layer 18, fused attention);
- ``per_sender_pass``: the naive way, one full forward pass of the 10 examples per sender (from
  the embedding, the sender's change added to the receiver's key input by a hook), timed on
  ``--naive-senders`` senders and extrapolated to 162 and to 270 senders.

The load average and the CPU share other processes took are printed with every timing.

    python benchmarks/circuits.py --threads 2
    python benchmarks/run.py --sections circuits
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _bench import emit, load_average, machine, say, set_threads, timed  # noqa: E402

SUITE = {"section": "circuits", "runs": [[]], "quick_runs": [["--naive-senders", "1"]], "default": False}
"""How ``benchmarks/run.py`` runs this script (see run.py): not in its default set; ``--sections all``."""


def naive_pass(model, task, clean, corrupt, sender, layer: int, head: int) -> float:
    """One sender's path into ``(layer, head)``'s keys by one full forward pass (the loop the batch replaces)."""
    from headscope.circuits.path_patching import Receiver, _input_hooks, sender_deltas
    from headscope.circuits.runs import final_normed, metric_of_normed

    bridge = model.bridge
    delta = sender_deltas(bridge, clean, corrupt, [sender])[0]
    hooks = _input_hooks(
        bridge, layer, [Receiver("k", layer, head)], clean.resid_pre[layer] + delta, task.n_examples, clean
    )
    normed = final_normed(bridge, task.clean, 0, hooks)
    return float(metric_of_normed(bridge, normed, task).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct-q4")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--examples", type=int, default=10)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--receiver", default="18.6", help="layer.head whose keys receive the paths")
    p.add_argument("--naive-senders", type=int, default=3)
    args = p.parse_args(argv)
    set_threads(args.threads)
    import headscope
    from headscope.circuits import induction_task
    from headscope.circuits.path_patching import Receiver, path_patching
    from headscope.circuits.runs import cache_run

    info = machine()
    say(f"circuits benchmark: {info['cpu']}, {info['torch_threads']} threads, load average {info['load_average']}")
    model = headscope.load_model(args.model, device=args.device)
    task = induction_task(model, n_examples=args.examples, seq_len=args.seq_len)
    layer, head = (int(x) for x in args.receiver.split("."))
    rec: dict = {"section": "circuits", "device": args.device, "model": args.model,
                 "n_examples": task.n_examples, "n_tokens": int(task.clean.shape[1]), "receiver": f"L{layer}H{head}.k"}  # fmt: skip
    holder: dict = {}
    t, o = timed(
        lambda: holder.update(c=(cache_run(model, task.clean, task), cache_run(model, task.corrupt, task))), args.device
    )
    clean, corrupt = holder["c"]
    rec["cache_s"], others = round(t, 3), {"cache_s": o}
    say(f"  cache both runs: {t:.2f} s (others {o})")
    n_all = model.n_layers * model.n_heads
    t, o = timed(lambda: path_patching(model, task, None, Receiver.logits(), caches=(clean, corrupt)), args.device)
    rec["path_logits_batched_s"], others["path_logits_batched_s"], rec["senders_logits"] = round(t, 3), o, n_all
    say(f"  {n_all} senders -> logits, batched: {t:.2f} s (others {o})")
    t, o = timed(
        lambda: path_patching(model, task, None, Receiver("k", layer, head), caches=(clean, corrupt)), args.device
    )
    n_k = layer * model.n_heads
    rec["path_keys_batched_s"], others["path_keys_batched_s"], rec["senders_keys"] = round(t, 3), o, n_k
    say(f"  {n_k} senders -> L{layer}H{head}.k, batched: {t:.2f} s (others {o})")
    naive = []
    for s in [(l % layer, 0) for l in range(args.naive_senders)]:  # senders below the receiver
        t, o = timed(lambda s=s: naive_pass(model, task, clean, corrupt, s, layer, head), args.device)
        naive.append(t)
        say(f"  one full pass for sender L{s[0]}H{s[1]}: {t:.2f} s (others {o})")
    per = sorted(naive)[len(naive) // 2]
    rec.update(
        per_sender_pass_s=round(per, 3),
        naive_keys_extrapolated_s=round(per * n_k, 1),
        naive_all_extrapolated_s=round(per * n_all, 1),
        speedup_keys=round(per * n_k / rec["path_keys_batched_s"], 1),
        others_cpu_share=others,
        load_average_end=[round(x, 2) for x in load_average()],
        threads=info["torch_threads"],
    )
    say(
        f"  naive: {per:.2f} s per sender -> {per * n_k:.0f} s for {n_k} senders; batched is {rec['speedup_keys']}x faster"
    )
    emit(rec)
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    say(f"  circuits benchmark took {time.perf_counter() - t0:.0f} s")
    sys.exit(code)
