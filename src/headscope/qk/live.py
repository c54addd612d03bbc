"""Live QK interactions: each head's pre-softmax scores and pattern on the user's text.

The score of query ``i`` against key ``j`` is ``q_i . k_j / sqrt(d_head)`` with the model's
rotary map already applied to ``q`` and ``k`` where it has one; it is what
``blocks.{l}.attn.hook_attn_scores`` holds. The bridge writes the causal mask into that
tensor as the most negative float; we return masked cells (``j > i``) as NaN so a figure
can show them as masked, never as zeros.

Some bridges put something else there: for OPT, TransformerLens 4 hands ``hook_attn_scores``
the softmaxed pattern; so it does for GPT-J, whose bridge has no rotated query/key hooks.
:func:`pre_softmax_scores` notices (the "scores" equal the pattern) and computes the scores
from the model's own queries and keys (rotated as the model rotates them,
:mod:`headscope.qk.rotary`, where no rotated hook fires) and its attention module's scaling
instead, checking that their softmax is the model's pattern.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..errors import BadInput
from ..hooks import act_name
from ..models.inputs import TokenSequence, as_heads, as_sequences
from ..models.model import as_model, in_eval_mode
from ..results.qk_results import QKScores
from . import rotary


@torch.no_grad()
def capture(model, seq: TokenSequence, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """One forward pass keeping only the hooks in ``names`` (batch dim dropped, float64, CPU)."""
    m = as_model(model)
    store: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable:
        def hook(t, hook):
            store[name] = t.detach()[0].to("cpu", torch.float64)

        return hook

    m.run_with_hooks(seq.tensor(m.device), fwd_hooks=[(n, keep(n)) for n in dict.fromkeys(names)])
    return store


def masked_scores(raw: torch.Tensor) -> np.ndarray:
    """``[..., query, key]`` scores with the causal upper triangle set to NaN."""
    t = raw.shape[-1]
    out = raw.clone()
    out[..., torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)] = float("nan")
    return out.numpy()


#: Softmaxed scores rebuilt from q and k may differ from the model's pattern by this much (probability).
PATTERN_TOLERANCE = 1e-3


def _visible(t: torch.Tensor) -> torch.Tensor:
    n = t.shape[-1]
    return t[..., torch.tril(torch.ones(n, n, dtype=torch.bool))]


def _rotated(model, x: torch.Tensor) -> torch.Tensor:
    """``x`` ``[T, heads, d_head]`` rotated at positions ``0..T-1`` as the model rotates its queries and keys."""
    cos, sin = rotary.cos_sin(model, torch.arange(x.shape[0]))
    out = rotary.apply_rope(x.transpose(0, 1).double(), cos, sin, rotary.adjacent_pairs(model))
    return out.transpose(0, 1).to(x.dtype)


@torch.no_grad()
def pre_softmax_scores(
    model, seq: TokenSequence, layer: int, scores: torch.Tensor, pattern: torch.Tensor, head: int | None = None
) -> torch.Tensor:
    """``[n_heads, T, T]`` pre-softmax scores of ``layer`` (``[T, T]`` of ``head`` where given, with
    ``scores``/``pattern`` that head's): ``scores`` (``hook_attn_scores``) where they are that.

    Where the hook holds the pattern instead (OPT), they are computed from the model's queries and
    keys (``hook_q``/``hook_k``, rotated ones on rotary models) times the attention module's
    ``scaling``, masked like the hook's, and checked against ``pattern``.
    """
    if not torch.allclose(_visible(scores), _visible(pattern), atol=1e-6, rtol=0):
        return scores
    m = as_model(model)
    rotated = [act_name("rot_q", layer), act_name("rot_k", layer)]
    plain = [act_name("q", layer), act_name("k", layer)]
    acts = capture(m, seq, [n for n in rotated + plain if n in m.hook_dict])
    rot = all(n in acts for n in rotated)  # a hook that exists may still never fire (GPT-J's bridge)
    if not rot and not all(n in acts for n in plain):
        raise BadInput(
            f"cannot read the pre-softmax attention scores of {m.cfg.architecture} (layer {layer}): its score hook "
            "holds the pattern and its query/key hooks do not fire",
            hint="the attention pattern is still shown by headscope induction",
        )
    q, k = (acts[n] for n in (rotated if rot else plain))  # [T, heads, d_head], [T, kv heads, d_head]
    d_head = int(m.cfg.d_head)
    q, k = (x if x.dim() == 3 else x.reshape(x.shape[0], -1, d_head) for x in (q, k))
    if not rot and rotary.is_rotary(m):  # GPT-J: hook_q/hook_k are before the rotation
        q, k = (_rotated(m, x) for x in (q, k))
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    module = getattr(m.blocks[layer].attn, "original_component", None)
    scaling = getattr(module, "scaling", None)
    scaling = float(scaling) if isinstance(scaling, (int, float)) else q.shape[-1] ** -0.5
    out = torch.einsum("qhd,khd->hqk", q, k) * scaling
    out = out if head is None else out[head]
    T = out.shape[-1]
    out[..., torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)] = torch.finfo(out.dtype).min
    err = float((torch.softmax(out, -1) - pattern).abs().max())
    if not err <= PATTERN_TOLERANCE:
        raise BadInput(
            f"cannot read the pre-softmax attention scores of {m.cfg.architecture} (layer {layer}): its score hook "
            f"holds the pattern, and q.k from its query and key hooks is off by {err:.3g} from that pattern",
            hint="this architecture's attention is not plain q.k scaling; the attention pattern is still shown "
            "by headscope induction",
        )
    return out


@in_eval_mode
def qk_scores(model, heads, texts=None, *, max_tokens: int | None = None) -> QKScores:
    """Pre-softmax scores and attention patterns of ``heads`` on ``texts``.

    ``texts``: a string, a list of strings (the first token is put before each), or None for the
    built-in samples. ``heads``: ``(layer, head)`` tuples or ``"L5H1"``/``"5.1"`` strings.
    Returns :class:`QKScores` with ``scores[s]`` and ``pattern[s]`` of shape
    ``[n_chosen_heads, query, key]`` for sequence ``s`` (masked scores NaN).

    >>> r = qk_scores(model, ["L1H2"], "a b c a b c")
    >>> r.scores[0].shape, r.to_frame().columns[:3].tolist()
    ((1, 7, 7), ['sequence', 'layer', 'head'])
    """
    m = as_model(model)
    seqs = as_sequences(m, texts, max_tokens)
    heads = as_heads(m, heads)
    layers = sorted({layer for layer, _ in heads})
    scores, patterns = [], []
    for seq in seqs:
        names = [act_name(kind, layer) for layer in layers for kind in ("attn_scores", "pattern")]
        acts = capture(m, seq, names)
        raw = {
            l: pre_softmax_scores(m, seq, l, acts[act_name("attn_scores", l)], acts[act_name("pattern", l)])
            for l in layers
        }
        scores.append(np.stack([masked_scores(raw[l][h]) for l, h in heads]))
        patterns.append(np.stack([acts[act_name("pattern", l)][h].numpy() for l, h in heads]))
    return QKScores(
        model_name=m.name, heads=heads, sequences=seqs, scores=scores, patterns=patterns, rotary=rotary.is_rotary(m)
    )
