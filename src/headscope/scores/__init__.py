"""Head scores: the registry (each score declared once) and the pure maths that computes them."""

from .layout import RepeatLayout
from .reads import Column, KeySet, Reads, Stripe, prepare, reduce_pattern, reduce_qk
from .registry import (
    ABLATION_DEFINITION,
    LOSS_DEFINITION,
    MIN_RISE,
    SCORES,
    Score,
    attention_scores,
    default_thresholds,
    definitions,
    pass_scores,
    role_scores,
    roles_legend,
    roles_present,
    score,
    score_names,
    weight_notes,
    weight_scores,
)
from .weight_score import WeightInputs, WeightScore

__all__ = [
    "ABLATION_DEFINITION",
    "Column",
    "KeySet",
    "LOSS_DEFINITION",
    "MIN_RISE",
    "Reads",
    "RepeatLayout",
    "SCORES",
    "Score",
    "Stripe",
    "WeightInputs",
    "WeightScore",
    "attention_scores",
    "default_thresholds",
    "definitions",
    "pass_scores",
    "prepare",
    "reduce_pattern",
    "reduce_qk",
    "role_scores",
    "roles_legend",
    "roles_present",
    "score",
    "score_names",
    "weight_notes",
    "weight_scores",
]
