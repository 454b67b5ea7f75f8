"""Plots of one exposure against Gaia: the astrometric match and the colour relation.

Replace VISQL's `<n>_stars2_x_gaia_dxdy.png` (VISQL-SPEC 8.4: offsets against position,
the residual field, Gaia against VIS flux) and `<n>_stars2_fluxrat_bprp.png` (VIS/Gaia
against BP-RP with the fit), adding the per-quadrant VIS/Gaia over the focal plane.

Both functions return a `matplotlib.figure.Figure`; the caller writes it with
`store.products.write_figure`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import overload

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from viskom.measure.gaia import COLOURS, GaiaComparison, median_by_quadrant, pair_offsets
from viskom.present.focal import focal_plane_axes, quadrant_rectangle
from viskom.present.style import (
    COLOUR_C1,
    COLOUR_REJECT,
    corner_text,
    new_figure,
    no_data,
    plot_style,
    quiet_numpy,
)

PathLike = str | os.PathLike[str]


@overload
def plot_gaia_dxdy(result: GaiaComparison, path: None = None, *, title: str = "") -> Figure: ...
@overload
def plot_gaia_dxdy(result: GaiaComparison, path: PathLike, *, title: str = "") -> Path: ...
def plot_gaia_dxdy(result: GaiaComparison, *, title: str = "") -> Figure:
    """2x3 panels: Gaia-VIS dx, dy against x, y (kept red), the residual field, the fluxes."""
    with plot_style(), quiet_numpy():
        fig = new_figure(1200, 700, constrained=False)  # constrained layout: 1 s per figure
        axes = fig.subplots(2, 3)
        fig.subplots_adjust(left=0.055, right=0.97, bottom=0.08, top=0.92, wspace=0.3, hspace=0.28)
        fit = result.match.fit
        o = pair_offsets(result)
        k = o["kept"]
        panels = (
            (axes[0, 0], "x", "dx", "X [deg]", "dx Gaia−VIS [pix]", fit.dx_pix),
            (axes[1, 0], "x", "dy", "X [deg]", "dy Gaia−VIS [pix]", fit.dy_pix),
            (axes[0, 1], "y", "dx", "Y [deg]", "dx Gaia−VIS [pix]", fit.dx_pix),
            (axes[1, 1], "y", "dy", "Y [deg]", "dy Gaia−VIS [pix]", fit.dy_pix),
        )
        spread = 4.0 * fit.sigma_pix if np.isfinite(fit.sigma_pix) else 10.0
        for ax, xk, yk, xl, yl, centre in panels:
            ax.scatter(o[xk][~k], o[yk][~k], s=4, c="k", lw=0, label="clipped")
            ax.scatter(o[xk][k], o[yk][k], s=4, c=COLOUR_REJECT, lw=0, label="kept")
            ax.set_xlim(-0.41, 0.41)
            if np.isfinite(centre):
                ax.set_ylim(centre - spread, centre + spread)
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            ax.axhline(centre, color="0.4", lw=0.8, ls="--")
        axes[0, 0].legend(loc="lower right", fontsize=7, markerscale=2)
        g = fit.gradients_pix
        corner_text(
            axes[0, 0],
            f"N = {fit.n_matched} of {fit.n_pairs} pairs, σ = {fit.sigma_pix:.2f} pix\n"
            f"dx = {fit.dx_pix:.2f}, dy = {fit.dy_pix:.2f} pix",
        )
        corner_text(
            axes[1, 0],
            "gradients [pix / 0.75°]\n"
            f"ddx/dx {g[0]:.2f}  ddy/dx {g[1]:.2f}\nddx/dy {g[2]:.2f}  ddy/dy {g[3]:.2f}",
        )

        ax = axes[0, 2]
        focal_plane_axes(ax, ccd_labels=False)
        if k.any():
            mag = np.hypot(o["rx"][k], o["ry"][k])
            q = ax.quiver(
                o["x"][k], o["y"][k], o["rx"][k], o["ry"][k], mag,
                cmap=colormaps["viridis"], angles="xy", scale_units="xy",
                scale=400.0, width=0.004,
            )  # fmt: skip
            fig.colorbar(q, ax=ax, label="|residual| [pix]", shrink=0.85)
            ax.set_title("residuals after the affine fit (arrow: 10 pix = 0.025°)", fontsize=8.5)
        else:
            no_data(ax, "no matched stars")

        ax = axes[1, 2]
        s = result.stars
        if s["vis_flux"].size:
            sc = ax.scatter(
                s["vis_flux"] / 1e4, s["gaia_flux"] / 1e4, c=s["bp_rp"], s=5, lw=0,
                cmap=colormaps["copper"], norm=Normalize(0, 3),
            )  # fmt: skip
            fig.colorbar(sc, ax=ax, label="BP−RP [mag]", shrink=0.85)
            ax.plot([0, 8], [0, 8], color=COLOUR_REJECT, lw=1, label="1:1")
            r = result.fpa.ratio_at((1.0,))[0]
            if np.isfinite(r):
                ax.plot([0, 8], [0, 8 / r], color="k", lw=1, label=f"VIS/Gaia at BP−RP 1: {r:.3f}")
            ax.legend(loc="upper left", fontsize=7)
        else:
            no_data(ax, "no matched stars")
        ax.set_xlim(0, 8)
        ax.set_ylim(0, 8)
        ax.set_xlabel("VIS flux at 89.52 s × gain [1e4 ADU]")
        ax.set_ylabel("Gaia flux 10^(−0.4(G−30))/1.5 [1e4]")
        fig.suptitle(title or "VIS against Gaia DR3: astrometry", fontsize=10.5)
        return fig


@overload
def plot_gaia_colour(result: GaiaComparison, path: None = None, *, title: str = "") -> Figure: ...
@overload
def plot_gaia_colour(result: GaiaComparison, path: PathLike, *, title: str = "") -> Path: ...
def plot_gaia_colour(result: GaiaComparison, *, title: str = "") -> Figure:
    """VIS/Gaia against BP-RP with the fit, the colour histogram and VIS/Gaia per quadrant."""
    with plot_style(), quiet_numpy():
        fig = new_figure(1200, 700, constrained=False)
        grid = fig.add_gridspec(
            2, 2, width_ratios=(1.25, 1), left=0.06, right=0.97, bottom=0.08, top=0.92,
            wspace=0.25, hspace=0.3,
        )  # fmt: skip
        ax = fig.add_subplot(grid[:, 0])
        s = result.stars
        used = s["colour_used"]
        kept = s["colour_kept"]
        fpa = result.fpa
        if used.any():
            ratio = np.exp(s["ln_ratio"])
            sc = ax.scatter(
                s["bp_rp"][used & kept], ratio[used & kept], c=s["g_mag"][used & kept], s=8,
                lw=0, cmap=colormaps["jet"], norm=Normalize(15.5, 19.5), label="fitted",
            )  # fmt: skip
            ax.scatter(
                s["bp_rp"][used & ~kept], ratio[used & ~kept], s=14, marker="x", lw=0.8,
                c="k", label="clipped (3σ)",
            )  # fmt: skip
            fig.colorbar(sc, ax=ax, label="Gaia G [mag]", pad=0.01)
            c = np.linspace(0.5, 3.0, 200)
            ax.plot(c, np.exp(fpa.ln_ratio(c)), color="k", lw=1.5, label="quadratic fit")
            r = fpa.ratio_at()
            ax.plot(COLOURS, r, "o", mfc="white", mec="k", ms=7, zorder=5)
            corner_text(
                ax,
                f"VIS/Gaia at BP−RP 0.75, 1.75, 2.75: {r[0]:.4f}  {r[1]:.4f}  {r[2]:.4f}\n"
                f"ln(VIS/G) = {fpa.c0:.4f} + {fpa.c1:.4f} c {fpa.c2:+.4f} c²\n"
                f"{fpa.n_fit} of {fpa.n_total} stars (G < 19.5), rms {fpa.rms:.4f}",
            )
            ax.legend(loc="lower right", fontsize=7.5)
        else:
            no_data(ax, "no matched star with G < 19.5 and a colour")
        ax.set_yscale("log")
        ax.set_ylim(0.6, 1.4)
        ticks = [0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4]
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlim(0.5, 3.0)
        ax.set_xlabel("Gaia BP−RP [mag]")
        ax.set_ylabel("VIS / Gaia flux (VIS at 89.52 s × relative gain)")

        hx = fig.add_subplot(grid[0, 1])
        hx.hist(s["bp_rp"][used], bins=12, range=(0.5, 3.0), color=COLOUR_C1, alpha=0.8)
        hx.set_xlabel("Gaia BP−RP [mag]")
        hx.set_ylabel("stars")
        hx.set_title("colours of the fitted stars", fontsize=8.5)

        mx = fig.add_subplot(grid[1, 1])
        focal_plane_axes(mx, ccd_labels=False)
        cmap = colormaps["coolwarm"]
        norm = Normalize(0.95, 1.05)
        for name, v in median_by_quadrant(s["extname"][used], s["frat"][used]).items():
            x0, y0, w, h = quadrant_rectangle(name)
            mx.add_patch(
                Rectangle((x0, y0), w, h, facecolor=cmap(norm(v)), edgecolor="none", zorder=1)
            )
        mx.figure.colorbar(
            ScalarMappable(norm, cmap),
            ax=mx,
            label="median VIS/Gaia ÷ FPA fit",
            shrink=0.85,
        )
        mx.set_title("per quadrant, relative to the focal-plane relation", fontsize=8.5)
        fig.suptitle(title or "VIS against Gaia DR3: colour relation", fontsize=10.5)
        return fig
