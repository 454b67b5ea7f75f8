"""PNG plots of particle events (cosmic rays, solar X-rays, protons) and of space weather.

Replaces VISQL's `plotX.py` maps `<n>_cosmiX.png`, `<n>_cosmics.png`, `<n>_protons.png`
(VISQL-SPEC 5.4, 6.4), `rfdiagram.py` `<n>_rf.png` (9.7) and `plotgoes24h.py` `<n>_goes.png`
(9.6), and adds histograms of hit properties and rate-against-GOES correlations with a robust
fit. Same house style as `viskom.present.plots`: plain inputs, an output path, an atomic PNG,
and a complete page with a message when the inputs are empty.

VISQL's event classes are cuts on the SExtractor catalogue: point-like sources
(FLUX_RADIUS < 0.9 px) with FLUX_AUTO in 400-1200 ADU (X-ray photons), < 3000 ADU (all
cosmics) or 1e4-4e4 ADU (high-energy protons).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.patheffects import withStroke
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
from scipy import stats

from viskom.le1.geometry import CCD_COLUMNS, CCD_ROWS, FULL_IMAGE_COLUMNS, FULL_IMAGE_ROWS
from viskom.measure.cosmics import (
    COMPACT_RADIUS_PX,
    COSMIC_MAX_ADU,
    PROTON_ADU,
    READOUT_S,
    XRAY_ADU,
    catalogue_classes,
    top10_of_counts,
    top10count,
)
from viskom.present.focal import ccd_rectangle
from viskom.present.inputs import _as_float, _as_str, as_datetime64
from viskom.present.style import (
    COLOUR_C1,
    COLOUR_C2,
    COLOUR_REJECT,
    corner_text,
    new_figure,
    no_data,
    plot_style,
    quiet_numpy,
    save_png,
)

PathLike = str | os.PathLike[str]
EventKind = Literal["xray", "cosmics", "protons"]

__all__ = [
    "COSMIC_FLUX_MAX",
    "FLARE_CLASSES",
    "FOCAL_PLANE_PIXELS",
    "NBINS_200PX",
    "NBINS_250PX",
    "PIXEL_AREA_CM2",
    "POINT_RADIUS_MAX",
    "PROTON_FLUX",
    "READOUT_S",
    "XRAY_FLUX",
    "catalogue_classes",
    "exposure_factor",
    "fit_rate_relation",
    "plot_event_map",
    "plot_goes_panel",
    "plot_hit_histograms",
    "plot_rate_correlation",
    "plot_rf_diagram",
    "top10count",
]

# ------------------------------------------------------------------------------------------
# VISQL constants (plotX.py, plotgoes24h.py)

#: VISQL's classes (defined in measure.cosmics): point-like below this FLUX_RADIUS [px],
#: X-ray, all-cosmic and proton FLUX_AUTO windows [ADU], and the readout time [s].
POINT_RADIUS_MAX = COMPACT_RADIUS_PX
XRAY_FLUX = XRAY_ADU
COSMIC_FLUX_MAX = COSMIC_MAX_ADU
PROTON_FLUX = PROTON_ADU
#: Exposure time [s] against which VISQL scales its colour ranges (expfactor = 1).
REFERENCE_EXPTIME_S = 560.0
#: Exposure time VISQL assumes when EXPTIME cannot be read.
FALLBACK_EXPTIME_S = 90.0
#: Map extent [deg] in both VIS X and VIS Y.
MAP_RANGE = (-0.4, 0.4)
#: Bins over MAP_RANGE for 250 px and 200 px bins: int(0.5 + 0.8 * 36000 / size).
NBINS_250PX = int(0.5 + 0.8 * 36000 / 250)
NBINS_200PX = int(0.5 + 0.8 * 36000 / 200)
#: rf diagram: 100 x 100 bins over FLUX_RADIUS 0-3 px and log10 FLUX_AUTO 2.5-5.5.
RF_RANGE = ((0.0, 3.0), (2.5, 5.5))
RF_BINS = 100
#: Pixel area of a 12 um VIS pixel [cm2].
PIXEL_AREA_CM2 = (12e-4) ** 2
#: Image pixels of the whole focal plane (36 CCDs of 4096 x 4132).
FOCAL_PLANE_PIXELS = len(CCD_ROWS) * len(CCD_COLUMNS) * 4 * FULL_IMAGE_COLUMNS * FULL_IMAGE_ROWS
#: GOES window half-width [h] and default flux range [W/m2] of the GOES panel.
GOES_WINDOW_H = 12.0
GOES_YLIM = (1e-8, 1e-4)
#: Flare classes by XRS-B (0.1-0.8 nm) peak flux: class letter from this flux upward.
FLARE_CLASSES = (("A", 1e-8), ("B", 1e-7), ("C", 1e-6), ("M", 1e-5), ("X", 1e-4))
#: NOAA S1 radiation storm threshold: >= 10 MeV protons at 10 pfu.
PROTON_S1_PFU = 10.0

# Per-kind settings of the three maps: selection text, bins, colour range (before scaling).
_MAPS: dict[str, dict[str, Any]] = {
    "xray": {
        "nbins": NBINS_250PX,
        "bin_px": 250,
        "vmin": 1.0,
        "vmax": 300.0,
        "title": "X-ray events",
        "cbar": "X-ray events",
        "none": "no X-ray events",
        "cut": f"FLUX_AUTO {XRAY_FLUX[0]:g}–{XRAY_FLUX[1]:g} ADU",
    },
    "cosmics": {
        "nbins": NBINS_200PX,
        "bin_px": 200,
        "vmin": 10.0,
        "vmax": 2000.0,
        "title": "All cosmics",
        "cbar": "Cosmics",
        "none": "no cosmics",
        "cut": f"FLUX_AUTO < {COSMIC_FLUX_MAX:g} ADU",
    },
    "protons": {
        "nbins": NBINS_250PX,
        "bin_px": 250,
        "vmin": 1.0,
        "vmax": 300.0,
        "title": "Protons (high-E)",
        "cbar": "High-E cosmics",
        "none": "no high-energy events",
        "cut": f"FLUX_AUTO {PROTON_FLUX[0]:.0e}–{PROTON_FLUX[1]:.0e} ADU".replace("+0", ""),
    },
}

_KIND_COLOURS = {"cosmic": "0.2", "xray": COLOUR_C1, "proton": COLOUR_REJECT}
_KIND_LABELS = {"cosmic": "cosmic rays", "xray": "X-ray events", "proton": "protons"}


# ------------------------------------------------------------------------------------------
# small helpers


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


def _finite_positive(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v if np.isfinite(v) and v > 0 else float("nan")


def exposure_factor(exptime_s: float | None, readout_s: float = READOUT_S) -> float:
    """VISQL's expfactor = (exptime + readout / 2) / 560, so colour ranges follow exposure time.

    An unknown exposure time counts as 90 s, as in VISQL.
    """
    exptime = _finite_positive(exptime_s)
    if not np.isfinite(exptime):
        exptime = FALLBACK_EXPTIME_S
    return (exptime + float(readout_s) / 2.0) / REFERENCE_EXPTIME_S


def _ccd_outlines(ax: Axes, *, lw: float = 0.45, colour: str = "0.15") -> None:
    """Thin outlines of the 36 CCDs (nominal layout) on a focal-plane map."""
    polys = []
    for r in CCD_ROWS:
        for c in CCD_COLUMNS:
            x0, y0, w, h = ccd_rectangle(r, c)
            polys.append([(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)])
    ax.add_collection(
        PolyCollection(
            polys, closed=True, facecolors="none", edgecolors=colour, linewidths=lw, zorder=3
        )
    )


# ------------------------------------------------------------------------------------------
# 1. event classes and VISQL's top10count


def _map_histogram(x: np.ndarray, y: np.ndarray, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts [ix, iy] of events in nbins x nbins over MAP_RANGE squared, and the bin edges."""
    edges = np.linspace(MAP_RANGE[0], MAP_RANGE[1], nbins + 1)
    ok = np.isfinite(x) & np.isfinite(y)
    counts, _, _ = np.histogram2d(x[ok], y[ok], bins=(edges, edges))
    return counts, edges


# ------------------------------------------------------------------------------------------
# 2. focal-plane maps of event counts (VISQL cosmiX / cosmics / protons)


def plot_event_map(
    x_world: Any,
    y_world: Any,
    kind: EventKind,
    exptime_s: float | None,
    title: str,
    path: PathLike,
    readout_s: float = READOUT_S,
) -> Path:
    """Map of event counts per 250x250 (X-rays, protons) or 200x200 px bin (all cosmics).

    Log colour scale, jet, from vmin to vmax times expfactor = (exptime + readout/2)/560:
    X-rays and protons 1-300, all cosmics 10-2000. VISQL did not scale the all-cosmics range
    by expfactor; we do, so that a short exposure does not look quiet because it is short.
    x_world, y_world are instrument-frame positions [deg] of the events of that class only.
    """
    if kind not in _MAPS:
        raise ValueError(f"kind must be one of {sorted(_MAPS)}, got {kind!r}")
    spec = _MAPS[kind]
    with plot_style(), quiet_numpy():
        x = _as_float(x_world)
        y = _as_float(y_world)
        if x.shape != y.shape:
            raise ValueError(f"x_world ({x.size}) and y_world ({y.size}) differ in length")
        known_exptime = np.isfinite(_finite_positive(exptime_s))
        factor = exposure_factor(exptime_s, readout_s)
        counts, edges = _map_histogram(x, y, spec["nbins"])
        n_in = int(counts.sum())
        n_out = int((np.isfinite(x) & np.isfinite(y)).sum()) - n_in
        t10 = top10_of_counts(counts)
        norm = LogNorm(spec["vmin"] * factor, spec["vmax"] * factor)
        cmap = colormaps["jet"]

        fig = new_figure(640, 480)
        ax = fig.add_subplot()
        mesh = ax.pcolormesh(
            edges,
            edges,
            np.ma.masked_equal(counts.T, 0),
            cmap=cmap,
            norm=norm,
            rasterized=True,
            zorder=1,
        )
        _ccd_outlines(ax)
        ax.set_xlim(*MAP_RANGE)
        ax.set_ylim(-0.45, 0.45)  # room above and below the focal plane for the annotations
        ax.set_aspect("equal")
        ax.set_xlabel("VIS X [deg]")
        ax.set_ylabel("VIS Y [deg]")
        bin_px = spec["bin_px"]
        fig.colorbar(mesh, ax=ax, label=f"{spec['cbar']} / {bin_px}×{bin_px} pixels", pad=0.02)
        ax.set_title(
            f"{spec['title']}: FLUX_RADIUS < {POINT_RADIUS_MAX:g} px, {spec['cut']}", fontsize=9
        )
        fig.suptitle(title, fontsize=10.5)

        if n_in == 0:
            where = "in the catalogue" if x.size == 0 else "with a position\non the map"
            no_data(ax, f"{spec['none']} {where}")
        corner_text(ax, f"{n_in:,} events" + (f" ({n_out:,} off map)" if n_out else ""))
        corner_text(ax, f"top10count = {t10:.1f}", loc="upper right")
        exp_text = (
            f"colour range × {factor:.2f} = (EXPTIME + {readout_s:g}/2) / {REFERENCE_EXPTIME_S:g}"
            if known_exptime
            else f"EXPTIME unknown: {FALLBACK_EXPTIME_S:g} s assumed, colour range × {factor:.2f}"
        )
        corner_text(ax, exp_text, loc="lower left", fontsize=7)
        return save_png(fig, path)


# ------------------------------------------------------------------------------------------
# 3. FLUX_RADIUS - log FLUX_AUTO density (VISQL rfdiagram)


def plot_rf_diagram(flux_radius: Any, flux: Any, title: str, path: PathLike) -> Path:
    """2-D histogram of FLUX_RADIUS against log10 FLUX_AUTO with the VISQL event-class boxes.

    100 x 100 bins over 0-3 px and 2.5-5.5, log colours from 1e2 to 1e4 sources per bin as in
    VISQL; dashed lines mark FLUX_RADIUS 0.9 px and fluxes 400, 1200, 3000, 1e4 and 4e4 ADU.
    """
    with plot_style(), quiet_numpy():
        r = _as_float(flux_radius)
        f = _as_float(flux)
        if r.shape != f.shape:
            raise ValueError(f"flux_radius ({r.size}) and flux ({f.size}) differ in length")
        lf = np.where(f > 0, np.log10(np.where(f > 0, f, 1.0)), np.nan)
        ok = np.isfinite(r) & np.isfinite(lf)
        (xr, yr) = RF_RANGE
        counts, xe, ye = np.histogram2d(r[ok], lf[ok], bins=RF_BINS, range=(xr, yr))
        n_shown = int(counts.sum())

        fig = new_figure(640, 480)
        ax = fig.add_subplot()
        mesh = ax.pcolormesh(
            xe,
            ye,
            np.ma.masked_equal(counts.T, 0),
            cmap=colormaps["jet"],
            norm=LogNorm(1e2, 1e4),
            rasterized=True,
            zorder=1,
        )
        fig.colorbar(mesh, ax=ax, label="sources per bin (0.03 px × 0.03 dex)", pad=0.02)
        ax.set_xlim(*xr)
        ax.set_ylim(*yr)
        ax.set_xlabel("FLUX_RADIUS [px]")
        ax.set_ylabel("log10 FLUX_AUTO [ADU]")

        # class boxes: FLUX_RADIUS < 0.9 and the flux windows
        stroke = [withStroke(linewidth=2.4, foreground="white")]
        line = {"color": "k", "ls": (0, (4, 2.5)), "lw": 1.0, "zorder": 4, "path_effects": stroke}
        rmax = POINT_RADIUS_MAX
        ax.plot([rmax, rmax], [yr[0], np.log10(PROTON_FLUX[1])], **line)
        for level in (*XRAY_FLUX, COSMIC_FLUX_MAX, *PROTON_FLUX):
            ax.plot([xr[0], rmax], [np.log10(level)] * 2, **line)
        label = {
            "fontsize": 7.5,
            "ha": "left",
            "va": "center",
            "zorder": 5,
            "bbox": {"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
        }
        ax.text(rmax + 0.04, np.mean(np.log10(XRAY_FLUX)), "X-rays 400–1200", **label)
        ax.text(rmax + 0.04, np.log10(COSMIC_FLUX_MAX) - 0.04, "cosmics < 3000", **label)
        ax.text(rmax + 0.04, np.mean(np.log10(PROTON_FLUX)), "protons 1e4–4e4", **label)
        ax.text(rmax - 0.03, yr[1] - 0.08, f"r < {rmax:g} px", **{**label, "ha": "right"})
        fig.suptitle(title, fontsize=10.5)
        ax.set_title("FLUX_RADIUS against FLUX_AUTO of all catalogue sources", fontsize=9)
        if f.size == 0:
            no_data(ax, "no sources in the catalogue")
        elif n_shown == 0:
            no_data(ax, "no source with finite FLUX_RADIUS and\nFLUX_AUTO in the plotted range")
        else:
            corner_text(ax, f"{n_shown:,} of {f.size:,} sources shown", loc="lower right")
        return save_png(fig, path)


# ------------------------------------------------------------------------------------------
# 4. histograms of hit properties, per kind, per cm2 per second


def _log_density(
    values: np.ndarray, edges: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Step-plot x, y of dN/dlog10(v) * scale, values below/above the range in the end bins."""
    v = np.clip(values[np.isfinite(values)], edges[0], edges[-1] * (1 - 1e-12))
    counts, _ = np.histogram(v, bins=edges)
    dens = counts / np.diff(np.log10(edges)) * scale
    dens = np.where(counts > 0, dens, np.nan)
    return edges, np.concatenate([dens, dens[-1:]])


def plot_hit_histograms(
    npix: Any,
    length_px: Any,
    charge_adu: Any,
    kind: Any,
    exptime_s: float | None,
    title: str,
    path: PathLike,
    *,
    area_px: float = FOCAL_PLANE_PIXELS,
    readout_s: float = READOUT_S,
) -> Path:
    """Histograms of pixels per hit, track length and charge per hit, one line per hit kind.

    Rates are hits per cm2 per second per dex: counts / (area_px * 1.44e-6 cm2) /
    (EXPTIME + readout/2) / bin width in log10, so darks and science exposures compare.
    `kind` holds 'cosmic', 'xray' or 'proton' per hit; `area_px` is the detector area searched.
    """
    with plot_style(), quiet_numpy():
        npx = _as_float(npix)
        length = _as_float(length_px)
        charge = _as_float(charge_adu)
        kinds = _as_str(kind) if np.size(kind) else np.array([], dtype=str)
        sizes = {npx.size, length.size, charge.size, kinds.size}
        if len(sizes) != 1:
            raise ValueError("npix, length_px, charge_adu and kind must have the same length")
        exptime = _finite_positive(exptime_s)
        seconds = (exptime if np.isfinite(exptime) else FALLBACK_EXPTIME_S) + readout_s / 2
        area_cm2 = float(area_px) * PIXEL_AREA_CM2
        scale = 1.0 / (area_cm2 * seconds)

        fig = new_figure(1500, 500)
        axes = fig.subplots(1, 3)
        panels = (
            (npx, np.unique(np.round(np.logspace(0, 3, 31))) - 0.5, "pixels per hit"),
            (length, np.logspace(-1, 3, 41), "track length [px]"),
            (charge, np.logspace(1, 6, 51), "charge per hit [ADU]"),
        )
        present = [k for k in ("cosmic", "xray", "proton") if (kinds == k).any()]
        unknown = int((~np.isin(kinds, ["cosmic", "xray", "proton"])).sum())
        for ax, (values, edges, xlabel) in zip(axes, panels, strict=True):
            drawn = False
            for k in present:
                sel = kinds == k
                xs, ys = _log_density(values[sel], edges, scale)
                if np.isfinite(ys).any():
                    ax.step(xs, ys, where="post", color=_KIND_COLOURS[k], lw=1.4)
                    drawn = True
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(edges[0], edges[-1])
            ax.set_xlabel(xlabel)
            ax.grid(True, which="major", lw=0.5)
            if not drawn:
                ax.set_ylim(1e-4, 1e1)
                no_data(ax, "no hits" if kinds.size == 0 else f"no finite {xlabel.split(' [')[0]}")
        for ax in axes:
            ax.set_ylabel("hits cm⁻² s⁻¹ dex⁻¹")
        axes[0].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axes[1].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        corner_text(
            axes[1], f"lengths < {panels[1][1][0]:g} px in the first bin", loc="upper right"
        )
        corner_text(axes[2], "values off the axis in the end bins", loc="lower right")
        for lo, hi, colour, name in (
            (*XRAY_FLUX, _KIND_COLOURS["xray"], "X-ray"),
            (*PROTON_FLUX, _KIND_COLOURS["proton"], "proton"),
        ):
            axes[2].axvspan(lo, hi, color=colour, alpha=0.12, lw=0, zorder=0)
            axes[2].text(
                np.sqrt(lo * hi),
                0.98,
                f"{name}\nwindow",
                transform=axes[2].get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=7.5,
                color=colour,
            )
        handles, labels = [], []
        for k in present:
            n = int((kinds == k).sum())
            handles.append(Line2D([], [], color=_KIND_COLOURS[k], lw=1.6))
            labels.append(f"{_KIND_LABELS[k]}: {n:,} hits, {n * scale:.3g} cm⁻² s⁻¹")
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=len(handles))
        exp_text = (
            f"EXPTIME {exptime:.1f} s" if np.isfinite(exptime) else "EXPTIME unknown, 90 s assumed"
        )
        sub = (
            f"rates per cm² of detector ({float(area_px):,.0f} px × 1.44×10⁻⁶ cm² = "
            f"{area_cm2:,.1f} cm²) and per second ({exp_text} + {readout_s / 2:g} s)"
        )
        if unknown:
            sub += f"; {unknown:,} hits of other kinds not shown"
        fig.suptitle(f"{title}\n{sub}", fontsize=10.5)
        return save_png(fig, path)


# ------------------------------------------------------------------------------------------
# 5. GOES X-ray flux around one exposure (VISQL plotgoes24h)


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
    path: PathLike,
    readout_s: float = READOUT_S,
    proton_time: Any = None,
    proton_flux: Any = None,
) -> Path:
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

        exptime = _finite_positive(exptime_s)
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
        ax.set_xlabel("Hours from observation")
        ax.set_ylabel("GOES flux W/m2")
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
            "%5.1f sec + %4.0f" % (exptime, readout_s)  # noqa: UP031 - VISQL's format
            if np.isfinite(exptime)
            else f"EXPTIME unknown + {readout_s:4.0f}"
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
        ax.set_title(when, fontsize=8.5)
        fig.suptitle(title, fontsize=10.5)
        return save_png(fig, path)


# ------------------------------------------------------------------------------------------
# 6. robust fit of event rate against GOES flux


def fit_rate_relation(
    x: Any,
    y: Any,
    model: Literal["linear", "loglog"] = "linear",
    *,
    clip_sigma: float = 3.0,
    max_iter: int = 20,
) -> dict[str, Any]:
    """Robust fit rate = intercept + slope * flux ('linear') or in log10-log10 ('loglog').

    Starts from the Theil-Sen line, then iterates least squares on the points within
    clip_sigma robust sigmas (1.4826 MAD) of the current line. Returns model, slope,
    slope_err, intercept, intercept_err (least-squares standard errors on the kept points),
    r (Pearson), rho (Spearman), n (points used), n_total (finite points), n_clipped,
    scatter (rms residual of the kept points, in fitted units) and clip_sigma; NaNs when fewer
    than 3 usable points or no spread in x.
    """
    if model not in ("linear", "loglog"):
        raise ValueError(f"model must be 'linear' or 'loglog', got {model!r}")
    xv = _as_float(x)
    yv = _as_float(y)
    if xv.shape != yv.shape:
        raise ValueError(f"x ({xv.size}) and y ({yv.size}) differ in length")
    ok = np.isfinite(xv) & np.isfinite(yv)
    if model == "loglog":
        with quiet_numpy():
            ok &= (xv > 0) & (yv > 0)
    u = xv[ok] if model == "linear" else np.log10(xv[ok])
    v = yv[ok] if model == "linear" else np.log10(yv[ok])
    nan = float("nan")
    out: dict[str, Any] = {
        "model": model,
        "slope": nan,
        "slope_err": nan,
        "intercept": nan,
        "intercept_err": nan,
        "r": nan,
        "rho": nan,
        "n": 0,
        "n_total": int(u.size),
        "n_clipped": 0,
        "scatter": nan,
        "clip_sigma": float(clip_sigma),
    }
    if u.size < 3 or np.ptp(u) == 0:
        return out

    ts = stats.theilslopes(v, u)
    slope, intercept = float(ts.slope), float(ts.intercept)
    keep = np.ones(u.size, dtype=bool)
    fit = None
    for _ in range(max_iter):
        resid = v - (intercept + slope * u)
        sigma = 1.4826 * float(np.median(np.abs(resid - np.median(resid[keep]))))
        if not sigma > 0:
            sigma = float(np.std(resid[keep]))
        new_keep = np.abs(resid) <= clip_sigma * sigma if sigma > 0 else np.ones_like(keep)
        if new_keep.sum() < 3 or np.ptp(u[new_keep]) == 0:
            break
        fit = stats.linregress(u[new_keep], v[new_keep])
        slope, intercept = float(fit.slope), float(fit.intercept)
        converged = np.array_equal(new_keep, keep)
        keep = new_keep
        if converged:
            break
    if fit is None:  # clipping could not leave 3 points: least squares on all
        keep = np.ones(u.size, dtype=bool)
        fit = stats.linregress(u, v)
        slope, intercept = float(fit.slope), float(fit.intercept)

    uk, vk = u[keep], v[keep]
    resid = vk - (intercept + slope * uk)
    n = int(keep.sum())
    with quiet_numpy():
        rho = stats.spearmanr(uk, vk).statistic if np.ptp(vk) > 0 else nan
    out.update(
        slope=slope,
        slope_err=float(fit.stderr),
        intercept=intercept,
        intercept_err=float(fit.intercept_stderr),
        r=float(fit.rvalue) if np.ptp(vk) > 0 else nan,
        rho=float(rho),
        n=n,
        n_clipped=int(u.size - n),
        scatter=float(np.sqrt(np.sum(resid**2) / max(n - 2, 1))),
    )
    return out


# ------------------------------------------------------------------------------------------
# 7. per-exposure event rate against GOES flux


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
    path: PathLike,
    fit: Mapping[str, Any] | None = None,
    labels: Any = None,
) -> Path:
    """Per-exposure event rate against GOES flux (log x), with the fitted relation if given.

    `fit` is a dict from `fit_rate_relation` (slope, intercept, model 'linear' or 'loglog',
    r, n; optional scatter and clip_sigma mark the clipped points); its equation goes in the
    legend. `labels` (one string per point, e.g. 'science'/'dark') colours points by group.
    Log y when the fit is log-log; points with x <= 0 cannot be drawn and are counted.
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
        palette = colormaps["tab10"]
        for i, g in enumerate(names):
            sel = ok & (groups == g) & ~clipped
            colour = palette(i % 10) if len(names) > 1 or g else "#1f77b4"
            if sel.any():
                ax.scatter(
                    xv[sel],
                    yv[sel],
                    s=16,
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
            pad = 10 ** (0.05 * max(np.log10(xhi / xlo), 1.0))
            ax.set_xlim(xlo / pad, xhi * pad)
        else:
            ax.set_xlim(1e-8, 1e-4)
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
        if fit:
            sub += f"; {'log-log' if loglog else 'linear'} fit"
            if "clip_sigma" in fit:
                sub += f", {float(fit['clip_sigma']):g}σ-clipped least squares"
        ax.set_title(sub, fontsize=9)
        fig.suptitle(title, fontsize=10.5)
        return save_png(fig, path)
