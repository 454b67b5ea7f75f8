"""PNG plot of per-exposure particle rates against GOES flux, with the fitted relation.

One point per exposure (coloured by group, e.g. science / dark), log flux axis, and the
relation from `viskom.measure.spaceweather.fit_rate_relation` with its equation in the
legend. The function returns a matplotlib Figure; the caller saves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from viskom.present.inputs import _as_float, _as_str
from viskom.present.style import (
    COLOUR_REJECT,
    axes_title,
    figure_title,
    new_figure,
    no_data,
    plot_style,
    quiet_numpy,
)

__all__ = ["plot_rate_correlation"]


def _sci(value: float, digits: int = 2) -> str:
    """'2.5×10⁴' in mathtext, or plain text for zero / non-finite values."""
    if not np.isfinite(value) or value == 0:
        return f"{value:g}"
    exp = int(np.floor(np.log10(abs(value))))
    if -2 <= exp <= 3:
        return f"{value:.{max(digits - exp, 0)}f}" if exp < digits else f"{value:.0f}"
    mant = value / 10.0**exp
    return rf"${mant:.{digits - 1}f}\times10^{{{exp}}}$"


def _pm(value: float, err: float) -> str:
    """'(3.00 ± 0.06)×10⁶' in mathtext, with a shared power of ten; plain value without error."""
    if not np.isfinite(err) or err <= 0:
        return _sci(value)
    if not np.isfinite(value):
        return f"{value:g}"
    big = max(abs(value), err)
    exp = int(np.floor(np.log10(big))) if big > 0 else 0
    exp = 0 if -2 <= exp <= 3 else exp
    digits = max(0, -int(np.floor(np.log10(err / 10.0**exp))) + 1)
    m, e = value / 10.0**exp, err / 10.0**exp
    text = rf"{m:.{digits}f} \pm {e:.{digits}f}"
    return rf"$({text})$" if exp == 0 else rf"$({text})\times10^{{{exp}}}$"


def _fit_label(fit: Mapping[str, Any], xlabel: str, ylabel: str) -> str:
    a = float(fit.get("intercept", np.nan))
    b = float(fit.get("slope", np.nan))
    model = fit.get("model", "linear")
    stats_text = []
    for key, name in (("r", "r"), ("rho", "ρ"), ("n", "n")):
        if key in fit and fit[key] is not None and np.isfinite(float(fit[key])):
            v = float(fit[key])
            stats_text.append(f"{name} = {v:.0f}" if key == "n" else f"{name} = {v:.2f}")
    a_err = float(fit.get("intercept_err", np.nan))
    b_err = float(fit.get("slope_err", np.nan))
    if model == "loglog":
        eq = f"log y = {_pm(a, a_err)} + {_pm(b, b_err)} log x"
    else:
        eq = f"y = {_pm(a, a_err)} + {_pm(b, b_err)} x"
    return eq + (f"  ({', '.join(stats_text)})" if stats_text else "")


def plot_rate_correlation(
    x: Any,
    y: Any,
    xlabel: str,
    ylabel: str,
    title: str,
    *,
    fit: Mapping[str, Any] | None = None,
    labels: Any = None,
) -> Figure:
    """Per-exposure event rate against GOES flux (log x), with the fitted relation if given.

    `fit` is a dict from `measure.spaceweather.fit_rate_relation` (slope, intercept, model
    'linear' or 'loglog', r, n; optional scatter and clip_sigma mark the clipped points); its
    equation goes in the legend. `labels` (one string per point, e.g. 'science'/'dark') colours
    points by group. Log y when the fit is log-log; points with x <= 0 cannot be drawn and are
    counted.
    """
    with plot_style(), quiet_numpy():
        xv = _as_float(x)
        yv = _as_float(y)
        if xv.shape != yv.shape:
            raise ValueError(f"x ({xv.size}) and y ({yv.size}) differ in length")
        groups = _as_str(labels) if labels is not None else np.full(xv.size, "", dtype=str)
        if groups.size != xv.size:
            raise ValueError(f"labels ({groups.size}) and x ({xv.size}) differ in length")
        loglog = bool(fit) and fit.get("model") == "loglog"
        ok = np.isfinite(xv) & np.isfinite(yv) & (xv > 0)
        if loglog:
            ok &= yv > 0
        n_bad = int((np.isfinite(xv) & np.isfinite(yv)).sum() - ok.sum())

        fig = new_figure(800, 600)
        ax = fig.add_subplot()
        clipped = np.zeros(xv.size, dtype=bool)
        if fit and "scatter" in fit:
            a, b = float(fit.get("intercept", np.nan)), float(fit.get("slope", np.nan))
            s, k = float(fit.get("scatter", np.nan)), float(fit.get("clip_sigma", 3.0))
            if all(np.isfinite(v) for v in (a, b, s, k)) and s > 0:
                u = np.log10(np.where(ok, xv, 1.0)) if loglog else xv
                v = np.log10(np.where(ok, yv, 1.0)) if loglog else yv
                clipped = ok & (np.abs(v - (a + b * u)) > k * s)
        names = [g for g in dict.fromkeys(groups[ok].tolist())]
        size = 32.0 if ok.sum() < 50 else 16.0  # few points: bigger
        palette = colormaps["tab10"]
        for i, g in enumerate(names):
            sel = ok & (groups == g) & ~clipped
            colour = palette(i % 10) if len(names) > 1 or g else "#1f77b4"
            if sel.any():
                ax.scatter(
                    xv[sel],
                    yv[sel],
                    s=size,
                    color=colour,
                    alpha=0.8,
                    lw=0,
                    zorder=3,
                    label=f"{g or 'exposures'} ({int((ok & (groups == g)).sum()):,})",
                )
        if clipped.any():
            ax.scatter(
                xv[clipped],
                yv[clipped],
                s=22,
                marker="x",
                color="0.45",
                lw=1.0,
                zorder=3,
                label=f"clipped from the fit ({int(clipped.sum())})",
            )
        ax.set_xscale("log")
        if loglog:
            ax.set_yscale("log")
        if ok.any():
            xlo, xhi = np.min(xv[ok]), np.max(xv[ok])
            widen = 10 ** (0.5 * max(1.0 - np.log10(xhi / xlo), 0.0))  # at least a decade
            pad = 10 ** (0.05 * max(np.log10(xhi / xlo), 1.0))
            ax.set_xlim(xlo / widen / pad, xhi * widen * pad)
        else:
            ax.set_xlim(1e-8, 1e-4)
        drawn_fit = False
        if fit:
            a, b = float(fit.get("intercept", np.nan)), float(fit.get("slope", np.nan))
            if np.isfinite(a) and np.isfinite(b):
                xl = ax.get_xlim()
                xx = np.logspace(np.log10(xl[0]), np.log10(xl[1]), 200)
                yy = 10 ** (a + b * np.log10(xx)) if loglog else a + b * xx
                ylim = ax.get_ylim() if ok.any() else None
                ax.plot(
                    xx,
                    yy,
                    color=COLOUR_REJECT,
                    lw=1.6,
                    zorder=4,
                    label=_fit_label(fit, xlabel, ylabel),
                )
                drawn_fit = True
                if ylim is not None:
                    ax.set_ylim(*ylim)  # the fitted line must not stretch the data's range
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", lw=0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left")
        if not ok.any():
            no_data(ax, "no exposure with a finite rate and a positive GOES flux")
        sub = f"{int(ok.sum()):,} exposures"
        if n_bad:
            sub += f"; {n_bad:,} with flux ≤ 0{' or rate ≤ 0' if loglog else ''} not shown"
        if fit and drawn_fit:
            sub += f"; {'log-log' if loglog else 'linear'} fit"
            if "clip_sigma" in fit:
                sub += f", {float(fit['clip_sigma']):g}σ-clipped least squares"
        elif fit:
            sub += "; no fit possible (too few points or a single flux value)"
        axes_title(ax, sub, fontsize=9)
        figure_title(fig, title, fontsize=10.5)
        return fig
