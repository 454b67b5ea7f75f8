"""PNG plots of VIS photometry against Gaia: focal-plane maps, colour relations and the ice trend.

Replaces VISQL's `plotzptFP.py` (`iceplot_FPA_<label>_<exptime>.png`, VISQL-SPEC 8.10),
`plotzptCCD.py` with the `magick` mosaic (`VISGaia_FPA_<LONG|SHORT>_<m>.png`, 8.11 and 8.7
step 10), `plotice.py` (`iceplot_long|short.png`, 8.9) and `ploticetimelinediag.py`
(`iceplot_diag_*.png`, 8.12). Same house style as `viskom.present.plots`: plain arrays in, an
output path, an atomic PNG, and a complete page with a message when the inputs are empty.

Focal-plane maps bin stars into regular hexagons of a fixed size (`FPA_HEX_SIZE_DEG`), so that
maps of a day, a week and a month share one grid and can be compared cell by cell. Cell
statistics are computed here, vectorised (VISQL's `hexbin(reduce_C_function=...)` called a
Python function per cell), and the hexagons are drawn as matplotlib's `hexbin` draws them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps, rc_context, transforms
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import PolyCollection
from matplotlib.colors import Normalize
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, MaxNLocator

from viskom.le1.geometry import CCD_COLUMNS, CCD_ROWS
from viskom.present.focal import FPA_XLIM, FPA_YLIM, ccd_rectangle
from viskom.present.style import (
    COLOUR_REJECT,
    corner_text,
    new_figure,
    no_data,
    plot_style,
    quiet_numpy,
    save_png,
)

PathLike = str | os.PathLike[str]

__all__ = [
    "BAND_COLOURS",
    "FPA_HEX_SIZE_DEG",
    "MAG_PER_LN",
    "HexGrid",
    "clipped_cell_stats",
    "plot_colour_relations_fpa",
    "plot_fpa_maps",
    "plot_ice_diag",
    "plot_ice_timeline",
]

#: Hexagon width (centre-to-centre along X) of every focal-plane map: 0.8 deg / 60, i.e.
#: 480 VIS pixels: about 4 hexagons across a quadrant and 5 rows of them up it.
FPA_HEX_SIZE_DEG = 0.8 / 60
#: Map extent (deg): the focal-plane limits of `viskom.present.focal`.
FPA_EXTENT = (*FPA_XLIM, *FPA_YLIM)
#: VISQL's colours of the three BP-RP values 0.75, 1.75, 2.75 (plotice.py: blue, green, red).
BAND_COLOURS = ("#1f5fd6", "#1a9641", "#d7191c")
#: Shading of the ice reference period.
REFERENCE_COLOUR = "#ffd966"
#: ln -> magnitudes: 2.5 log10(x) = 1.0857 ln(x).
MAG_PER_LN = 2.5 / math.log(10.0)
#: VISQL's range of log10(VIS flux [ADU]) for 560.52 s exposures; scaled with exposure time.
LOG_FLUX_RANGE_LONG = (4.4, 5.4)
LONG_EXPTIME_S = 560.52
#: G colour range of the colour-relation panels (VISQL: 15.5-19.5).
G_RANGE = (15.5, 19.5)
#: At most this many stars drawn per colour-relation panel (all are fitted).
MAX_POINTS_PER_PANEL = 4000


# ------------------------------------------------------------------------------------------
# Hexagonal cells and their clipped statistics


def _fast_ticks() -> Any:
    """Plain-text tick labels: mathtext parsing of every label was a third of a map's time."""
    return rc_context({"axes.formatter.use_mathtext": False})


@dataclass(frozen=True)
class HexGrid:
    """Regular hexagons over an extent, with matplotlib's `hexbin` lattice and cell assignment.

    Two rectangular lattices: (i sx, j sy) and ((i + 1/2) sx, (j + 1/2) sy) from the lower-left
    corner, with sy = sqrt(3) sx so that hexagons are regular on equal-aspect axes. A point
    belongs to the nearest lattice point. Cell ids: lattice 1 first (row-major), then lattice 2.
    """

    size: float = FPA_HEX_SIZE_DEG
    extent: tuple[float, float, float, float] = FPA_EXTENT

    @property
    def sx(self) -> float:
        return self.size

    @property
    def sy(self) -> float:
        return self.size * math.sqrt(3.0)

    @property
    def nx(self) -> int:
        return max(1, round((self.extent[1] - self.extent[0]) / self.sx))

    @property
    def ny(self) -> int:
        return max(1, math.ceil((self.extent[3] - self.extent[2]) / self.sy - 1e-9))

    @property
    def n_cells(self) -> int:
        return (self.nx + 1) * (self.ny + 1) + self.nx * self.ny

    def cells(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Cell id of each point; -1 outside the extent or where x or y is not finite."""
        xmin, _, ymin, _ = self.extent
        xs = (np.asarray(x, float) - xmin) / self.sx
        ys = (np.asarray(y, float) - ymin) / self.sy
        inside = (
            np.isfinite(xs)
            & np.isfinite(ys)
            & (xs >= 0)
            & (xs <= self.nx)
            & (ys >= 0)
            & (ys <= self.ny)
        )
        xs, ys = np.where(inside, xs, 0.0), np.where(inside, ys, 0.0)
        ix1, iy1 = np.rint(xs).astype(np.int64), np.rint(ys).astype(np.int64)
        ix2 = np.minimum(np.floor(xs).astype(np.int64), self.nx - 1)
        iy2 = np.minimum(np.floor(ys).astype(np.int64), self.ny - 1)
        d1 = (xs - ix1) ** 2 + 3.0 * (ys - iy1) ** 2
        d2 = (xs - ix2 - 0.5) ** 2 + 3.0 * (ys - iy2 - 0.5) ** 2
        first = d1 < d2
        cell = np.where(
            first,
            iy1 * (self.nx + 1) + ix1,
            (self.nx + 1) * (self.ny + 1) + iy2 * self.nx + ix2,
        )
        return np.where(inside, cell, -1)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of every cell centre, indexed by cell id."""
        xmin, _, ymin, _ = self.extent
        j1, i1 = np.divmod(np.arange((self.nx + 1) * (self.ny + 1)), self.nx + 1)
        j2, i2 = np.divmod(np.arange(self.nx * self.ny), self.nx)
        cx = np.concatenate([i1 * self.sx, (i2 + 0.5) * self.sx]) + xmin
        cy = np.concatenate([j1 * self.sy, (j2 + 0.5) * self.sy]) + ymin
        return cx, cy

    def polygon(self) -> np.ndarray:
        """The hexagon's vertices relative to its centre (matplotlib's, pointy top)."""
        unit = np.array([[0.5, -0.5], [0.5, 0.5], [0.0, 1.0], [-0.5, 0.5], [-0.5, -0.5], [0, -1]])
        return np.array([self.sx, self.sy / 3.0]) * unit


def clipped_cell_stats(
    cell: np.ndarray,
    values: np.ndarray,
    n_cells: int,
    *,
    nsigma: float = 3.0,
    iterations: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell sigma-clipped mean and standard deviation, all cells at once.

    VISQL's `clip3m`/`clip3s100`: start from all values of a cell, then `iterations` times keep
    (v - mean)^2 < nsigma^2 var with mean and var of the kept values. Returns (mean, sigma,
    n_kept) per cell; NaN where a cell has no finite value. Rows with cell < 0 are ignored.
    """
    cell = np.asarray(cell, np.int64)
    v = np.asarray(values, float)
    ok = (cell >= 0) & np.isfinite(v)
    cell, v = cell[ok], v[ok]
    keep = np.ones(v.size, bool)
    mean = var = np.full(n_cells, np.nan)
    n = np.zeros(n_cells)
    for it in range(iterations + 1):
        w = keep.astype(float)
        n = np.bincount(cell, w, minlength=n_cells)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(cell, w * v, minlength=n_cells) / n
            dev = v - mean[cell]
            var = np.bincount(cell, w * dev**2, minlength=n_cells) / n
        if it == iterations:
            break
        new = dev**2 < nsigma**2 * var[cell]
        # A cell whose values are all equal has var 0: keep them rather than drop all.
        new |= (var[cell] == 0) & keep
        if np.array_equal(new, keep):
            break
        keep = new
    return mean, np.sqrt(var), n


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
    x: np.ndarray,
    y: np.ndarray,
    residual: np.ndarray,
    g_mag: np.ndarray,
    flux_adu: np.ndarray,
    path: PathLike,
    *,
    label: str,
    exptime: float,
    kind: str,
    n_exposures: int,
    grid: HexGrid | None = None,
) -> Path:
    """Six focal-plane maps of the stars of a period (VISQL's iceplot_FPA, 1300 x 800 px).

    `residual` is VIS/Gaia divided by each exposure's own colour model (the frat column), so
    the maps show the flat-field pattern, not the ice trend. Panels: stars per cell; the
    3-sigma-clipped mean residual on two scales (0.75-1.25, 0.98-1.02); mean Gaia G; mean
    log10 VIS flux; 100 x the clipped sigma of the residual.
    """
    grid = grid or HexGrid()
    with plot_style(), _fast_ticks(), quiet_numpy():
        x, y = np.asarray(x, float), np.asarray(y, float)
        z = np.asarray(residual, float)
        g, f = np.asarray(g_mag, float), np.asarray(flux_adu, float)
        cell = grid.cells(x, y)
        n_cells = grid.n_cells
        counts = np.bincount(cell[cell >= 0], minlength=n_cells).astype(float)
        zmean, zsig, _ = clipped_cell_stats(cell, z, n_cells)
        gmean, _, _ = clipped_cell_stats(cell, g, n_cells, iterations=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            lf = np.where(f > 0, np.log10(f), np.nan)
        fmean, _, _ = clipped_cell_stats(cell, lf, n_cells, iterations=0)
        occupied = np.flatnonzero(counts > 0)
        n_stars = int((cell >= 0).sum())

        fig = new_figure(1300, 800, constrained=False)  # constrained layout: 3x slower
        axes = fig.subplots(2, 3)
        fig.subplots_adjust(left=0.06, right=0.94, bottom=0.07, top=0.87, wspace=0.45, hspace=0.2)
        flo, fhi = _flux_range(exptime)
        vmax_n = max(float(np.percentile(counts[occupied], 99)), 1.0) if occupied.size else 1.0
        panels = (
            (counts, "stars per cell", "BuPu", (0.0, vmax_n), "stars per hexagon"),
            (
                zmean,
                "clipped mean VIS/Gaia ÷ exposure model",
                "turbo",
                (0.75, 1.25),
                "mean VIS/Gaia ÷ model",
            ),
            (zmean, "same, narrow scale", "winter", (0.98, 1.02), "mean VIS/Gaia ÷ model"),
            (gmean, "mean Gaia G", "copper", (15.0, 19.5), "mean Gaia G [mag]"),
            (fmean, "mean VIS flux", "copper", (flo, fhi), "mean log10(VIS flux [ADU])"),
            (
                100 * zsig,
                "clipped scatter of VIS/Gaia ÷ model",
                "summer",
                (0.0, 3.0),
                "100 × σ(VIS/Gaia ÷ model)",
            ),
        )
        for ax, (values, title, cmap_name, (lo, hi), cbar) in zip(axes.flat, panels, strict=True):
            cmap = colormaps[cmap_name]
            norm = Normalize(lo, hi)
            sel = occupied[np.isfinite(values[occupied])]
            _draw_cells(ax, grid, sel, values[sel], cmap, norm)
            _ccd_outlines(ax)
            ax.set_title(title)
            cax = ax.inset_axes((1.04, 0.0, 0.05, 1.0))
            fig.colorbar(ScalarMappable(norm, cmap), cax=cax, label=cbar)
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
        fig.suptitle(
            f"VIS/Gaia over the focal plane, {label}, {kind} exposures ({exptime:.2f} s)\n"
            f"{n_stars:,} Gaia stars from {n_exposures:,} exposures; hexagons {cell_px:.0f} px "
            "wide; VIS/Gaia ÷ each exposure's own colour model",
            fontsize=11.5,
        )
        return save_png(fig, path)


# ------------------------------------------------------------------------------------------
# 2. Colour relation per CCD, laid out as the focal plane (VISQL plotzptCCD.py + magick)


def plot_colour_relations_fpa(
    ccd: np.ndarray,
    bp_rp: np.ndarray,
    ln_ratio: np.ndarray,
    g_mag: np.ndarray,
    fits: Mapping[str, Mapping[str, float]],
    path: PathLike,
    *,
    label: str,
    kind: str,
    exptime: float,
    max_points: int = MAX_POINTS_PER_PANEL,
    seed: int = 0,
) -> Path:
    """ln(VIS/Gaia) against BP-RP for each of the 36 CCDs, 6 x 6 panels as the focal plane.

    `ccd` holds 'R-C' per star; `fits` maps 'R-C' (and 'FPA') to a mapping with c0, c1, c2,
    rms, n_fit, n_total. CCD row 6 is the top row and column 1 the left column (VISQL's
    mosaic). Each panel: stars coloured by G (at most `max_points`, a random subset), the CCD's
    fit (solid) and the focal plane's (dashed); y spans +-0.3 about the FPA relation at 1.75.
    """
    with plot_style(), _fast_ticks(), quiet_numpy():
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
        cmap = colormaps["turbo"]
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
            ax.tick_params(labelbottom=i >= 30, labelleft=i % 6 == 0, direction="in")
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
                corner_text(ax, text, loc="upper left", fontsize=9)
                ax.grid(True, lw=0.4)
        for ax in axes[-1]:
            ax.set_xlabel("Gaia BP-RP [mag]")
        for ax in axes[:, 0]:
            ax.set_ylabel("ln(VIS/Gaia)")
        cax = fig.add_axes((0.945, 0.2, 0.012, 0.6))
        fig.colorbar(ScalarMappable(norm, cmap), cax=cax, label="Gaia G [mag]")
        sub = f"{np.isfinite(v).sum():,} stars"
        if fpa is not None and np.isfinite(fpa.get("c0", np.nan)):
            sub += (
                f"; focal plane (dashed): ln(VIS/Gaia) = {fpa['c0']:.4f} {_signed(fpa['c1'])} c "
                f"{_signed(fpa['c2'])} c², rms {fpa['rms']:.3f}"
            )
        if n_drawn < np.isfinite(v).sum():
            sub += f"; at most {max_points:,} random stars drawn per CCD, all fitted"
        fig.suptitle(
            f"VIS/Gaia colour relation per CCD, {label}, {kind} exposures ({exptime:.2f} s)\n"
            f"{sub}; CCD row 6 at the top, column 1 at the left",
            fontsize=13,
        )
        if not np.isfinite(v).any():
            no_data(axes[3, 2], "no Gaia stars in this period")
        return save_png(fig, path)


def _signed(value: float) -> str:
    return f"{'−' if value < 0 else '+'} {abs(value):.4f}"


def _poly(fit: Mapping[str, float], c: Any) -> Any:
    return fit["c0"] + fit["c1"] * np.asarray(c, float) + fit["c2"] * np.asarray(c, float) ** 2


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
    path: PathLike,
    *,
    kind: str,
    exptime: float,
    reference: tuple[date, date],
    relative: bool,
    n_reference: int = 0,
    n_rejected: int = 0,
    colours: Sequence[float] = (0.75, 1.75, 2.75),
) -> Path:
    """ln(VIS/Gaia) at three BP-RP against time, one point per exposure (VISQL's iceplot).

    `values` is (3, n): relative to the reference period's mean when `relative`, else the
    absolute ln(VIS/Gaia) (then the page says the reference period had no data). Exposures of
    the self-calibration field are a separate, marked series. The right axis gives the same
    values as a throughput change in magnitudes (-2.5 log10).
    """
    with plot_style(), _fast_ticks(), quiet_numpy():
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
            ax.set_ylabel("ln(VIS/Gaia) − mean over the reference period")
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
        fig.suptitle(
            f"VIS/Gaia against time (ice monitor), {kind} exposures ({exptime:.2f} s)\n{sub}",
            fontsize=11.5,
        )
        return save_png(fig, path)


# ------------------------------------------------------------------------------------------
# 4. Diagonal CCDs against time (VISQL ploticetimelinediag.py)


def plot_ice_diag(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: PathLike,
    *,
    kind: str,
    exptime: float,
    reference: tuple[date, date],
    relative: bool,
) -> Path:
    """Daily VIS/Gaia at BP-RP 1.75 of the diagonal and cross-diagonal CCDs against time.

    `series` maps 'R-C' to (days as datetime64, values): values are the daily VIS/Gaia
    divided by the CCD's reference-period mean when `relative`, else the daily VIS/Gaia.
    Top panel: CCDs (n, n); bottom: (n, 7 - n).
    """
    with plot_style(), _fast_ticks(), quiet_numpy():
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
            ax.set_title(f"{diagonal} CCDs")
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
        fig.suptitle(
            f"VIS/Gaia per CCD and day, {kind} exposures ({exptime:.2f} s)\n"
            f"median of the exposures' CCD values at BP-RP 1.75, {note}",
            fontsize=11.5,
        )
        return save_png(fig, path)
