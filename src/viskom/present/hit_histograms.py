"""PNG histograms of one exposure's pixel-level particle hits, per kind, per cm2 per second.

Pixels per hit, track length and charge per hit of the hits found by
`viskom.measure.cosmics.detect_hits` (kinds 'cosmic', 'xray', 'proton'), as rates per cm2 of
detector per second of exposure plus half the readout, so darks and science exposures
compare. The function returns a matplotlib Figure; the caller saves it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from viskom.le1.geometry import CCD_COLUMNS, CCD_ROWS, FULL_IMAGE_COLUMNS, FULL_IMAGE_ROWS
from viskom.measure.cosmics import PIXEL_CM, READOUT_S, particle_exposure_s
from viskom.present.event_maps import FALLBACK_EXPTIME_S, PROTON_FLUX, XRAY_FLUX
from viskom.present.inputs import _as_float, _as_str, finite_positive
from viskom.present.style import (
    COLOUR_C1,
    COLOUR_REJECT,
    corner_text,
    figure_title,
    new_figure,
    no_data,
    plot_style,
    quiet_numpy,
)

__all__ = ["FOCAL_PLANE_PIXELS", "PIXEL_AREA_CM2", "plot_hit_histograms"]

#: Pixel area of a 12 um VIS pixel [cm2].
PIXEL_AREA_CM2 = PIXEL_CM**2
#: Image pixels of the whole focal plane (36 CCDs of 4096 x 4132).
FOCAL_PLANE_PIXELS = len(CCD_ROWS) * len(CCD_COLUMNS) * 4 * FULL_IMAGE_COLUMNS * FULL_IMAGE_ROWS

_KIND_COLOURS = {"cosmic": "0.2", "xray": COLOUR_C1, "proton": COLOUR_REJECT}
_KIND_LABELS = {"cosmic": "cosmic rays", "xray": "X-ray events", "proton": "protons"}


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
    *,
    area_px: float = FOCAL_PLANE_PIXELS,
    readout_s: float = READOUT_S,
) -> Figure:
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
        exptime = finite_positive(exptime_s)
        seconds = particle_exposure_s(
            exptime if np.isfinite(exptime) else FALLBACK_EXPTIME_S, readout_s
        )
        area_cm2 = float(area_px) * PIXEL_AREA_CM2
        scale = 1.0 / (area_cm2 * seconds)

        fig = new_figure(1500, 500)
        axes = fig.subplots(1, 3)
        panels = (
            (npx, np.unique(np.round(np.logspace(0, 3, 31))) - 0.5, "pixels per hit [px]"),
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
        figure_title(fig, title, sub, fontsize=10.5)
        return fig
