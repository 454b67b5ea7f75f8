"""Helpers shared by the PSF and image-quality plots: number text, off-scale scatter, medians,
axis ranges from the data with reference bands.

Plain functions on numpy arrays and matplotlib axes; nothing here saves a file. The running
medians and group medians are drawn only (no product holds them), so they stay in present.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patheffects import withStroke

from viskom.present.style import COLOUR_REFERENCE, figure_title, quiet_numpy

__all__ = [
    "PIXEL_SCALE_ARCSEC",
    "STAR_MOMENTS",
    "clipped_scatter",
    "data_limits",
    "median_line",
    "nan_median",
    "reference_band",
    "running_median",
    "sci_text",
    "suptitle",
]

PIXEL_SCALE_ARCSEC = 0.1
#: Moment columns of a star table that the PSF plots read.
STAR_MOMENTS = ("r2", "e1", "e2", "t1", "t2", "c1", "c2")


def sci_text(value: float, digits: int = 1) -> str:
    """'2.5×10⁴' in mathtext."""
    if not np.isfinite(value) or value == 0:
        return f"{value:g}"
    exp = int(np.floor(np.log10(abs(value))))
    mant = value / 10.0**exp
    return rf"${mant:.{digits}f}\times10^{{{exp}}}$"


def nan_median(values: np.ndarray) -> float:
    """Median of the finite values; NaN if there are none."""
    v = values[np.isfinite(values)]
    return float(np.median(v)) if v.size else float("nan")


def suptitle(fig: Figure, title: str, subtitle: str = "") -> None:
    """Figure title, with an optional second line of details, wrapped to fit the figure."""
    figure_title(fig, title, subtitle, fontsize=11.5)


def data_limits(
    values: Any,
    *,
    reference: tuple[float, float] | None = None,
    min_span: float = 0.0,
    pad: float = 0.08,
    percentiles: tuple[float, float] = (1.0, 99.0),
    log: bool = False,
    default: tuple[float, float] = (0.0, 1.0),
) -> tuple[float, float]:
    """Axis limits from the data: the percentiles of the finite values (on a log axis: of the
    positive ones, in log10), widened to at least `min_span`, extended to contain `reference`
    (e.g. VISQL's nominal range, drawn as a band) and then by `pad` of the span on each side.

    Values beyond the percentiles are off scale: draw them with `clipped_scatter`. Without
    data: `reference` (else `default`) plus the margin.
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v) & (v > 0)] if log else v[np.isfinite(v)]
    ref: tuple[float, float] | None = None
    if reference is not None and all(np.isfinite(reference)) and (not log or min(reference) > 0):
        ref = (float(min(reference)), float(max(reference)))
    if v.size == 0 and ref is None:
        return default
    tr = np.log10 if log else np.asarray
    if v.size:
        lo, hi = (float(x) for x in np.percentile(tr(v), percentiles))
        if hi - lo < min_span:
            mid = 0.5 * (lo + hi)
            lo, hi = mid - 0.5 * min_span, mid + 0.5 * min_span
        if ref is not None:
            lo, hi = min(lo, float(tr(ref[0]))), max(hi, float(tr(ref[1])))
    else:
        lo, hi = float(tr(ref[0])), float(tr(ref[1]))  # type: ignore[index]
    span = hi - lo
    if span <= 0:  # one value, no min_span and no reference
        span = max(abs(lo) * 0.2, 1e-9) if not log else 1.0
        lo, hi = lo - 0.5 * span, hi + 0.5 * span
    lo, hi = lo - pad * span, hi + pad * span
    return (float(10.0**lo), float(10.0**hi)) if log else (lo, hi)


def reference_band(
    ax: Axes,
    lo: float,
    hi: float,
    *,
    axis: str = "y",
    label: str | None = None,
    colour: Any = COLOUR_REFERENCE,
    alpha: float = 0.2,
) -> Any:
    """A light grey band from lo to hi across the axes (`axis` "y": horizontal band), under
    the data: a reference range such as VISQL's nominal one, not the axis limits."""
    span = ax.axhspan if axis == "y" else ax.axvspan
    return span(lo, hi, color=colour, alpha=alpha, lw=0, zorder=0, label=label)


def _clip_positions(
    v: np.ndarray, lim: tuple[float, float] | None, log: bool, inset: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values moved just inside `lim`; masks of those that were above and below it."""
    if lim is None:
        false = np.zeros(v.shape, dtype=bool)
        return v, false, false
    lo, hi = lim
    with quiet_numpy():
        if log:
            llo, lhi = np.log10(lo), np.log10(hi)
            above = v > hi
            below = ~(v >= lo)  # includes v <= 0
            out = v.copy()
            out[above] = 10 ** (lhi - inset * (lhi - llo))
            out[below] = 10 ** (llo + inset * (lhi - llo))
        else:
            above = v > hi
            below = v < lo
            out = v.copy()
            out[above] = hi - inset * (hi - lo)
            out[below] = lo + inset * (hi - lo)
    return out, above, below


def clipped_scatter(
    ax: Axes,
    x: np.ndarray,
    y: np.ndarray,
    *,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    logy: bool = False,
    c: np.ndarray | None = None,
    color: Any = None,
    cmap: Colormap | None = None,
    norm: Normalize | None = None,
    s: float = 8.0,
    alpha: float = 1.0,
    zorder: float = 3.0,
    label: str | None = None,
    inset: float = 0.02,
    marker: str = "o",
    lw: float = 0.0,
) -> int:
    """Scatter in which points beyond xlim/ylim sit at the edge as triangles; returns how many.

    Triangles point the way the value lies off scale (y takes precedence over x); points on
    scale are drawn with `marker` (line markers such as "x" need `lw` > 0). Non-finite x or y
    are not drawn (except y <= 0 on a log axis, which counts as below).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & (np.isfinite(y) if not logy else ~np.isnan(y))
    x, y = x[keep], y[keep]
    cc = None if c is None else np.asarray(c, dtype=float)[keep]
    xs, right, left = _clip_positions(x, xlim, False, inset)
    ys, up, down = _clip_positions(y, ylim, logy, inset)
    groups = {
        marker: ~(right | left | up | down),
        "^": up,
        "v": down,
        ">": right & ~(up | down),
        "<": left & ~(up | down),
    }
    first = True
    for mk, sel in groups.items():
        if not sel.any():
            continue
        kwargs: dict[str, Any] = {"marker": mk, "alpha": alpha, "zorder": zorder}
        kwargs["lw"] = lw if mk == marker else 0
        if cc is not None:
            kwargs.update(c=cc[sel], cmap=cmap, norm=norm)
        else:
            kwargs["color"] = color
        ax.scatter(
            xs[sel],
            ys[sel],
            s=s if mk == marker else 2.2 * s,
            label=label if first else None,
            rasterized=bool(sel.sum() > 3000),
            **kwargs,
        )
        first = False
    return int((right | left | up | down).sum())


def running_median(
    x: np.ndarray, y: np.ndarray, lo: float, hi: float, nbins: int = 12, min_count: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Medians of y in equal bins of x over [lo, hi] (bins with fewer than min_count: NaN)."""
    edges = np.linspace(lo, hi, nbins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    med = np.full(nbins, np.nan)
    ok = np.isfinite(x) & np.isfinite(y)
    idx = np.digitize(x[ok], edges) - 1
    yy = y[ok]
    for i in range(nbins):
        sel = yy[idx == i]
        if sel.size >= min_count:
            med[i] = np.median(sel)
    return centres, med


def median_line(ax: Axes, x: np.ndarray, y: np.ndarray, color: Any, label: str | None) -> None:
    """A running median drawn as a line with dots and a white halo."""
    ax.plot(
        x,
        y,
        "-o",
        color=color,
        lw=1.8,
        ms=3.5,
        zorder=6,
        label=label,
        path_effects=[withStroke(linewidth=3.2, foreground="white")],
    )
