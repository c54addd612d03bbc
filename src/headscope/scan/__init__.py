"""The scan: repeated-token sequences in, per-head scores out (pure functions over hooks)."""

from .attention import AttentionSample, attention_sample, encode_text
from .induction import scan_induction
from .result import InductionResult

__all__ = ["AttentionSample", "InductionResult", "attention_sample", "encode_text", "scan_induction"]
