"""House style of viskom's PNG plots: figure creation without pyplot, no-data text, colours.

Figures are `matplotlib.figure.Figure` objects with an Agg canvas attached explicitly, so no
global pyplot state is touched and plots can be made in worker processes. Every plot is drawn
inside `plot_style()`, a temporary rc context (no LaTeX, fixed fonts), so a user's
matplotlibrc (VISQL's had `text.usetex: True`) cannot change or break our output. A figure
from `new_figure` remembers the rc settings it was made in and is drawn and saved in them,
so the caller may save it later, outside `plot_style()`, with
`viskom.store.products.write_figure`; plot functions do not save.

Titles go through `figure_title` and `axes_title`, which wrap a long text (exposure names are
~58 characters) at its natural breaks and, if a piece still does not fit, shrink it, so that
no title is cut off at the figure's pixel size. Colour maps: sequential perceptual maps
(`SEQUENTIAL`, viridis) for counts and magnitudes, `DIVERGING` (RdBu_r, centred on the
reference value) for signed quantities; never jet or other rainbows.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import matplotlib
import numpy as np
from matplotlib import cbook
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, ListedColormap
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.text import Text

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
COLOUR_REFERENCE = "#9e9e9e"  # reference bands (VISQL's nominal ranges)

#: Perceptual colour maps: sequential (counts, magnitudes, sizes) and diverging (signed values,
#: drawn with a norm centred on 0 or on the reference value).
SEQUENTIAL = "viridis"
DIVERGING = "RdBu_r"

#: Titles keep this far from the figure's edges [px] and never shrink below this size [pt].
TITLE_EDGE_PX = 6.0
TITLE_MIN_PT = 7.0
#: Break opportunities of a title line, most preferred first (two spaces separate the parts
#: of viskom's titles: exposure name, date, exposure time).
_BREAKS = ("  ", "; ", ", ", " ")


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
    """Centred grey message in an axes, so an empty plot still says why it is empty.

    Wrapped (or shrunk) to 90% of the axes' width as placed when it is called.
    """
    width = 0.9 * ax.get_position().width * ax.figure.bbox.width - 16  # box padding
    text, fontsize = fit_text(ax.figure, text, width, fontsize)
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


def _split_outside_math(line: str, sep: str) -> list[str]:
    """`line` split at `sep`, except inside $...$ (mathtext must stay on one line)."""
    parts, start, in_math, i = [], 0, False, 0
    while i < len(line):
        if line[i] == "$" and (i == 0 or line[i - 1] != "\\"):
            in_math = not in_math
        elif not in_math and line.startswith(sep, i):
            parts.append(line[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(line[start:])
    return [p for p in parts if p.strip()] or [line]


def _wrap_line(line: str, fits: Any, level: int = 0) -> list[str]:
    """Greedy wrap of one line at the breaks `_BREAKS[level:]`, preferring the earlier ones."""
    if fits(line) or level >= len(_BREAKS):
        return [line]
    sep = _BREAKS[level]
    parts = _split_outside_math(line, sep)
    if len(parts) == 1:
        return _wrap_line(line, fits, level + 1)
    lines: list[str] = []
    current = parts[0]
    for part in parts[1:]:
        candidate = current + sep + part
        if fits(candidate):
            current = candidate
        else:
            lines.append(current + sep.rstrip())
            current = part
    lines.append(current)
    out: list[str] = []
    for piece in lines:
        out += [piece] if fits(piece) else _wrap_line(piece, fits, level + 1)
    return out


def text_width_px(fig: Figure, text: str, fontsize: float, **font: Any) -> float:
    """Width in pixels of one line of `text` drawn at `fontsize` on `fig` (current rc font)."""
    renderer = fig.canvas.get_renderer()
    prop = FontProperties(size=fontsize, **font)
    ismath: Any = "TeX" if matplotlib.rcParams["text.usetex"] else cbook.is_math_text(text)
    width, _, _ = renderer.get_text_width_height_descent(text, prop, ismath=ismath)
    return float(width)


def fit_text(
    fig: Figure,
    text: str,
    width_px: float,
    fontsize: float,
    *,
    min_size: float = TITLE_MIN_PT,
    **font: Any,
) -> tuple[str, float]:
    """`text` wrapped to `width_px` at its natural breaks; a font size that makes it fit.

    Lines are broken at two spaces first, then after '; ' and ', ', then at any space, never
    inside $...$. A piece that still does not fit (one long word) shrinks the font size of the
    whole text, down to `min_size`.
    """
    width_px = max(float(width_px), 10.0)

    def fits(s: str) -> bool:
        return text_width_px(fig, s, fontsize, **font) <= width_px

    lines = [piece for line in str(text).split("\n") for piece in _wrap_line(line, fits)]

    def widest(size: float) -> float:
        return max((text_width_px(fig, s, size, **font) for s in lines), default=0.0)

    if (w := widest(fontsize)) > width_px:
        fontsize = max(min_size, fontsize * width_px / w)
        while fontsize > min_size and widest(fontsize) > width_px:  # glyph widths are hinted
            fontsize = max(min_size, fontsize - 0.25)
    return "\n".join(lines), fontsize


def figure_title(
    fig: Figure, title: str, subtitle: str = "", *, fontsize: float = 11.5, **kwargs: Any
) -> Text:
    """Figure title (and a line of details) wrapped, or shrunk, to fit the figure's width.

    In a figure without a layout engine the caller makes room below it: see `title_bottom`.
    """
    text = title if not subtitle else f"{title}\n{subtitle}"
    width = fig.bbox.width - 2 * TITLE_EDGE_PX
    text, size = fit_text(fig, text, width, fontsize, **_font_kwargs(kwargs))
    return fig.suptitle(text, fontsize=size, **kwargs)


def title_bottom(fig: Figure, pad_px: float = 8.0) -> float:
    """Figure fraction just below the figure title (1 without one): the top of the axes of a
    figure laid out by hand, e.g. `fig.subplots_adjust(top=min(0.92, title_bottom(fig)))`."""
    title = fig._suptitle  # matplotlib keeps the suptitle Text only here
    if title is None or not title.get_text():
        return 1.0
    bbox = title.get_window_extent(fig.canvas.get_renderer())
    return float((bbox.y0 - pad_px) / fig.bbox.height)


def axes_title(ax: Axes, text: str, *, fontsize: float | None = None, **kwargs: Any) -> Text:
    """Axes title wrapped, or shrunk, to fit over its axes and inside the figure.

    The room is taken from the axes' position when this is called (before a layout engine
    moves it): at most 1.3 times the axes' width, and no further than the figure's edges.
    """
    size = float(fontsize if fontsize is not None else matplotlib.rcParams["axes.titlesize"])
    fig = ax.figure
    pos = ax.get_position()
    fig_w = fig.bbox.width
    centre = (pos.x0 + pos.x1) / 2 * fig_w
    room = 2 * min(centre, fig_w - centre) - 2 * TITLE_EDGE_PX
    width = min(1.3 * pos.width * fig_w, room)
    text, size = fit_text(fig, text, width, size, **_font_kwargs(kwargs))
    return ax.set_title(text, fontsize=size, **kwargs)


def _font_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The font keywords of a text's keywords (they change its width)."""
    return {k: kwargs[k] for k in ("weight", "family", "style") if k in kwargs}


def truncated_cmap(name: str, low: float = 0.25, high: float = 1.0) -> Colormap:
    """Part of a sequential colour map, so that small values are not drawn white on white."""
    base = matplotlib.colormaps[name]
    return ListedColormap(base(np.linspace(low, high, 256)), name=f"{name}_{low:g}_{high:g}")


__all__ = [
    "COLOUR_BOX",
    "COLOUR_C1",
    "COLOUR_C2",
    "COLOUR_NODATA",
    "COLOUR_REFERENCE",
    "COLOUR_REJECT",
    "COLOUR_STAR",
    "DIVERGING",
    "DPI",
    "SEQUENTIAL",
    "STYLE_RC",
    "StyledFigure",
    "axes_title",
    "corner_text",
    "figure_title",
    "fit_text",
    "new_figure",
    "no_data",
    "plot_style",
    "quiet_numpy",
    "text_width_px",
    "title_bottom",
    "truncated_cmap",
]
