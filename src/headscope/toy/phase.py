"""Find a phase change in a training curve: the window where it drops or rises abruptly.

The curve is fitted by least squares with a logistic step on a straight line,

    y(t) ~ a + c (t - t_mid) / span + b * sigmoid((t - t0) / w),

for every ``(t0, w)`` on a grid (``a, b, c`` are then a linear least-squares solve). The
line absorbs the slow drift a training curve has on both sides of a phase change (the
later-repeat loss creeps down before induction forms and keeps falling after), so ``b`` is
the abrupt part alone. The window is where the fitted step goes from 10 % to 90 % of its
height: ``t0 +- w ln 9``.

A step is reported only when it stands out of the noise and is abrupt:
- its height ``|b|`` is at least ``min_snr`` times the residual standard deviation of the
  fit and at least ``min_fraction`` of the curve's range (a flat or noisy curve gives None);
- the window is at most ``max_width`` of the curve's span (a steady ramp is not a phase
  change: the line explains it, or the step comes out as wide as the run);
- ``t0`` lies between the second and second-to-last sample (a step fitted to one end point
  is one outlier, not a change).

>>> import numpy as np
>>> t = np.arange(0, 2001, 100)
>>> y = np.where(t < 1200, 4.0, 1.0)
>>> w = detect_phase_change(t, y)
>>> (w.direction, w.before, w.after, round(w.height, 2))
('down', 1100.0, 1200.0, -3.0)
>>> detect_phase_change(t, np.full(t.shape, 4.0)) is None
True
"""

from __future__ import annotations

import numpy as np

from ..results.phase_change import PhaseWindow

__all__ = ["LN9", "PhaseWindow", "detect_phase_change"]

LN9 = float(np.log(9.0))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + exp(-x)) without overflow


def detect_phase_change(
    t,
    y,
    *,
    direction: str = "any",
    min_snr: float = 5.0,
    min_fraction: float = 0.25,
    max_width: float = 0.5,
    n_centres: int = 240,
    n_widths: int = 40,
) -> PhaseWindow | None:
    """The abrupt step in ``y`` against ``t`` (1-D, same length, ``t`` increasing), or None.

    ``direction``: "down" (a loss falling), "up" (a score rising) or "any". Needs at least 6
    samples; NaNs are dropped. See the module docstring for the fit and the criteria.
    """
    if direction not in ("down", "up", "any"):
        raise ValueError(f"direction must be 'down', 'up' or 'any' (got {direction!r})")
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], y[keep]
    if len(t) < 6:
        return None
    order = np.argsort(t, kind="stable")
    t, y = t[order], y[order]
    span = float(t[-1] - t[0])
    y_range = float(y.max() - y.min())
    if span <= 0 or y_range <= 1e-12 * max(1.0, float(np.abs(y).max())):
        return None

    gaps = np.diff(t)
    centres = np.linspace(t[1], t[-2], n_centres)
    widths = np.geomspace(
        max(gaps.min(), span * 1e-4) / 20, span / 4, n_widths
    )  # from sharper than a sample gap to a quarter run
    x = (t - t.mean()) / span
    # design for every (centre, width): [1, x, sigmoid] -> [C, W, n, 3]
    s = _sigmoid((t[None, None, :] - centres[:, None, None]) / widths[None, :, None])
    X = np.stack(np.broadcast_arrays(np.ones_like(s), np.broadcast_to(x, s.shape), s), axis=-1)
    XtX = np.einsum("cwnk,cwnj->cwkj", X, X) + 1e-12 * np.eye(3)
    Xty = np.einsum("cwnk,n->cwk", X, y)
    coef = np.linalg.solve(XtX, Xty[..., None])[..., 0]  # [C, W, 3]
    resid = y[None, None, :] - np.einsum("cwnk,cwk->cwn", X, coef)
    sse = np.square(resid).sum(-1)
    b = coef[..., 2]
    if direction == "down":
        sse = np.where(b < 0, sse, np.inf)
    elif direction == "up":
        sse = np.where(b > 0, sse, np.inf)
    if not np.isfinite(sse).any():
        return None
    ci, wi = np.unravel_index(np.argmin(sse), sse.shape)
    t0, w, height = float(centres[ci]), float(widths[wi]), float(b[ci, wi])
    noise = float(np.sqrt(sse[ci, wi] / max(len(t) - 5, 1)))  # 5 fitted parameters: a, c, b, t0, w
    snr = abs(height) / noise if noise > 0 else float("inf")
    start, end = t0 - w * LN9, t0 + w * LN9
    if snr < min_snr or abs(height) < min_fraction * y_range or (end - start) > max_width * span:
        return None
    i_before = int(np.searchsorted(t, start, side="right")) - 1
    i_after = int(np.searchsorted(t, end, side="left"))
    i_before, i_after = max(i_before, 0), min(i_after, len(t) - 1)
    return PhaseWindow(
        start=start,
        end=end,
        center=t0,
        height=height,
        direction="down" if height < 0 else "up",
        before=float(t[i_before]),
        after=float(t[i_after]),
        value_before=float(y[i_before]),
        value_after=float(y[i_after]),
        snr=snr,
        span=span,
    )
