"""PNG plots of particle events in one exposure's catalogue: focal-plane maps, rf diagram.

Replaces VISQL's `plotX.py` maps `<n>_cosmiX.png`, `<n>_cosmics.png`, `<n>_protons.png`
(VISQL-SPEC 5.4, 6.4) and `rfdiagram.py` `<n>_rf.png` (9.7). VISQL's event classes are cuts
on the SExtractor catalogue (`viskom.measure.cosmics`): point-like sources (FLUX_RADIUS <
0.9 px) with FLUX_AUTO in 400-1200 ADU (X-ray photons), < 3000 ADU (all cosmics) or
1e4-4e4 ADU (high-energy protons). Each function returns a matplotlib Figure (a complete
page with a message when the inputs are empty); the caller saves it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patheffects import withStroke

from viskom.le1.geometry import CCD_COLUMNS, CCD_ROWS
from viskom.measure.cosmics import (
    COMPACT_RADIUS_PX,
    COSMIC_MAX_ADU,
    PROTON_ADU,
    READOUT_S,
    XRAY_ADU,
    top10_of_counts,
)
from viskom.present.focal import ccd_rectangle
from viskom.present.inputs import _as_float, finite_positive
from viskom.present.style import (
    SEQUENTIAL,
    axes_title,
    corner_text,
    figure_title,
    new_figure,
    no_data,
    plot_style,
    quiet_numpy,
)

EventKind = Literal["xray", "cosmics", "protons"]

__all__ = [
    "COSMIC_FLUX_MAX",
    "FALLBACK_EXPTIME_S",
    "MAP_RANGE",
    "NBINS_200PX",
    "NBINS_250PX",
    "POINT_RADIUS_MAX",
    "PROTON_FLUX",
    "REFERENCE_EXPTIME_S",
    "RF_BINS",
    "RF_RANGE",
    "XRAY_FLUX",
    "EventKind",
    "exposure_factor",
    "plot_event_map",
    "plot_rf_diagram",
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
#: rf diagram colour range [sources per bin]: from 1, to VISQL's 1e4 or the fullest bin.
RF_COUNTS = (1.0, 1e4)

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


# ------------------------------------------------------------------------------------------
# small helpers


def exposure_factor(exptime_s: float | None, readout_s: float = READOUT_S) -> float:
    """VISQL's expfactor = (exptime + readout / 2) / 560, so colour ranges follow exposure time.

    An unknown exposure time counts as 90 s, as in VISQL.
    """
    exptime = finite_positive(exptime_s)
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


def _extend(counts: np.ndarray, norm: LogNorm) -> str:
    """Colour-bar `extend` for non-zero counts below or above the colour range."""
    nonzero = counts[counts > 0]
    under = bool((nonzero < norm.vmin).any())
    over = bool((nonzero > norm.vmax).any())
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (under, over), "neither"
    )


def _map_histogram(x: np.ndarray, y: np.ndarray, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts [ix, iy] of events in nbins x nbins over MAP_RANGE squared, and the bin edges."""
    edges = np.linspace(MAP_RANGE[0], MAP_RANGE[1], nbins + 1)
    ok = np.isfinite(x) & np.isfinite(y)
    counts, _, _ = np.histogram2d(x[ok], y[ok], bins=(edges, edges))
    return counts, edges


# ------------------------------------------------------------------------------------------
# 1. focal-plane maps of event counts (VISQL cosmiX / cosmics / protons)


def plot_event_map(
    x_world: Any,
    y_world: Any,
    kind: EventKind,
    exptime_s: float | None,
    title: str,
    *,
    readout_s: float = READOUT_S,
    unmeasured: str | None = None,
) -> Figure:
    """Map of event counts per 250x250 (X-rays, protons) or 200x200 px bin (all cosmics).

    `unmeasured`: why the class cannot be counted from this catalogue (a quick-look one): the
    map is drawn empty with that reason instead of counts that would look like a measurement.

    Log colour scale (viridis; VISQL's was jet), from vmin to vmax times
    expfactor = (exptime + readout/2)/560:
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
        if unmeasured is not None:
            x = y = np.zeros(0)
        known_exptime = np.isfinite(finite_positive(exptime_s))
        factor = exposure_factor(exptime_s, readout_s)
        counts, edges = _map_histogram(x, y, spec["nbins"])
        n_in = int(counts.sum())
        n_out = int((np.isfinite(x) & np.isfinite(y)).sum()) - n_in
        t10 = top10_of_counts(counts)
        norm = LogNorm(spec["vmin"] * factor, spec["vmax"] * factor)
        cmap = colormaps[SEQUENTIAL]

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
        fig.colorbar(
            mesh,
            ax=ax,
            label=f"{spec['cbar']} per {bin_px}×{bin_px} px bin",
            pad=0.02,
            extend=_extend(counts, norm),
        )
        axes_title(
            ax, f"{spec['title']}: FLUX_RADIUS < {POINT_RADIUS_MAX:g} px, {spec['cut']}", fontsize=9
        )
        figure_title(fig, title, fontsize=10.5)

        if unmeasured is not None:
            no_data(ax, unmeasured, fontsize=9)
        elif n_in == 0:
            where = "in the catalogue" if x.size == 0 else "with a position\non the map"
            no_data(ax, f"{spec['none']} {where}")
        if unmeasured is None:
            corner_text(ax, f"{n_in:,} events" + (f" ({n_out:,} off map)" if n_out else ""))
            corner_text(ax, f"top10count = {t10:.1f}", loc="upper right")
        exp_text = (
            f"colour range × {factor:.2f} = (EXPTIME + {readout_s:g}/2) / {REFERENCE_EXPTIME_S:g}"
            if known_exptime
            else f"EXPTIME unknown: {FALLBACK_EXPTIME_S:g} s assumed, colour range × {factor:.2f}"
        )
        corner_text(ax, exp_text, loc="lower left", fontsize=7)
        return fig


# ------------------------------------------------------------------------------------------
# 2. FLUX_RADIUS - log FLUX_AUTO density (VISQL rfdiagram)


def plot_rf_diagram(flux_radius: Any, flux: Any, title: str) -> Figure:
    """2-D histogram of FLUX_RADIUS against log10 FLUX_AUTO with the VISQL event-class boxes.

    100 x 100 bins over 0-3 px and 2.5-5.5, log colours (viridis) from 1 to 1e4 sources per
    bin (VISQL: 1e2 to 1e4, jet), or to the fullest bin; dashed lines mark FLUX_RADIUS 0.9 px
    and fluxes 400, 1200, 3000, 1e4 and 4e4 ADU.
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
            cmap=colormaps[SEQUENTIAL],
            norm=LogNorm(RF_COUNTS[0], max(RF_COUNTS[1], float(counts.max(initial=0)))),
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
        figure_title(fig, title, fontsize=10.5)
        axes_title(ax, "FLUX_RADIUS against FLUX_AUTO of all catalogue sources", fontsize=9)
        if f.size == 0:
            no_data(ax, "no sources in the catalogue")
        elif n_shown == 0:
            no_data(ax, "no source with finite FLUX_RADIUS and\nFLUX_AUTO in the plotted range")
        else:
            corner_text(ax, f"{n_shown:,} of {f.size:,} sources shown", loc="lower right")
        return fig
