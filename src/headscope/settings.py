"""Typed settings: what a scan runs with and how a model is loaded, made once and passed down whole.

Before these types, every layer spelled the scan's options out again (``scan_induction``, the
report, the logit and heads analyses, the sweep, five commands), and the copies drifted: an
``--attention`` that never reached the scan, a memory budget of 2.0 GiB in some places and
``None`` in others. Now the command line (``headscope.cli._common``) or an API's keywords make
one :class:`ScanSettings` and every step hands that object on, so an option cannot be dropped
on the way, and each default is written here once.

>>> s = ScanSettings(seq_len=8, batch=2)
>>> s.max_memory_gb == DEFAULT_MEMORY_GB, s.attention
(True, 'auto')
>>> ScanSettings.from_keywords(s, top_k=2).top_k
2
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import BadInput
from .scores.registry import CONTROL_DRAWS, default_thresholds
from .scores.registry import score as declared

#: GiB one chunk of the scan may hold (one layer's attention and the logits): the one default.
DEFAULT_MEMORY_GB = 2.0
#: How the scan reads attention (see :func:`headscope.scan.induction_scan.attention_route`).
ATTENTION_MODES = ("auto", "fused", "eager")
#: What a head's output is replaced by in the causal check (see :mod:`headscope.scan.ablation`).
ABLATION_MODES = ("mean", "zero", "resample")


@dataclass(frozen=True)
class ScanSettings:
    """The settings of the repeated-token scan: the sequences, its causal check, its route and memory budget.

    ``seq_len``/``batch``/``repeats``/``seed``: ``batch`` sequences ``[BOS] + r * repeats`` of
    ``seq_len`` random tokens drawn with ``seed``. ``top_k`` induction heads are ablated
    (``ablation`` "mean", "zero" or "resample") when ``ablate``, beside a random control drawn
    ``controls`` times. ``thresholds`` override the registry's role
    thresholds. ``attention``: "auto", "fused" or "eager". ``max_memory_gb`` bounds one chunk's
    working set, unless ``chunk_size`` (sequences per forward pass; 0 or None: from the budget)
    is given.
    """

    seq_len: int = 50
    batch: int = 10
    repeats: int = 2
    seed: int = 0
    top_k: int = 5
    ablate: bool = True
    ablation: str = "mean"
    controls: int = CONTROL_DRAWS
    thresholds: Mapping[str, float] = field(default_factory=dict)
    attention: str = "auto"
    max_memory_gb: float = DEFAULT_MEMORY_GB
    chunk_size: int | None = None

    @classmethod
    def from_keywords(cls, base: ScanSettings | Mapping[str, Any] | None = None, /, **keywords: Any) -> ScanSettings:
        """``base`` (default: the defaults) with ``keywords`` replaced; an unknown keyword is a TypeError.

        ``base`` may also be a mapping of field names to values (``{"seq_len": 8}``), read as
        keywords on the defaults (``keywords`` win); a key that is not a field is a ``BadInput``
        naming the fields. Anything else is a ``BadInput``. ``None`` for ``thresholds`` or
        ``max_memory_gb`` means the default, as it always did in the API.

        >>> ScanSettings.from_keywords(max_memory_gb=None).max_memory_gb
        2.0
        >>> s = ScanSettings.from_keywords({"seq_len": 8, "batch": 4}, batch=2)
        >>> s.seq_len, s.batch
        (8, 2)
        """
        names = {f.name for f in dataclasses.fields(cls)}
        if isinstance(base, Mapping):
            bad = sorted(str(k) for k in base if k not in names)
            if bad:
                raise BadInput(
                    f"unknown scan setting(s) {', '.join(bad)} in the settings mapping",
                    hint=f"the settings are: {', '.join(sorted(names))}",
                )
            keywords = {**base, **keywords}
            base = None
        elif base is not None and not isinstance(base, ScanSettings):
            raise BadInput(
                f"settings must be a ScanSettings or a mapping of its fields, got {type(base).__name__}",
                hint="e.g. settings=ScanSettings(seq_len=20), settings={'seq_len': 20}, or the keyword seq_len=20",
            )
        unknown = sorted(set(keywords) - names)
        if unknown:
            raise TypeError(
                f"unknown scan setting(s) {', '.join(unknown)}; the settings are: {', '.join(sorted(names))}"
            )
        if keywords.get("thresholds", ()) is None:
            keywords["thresholds"] = {}
        if "max_memory_gb" in keywords and keywords["max_memory_gb"] is None:
            keywords["max_memory_gb"] = DEFAULT_MEMORY_GB
        return dataclasses.replace(base or cls(), **keywords)

    def check(self) -> ScanSettings:
        """Refuse what no model can run (an unknown mode, no head to ablate, a budget of nothing); returns self.

        >>> ScanSettings(ablation="half").check()
        Traceback (most recent call last):
        ...
        headscope.errors.BadInput: unknown ablation 'half'
          hint: use --ablation mean, zero, resample
        """
        for name in ("seq_len", "batch", "repeats", "seed", "top_k", "controls"):
            whole_number(name, getattr(self, name))
        check_thresholds(self.thresholds)
        check_ablation(self.ablation)
        if self.ablate and self.ablation == "resample" and self.batch < 2:
            raise BadInput(
                "resample ablation takes each sequence's head output from another sequence",
                hint="use --batch 2 or more",
            )
        if self.ablate and self.batch < 2:
            raise BadInput(
                "the causal check gives every change a bootstrap interval over the sequences, and one "
                "sequence gives none (a verdict would rest on a single sample)",
                hint="use --batch 2 or more (the default is 10), or --no-ablate",
            )
        if self.controls < 1:
            raise BadInput(f"controls must be at least 1 (got {self.controls})")
        if self.attention not in ATTENTION_MODES:
            raise BadInput(f"unknown attention {self.attention!r}", hint=f"use one of: {', '.join(ATTENTION_MODES)}")
        if self.top_k < 1:
            raise BadInput(f"top_k (--top) must be at least 1 (got {self.top_k})")
        if not (math.isfinite(self.max_memory_gb) and self.max_memory_gb > 0):
            raise BadInput(f"max_memory_gb (--max-memory) must be a number of GiB above 0 (got {self.max_memory_gb})")
        if self.chunk_size is not None and self.chunk_size < 0:
            raise BadInput(f"chunk_size must be at least 1, or 0 or None for the budget's (got {self.chunk_size})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "thresholds": dict(self.thresholds)}


@dataclass(frozen=True)
class LoadSettings:
    """How a model is loaded: what (``model``, at ``revision`` for a hub model), where and in which dtype.

    ``device``: auto, cpu, cuda or cuda:N; ``device_map``: accelerate's auto, balanced,
    balanced_low_0 or sequential (replaces ``device``); ``dtype``: float32, bfloat16 or float16.
    """

    model: str
    device: str = "auto"
    device_map: str | None = None
    dtype: str = "float32"
    revision: str | None = None


def whole_number(name: str, value: Any) -> int:
    """Refuse a setting that is not a whole number (``"10"``, ``10.5``, ``True``) with its name, before any
    comparison or ``torch.randint`` fails on it deep inside.

    >>> whole_number("seq_len", 10)
    10
    >>> whole_number("seq_len", "10")
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: seq_len must be a whole number, got '10' (str)
      hint: e.g. seq_len=10
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise BadInput(f"{name} must be a whole number, got {value!r} ({type(value).__name__})", hint=f"e.g. {name}=10")
    return int(value)


def check_thresholds(thresholds: Mapping[str, Any]) -> dict[str, float]:
    """Role thresholds by name, checked against the registry: a known role score, a finite number, inside the
    score's declared range (where every head or none would take the role otherwise). One check for the
    command line's ``--threshold NAME=VALUE`` and the API's ``thresholds={...}``.

    >>> check_thresholds({"induction": 0.5})
    {'induction': 0.5}
    >>> check_thresholds({"inducton": 0.5})
    Traceback (most recent call last):
    ...
    headscope.errors.BadInput: threshold 'inducton' is not a role score
      hint: use one of: induction, previous_token, duplicate_token, copying, attention_sink, successor, copy_suppression
    """
    known = default_thresholds()
    if not isinstance(thresholds, Mapping):
        raise BadInput(
            f"thresholds must be a mapping of role score to value, got {type(thresholds).__name__}",
            hint="e.g. thresholds={'induction': 0.5}",
        )
    out: dict[str, float] = {}
    for name, value in thresholds.items():
        if name not in known:
            raise BadInput(f"threshold {name!r} is not a role score", hint=f"use one of: {', '.join(known)}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise BadInput(f"threshold {name}={value!r} is not a number", hint=f"e.g. {name}={known[name]:g}") from None
        if not math.isfinite(v):
            raise BadInput(f"threshold {name}={value!r} is not a finite number", hint=f"e.g. {name}={known[name]:g}")
        lo, hi = declared(name).vmin, declared(name).vmax
        if lo is not None and hi is not None and not lo <= v <= hi:
            raise BadInput(
                f"threshold {name}={value!r}: {name} scores lie in [{lo:g}, {hi:g}], so every head or none would "
                "take the role",
                hint=f"use a value from {lo:g} to {hi:g} (the default is {known[name]:g})",
            )
        out[name] = v
    return out


def check_ablation(mode: str, modes: tuple[str, ...] = ABLATION_MODES, what: str = "") -> str:
    """Refuse an ablation mode not in ``modes`` (one check for the command line and the API).

    ``what``: the analysis that takes fewer modes than the scan (the ICL check: mean or zero).
    """
    if mode not in modes:
        raise BadInput(f"unknown ablation {mode!r}{what}", hint="use --ablation " + ", ".join(modes))
    return mode
