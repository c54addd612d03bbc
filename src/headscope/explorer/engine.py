"""The explorer's computations: one model, a cache of texts, and every view answered from it.

:class:`Explorer` holds the model (loaded once), its folded weights and unembedding (once), the
model's random-repeat scan (once, :func:`headscope.scan.scan_induction` without the causal
check) and a cache of :class:`~headscope.explorer.state.TextState` keyed by text, bounded in
bytes. A text is run once (:func:`~headscope.explorer.state.compute_text`); choosing a head or
a position reads the cached pass: the head's pattern from its queries, keys and logsumexp, the
QK decomposition (:func:`headscope.qk.decompose.decompose_qk` on the cached activations, cut at
the query, since attention is causal), the OV rows (:func:`headscope.logits.ov_rows.ov_rows`)
and the direct logit attribution (:class:`headscope.scan.direct.DirectPass`'s maths on the
cached activations for a token the user names).

Views come back as the project's result types (``QKDecomposition``, ``OVRows``,
``LogitAttribution``, ``AttentionSample``, ``InductionResult``) plus JSON-ready dicts for the
page; :meth:`Explorer.page_html` puts the same results on the report page.
"""

from __future__ import annotations

import dataclasses
import html
import re
import threading
import time
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import torch

from ..circuits.path_patching import Receiver, path_patching
from ..circuits.tasks import CircuitTask
from ..errors import BadInput
from ..folded_weights import head_weights
from ..head_labels import head_label
from ..hooks import act_name
from ..logits.ov_rows import ov_rows
from ..models.embedding import effective_embedding
from ..models.inputs import TokenSequence, as_heads, encode, model_vocab, single_tokens
from ..models.model import as_model
from ..qk.decompose import decompose_pair, decompose_qk
from ..render.page import Report
from ..render.views.circuit_view import ONE_EXAMPLE, PathPatchingView, gap_warning_html
from ..results.attention import AttentionSample, AttentionViews
from ..results.base import rounded
from ..results.logit_results import DLA_DEFINITION, LogitAttribution, OVRows
from ..results.patching_results import PathPatching
from ..results.qk_results import QKDecomposition
from ..results.scan_result import InductionResult
from ..scan.direct import DirectEffects, DirectPass, unembedding
from ..scan.induction_scan import scan_induction
from ..scores import SCORES, attention_scores, score
from ..tokens import token_text
from .state import TextState, check_explorable, compute_text

#: Most tokens a pattern view sends (a window ending at the chosen query); the chosen query's row is sent whole.
PATTERN_WINDOW = 64
#: Tokens shown per OV source and per side of a head's write.
TOP_TOKENS = 8
#: The hint when a token the page names is not one token.
TOKEN_HINT = "name a single token, often with a leading space as in ' cat', or leave the box empty"
#: What the token a logit view explains is, by how it was chosen (``position_view``'s ``target_kind``).
TARGET_KINDS = {
    "next": "the actual next token",
    "named": "the token you named",
    "top": "the model's top prediction, as the text ends here",
}


class _OneHead:
    """``acts[name][head]`` for the one head a decomposition reads, so no other head's ``n x n`` is built."""

    def __init__(self, head: int, value: torch.Tensor):
        self.head, self.value = head, value

    def __getitem__(self, head: int) -> torch.Tensor:
        if head != self.head:
            raise KeyError(head)
        return self.value


class Explorer:
    """One model behind the explorer's views; texts are computed once and kept (LRU, ``cache_mb`` in all).

    >>> ex = Explorer(model, max_tokens=64)
    >>> view = ex.text_view(" a b c a b c")  # BOS + " a", " b", " c" twice: later-repeat scores are read
    >>> view["n_tokens"], view["layout"]["repeats"]
    (7, 2)
    >>> ex.head_view(" a b c a b c", "L1H2", 6)["position"], ex.qk_view(" a b c a b c", "L1H2", 6)["qk"]["pairs"][0][0]
    (6, 6)
    >>> len(ex.position_view(" a b c a b c", 3)["heads"]) == model.cfg.n_layers
    True
    """

    def __init__(self, model, *, max_tokens: int = 1024, cache_mb: float = 2048, scan_settings=None):
        self.model = m = as_model(model)
        self.max_tokens = min(max_tokens, m.n_ctx)
        self.cache_bytes = int(cache_mb * 2**20)
        self.w = head_weights(m)
        check_explorable(m, self.w)
        self.ue = unembedding(m, self.w)
        # the decomposition reads W_Q, W_K, W_O and the biases in float64: converted once, not per view
        f64 = {k: getattr(self.w, k).double() for k in ("W_Q", "W_K", "W_O", "b_Q", "b_K", "b_O")}
        self.w_qk = dataclasses.replace(self.w, **f64)
        self.eps = float(getattr(m.cfg, "eps", 1e-5))
        self._texts: OrderedDict[str, TextState] = OrderedDict()
        self._scan: InductionResult | None = None
        self._scan_settings = scan_settings
        self._lock = threading.Lock()  # the cache; computations are serialised by the server's gate

    # --- what is computed once ---------------------------------------------------------------
    def scan(self) -> InductionResult:
        """The model's random-repeat scores: every registry score on repeated random tokens (no causal check)."""
        if self._scan is None:
            kw = {"ablate": False, "sample": False, "progress": False}
            self._scan = scan_induction(self.model, self._scan_settings, **kw)
        return self._scan

    def state(self, text: str, title: str = "your text") -> TextState:
        """The text's one pass, from the cache or computed now (the oldest texts leave when over budget).

        ``title`` names the text in messages: "your text", or "the corrupted text" for the paths' second text."""
        with self._lock:
            hit = self._texts.get(text)
            if hit is not None:
                self._texts.move_to_end(text)
                return hit
        t0 = time.perf_counter()
        seq = encode(
            self.model,
            text,
            max_tokens=self.max_tokens,
            title=title,
            empty_hint="type some text into the box, ideally one that repeats itself"
            if title == "your text"
            else "type the corrupted text: your text with a word swapped for another one-token word",
        )
        st = compute_text(self.model, seq)
        st.seconds = time.perf_counter() - t0
        with self._lock:
            self._texts[text] = st
            while len(self._texts) > 1 and sum(s.nbytes for s in self._texts.values()) > self.cache_bytes:
                self._texts.popitem(last=False)
        return st

    # --- checks on what the page asks for ----------------------------------------------------
    def head(self, spec) -> tuple[int, int]:
        ((layer, h),) = as_heads(self.model, [spec])
        return layer, h

    @staticmethod
    def position(st: TextState, pos) -> int:
        if pos is None:
            return st.n - 1
        if isinstance(pos, bool) or not isinstance(pos, int):
            raise BadInput(f"position {pos!r} is not a whole number", hint=f"use 0..{st.n - 1}")
        if not 0 <= pos < st.n:
            raise BadInput(
                f"position {pos} is outside the text's {st.n} tokens", hint=f"use 0..{st.n - 1} (0 is the first token)"
            )
        return pos

    def one_token(self, name: str, what: str) -> int:
        """The id of ``name``, which must be one token (refused as ``what`` with how it tokenises)."""
        return single_tokens(
            self.model.tokenizer, [name], minimum=1, what=what, hint=TOKEN_HINT, d_vocab=model_vocab(self.model)
        )[0]

    def target(self, st: TextState, pos: int, target: str | None) -> int:
        """The token a logit view is about: the one the user names (a single token), else the next token, else the top prediction."""
        if target:
            return self.one_token(target, "the token to explain")
        if pos + 1 < st.n:
            return st.seq.ids[pos + 1]
        return int(st.logits(pos).argmax())

    # --- views -------------------------------------------------------------------------------
    def text_view(self, text: str) -> dict:
        """Tokens, notes and the heads x scores table (this text's scores, then the model's random-repeat scores)."""
        st = self.state(text)
        scan = self.scan()
        cols, values = [], []
        for s in attention_scores():
            v = st.scores.get(s.name)
            if v is not None:
                cols.append({"key": f"text:{s.name}", "header": f"{s.header} (text)", "title": s.definition})
                values.append(v)
        for s in SCORES:
            if s.name in scan.scores:
                cols.append({"key": f"random:{s.name}", "header": f"{s.header} (rand)", "title": s.definition})
                values.append(scan.scores[s.name])
        L, H = self.model.n_layers, self.model.n_heads
        grid = np.stack(values) if values else np.zeros((0, L, H))
        rows = [
            {"head": head_label(l, h), "layer": l, "index": h, "values": [_num(x) for x in grid[:, l, h]]}
            for l in range(L)
            for h in range(H)
        ]
        lay = st.layout
        return {
            "model": self.model.name,
            "tokens": list(st.seq.labels),
            "ids": list(st.seq.ids),
            "n_tokens": st.n,
            "notes": list(st.seq.notes) + _layout_notes(st),
            "layout": {"seq_len": lay.seq_len, "repeats": lay.repeats, "first_token": lay.bos},
            "columns": cols,
            "rows": rows,
            "seconds": round(st.seconds, 4),
        }

    def head_view(self, text: str, head, pos=None) -> dict:
        """The head's pattern (a window ending at ``pos``, and ``pos``'s whole row) and what it writes at ``pos``.

        Built from the cached queries, keys and logsumexp: the only ``n x n`` is this head's window.
        """
        st = self.state(text)
        layer, h = self.head(head)
        pos = self.position(st, pos)
        start = max(0, min(pos + 1, st.n) - PATTERN_WINDOW) if st.n > PATTERN_WINDOW else 0
        stop = min(st.n, start + PATTERN_WINDOW)
        return {
            "head": head_label(layer, h),
            "position": pos,
            "window": [start, stop],
            "pattern": np.round(st.pattern(layer, h, start, stop), 4).tolist(),
            "row": np.round(st.row(layer, h, pos), 4).tolist(),
            "write": self.write(st, layer, h, pos),
        }

    def qk_view(self, text: str, head, pos=None) -> dict:
        """Why the head attends where it does from ``pos`` (QK decomposition) and its OV rows there."""
        st = self.state(text)
        layer, h = self.head(head)
        pos = self.position(st, pos)
        return {
            "head": head_label(layer, h),
            "position": pos,
            "qk": _qk_dict(self.qk(st, layer, h, pos)),
            "ov": _ov_dict(self.ov(st, layer, h, pos)),
        }

    def position_view(self, text: str, pos=None, target: str | None = None) -> dict:
        """Top predictions at ``pos`` and every head's direct effect on the target token's logit there."""
        st = self.state(text)
        pos = self.position(st, pos)
        t = self.target(st, pos, target)
        kind = "named" if target else "next" if pos + 1 < st.n else "top"
        la = self.direct(st, pos, t, start=pos)
        heads = la.heads[-1]  # [L, H] at pos
        probs = torch.softmax(st.logits(pos).double(), -1)
        top = probs.topk(min(10, probs.numel()))
        tok = self.model.tokenizer
        order = np.argsort(-np.abs(heads), axis=None)[:12]
        return {
            "position": pos,
            "token": st.seq.labels[pos],
            "target": token_text(tok, t),
            "target_id": t,
            "actual_next": pos + 1 < st.n and st.seq.ids[pos + 1] == t,
            "target_kind": kind,
            "target_is": TARGET_KINDS[kind],
            "predictions": [
                {"token": token_text(tok, int(i)), "id": int(i), "prob": round(float(p), 5)}
                for p, i in zip(top.values, top.indices)
            ],
            "heads": np.round(heads, 4).tolist(),
            "top_heads": [
                {"head": head_label(int(l), int(h)), "effect": round(float(heads[l, h]), 4)}
                for l, h in zip(*np.unravel_index(order, heads.shape))
            ],
            "heads_total": round(float(heads.sum()), 4),
            "components": {k: round(float(v[-1]), 4) for k, v in la.components.items()},
            "logit": round(float(la.logit[-1]), 4),
            "model_logit": round(float(la.model_logit[-1]), 4),
            "definition": DLA_DEFINITION,
        }

    def paths_view(self, text: str, pos, corrupt: str, target: str | None = None, wrong: str | None = None) -> dict:
        """Causal paths into the prediction at ``pos``: every head's direct path to the logits, path-patched.

        :func:`headscope.circuits.path_patching.path_patching` with the logits as receiver, noising
        (the clean text's run, one head's output taken from the ``corrupt`` text's run along its direct
        path only), metric: logit of the target minus logit of the wrong token at ``pos``.
        """
        pp, answer, wrong_id = self.paths(self.state(text), pos, corrupt, target, wrong)
        tok = self.model.tokenizer
        p, cs = pp_pos(pp), self.state(corrupt, "the corrupted text")
        nxt = p + 1 < cs.n and cs.seq.ids[p + 1] == wrong_id
        return {
            "position": p,
            "answer": token_text(tok, answer),
            "answer_is": TARGET_KINDS["named" if target else "next" if p + 1 < self.state(text).n else "top"],
            "wrong": token_text(tok, wrong_id),
            "wrong_is": "the token you named"
            if wrong
            else "the corrupted text's next token"
            if nxt
            else "the corrupted run's top prediction other than the token explained",
            "metric": pp.metric,
            "clean_metric": round(pp.clean_metric, 4),
            "corrupt_metric": round(pp.corrupt_metric, 4),
            **_paths_shown(pp),
            "notes": [ONE_EXAMPLE, pp.notes[-1]],  # the page shows the texts and tokens itself
        }

    def paths(self, st: TextState, pos, corrupt: str, target: str | None = None, wrong: str | None = None):
        """The :class:`PathPatching` of :meth:`paths_view`, with the answer and wrong token ids."""
        pos = self.position(st, pos)
        cs = self.state(corrupt, "the corrupted text")
        if cs.n < pos + 1:
            raise BadInput(
                f"the corrupted text has {cs.n} tokens; patching at position {pos} needs at least {pos + 1}",
                hint="give a corrupted text with as many tokens up to that position (swap a word for another one-token word)",
            )
        answer = self.target(st, pos, target)
        if wrong:
            wrong_id = self.one_token(wrong, "the wrong token")
        elif pos + 1 < cs.n and cs.seq.ids[pos + 1] != answer:
            wrong_id = cs.seq.ids[pos + 1]  # what comes next in the corrupted text
        else:
            wrong_id = next(int(i) for i in cs.logits(pos).topk(2).indices if int(i) != answer)
        if wrong_id == answer:
            raise BadInput("the wrong token is the token explained", hint="name another wrong token")
        clean, bad = st.seq.ids[: pos + 1], cs.seq.ids[: pos + 1]
        if clean == bad:
            raise BadInput(
                "the corrupted text is the same as the text up to this position",
                hint=f"change a token at or before position {pos}",
            )
        one = lambda x: torch.tensor([x], dtype=torch.long)
        task = CircuitTask(
            name="explorer",
            clean=one(clean),
            corrupt=one(bad),
            positions=one([pos]),
            answer=one([answer]),
            wrong=one([wrong_id]),
            counted=torch.tensor([[True]]),
            corruption="the corrupted text typed in the explorer, up to the chosen position",
            notes=[  # the saved page's path view shows these: what was patched, and the one example's caveat
                f"the text up to position {pos}: {_quoted(st.seq.labels[: pos + 1])}",
                f"the corrupted text up to it: {_quoted(cs.seq.labels[: pos + 1])}",
                f"logit_diff: logit of {token_text(self.model.tokenizer, answer)!r} minus logit of "
                f"{token_text(self.model.tokenizer, wrong_id)!r} at position {pos}",
                ONE_EXAMPLE,
            ],
        )
        pp = path_patching(self.model, task, None, Receiver.logits(), direction="noise")
        if not np.isfinite(pp.values).all():
            raise BadInput(
                "the text and the corrupted text give the same logit difference here: no gap to explain",
                hint="corrupt a token the prediction depends on, or name another wrong token",
            )
        pp.notes.append(f"read at position {pos}")
        return pp, answer, wrong_id

    # --- the results behind the views --------------------------------------------------------
    def qk(self, st: TextState, layer: int, head: int, pos: int) -> QKDecomposition:
        """The QK decomposition at query ``pos`` and its most-attended key (BOS excluded), from the cache.

        :func:`~headscope.qk.decompose.decompose_pair` (the same numbers as ``decompose_qk``, which
        splits every position; tested) on the cached activations cut after ``pos`` (causal: exact)."""
        T = pos + 1
        row = st.row(layer, head, pos)
        pick = row.copy()
        if pos > 0:
            pick[0] = -1  # explain content, not the BOS sink (decompose_qk's rule)
        key = int(pick.argmax())
        how = f"query {pos} and its most-attended key {key}" + (" (BOS excluded)" if pos > 0 else "")
        raw = float(st.scores_qk(layer, head, slice(pos, pos + 1), slice(key, key + 1))[0, 0])
        return decompose_pair(
            self.model,
            (layer, head),
            _cut(st.seq, T),
            pos,
            key,
            self._acts(st, layer, T),
            weights=self.w_qk,
            model_score=raw,
            attention=float(row[key]),
            how=how,
        )

    def _acts(self, st: TextState, layer: int, T: int) -> dict:
        """The hooks a decomposition of a head in ``layer`` reads, positions ``0..T-1``, float64."""
        acts: dict = {k: st.acts[k][:T].double() for k in ("hook_embed", "hook_pos_embed") if k in st.acts}
        for name in (act_name("resid_pre", layer), act_name("ln1.scale", layer)):
            acts[name] = st.acts[name][:T].double()
        for e in range(layer):
            for name in (act_name("z", e), act_name("mlp_out", e)):
                acts[name] = st.acts[name][:T].double()
        return acts

    def qk_full(self, st: TextState, layer: int, head: int, pos: int) -> QKDecomposition:
        """:func:`~headscope.qk.decompose.decompose_qk` itself on the cache (every position split): the reference."""
        T = pos + 1
        acts = self._acts(st, layer, T)
        raw = st.scores_qk(layer, head, slice(0, T), slice(0, T))
        acts[act_name("attn_scores", layer)] = _OneHead(head, raw)
        acts[act_name("pattern", layer)] = _OneHead(
            head, torch.tril(torch.exp(raw - st.lse[layer][head, :T].double()[:, None]))
        )
        return decompose_qk(self.model, (layer, head), _cut(st.seq, T), query=pos, weights=self.w_qk, acts=acts)

    def ov(self, st: TextState, layer: int, head: int, pos: int, row: np.ndarray | None = None) -> OVRows:
        """OV rows (block-0 effective embedding) of the tokens the head attends to most from ``pos`` (up to 3, BOS excluded)."""
        row = (st.row(layer, head, pos) if row is None else row).copy()
        if pos > 0:
            row[0] = -1  # the first token (a sink) is not what the head reads: as the QK view, left out
        keys = np.argsort(-row)[:3]
        ids = list(dict.fromkeys(int(st.seq.ids[k]) for k in keys))
        tok = self.model.tokenizer
        return ov_rows(
            self.w,
            layer,
            head,
            ids,
            k=TOP_TOKENS,
            eps=self.eps,
            decode=lambda i: tok.decode([i]),
            model=self.model.name,
            x=effective_embedding(self.model, ids, "block0"),
            embedding="block0",
        )

    @torch.no_grad()
    def write(self, st: TextState, layer: int, head: int, pos: int) -> dict:
        """What the head actually writes at ``pos``: its output ``z W_O`` through the final norm (scale frozen)
        and the unembedding, centred over the vocabulary: the tokens it pushes up and down most (direct path)."""
        w = self.w
        out = st.acts[act_name("z", layer)][pos, head].double() @ w.W_O[layer, head].double()
        if w.norm == "layernorm":
            out = out - out.mean()
        s = float(st.acts["ln_final.hook_scale"][pos].reshape(-1)[0])
        rows = (out / s).to(w.W_U.dtype) @ w.W_U
        rows = (rows - rows.mean()).double()
        tok = self.model.tokenizer
        up, down = rows.topk(TOP_TOKENS), rows.topk(TOP_TOKENS, largest=False)
        pick = lambda r: [{"token": token_text(tok, int(i)), "effect": round(float(v), 4)} for v, i in zip(*r)]
        return {"promotes": pick(up), "suppresses": pick(down)}

    @torch.no_grad()
    def logit_attribution(self, st: TextState, pos: int, target: int) -> LogitAttribution:
        """Direct logit attribution on the text cut after ``pos`` with ``target`` as the next token.

        Positions before ``pos`` are scored on their actual next tokens, ``pos`` on ``target``: the
        maths of :class:`~headscope.scan.direct.DirectPass` on the cached activations, equal to
        :func:`headscope.logits.logit_attribution` on those token ids (no forward pass).
        """
        d = self.direct(st, pos, target)
        seq = _cut(st.seq, pos + 1)
        seq.ids.append(int(target))
        seq.labels.append(token_text(self.model.tokenizer, int(target)))
        return LogitAttribution(
            model_name=self.model.name,
            sequence=seq,
            heads=d.heads,
            components=d.components,
            logit=d.logit,
            model_logit=d.model_logit,
            scale=d.scale,
        )

    @torch.no_grad()
    def direct(self, st: TextState, pos: int, target: int, start: int = 0) -> DirectEffects:
        """Direct effects ``[P, ...]`` at positions ``start..pos``, each on its actual next token, ``pos`` on ``target``.

        :class:`DirectPass`'s hooks are fed the cached activations (one padding row at the end, which
        its reduction drops), so the numbers are those of a pass over the same token ids.
        """
        ids = list(st.seq.ids[start : pos + 1]) + [int(target)]
        run = DirectPass(self.model, torch.tensor([ids]), self.w_qk, self.ue)  # W_O already float64: no copy per view
        for name, hook in run.hooks:  # the row after pos is dropped by the reduction: any row will do
            x = st.acts[name][start : pos + 2]
            x = x if len(x) == pos + 2 - start else torch.cat([x, torch.zeros_like(x[:1])])
            hook(x[None], SimpleNamespace(name=name))
        x = st.logits(pos)[None] if start == pos else st.logits(slice(start, pos + 1))
        d = run.finish(torch.cat([x, torch.zeros_like(x[:1])])[None])
        return DirectEffects(
            d.heads[0], {k: v[0] for k, v in d.components.items()}, d.logit[0], d.model_logit[0], d.scale[0]
        )

    # --- the saved page ------------------------------------------------------------------------
    def results(
        self, text: str, head, pos=None, target: str | None = None, corrupt: str | None = None, wrong: str | None = None
    ) -> list:
        """The results of the current view: the model's scan, the head on the text, its QK and OV, the logit view,
        and with a ``corrupt`` text the causal paths (``wrong``: the wrong token the live view was given)."""
        st = self.state(text)
        layer, h = self.head(head)
        pos = self.position(st, pos)
        keep = min(st.n, 96)
        sample = AttentionSample(
            f"{head_label(layer, h)} on your text",
            list(st.seq.labels[:keep]),
            [(layer, h)],
            st.pattern(layer, h, 0, keep)[None],
            "; ".join(st.seq.notes + ([f"showing the first {keep} of {st.n} tokens"] if keep < st.n else [])),
            list(st.seq.ids[:keep]),
            text,
        )
        views = AttentionViews(
            [sample], [text], title=f"Attention of {head_label(layer, h)} on your text (interactive)"
        )
        la = self.logit_attribution(st, pos, self.target(st, pos, target))
        out = [self.scan(), views, self.qk(st, layer, h, pos), self.ov(st, layer, h, pos), la]
        return out + ([self.paths(st, pos, corrupt, target, wrong)[0]] if corrupt else [])

    def page_html(
        self, text: str, head, pos=None, target: str | None = None, corrupt: str | None = None, wrong: str | None = None
    ) -> str:
        """The current view as the same self-contained offline page ``headscope report`` writes."""
        results = self.results(text, head, pos, target, corrupt, wrong)
        note = f"Saved from headscope serve: head {head_label(*self.head(head))}, query position {self.position(self.state(text), pos)}."
        return Report(self.model.info(), results, [note]).to_html()


def _paths_shown(pp: PathPatching) -> dict:
    """The paths as the saved page's table shows them (``PathPatchingView``: the same rows, order and column):
    the share of the gap each carries, or, when the clean - corrupted gap is no gap (``normalised_meaningful``
    false: the wrong sign), the change in the metric, with the saved page's warning as plain text. ``gap`` and
    ``normalised_meaningful`` are the result's own JSON fields."""
    d = pp.to_dict()
    cols, rows = PathPatchingView().table_rows(pp)  # the saved page's table: its header and its rows, in order
    at = {s: i for i, s in enumerate(pp.senders)}
    warning = gap_warning_html(pp)  # the saved page's paragraph; the live page writes text, not HTML
    return {
        "gap": d["gap"],
        "normalised_meaningful": d["normalised_meaningful"],
        "shown": "effect" if pp.normalised_meaningful or not len(pp.change) else "change",
        "column": cols[2],
        "warning": html.unescape(re.sub(r"<[^>]+>", "", warning)) if warning else None,
        "paths": [
            {
                "sender": r[0],
                "effect": rounded(pp.effect[at[r[0]]], 4),
                "change": rounded(pp.change[at[r[0]]], 4) if len(pp.change) else None,
            }
            for r in rows
        ],
    }


def pp_pos(pp: PathPatching) -> int:
    """The position a path patching of :meth:`Explorer.paths` was read at (its last note)."""
    return int(pp.notes[-1].split()[-1])


def _quoted(labels: list[str], keep: int = 24) -> str:
    """The tokens of a text as one quoted string, the last ``keep`` of them after an ellipsis."""
    cut = len(labels) > keep
    return '"' + ("…" if cut else "") + "".join(labels[-keep:] if cut else labels) + '"'


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 4)


def _cut(seq: TokenSequence, n: int) -> TokenSequence:
    return TokenSequence(
        text=seq.text,
        ids=list(seq.ids[:n]),
        labels=list(seq.labels[:n]),
        notes=list(seq.notes),
        title=seq.title,
        n_text_tokens=seq.n_text_tokens,
    )


def _layout_notes(st: TextState) -> list[str]:
    lay = st.layout
    if lay.repeats > 1:
        return [f"this text is {lay.repeats} repeats of {lay.seq_len} tokens: the later-repeat scores are read on it"]
    missing = [score(n).label for n, v in st.scores.items() if v is None]
    return (
        [
            "this text's tokens are not one piece repeated, so "
            + ", ".join(missing)
            + " (defined on repeats) are shown on the model's random repeats only"
        ]
        if missing
        else []
    )


def _qk_dict(d: QKDecomposition, k: int = 10) -> dict:
    def side(names, kinds, c, rel):
        order = np.argsort(-np.abs(rel))[:k]
        return [
            {
                "component": names[i],
                "kind": kinds[i],
                "vs_mean": round(float(rel[i]), 4),
                "contribution": round(float(c[i]), 4),
            }
            for i in order
        ]

    return {
        "head": d.label,
        "pairs": [list(p) for p in d.pairs],
        "how": d.how,
        "score": round(d.score, 4),
        "model_score": round(d.model_score, 4),
        "max_abs_error": float(d.max_abs_error),
        "attention": round(d.attention, 4),
        "note": d.note,
        "key": side(d.key_names, d.key_kinds, d.key_contrib, d.key_vs_mean),
        "query": side(d.query_names, d.query_kinds, d.query_contrib, d.query_vs_mean),
    }


def _ov_dict(ov: OVRows) -> dict:
    return {
        "convention": ov.convention,
        "sources": [
            {
                "token": ov.token_labels[i],
                "self_rank": int(ov.self_rank[i]),
                "promotes": [
                    {"token": t, "effect": round(float(v), 4)} for t, v in zip(ov.top_labels[i], ov.top_values[i])
                ],
                "suppresses": [
                    {"token": t, "effect": round(float(v), 4)} for t, v in zip(ov.bottom_labels[i], ov.bottom_values[i])
                ],
            }
            for i in range(len(ov.token_ids))
        ],
    }
