"""A registered metric drawn over the focal plane: one filled cell per quadrant (or CCD).

Every quadrant fills its nominal full-size rectangle, whatever the frame's geometry (the
simulator's small frames included), so that a map reads the same for every frame; a quadrant
without a value is hatched grey. One colour bar with the metric's unit; with a band (the
alert settings', or given), values outside it are outlined and the band is marked on the bar.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from viskom.le1.geometry import all_ccds, all_extnames
from viskom.present.focal import (
    FPA_XLIM,
    FPA_YLIM,
    ccd_rectangle,
    focal_plane_axes,
    quadrant_rectangle,
)
from viskom.present.style import DIVERGING, SEQUENTIAL, figure_title, new_figure, plot_style

DIVERGING_HINTS = ("_e1", "_e2", "offset", "dx", "dy", "slope", "trend")


def plot_metric_map(
    values: Mapping[str, float],
    *,
    metric: str,
    unit: str,
    description: str = "",
    title: str = "",
    band: tuple[float | None, float | None] | None = None,
    cmap: str | None = None,
) -> Figure:
    """A focal-plane map of one metric: `values` by unit name ('R-C.Q' quadrants, or 'R-C'
    CCDs when no quadrant is given), coloured by value with a labelled colour bar."""
    with plot_style():
        fig = new_figure(704, 726)
    ax = fig.add_subplot()
    summary = draw_metric_map(ax, values, metric=metric, unit=unit, band=band, cmap=cmap)
    head = title or metric
    figure_title(fig, head, description, fontsize=10)
    ax.set_title(summary, fontsize=8)
    return fig


def draw_metric_map(
    ax: Axes,
    values: Mapping[str, float],
    *,
    metric: str,
    unit: str,
    band: tuple[float | None, float | None] | None = None,
    cmap: str | None = None,
    label: str | None = None,
) -> str:
    """Draw the map on `ax` with its colour bar; returns a one-line summary (cells with a
    value, median, how many outside the band)."""
    import matplotlib as mpl

    quads = {k: v for k, v in values.items() if k.count(".") == 1 and "-" in k}
    cells = quads or {k: v for k, v in values.items() if k.count("-") == 1 and "." not in k}
    names = all_extnames() if quads else all_ccds()
    rect_of = quadrant_rectangle if quads else _ccd_rect
    finite = np.array([v for v in cells.values() if v is not None and np.isfinite(v)], float)
    signed = finite.size and (finite.min() < 0 < finite.max())
    diverging = any(h in metric for h in DIVERGING_HINTS) or bool(signed)
    cmap = cmap or (DIVERGING if diverging else SEQUENTIAL)
    lo, hi = _limits(finite, band, diverging)
    norm = mpl.colors.Normalize(vmin=lo, vmax=hi)
    colormap = mpl.colormaps[cmap]
    outside = 0
    filled, colours, breaches, empty = [], [], [], []
    for name in names:
        x0, y0, w, h = rect_of(name)
        outline = [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]
        v = cells.get(name)
        if v is None or not np.isfinite(v):
            empty.append(outline)
            continue
        filled.append(outline)
        colours.append(v)
        if band is not None and (
            (band[0] is not None and v < band[0]) or (band[1] is not None and v > band[1])
        ):
            breaches.append(outline)
    outside = len(breaches)
    # three collections, not 144 patches: a map draws in tens of milliseconds
    ax.add_collection(PolyCollection(filled, array=np.asarray(colours, float), cmap=colormap,
                                     norm=norm, edgecolors="none", zorder=1))  # fmt: skip
    ax.add_collection(PolyCollection(empty, facecolors="0.85", edgecolors="0.6", hatch="////",
                                     linewidths=0.3, zorder=1))  # fmt: skip
    ax.add_collection(PolyCollection(breaches, facecolors="none", edgecolors="red",
                                     linewidths=1.6, zorder=1.5))  # fmt: skip
    focal_plane_axes(ax, quadrants=bool(quads))
    ax.set_xlim(*FPA_XLIM)
    ax.set_ylim(*FPA_YLIM)
    mappable = mpl.cm.ScalarMappable(norm=norm, cmap=colormap)
    bar = ax.figure.colorbar(mappable, ax=ax, shrink=0.85, pad=0.02)
    bar.set_label(label or (f"{metric} [{unit}]" if unit else metric))
    if band is not None:
        for edge_value in band:
            if edge_value is not None:
                bar.ax.axhline(edge_value, color="red", linewidth=1.5)
    summary = f"{finite.size}/{len(names)} {'quadrants' if quads else 'CCDs'}"
    if finite.size:
        summary += f", median {np.median(finite):.4g} {unit}"
    if band is not None:
        summary += f"\n{outside} outside the band (red)"
    return summary


def _limits(
    finite: np.ndarray, band: tuple[float | None, float | None] | None, diverging: bool
) -> tuple[float, float]:
    """Colour-scale limits: the 1st-99th percentiles (all values when few), widened to the
    band's edges; symmetric about 0 for signed quantities."""
    if not finite.size:
        return 0.0, 1.0
    many = finite.size > 20  # then one outlier does not set the scale
    lo, hi = np.percentile(finite, [1, 99]) if many else (finite.min(), finite.max())
    if band is not None:
        lo = min(lo, *(b for b in band if b is not None))
        hi = max(hi, *(b for b in band if b is not None))
    if diverging:
        lim = max(abs(lo), abs(hi)) or 1.0
        lo, hi = -lim, lim
    if hi <= lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    return float(lo), float(hi)


def _ccd_rect(name: str) -> tuple[float, float, float, float]:
    row, col = (int(p) for p in name.split("-"))
    return ccd_rectangle(row, col)
