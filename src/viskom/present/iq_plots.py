"""PNG plots of a month of image quality: IQ timeline and PSF-moment summary.

VISQL originals (VISQL-SPEC): IQ_timeline (7.5) and psfmoments_<month> (7.4). Inputs are the
month's IQ table (exposure, date_obs, exptime, r2, e1, e2, score, coma1/2, trefoil1/2) as
any table-like (see `viskom.present.inputs`); the IQ score and class come from
`viskom.measure.iq`. Each function returns a matplotlib Figure; the caller saves it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse, Rectangle
from matplotlib.ticker import FuncFormatter, MultipleLocator

from viskom.measure.iq import IQ_OK, IQ_REJECT, IQReference, iq_class, iq_score
from viskom.present.common import clipped_scatter, data_limits, reference_band, suptitle
from viskom.present.inputs import Columns, mission_day, mission_day_to_date, month_mission_days
from viskom.present.style import (
    COLOUR_BOX,
    COLOUR_C1,
    COLOUR_REFERENCE,
    COLOUR_REJECT,
    SEQUENTIAL,
    axes_title,
    new_figure,
    no_data,
    plot_style,
    quiet_numpy,
    truncated_cmap,
)

__all__ = ["EXPTIME_RANGE", "plot_iq_timeline", "plot_psf_month_summary"]

# ------------------------------------------------------------------------------------------
# 1. Monthly IQ timeline (VISQL IQ_timeline)

#: (column, y label, VISQL's fixed y range (VISQL-SPEC 7.5; drawn as a grey reference band),
#: least y span). The axis ranges come from the data (`data_limits`) and contain the band.
_TIMELINE_PANELS = (
    ("r2", "R2 [px²]", (1.7, 2.3), 0.02),
    ("e1", "ellipticity e1\n(dimensionless)", (-0.07, 0.07), 0.01),
    ("e2", "ellipticity e2\n(dimensionless)", (-0.07, 0.07), 0.01),
    ("trefoil1", "trefoil t1\n(dimensionless)", (-0.3, -0.15), 0.01),
    ("trefoil2", "trefoil t2\n(dimensionless)", (-0.05, 0.1), 0.01),
)
EXPTIME_RANGE = (0.0, 700.0)
#: Robust range of the data that sets the axes: these percentiles, plus a margin.
_PERCENTILES = (1.0, 99.0)


def _month_columns(
    month: Any, reference: IQReference | None = None, *, need_dates: bool = True
) -> dict[str, np.ndarray]:
    """Month-table columns as float arrays; score computed from (R2, e1, e2) if absent."""
    cols = Columns(month, "month table")
    optional = ("coma1", "coma2", "trefoil1", "trefoil2")
    out = {k: cols.float(k, required=k not in optional) for k in ("r2", "e1", "e2", *optional)}
    if cols.find("score") is not None or cols.n == 0:
        out["score"] = cols.float("score")
    else:
        out["score"] = np.asarray(iq_score(out["r2"], out["e1"], out["e2"], reference))
    out["exptime"] = cols.float("exptime", required=False)
    out["day"] = mission_day(cols.datetime("date_obs", required=need_dates))
    out["n"] = np.array(cols.n)
    return out


def _date_tick(day: float, _pos: Any = None) -> str:
    dt = mission_day_to_date(day)
    return f"{day:.0f}\n{dt.day} {dt:%b}"


def plot_iq_timeline(
    month: Any,
    *,
    month_label: str,
    ok: float = IQ_OK,
    reject: float = IQ_REJECT,
    title: str | None = None,
) -> Figure:
    """Per-exposure R2, e1, e2, trefoil and IQ score against mission day over a month.

    Points coloured by exposure time. Each y range comes from the data (1st-99th percentile
    plus a margin) and contains VISQL's fixed range, drawn as a grey band; values beyond it
    sit at the panel edge as triangles. Exposures outside the month are counted, not drawn.
    """
    with plot_style(), quiet_numpy():
        m = _month_columns(month)
        d0, d1 = month_mission_days(month_label)
        day = m["day"]
        in_month = np.isfinite(day) & (day >= d0) & (day < d1)
        order = np.flatnonzero(in_month)[np.argsort(day[in_month], kind="stable")]
        n_month = int(in_month.sum())
        cmap = truncated_cmap(SEQUENTIAL, 0.0, 0.92).with_extremes(bad="0.5")
        norm = Normalize(*EXPTIME_RANGE)
        size = 36.0 if n_month < 100 else 16.0 if n_month < 1000 else 9.0

        fig = new_figure(1400, 1400)
        axes = fig.subplots(len(_TIMELINE_PANELS) + 1, 1, sharex=True)
        for ax, (key, ylabel, band, min_span) in zip(axes, _TIMELINE_PANELS, strict=False):
            values = m[key]
            ylim = data_limits(
                values[in_month], reference=band, min_span=min_span, percentiles=_PERCENTILES
            )
            reference_band(ax, *band)
            nout = clipped_scatter(
                ax, day[order], values[order], ylim=ylim, c=m["exptime"][order], cmap=cmap,
                norm=norm, s=size, inset=0.025,
            )  # fmt: skip
            ax.set_ylim(*ylim)
            ax.set_ylabel(ylabel)
            info = _panel_info(ax, values[in_month], nout, log=False)
            info.insert(1 if info and info[0].startswith("median") else 0,
                        f"grey: VISQL's range {band[0]:g} to {band[1]:g}")  # fmt: skip
            ax.set_title("  ·  ".join(info), loc="left", fontsize=8.5, pad=3)

        ax = axes[-1]
        values = m["score"]
        ylim = data_limits(
            values[in_month], reference=(ok / 3.0, reject * 3.0), min_span=1.0, log=True,
            percentiles=_PERCENTILES, default=(0.1, 1e5),
        )  # fmt: skip
        ax.set_yscale("log")
        ax.axhspan(ylim[0], ok, color=COLOUR_BOX, alpha=0.08, zorder=0)
        ax.axhspan(reject, ylim[1], color=COLOUR_REJECT, alpha=0.08, zorder=0)
        ax.axhline(ok, color=COLOUR_BOX, lw=1.2, ls="--", zorder=1)
        ax.axhline(reject, color=COLOUR_REJECT, lw=1.2, ls="--", zorder=1)
        for level, text, colour in ((ok, f" OK < {ok:g}", COLOUR_BOX),
                                    (reject, f" reject > {reject:g}", COLOUR_REJECT)):  # fmt: skip
            ax.text(1.0, level, text, color=colour, va="center", fontsize=8.5, clip_on=False,
                    transform=ax.get_yaxis_transform())  # fmt: skip
        nout = clipped_scatter(
            ax, day[order], values[order], ylim=ylim, logy=True, c=m["exptime"][order],
            cmap=cmap, norm=norm, s=size, inset=0.025,
        )  # fmt: skip
        ax.set_ylim(*ylim)
        ax.set_ylabel("IQ score\n(dimensionless)")
        info = _panel_info(ax, values[in_month], nout, log=True)
        sel = values[in_month]
        sel = sel[np.isfinite(sel)]
        if sel.size:
            cls = iq_class(sel, ok=ok, reject=reject)
            info.append(
                f"{int((cls == 'ok').sum())} OK, {int((cls == 'degraded').sum())} between,"
                f" {int((cls == 'rejected').sum())} rejected"
            )
        ax.set_title("  ·  ".join(info), loc="left", fontsize=8.5, pad=3)

        for ax in axes:
            ax.grid(True, which="major", lw=0.6)
            ax.grid(True, which="minor", axis="x", lw=0.3, color="#eeeeee")
            if n_month == 0:
                no_data(ax, f"no exposures in {month_label}", fontsize=10)
        ax = axes[-1]
        ax.set_xlim(d0, d1)
        ax.xaxis.set_major_locator(MultipleLocator(2))
        ax.xaxis.set_minor_locator(MultipleLocator(1))
        ax.xaxis.set_major_formatter(FuncFormatter(_date_tick))
        ax.set_xlabel("mission day [days since 2023-07-01 00:00 UTC] / date")
        fig.colorbar(
            ScalarMappable(norm, cmap),
            ax=list(axes),
            label="exposure time [s]",
            aspect=60,
            pad=0.015,
            fraction=0.03,
        )
        n_off = int(np.isfinite(day).sum()) - n_month
        sub = f"{n_month:,} exposures in {month_label} (mission days {d0:g}–{d1:g})"
        if n_off:
            sub += f"; {n_off} outside the month not shown"
        n_nodate = int(m["n"]) - int(np.isfinite(day).sum())
        if n_nodate:
            sub += f"; {n_nodate} without a date"
        sub += "; y ranges from the data, values beyond them at the edge as triangles (▲▼)"
        suptitle(fig, title or f"VIS image quality per exposure, {month_label}", sub)
        return fig


def _panel_info(ax: Any, values: np.ndarray, nout: int, *, log: bool) -> list[str]:
    """Corner text items of a timeline panel: the median (dotted line) and the off-scale count."""
    info = []
    v = values[np.isfinite(values)]
    if v.size:
        med = float(np.median(v))
        info.append(f"median {med:.3g}" if log else f"median {med:.4g}")
        lo, hi = ax.get_ylim()
        if not log and lo < med < hi:
            ax.axhline(med, color="0.35", lw=0.8, ls=":", zorder=2)
    if nout:
        info.append(f"{nout} beyond the axis (▲▼)")
    return info


# ------------------------------------------------------------------------------------------
# 2. Monthly PSF-moment summary (VISQL psfmoments_<m>.png)


def _ok_ellipse(centre: tuple[float, float], cov: np.ndarray, level: float, colour: Any) -> Ellipse:
    """Ellipse (x-mu)^T cov^-1 (x-mu) = level."""
    vals, vecs = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
    width, height = 2 * np.sqrt(level * vals[1]), 2 * np.sqrt(level * vals[0])
    return Ellipse(
        centre, width, height, angle=angle, fill=False, ec=colour, lw=1.2, ls="--", zorder=5
    )


def plot_psf_month_summary(
    month: Any,
    *,
    month_label: str,
    ok: float = IQ_OK,
    reference: IQReference | None = None,
    title: str | None = None,
) -> Figure:
    """2x2 scatter of a month's per-exposure median moments; score < ok highlighted.

    Panels: R2 vs e1 and e2; e1 vs e2; coma1 vs coma2; trefoil1 vs trefoil2. Dashed ellipses:
    the score = ok boundary of `reference` (default VISQL's) projected on each plane.
    """
    with plot_style(), quiet_numpy():
        ref = reference if reference is not None else IQReference()
        m = _month_columns(month, ref, need_dates=False)
        good = iq_class(m["score"], ok=ok) == "ok"
        bad = ~good
        n = int(m["n"])
        fig = new_figure(1100, 900)
        axes = fig.subplots(2, 2)
        faint = {"color": "0.6", "s": 12 if n < 100 else 7, "alpha": 0.6, "zorder": 2}
        bright = 24 if n < 100 else 10
        dimless = "(dimensionless)"
        panels = (
            ("r2", ("e1", "e2"), "R2 [px²]", f"e1 (blue), e2 (red) {dimless}", (1.8, 2.1),
             (-0.05, 0.025), (0.02, 0.01)),
            ("e1", ("e2",), f"e1 {dimless}", f"e2 {dimless}", (-0.05, 0.0), (-0.025, 0.025),
             (0.01, 0.01)),
            ("coma1", ("coma2",), f"coma1 {dimless}", f"coma2 {dimless}", (0.0, 0.05),
             (-0.05, 0.0), (0.01, 0.01)),
            ("trefoil1", ("trefoil2",), f"trefoil1 {dimless}", f"trefoil2 {dimless}",
             (-0.3, -0.2), (-0.05, 0.05), (0.01, 0.01)),
        )  # fmt: skip
        titles = (
            "(a) size against ellipticity",
            "(b) ellipticity",
            "(c) coma",
            "(d) trefoil",
        )
        for ax, panel_title in zip(axes.flat, titles, strict=True):
            axes_title(ax, panel_title)
        n_beyond = 0
        for ax, (xk, yks, xlabel, ylabel, xref, yref, spans) in zip(axes.flat, panels, strict=True):
            xlim = data_limits(m[xk], reference=xref, min_span=spans[0], percentiles=_PERCENTILES)
            ylim = data_limits(
                np.concatenate([m[k] for k in yks]),
                reference=yref,
                min_span=spans[1],
                percentiles=_PERCENTILES,
            )
            ax.add_patch(
                Rectangle(
                    (xref[0], yref[0]), xref[1] - xref[0], yref[1] - yref[0],
                    facecolor=COLOUR_REFERENCE, alpha=0.18, lw=0, zorder=0,
                )
            )  # fmt: skip
            for j, yk in enumerate(yks):
                colour = (COLOUR_C1, COLOUR_REJECT)[j] if len(yks) > 1 else "k"
                n_beyond += clipped_scatter(
                    ax,
                    m[xk][bad],
                    m[yk][bad],
                    xlim=xlim,
                    ylim=ylim,
                    label=f"score ≥ {ok:g}" if j == 0 else None,
                    **faint,
                )
                n_beyond += clipped_scatter(
                    ax,
                    m[xk][good],
                    m[yk][good],
                    xlim=xlim,
                    ylim=ylim,
                    color=colour,
                    s=bright,
                    alpha=0.8,
                    zorder=3,
                    label=f"score < {ok:g}" + (f" ({yk})" if len(yks) > 1 else ""),
                )
            ax.set_xlim(*xlim)
            ax.set_ylim(*ylim)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, lw=0.5)
        # Projections of the score = ok ellipsoid (minimum of the quadratic form over the
        # coordinate not shown) and the reference point.
        ax = axes[0, 0]
        ax.add_patch(_ok_ellipse((ref.r2m, ref.e1m), ref.covariance, ok, COLOUR_C1))
        ax.add_patch(
            _ok_ellipse((ref.r2m, ref.e2m), np.diag([ref.cov00, ref.vare2]), ok, COLOUR_REJECT)
        )
        ax.plot([ref.r2m] * 2, [ref.e1m, ref.e2m], "+", color="k", ms=10, mew=1.5, zorder=6)
        ax = axes[0, 1]
        ax.add_patch(_ok_ellipse((ref.e1m, ref.e2m), np.diag([ref.cov11, ref.vare2]), ok, "k"))
        ax.plot(ref.e1m, ref.e2m, "+", color="k", ms=10, mew=1.5, zorder=6)
        handles, labels = axes[0, 1].get_legend_handles_labels()
        handles.append(Line2D([], [], color="k", ls="--", lw=1.2))
        labels.append(f"score = {ok:g} boundary ({ref.name})")
        handles.append(Line2D([], [], color="k", ls="none", marker="+", ms=10, mew=1.5))
        labels.append("reference")
        handles.append(Rectangle((0, 0), 1, 1, facecolor=COLOUR_REFERENCE, alpha=0.35, lw=0))
        labels.append("VISQL's plot range")
        if n:
            axes[0, 1].legend(handles, labels, loc="upper left", fontsize=7.5)
            if axes[0, 0].get_legend_handles_labels()[0]:
                axes[0, 0].legend(loc="lower left", fontsize=7.5)
        else:
            for ax in axes.flat:
                no_data(ax, f"no exposures in {month_label}", fontsize=10)
        n_good = int(good.sum())
        sub = f"{n:,} exposures; {n_good:,} with IQ score < {ok:g} highlighted, others grey"
        sub += "; axis ranges from the data"
        if n_beyond:
            sub += f", {n_beyond} points beyond them at the edges as triangles"
        suptitle(fig, title or f"VIS median PSF moments per exposure, {month_label}", sub)
        return fig
