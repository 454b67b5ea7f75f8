"""Plots of one exposure against Gaia: the astrometric match and the colour relation.

Replace VISQL's `<n>_stars2_x_gaia_dxdy.png` (VISQL-SPEC 8.4: offsets against position,
the residual field, Gaia against VIS flux) and `<n>_stars2_fluxrat_bprp.png` (VIS/Gaia
against BP-RP with the fit), adding the per-quadrant VIS/Gaia over the focal plane.

Both functions return a `matplotlib.figure.Figure`; the caller writes it with
`store.products.write_figure`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import overload

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from viskom.measure.gaia import (
    COLOURS,
    PIX_PER_DEG,
    GaiaComparison,
    median_by_quadrant,
    pair_offsets,
)
from viskom.present.common import clipped_scatter, data_limits
from viskom.present.focal import FPA_XLIM, focal_plane_axes, quadrant_rectangle
from viskom.present.style import (
    COLOUR_C1,
    COLOUR_REJECT,
    DIVERGING,
    SEQUENTIAL,
    axes_title,
    corner_text,
    figure_title,
    new_figure,
    no_data,
    plot_style,
    quiet_numpy,
)

PathLike = str | os.PathLike[str]

#: Milliarcseconds per VIS pixel (0.1 arcsec pixels).
MAS_PER_PX = 3.6e6 / PIX_PER_DEG
#: Arrow length of the 90th-percentile residual, as a fraction of the residual panel's width.
ARROW_FRACTION = 0.05
#: Residuals [px] with a 90th percentile below this are called tiny in the panel (5 mas).
TINY_RESIDUAL_PX = 0.05
#: VISQL's arrow scale: 10 px drawn 0.025 deg long (used when there is no residual to scale).
VISQL_ARROW_PX_PER_DEG = 400.0


def residual_arrow_scale(
    rx: np.ndarray, ry: np.ndarray, panel_width_deg: float = FPA_XLIM[1] - FPA_XLIM[0]
) -> tuple[float, float]:
    """Quiver scale [px of residual per deg of arrow] that draws the 90th-percentile residual
    `ARROW_FRACTION` of the panel's width long, and that 90th percentile [px].

    Without a finite, non-zero residual: VISQL's 400 px per deg and NaN.
    """
    mag = np.hypot(np.asarray(rx, float), np.asarray(ry, float))
    mag = mag[np.isfinite(mag)]
    p90 = float(np.percentile(mag, 90)) if mag.size else float("nan")
    if not (np.isfinite(p90) and p90 > 0):
        return VISQL_ARROW_PX_PER_DEG, p90
    return p90 / (ARROW_FRACTION * panel_width_deg), p90


def _nice(value: float) -> float:
    """The 1-2-5 number nearest to `value` (in log)."""
    exp = math.floor(math.log10(value))
    candidates = [m * 10.0**e for e in (exp - 1, exp, exp + 1) for m in (1, 2, 5)]
    return min(candidates, key=lambda c: abs(math.log10(c / value)))


def _side_colorbar(fig: Figure, ax: Axes, mappable: ScalarMappable, label: str) -> None:
    """Colour bar hugging an equal-aspect axes, rather than the grid cell around it."""
    cax = ax.inset_axes((1.04, 0.0, 0.05, 1.0))
    fig.colorbar(mappable, cax=cax, label=label)


def _offset_panel(
    ax: Axes, x: np.ndarray, d: np.ndarray, kept: np.ndarray, centre: float, sigma: float
) -> int:
    """Gaia-VIS offsets against position: clipped pairs black, kept red, the fit's offset
    dashed; y range from the kept pairs (and at least the fit's offset +- 4 sigma). Returns how
    many pairs lie beyond it (the clipped outliers, drawn at the edges as triangles)."""
    ref = (centre - 4 * sigma, centre + 4 * sigma) if np.isfinite(centre + sigma) else None
    fit_d = d[kept] if kept.any() else d  # the pairs the fit kept set the range
    lo, hi = data_limits(fit_d, reference=ref, min_span=0.2, percentiles=(0, 100), default=(-1, 1))
    ylim = (lo, hi + 0.22 * (hi - lo))  # headroom for the corner texts
    n = clipped_scatter(ax, x[~kept], d[~kept], ylim=ylim, color="k", s=5, label="clipped")
    n += clipped_scatter(ax, x[kept], d[kept], ylim=ylim, color=COLOUR_REJECT, s=5, label="kept")
    ax.set_xlim(-0.41, 0.41)
    ax.set_ylim(*ylim)
    if np.isfinite(centre):
        ax.axhline(centre, color="0.4", lw=0.8, ls="--")
    return n


@overload
def plot_gaia_dxdy(result: GaiaComparison, path: None = None, *, title: str = "") -> Figure: ...
@overload
def plot_gaia_dxdy(result: GaiaComparison, path: PathLike, *, title: str = "") -> Path: ...
def plot_gaia_dxdy(result: GaiaComparison, *, title: str = "") -> Figure:
    """2x3 panels: Gaia-VIS dx, dy against x, y (kept red), the residual field, the fluxes.

    The residual arrows are scaled to the data (`residual_arrow_scale`), with a reference
    arrow labelled in px and mas; offsets beyond the y ranges sit at the edges as triangles.
    """
    with plot_style(), quiet_numpy():
        fig = new_figure(1200, 700)
        axes = fig.subplots(2, 3)
        fit = result.match.fit
        o = pair_offsets(result)
        k = np.asarray(o["kept"], bool)
        panels = (
            (axes[0, 0], "x", "dx", "X [deg]", "dx Gaia−VIS [px]", fit.dx_pix),
            (axes[1, 0], "x", "dy", "X [deg]", "dy Gaia−VIS [px]", fit.dy_pix),
            (axes[0, 1], "y", "dx", "Y [deg]", "dx Gaia−VIS [px]", fit.dx_pix),
            (axes[1, 1], "y", "dy", "Y [deg]", "dy Gaia−VIS [px]", fit.dy_pix),
        )
        n_beyond = 0
        for ax, xk, yk, xl, yl, centre in panels:
            n = _offset_panel(ax, o[xk], o[yk], k, centre, fit.sigma_pix)
            n_beyond += n if xk == "x" else 0  # the same offsets again against y
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
        if k.any() or (~k).any():
            axes[0, 0].legend(loc="upper right", fontsize=7, markerscale=2)
        g = fit.gradients_pix
        corner_text(
            axes[0, 0],
            f"N = {fit.n_matched} of {fit.n_pairs} pairs, σ = {fit.sigma_pix:.2f} px\n"
            f"dx = {fit.dx_pix:.2f}, dy = {fit.dy_pix:.2f} px",
        )
        corner_text(
            axes[1, 0],
            "gradients [px per 0.75°]\n"
            f"ddx/dx {g[0]:.2f}  ddy/dx {g[1]:.2f}\nddx/dy {g[2]:.2f}  ddy/dy {g[3]:.2f}",
        )

        ax = axes[0, 2]
        focal_plane_axes(ax, ccd_labels=False)
        head = "residuals after the affine fit"
        if k.any():
            scale, p90 = residual_arrow_scale(o["rx"][k], o["ry"][k])
            mag = np.hypot(o["rx"][k], o["ry"][k])
            q = ax.quiver(
                o["x"][k], o["y"][k], o["rx"][k], o["ry"][k], mag,
                cmap=colormaps[SEQUENTIAL], angles="xy", scale_units="xy",
                scale=scale, width=0.005, headwidth=3.5, headlength=4.0, headaxislength=3.5,
                zorder=4,
            )  # fmt: skip
            _side_colorbar(fig, ax, q, "|residual| [px]")
            if np.isfinite(p90):
                ref = _nice(p90)
                ax.quiverkey(
                    q, 0.88, 0.965, ref, f"{ref:g} px = {ref * MAS_PER_PX:g} mas",
                    labelpos="W", coordinates="axes", color="k", fontproperties={"size": 8},
                )  # fmt: skip
                tiny = " (tiny)" if p90 < TINY_RESIDUAL_PX else ""
                head += (
                    f"\n90% below {p90:.2g} px = {p90 * MAS_PER_PX:.2g} mas{tiny}; "
                    f"arrows ×{float(f'{PIX_PER_DEG / scale:.2g}'):,.0f} true length"
                )
            else:
                no_data(ax, "all residuals zero", fontsize=10)
        else:
            no_data(ax, "no matched stars")
        axes_title(ax, head, fontsize=8.5)

        ax = axes[1, 2]
        s = result.stars
        vis, gaia = s["vis_flux"] / 1e4, s["gaia_flux"] / 1e4
        both = np.concatenate([vis, gaia])
        top = data_limits(both[both > 0], percentiles=(0.0, 99.5), pad=0.0, default=(0, 8))[1]
        lim = (0.0, 1.08 * top if np.isfinite(top) and top > 0 else 8.0)
        if s["vis_flux"].size:
            norm = Normalize(0, 3)
            clipped_scatter(
                ax, vis, gaia, xlim=lim, ylim=lim, c=s["bp_rp"], cmap=colormaps["plasma"],
                norm=norm, s=6,
            )  # fmt: skip
            _side_colorbar(fig, ax, ScalarMappable(norm, colormaps["plasma"]), "BP−RP [mag]")
            ax.plot(lim, lim, color=COLOUR_REJECT, lw=1, label="1:1")
            r = result.fpa.ratio_at((1.0,))[0]
            if np.isfinite(r):
                ax.plot(
                    lim, [0, lim[1] / r], color="k", lw=1, label=f"VIS/Gaia at BP−RP 1: {r:.3f}"
                )
            ax.legend(loc="upper left", fontsize=7)
        else:
            no_data(ax, "no matched stars")
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
        ax.set_xlabel("VIS flux at 89.52 s × gain [10⁴ ADU]")
        ax.set_ylabel("Gaia flux 10^(−0.4(G−30))/1.5 [10⁴ ADU equiv.]")
        sub = f"{n_beyond} offsets beyond the y ranges drawn at the edges (▲▼)" if n_beyond else ""
        figure_title(fig, title or "VIS against Gaia DR3: astrometry", sub, fontsize=10.5)
        return fig


@overload
def plot_gaia_colour(result: GaiaComparison, path: None = None, *, title: str = "") -> Figure: ...
@overload
def plot_gaia_colour(result: GaiaComparison, path: PathLike, *, title: str = "") -> Path: ...
def plot_gaia_colour(result: GaiaComparison, *, title: str = "") -> Figure:
    """VIS/Gaia against BP-RP with the fit, the colour histogram and VIS/Gaia per quadrant."""
    with plot_style(), quiet_numpy():
        fig = new_figure(1200, 700)
        grid = fig.add_gridspec(2, 2, width_ratios=(1.25, 1))
        ax = fig.add_subplot(grid[:, 0])
        s = result.stars
        used = s["colour_used"]
        kept = s["colour_kept"]
        fpa = result.fpa
        ratio = np.exp(s["ln_ratio"])
        ylim = data_limits(
            ratio[used], reference=(0.8, 1.3), log=True, percentiles=(0.5, 99.5), pad=0.04,
            default=(0.6, 1.4),
        )  # fmt: skip
        if used.any():
            norm = Normalize(15.5, 19.5)
            n_beyond = clipped_scatter(
                ax, s["bp_rp"][used & kept], ratio[used & kept], xlim=(0.5, 3.0), ylim=ylim,
                logy=True, c=s["g_mag"][used & kept], cmap=colormaps[SEQUENTIAL], norm=norm,
                s=10, label="fitted",
            )  # fmt: skip
            n_beyond += clipped_scatter(
                ax, s["bp_rp"][used & ~kept], ratio[used & ~kept], xlim=(0.5, 3.0), ylim=ylim,
                logy=True, color="k", s=16, marker="x", lw=0.8, label="clipped (3σ)",
            )  # fmt: skip
            fig.colorbar(
                ScalarMappable(norm, colormaps[SEQUENTIAL]), ax=ax, label="Gaia G [mag]", pad=0.01
            )
            c = np.linspace(0.5, 3.0, 200)
            ax.plot(c, np.exp(fpa.ln_ratio(c)), color="k", lw=1.5, label="quadratic fit")
            r = fpa.ratio_at()
            ax.plot(COLOURS, r, "o", mfc="white", mec="k", ms=7, zorder=5)
            corner_text(
                ax,
                f"VIS/Gaia at BP−RP 0.75, 1.75, 2.75: {r[0]:.4f}  {r[1]:.4f}  {r[2]:.4f}\n"
                f"ln(VIS/G) = {fpa.c0:.4f} + {fpa.c1:.4f} c {fpa.c2:+.4f} c²\n"
                f"{fpa.n_fit} of {fpa.n_total} stars (G < 19.5), rms {fpa.rms:.4f}"
                + (f"\n{n_beyond} beyond the axes (▲▼◀▶)" if n_beyond else ""),
            )
            ax.legend(loc="lower right", fontsize=7.5)
        else:
            no_data(ax, "no matched star with G < 19.5 and a colour")
        ax.set_yscale("log")
        ax.set_ylim(*ylim)
        ticks = [t for t in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.6, 1.8, 2.0)
                 if ylim[0] <= t <= ylim[1]]  # fmt: skip
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlim(0.5, 3.0)
        ax.set_xlabel("Gaia BP−RP [mag]")
        ax.set_ylabel("VIS / Gaia flux (VIS at 89.52 s × relative gain; ratio)")

        hx = fig.add_subplot(grid[0, 1])
        hx.hist(s["bp_rp"][used], bins=12, range=(0.5, 3.0), color=COLOUR_C1, alpha=0.8)
        hx.set_xlabel("Gaia BP−RP [mag]")
        hx.set_ylabel("stars per 0.21 mag bin")
        axes_title(hx, "colours of the fitted stars", fontsize=8.5)

        mx = fig.add_subplot(grid[1, 1])
        focal_plane_axes(mx, ccd_labels=False)
        cmap = colormaps[DIVERGING]
        norm = Normalize(0.95, 1.05)  # centred on 1: the focal-plane relation
        for name, v in median_by_quadrant(s["extname"][used], s["frat"][used]).items():
            x0, y0, w, h = quadrant_rectangle(name)
            mx.add_patch(
                Rectangle((x0, y0), w, h, facecolor=cmap(norm(v)), edgecolor="none", zorder=1)
            )
        mx.figure.colorbar(
            ScalarMappable(norm, cmap),
            ax=mx,
            label="median VIS/Gaia ÷ FPA fit (ratio)",
            shrink=0.85,
            extend="both",
        )
        axes_title(mx, "per quadrant, relative to the focal-plane relation", fontsize=8.5)
        figure_title(fig, title or "VIS against Gaia DR3: colour relation", fontsize=10.5)
        return fig
