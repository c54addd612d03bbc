"""Everything the explorer shows about one text, computed in one fused forward pass and kept.

Switching the head or the query position must answer in well under a second, so the one pass
keeps what every view reads, and no view runs the model again:

- per layer the rotated queries and keys and each row's logsumexp (from the fused kernel,
  :func:`headscope.scan.fused.fused_attention`): any entry of any head's pattern is
  ``exp(q_i . k_j * scale - lse_i)``, so a head's pattern (or one query's row) is built only
  for the head being shown, and every registry attention score is read from them
  (:func:`headscope.scores.reduce_qk`) as the scan does; no ``n x n`` tensor exists otherwise;
- the residual pieces the QK decomposition (:mod:`headscope.qk.decompose`) splits a score into
  (embeddings, ``resid_pre``, ``ln1`` scales, every head's ``z``, every MLP's output) and the
  final residual with its norm scale, which the direct logit attribution reads
  (:class:`headscope.scan.direct.DirectPass`'s maths, for the positions a view asks about:
  running it in the pass for every position cost a sixth of the pass);
- the final-normed residual, from which the logits of a position are one product with the
  unembedding when a view asks (the pass skips the unembedding: on SmolLM2 about a fifth of the
  pass's multiply-adds by parameter count and, as logits, 0.2 MB a token).

Memory grows linearly with the text (SmolLM2: 0.34 MB a token, measured); the cache of texts
(:class:`headscope.explorer.engine.Explorer`) is bounded in bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import BadInput
from ..hooks import act_name
from ..models.inputs import TokenSequence
from ..models.model import HeadscopeModel
from ..scan.fused import fused_attention, fused_unsupported_reason
from ..scores import attention_scores, prepare, reduce_qk
from ..scores.layout import RepeatLayout


@dataclass
class TextState:
    """One text's pass: ``seq``; per layer ``q``/``k`` ``[head, T, d_head]`` and ``lse`` ``[head, T]``;
    ``acts`` (hook name -> ``[T, ...]`` float32, batch dropped); ``normed`` the final-normed
    residual ``[T, d_model]`` (:meth:`logits` unembeds rows of it);
    ``layout`` how the registry's
    attention scores are read on this text; ``scores`` those scores (``[L, H]``, None where a
    score reads no query on this text)."""

    seq: TokenSequence
    q: list[torch.Tensor]
    k: list[torch.Tensor]
    lse: list[torch.Tensor]
    scale: float
    acts: dict[str, torch.Tensor]
    normed: torch.Tensor
    unembed: Callable[[torch.Tensor], torch.Tensor]
    layout: RepeatLayout
    scores: dict[str, np.ndarray | None] = field(default_factory=dict)
    seconds: float = 0.0
    rows: dict[int, torch.Tensor] = field(default_factory=dict)  # logits of the positions viewed so far

    @property
    def n(self) -> int:
        return len(self.seq)

    @property
    def nbytes(self) -> int:
        tensors = [*self.q, *self.k, *self.lse, *self.acts.values(), self.normed, *self.rows.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    @torch.no_grad()
    def logits(self, rows) -> torch.Tensor:
        """The model's logits at positions ``rows`` (an int or a slice), float32 on the CPU.

        One position's logits are kept once computed: the unembedding reads all of ``W_U`` (113 MB on
        SmolLM2) for a single row, so a view that asks twice pays once."""
        if isinstance(rows, int) and rows in self.rows:
            return self.rows[rows]
        x = self.normed[rows]
        out = self.unembed(x.reshape(1, -1, x.shape[-1]))[0]  # [P, vocab]
        if isinstance(rows, int):
            self.rows[rows] = out[0].float().cpu()
            return self.rows[rows]
        return out.float().cpu()

    def row(self, layer: int, head: int, query: int) -> np.ndarray:
        """Head ``layer.head``'s attention from ``query`` to every key ``0..query`` (float64, sums to 1)."""
        q = self.q[layer][head, query].double()
        k = self.k[layer][head, : query + 1].double()
        return torch.exp(k @ q * self.scale - float(self.lse[layer][head, query])).numpy()

    def scores_qk(self, layer: int, head: int, rows: slice, keys: slice) -> torch.Tensor:
        """Pre-softmax scores ``q_i . k_j * scale`` of one head on a block (float64; no mask applied)."""
        q = self.q[layer][head, rows].double()
        k = self.k[layer][head, keys].double()
        return q @ k.T * self.scale

    def pattern(self, layer: int, head: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """One head's pattern on positions ``start..stop-1`` (queries down, keys across; masked cells 0).

        Rows are the model's own (their logsumexp is over every key ``0..i``), so a window's rows
        do not sum to 1 when keys before ``start`` take some of the attention.
        """
        stop = self.n if stop is None else stop
        s = self.scores_qk(layer, head, slice(start, stop), slice(start, stop))
        a = torch.exp(s - self.lse[layer][head, start:stop].double()[:, None])
        return torch.tril(a).numpy()


@contextlib.contextmanager
def _residual_out(bridge) -> Iterator[dict]:
    """The unembedding is skipped for the pass; the yielded box holds the final-normed residual under
    ``"normed"`` (read there, not from the forward's return, which a model may transform after its
    unembedding: soft-capping, a scale), as :mod:`headscope.circuits.runs` does for patching."""
    box: dict = {}

    def keep(x, *a, **k):
        box["normed"] = x
        return x

    object.__setattr__(bridge.unembed, "forward", keep)
    try:
        yield box
    finally:
        bridge.unembed.__dict__.pop("forward", None)


def text_layout(ids: list[int], first: bool) -> RepeatLayout:
    """How the registry's repeat-based reads apply to a text: its tokens as ``r`` repeated ``R`` times
    (the smallest period that tiles the text after its first token exactly), else one block (``R = 1``:
    the later-repeat scores read no query)."""
    body = ids[int(first) :]
    n = len(body)
    for p in range(1, n // 2 + 1):
        if n % p == 0 and body == body[:p] * (n // p):
            return RepeatLayout(seq_len=p, repeats=n // p, bos=first)
    return RepeatLayout(seq_len=max(n, 1), repeats=1, bos=first)


def _queries(s, layout: RepeatLayout) -> int:
    """How many queries a declaration reads on ``layout`` (0: the score says nothing on this text)."""
    start = s.reads.start(layout)
    end = getattr(s.reads, "end", lambda lay: lay.n_tokens)(layout)
    return max(0, end - start)


def _capture_names(m: HeadscopeModel) -> list[str]:
    names = ["hook_embed"]
    if "hook_pos_embed" in m.bridge.hook_dict and getattr(m.cfg, "positional_embedding_type", "") == "standard":
        names.append("hook_pos_embed")
    for layer in range(m.n_layers):
        names += [act_name(x, layer) for x in ("resid_pre", "ln1.scale", "z", "mlp_out")]
    return names + ["ln_final.hook_in", "ln_final.hook_scale"]


def check_explorable(m: HeadscopeModel, w) -> None:
    """Refuse, before the explorer starts, a model whose views it cannot compute right.

    The explorer runs the fused path only (its scores read q, k and the row logsumexp), and its
    per-head writes are ``z W_O`` through the final norm: a norm after attention (Gemma 2/3's
    ``ln1_post``) would also need that norm's per-position scale, which the explorer does not read.
    ``w``: the model's :class:`~headscope.folded_weights.HeadWeights`.
    """
    reason = fused_unsupported_reason(m, 1)  # what holds at any length (a sliding window is checked per text)
    if reason:
        raise BadInput(
            f"the explorer needs the fused attention path, which this model cannot take: {reason}",
            hint="the other commands (induction, heads, qk, logits, circuit) run on it through eager attention",
        )
    if w.attn_post_norm:
        raise BadInput(
            "the explorer's per-head writes do not divide by the norm after attention (ln1_post) that this "
            "model has, so they would be wrong",
            hint="the other commands (induction, heads, qk, logits, circuit) take that norm into account",
        )


@torch.no_grad()
def compute_text(m: HeadscopeModel, seq: TokenSequence) -> TextState:
    """The one fused pass over ``seq`` that every view of the explorer reads (see the module docstring)."""
    tokens = seq.tensor(m.device)
    reason = fused_unsupported_reason(m, tokens.shape[-1])
    if reason:
        raise BadInput(
            f"the explorer needs the fused attention path, which this model cannot take: {reason}",
            hint="use a model headscope can route through the fused kernel (Llama-, Qwen2- or GPT-2-style), or, for a "
            "sliding window, a text no longer than the window",
        )
    L = m.n_layers
    qs: list = [None] * L
    ks: list = [None] * L
    lses: list = [None] * L
    scale_box: list[float] = []

    def on_attention(layer, q, k, lse, scale):
        qs[layer], ks[layer], lses[layer] = (t[0].detach().float().cpu() for t in (q, k, lse))
        scale_box.append(scale)

    acts: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(t, hook):
            acts[name] = t.detach()[0].float().cpu()

        return hook

    hooks = [(n, keep(n)) for n in _capture_names(m)]
    with fused_attention(m, on_attention), _residual_out(m.bridge) as box:
        m.run_with_hooks(tokens, fwd_hooks=hooks, use_cache=False)
    normed = box["normed"]
    layout = text_layout(seq.ids, m.first_token.id is not None)
    state = TextState(
        seq=seq,
        q=qs,
        k=ks,
        lse=lses,
        scale=scale_box[0],
        acts=acts,
        normed=normed[0].detach(),
        unembed=m.bridge.unembed,
        layout=layout,
    )
    state.scores = text_scores(state)
    return state


def text_scores(state: TextState) -> dict[str, np.ndarray | None]:
    """Every registry attention score read on this text (``[L, H]``), None where it reads no query here."""
    ids = torch.tensor([state.seq.ids])
    out: dict[str, np.ndarray | None] = {}
    for s in attention_scores():
        if _queries(s, state.layout) == 0 or state.layout.n_tokens != len(state.seq):
            out[s.name] = None
            continue
        prepared = prepare(s.reads, ids, state.layout, fused=True)  # type: ignore[arg-type]
        rows = []
        for layer in range(len(state.q)):
            q, k, lse = (t[None] for t in (state.q[layer], state.k[layer], state.lse[layer]))
            total, count = reduce_qk(s.reads, q, k, lse, state.scale, state.layout, prepared)  # type: ignore[arg-type]
            rows.append((total / max(count, 1)).numpy())
        out[s.name] = np.asarray(rows, dtype=np.float64)
    return out
