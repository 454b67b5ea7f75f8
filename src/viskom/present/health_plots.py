"""Detector health as pictures: per-exposure focal-plane maps (bias, read noise, and the level
that matters for the frame type) and the month's trends per quadrant.

The maps fill every quadrant's cell (`metric_maps.draw_metric_map`) with the alert band of
each metric outlined (the VIS plan: read noise <= 4.5 e- in every quadrant). The trends show,
per exposure, the focal-plane median with the spread of the quadrants, and two quadrant x
time pictures: each quadrant's bias minus its month median (the plan asks for 2 ADU
stability) and each quadrant's read noise, so that one bad quadrant stands out at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
from matplotlib.figure import Figure

from viskom.le1.geometry import all_extnames
from viskom.present.metric_maps import draw_metric_map
from viskom.present.style import DIVERGING, SEQUENTIAL, figure_title, new_figure, plot_style

#: The third map, by frame type: the level each kind of frame is about.
TYPE_METRIC = {
    "DARK": ("dark_current_e_per_s", "e-/px/s"),
    "FLAT": ("flat_level_e", "e-"),
    "CHARGE": ("ci_level_adu", "ADU"),
}
BIAS_METRIC = ("bias_overscan_adu", "ADU")
NOISE_METRIC = ("read_noise_e", "e-")


def plot_health_maps(
    table: Mapping[str, np.ndarray],
    *,
    frame_type: str,
    title: str,
    bands: Mapping[str, tuple[float | None, float | None] | None] = {},
) -> Figure:
    """Maps of one exposure's detector metrics (`table`: extname and metric columns)."""
    names = [str(n) for n in np.asarray(table["extname"])]
    third = TYPE_METRIC.get(frame_type.upper(), ("image_level_adu", "ADU"))
    panels = [BIAS_METRIC, NOISE_METRIC, third]
    with plot_style():
        fig = new_figure(1500, 540)
    axes = fig.subplots(1, 3)
    for ax, (metric, unit) in zip(axes, panels, strict=True):
        if metric not in table:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no {metric} measured", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
            continue
        values = dict(zip(names, np.asarray(table[metric], float), strict=True))
        summary = draw_metric_map(ax, values, metric=metric, unit=unit, band=bands.get(metric))
        ax.set_title(f"{metric}\n{summary}", fontsize=9)
    figure_title(fig, title)
    return fig


def plot_health_trends(
    times: Sequence[datetime],
    frame_types: Sequence[str],
    bias: Mapping[str, Sequence[float]],
    noise: Mapping[str, Sequence[float]],
    *,
    month_label: str,
    noise_max_e: float | None = 4.5,
    bias_stability_adu: float = 2.0,
) -> Figure:
    """The month's detector health: per exposure (`times`, with their frame types) the bias
    and read noise of every quadrant (`bias[extname]`, `noise[extname]`, NaN when missing)."""
    quads = all_extnames()
    t = np.array([np.datetime64(x.replace(tzinfo=None), "s") for x in times])  # UTC
    order = np.argsort(t)
    t = t[order]
    kinds = np.asarray(frame_types)[order]
    b = np.array([np.asarray(bias.get(q, [np.nan] * len(order)), float)[order] for q in quads])
    n = np.array([np.asarray(noise.get(q, [np.nan] * len(order)), float)[order] for q in quads])
    with plot_style():
        fig = new_figure(1300, 1100)
    axes = fig.subplots(4, 1, sharex=False, height_ratios=[1, 1, 1.4, 1.4])
    colours = {"BIAS": "tab:blue", "DARK": "tab:purple", "FLAT": "tab:orange",
               "SCIENCE": "tab:green", "CHARGE": "tab:red", "UNKNOWN": "0.5"}  # fmt: skip
    deviation = b - np.nanmedian(b, axis=1, keepdims=True)
    for ax, data, label in (
        (axes[0], deviation, "bias - month median [ADU]"),
        (axes[1], n, "read noise [e-]"),
    ):
        with np.errstate(all="ignore"):
            med = np.nanmedian(data, axis=0)
            lo, hi = np.nanpercentile(data, [2.5, 97.5], axis=0)
        for kind in sorted(set(kinds)):
            sel = kinds == kind
            ax.fill_between(t[sel], lo[sel], hi[sel], color=colours.get(kind, "0.5"), alpha=0.2,
                            step=None, linewidth=0)  # fmt: skip
            ax.plot(t[sel], med[sel], "o", ms=3, color=colours.get(kind, "0.5"), label=kind)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].axhspan(-bias_stability_adu, bias_stability_adu, color="0.85", zorder=0,
                    label=f"+-{bias_stability_adu:g} ADU (VIS plan)")  # fmt: skip
    legend = {"fontsize": 7, "loc": "upper left", "bbox_to_anchor": (1.005, 1.0),
              "title": "median, shade:\n95% of quadrants", "title_fontsize": 7}  # fmt: skip
    axes[0].legend(**legend)
    if noise_max_e is not None:
        axes[1].axhline(noise_max_e, color="red", lw=1, label=f"{noise_max_e:g} e- (VIS plan)")
        worst = np.nanmax(n, axis=0) if n.size else np.array([])
        axes[1].plot(t, worst, "v", ms=3, color="red", alpha=0.6, label="worst quadrant")
    axes[1].legend(**legend)
    extent = [0, len(t), len(quads), 0]
    lim = max(bias_stability_adu * 2, float(np.nanpercentile(np.abs(deviation), 99)) if
              np.isfinite(deviation).any() else 1.0)  # fmt: skip
    im = axes[2].imshow(deviation, aspect="auto", cmap=DIVERGING, vmin=-lim, vmax=lim,
                        interpolation="nearest", extent=extent)  # fmt: skip
    fig.colorbar(im, ax=axes[2], label="bias - month median [ADU]", pad=0.01)
    im = axes[3].imshow(n, aspect="auto", cmap=SEQUENTIAL, interpolation="nearest",
                        extent=extent)  # fmt: skip
    bar = fig.colorbar(im, ax=axes[3], label="read noise [e-]", pad=0.01)
    if noise_max_e is not None:
        bar.ax.axhline(noise_max_e, color="red", lw=1.5)
    ticks = np.arange(0, len(quads), 16)
    for ax in axes[2:]:
        ax.set_yticks(ticks + 0.5, [quads[i] for i in ticks], fontsize=7)
        ax.set_ylabel("quadrant")
        step = max(1, len(t) // 10)
        ax.set_xticks(np.arange(0, len(t), step) + 0.5,
                      [str(x)[5:16].replace("T", " ") for x in t[::step]], fontsize=7)  # fmt: skip
        ax.set_xlabel("exposure (UTC date-obs, in time order)")
    for ax in axes[:2]:
        ax.set_xlabel("UTC")
    fig.suptitle(f"Detector health {month_label}: bias and read noise of the 144 quadrants",
                 fontsize=12)  # fmt: skip
    return fig
