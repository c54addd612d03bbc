"""headscope: find and explain the attention heads of transformer language models.

>>> import headscope
>>> model = headscope.load_model(tiny_gpt2_dir)       # or the default: headscope.load_model()
>>> result = headscope.scan_induction(model, seq_len=10, batch=2, ablate=False, sample=False)
>>> [(layer, head) for layer, head, _ in result.top_heads("induction", 2)] == [
...     (l, h) for l, h, _ in headscope.top_k(result.scores["induction"], 2)]
True
"""

from ._version import __version__
from .errors import BadInput, HeadscopeError, ModelLoadError, OutputError, OutputExists
from .head_labels import head_label, parse_head, top_k
from .logits import LogitAttribution, OVRows, logit_attribution, ov_circuit
from .models import DEFAULT_MODEL, HeadscopeModel, load_model
from .pipeline import Report, build_report, plan_sweep, run_sweep
from .pipeline.logit_analysis import LogitAnalysis, analyze_logits
from .pipeline.roles import analyze_heads
from .qk import (
    CompositionScores,
    PositionalQK,
    QKAnalysis,
    QKDecomposition,
    QKScores,
    TokenQK,
    analyze_qk,
    composition_scores,
    decompose_qk,
    positional_qk,
    qk_scores,
    token_qk,
)
from .results.heads_analysis import HeadsAnalysis
from .scan import AttentionSample, InductionResult, scan_induction
from .scores import SCORES, Score
from .settings import DEFAULT_MEMORY_GB, LoadSettings, ScanSettings

__all__ = [
    # loading
    "DEFAULT_MODEL",
    "HeadscopeModel",
    "load_model",
    # the induction scan and its scores
    "InductionResult",
    "SCORES",
    "Score",
    "scan_induction",
    "ScanSettings",
    "LoadSettings",
    "DEFAULT_MEMORY_GB",
    "AttentionSample",
    # every kind of head: the role table, the ICL check, the natural-text sinks
    "HeadsAnalysis",
    "analyze_heads",
    "head_label",
    "parse_head",
    "top_k",
    # QK circuits
    "QKAnalysis",
    "analyze_qk",
    "qk_scores",
    "decompose_qk",
    "positional_qk",
    "token_qk",
    "composition_scores",
    "QKScores",
    "QKDecomposition",
    "PositionalQK",
    "TokenQK",
    "CompositionScores",
    # what heads write: direct logit attribution, OV circuits, the induction story
    "LogitAnalysis",
    "analyze_logits",
    "logit_attribution",
    "ov_circuit",
    "LogitAttribution",
    "OVRows",
    # pages, sweeps
    "Report",
    "build_report",
    "plan_sweep",
    "run_sweep",
    # errors
    "HeadscopeError",
    "BadInput",
    "ModelLoadError",
    "OutputExists",
    "OutputError",
    "__version__",
]
