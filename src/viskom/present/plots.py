"""PNG plots of one exposure and of a month of image quality (replacing VISQL's plots).

One function per plot; each takes plain inputs (tables as mappings of column -> array-like,
astropy or pyarrow tables; numpy arrays) and an output path, writes the PNG atomically and
returns the path. Empty or all-NaN inputs still give a complete page with a message saying
what is missing. Figures are built without pyplot (Agg canvas), so plots can be made in
worker processes. VISQL originals (VISQL-SPEC): chimney2 (5.2), starmomentsmap and
starmomentsmap3 (5.7), psfmoments (7.4), IQ_timeline (7.5).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import PatchCollection
from matplotlib.colors import Colormap, Normalize
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse, Rectangle
from matplotlib.patheffects import withStroke
from matplotlib.ticker import FuncFormatter, MultipleLocator

from viskom.le1.geometry import all_ccds, all_extnames
from viskom.measure.iq import IQ_OK, IQ_REJECT, IQReference, iq_score
from viskom.present.focal import (
    focal_plane_axes,
    region_centre,
    region_rectangle,
)
from viskom.present.inputs import (
    Columns,
    finite_float,
    locus_value,
    mission_day,
    mission_day_to_date,
    month_mission_days,
)
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
    save_png,
    truncated_cmap,
)

PathLike = str | os.PathLike[str]

__all__ = [
    "focal_plane_axes",
    "mission_day",
    "month_mission_days",
    "plot_flux_radius",
    "plot_iq_timeline",
    "plot_moment_maps",
    "plot_moments_vs_position",
    "plot_psf_month_summary",
    "plot_star_stamps",
]

PIXEL_SCALE_ARCSEC = 0.1

# ------------------------------------------------------------------------------------------
# small helpers


def _sci(value: float, digits: int = 1) -> str:
    """'2.5×10⁴' in mathtext."""
    if not np.isfinite(value) or value == 0:
        return f"{value:g}"
    exp = int(np.floor(np.log10(abs(value))))
    mant = value / 10.0**exp
    return rf"${mant:.{digits}f}\times10^{{{exp}}}$"


def _median(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(np.median(v)) if v.size else float("nan")


def _suptitle(fig: Any, title: str, subtitle: str = "") -> None:
    text = title if not subtitle else f"{title}\n{subtitle}"
    fig.suptitle(text, fontsize=11.5)


def _clip_positions(
    v: np.ndarray, lim: tuple[float, float] | None, log: bool, inset: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values moved just inside `lim`; masks of those that were above and below it."""
    if lim is None:
        false = np.zeros(v.shape, dtype=bool)
        return v, false, false
    lo, hi = lim
    with quiet_numpy():
        if log:
            llo, lhi = np.log10(lo), np.log10(hi)
            above = v > hi
            below = ~(v >= lo)  # includes v <= 0
            out = v.copy()
            out[above] = 10 ** (lhi - inset * (lhi - llo))
            out[below] = 10 ** (llo + inset * (lhi - llo))
        else:
            above = v > hi
            below = v < lo
            out = v.copy()
            out[above] = hi - inset * (hi - lo)
            out[below] = lo + inset * (hi - lo)
    return out, above, below


def _clipped_scatter(
    ax: Axes,
    x: np.ndarray,
    y: np.ndarray,
    *,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    logy: bool = False,
    c: np.ndarray | None = None,
    color: Any = None,
    cmap: Colormap | None = None,
    norm: Normalize | None = None,
    s: float = 8.0,
    alpha: float = 1.0,
    zorder: float = 3.0,
    label: str | None = None,
    inset: float = 0.02,
) -> int:
    """Scatter in which points beyond xlim/ylim sit at the edge as triangles; returns how many.

    Triangles point the way the value lies off scale (y takes precedence over x). Non-finite
    x or y are not drawn (except y <= 0 on a log axis, which counts as below).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & (np.isfinite(y) if not logy else ~np.isnan(y))
    x, y = x[keep], y[keep]
    cc = None if c is None else np.asarray(c, dtype=float)[keep]
    xs, right, left = _clip_positions(x, xlim, False, inset)
    ys, up, down = _clip_positions(y, ylim, logy, inset)
    groups = {
        "o": ~(right | left | up | down),
        "^": up,
        "v": down,
        ">": right & ~(up | down),
        "<": left & ~(up | down),
    }
    first = True
    for marker, sel in groups.items():
        if not sel.any():
            continue
        kwargs: dict[str, Any] = {"marker": marker, "alpha": alpha, "zorder": zorder, "lw": 0}
        if cc is not None:
            kwargs.update(c=cc[sel], cmap=cmap, norm=norm)
        else:
            kwargs["color"] = color
        ax.scatter(
            xs[sel],
            ys[sel],
            s=s if marker == "o" else 2.2 * s,
            label=label if first else None,
            rasterized=bool(sel.sum() > 3000),
            **kwargs,
        )
        first = False
    return int((right | left | up | down).sum())


def _running_median(
    x: np.ndarray, y: np.ndarray, lo: float, hi: float, nbins: int = 12, min_count: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Medians of y in equal bins of x over [lo, hi] (bins with fewer than min_count: NaN)."""
    edges = np.linspace(lo, hi, nbins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    med = np.full(nbins, np.nan)
    ok = np.isfinite(x) & np.isfinite(y)
    idx = np.digitize(x[ok], edges) - 1
    yy = y[ok]
    for i in range(nbins):
        sel = yy[idx == i]
        if sel.size >= min_count:
            med[i] = np.median(sel)
    return centres, med


def _median_line(ax: Axes, x: np.ndarray, y: np.ndarray, color: Any, label: str | None) -> None:
    ax.plot(
        x,
        y,
        "-o",
        color=color,
        lw=1.8,
        ms=3.5,
        zorder=6,
        label=label,
        path_effects=[withStroke(linewidth=3.2, foreground="white")],
    )


# ------------------------------------------------------------------------------------------
# 1. FLUX_RADIUS vs FLUX_AUTO with the stellar-locus box (VISQL chimney2)


def plot_flux_radius(
    catalogue: Any, locus: Any, path: PathLike, *, title: str, selected: Any = None
) -> Path:
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
                + f": r {rmin:.2f}–{rmax:.2f} px, f {_sci(fmin)}–{_sci(fmax)} ADU"
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
        _suptitle(fig, title, sub)
        return save_png(fig, path)


# ------------------------------------------------------------------------------------------
# 2. Focal-plane maps of per-quadrant median moments (VISQL starmomentsmap3)

_STAR_MOMENTS = ("r2", "e1", "e2", "t1", "t2", "c1", "c2")
#: Glyph length (deg) at the reference value, per grouping: arrow (coma), stick (ellipticity),
#: arm (trefoil). Quadrant pitch is ~0.058 deg, CCD pitch ~0.12 deg.
_GLYPH_DEG = {"quadrant": (0.05, 0.05, 0.026), "ccd": (0.095, 0.095, 0.05)}
_REF_XY = (0.345, 0.42)  # reference glyph position, above the focal plane
_CAP = 1.5  # glyphs longer than this many reference lengths are drawn at that length


def _group_medians(
    cols: Columns, group: Literal["quadrant", "ccd"], min_stars: int
) -> dict[str, np.ndarray]:
    ext = cols.str("extname", "ext")
    x = cols.float("x_world", "xworld")
    y = cols.float("y_world", "yworld")
    values = {k: cols.float(k) for k in _STAR_MOMENTS}
    keys = ext if group == "quadrant" else np.array([e.split(".")[0] for e in ext], dtype=str)
    names, inverse = np.unique(keys, return_inverse=True) if keys.size else ([], [])
    rows: dict[str, list[Any]] = {k: [] for k in ("name", "x", "y", "n", *_STAR_MOMENTS)}
    for i, name in enumerate(names):
        sel = np.flatnonzero(inverse == i)
        n = int(np.isfinite(values["r2"][sel]).sum())
        if n < min_stars:
            continue
        centre = region_centre(str(name))
        if centre is None:
            centre = (_median(x[sel]), _median(y[sel]))
        rows["name"].append(str(name))
        rows["x"].append(centre[0])
        rows["y"].append(centre[1])
        rows["n"].append(n)
        for k in _STAR_MOMENTS:
            rows[k].append(_median(values[k][sel]))
    out = {k: np.asarray(v, dtype=float) for k, v in rows.items() if k != "name"}
    out["name"] = np.asarray(rows["name"], dtype=str)
    return out


def _glyph_scale(mag: np.ndarray, floor: float) -> float:
    """VISQL's reference value max(P75(|v|), floor) over the finite group medians."""
    m = mag[np.isfinite(mag)]
    return max(float(np.percentile(m, 75)), floor) if m.size else floor


def _quiver(
    ax: Axes,
    x: np.ndarray,
    y: np.ndarray,
    mag: np.ndarray,
    angle: np.ndarray,
    value_per_deg: float,
    cmap: Colormap,
    norm: Normalize,
    *,
    head: bool,
    pivot: str,
    width: float,
) -> None:
    ok = np.isfinite(mag) & np.isfinite(angle) & np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return
    u = mag[ok] * np.cos(angle[ok])
    v = mag[ok] * np.sin(angle[ok])
    heads = (
        {"headwidth": 3.5, "headlength": 4.0, "headaxislength": 3.5}
        if head
        else {"headwidth": 0, "headlength": 0, "headaxislength": 0}
    )
    ax.quiver(
        x[ok],
        y[ok],
        u,
        v,
        mag[ok],
        cmap=cmap,
        norm=norm,
        angles="xy",
        scale_units="xy",
        scale=value_per_deg,
        pivot=pivot,
        width=width,
        zorder=4,
        **heads,
    )


def _glyphs(
    ax: Axes,
    x: np.ndarray,
    y: np.ndarray,
    mag: np.ndarray,
    angle: np.ndarray,
    value_per_deg: float,
    cmap: Colormap,
    norm: Normalize,
    *,
    reference: float,
    reference_xy: tuple[float, float],
    arms: int = 1,
    **style: Any,
) -> None:
    """Glyphs of `arms` arms (120 deg apart for 3) at the data points, and the reference glyph
    of length `reference` at `reference_xy`, drawn the same way."""
    rx, ry = np.array([reference_xy[0]]), np.array([reference_xy[1]])
    for k in range(arms):
        turn = k * 2 * np.pi / arms
        _quiver(ax, x, y, mag, angle + turn, value_per_deg, cmap, norm, **style)
        _quiver(
            ax, rx, ry, np.array([reference]), np.array([turn]), value_per_deg, cmap, norm, **style
        )


def _side_colorbar(fig: Any, ax: Axes, mappable: ScalarMappable, label: str) -> None:
    """Colour bar hugging the (equal-aspect) axes, rather than the grid cell around it."""
    cax = ax.inset_axes((1.03, 0.0, 0.045, 1.0))
    fig.colorbar(mappable, cax=cax, label=label)


def _reference(ax: Axes, text: str) -> None:
    ax.text(_REF_XY[0] - 0.04, _REF_XY[1], text, ha="right", va="center", fontsize=8, zorder=5)


def plot_moment_maps(
    stars: Any,
    path: PathLike,
    *,
    title: str,
    group: Literal["quadrant", "ccd"] = "quadrant",
    min_stars: int = 3,
) -> Path:
    """2x2 focal-plane maps of per-quadrant median R2, coma, ellipticity and trefoil.

    `group="ccd"` takes medians per CCD instead (VISQL's map3 image shows 36 CCD points).
    Groups with fewer than `min_stars` measured stars are left out.
    """
    if group not in _GLYPH_DEG:
        raise ValueError(f"group must be 'quadrant' or 'ccd', got {group!r}")
    with plot_style(), quiet_numpy():
        cols = Columns(stars, "star moments")
        g = _group_medians(cols, group, min_stars)
        x_all = cols.float("x_world", "xworld")
        y_all = cols.float("y_world", "yworld")
        n_stars = int(np.isfinite(cols.float("r2")).sum()) if cols.n else 0
        ng = int(g["n"].size)
        arrow_len, stick_len, arm_len = _GLYPH_DEG[group]
        unit = "quadrant" if group == "quadrant" else "CCD"

        fig = new_figure(1200, 900)
        axes = fig.subplots(2, 2)
        for ax in axes.flat:
            focal_plane_axes(ax)
        ax_r2, ax_c, ax_e, ax_t = axes.flat

        # (a) R2 as filled quadrant (CCD) tiles
        r2 = g["r2"]
        fin = r2[np.isfinite(r2)]
        if fin.size:
            p25, p75 = np.percentile(fin, [25, 75])
            iqr = p75 - p25
            r2_lo, r2_hi = min(p25 - iqr, 1.7), max(p75 + iqr, 2.3)
        else:
            r2_lo, r2_hi = 1.7, 2.3
        r2_norm = Normalize(r2_lo, r2_hi)
        r2_cmap = colormaps["coolwarm"]
        tiles, tile_values, loose = [], [], []
        for i, name in enumerate(g["name"]):
            rect = region_rectangle(name)
            if not np.isfinite(r2[i]):
                continue
            if rect is None:
                loose.append(i)
            else:
                tiles.append(Rectangle(rect[:2], rect[2], rect[3]))
                tile_values.append(r2[i])
        measured = {str(nm) for nm, v in zip(g["name"], r2, strict=True) if np.isfinite(v)}
        empty_regions = [
            region_rectangle(nm)
            for nm in (all_extnames() if group == "quadrant" else all_ccds())
            if nm not in measured
        ]
        if empty_regions:
            ax_r2.add_collection(
                PatchCollection(
                    [Rectangle(r[:2], r[2], r[3]) for r in empty_regions if r is not None],
                    facecolor="none",
                    edgecolor="0.72",
                    hatch="////",
                    lw=0.0,
                    zorder=1,
                )
            )
        if tiles:
            coll = PatchCollection(tiles, cmap=r2_cmap, norm=r2_norm, zorder=1, lw=0)
            coll.set_array(np.asarray(tile_values))
            ax_r2.add_collection(coll)
        if loose:
            ax_r2.scatter(
                g["x"][loose],
                g["y"][loose],
                c=r2[loose],
                cmap=r2_cmap,
                norm=r2_norm,
                marker="s",
                s=60,
                zorder=3,
            )
        pos = np.isfinite(x_all) & np.isfinite(y_all)
        if pos.any():
            ax_r2.plot(x_all[pos], y_all[pos], ",", color="k", alpha=0.6, zorder=3, rasterized=True)
        _side_colorbar(fig, ax_r2, ScalarMappable(r2_norm, r2_cmap), "median R2 [px²]")
        ax_r2.set_title(f"(a) R2 (PSF size), median per {unit}; dots: stars")
        if empty_regions and ng:
            corner_text(ax_r2, f"hatched: < {min_stars} stars", loc="upper right")
        if fin.size:
            corner_text(ax_r2, f"median R2 = {np.median(fin):.3f} px²")

        # (b) coma arrows
        cmag = np.hypot(g["c1"], g["c2"])
        cmax = _glyph_scale(cmag, 0.2)
        c_cmap, c_norm = truncated_cmap("Blues", 0.3), Normalize(0.0, cmax)
        _glyphs(
            ax_c,
            g["x"],
            g["y"],
            np.minimum(cmag, _CAP * cmax),
            np.arctan2(g["c2"], g["c1"]),
            cmax / arrow_len,
            c_cmap,
            c_norm,
            reference=cmax,
            reference_xy=_REF_XY,
            head=True,
            pivot="middle",
            width=0.006,
        )
        _reference(ax_c, f"|c| = {cmax:.2f}")
        _side_colorbar(fig, ax_c, ScalarMappable(c_norm, c_cmap), "|c| (coma)")
        ax_c.set_title("(b) coma: arrow ∝ |c|, direction atan2(c2, c1)")

        # (c) ellipticity sticks
        emag = np.hypot(g["e1"], g["e2"])
        emax = _glyph_scale(emag, 0.07)
        e_cmap, e_norm = truncated_cmap("Greens", 0.3), Normalize(0.0, emax)
        _glyphs(
            ax_e,
            g["x"],
            g["y"],
            np.minimum(emag, _CAP * emax),
            0.5 * np.arctan2(g["e2"], g["e1"]),
            emax / stick_len,
            e_cmap,
            e_norm,
            reference=emax,
            reference_xy=_REF_XY,
            head=False,
            pivot="middle",
            width=0.007,
        )
        _reference(ax_e, f"|e| = {emax:.2f}")
        _side_colorbar(fig, ax_e, ScalarMappable(e_norm, e_cmap), "|e| (ellipticity)")
        ax_e.set_title("(c) ellipticity: stick ∝ |e|, angle ½ atan2(e2, e1)")

        # (d) trefoil: three arms 120 deg apart
        tmag = np.hypot(g["t1"], g["t2"])
        tmax = _glyph_scale(tmag, 0.4)
        t_cmap, t_norm = truncated_cmap("Reds", 0.3), Normalize(0.0, tmax)
        tang = np.arctan2(g["t2"], g["t1"]) / 3.0
        tcap = np.minimum(tmag, _CAP * tmax)
        _glyphs(
            ax_t,
            g["x"],
            g["y"],
            tcap,
            tang,
            tmax / arm_len,
            t_cmap,
            t_norm,
            reference=tmax,
            reference_xy=(_REF_XY[0], _REF_XY[1] - 0.002),
            arms=3,
            head=False,
            pivot="tail",
            width=0.006,
        )
        _reference(ax_t, f"|t| = {tmax:.2f}")
        _side_colorbar(fig, ax_t, ScalarMappable(t_norm, t_cmap), "|t| (trefoil)")
        ax_t.set_title("(d) trefoil: arms ∝ |t|, angle ⅓ atan2(t2, t1)")

        for ax, comp in ((ax_c, "c"), (ax_e, "e"), (ax_t, "t")):
            m1, m2 = _median(g[f"{comp}1"]), _median(g[f"{comp}2"])
            if np.isfinite(m1):
                corner_text(ax, f"median ({comp}1, {comp}2) = ({m1:+.3f}, {m2:+.3f})")
        if ng == 0:
            msg = "no stars measured" if n_stars == 0 else f"no {unit} with ≥ {min_stars} stars"
            for ax in axes.flat:
                no_data(ax, msg)
        capped = sum(
            int((mag > _CAP * ref).sum()) for mag, ref in ((cmag, cmax), (emag, emax), (tmag, tmax))
        )
        sub = f"{n_stars:,} stars; medians in {ng} {unit}s with ≥ {min_stars} stars"
        if capped:
            sub += f"; {capped} glyphs capped at {_CAP:g}× the reference length"
        _suptitle(fig, title, sub)
        return save_png(fig, path)


# ------------------------------------------------------------------------------------------
# 3. Moments against each other and against position (VISQL starmomentsmap)

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
    stars: Any, path: PathLike, *, title: str, max_points: int = 2000, seed: int = 0
) -> Path:
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
        v = {k: cols.float(k) for k in _STAR_MOMENTS}
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
            m1, m2 = _median(v[k1]), _median(v[k2])
            m1 = 0.0 if not np.isfinite(m1) else m1
            m2 = 0.0 if not np.isfinite(m2) else m2
            ax = axes[row, 0]
            xlim, ylim = (m1 - half, m1 + half), (m2 - half, m2 + half)
            ax.axhline(0, color="0.7", lw=0.7, zorder=1)
            ax.axvline(0, color="0.7", lw=0.7, zorder=1)
            nout = _clipped_scatter(
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
            ax.set_xlabel(f"{label} {k1}")
            ax.set_ylabel(f"{label} {k2}")
            ylo = min(m1, m2) - half
            yhi = max(m1, m2) + half
            for col, ((xlabel, plim), pos) in enumerate(
                zip(_POSITION_AXES, positions, strict=True), start=1
            ):
                ax = axes[row, col]
                ax.axhline(0, color="0.7", lw=0.7, zorder=1)
                nout = 0
                for key, colour in ((k1, COLOUR_C1), (k2, COLOUR_C2)):
                    nout += _clipped_scatter(
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
                    xc, med = _running_median(pos, v[key], *plim)
                    if np.isfinite(med).any():
                        _median_line(ax, xc, med, colour, key)
                ax.set_xlim(*plim)
                ax.set_ylim(ylo, yhi)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(f"{label} {k1}, {k2}")
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
        nout = _clipped_scatter(ax, lf[idx], r2[idx], ylim=_R2_RANGE, color="0.25", s=3, alpha=0.5)
        xc, med = _running_median(lf, r2, *flim, nbins=10)
        if np.isfinite(med).any():
            _median_line(ax, xc, med, COLOUR_STAR, "running median")
        ax.set_xlim(*flim)
        ax.set_ylim(*_R2_RANGE)
        ax.set_xlabel("log10 FLUX_AUTO [ADU]")
        ax.set_ylabel("R2 [px²]")
        ax.grid(True, lw=0.5)
        if nout and n_measured:
            corner_text(ax, f"{nout} off scale", loc="lower right")
        if n_measured:
            corner_text(ax, f"median R2 = {_median(r2):.3f} px²", loc="upper left")
        for col, ((xlabel, plim), pos) in enumerate(
            zip(_POSITION_AXES, positions, strict=True), start=1
        ):
            ax = axes[3, col]
            nout = _clipped_scatter(
                ax, pos[idx], r2[idx], xlim=plim, ylim=_R2_RANGE, color="0.25", s=3, alpha=0.4
            )
            xc, med = _running_median(pos, r2, *plim)
            if np.isfinite(med).any():
                _median_line(ax, xc, med, COLOUR_STAR, "running median")
            ax.set_xlim(*plim)
            ax.set_ylim(*_R2_RANGE)
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
            "± 0.05 (ellipticity), ± 0.25 (trefoil); R2 1.7–2.4 px²; off-scale points at the "
            "edges as triangles"
        )
        _suptitle(fig, title, sub)
        return save_png(fig, path)


# ------------------------------------------------------------------------------------------
# 4. Mosaic of star stamps


def plot_star_stamps(
    stamps: Any,
    path: PathLike,
    *,
    labels: Sequence[str] | None = None,
    title: str,
    max_stamps: int = 100,
    softening: float = 0.01,
) -> Path:
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
        _suptitle(fig, title, sub)
        return save_png(fig, path)


# ------------------------------------------------------------------------------------------
# 5. Monthly IQ timeline (VISQL IQ_timeline)

#: (column, y label, y limits, log axis) — VISQL's y ranges (VISQL-SPEC 7.5).
_TIMELINE_PANELS = (
    ("r2", "R2 [px²]", (1.7, 2.3), False),
    ("e1", "ellipticity e1", (-0.07, 0.07), False),
    ("e2", "ellipticity e2", (-0.07, 0.07), False),
    ("trefoil1", "trefoil t1", (-0.3, -0.15), False),
    ("trefoil2", "trefoil t2", (-0.05, 0.1), False),
    ("score", "IQ score", (0.1, 1e5), True),
)
EXPTIME_RANGE = (0.0, 700.0)


def _month_columns(
    month: Any, reference: IQReference | None = None, *, need_dates: bool = True
) -> dict[str, np.ndarray]:
    """Month-table columns as float arrays; score computed from (R2, e1, e2) if absent."""
    cols = Columns(month, "month table")
    optional = ("coma1", "coma2", "trefoil1", "trefoil2")
    out = {k: cols.float(k, required=k not in optional) for k in ("r2", "e1", "e2", *optional)}
    if cols.find("score") is not None or cols.n == 0:
        out["score"] = cols.float("score")
    else:
        out["score"] = np.asarray(iq_score(out["r2"], out["e1"], out["e2"], reference))
    out["exptime"] = cols.float("exptime", required=False)
    out["day"] = mission_day(cols.datetime("date_obs", required=need_dates))
    out["n"] = np.array(cols.n)
    return out


def _date_tick(day: float, _pos: Any = None) -> str:
    dt = mission_day_to_date(day)
    return f"{day:.0f}\n{dt.day} {dt:%b}"


def plot_iq_timeline(
    month: Any,
    path: PathLike,
    *,
    month_label: str,
    ok: float = IQ_OK,
    reject: float = IQ_REJECT,
    title: str | None = None,
) -> Path:
    """Per-exposure R2, e1, e2, trefoil and IQ score against mission day over a month.

    Points coloured by exposure time; values off scale sit at the panel edge as triangles.
    """
    with plot_style(), quiet_numpy():
        m = _month_columns(month)
        d0, d1 = month_mission_days(month_label)
        day = m["day"]
        order = np.argsort(day, kind="stable")
        in_month = np.isfinite(day) & (day >= d0) & (day < d1)
        n_month = int(in_month.sum())
        cmap = colormaps["turbo"].with_extremes(bad="0.5")
        norm = Normalize(*EXPTIME_RANGE)

        fig = new_figure(1400, 1400)
        axes = fig.subplots(len(_TIMELINE_PANELS), 1, sharex=True)
        for ax, (key, ylabel, ylim, log) in zip(axes, _TIMELINE_PANELS, strict=True):
            values = m[key]
            if log:
                ax.set_yscale("log")
                ax.axhspan(ylim[0], ok, color=COLOUR_BOX, alpha=0.08, zorder=0)
                ax.axhspan(reject, ylim[1], color=COLOUR_REJECT, alpha=0.08, zorder=0)
                ax.axhline(ok, color=COLOUR_BOX, lw=1.2, ls="--", zorder=1)
                ax.axhline(reject, color=COLOUR_REJECT, lw=1.2, ls="--", zorder=1)
                ax.text(
                    d1,
                    ok,
                    f" OK < {ok:g}",
                    color=COLOUR_BOX,
                    va="center",
                    fontsize=8.5,
                    clip_on=False,
                )
                ax.text(
                    d1,
                    reject,
                    f" reject > {reject:g}",
                    color=COLOUR_REJECT,
                    va="center",
                    fontsize=8.5,
                    clip_on=False,
                )
            nout = _clipped_scatter(
                ax,
                day[order],
                values[order],
                ylim=ylim,
                logy=log,
                c=m["exptime"][order],
                cmap=cmap,
                norm=norm,
                s=9,
                inset=0.025,
            )
            ax.set_ylim(*ylim)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="major", lw=0.6)
            ax.grid(True, which="minor", axis="x", lw=0.3, color="#eeeeee")
            sel = in_month & np.isfinite(values)
            info = []
            if sel.any():
                med = float(np.median(values[sel]))
                info.append(f"median {med:.3g}" if log else f"median {med:.4g}")
                if not log and ylim[0] < med < ylim[1]:
                    ax.axhline(med, color="0.35", lw=0.8, ls=":", zorder=2)
            if nout:
                info.append(f"{nout} off scale (▲▼)")
            if log and sel.any():
                s = values[sel]
                info.append(
                    f"{int((s < ok).sum())} OK, {int(((s >= ok) & (s <= reject)).sum())} between,"
                    f" {int((s > reject).sum())} rejected"
                )
            if info:
                corner_text(ax, "  ·  ".join(info), loc="upper left", fontsize=8.5)
            if n_month == 0:
                no_data(ax, f"no exposures in {month_label}", fontsize=10)
        ax = axes[-1]
        ax.set_xlim(d0, d1)
        ax.xaxis.set_major_locator(MultipleLocator(2))
        ax.xaxis.set_minor_locator(MultipleLocator(1))
        ax.xaxis.set_major_formatter(FuncFormatter(_date_tick))
        ax.set_xlabel("mission day (days since 2023-07-01 00:00 UTC) / date")
        fig.colorbar(
            ScalarMappable(norm, cmap),
            ax=list(axes),
            label="exposure time [s]",
            aspect=60,
            pad=0.015,
            fraction=0.03,
        )
        n_off = int(np.isfinite(day).sum()) - n_month
        sub = f"{n_month:,} exposures in {month_label} (mission days {d0:g}–{d1:g})"
        if n_off:
            sub += f"; {n_off} outside the month not shown"
        n_nodate = int(m["n"]) - int(np.isfinite(day).sum())
        if n_nodate:
            sub += f"; {n_nodate} without a date"
        _suptitle(fig, title or f"VIS image quality per exposure, {month_label}", sub)
        return save_png(fig, path)


# ------------------------------------------------------------------------------------------
# 6. Monthly PSF-moment summary (VISQL psfmoments_<m>.png)


def _ok_ellipse(centre: tuple[float, float], cov: np.ndarray, level: float, colour: Any) -> Ellipse:
    """Ellipse (x-mu)^T cov^-1 (x-mu) = level."""
    vals, vecs = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
    width, height = 2 * np.sqrt(level * vals[1]), 2 * np.sqrt(level * vals[0])
    return Ellipse(
        centre, width, height, angle=angle, fill=False, ec=colour, lw=1.2, ls="--", zorder=5
    )


def plot_psf_month_summary(
    month: Any,
    path: PathLike,
    *,
    month_label: str,
    ok: float = IQ_OK,
    reference: IQReference | None = None,
    title: str | None = None,
) -> Path:
    """2x2 scatter of a month's per-exposure median moments; score < ok highlighted.

    Panels: R2 vs e1 and e2; e1 vs e2; coma1 vs coma2; trefoil1 vs trefoil2. Dashed ellipses:
    the score = ok boundary of `reference` (default VISQL's) projected on each plane.
    """
    with plot_style(), quiet_numpy():
        ref = reference if reference is not None else IQReference()
        m = _month_columns(month, ref, need_dates=False)
        good = m["score"] < ok
        bad = ~good
        n = int(m["n"])
        fig = new_figure(1100, 900)
        axes = fig.subplots(2, 2)
        faint = {"color": "0.6", "s": 7, "alpha": 0.6, "zorder": 2}
        panels = (
            ("r2", ("e1", "e2"), "R2 [px²]", "e1 (blue), e2 (red)", (1.8, 2.1), (-0.05, 0.025)),
            ("e1", ("e2",), "e1", "e2", (-0.05, 0.0), (-0.025, 0.025)),
            ("coma1", ("coma2",), "coma1", "coma2", (0.0, 0.05), (-0.05, 0.0)),
            ("trefoil1", ("trefoil2",), "trefoil1", "trefoil2", (-0.3, -0.2), (-0.05, 0.05)),
        )
        titles = (
            "(a) size against ellipticity",
            "(b) ellipticity",
            "(c) coma",
            "(d) trefoil",
        )
        for ax, panel_title in zip(axes.flat, titles, strict=True):
            ax.set_title(panel_title)
        for ax, (xk, yks, xlabel, ylabel, xlim, ylim) in zip(axes.flat, panels, strict=True):
            for j, yk in enumerate(yks):
                colour = (COLOUR_C1, COLOUR_REJECT)[j] if len(yks) > 1 else "k"
                _clipped_scatter(
                    ax,
                    m[xk][bad],
                    m[yk][bad],
                    xlim=xlim,
                    ylim=ylim,
                    label=f"score ≥ {ok:g}" if j == 0 else None,
                    **faint,
                )
                _clipped_scatter(
                    ax,
                    m[xk][good],
                    m[yk][good],
                    xlim=xlim,
                    ylim=ylim,
                    color=colour,
                    s=10,
                    alpha=0.8,
                    zorder=3,
                    label=f"score < {ok:g}" + (f" ({yk})" if len(yks) > 1 else ""),
                )
            ax.set_xlim(*xlim)
            ax.set_ylim(*ylim)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, lw=0.5)
        # Projections of the score = ok ellipsoid (minimum of the quadratic form over the
        # coordinate not shown) and the reference point.
        ax = axes[0, 0]
        ax.add_patch(_ok_ellipse((ref.r2m, ref.e1m), ref.covariance, ok, COLOUR_C1))
        ax.add_patch(
            _ok_ellipse((ref.r2m, ref.e2m), np.diag([ref.cov00, ref.vare2]), ok, COLOUR_REJECT)
        )
        ax.plot([ref.r2m] * 2, [ref.e1m, ref.e2m], "+", color="k", ms=10, mew=1.5, zorder=6)
        ax = axes[0, 1]
        ax.add_patch(_ok_ellipse((ref.e1m, ref.e2m), np.diag([ref.cov11, ref.vare2]), ok, "k"))
        ax.plot(ref.e1m, ref.e2m, "+", color="k", ms=10, mew=1.5, zorder=6)
        handles, labels = axes[0, 1].get_legend_handles_labels()
        handles.append(Line2D([], [], color="k", ls="--", lw=1.2))
        labels.append(f"score = {ok:g} boundary ({ref.name})")
        handles.append(Line2D([], [], color="k", ls="none", marker="+", ms=10, mew=1.5))
        labels.append("reference")
        if n:
            axes[0, 1].legend(handles, labels, loc="upper left", fontsize=7.5)
            if axes[0, 0].get_legend_handles_labels()[0]:
                axes[0, 0].legend(loc="lower left", fontsize=7.5)
        else:
            for ax in axes.flat:
                no_data(ax, f"no exposures in {month_label}", fontsize=10)
        n_good = int(good.sum())
        sub = f"{n:,} exposures; {n_good:,} with IQ score < {ok:g} highlighted, others grey"
        sub += "; off-scale points at the edges as triangles"
        _suptitle(fig, title or f"VIS median PSF moments per exposure, {month_label}", sub)
        return save_png(fig, path)
