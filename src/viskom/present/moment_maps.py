"""Focal-plane maps of one exposure's PSF moments: median R2, coma, ellipticity, trefoil.

Like VISQL's starmomentsmap3 (VISQL-SPEC 5.7): medians per quadrant (or per CCD) drawn as
tiles (R2) and glyphs (arrows, sticks, three-armed trefoils) over the 6x6 CCD layout. The
function returns a matplotlib Figure; the caller saves it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import PatchCollection
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from viskom.le1.geometry import all_ccds, all_extnames
from viskom.present.common import STAR_MOMENTS, nan_median, suptitle
from viskom.present.focal import focal_plane_axes, region_centre, region_rectangle
from viskom.present.inputs import Columns
from viskom.present.style import (
    SEQUENTIAL,
    axes_title,
    corner_text,
    new_figure,
    no_data,
    plot_style,
    quiet_numpy,
    truncated_cmap,
)

__all__ = ["plot_moment_maps"]

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
    values = {k: cols.float(k) for k in STAR_MOMENTS}
    keys = ext if group == "quadrant" else np.array([e.split(".")[0] for e in ext], dtype=str)
    names, inverse = np.unique(keys, return_inverse=True) if keys.size else ([], [])
    rows: dict[str, list[Any]] = {k: [] for k in ("name", "x", "y", "n", *STAR_MOMENTS)}
    for i, name in enumerate(names):
        sel = np.flatnonzero(inverse == i)
        n = int(np.isfinite(values["r2"][sel]).sum())
        if n < min_stars:
            continue
        centre = region_centre(str(name))
        if centre is None:
            centre = (nan_median(x[sel]), nan_median(y[sel]))
        rows["name"].append(str(name))
        rows["x"].append(centre[0])
        rows["y"].append(centre[1])
        rows["n"].append(n)
        for k in STAR_MOMENTS:
            rows[k].append(nan_median(values[k][sel]))
    out = {k: np.asarray(v, dtype=float) for k, v in rows.items() if k != "name"}
    out["name"] = np.asarray(rows["name"], dtype=str)
    return out


def _glyph_scale(mag: np.ndarray, floor: float) -> float:
    """Reference value of the glyphs: the 75th percentile of the finite group medians, rounded
    up to a 1-2-5 number (at least `floor`), so the glyphs are visible however small the values.

    VISQL used max(P75, a fixed floor: 0.2 coma, 0.07 ellipticity, 0.4 trefoil), which drew
    small moments as invisible glyphs.
    """
    m = mag[np.isfinite(mag)]
    p75 = float(np.percentile(m, 75)) if m.size else 0.0
    if not p75 > floor:
        return floor
    exp = np.floor(np.log10(p75))
    nice = [k * 10.0**e for e in (exp - 1, exp, exp + 1) for k in (1, 2, 5)]
    return float(min(c for c in nice if c >= p75 * (1 - 1e-9)))


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


def _extend(values: np.ndarray, lo: float, hi: float) -> str:
    """Colour-bar `extend` for values below lo or above hi."""
    under, over = bool((values < lo).any()), bool((values > hi).any())
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (under, over), "neither"
    )


def _reference(ax: Axes, text: str) -> None:
    ax.text(_REF_XY[0] - 0.04, _REF_XY[1], text, ha="right", va="center", fontsize=8, zorder=5)


def plot_moment_maps(
    stars: Any,
    *,
    title: str,
    group: Literal["quadrant", "ccd"] = "quadrant",
    min_stars: int = 3,
) -> Figure:
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
        if fin.size:  # colour range from the data: quartiles +- 1.5 IQR, at least 0.1 px²
            p25, p75 = np.percentile(fin, [25, 75])
            iqr = p75 - p25
            r2_lo, r2_hi = max(p25 - 1.5 * iqr, fin.min()), min(p75 + 1.5 * iqr, fin.max())
            if r2_hi - r2_lo < 0.1:
                mid = 0.5 * (r2_lo + r2_hi)
                r2_lo, r2_hi = mid - 0.05, mid + 0.05
        else:
            r2_lo, r2_hi = 1.7, 2.3
        r2_norm = Normalize(r2_lo, r2_hi)
        r2_cmap = colormaps[SEQUENTIAL]  # a size: sequential
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
        cax = ax_r2.inset_axes((1.03, 0.0, 0.045, 1.0))
        fig.colorbar(
            ScalarMappable(r2_norm, r2_cmap),
            cax=cax,
            label="median R2 [px²]",
            extend=_extend(r2[np.isfinite(r2)], r2_lo, r2_hi),
        )
        axes_title(ax_r2, f"(a) R2 (PSF size), median per {unit}; dots: stars")
        if empty_regions and ng:
            corner_text(ax_r2, f"hatched: < {min_stars} stars", loc="upper right")
        if fin.size:
            corner_text(ax_r2, f"median R2 = {np.median(fin):.3f} px²")

        # (b) coma arrows
        cmag = np.hypot(g["c1"], g["c2"])
        cmax = _glyph_scale(cmag, 1e-3)
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
        _reference(ax_c, f"|c| = {cmax:g}")
        _side_colorbar(fig, ax_c, ScalarMappable(c_norm, c_cmap), "|c| (coma, dimensionless)")
        axes_title(ax_c, "(b) coma: arrow ∝ |c|, direction atan2(c2, c1)")

        # (c) ellipticity sticks
        emag = np.hypot(g["e1"], g["e2"])
        emax = _glyph_scale(emag, 1e-3)
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
        _reference(ax_e, f"|e| = {emax:g}")
        e_label = "|e| (ellipticity, dimensionless)"
        _side_colorbar(fig, ax_e, ScalarMappable(e_norm, e_cmap), e_label)
        axes_title(ax_e, "(c) ellipticity: stick ∝ |e|, angle ½ atan2(e2, e1)")

        # (d) trefoil: three arms 120 deg apart
        tmag = np.hypot(g["t1"], g["t2"])
        tmax = _glyph_scale(tmag, 1e-3)
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
        _reference(ax_t, f"|t| = {tmax:g}")
        _side_colorbar(fig, ax_t, ScalarMappable(t_norm, t_cmap), "|t| (trefoil, dimensionless)")
        axes_title(ax_t, "(d) trefoil: arms ∝ |t|, angle ⅓ atan2(t2, t1)")

        for ax, comp in ((ax_c, "c"), (ax_e, "e"), (ax_t, "t")):
            m1, m2 = nan_median(g[f"{comp}1"]), nan_median(g[f"{comp}2"])
            if np.isfinite(m1):
                text = f"median ({comp}1, {comp}2) = ({m1:+.3f}, {m2:+.3f})"
                corner_text(ax, text, loc="lower left")
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
        suptitle(fig, title, sub)
        return fig
