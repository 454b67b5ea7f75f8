"""Alert bands: where a metric should stay, and how far a value is from it.

A *fixed* band is [low, high] (either side may be open): a value outside it is an alarm. A
*learned* band is the metric's own recent history: its median +- k robust sigma (1.4826 x
the median absolute deviation, never narrower than a `floor`), with a warning at
`k_warning` and an alarm at `k_alarm`. Pure functions: numbers in, a verdict out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from viskom.measure.robust import MAD_TO_SIGMA

#: Verdicts, from good to bad.
VERDICTS = ("ok", "warning", "alarm")


class LearnedBand(NamedTuple):
    """A band learned from history: its centre (median) and the warning and alarm half-widths
    (k x robust sigma, at least the floor), from `n_points` values."""

    median: float
    warning: float
    alarm: float
    n_points: int

    @property
    def low(self) -> float:
        """The alarm band's lower edge."""
        return self.median - self.alarm

    @property
    def high(self) -> float:
        """The alarm band's upper edge."""
        return self.median + self.alarm


def learned_band(
    history_values: Iterable[float] | np.ndarray,
    k_warning: float,
    k_alarm: float,
    floor: float = 0.0,
    min_points: int = 8,
) -> LearnedBand | None:
    """The band of `history_values` (non-finite ones ignored): median, and half-widths
    max(k x robust sigma, floor) for the warning and the alarm; None with fewer than
    `min_points` values (too little history to say what is normal)."""
    if not isinstance(history_values, np.ndarray):
        history_values = list(history_values)
    values = np.asarray(history_values, dtype=float).ravel()
    values = np.sort(values[np.isfinite(values)])
    n = values.size
    if n < max(1, int(min_points)):
        return None
    # mad_sigma's numbers from one sort each (a run judges ~10^5 windows: numpy's median
    # costs 4x more per call on arrays this small)
    median = 0.5 * float(values[(n - 1) // 2] + values[n // 2])
    deviations = np.sort(np.abs(values - median))
    sigma = MAD_TO_SIGMA * 0.5 * float(deviations[(n - 1) // 2] + deviations[n // 2])
    return LearnedBand(
        median=median,
        warning=max(float(k_warning) * sigma, float(floor)),
        alarm=max(float(k_alarm) * sigma, float(floor)),
        n_points=int(n),
    )


def classify(
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    learned: LearnedBand | None = None,
) -> str:
    """'ok', 'warning' or 'alarm' for `value`: outside the fixed [low, high] is an alarm;
    farther from a learned band's median than its alarm half-width is an alarm, than its
    warning half-width a warning. The edges themselves are in band. Both given: the worse."""
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"cannot classify a non-finite value ({value!r})")
    verdict = "ok"
    if (low is not None and v < low) or (high is not None and v > high):
        verdict = "alarm"
    if learned is not None:
        distance = abs(v - learned.median)
        if distance > learned.alarm:
            verdict = "alarm"
        elif distance > learned.warning:
            verdict = worst(verdict, "warning")
    return verdict


def worst(*verdicts: str) -> str:
    """The worst of some verdicts ('ok' for none)."""
    return max(verdicts, key=VERDICTS.index, default="ok")
