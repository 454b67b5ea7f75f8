"""Checks that a figure is fit for a talk, shared by the plot tests: nothing drawn beyond
the figure's pixels, no rainbow colour map."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.text import Text

#: An exposure title as long as real ones are.
LONG_TITLE = "EUC_LE1_VIS-02371-3-W_20240713T014734.200000Z_01_01_01.00  2024-07-13 01:47:34"
RAINBOWS = {"jet", "rainbow", "gist_rainbow", "hsv", "turbo", "nipy_spectral", "gist_ncar"}


def outside_the_figure(fig: Figure) -> list[str]:
    """Texts (and the whole drawing) reaching beyond the figure's pixels, after a draw.

    Tick labels are checked through the figure's tight bbox, which holds the drawn ones only.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    w, h = fig.bbox.width, fig.bbox.height
    ticks = {
        id(label)
        for ax in fig.axes
        for axis in ax._axis_map.values()
        for tick in (*axis.majorTicks, *axis.minorTicks)
        for label in (tick.label1, tick.label2)
    }
    bad = []
    for text in fig.findobj(Text):
        if id(text) in ticks or not text.get_visible() or not text.get_text().strip():
            continue
        bb = text.get_window_extent(renderer)
        if bb.x0 < -1 or bb.y0 < -1 or bb.x1 > w + 1 or bb.y1 > h + 1:
            bad.append(f"{text.get_text()!r} at {tuple(round(v) for v in bb.bounds)}")
    tight = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    if tight.x0 < -1 or tight.y0 < -1 or tight.x1 > w + 1 or tight.y1 > h + 1:
        bad.append(f"the drawing spans {tuple(round(v) for v in tight.bounds)} of {w:g} x {h:g}")
    return bad


def rainbow_maps(fig: Figure) -> list[str]:
    """Names of rainbow colour maps used by any artist of the figure."""
    names = {getattr(a.get_cmap(), "name", "") for a in fig.findobj(lambda a: hasattr(a, "cmap"))}
    return sorted(n for n in names if n.split("_")[0] in RAINBOWS or n in RAINBOWS)
