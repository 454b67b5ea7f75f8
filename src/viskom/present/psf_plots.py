"""PNG plots of one exposure's stars: flux-radius diagram, moments against position, stamps.

VISQL originals (VISQL-SPEC): chimney2 (5.2), starmomentsmap (5.7). Each function takes
plain inputs (tables as mappings of column -> array-like, astropy or pyarrow tables; numpy
arrays) and returns a matplotlib Figure; the caller saves it
(`viskom.store.products.write_figure`). Empty or all-NaN inputs still give a complete page
with a message saying what is missing. The focal-plane moment maps are in
`viskom.present.moment_maps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.patheffects import withStroke
from matplotlib.ticker import FuncFormatter

from viskom.present.common import (
    PIXEL_SCALE_ARCSEC,
    STAR_MOMENTS,
    clipped_scatter,
    data_limits,
    median_line,
    nan_median,
    running_median,
    sci_text,
    suptitle,
)
from viskom.present.inputs import Columns, finite_float, locus_value
from viskom.present.style import (
    COLOUR_BOX,
    COLOUR_C1,
    COLOUR_C2,
    COLOUR_REJECT,
    COLOUR_STAR,
    corner_text,
    new_figure,
    no_data,
    plot_style,
    quiet_numpy,
)

__all__ = ["plot_flux_radius", "plot_moments_vs_position", "plot_star_stamps"]

# ------------------------------------------------------------------------------------------
# 1. FLUX_RADIUS vs FLUX_AUTO with the stellar-locus box (VISQL chimney2)


def plot_flux_radius(
    catalogue: Any,
    locus: Any,
    *,
    title: str,
    selected: Any = None,
) -> Figure:
    """Log-log FLUX_AUTO against FLUX_RADIUS of all sources, selected stars and the star box.

    `locus` has found, reason, rmin, rmax, fmin, fmax (and optionally bmin, rc, fc).
    """
    with plot_style(), quiet_numpy():
        cols = Columns(catalogue, "source catalogue")
        r = cols.float("flux_radius")
        f = cols.float("flux_auto", "flux")
        b = cols.float("b_image")
        found = bool(locus_value(locus, "found", False))
        reason = str(locus_value(locus, "reason", "") or "no locus given")
        rmin, rmax = (finite_float(locus_value(locus, k)) for k in ("rmin", "rmax"))
        fmin, fmax = (finite_float(locus_value(locus, k)) for k in ("fmin", "fmax"))
        bmin = finite_float(locus_value(locus, "bmin", 1.3))
        adaptive = locus_value(locus, "method", "visql") == "adaptive"
        bmin = 1.3 if not np.isfinite(bmin) else bmin

        visible = np.isfinite(r) & np.isfinite(f) & (r > 0) & (f > 0)
        # particle hits: thinner than VISQL's bmin, or (adaptive locus) sharper than the stars
        thick = (r >= rmin) if (adaptive and found and np.isfinite(rmin)) else (b > bmin)
        box_ok = found and all(np.isfinite(v) for v in (rmin, rmax, fmin, fmax))
        in_box = (r > rmin) & (r < rmax) & (f > fmin) & (f < fmax) if box_ok else False
        stars = visible & thick & in_box
        if selected is not None:  # the stars the pipeline actually measured
            stars = visible & np.asarray(selected, dtype=bool)
        others = visible & thick & ~stars
        thin = visible & ~thick

        fig = new_figure(800, 600)
        ax = fig.add_subplot()
        style = {"ls": "none", "marker": ".", "mew": 0, "rasterized": True}
        if thin.any():
            ax.plot(r[thin], f[thin], ms=1.6, color="#b8b8b8", zorder=1, **style)
        if others.any():
            ax.plot(r[others], f[others], ms=1.8, color="#3a3a3a", zorder=2, **style)
        if stars.any():
            ax.plot(r[stars], f[stars], ms=3.0, color=COLOUR_STAR, zorder=3, **style)
        if box_ok:
            ax.add_patch(
                Rectangle(
                    (rmin, fmin),
                    rmax - rmin,
                    fmax - fmin,
                    fill=False,
                    edgecolor=COLOUR_BOX,
                    lw=1.8,
                    zorder=4,
                )
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(0.5, 20)
        ax.set_ylim(1e3, 1e7)
        ax.set_xlabel("FLUX_RADIUS (half-light radius) [px]")
        ax.set_ylabel("FLUX_AUTO [ADU]")
        ax.set_xticks([0.5, 1, 2, 5, 10, 20])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        top = ax.secondary_xaxis(
            "top",
            functions=(lambda v: v * PIXEL_SCALE_ARCSEC, lambda v: v / PIXEL_SCALE_ARCSEC),
        )
        top.set_xlabel("half-light radius [arcsec]", fontsize=9)
        top.set_xticks([0.05, 0.1, 0.2, 0.5, 1, 2])
        top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.grid(True, which="major", lw=0.5)

        handles = [
            Line2D([], [], ls="none", marker="o", ms=4, color="#3a3a3a"),
            Line2D([], [], ls="none", marker="o", ms=4, color="#b8b8b8"),
            Line2D([], [], ls="none", marker="o", ms=4, color=COLOUR_STAR),
        ]
        cut = "FLUX_RADIUS ≥ the locus" if adaptive else f"b_image > {bmin:g} px"
        sharp = "sharper than stars" if adaptive else f"b_image ≤ {bmin:g} px"
        labels = [
            f"sources, {cut}: {int((visible & thick).sum()):,}",
            f"{sharp} (particle hits): {int(thin.sum()):,}",
            (
                f"selected stars (in box, {cut}): {int(stars.sum()):,}"
                if selected is None
                else f"selected stars (as measured): {int(stars.sum()):,}"
            ),
        ]
        if box_ok:
            handles.append(Rectangle((0, 0), 1, 1, fill=False, edgecolor=COLOUR_BOX, lw=1.8))
            labels.append(
                ("stellar locus" if adaptive else "VISQL star box")
                + f": r {rmin:.2f}–{rmax:.2f} px, f {sci_text(fmin)}–{sci_text(fmax)} ADU"
            )
        n_hidden = int(cols.n - visible.sum())
        if cols.n == 0:
            no_data(ax, "no sources in the catalogue")
        elif not visible.any():
            no_data(ax, "no source with finite, positive FLUX_AUTO and FLUX_RADIUS")
        else:
            ax.legend(handles, labels, loc="upper left")
        if not found and cols.n > 0:
            ax.text(
                0.03,
                0.04,
                f"no stellar locus found: {reason}",
                transform=ax.transAxes,
                color=COLOUR_REJECT,
                fontsize=11,
                ha="left",
                va="bottom",
                zorder=10,
                bbox={"boxstyle": "round,pad=0.4", "fc": "white", "ec": COLOUR_REJECT},
            )
        sub = f"{cols.n:,} sources, {int(stars.sum()):,} stars selected"
        if n_hidden:
            sub += f" ({n_hidden:,} with FLUX_AUTO or FLUX_RADIUS ≤ 0 / NaN not shown)"
        suptitle(fig, title, sub)
        return fig


# ------------------------------------------------------------------------------------------
# 2. Moments against each other and against position (VISQL starmomentsmap)

#: (row label, components, half-width of the window around the median) — VISQL's fixed ranges.
_MOMENT_ROWS = (
    ("coma", ("c1", "c2"), 0.15),
    ("ellipticity", ("e1", "e2"), 0.05),
    ("trefoil", ("t1", "t2"), 0.25),
)
_R2_RANGE = (1.7, 2.4)
_POSITION_AXES = (
    ("X [deg]", (-0.37, 0.37)),
    ("Y [deg]", (-0.41, 0.41)),
    ("field radius [deg]", (0.0, 0.55)),
)


def plot_moments_vs_position(
    stars: Any,
    *,
    title: str,
    max_points: int = 2000,
    seed: int = 0,
) -> Figure:
    """4x4 grid: coma, ellipticity, trefoil components against each other and X, Y, radius; R2.

    At most `max_points` stars are drawn (fixed-seed subsample); running medians use all stars.
    """
    with plot_style(), quiet_numpy():
        cols = Columns(stars, "star moments")
        x = cols.float("x_world", "xworld")
        y = cols.float("y_world", "yworld")
        rad = cols.float("field_radius", "fieldrad", required=False)
        rad = np.where(np.isfinite(rad), rad, np.hypot(x, y))
        flux = cols.float("flux_auto", "flux", required=False)
        v = {k: cols.float(k) for k in STAR_MOMENTS}
        n = cols.n
        measured = np.isfinite(v["r2"])
        n_measured = int(measured.sum())
        idx = np.flatnonzero(measured)
        if idx.size > max_points:
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(idx, size=max_points, replace=False))
        positions = (x, y, rad)

        fig = new_figure(1400, 1400)
        axes = fig.subplots(4, 4)
        for row, (label, (k1, k2), half) in enumerate(_MOMENT_ROWS):
            m1, m2 = nan_median(v[k1]), nan_median(v[k2])
            m1 = 0.0 if not np.isfinite(m1) else m1
            m2 = 0.0 if not np.isfinite(m2) else m2
            ax = axes[row, 0]
            xlim, ylim = (m1 - half, m1 + half), (m2 - half, m2 + half)
            ax.axhline(0, color="0.7", lw=0.7, zorder=1)
            ax.axvline(0, color="0.7", lw=0.7, zorder=1)
            nout = clipped_scatter(
                ax, v[k1][idx], v[k2][idx], xlim=xlim, ylim=ylim, color="0.25", s=3, alpha=0.5
            )
            if n_measured:
                ax.plot(m1, m2, "P", color=COLOUR_STAR, ms=9, mec="white", zorder=6)
                corner_text(ax, f"median ({m1:+.3f}, {m2:+.3f})", loc="upper left")
                if nout:
                    corner_text(ax, f"{nout} off scale (▲▼◀▶)", loc="lower right")
            ax.set_xlim(*xlim)
            ax.set_ylim(*ylim)
            ax.set_aspect("equal", adjustable="box")
            ax.set_xlabel(f"{label} {k1} (dimensionless)")
            ax.set_ylabel(f"{label} {k2} (dimensionless)")
            ylo = min(m1, m2) - half
            yhi = max(m1, m2) + half
            for col, ((xlabel, plim), pos) in enumerate(
                zip(_POSITION_AXES, positions, strict=True), start=1
            ):
                ax = axes[row, col]
                ax.axhline(0, color="0.7", lw=0.7, zorder=1)
                nout = 0
                for key, colour in ((k1, COLOUR_C1), (k2, COLOUR_C2)):
                    nout += clipped_scatter(
                        ax,
                        pos[idx],
                        v[key][idx],
                        xlim=plim,
                        ylim=(ylo, yhi),
                        color=colour,
                        s=3,
                        alpha=0.35,
                    )
                for key, colour in ((k1, COLOUR_C1), (k2, COLOUR_C2)):
                    xc, med = running_median(pos, v[key], *plim)
                    if np.isfinite(med).any():
                        median_line(ax, xc, med, colour, key)
                ax.set_xlim(*plim)
                ax.set_ylim(ylo, yhi)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(f"{label} {k1}, {k2} (dimensionless)")
                ax.grid(True, lw=0.5)
                if col == 1 and n_measured:
                    ax.legend(
                        loc="upper right",
                        title="running median",
                        fontsize=7.5,
                        title_fontsize=7.5,
                        ncols=2,
                    )
                if nout and n_measured:
                    corner_text(ax, f"{nout} off scale", loc="lower right")

        # R2 row: against flux, X, Y, radius
        r2 = v["r2"]
        r2_range = data_limits(r2, reference=_R2_RANGE, percentiles=(0.5, 99.5), pad=0.02)
        ax = axes[3, 0]
        lf = np.log10(np.where(flux > 0, flux, np.nan))
        lf_fin = lf[np.isfinite(lf)]
        flim = (
            (np.floor(np.min(lf_fin) * 4) / 4, np.ceil(np.max(lf_fin) * 4) / 4 + 1e-9)
            if lf_fin.size
            else (3.0, 7.0)
        )
        if flim[1] - flim[0] < 0.5:
            flim = (flim[0] - 0.25, flim[1] + 0.25)
        nout = clipped_scatter(ax, lf[idx], r2[idx], ylim=r2_range, color="0.25", s=3, alpha=0.5)
        xc, med = running_median(lf, r2, *flim, nbins=10)
        if np.isfinite(med).any():
            median_line(ax, xc, med, COLOUR_STAR, "running median")
        ax.set_xlim(*flim)
        ax.set_ylim(*r2_range)
        ax.set_xlabel("log10 FLUX_AUTO [ADU]")
        ax.set_ylabel("R2 [px²]")
        ax.grid(True, lw=0.5)
        if nout and n_measured:
            corner_text(ax, f"{nout} off scale", loc="lower right")
        if n_measured:
            corner_text(ax, f"median R2 = {nan_median(r2):.3f} px²", loc="upper left")
        for col, ((xlabel, plim), pos) in enumerate(
            zip(_POSITION_AXES, positions, strict=True), start=1
        ):
            ax = axes[3, col]
            nout = clipped_scatter(
                ax, pos[idx], r2[idx], xlim=plim, ylim=r2_range, color="0.25", s=3, alpha=0.4
            )
            xc, med = running_median(pos, r2, *plim)
            if np.isfinite(med).any():
                median_line(ax, xc, med, COLOUR_STAR, "running median")
            ax.set_xlim(*plim)
            ax.set_ylim(*r2_range)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("R2 [px²]")
            ax.grid(True, lw=0.5)
            if nout and n_measured:
                corner_text(ax, f"{nout} off scale", loc="lower right")
        if n_measured == 0:
            for ax in axes.flat:
                no_data(ax, "no stars measured", fontsize=10)
        shown = idx.size
        sub = (
            f"{n_measured:,} stars measured (of {n:,} rows); points: "
            + (f"{shown:,} (random subsample, seed {seed})" if shown < n_measured else "all")
            + "; lines: running medians of all stars\nwindows: median ± 0.15 (coma), "
            f"± 0.05 (ellipticity), ± 0.25 (trefoil); R2 {r2_range[0]:.2f}–{r2_range[1]:.2f} px²; "
            "off-scale points at the edges as triangles; moments normalised (dimensionless)"
        )
        suptitle(fig, title, sub)
        return fig


# ------------------------------------------------------------------------------------------
# 3. Mosaic of star stamps


def plot_star_stamps(
    stamps: Any,
    *,
    labels: Sequence[str] | None = None,
    title: str,
    max_stamps: int = 100,
    softening: float = 0.01,
) -> Figure:
    """Mosaic of up to `max_stamps` star stamps, each normalised to its peak, asinh stretch.

    Displayed value asinh(I / (softening * peak)), scaled so the peak is 1 (VISQL:
    arcsinh(I/10)*10 in ADU, i.e. softening ~0.3-1% of a typical peak).
    """
    with plot_style(), quiet_numpy():
        arr = np.asarray(stamps if stamps is not None else np.zeros((0, 29, 29)), dtype=float)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            arr = np.zeros((0, 29, 29))
        n_total = arr.shape[0]
        arr = arr[:max_stamps]
        n = arr.shape[0]
        h, w = arr.shape[1:] if n else (29, 29)
        ncol = max(1, int(np.ceil(np.sqrt(n))))
        nrow = max(1, int(np.ceil(n / ncol)))
        gap = 1
        mosaic = np.full((nrow * (h + gap) - gap, ncol * (w + gap) - gap), np.nan)
        stretch_den = np.arcsinh(1.0 / softening)

        def tile_origin(i: int) -> tuple[int, int]:
            """Lower-left mosaic pixel of stamp i: stamp 0 top left, rows downwards."""
            rr, cc = divmod(i, ncol)
            return (nrow - 1 - rr) * (h + gap), cc * (w + gap)

        n_bad = 0
        for i in range(n):
            s = arr[i]
            peak = np.nanmax(s) if np.isfinite(s).any() else np.nan
            y0, x0 = tile_origin(i)
            tile = mosaic[y0 : y0 + h, x0 : x0 + w]
            if not (np.isfinite(peak) and peak > 0):
                n_bad += 1
                tile[:] = 0.0
                continue
            tile[:] = np.nan_to_num(np.arcsinh(s / peak / softening) / stretch_den, nan=0.0)

        fig = new_figure(1000, 1000)
        ax = fig.add_subplot()
        cmap = colormaps["inferno"].with_extremes(bad="#d0d0d0")
        im = ax.imshow(mosaic, cmap=cmap, vmin=0.0, vmax=1.0, origin="lower")
        ax.set_xticks([])
        ax.set_yticks([])
        if labels is not None:
            for i, text in enumerate(list(labels)[:n]):
                y0, x0 = tile_origin(i)
                ax.text(
                    x0 + 0.6,
                    y0 + h - 1.4,
                    str(text),
                    fontsize=6.5 if ncol > 6 else 8,
                    color="white",
                    ha="left",
                    va="top",
                    path_effects=[withStroke(linewidth=1.5, foreground="black")],
                )
        fractions = np.array([0.0, 0.01, 0.03, 0.1, 0.3, 1.0])
        cb = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
        cb.set_ticks(np.arcsinh(fractions / softening) / stretch_den)
        cb.set_ticklabels([f"{v:g}" for v in fractions])
        cb.set_label(f"fraction of stamp peak (asinh stretch, softening {softening:g})")
        if n == 0:
            no_data(ax, "no star stamps")
        sub = f"{n} of {n_total} stamps" if n_total > n else f"{n} stamps"
        sub += f", {h}×{w} px, each normalised to its peak; stamp pixels shown with Y up"
        if n_bad:
            sub += f"; {n_bad} without positive peak shown black"
        suptitle(fig, title, sub)
        return fig
