"""Why a head attends where it does: its score split over the residual stream's components.

Head ``(l, h)`` reads ``x = resid_pre[l]``, which is a sum of components: the token
embedding (plus the position embedding where positions are learned), every earlier head's
output ``z_h W_O^h`` (per head, not per layer), every earlier MLP's output, and the attention
output biases. With the normalisation **scale frozen** (each component divided by the
actual token's norm scale from ``ln1.hook_scale``, and centred first for LayerNorm) the
query and key are linear in the components::

    q_i = RoPE_i( sum_a W_Q^T c_a(i) / s_i  + b_Q )    k_j = RoPE_j( sum_b W_K^T c_b(j) / s_j + b_K )

so the score ``q_i . k_j / sqrt(d_head)`` is a sum over (query component, key component)
pairs. Rotary positions are applied per component at its own position (RoPE is linear).
The *key-side* contribution of component ``b`` is ``q_i . k_b(j) / sqrt(d_head)``, the
*query-side* one of ``a`` is ``q_a(i) . k_j / sqrt(d_head)``; each side sums to the score.
A last component, ``float_error``, holds ``resid_pre`` minus the sum of the hooked pieces
(the model's float32 rounding, ~1e-5 of the residual), so the sums are exact.

The scale is the model's own (its attention module's ``scaling``: ``1/sqrt(d_head)``, Gemma 2's
``query_pre_attn_scalar``). Every decomposition is **checked** against the model's own
pre-softmax scores at the same pairs (:func:`check_decomposition`): where the score is not
``q.k`` of a linear read of the residual -- per-head query/key norms (Qwen3's ``q_norm`` and
``k_norm``, nonlinear per token), ALiBi biases (BLOOM), soft-capped scores -- the total does not
reproduce the model's score, and :class:`DecompositionMismatch` is raised rather than a
breakdown that does not add up.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import BadInput
from ..folded_weights import HeadWeights, attn_post_scale_hook, head_weights, mlp_write_hook
from ..hooks import act_name
from ..models.inputs import SAMPLE_TEXTS, TokenSequence, one_head, one_sequence
from ..models.model import as_model, in_eval_mode
from ..results.base import one_of
from ..results.qk_results import STRIPE_NAMES, QKDecomposition
from ..settings import whole_number
from . import rotary
from .live import capture, pre_softmax_scores

#: A decomposition whose total misses the model's own pre-softmax score by more than this, relative to
#: the size of the scores explained (``max(1, max |score|)``), is refused (:func:`check_decomposition`).
DECOMPOSITION_TOLERANCE = 1e-3


class DecompositionMismatch(BadInput):
    """A QK decomposition does not add up to the model's own scores: it is not shown."""

    def __init__(self, message: str, hint: str, error: float, layer: int, head: int):
        super().__init__(message, hint)
        self.error, self.layer, self.head = error, layer, head


def _why_not_linear(model) -> str:
    attn = getattr(model.blocks[0].attn, "original_component", None)
    if getattr(attn, "q_norm", None) is not None or getattr(model.cfg, "use_qk_norm", False):
        return (
            "it normalises each head's query and key (q_norm/k_norm), a per-token nonlinearity no split over "
            "residual components can follow (the weight-only QK circuits leave these norms out too)"
        )
    if getattr(model.cfg, "attn_scores_soft_cap", -1) and getattr(model.cfg, "attn_scores_soft_cap", -1) > 0:
        return "it soft-caps the scores (tanh), which is not linear in the components"
    if "alibi" in str(getattr(model.cfg, "positional_embedding_type", "")).lower() or "Bloom" in str(
        getattr(model.cfg, "architecture", "")
    ):
        return "it adds ALiBi position biases to the scores, which are not a read of the residual stream"
    return "its attention score is not q.k of a linear read of the residual stream"


def check_decomposition(model, layer: int, head: int, totals: np.ndarray, model_scores: np.ndarray) -> float:
    """The largest ``|total - model score|`` over the pairs; raises :class:`DecompositionMismatch` past the tolerance."""
    err = float(np.abs(totals - model_scores).max()) if len(totals) else 0.0
    size = max(1.0, float(np.abs(model_scores).max())) if len(model_scores) else 1.0
    if not err <= DECOMPOSITION_TOLERANCE * size:  # NaN fails too
        arch = getattr(as_model(model).cfg, "architecture", None) or type(model).__name__
        raise DecompositionMismatch(
            f"the QK decomposition of L{layer}H{head} does not reproduce the model's own scores on {arch} "
            f"(largest difference {err:.3g}, allowed {DECOMPOSITION_TOLERANCE * size:.3g}), so it is not shown",
            hint=f"{_why_not_linear(as_model(model))}; the live scores and patterns are the model's own",
            error=err,
            layer=layer,
            head=head,
        )
    return err


def capture_residual(
    model, seq: TokenSequence, up_to_layer: int, score_layers: set[int] | None = None
) -> dict[str, torch.Tensor]:
    """The hooks a decomposition needs for every layer ``<= up_to_layer``, one forward pass.

    Attention scores and patterns ([heads, T, T] each) are kept only for ``score_layers``
    (default: ``up_to_layer``), the layers of the heads being explained: keeping them for
    every earlier layer cost gigabytes on long texts.

    Where blocks have post norms (Gemma 2 and 3), ``mlp_out`` is what the MLP adds to the residual (after
    ``ln2_post``) and ``z`` is divided by the frozen post-attention norm scale at each position, so that
    ``z W_O`` (``W_O`` holds that norm's gain, :mod:`headscope.folded_weights`) is what each head adds.
    """
    score_layers = {up_to_layer} if score_layers is None else set(score_layers)
    m = as_model(model)
    post = attn_post_scale_hook(0) in m.hook_dict
    names = ["hook_embed"]
    if not rotary.is_rotary(model) and getattr(model.cfg, "positional_embedding_type", "") == "standard":
        names.append("hook_pos_embed")
    for layer in range(up_to_layer + 1):
        names += [act_name("resid_pre", layer), act_name("ln1.scale", layer)]
        if layer in score_layers:
            names += [act_name("attn_scores", layer), act_name("pattern", layer)]
        if layer < up_to_layer:
            names += [act_name("z", layer), mlp_write_hook(m, layer)]
            names += [attn_post_scale_hook(layer)] if post else []
    acts = capture(model, seq, names)
    for layer in range(up_to_layer):  # the residual's pieces as they are added to it
        acts[act_name("mlp_out", layer)] = acts.pop(mlp_write_hook(m, layer))
        if post:
            acts[act_name("z", layer)] = acts[act_name("z", layer)] / acts.pop(attn_post_scale_hook(layer))[..., None]
    return acts


def residual_components(acts: dict, w: HeadWeights, layer: int) -> tuple[list[str], list[str], torch.Tensor]:
    """Names, kinds and vectors ``[C, pos, d_model]`` of the pieces that sum to ``resid_pre[layer]``."""
    names, kinds, vecs = ["embed"], ["embed"], [acts["hook_embed"]]

    def add(name: str, kind: str, vec: torch.Tensor) -> None:
        names.append(name)
        kinds.append(kind)
        vecs.append(vec)

    if "hook_pos_embed" in acts:
        add("pos_embed", "embed", acts["hook_pos_embed"])
    W_O = w.W_O.double()
    bias = torch.zeros_like(vecs[0])
    for earlier in range(layer):
        z = acts[act_name("z", earlier)]  # [pos, n_heads, d_head]
        out = torch.einsum("phe,hed->hpd", z, W_O[earlier])
        for h in range(w.n_heads):
            add(f"L{earlier}H{h}", "head", out[h])
        add(f"MLP{earlier}", "mlp", acts[act_name("mlp_out", earlier)])
        bias = bias + w.b_O[earlier].double()
    if layer and bias.abs().max() > 0:
        add("attn_bias", "bias", bias)
    add("float_error", "rounding", acts[act_name("resid_pre", layer)] - sum(vecs))
    return names, kinds, torch.stack(vecs)  # one [C, pos, d_model] copy; long texts make it large


def head_vectors(model, w: HeadWeights, acts: dict, layer: int, head: int):
    """Per-component query and key vectors ``[C(+bias), pos, d_head]`` after frozen norm and RoPE."""
    names, kinds, comps = residual_components(acts, w, layer)
    if w.norm == "layernorm":  # in place: comps is ours, and the largest tensor here
        comps.sub_(comps.mean(-1, keepdim=True))
    comps.div_(acts[act_name("ln1.scale", layer)][None])  # frozen scale, [pos, 1]
    q = comps @ w.W_Q[layer, head].double()
    k = comps @ w.W_K[layer, head].double()
    b_q, b_k = w.b_Q[layer, head].double(), w.b_K[layer, head].double()
    T = comps.shape[1]
    q_names, k_names = list(names), list(names)
    q_kinds, k_kinds = list(kinds), list(kinds)
    if b_q.abs().max() > 0:
        q = torch.cat([q, b_q.expand(1, T, -1)])
        q_names.append("q_bias")
        q_kinds.append("bias")
    if b_k.abs().max() > 0:
        k = torch.cat([k, b_k.expand(1, T, -1)])
        k_names.append("k_bias")
        k_kinds.append("bias")
    if rotary.is_rotary(model):
        cos, sin = rotary.cos_sin(model, torch.arange(T))
        adj = rotary.adjacent_pairs(model)
        q, k = rotary.apply_rope(q, cos, sin, adj), rotary.apply_rope(k, cos, sin, adj)
    return (q_names, q_kinds, q), (k_names, k_kinds, k)


#: At most this many stripe pairs are averaged (evenly spaced), which keeps long repetitive texts quick.
MAX_PAIRS = 1024


def stripe_pairs(ids: list[int]) -> list[tuple[int, int]]:
    """Induction-stripe (query, key) pairs: key ``j`` follows an earlier copy of query token ``i``.

    ``ids[j - 1] == ids[i]`` with ``1 <= j - 1 < i``; position 0 (BOS) is never a copy.
    """
    return [(i, j) for i in range(2, len(ids)) for j in range(2, i + 1) if ids[j - 1] == ids[i]]


def query_index(query: int, T: int) -> int:
    """``query`` as a position of a sequence of ``T`` tokens (negative counts from the end), or BadInput.

    >>> query_index(-1, 5)
    4
    >>> query_index(7, 5)
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: query position 7 is outside the sequence of 5 tokens (0..4, BOS is 0)
      hint: use a position from 0 to 4 or a negative index from -1 to -5 (-1 is the last token); position 0, the first token, can only attend to itself, so there every 'vs mean key' value is 0
    """
    q = query + T if query < 0 else query
    if not 0 <= q < T:
        raise BadInput(
            f"query position {query} is outside the sequence of {T} tokens (0..{T - 1}, BOS is 0)",
            hint=f"use a position from 0 to {T - 1} or a negative index from -1 to -{T} (-1 is the last token); "
            "position 0, the first token, can only attend to itself, so there every 'vs mean key' value is 0",
        )
    return q


def previous_pairs(ids: list[int]) -> list[tuple[int, int]]:
    """Previous-token (query, key) pairs: key ``j = i - 1``, from query 2 (the first token is never the key).

    >>> previous_pairs([5, 7, 8, 9])
    [(2, 1), (3, 2)]
    """
    return [(i, i - 1) for i in range(2, len(ids))]


#: The stripes a decomposition is averaged over: name -> (its pairs from the token ids, its name in prose,
#: which pairs they are).
STRIPES = {
    "induction": (
        stripe_pairs,
        STRIPE_NAMES["induction"],
        "query/key pairs where the key follows an earlier copy of the query's token",
    ),
    "previous_token": (
        previous_pairs,
        STRIPE_NAMES["previous_token"],
        "query/key pairs with key = query - 1, the first token never the key",
    ),
}
#: ``stripe=`` values of :func:`decompose_qk`: a named stripe, or "attended" (the one the head attends most).
STRIPE_CHOICES = (*STRIPES, "attended")


def _thin(pairs: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], str]:
    """At most :data:`MAX_PAIRS` of ``pairs``, evenly spaced, and the words saying so."""
    if len(pairs) <= MAX_PAIRS:  # e.g. one token repeated: every earlier copy is on the induction stripe
        return pairs, ""
    return [pairs[int(n)] for n in np.linspace(0, len(pairs) - 1, MAX_PAIRS)], f"; {MAX_PAIRS} of them, evenly spaced"


def _stripe_attention(pattern: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    I, J = (np.array(x) for x in zip(*pairs))
    return float(pattern[I, J].mean())


def choose_stripe(seq: TokenSequence, pattern: np.ndarray, stripe: str):
    """The stripe's pairs, a sentence saying which stripe and why, and its name; None where it has no pairs.

    ``stripe="attended"``: of :data:`STRIPES`, the one where this head's mean attention on this text is
    highest, with every stripe's mean attention in the sentence (a previous-token head is explained on
    the previous-token stripe, where it attends, not on the induction stripe, where it does not).
    """
    one_of(stripe, STRIPE_CHOICES, "stripe")
    names = list(STRIPES) if stripe == "attended" else [stripe]
    found = {n: p for n in names if (p := STRIPES[n][0](seq.ids))}
    if not found:
        return None
    att = {n: _stripe_attention(pattern, p) for n, p in found.items()}
    best = max(att, key=lambda n: att[n])  # ties: the first, induction
    pairs, thinned = _thin(found[best])
    _, name, what = STRIPES[best]
    how = f"averaged over {name} ({len(found[best])} {what}{thinned})"
    if stripe == "attended":
        others = "; ".join(f"{STRIPES[n][1]}: {a:.2f}" for n, a in att.items() if n != best)
        how += f", the stripe this head attends most on this text: mean attention {att[best]:.2f} there" + (
            f" ({others})" if others else ""
        )
    return pairs, how, best


def choose_pairs(
    seq: TokenSequence, pattern: np.ndarray, query: int | None, key: int | None, stripe: str = "induction"
) -> tuple[list[tuple[int, int]], str, str | None]:
    """The (query, key) pairs to explain, a sentence saying how they were chosen, and the stripe's name (None: no stripe).

    Without ``query``: the pairs of ``stripe`` (:func:`choose_stripe`), else the last query and its most-attended
    key (BOS excluded). With ``query``: that query and ``key`` or its most-attended key.
    """
    T = len(seq)
    if query is None and key is not None:
        raise BadInput("a key position needs a query position too", hint="pass query=... as well")
    if query is None:
        chosen = choose_stripe(seq, pattern, stripe)
        if chosen is not None:
            return chosen
        query = T - 1
        how = "no token repeats, so no induction stripe: " if stripe == "induction" else "no stripe in 2 tokens: "
    else:
        how = ""
    q = query_index(query, T)
    if key is None:
        row = pattern[q, : q + 1].copy()
        if q > 0:
            row[0] = -1  # explain content, not the BOS sink
        k = int(row.argmax())
        return [(q, k)], how + f"query {q} and its most-attended key {k}" + (" (BOS excluded)" if q > 0 else ""), None
    k = key + T if key < 0 else key
    if not 0 <= k <= q:
        raise BadInput(
            f"key position {key} is not visible from query {q}: keys run from 0 to the query (causal mask)",
            hint=f"use a key position from 0 to {q}",
        )
    return [(q, k)], f"query {q}, key {k}", None


@in_eval_mode
@torch.no_grad()
def decompose_qk(
    model,
    head,
    text=None,
    *,
    query: int | None = None,
    key: int | None = None,
    weights: HeadWeights | None = None,
    max_tokens: int | None = None,
    acts: dict | None = None,
    stripe: str = "induction",
) -> QKDecomposition:
    """Split head ``head``'s score on ``text`` over residual components, key side and query side.

    With neither ``query`` nor ``key`` the result is averaged over ``stripe``: "induction" (the
    default), "previous_token" (key = query - 1), or "attended", the one of those two where this
    head's mean attention on the text is highest (what ``headscope qk`` uses: a head is explained
    where it attends); without a stripe (no repeats, for "induction"), the last query and its
    most-attended non-BOS key. Contributions are
    in score units (``q.k/sqrt(d_head)``); ``vs_mean_key`` columns subtract each component's
    mean over all keys the query can see, which is what the softmax responds to.

    ``text``: one string or :class:`~headscope.models.inputs.TokenSequence`, or None for the first
    built-in sample (as :func:`~headscope.logits.logit_attribution`). ``query`` and ``key`` are
    token positions (whole numbers; negative counts from the end).

    >>> d = decompose_qk(model, "1.2")  # the first built-in sample: a sentence said twice
    >>> d.sequence.text == SAMPLE_TEXTS[0]
    True
    >>> decompose_qk(model, "1.2", "a b c", query=1.0)
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: query must be a whole number, got 1.0 (float)
      hint: e.g. query=10
    """
    layer, h = one_head(model, head, "decompose_qk")
    one_of(stripe, STRIPE_CHOICES, "stripe")
    query = None if query is None else whole_number("query", query)
    key = None if key is None else whole_number("key", key)
    seq = one_sequence(model, SAMPLE_TEXTS[0] if text is None else text, max_tokens, "decompose_qk")
    w = weights or head_weights(model)
    acts = acts if acts is not None else capture_residual(model, seq, layer)
    (qn, qkinds, q), (kn, kkinds, k) = head_vectors(model, w, acts, layer, h)
    pattern = acts[act_name("pattern", layer)][h].numpy()
    pairs, how, stripe_name = choose_pairs(seq, pattern, query, key, stripe)
    scale = w.score_scale(layer)
    q_tot, k_tot = q.sum(0), k.sum(0)  # [T, d_head]
    steps = torch.arange(1, k.shape[1] + 1, dtype=k.dtype)[:, None]
    k_mean = k.cumsum(1) / steps  # [C_k, T, d_head]: mean over keys 0..i, what query i sees
    key_c = key_rel = qry_c = qry_rel = pair_m = torch.zeros(())
    for start in range(0, len(pairs), 128):  # chunks bound memory at [C, 128, d_head]
        I, J = (torch.tensor(x) for x in zip(*pairs[start : start + 128]))
        qt, kt = q_tot[I], k_tot[J]  # [P, d_head]
        key_c = key_c + torch.einsum("cpd,pd->c", k[:, J], qt)
        key_rel = key_rel + torch.einsum("cpd,pd->c", k[:, J] - k_mean[:, I], qt)
        qry_c = qry_c + torch.einsum("cpd,pd->c", q[:, I], kt)
        qry_rel = qry_rel + torch.einsum("cpd,pd->c", q[:, I], kt - k_tot.cumsum(0)[I] / steps[I])
        pair_m = pair_m + torch.einsum("apd,bpd->ab", q[:, I], k[:, J])
    I, J = (np.array(x) for x in zip(*pairs))  # type: ignore[assignment]
    totals = (q_tot[I] * k_tot[J]).sum(-1).numpy() * scale
    scores_h, pattern_h = acts[act_name("attn_scores", layer)][h], acts[act_name("pattern", layer)][h]
    model_scores = pre_softmax_scores(model, seq, layer, scores_h, pattern_h, head=h)[I, J].numpy()
    error = check_decomposition(model, layer, h, totals, model_scores)
    per = scale / len(pairs)  # mean over pairs, in score units
    return QKDecomposition(
        model_name=as_model(model).name,
        layer=layer,
        head=h,
        sequence=seq,
        pairs=pairs,
        how=how,
        query_names=qn,
        query_kinds=qkinds,
        key_names=kn,
        key_kinds=kkinds,
        key_contrib=(key_c * per).numpy(),
        key_vs_mean=(key_rel * per).numpy(),
        query_contrib=(qry_c * per).numpy(),
        query_vs_mean=(qry_rel * per).numpy(),
        pair_contrib=(pair_m * per).numpy(),
        score=float(totals.mean()),
        model_score=float(model_scores.mean()),
        max_abs_error=error,
        attention=float(pattern[I, J].mean()),
        stripe=stripe_name,
    )


def _project_at(model, w: HeadWeights, acts: dict, layer: int, head: int, where: list[int]):
    """Per-component query and key vectors at positions ``where`` only (frozen norm, biases as components, RoPE)."""
    at = {k: v[where] for k, v in acts.items() if not k.endswith(("hook_attn_scores", "hook_pattern"))}
    names, kinds, comps = residual_components(at, w, layer)  # [C, len(where), d_model]
    if w.norm == "layernorm":
        comps = comps - comps.mean(-1, keepdim=True)
    comps = comps / at[act_name("ln1.scale", layer)][None]
    q, k = comps @ w.W_Q[layer, head].double(), comps @ w.W_K[layer, head].double()
    q_names, k_names, q_kinds, k_kinds = list(names), list(names), list(kinds), list(kinds)
    b_q, b_k = w.b_Q[layer, head].double(), w.b_K[layer, head].double()
    if b_q.abs().max() > 0:
        q, q_names, q_kinds = torch.cat([q, b_q.expand(1, len(where), -1)]), q_names + ["q_bias"], q_kinds + ["bias"]
    if b_k.abs().max() > 0:
        k, k_names, k_kinds = torch.cat([k, b_k.expand(1, len(where), -1)]), k_names + ["k_bias"], k_kinds + ["bias"]
    if rotary.is_rotary(model):
        cos, sin = rotary.cos_sin(model, torch.tensor(where))
        adj = rotary.adjacent_pairs(model)
        q, k = rotary.apply_rope(q, cos, sin, adj), rotary.apply_rope(k, cos, sin, adj)
    return (q_names, q_kinds, q), (k_names, k_kinds, k)


def _keys_total(model, w: HeadWeights, acts: dict, layer: int, head: int, T: int) -> torch.Tensor:
    """The head's key at every position ``0..T-1`` from the whole residual (frozen norm), ``[T, d_head]``."""
    x = acts[act_name("resid_pre", layer)][:T]
    if w.norm == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    k = (x / acts[act_name("ln1.scale", layer)][:T]) @ w.W_K[layer, head].double() + w.b_K[layer, head].double()
    if rotary.is_rotary(model):
        cos, sin = rotary.cos_sin(model, torch.arange(T))
        k = rotary.apply_rope(k, cos, sin, rotary.adjacent_pairs(model))
    return k


def _key_means(model, w: HeadWeights, acts: dict, layer: int, head: int, q_i: torch.Tensor, T: int, names: list[str]):
    """``mean_{p<T} q_i . k_c(p)`` for every key-side component ``c`` in ``names``, without the ``[C, T, d_model]`` stack.

    ``q . RoPE_p(k) = RoPE_p^T(q) . k`` and the key is linear in the component, so each component's
    term is its vector dotted with ``g_p = P W_K RoPE_p^T(q_i) / s_p`` summed over positions; a head's
    vector is ``z W_O``, so its term is ``z . (W_O g_p)``: one product per earlier layer.
    """
    r = q_i.expand(T, -1)
    if rotary.is_rotary(model):
        cos, sin = rotary.cos_sin(model, torch.arange(T))
        r = rotary.apply_rope(r, cos, -sin, rotary.adjacent_pairs(model))  # the inverse (= transposed) rotation
    g = r @ w.W_K[layer, head].double().T  # [T, d_model]
    if w.norm == "layernorm":
        g = g - g.mean(-1, keepdim=True)
    g = g / acts[act_name("ln1.scale", layer)][:T]
    vec = {"embed": acts["hook_embed"]} | ({"pos_embed": acts["hook_pos_embed"]} if "hook_pos_embed" in acts else {})
    vec |= {f"MLP{e}": acts[act_name("mlp_out", e)] for e in range(layer)}
    vec["resid_pre"] = acts[act_name("resid_pre", layer)]
    dots = torch.einsum("ktm,tm->k", torch.stack([v[:T] for v in vec.values()]), g)
    out = dict(zip(vec, dots.tolist()))
    total = out.pop("resid_pre")
    if layer:
        # sum_p z[p, e, h, a] (W_O[e, h, a] . g_p) = <W_O[e, h], Z_{e,h}^T G>: one product for every earlier head
        z = torch.stack([acts[act_name("z", e)][:T] for e in range(layer)], 1)  # [T, layer, H, d_head]
        zg = z.reshape(T, -1).T @ g  # [layer * H * d_head, d_model]
        W_O = w.W_O[:layer].double().reshape(zg.shape)
        per_head = (W_O * zg).reshape(layer, w.n_heads, -1).sum(-1)
        out |= {f"L{e}H{h}": float(per_head[e, h]) for e in range(layer) for h in range(w.n_heads)}
    if "attn_bias" in names:
        out["attn_bias"] = float(g.sum(0) @ w.b_O[:layer].double().sum(0))
    out["float_error"] = total - sum(out.values())
    if "k_bias" in names:
        out["k_bias"] = float(r.sum(0) @ w.b_K[layer, head].double())
    return torch.tensor([out[n] for n in names], dtype=torch.float64) / T


@torch.no_grad()
def decompose_pair(
    model,
    head,
    seq: TokenSequence,
    query: int,
    key: int,
    acts: dict,
    *,
    weights: HeadWeights | None = None,
    model_score: float = float("nan"),
    attention: float = float("nan"),
    how: str = "",
) -> QKDecomposition:
    """:func:`decompose_qk` for one (query, key) pair, from the same activations, without the ``[C, T, d_model]`` stack.

    Only the query's and the key's positions are split into components; the key side's mean over the
    keys the query sees comes from :func:`_key_means`, the query side's from the whole keys. The same
    numbers as :func:`decompose_qk` (tested), several times faster for a late layer: what the live
    explorer uses when a head or position is chosen. ``acts``: the :func:`capture_residual` hooks
    (attention scores and pattern not needed: ``model_score`` and ``attention`` are passed).

    >>> from headscope.models.inputs import encode
    >>> seq = encode(model, " a b c a b c")
    >>> acts = capture_residual(model, seq, 1)
    >>> d, ref = decompose_pair(model, (1, 2), seq, 5, 3, acts), decompose_qk(model, (1, 2), seq, query=5, key=3)
    >>> bool(abs(d.key_vs_mean - ref.key_vs_mean).max() < 1e-8), d.key_names == ref.key_names
    (True, True)
    """
    layer, h = one_head(model, head, "decompose_pair")
    w = weights or head_weights(model)
    scale = w.score_scale(layer)
    (qn, qkinds, q), (kn, kkinds, k) = _project_at(model, w, acts, layer, h, [query, key])
    q_i, k_j = q[:, 0], k[:, 1]  # [C, d_head] at the query / at the key
    q_tot = q_i.sum(0)
    k_all = _keys_total(model, w, acts, layer, h, query + 1)
    k_tot = k_all[key]
    key_c = k_j @ q_tot * scale
    key_rel = key_c - _key_means(model, w, acts, layer, h, q_tot, query + 1, kn) * scale
    qry_c = q_i @ k_tot * scale
    qry_rel = q_i @ (k_tot - k_all.mean(0)) * scale
    score = float(q_tot @ k_tot * scale)
    if np.isfinite(model_score):  # checked where the caller has the model's score
        check_decomposition(model, layer, h, np.array([score]), np.array([float(model_score)]))
    return QKDecomposition(
        model_name=as_model(model).name,
        layer=layer,
        head=h,
        sequence=seq,
        pairs=[(query, key)],
        how=how or f"query {query}, key {key}",
        query_names=qn,
        query_kinds=qkinds,
        key_names=kn,
        key_kinds=kkinds,
        key_contrib=key_c.numpy(),
        key_vs_mean=key_rel.numpy(),
        query_contrib=qry_c.numpy(),
        query_vs_mean=qry_rel.numpy(),
        pair_contrib=(q_i @ k_j.T * scale).numpy(),
        score=score,
        model_score=float(model_score),
        max_abs_error=abs(score - float(model_score)),
        attention=float(attention),
    )
