"""The scan: repeated-token sequences in, per-head scores out (pure functions over hooks)."""

from ..results.scan_result import InductionResult
from .attention_sample import AttentionSample, attention_sample
from .induction_scan import scan_induction
from .sequences import RepeatedTokens, check_settings, repeated_tokens

__all__ = [
    "AttentionSample",
    "InductionResult",
    "RepeatedTokens",
    "attention_sample",
    "check_settings",
    "repeated_tokens",
    "scan_induction",
]
