"""Plots of VIS photometry against Gaia over the focal plane: hexagon maps, colour relations.

Replaces VISQL's `plotzptFP.py` (`iceplot_FPA_<label>_<exptime>.png`, VISQL-SPEC 8.10) and
`plotzptCCD.py` with the `magick` mosaic (`VISGaia_FPA_<LONG|SHORT>_<m>.png`, 8.11 and 8.7
step 10); the ice trend plots (8.9, 8.12) are in `present.gaia_ice` and re-exported here.
Same house style as `viskom.present.psf_plots`: each function returns a `matplotlib.figure.Figure`
(the caller saves it with `store.products.write_figure`), a complete page with a message when
the inputs are empty.

Focal-plane maps draw hexagonal cells of a fixed size, binned and reduced by
`measure.gaia_cells` (`fpa_cell_maps`), as matplotlib's `hexbin` draws them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib import colormaps, transforms
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import PolyCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator

from viskom.le1.geometry import CCD_COLUMNS, CCD_ROWS
from viskom.measure.gaia_cells import (
    FPA_EXTENT,
    FPA_HEX_SIZE_DEG,
    FpaCellMaps,
    HexGrid,
    clipped_cell_stats,
)
from viskom.present.focal import FPA_XLIM, FPA_YLIM, ccd_rectangle
from viskom.present.gaia_ice import (
    BAND_COLOURS,
    MAG_PER_LN,
    REFERENCE_COLOUR,
    fast_ticks,
    plot_ice_diag,
    plot_ice_timeline,
)
from viskom.present.style import (
    DIVERGING,
    SEQUENTIAL,
    axes_title,
    corner_text,
    figure_title,
    new_figure,
    no_data,
    plot_style,
    quiet_numpy,
    title_bottom,
    truncated_cmap,
)

__all__ = [
    "BAND_COLOURS",
    "FPA_EXTENT",
    "FPA_HEX_SIZE_DEG",
    "MAG_PER_LN",
    "REFERENCE_COLOUR",
    "HexGrid",
    "clipped_cell_stats",
    "plot_colour_relations_fpa",
    "plot_fpa_maps",
    "plot_ice_diag",
    "plot_ice_timeline",
]

#: VISQL's range of log10(VIS flux [ADU]) for 560.52 s exposures; scaled with exposure time.
LOG_FLUX_RANGE_LONG = (4.4, 5.4)
LONG_EXPTIME_S = 560.52
#: G colour range of the colour-relation panels (VISQL: 15.5-19.5).
G_RANGE = (15.5, 19.5)
#: At most this many stars drawn per colour-relation panel (all are fitted).
MAX_POINTS_PER_PANEL = 4000


# ------------------------------------------------------------------------------------------
# Hexagonal cells


def _draw_cells(
    ax: Axes,
    grid: HexGrid,
    cells: np.ndarray,
    values: np.ndarray,
    cmap: Any,
    norm: Normalize,
) -> PolyCollection:
    """Draw hexagons `cells` coloured by `values`, as `Axes.hexbin` draws them."""
    cx, cy = grid.centres()
    coll = PolyCollection(
        [grid.polygon()],
        offsets=np.column_stack([cx[cells], cy[cells]]),
        offset_transform=transforms.AffineDeltaTransform(ax.transData),
        edgecolors="face",
        linewidths=0.25,
        cmap=cmap,
        norm=norm,
    )
    coll.set_array(np.asarray(values, float))
    ax.add_collection(coll, autolim=False)
    return coll


# ------------------------------------------------------------------------------------------
# 1. Focal-plane maps (VISQL plotzptFP.py)


def _ccd_outlines(ax: Axes) -> None:
    """Thin grey CCD outlines, equal aspect and the focal-plane limits."""
    rects = []
    for r in CCD_ROWS:
        for c in CCD_COLUMNS:
            x0, y0, w, h = ccd_rectangle(r, c)
            rects.append([(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)])
    ax.add_collection(
        PolyCollection(rects, facecolors="none", edgecolors="0.45", linewidths=0.4, zorder=3),
        autolim=False,
    )
    ax.set_xlim(*FPA_XLIM)
    ax.set_ylim(*FPA_YLIM)
    ax.set_aspect("equal")


def _flux_range(exptime: float) -> tuple[float, float]:
    shift = math.log10(exptime / LONG_EXPTIME_S) if exptime and exptime > 0 else 0.0
    return LOG_FLUX_RANGE_LONG[0] + shift, LOG_FLUX_RANGE_LONG[1] + shift


def plot_fpa_maps(
    cells: FpaCellMaps,
    *,
    label: str,
    exptime: float,
    kind: str,
    n_exposures: int,
) -> Figure:
    """Six focal-plane maps of the stars of a period (VISQL's iceplot_FPA, 1300 x 800 px).

    `cells` are the per-cell statistics (`measure.gaia_cells.fpa_cell_maps`) of the stars'
    residual: VIS/Gaia divided by each exposure's own colour model (the frat column), so the
    maps show the flat-field pattern, not the ice trend. Panels: stars per cell; the
    3-sigma-clipped mean residual on two scales (0.75-1.25, 0.98-1.02); mean Gaia G; mean
    log10 VIS flux; 100 x the clipped sigma of the residual.
    """
    with plot_style(), fast_ticks(), quiet_numpy():
        grid = cells.grid
        counts, occupied, n_stars = cells.counts, cells.occupied, cells.n_stars
        zmean, zsig = cells.residual_mean, cells.residual_sigma
        gmean, fmean = cells.g_mean, cells.log_flux_mean

        fig = new_figure(1300, 800, constrained=False)  # constrained layout: 3x slower
        axes = fig.subplots(2, 3)
        fig.subplots_adjust(left=0.06, right=0.94, bottom=0.07, top=0.87, wspace=0.45, hspace=0.2)
        flo, fhi = _flux_range(exptime)  # VISQL's range, scaled to the exposure time ...
        f_fin = fmean[occupied][np.isfinite(fmean[occupied])]
        if f_fin.size:  # ... unless the stars' fluxes are elsewhere: then from the data
            dlo, dhi = (float(v) for v in np.percentile(f_fin, [2, 98]))
            if dlo < flo or dhi > fhi:
                mid, half = 0.5 * (dlo + dhi), max(0.5 * (dhi - dlo), 0.25)
                flo, fhi = round(mid - 1.1 * half, 1), round(mid + 1.1 * half, 1)
        vmax_n = max(float(np.percentile(counts[occupied], 99)), 1.0) if occupied.size else 1.0
        ratio = "mean VIS/Gaia ÷ model (ratio)"
        panels = (
            (counts, "stars per cell", SEQUENTIAL, (0.0, vmax_n), "stars per hexagon"),
            (zmean, "clipped mean VIS/Gaia ÷ exposure model", DIVERGING, (0.75, 1.25), ratio),
            (zmean, "same, narrow scale", DIVERGING, (0.98, 1.02), ratio),
            (gmean, "mean Gaia G", "cividis", (15.0, 19.5), "mean Gaia G [mag]"),
            (fmean, "mean VIS flux", "magma", (flo, fhi), "mean log10(VIS flux / ADU)"),
            (
                100 * zsig,
                "clipped scatter of VIS/Gaia ÷ model",
                SEQUENTIAL,
                (0.0, 3.0),
                "σ(VIS/Gaia ÷ model) [%]",
            ),
        )
        for ax, (values, title, cmap_name, (lo, hi), cbar) in zip(axes.flat, panels, strict=True):
            cmap = (
                truncated_cmap("magma", 0.0, 0.9) if cmap_name == "magma" else colormaps[cmap_name]
            )
            norm = Normalize(lo, hi)
            sel = occupied[np.isfinite(values[occupied])]
            _draw_cells(ax, grid, sel, values[sel], cmap, norm)
            _ccd_outlines(ax)
            axes_title(ax, title)
            cax = ax.inset_axes((1.04, 0.0, 0.05, 1.0))
            v = values[sel]
            extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
                (bool((v < lo).any()), bool((v > hi).any())), "neither"
            )
            fig.colorbar(ScalarMappable(norm, cmap), cax=cax, label=cbar, extend=extend)
            if sel.size == 0:
                no_data(ax, "no stars", fontsize=10)
        for ax in axes[1]:
            ax.set_xlabel("X instrument frame [deg]")
        for ax in axes[:, 0]:
            ax.set_ylabel("Y instrument frame [deg]")
        for ax in axes.flat:
            if ax not in axes[1]:
                ax.set_xlabel("")
            if ax not in axes[:, 0]:
                ax.set_ylabel("")
        cell_px = grid.size * 36000.0
        figure_title(
            fig,
            f"VIS/Gaia over the focal plane, {label}, {kind} exposures ({exptime:.2f} s)",
            f"{n_stars:,} Gaia stars from {n_exposures:,} exposures; hexagons {cell_px:.0f} px "
            "wide; VIS/Gaia ÷ each exposure's own colour model",
            fontsize=11.5,
        )
        fig.subplots_adjust(top=min(0.87, title_bottom(fig, pad_px=30)))
        return fig


# ------------------------------------------------------------------------------------------
# 2. Colour relation per CCD, laid out as the focal plane (VISQL plotzptCCD.py + magick)


def plot_colour_relations_fpa(
    ccd: np.ndarray,
    bp_rp: np.ndarray,
    ln_ratio: np.ndarray,
    g_mag: np.ndarray,
    fits: Mapping[str, Mapping[str, float]],
    *,
    label: str,
    kind: str,
    exptime: float,
    max_points: int = MAX_POINTS_PER_PANEL,
    seed: int = 0,
) -> Figure:
    """ln(VIS/Gaia) against BP-RP for each of the 36 CCDs, 6 x 6 panels as the focal plane.

    `ccd` holds 'R-C' per star; `fits` maps 'R-C' (and 'FPA') to a mapping with c0, c1, c2,
    rms, n_fit, n_total. CCD row 6 is the top row and column 1 the left column (VISQL's
    mosaic). Each panel: stars coloured by G (at most `max_points`, a random subset), the CCD's
    fit (solid) and the focal plane's (dashed); y spans +-0.3 about the FPA relation at 1.75.
    """
    with plot_style(), fast_ticks(), quiet_numpy():
        ccd = np.asarray(ccd, dtype=str)
        c = np.asarray(bp_rp, float)
        v = np.asarray(ln_ratio, float)
        g = np.asarray(g_mag, float)
        fpa = fits.get("FPA")
        centre = 0.0
        if fpa is not None and np.isfinite(fpa.get("c0", np.nan)):
            centre = round(_poly(fpa, 1.75) / 0.05) * 0.05
        ylim = (centre - 0.3, centre + 0.3)
        cgrid = np.linspace(0.5, 3.0, 101)
        cmap = colormaps[SEQUENTIAL]
        norm = Normalize(*G_RANGE)
        rng = np.random.default_rng(seed)
        order = np.argsort(ccd, kind="stable")
        names, starts = np.unique(ccd[order], return_index=True)
        bounds = dict(zip(names, zip(starts, [*starts[1:], order.size], strict=True), strict=True))

        fig = new_figure(2400, 2000, constrained=False)  # 36 axes: constrained layout is slow
        # Not sharex/sharey: every autoscale of 36 shared axes cost a third of the figure.
        axes = fig.subplots(6, 6)
        fig.subplots_adjust(left=0.045, right=0.93, bottom=0.04, top=0.93, wspace=0.0, hspace=0.0)
        for i, ax in enumerate(axes.flat):
            ax.set_xlim(0.5, 3.0)
            ax.set_ylim(*ylim)
            ax.set_autoscale_on(False)
            ax.xaxis.set_major_locator(FixedLocator([1.0, 1.5, 2.0, 2.5]))
            ax.yaxis.set_major_locator(MaxNLocator(6, prune="both"))
            ax.tick_params(labelbottom=i >= 30, labelleft=i % 6 == 0, direction="in", labelsize=12)
        n_drawn = 0
        for row in CCD_ROWS:
            for col in CCD_COLUMNS:
                ax = axes[6 - row, col - 1]
                name = f"{row}-{col}"
                lo, hi = bounds.get(name, (0, 0))
                idx = order[lo:hi]
                idx = idx[np.isfinite(c[idx]) & np.isfinite(v[idx])]
                if idx.size > max_points:
                    idx = np.sort(rng.choice(idx, max_points, replace=False))
                n_drawn += idx.size
                size = float(np.clip(6000.0 / max(idx.size, 1), 1.5, 10.0))  # few stars: bigger
                ax.scatter(c[idx], v[idx], c=g[idx], s=size, cmap=cmap, norm=norm, lw=0)
                if fpa is not None and np.isfinite(fpa.get("c0", np.nan)):
                    ax.plot(cgrid, _poly(fpa, cgrid), color="0.3", lw=0.9, ls="--")
                fit = fits.get(name)
                text = name
                if fit is not None and np.isfinite(fit.get("c0", np.nan)):
                    ax.plot(cgrid, _poly(fit, cgrid), color="k", lw=1.3)
                    r175 = math.exp(_poly(fit, 1.75))
                    text += (
                        f"   n {int(fit.get('n_fit', 0)):,}/{int(fit.get('n_total', 0)):,}\n"
                        f"rms {fit.get('rms', np.nan):.3f}   VIS/G(1.75) {r175:.3f}"
                    )
                else:
                    text += "   no fit"
                corner_text(ax, text, loc="upper left", fontsize=11)
                ax.grid(True, lw=0.4)
        for ax in axes[-1]:
            ax.set_xlabel("Gaia BP-RP [mag]", fontsize=14)
        for ax in axes[:, 0]:
            ax.set_ylabel("ln(VIS/Gaia) (ratio)", fontsize=14)
        cax = fig.add_axes((0.945, 0.2, 0.012, 0.6))
        cb = fig.colorbar(ScalarMappable(norm, cmap), cax=cax)
        cb.set_label("Gaia G [mag]", fontsize=14)
        cb.ax.tick_params(labelsize=12)
        sub = f"{np.isfinite(v).sum():,} stars"
        if fpa is not None and np.isfinite(fpa.get("c0", np.nan)):
            sub += (
                f"; focal plane (dashed): ln(VIS/Gaia) = {fpa['c0']:.4f} {_signed(fpa['c1'])} c "
                f"{_signed(fpa['c2'])} c², rms {fpa['rms']:.3f}"
            )
        if n_drawn < np.isfinite(v).sum():
            sub += f"; at most {max_points:,} random stars drawn per CCD, all fitted"
        figure_title(
            fig,
            f"VIS/Gaia colour relation per CCD, {label}, {kind} exposures ({exptime:.2f} s)",
            f"{sub}; CCD row 6 at the top, column 1 at the left",
            fontsize=17,
        )
        fig.subplots_adjust(top=min(0.93, title_bottom(fig, pad_px=12)))
        if not np.isfinite(v).any():
            no_data(axes[3, 2], "no Gaia stars in this period")
        return fig


def _signed(value: float) -> str:
    return f"{'−' if value < 0 else '+'} {abs(value):.4f}"


def _poly(fit: Mapping[str, float], c: Any) -> Any:
    return fit["c0"] + fit["c1"] * np.asarray(c, float) + fit["c2"] * np.asarray(c, float) ** 2
