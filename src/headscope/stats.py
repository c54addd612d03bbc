"""Intervals for numbers measured over a sample: the one bootstrap of the codebase.

A causal number (an ablation's change in loss) is a mean over sequences; with ten sequences its
noise is easy to mistake for an effect. :func:`bootstrap_interval` resamples the sequences with
replacement (seeded, so a run repeats exactly) and reports the central interval of the resampled
means (the percentile bootstrap, Efron & Tibshirani 1993, ch. 13). :func:`spread` summarises
repeated draws of a control the same way: their median and central interval. numpy only (scipy's
``stats.bootstrap`` does the same but scipy is not a dependency).
"""

from __future__ import annotations

import numpy as np

#: Coverage of every interval: 95%.
LEVEL = 0.95
#: Bootstrap resamples per interval.
RESAMPLES = 2000


def bootstrap_interval(
    values, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of the mean of ``values`` (one number per sample unit).

    ``values`` is 1-D (NaN entries are refused: say what was measured). With one value the
    interval is that value at both ends (nothing to resample).

    >>> lo, hi = bootstrap_interval([1.0, 2.0, 3.0, 4.0], seed=0)
    >>> 1.0 <= lo < 2.5 < hi <= 4.0
    True
    >>> bootstrap_interval([2.0, 2.0, 2.0])
    (2.0, 2.0)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"bootstrap_interval needs a non-empty 1-D array of finite values (got shape {v.shape})")
    idx = np.random.default_rng(seed).integers(0, v.size, size=(resamples, v.size))
    means = v[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_ratio_interval(
    numer, denom, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(numer) / mean(denom)``, the units resampled together.

    A normalised patching effect is such a ratio (the mean change over the mean clean - corrupted
    gap); resampling the examples in pairs carries the denominator's noise too.

    >>> lo, hi = bootstrap_ratio_interval([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    >>> 0.5 <= lo < 1.0 < hi <= 1.5
    True
    """
    a = np.asarray(numer, dtype=np.float64)
    b = np.asarray(denom, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(
            f"bootstrap_ratio_interval needs two finite 1-D arrays of one length (got {a.shape}, {b.shape})"
        )
    idx = np.random.default_rng(seed).integers(0, a.size, size=(resamples, a.size))
    ratios = a[idx].mean(axis=1) / b[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return float(lo), float(hi)


def spread(draws) -> dict[str, float]:
    """Median and range (lowest, highest) of repeated draws: every number it gives was drawn or is their median.

    A central 95% of 10 draws would be interpolated past the draws (``np.percentile`` put its top
    at +5.39 nats where the nearest draws were +1.08 and +6.64): a value nothing measured.

    >>> spread([0.0, 1.0, 4.0, 2.0, 3.0])
    {'median': 2.0, 'min': 0.0, 'max': 4.0, 'n': 5}
    """
    d = np.asarray(draws, dtype=np.float64)
    return {
        "median": round(float(np.median(d)), 12),
        "min": round(float(d.min()), 12),
        "max": round(float(d.max()), 12),
        "n": int(d.size),
    }


def signed(v: float | None, decimals: int = 3) -> str:
    """``v`` with its sign to ``decimals`` places, for text; a value that is not 0 but too small to
    show at ``decimals`` places in scientific notation, and 0 never as "-0.000"; a dash for None (not measured).

    A random or tiny model's effects are about 1e-7: "+0.000 [-0.000, +0.000]" said nothing, and
    "-0.000" read as a negative number where the value shown is 0.

    >>> signed(0.1234), signed(-0.0), signed(2e-7), signed(-2.46e-5, 2), signed(-0.0004, 4)
    ('+0.123', '+0.000', '+2.0e-07', '-2.5e-05', '-0.0004')
    """
    if v is None:
        return "–"
    v = float(v)
    if v != 0.0 and abs(v) < 0.5 * 10.0**-decimals:
        return f"{v:+.1e}"
    return f"{v + 0.0:+.{decimals}f}".replace("-0." + "0" * decimals, "+0." + "0" * decimals)


def with_interval(mean: float, low: float, high: float, decimals: int = 3, sep: str = ", ") -> str:
    """``"+0.523 [+0.401, +0.650]"``: a mean and its interval, each as :func:`signed` writes it.

    >>> with_interval(1.2e-7, -3e-8, 2.5e-7)
    '+1.2e-07 [-3.0e-08, +2.5e-07]'
    """
    return f"{signed(mean, decimals)} [{signed(low, decimals)}{sep}{signed(high, decimals)}]"
