"""QK-circuit analysis: what each head's queries look for, on real text and in the weights.

- :func:`qk_scores` -- live pre-softmax scores and patterns on the user's text;
- :func:`decompose_qk` -- a score split over the residual stream's components (an attribution of the score, not an ablation);
- :func:`positional_qk`, :func:`token_qk` -- positional and token QK circuits from the weights;
- :func:`composition_scores` -- Q/K/V-composition between every earlier and later head;
- :func:`analyze_qk` -- all of the above for chosen (or automatically picked) heads, as the CLI runs it.
"""

from ..results.qk_results import CompositionScores, PositionalQK, QKDecomposition, QKScores, TokenQK
from .analysis import QKAnalysis, analyze_qk, pick_heads
from .circuits import positional_qk, token_qk
from .composition import composition_scores
from .decompose import decompose_qk
from .live import qk_scores

__all__ = [
    "CompositionScores",
    "QKAnalysis",
    "analyze_qk",
    "pick_heads",
    "PositionalQK",
    "QKDecomposition",
    "QKScores",
    "TokenQK",
    "composition_scores",
    "decompose_qk",
    "positional_qk",
    "qk_scores",
    "token_qk",
]
