"""Gathering a report: run the induction scan and the QK analysis, hand the results to the page.

The page itself (:class:`headscope.render.page.Report`) never touches a model; this is the
place that does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import BadInput
from ..models.inputs import TokenSequence, encode_texts
from ..models.model import as_model, in_eval_mode
from ..progress import Progress
from ..render.html import MAX_VIEW_TOKENS
from ..render.page import Report
from ..results import AttentionViews
from ..scan import attention_sample, scan_induction
from ..settings import ScanSettings


@in_eval_mode
def build_report(
    model,
    texts: list[str] | list[tuple[str, str]] | None = None,
    settings: ScanSettings | Mapping[str, Any] | None = None,
    *,
    qk: bool = True,
    qk_top: int = 3,
    logits: bool = True,
    builtin_texts: bool = True,
    sinks: bool = True,
    progress: bool | None = None,
    log: Callable[[str], None] = lambda s: None,
    **keywords: Any,
) -> Report:
    """Run the induction scan, the QK analysis and the logit analysis on ``model``; gather them into a :class:`Report`.

    ``texts``: a string, or strings or ``(title, text)`` pairs, for the attention views and the QK and logit
    analyses (None: the built-in samples; with ``builtin_texts=False`` and no ``texts``, no
    attention views: the page of the scan alone; an empty list otherwise is refused, not read as the samples); each goes through the one input path, cut to
    the page's window of :data:`~headscope.render.html.MAX_VIEW_TOKENS` tokens (said on the page).
    The scan runs with ``settings`` (:class:`~headscope.settings.ScanSettings` or a mapping of its
    fields; default: its defaults), any of its fields replaced by ``keywords`` (``seq_len=``, ``top_k=``, ...).
    The QK analysis takes the scan's top ``qk_top`` induction and previous-token heads; the
    logit analysis (``logits``) reuses the scan (its direct effects and ablation) and the QK
    analysis's composition scores, and tells the story of the top ``qk_top`` induction heads. ``attention``: the
    scan's path (see :func:`~headscope.scan.scan_induction`); the attention views and the QK
    analysis draw full patterns either way. ``sinks``: read the attention-sink role in Gu et al.'s
    setting (:func:`~headscope.pipeline.roles.add_sink_role`; cached on disk per model).

    >>> report = build_report(model, seq_len=8, batch=2, top_k=2, qk_top=1)
    >>> [anchor for anchor, _, _ in report.sections()][:3]
    ['top', 'roles', 'heatmaps']
    """
    if texts is not None and len(texts) == 0 and builtin_texts:
        raise BadInput(
            "texts holds no text, so there is nothing to draw the attention views on",
            hint="pass texts=None for the built-in samples, or builtin_texts=False for a page without attention views",
        )
    m = as_model(model)
    st = ScanSettings.from_keywords(settings, **keywords)
    seqs = texts_to_sequences(m, texts) if texts or builtin_texts else []
    res = scan_induction(m, st, progress=progress)
    heads = [(l, h) for l, h, _ in res.top_heads("induction", min(st.top_k, 6))]
    if sinks:
        from .roles import add_sink_role

        log("attention sinks on natural text (Gu et al.'s setting)")
        add_sink_role(m, res)
    if seqs:
        log("attention of the top heads on the texts")
    samples = [
        attention_sample(m, seq, heads, f"Top induction heads on {seq.title}", max_tokens=MAX_VIEW_TOKENS)
        for seq in seqs
    ]
    rep = Report(dict(res.model), [res, AttentionViews.of(res, samples, [s.text for s in seqs])], list(res.notes))
    qk_result = None
    if qk:
        from ..qk import analyze_qk

        def say(stage: str) -> None:
            if stage != "quick induction scan":  # not run: the QK analysis picks its heads from our scan
                log(f"QK: {stage}")

        qk_result = analyze_qk(m, seqs, top=qk_top, scan=res, progress=Progress(False, lines=True, log=say))
        rep.results.append(qk_result)
    if logits:
        from .logit_analysis import analyze_logits

        logit_result = analyze_logits(
            m,
            seqs,
            top=qk_top,
            scan=res,
            composition=qk_result.composition if qk_result is not None else None,
            progress=Progress(False, lines=True, log=lambda stage: log(f"logits: {stage}")),
        )
        rep.results.append(logit_result)
    return rep


def texts_to_sequences(model, texts, max_tokens: int = MAX_VIEW_TOKENS) -> list[TokenSequence]:
    """Strings or ``(title, text)`` pairs (None: the samples) through the one input path; one string is one text."""
    if isinstance(texts, str):
        texts = [texts]
    said = f"the attention views' window of {max_tokens} tokens"  # a page's or the figures' (induction --text)
    if not texts:
        return encode_texts(model, None, max_tokens=max_tokens, limit_name=said)
    pairs = [t if isinstance(t, tuple) else (f"text {i}", t) for i, t in enumerate(texts, 1)]
    titles = [n for n, _ in pairs]
    return encode_texts(model, [t for _, t in pairs], max_tokens=max_tokens, titles=titles, limit_name=said)
