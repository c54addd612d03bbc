"""The OV circuit of a head, token by token: what attending to a token makes the head write.

The full OV circuit ``W_E W_V W_O W_U`` (Elhage et al. 2021) is vocab x vocab (2.4e9 entries
for SmolLM2); its row for source token ``t`` is the change in every logit when the head
attends fully to ``t``. We keep it factored: ``x_t W_V W_O`` is one ``d_model`` vector per
source token, then one ``[d_model] x [d_model, vocab]`` product gives the row. No vocab x
vocab matrix is formed.

**Effective embedding** (:func:`headscope.models.embedding.effective_embedding`). By default
``x_t`` is the token's **block-0 effective embedding** (McDougall et al. 2023: the token alone
through block 0, embedding + its attention to itself + MLP0), the embedding the copying and
copy-suppression scores read: for a head past layer 0 the bare ``W_E`` row is not what it reads
(``embedding="embed"`` keeps that direct-path reading). Either is taken as the head's ``ln1``
would see it were it the whole residual: centred along d_model (LayerNorm only) and divided by
its RMS ``sqrt(mean(x^2) + eps)``; the ``ln1`` gain is folded into ``W_V`` and the final norm's
gain into ``W_U`` (:mod:`headscope.folded_weights`). On the way out, the head's output is
centred for LayerNorm (what ``ln_final`` does to it); its final scale, which depends on the
whole residual, is left at 1; so is the scale of a post-attention norm (Gemma 2's ``ln1_post``,
whose gain is folded into ``W_O``). Biases (``b_V``, ``b_O``, ``b_U``) are left out: they add the
same vector whatever the source token. Each row is centred over the vocabulary.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Callable, Sequence

import torch

from ..errors import BadInput
from ..folded_weights import HeadWeights, head_weights
from ..models.embedding import effective_embedding
from ..models.inputs import as_sequences, model_vocab, one_head, single_tokens
from ..models.model import as_model, in_eval_mode
from ..results.logit_results import OVRows, ov_definition
from ..settings import whole_number

#: Source tokens per ``[n, vocab]`` block: bounds memory at ~64 x vocab floats.
CHUNK = 64


@torch.no_grad()
def ov_row_block(w: HeadWeights, layer: int, head: int, x: torch.Tensor) -> torch.Tensor:
    """``[n, vocab]`` centred OV rows for effective embeddings ``x [n, d_model]``."""
    out = x @ w.W_V[layer, head].double() @ w.W_O[layer, head].double()  # [n, d_model]
    if w.norm == "layernorm":
        out = out - out.mean(-1, keepdim=True)
    rows = out.to(w.W_U.dtype) @ w.W_U  # one d_model x vocab product per source token
    return rows - rows.mean(-1, keepdim=True)


@torch.no_grad()
def ov_rows(
    w: HeadWeights,
    layer: int,
    head: int,
    token_ids: Sequence[int],
    *,
    k: int = 10,
    eps: float = 1e-5,
    decode: Callable[[int], str] = str,
    model: str = "model",
    x: torch.Tensor | None = None,
    embedding: str = "embed",
) -> OVRows:
    """Top/bottom ``k`` tokens and the self-rank of every source token in ``token_ids`` for head ``layer.head``.

    Works on weights alone (``w``: :func:`headscope.folded_weights.head_weights` or hand-made);
    ``decode`` turns an id into a label. ``x [len(token_ids), d_model]``: the tokens' effective
    embeddings in convention ``embedding`` (e.g. ``"block0"``, from
    :func:`headscope.models.embedding.effective_embedding`); without it, the bare ``W_E`` rows
    (``embedding="embed"``, the direct token path). Either is normalised as the head's ``ln1``
    would see it were it the whole residual.
    """
    ids = [int(t) for t in token_ids]
    V = w.W_U.shape[1]
    k = min(k, V)
    if x is None:
        if embedding != "embed":
            raise BadInput(f"embedding {embedding!r} needs its vectors", hint="pass x= from effective_embedding")
        x = w.W_E[torch.as_tensor(ids, dtype=torch.long, device=w.W_E.device)]
    x = x.double()
    if w.norm == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    x = x / (x.square().mean(-1, keepdim=True) + eps).sqrt()
    tops, topv, bots, botv, selfv, rank = [], [], [], [], [], []
    for start in range(0, len(ids), CHUNK):
        block = ids[start : start + CHUNK]
        rows = ov_row_block(w, layer, head, x[start : start + CHUNK])  # [n, vocab]
        t = rows.topk(k, dim=-1)
        b = rows.topk(k, dim=-1, largest=False)
        own = rows.gather(-1, torch.tensor(block, device=rows.device)[:, None])  # [n, 1]
        tops.append(t.indices)
        topv.append(t.values)
        bots.append(b.indices)
        botv.append(b.values)
        selfv.append(own[:, 0])
        rank.append((rows >= own).sum(-1))  # ties count against the token: a constant row ranks last, not first
    cat = lambda xs: torch.cat(xs).cpu().numpy()  # noqa: E731
    top_ids, bottom_ids = cat(tops), cat(bots)
    return OVRows(
        model_name=model,
        layer=layer,
        head=head,
        token_ids=ids,
        token_labels=[decode(i) for i in ids],
        top_ids=top_ids,
        top_labels=[[decode(int(i)) for i in row] for row in top_ids],
        top_values=cat(topv),
        bottom_ids=bottom_ids,
        bottom_labels=[[decode(int(i)) for i in row] for row in bottom_ids],
        bottom_values=cat(botv),
        self_value=cat(selfv),
        self_rank=cat(rank),
        d_vocab=V,
        convention=ov_definition(embedding),
        embedding=embedding,
    )


def source_tokens(model, tokens=None, text=None, max_tokens: int | None = None) -> list[int]:
    """Token ids to show: ``tokens`` (single-token strings or ids) and/or the distinct tokens of ``text`` (BOS excluded)."""
    ids: list[int] = []
    if tokens is not None:
        tokens = (
            [tokens] if isinstance(tokens, (str, numbers.Integral)) or not hasattr(tokens, "__iter__") else list(tokens)
        )
        names = [t for t in tokens if isinstance(t, str)]
        if names:
            try:
                ids += single_tokens(model.tokenizer, names, minimum=1, d_vocab=model_vocab(model))
            except BadInput as exc:  # same check as the QK token sets, worded for this use
                raise BadInput(exc.message.replace("token set entries", "OV source tokens"), hint=exc.hint) from None
        V = model.cfg.d_vocab
        for t in tokens:
            if not isinstance(t, str):
                try:  # as token_qk reads ids: 5.0 or '5' is not a token id
                    t = operator.index(t)
                except TypeError:
                    raise BadInput(
                        f"OV source tokens are single-token strings or integer token ids, got {t!r:.40} "
                        f"({type(t).__name__})",
                        hint="pass tokens=[' cat', ' dog'] or ids such as [5, 6] (model.tokenizer.encode(' cat'))",
                    ) from None
                if not 0 <= t < V:
                    raise BadInput(
                        f"token id {t} is outside the vocabulary (0..{V - 1})", hint="use an id below d_vocab"
                    )
                ids.append(t)
    if text is not None:
        bos = getattr(model.tokenizer, "bos_token_id", None), getattr(model.tokenizer, "eos_token_id", None)
        for seq in as_sequences(model, text, max_tokens):  # every text given, not only the first
            ids += [i for n, i in enumerate(seq.ids) if not (n == 0 and i in bos)]
    ids = list(dict.fromkeys(ids))  # distinct, in order of appearance
    if not ids:
        raise BadInput(
            "no source tokens for the OV circuit", hint="pass tokens=[' cat', ' dog'] (single tokens) or text='...'"
        )
    return ids


@in_eval_mode
def ov_circuit(
    model,
    head,
    tokens=None,
    *,
    text=None,
    k: int = 10,
    max_tokens: int | None = None,
    weights: HeadWeights | None = None,
    embedding: str = "block0",
) -> OVRows:
    """Which tokens head ``head`` promotes and suppresses when it attends to each source token.

    ``embedding``: how a source token is read (:mod:`headscope.models.embedding`): ``"block0"``
    (default; McDougall et al. 2023's effective embedding, the one the copying and
    copy-suppression scores read) or ``"embed"`` (the bare ``W_E``: the direct token path).

    ``tokens``: strings that are single tokens (``" cat"``; others are refused with how
    they tokenise) or token ids; ``text`` (one text or several): its distinct tokens are used as sources (BOS
    left out). ``self_rank == 1`` means the head copies that token: it counts the vocabulary entries at or
    above the token's own, so ties count against it (a row that prefers nothing ranks last, not first).

    >>> import headscope
    >>> ov = headscope.ov_circuit(model, "L1H2", [" cat", " dog"])
    >>> ov.label, ov.token_labels
    ('L1H2', [' cat', ' dog'])
    >>> ov.to_frame()[["token", "self_rank", "promotes"]].shape
    (2, 3)
    >>> bool((ov.top_values[:, 0] >= ov.self_value).all())   # nothing ranks above the top
    True
    """
    layer, h = one_head(model, head, "ov_circuit")
    if whole_number("k", k) < 1:
        raise BadInput(f"k must be at least 1 (got {k}): the tokens each row promotes and suppresses", hint="e.g. k=10")
    ids = source_tokens(model, tokens, text, max_tokens)
    w = weights or head_weights(model)
    tok = model.tokenizer
    return ov_rows(
        w,
        layer,
        h,
        ids,
        k=k,
        eps=float(getattr(model.cfg, "eps", 1e-5)),
        decode=lambda i: tok.decode([i]),
        model=as_model(model).name,
        x=None if embedding == "embed" else effective_embedding(model, ids, embedding),
        embedding=embedding,
    )
