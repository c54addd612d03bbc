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
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..head_labels import head_label
from ..head_labels import top_k as top_k_heads
from ..kinds.icl import ICL_DEFAULT_WINDOWS, icl_score
from ..kinds.sink import SinkScores, sink_scores_on_text
from ..models.model import as_model
from ..progress import Progress
from ..results.heads_analysis import HeadsAnalysis
from ..scan import scan_induction
from ..settings import ScanSettings

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


def analyze_heads(
    model,
    settings: ScanSettings | None = None,
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

    The scan (``settings``, a :class:`~headscope.settings.ScanSettings`, its fields replaced by
    ``keywords``: ``seq_len=``, ``attention=``, ...; run without its causal check) scores every
    head; its ``thresholds`` override the registry's role thresholds. With ``icl``, Olsson et
    al.'s score on ``icl_windows`` windows of 512 tokens of ``files`` (default: CPython's
    ``pydoc_data.topics``) and the change when each of the ``icl_top`` top induction heads is
    ablated (the settings' ``ablation``: mean or zero). With ``natural_sinks``, Gu et al.'s sink scores on
    ``sink_windows`` windows of 64 tokens of the same text.

    >>> a = analyze_heads(model, seq_len=8, batch=2, icl=False, progress=False)
    >>> sorted(a.role_counts()) == sorted(a.role_names()), a.icl is None
    (True, True)
    """
    m = as_model(model)
    timings: dict[str, float] = {}
    st = ScanSettings.from_keywords(settings, **keywords)
    res = scan_induction(m, replace(st, top_k=max(icl_top, 1), ablate=False), sample=False, progress=progress)
    out = HeadsAnalysis(induction=res, timings=timings, notes=list(res.notes))
    window = icl_window(m)
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
    if natural_sinks:
        log("attention sinks on natural text (Gu et al.'s setting)")
        t0 = time.perf_counter()
        out.natural_sinks = add_sink_role(m, res, files, sink_windows)
        timings["natural_sinks_s"] = time.perf_counter() - t0
    else:
        out.notes.append("attention-sink role not measured (--no-natural-sinks): no head takes it")
    return out


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
