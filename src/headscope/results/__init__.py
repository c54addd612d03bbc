"""Results: what every analysis returns, as plain data (numbers and metadata, no model, no drawing).

Every result is a dataclass on :class:`~headscope.results.base.Result` (``to_dict``, ``to_frame``,
strict ``to_json``, the one rounding rule :func:`~headscope.results.base.rounded`; ``from_json`` for those
that read back from the JSON their command writes). This layer
sits above :mod:`headscope.models` and below the analyses (scan, qk, logits, kinds, pipeline, toy)
that compute it; it imports nothing from them, from render or from the command line. A result's
notebook view and figures come from the view registered for its type
(:func:`headscope.render.lookup.view_of`, imported lazily: the one upward import).
"""

from .attention import AttentionSample, AttentionViews
from .base import Result, rounded
from .edge_results import EdgeCircuit, EdgeScores
from .heads_analysis import HeadsAnalysis
from .icl_result import ICLResult
from .logit_results import InductionStories, InductionStory, LogitAnalysis, LogitAttribution, OVRows, RepeatLogitEffects
from .patching_results import ActivationPatching, CircuitAnalysis, PathPatching
from .phase_change import PhaseAnalysis, PhaseWindow
from .qk_results import CompositionScores, PositionalQK, QKAnalysis, QKDecomposition, QKScores, TokenQK
from .scan_result import InductionResult
from .sink_scores import SinkScores
from .sweep_result import SweepResult

__all__ = [
    "ActivationPatching",
    "AttentionSample",
    "AttentionViews",
    "CircuitAnalysis",
    "CompositionScores",
    "EdgeCircuit",
    "EdgeScores",
    "HeadsAnalysis",
    "ICLResult",
    "InductionResult",
    "InductionStories",
    "InductionStory",
    "LogitAnalysis",
    "LogitAttribution",
    "OVRows",
    "PathPatching",
    "PhaseAnalysis",
    "PhaseWindow",
    "PositionalQK",
    "QKAnalysis",
    "QKDecomposition",
    "QKScores",
    "RepeatLogitEffects",
    "Result",
    "SinkScores",
    "SweepResult",
    "TokenQK",
    "rounded",
]
