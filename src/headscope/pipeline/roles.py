"""Every kind of head at once: the role table of ``headscope heads``.

One induction scan (repeated random tokens, one forward pass per chunk) gives the registry's
(:data:`headscope.scores.SCORES`) attention scores from the pass and the weight scores (copying,
successor, copy suppression) from the weights, cached on disk. The attention-sink role is read
in Gu et al.'s setting, on natural text (:func:`headscope.kinds.sink_scores_on_text`: 100 windows
of 64 tokens, cached on disk), and joins the scan's scores. A head takes a role for each score
that reaches its threshold. Olsson et al.'s in-context learning score with each top induction
head's ablation delta (:func:`headscope.kinds.icl_score`) follows. The scan's own causal check (ablations on repeated
tokens) is left to ``headscope induction``: here the causal check is the ICL one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ..errors import BadInput
from ..head_labels import head_label
from ..head_labels import top_k as top_k_heads
from ..kinds.documents import as_files, check_holds_a_window, file_documents, unknown_share
from ..kinds.icl import ICL_DEFAULT_WINDOWS, icl_score
from ..kinds.sink import SINK_TOKENS, SinkScores, paper_windows, sink_scores_on_text
from ..models.model import as_model, in_eval_mode
from ..progress import Progress
from ..results.heads_analysis import HeadsAnalysis
from ..scan import scan_induction
from ..settings import ScanSettings, whole_number

#: Natural-text windows of the ICL check by default: enough for a standard error of about 0.3 nats
#: (kinds.icl); the ablated passes restart at the ablated layer and read two positions.
ICL_WINDOWS = ICL_DEFAULT_WINDOWS
#: Heads whose ICL ablation delta is measured by default (the top induction heads).
ICL_TOP = 3
#: Olsson et al.'s positions and headscope's window (kinds.icl's defaults).
ICL_LATE, ICL_WINDOW = 500, 512
#: Gu et al.'s setting: windows of 64 tokens of natural text.
SINK_WINDOWS = 100
SINK_ROLE = "attention_sink"
#: Above this share of the tokenizer's unknown token in the natural text, the sink role is not measured on it.
UNKNOWN_MAX = 0.5


@in_eval_mode
def analyze_heads(
    model,
    settings: ScanSettings | Mapping[str, Any] | None = None,
    *,
    icl: bool = True,
    icl_top: int = ICL_TOP,
    icl_windows: int | None = ICL_WINDOWS,
    natural_sinks: bool = True,
    sink_windows: int = SINK_WINDOWS,
    files=None,
    progress: bool | None = None,
    log: Callable[[str], None] = lambda s: None,
    **keywords: Any,
) -> HeadsAnalysis:
    """Every head's roles across every score of the registry, and the ICL check of the top induction heads.

    The scan (``settings``, a :class:`~headscope.settings.ScanSettings` or a mapping of its fields, replaced by
    ``keywords``: ``seq_len=``, ``attention=``, ...; run without its causal check) scores every
    head; its ``thresholds`` override the registry's role thresholds. With ``icl``, Olsson et
    al.'s score on ``icl_windows`` windows of 512 tokens of ``files`` (default: CPython's
    ``pydoc_data.topics``) and the change when each of the ``icl_top`` top induction heads is
    ablated (the settings' ``ablation``: mean or zero). With ``natural_sinks``, Gu et al.'s sink scores on
    ``sink_windows`` windows of 64 tokens of the same text; skipped, with a note, where the model's
    tokenizer reads most of that text as its unknown token (a word-level toy vocabulary).
    ``files``: one path or a list of them. Bad values raise :class:`~headscope.errors.BadInput`
    before the model runs.

    >>> a = analyze_heads(model, seq_len=8, batch=2, icl=False, progress=False)
    >>> sorted(a.role_counts()) == sorted(a.role_names()), a.icl is None
    (True, True)
    >>> analyze_heads(model, sink_windows=0)
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: sink_windows must be at least 1 (got 0)
      hint: the default is 100 windows of 64 tokens (Gu et al.'s setting)
    """
    check_heads_inputs(icl_top, icl_windows, sink_windows)
    files = as_files(files)
    if files is not None and (icl or natural_sinks):
        file_documents(files)  # every file exists, before the scan runs (read later, in blocks)
    m = as_model(model)
    timings: dict[str, float] = {}
    st = ScanSettings.from_keywords(settings, **keywords)
    window = icl_window(m)
    if (
        files is not None and icl and window is not None
    ):  # text too short for one window: refused now, not after the scan
        check_holds_a_window(m.tokenizer, file_documents(files), window)
    res = scan_induction(m, replace(st, top_k=max(icl_top, 1), ablate=False), sample=False, progress=progress)
    out = HeadsAnalysis(induction=res, timings=timings, notes=list(res.notes))
    if icl and window is None:
        out.notes.append(
            f"in-context learning score skipped: it reads the loss at token {ICL_LATE}, and this model's "
            f"context holds {m.cfg.n_ctx} tokens"
        )
    elif icl and window is not None:
        k = min(icl_top, m.n_layers * m.n_heads)
        heads = [(l, h) for l, h, _ in top_k_heads(res.scores["induction"], k)] if k > 0 else []
        named = ", ".join(head_label(*h) for h in heads) or "no head"
        log(f"in-context learning score on natural text, ablating {named}")
        if window < ICL_WINDOW:
            n_ctx = getattr(m.cfg, "n_ctx", None)
            why = f"the model's context of {n_ctx}" + (", less the first token" if window < (n_ctx or 0) else "")
            out.notes.append(f"in-context learning score on windows of {window} tokens ({why}), not {ICL_WINDOW}")
        t0 = time.perf_counter()
        with Progress(progress).running() as prog:
            out.icl = icl_score(
                m, files, heads=heads, ablation=st.ablation, window=window, max_windows=icl_windows, progress=prog
            )
        timings["icl_s"] = time.perf_counter() - t0
        if out.icl.n_windows < 2:
            out.notes.append(
                f"in-context learning score on {out.icl.n_windows} window: no standard error or 95% interval "
                "(they need at least 2 windows; use more icl_windows (--icl-windows), or longer text)"
            )
    skip = unknown_text(m, files, sink_windows) if natural_sinks else None
    if skip:
        out.notes.append(skip)
    elif natural_sinks:
        log("attention sinks on natural text (Gu et al.'s setting)")
        t0 = time.perf_counter()
        out.natural_sinks = add_sink_role(m, res, files, sink_windows)
        timings["natural_sinks_s"] = time.perf_counter() - t0
    else:
        out.notes.append("attention-sink role not measured (--no-natural-sinks): no head takes it")
    return out


def check_heads_inputs(icl_top, icl_windows, sink_windows) -> None:
    """Refuse counts no run can use (:class:`~headscope.errors.BadInput`), before anything runs."""
    if whole_number("icl_top", icl_top) < 0:
        raise BadInput(
            f"icl_top (--top) cannot be negative (got {icl_top})",
            hint=f"the number of top induction heads to ablate in the ICL check (default {ICL_TOP}); 0 ablates none",
        )
    if icl_windows is not None and whole_number("icl_windows", icl_windows) < 1:
        raise BadInput(
            f"icl_windows (--icl-windows) must be at least 1 (got {icl_windows})",
            hint=f"the default is {ICL_WINDOWS}; None takes every window of the text",
        )
    if whole_number("sink_windows", sink_windows) < 1:
        raise BadInput(
            f"sink_windows must be at least 1 (got {sink_windows})",
            hint=f"the default is {SINK_WINDOWS} windows of {SINK_TOKENS} tokens (Gu et al.'s setting)",
        )


def unknown_text(model, files=None, windows: int = SINK_WINDOWS) -> str | None:
    """Why the attention-sink role is not measured on this natural text, or None when it is.

    A tokenizer that reads most of the text as its unknown token (the toy's word-level vocabulary
    reads English as nothing but ``<unk>``) gives windows that hold no text: a sink measured there
    says nothing.
    """
    m = as_model(model)
    sink_windows, _ = paper_windows(m, files, SINK_TOKENS, windows)  # kept in model.cache: cut once
    share = unknown_share(m.tokenizer, sink_windows)
    if share <= UNKNOWN_MAX:
        return None
    return (
        f"attention-sink role skipped: the tokenizer reads {share:.0%} of the natural text ({sink_windows.corpus}) "
        f"as its unknown token {m.tokenizer.unk_token!r}, so its windows hold no text to measure sinks on; no head "
        "takes that role (pass text in the model's own vocabulary with files= (--file))"
    )


def add_sink_role(model, res, files=None, windows: int = SINK_WINDOWS) -> SinkScores:
    """Gu et al.'s alpha_1 on natural text (:func:`~headscope.kinds.sink_scores_on_text`) as the scan's attention-sink score.

    The registry declares ``attention_sink`` on natural text, so the scan leaves it out; this
    puts it beside the scan's scores, where the roles, tables, JSON and page read it.
    """
    sinks = sink_scores_on_text(model, files, n_sequences=windows)
    res.scores[SINK_ROLE] = sinks.alpha
    return sinks


def icl_window(model) -> int | None:
    """Document tokens per ICL window: 512, or what the model's context holds past its BOS when that is shorter.

    None when the context cannot reach token 500 (the score reads the loss there).
    """
    m = as_model(model)
    n_ctx = getattr(m.cfg, "n_ctx", None)
    room = ICL_WINDOW if n_ctx is None else min(ICL_WINDOW, n_ctx - (m.first_token.id is not None))
    return room if room > ICL_LATE else None
