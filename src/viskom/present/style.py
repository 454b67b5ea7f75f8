"""House style of viskom's PNG plots: figure creation without pyplot, atomic saving, no-data text.

Figures are `matplotlib.figure.Figure` objects with an Agg canvas attached explicitly, so no
global pyplot state is touched and plots can be made in worker processes. Every plot is drawn
inside `plot_style()`, a temporary rc context (no LaTeX, fixed fonts), so a user's
matplotlibrc (VISQL's had `text.usetex: True`) cannot change or break our output.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, ListedColormap
from matplotlib.figure import Figure

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


def new_figure(width_px: int, height_px: int, *, constrained: bool = True) -> Figure:
    """A pyplot-free figure of exactly width_px x height_px pixels (at DPI) with an Agg canvas."""
    fig = Figure(
        figsize=(width_px / DPI, height_px / DPI),
        dpi=DPI,
        layout="constrained" if constrained else None,
    )
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write `fig` as a PNG atomically (temporary file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    # os.open with 0o666 honours the umask (mkstemp would leave the PNG readable by us only).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=DPI, metadata={"Software": "viskom"})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


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


@contextlib.contextmanager
def quiet_numpy() -> Iterator[None]:
    """Silence numpy's warnings for all-NaN slices and invalid comparisons inside a block."""
    import warnings

    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
