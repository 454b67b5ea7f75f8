"""PNG panel of GOES X-ray (and proton) flux within +-12 h of one exposure.

Replaces VISQL's `plotgoes24h.py` `<n>_goes.png` (VISQL-SPEC 9.6): XRS-A and XRS-B on a log
scale, the exposure window shaded, flare-class letters on the right and optionally the
>= 10 MeV proton flux on a second right axis. The function returns a matplotlib Figure;
the caller saves it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from viskom.measure.cosmics import READOUT_S
from viskom.present.inputs import _as_float, as_datetime64, finite_positive
from viskom.present.style import (
    COLOUR_C1,
    COLOUR_C2,
    axes_title,
    corner_text,
    figure_title,
    new_figure,
    no_data,
    plot_style,
    quiet_numpy,
)

__all__ = ["FLARE_CLASSES", "GOES_WINDOW_H", "GOES_YLIM", "PROTON_S1_PFU", "plot_goes_panel"]

#: GOES window half-width [h] and default flux range [W/m2] of the GOES panel.
GOES_WINDOW_H = 12.0
GOES_YLIM = (1e-8, 1e-4)
#: Flare classes by XRS-B (0.1-0.8 nm) peak flux: class letter from this flux upward.
FLARE_CLASSES = (("A", 1e-8), ("B", 1e-7), ("C", 1e-6), ("M", 1e-5), ("X", 1e-4))
#: NOAA S1 radiation storm threshold: >= 10 MeV protons at 10 pfu.
PROTON_S1_PFU = 10.0


def _gap_broken(h: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort by time and insert NaN where samples are more than 5 typical spacings apart."""
    order = np.argsort(h, kind="stable")
    h, v = h[order], v[order]
    if h.size < 3:
        return h, v
    dt = np.diff(h)
    typical = np.median(dt[dt > 0]) if (dt > 0).any() else 0.0
    gaps = np.flatnonzero(dt > 5 * typical) if typical > 0 else np.array([], dtype=int)
    if gaps.size:
        h = np.insert(h, gaps + 1, h[gaps] + dt[gaps] / 2)
        v = np.insert(v, gaps + 1, np.nan)
    return h, v


def _hours_from(time: Any, t0: np.datetime64, n: int) -> np.ndarray:
    if time is None:
        return np.full(n, np.nan)
    t = as_datetime64(time)
    h = (t - t0).astype("timedelta64[us]").astype(np.int64) / 3.6e9
    return np.where(np.isnat(t), np.nan, h)


def _series(values: Any, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    v = _as_float(values)
    if v.size != n:
        raise ValueError(f"a GOES series has {v.size} values for {n} times")
    return np.where(v > 0, v, np.nan)


def plot_goes_panel(
    time: Any,
    xrsa: Any,
    xrsb: Any,
    t_obs: datetime | np.datetime64 | str | None,
    exptime_s: float | None,
    title: str,
    *,
    readout_s: float = READOUT_S,
    proton_time: Any = None,
    proton_flux: Any = None,
) -> Figure:
    """GOES XRS-A and XRS-B flux within ±12 h of an exposure, with flare classes (640x480).

    As VISQL's `<n>_goes.png` (log flux 1e-8..1e-4 W/m2, red line at the start of the
    exposure), plus XRS-B, the exposure window shaded, flare-class letters on the right, and
    optionally the >=10 MeV proton flux [pfu] on a second right axis. Times are UTC.
    """
    with plot_style(), quiet_numpy():
        t0 = as_datetime64(t_obs)[0] if t_obs is not None else np.datetime64("NaT", "us")
        n = 0 if time is None else as_datetime64(time).size
        h = _hours_from(time, t0, n)
        a = _series(xrsa, n)
        b = _series(xrsb, n)
        in_win = np.isfinite(h) & (np.abs(h) <= GOES_WINDOW_H)
        has_a = bool((in_win & np.isfinite(a)).any())
        has_b = bool((in_win & np.isfinite(b)).any())

        ph = pf = np.array([])
        if proton_flux is not None:
            pf_all = _as_float(proton_flux)
            ph_all = _hours_from(proton_time, t0, pf_all.size)
            if ph_all.size != pf_all.size:
                raise ValueError("proton_time and proton_flux differ in length")
            p_ok = np.isfinite(ph_all) & (np.abs(ph_all) <= GOES_WINDOW_H) & (pf_all > 0)
            ph, pf = ph_all[p_ok], pf_all[p_ok]

        exptime = finite_positive(exptime_s)
        fig = new_figure(640, 480)
        ax = fig.add_subplot()
        handles: list[Any] = []
        # y range: VISQL's 1e-8..1e-4, widened by a decade for X flares or a quiet XRS-A
        vals = np.concatenate([a[in_win], b[in_win]])
        vals = vals[np.isfinite(vals)]
        lo, hi = GOES_YLIM
        if vals.size and np.nanpercentile(vals, 2) < lo:
            lo = max(10.0 ** np.floor(np.log10(np.nanpercentile(vals, 2))), 1e-9)
        if vals.size and vals.max() > hi:
            hi = min(10.0 ** np.ceil(np.log10(vals.max())), 1e-2)

        if not np.isnat(t0):
            width_s = (exptime if np.isfinite(exptime) else 0.0) + readout_s
            shade = (
                f"exposure + readout ({width_s:.0f} s)"
                if np.isfinite(exptime)
                else f"readout ({width_s:.0f} s), EXPTIME unknown"
            )
            handles.append(
                ax.axvspan(
                    0.0, width_s / 3600.0, color="#ffbf00", alpha=0.6, lw=0, zorder=2, label=shade
                )
            )
        for flux, has, colour, label in (
            (b, has_b, COLOUR_C1, "XRS-B 0.1–0.8 nm"),
            (a, has_a, COLOUR_C2, "XRS-A 0.05–0.4 nm"),
        ):
            if has:
                hh, ff = _gap_broken(h[in_win], flux[in_win])
                (ln,) = ax.plot(hh, ff, color=colour, lw=1.2, zorder=3, label=label)
                handles.append(ln)
        ax.axvline(0.0, color="red", lw=1.1, zorder=1.5)
        ax.set_xlim(-GOES_WINDOW_H, GOES_WINDOW_H)
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        ax.set_xticks(np.arange(-12, 13, 3))
        ax.set_xlabel("time from DATE-OBS [h]")
        ax.set_ylabel("GOES X-ray flux [W m⁻²]")
        for _, level in FLARE_CLASSES:
            if lo < level < hi:
                ax.axhline(level, color="0.85", lw=0.6, zorder=0)

        # flare-class letters on the right axis, at the lower bound of each class
        cls = ax.twinx()
        cls.set_yscale("log")
        cls.set_ylim(lo, hi)
        cls.yaxis.set_major_locator(FixedLocator([lvl for _, lvl in FLARE_CLASSES]))
        cls.yaxis.set_minor_locator(NullLocator())
        cls.yaxis.set_major_formatter(
            FuncFormatter(lambda v, _: dict((lvl, k) for k, lvl in FLARE_CLASSES).get(v, ""))
        )
        cls.tick_params(axis="y", labelsize=9, length=3)
        cls.set_ylabel("flare class (XRS-B)", fontsize=8.5, labelpad=2)

        if proton_flux is not None:
            pax = ax.twinx()
            pax.spines["right"].set_position(("outward", 42))
            pax.set_yscale("log")
            plo, phi = 1e-1, 1e4
            if pf.size:
                plo = min(plo, 10.0 ** np.floor(np.log10(pf.min())))
                phi = max(phi, 10.0 ** np.ceil(np.log10(pf.max())))
                hh, ff = _gap_broken(ph, pf)
                (ln,) = pax.plot(hh, ff, color="#2ca02c", lw=1.1, zorder=2, label="≥10 MeV protons")
                handles.append(ln)
                handles.append(
                    pax.axhline(
                        PROTON_S1_PFU,
                        color="#2ca02c",
                        lw=0.8,
                        ls=":",
                        label=f"{PROTON_S1_PFU:g} pfu (S1 storm)",
                    )
                )
            pax.set_ylim(plo, phi)
            pax.set_ylabel("≥10 MeV protons [pfu]", color="#2ca02c", fontsize=9)
            pax.tick_params(axis="y", colors="#2ca02c", labelsize=8)
            if not pf.size:
                corner_text(ax, "no proton data for this window", loc="lower right", fontsize=7)

        exp_label = (
            f"EXPTIME {exptime:.1f} s + readout {readout_s:.0f} s"  # VISQL: "560.5 sec +   72"
            if np.isfinite(exptime)
            else f"EXPTIME unknown + readout {readout_s:.0f} s"
        )
        corner_text(ax, exp_label, loc="upper right", fontsize=8.5)
        if handles:
            ax.legend(handles=handles, loc="upper left", fontsize=7.5)
        if np.isnat(t0):
            no_data(ax, "no observation time (DATE-OBS)")
            when = "DATE-OBS unknown"
        else:
            when = f"t = 0 at DATE-OBS {str(t0.astype('datetime64[s]')).replace('T', ' ')} UTC"
            if not (has_a or has_b):
                no_data(ax, "no GOES data for this window")
        axes_title(ax, when, fontsize=8.5)
        figure_title(fig, title, fontsize=10.5)
        return fig
