"""House style of viskom's PNG plots: figure creation without pyplot, no-data text, colours.

Figures are `matplotlib.figure.Figure` objects with an Agg canvas attached explicitly, so no
global pyplot state is touched and plots can be made in worker processes. Every plot is drawn
inside `plot_style()`, a temporary rc context (no LaTeX, fixed fonts), so a user's
matplotlibrc (VISQL's had `text.usetex: True`) cannot change or break our output. A figure
from `new_figure` remembers the rc settings it was made in and is drawn and saved in them,
so the caller may save it later, outside `plot_style()`, with
`viskom.store.products.write_figure`; plot functions do not save.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, ListedColormap
from matplotlib.figure import Figure

from viskom.measure.arrays import quiet_numpy

PathLike = str | os.PathLike[str]

DPI = 100  # PNG pixel size = figure size in inches x DPI

#: rc settings applied while a plot is drawn and saved.
STYLE_RC: dict[str, object] = {
    "text.usetex": False,
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.titleweight": "normal",
    "axes.labelsize": 10,
    "axes.linewidth": 0.8,
    "axes.grid": False,
    "axes.formatter.useoffset": False,
    "axes.formatter.use_mathtext": True,
    "grid.color": "#d9d9d9",
    "grid.linewidth": 0.6,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "legend.framealpha": 0.9,
    "legend.edgecolor": "#bbbbbb",
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "figure.titlesize": 12,
    "image.interpolation": "nearest",
    "path.simplify": True,
}

#: Shared colours.
COLOUR_STAR = "#d62728"  # selected stars
COLOUR_BOX = "#2ca02c"  # stellar-locus box, "OK" threshold
COLOUR_REJECT = "#d62728"  # reject threshold
COLOUR_C1 = "#1f77b4"  # first component of a spin quantity (e1, c1, t1)
COLOUR_C2 = "#ff7f0e"  # second component (e2, c2, t2)
COLOUR_NODATA = "#555555"


def plot_style() -> contextlib.AbstractContextManager:
    """Context manager applying viskom's rc settings while a figure is drawn and saved."""
    return matplotlib.rc_context(STYLE_RC)


class StyledFigure(Figure):
    """A Figure drawn and saved in the rc settings that were in effect when it was made.

    Tick labels, layout and text are partly made when a figure is drawn, so a figure built
    inside `plot_style()` and saved after it would otherwise take those from the global rc.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        rc = dict(matplotlib.rcParams.copy())
        rc.pop("backend", None)
        self._viskom_rc = rc

    def draw(self, renderer: Any) -> None:
        """Draw in the figure's own rc settings (numpy warnings silenced, as while plotting)."""
        with matplotlib.rc_context(self._viskom_rc), quiet_numpy():
            super().draw(renderer)

    def savefig(self, *args: Any, **kwargs: Any) -> None:
        """`Figure.savefig` in the figure's own rc settings."""
        with matplotlib.rc_context(self._viskom_rc), quiet_numpy():
            super().savefig(*args, **kwargs)


def new_figure(width_px: int, height_px: int, *, constrained: bool = True) -> Figure:
    """A pyplot-free figure of exactly width_px x height_px pixels (at DPI) with an Agg canvas.

    Call it inside `plot_style()`: the figure keeps the rc settings of that moment.
    """
    fig = StyledFigure(
        figsize=(width_px / DPI, height_px / DPI),
        dpi=DPI,
        layout="constrained" if constrained else None,
    )
    FigureCanvasAgg(fig)
    return fig


def no_data(ax: Axes, text: str, *, fontsize: float = 12) -> None:
    """Centred grey message in an axes, so an empty plot still says why it is empty."""
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=fontsize,
        color=COLOUR_NODATA,
        zorder=10,
        bbox={"boxstyle": "round,pad=0.5", "facecolor": "white", "edgecolor": "#aaaaaa"},
    )


def corner_text(ax: Axes, text: str, *, loc: str = "upper left", fontsize: float = 8) -> None:
    """Small annotation in a corner of an axes, on a translucent white box."""
    x = 0.015 if "left" in loc else 0.985
    y = 0.975 if "upper" in loc else 0.025
    ax.text(
        x,
        y,
        text,
        transform=ax.transAxes,
        ha="left" if "left" in loc else "right",
        va="top" if "upper" in loc else "bottom",
        fontsize=fontsize,
        zorder=9,
        bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "alpha": 0.8, "lw": 0},
    )


def truncated_cmap(name: str, low: float = 0.25, high: float = 1.0) -> Colormap:
    """Part of a sequential colour map, so that small values are not drawn white on white."""
    base = matplotlib.colormaps[name]
    return ListedColormap(base(np.linspace(low, high, 256)), name=f"{name}_{low:g}_{high:g}")


__all__ = [
    "COLOUR_BOX",
    "COLOUR_C1",
    "COLOUR_C2",
    "COLOUR_NODATA",
    "COLOUR_REJECT",
    "COLOUR_STAR",
    "DPI",
    "STYLE_RC",
    "StyledFigure",
    "corner_text",
    "new_figure",
    "no_data",
    "plot_style",
    "quiet_numpy",
    "truncated_cmap",
]
