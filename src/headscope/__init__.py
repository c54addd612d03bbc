"""headscope: find and explain the attention heads of transformer language models.

>>> import headscope
>>> model = headscope.load_model()                      # doctest: +SKIP
>>> result = headscope.scan_induction(model)            # doctest: +SKIP
>>> result.top_heads("induction", 3)                    # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("headscope")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

from .errors import BadInput, HeadscopeError, ModelLoadError, OutputExists
from .models import DEFAULT_MODEL, load_model
from .scan import AttentionSample, InductionResult, scan_induction
from .sweep import plan_sweep, run_sweep
from .render.report import Report, build_report
from .qk import (CompositionScores, PositionalQK, QKAnalysis, QKDecomposition, QKScores, TokenQK, analyze_qk,
                 composition_scores, decompose_qk, positional_qk, qk_scores, token_qk)

__all__ = ["AttentionSample", "BadInput", "DEFAULT_MODEL", "InductionResult", "scan_induction", "HeadscopeError",
           "ModelLoadError", "OutputExists", "load_model", "__version__", "plan_sweep", "run_sweep", "Report",
           "build_report",
           "CompositionScores", "PositionalQK", "QKAnalysis", "QKDecomposition", "QKScores", "TokenQK", "analyze_qk",
           "composition_scores", "decompose_qk", "positional_qk", "qk_scores", "token_qk"]
