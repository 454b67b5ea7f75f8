"""Plots of the ice trend: VIS/Gaia against time per exposure, and per diagonal CCD and day.

Replace VISQL's `plotice.py` (`iceplot_long|short.png`, VISQL-SPEC 8.9) and
`ploticetimelinediag.py` (`iceplot_diag_*.png`, 8.12). Plain arrays in (the statistics are
`measure.gaia_ice`'s), a `matplotlib.figure.Figure` out, drawn in viskom's house style; the
caller saves it (`store.products.write_figure`). An empty input still gives a complete page
that says why it is empty.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from datetime import date

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from viskom.present.style import (
    COLOUR_REJECT,
    axes_title,
    corner_text,
    figure_title,
    new_figure,
    no_data,
    plot_style,
    quiet_numpy,
)

#: VISQL's colours of the three BP-RP values 0.75, 1.75, 2.75 (plotice.py: blue, green, red).
BAND_COLOURS = ("#1f5fd6", "#1a9641", "#d7191c")
#: Shading of the ice reference period.
REFERENCE_COLOUR = "#ffd966"
#: ln -> magnitudes: 2.5 log10(x) = 1.0857 ln(x).
MAG_PER_LN = 2.5 / math.log(10.0)


def fast_ticks() -> contextlib.AbstractContextManager:
    """Plain-text tick labels: mathtext parsing of every label was a third of a map's time."""
    return rc_context({"axes.formatter.use_mathtext": False})


# ------------------------------------------------------------------------------------------
# 3. The ice trend: per-exposure VIS/Gaia against time (VISQL plotice.py)


def _date_axis(ax: Axes) -> None:
    locator = AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _robust_ylim(values: np.ndarray, pad: float = 0.15) -> tuple[float, float] | None:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    lo, hi = np.percentile(v, [0.5, 99.5])
    span = max(hi - lo, 0.02)
    return float(lo - pad * span), float(hi + pad * span)


def plot_ice_timeline(
    dates: np.ndarray,
    values: np.ndarray,
    selfcal: np.ndarray,
    *,
    kind: str,
    exptime: float,
    reference: tuple[date, date],
    relative: bool,
    n_reference: int = 0,
    n_rejected: int = 0,
    colours: Sequence[float] = (0.75, 1.75, 2.75),
) -> Figure:
    """ln(VIS/Gaia) at three BP-RP against time, one point per exposure (VISQL's iceplot).

    `values` is (3, n): relative to the reference period's mean when `relative`, else the
    absolute ln(VIS/Gaia) (then the page says the reference period had no data). Exposures of
    the self-calibration field are a separate, marked series. The right axis gives the same
    values as a throughput change in magnitudes (-2.5 log10).
    """
    with plot_style(), fast_ticks(), quiet_numpy():
        t = np.asarray(dates, dtype="datetime64[us]")
        vals = np.asarray(values, float).reshape(len(colours), -1)
        sc = np.asarray(selfcal, bool)
        fig = new_figure(1100, 750)
        ax = fig.subplots()
        handles = []
        n_points = int(np.isfinite(vals).any(axis=0).sum())
        size = 30 if n_points < 100 else 10 if n_points < 2000 else 4  # visible when few
        for k in range(len(colours) - 1, -1, -1):
            colour = BAND_COLOURS[k % len(BAND_COLOURS)]
            ok = np.isfinite(vals[k]) & ~np.isnat(t)
            ax.scatter(
                t[ok & ~sc], vals[k][ok & ~sc], s=size, color=colour, lw=0, zorder=2,
                rasterized=True,
            )  # fmt: skip
            ax.scatter(
                t[ok & sc],
                vals[k][ok & sc],
                s=16,
                marker="D",
                facecolor=colour,
                edgecolor="k",
                lw=0.5,
                zorder=3,
            )
            handles.append(
                Line2D(
                    [], [], ls="", marker="o", ms=4, color=colour, label=f"BP-RP = {colours[k]:.2f}"
                )
            )
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker="D",
                ms=5,
                mfc="0.7",
                mec="k",
                label=f"self-calibration field ({int(sc.sum()):,})",
            )
        )
        if relative:  # without reference data the period may lie far from the data
            r0 = np.datetime64(reference[0], "D")
            r1 = np.datetime64(reference[1], "D") + np.timedelta64(1, "D")
            ax.axvspan(r0, r1, color=REFERENCE_COLOUR, alpha=0.35, zorder=0, lw=0)
            handles.append(
                Line2D([], [], lw=6, color=REFERENCE_COLOUR, alpha=0.6,
                       label=f"reference {reference[0]}..{reference[1]}")
            )  # fmt: skip
            ax.axhline(0.0, color="0.4", lw=0.8, zorder=1)
        ax.legend(handles=handles, loc="lower left", markerscale=1.5)
        ax.grid(True)
        _date_axis(ax)
        ax.set_xlabel("date (UTC)")
        n = int((np.isfinite(vals).any(axis=0) & ~np.isnat(t)).sum())
        if relative:
            ax.set_ylabel("ln(VIS/Gaia) − mean over the reference period (ratio)")
            sec = ax.secondary_yaxis(
                "right", functions=(lambda v: -MAG_PER_LN * v, lambda m: -m / MAG_PER_LN)
            )
            sec.set_ylabel("throughput loss since the reference [mag]")
        else:
            ax.set_ylabel("ln(VIS/Gaia) (absolute)")
        ylim = _robust_ylim(vals)
        if ylim is not None:
            ax.set_ylim(*ylim)
        if n == 0:
            no_data(ax, f"no {kind} exposures with VIS/Gaia")
        elif not relative:
            corner_text(
                ax,
                f"no data in the reference period {reference[0]}..{reference[1]}: "
                "absolute values shown",
                loc="upper right",
                fontsize=9,
            )
            ax.texts[-1].set_color(COLOUR_REJECT)
        sub = f"{n:,} exposures"
        if n:
            ok_t = t[~np.isnat(t) & np.isfinite(vals).any(axis=0)]
            sub += f" from {str(ok_t.min())[:10]} to {str(ok_t.max())[:10]}"
        if relative:
            sub += f", relative to the mean of {n_reference:,} in the reference period"
        if n_rejected:
            sub += f"\n{n_rejected:,} more rejected by VISQL's cuts (curvature, astrometric σ)"
        figure_title(
            fig,
            f"VIS/Gaia against time (ice monitor), {kind} exposures ({exptime:.2f} s)",
            sub,
            fontsize=11.5,
        )
        return fig


# ------------------------------------------------------------------------------------------
# 4. Diagonal CCDs against time (VISQL ploticetimelinediag.py)


def plot_ice_diag(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    kind: str,
    exptime: float,
    reference: tuple[date, date],
    relative: bool,
) -> Figure:
    """Daily VIS/Gaia at BP-RP 1.75 of the diagonal and cross-diagonal CCDs against time.

    `series` maps 'R-C' to (days as datetime64, values): values are the daily VIS/Gaia
    divided by the CCD's reference-period mean when `relative`, else the daily VIS/Gaia.
    Top panel: CCDs (n, n); bottom: (n, 7 - n).
    """
    with plot_style(), fast_ticks(), quiet_numpy():
        fig = new_figure(1100, 900)
        axes = fig.subplots(2, 1, sharex=True)
        cmap = colormaps["tab10"]
        r0 = np.datetime64(reference[0], "D")
        r1 = np.datetime64(reference[1], "D") + np.timedelta64(1, "D")
        everything = []
        for ax, diagonal in zip(axes, ("diagonal", "cross-diagonal"), strict=True):
            any_data = False
            for n in range(1, 7):
                name = f"{n}-{n}" if diagonal == "diagonal" else f"{n}-{7 - n}"
                days, vals = series.get(name, (np.array([], "datetime64[D]"), np.array([])))
                vals = np.asarray(vals, float)
                ok = np.isfinite(vals)
                if ok.any():
                    any_data = True
                    everything.append(vals[ok])
                ax.plot(
                    np.asarray(days)[ok],
                    vals[ok],
                    "-o",
                    ms=3,
                    lw=1,
                    color=cmap(n - 1),
                    label=f"CCD {name}",
                )
            if relative:
                ax.axvspan(r0, r1, color=REFERENCE_COLOUR, alpha=0.35, zorder=0, lw=0,
                           label="reference")  # fmt: skip
                ax.axhline(1.0, color="0.4", lw=0.8)
            axes_title(ax, f"{diagonal} CCDs")
            ax.set_ylabel(
                "VIS/Gaia(1.75) ÷ reference mean" if relative else "VIS/Gaia at BP-RP 1.75"
            )
            ax.grid(True)
            ax.legend(loc="lower left", ncol=4)
            if not any_data:
                no_data(ax, f"no daily per-CCD VIS/Gaia for {kind} exposures", fontsize=10)
        if everything:
            lim = _robust_ylim(np.concatenate(everything), pad=0.1)
            if lim is not None:
                for ax in axes:
                    ax.set_ylim(*lim)
        _date_axis(axes[-1])
        axes[-1].set_xlabel("date (UTC)")
        note = (
            f"relative to the mean over {reference[0]}..{reference[1]}"
            if relative
            else f"no data in the reference period {reference[0]}..{reference[1]}: absolute"
        )
        figure_title(
            fig,
            f"VIS/Gaia per CCD and day, {kind} exposures ({exptime:.2f} s)",
            f"median of the exposures' CCD values at BP-RP 1.75, {note}",
            fontsize=11.5,
        )
        return fig
