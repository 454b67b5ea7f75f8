"""Gaussian-weighted PSF moments of stars, as VISQL defines them, with a converged centroid.

Definitions (VISQL-SPEC 5.5). On a background-subtracted stamp with pixel offsets dx (column
axis) and dy (row axis) from the stamp's centre pixel, the weight is
w = exp(-0.5 ((dx - xc)^2 + (dy - yc)^2) / sigma_w^2) with sigma_w = 2.5 px. The centroid
(xc, yc) is the fixed point of the weighted first moment, iterated here until the step is
smaller than `tol` (VISQL took 5 fixed steps over-relaxed by 1.2, with no convergence check).
About that centroid, with q_ij = sum(I w (dx-xc)^i (dy-yc)^j) / sum(I w):

    R2 = q20 + q02,  R3 = max(R2, 0.01)^1.5,
    e1 = (q20 - q02) / R2,          e2 = 2 q11 / R2,
    t1 = (q30 - 3 q12) / R3,        t2 = (3 q21 - q03) / R3     (trefoil, spin 3),
    c1 = (q30 + q12) / R3,          c2 = (q21 + q03) / R3       (coma, spin 1).

`measure_stars` does the same for many stars of one quadrant at once: stamps are stacked into
an (N, 29, 29) array and the centroid iteration runs on all unconverged stars together.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

import numpy as np

from viskom.measure.robust import mad_sigma

SIGMA_W_PX = 2.5  # VISQL's weight sigma (starfield2_with_measures.py:53)
HALF_SIZE = 14  # VISQL's 29 x 29 stamp
EDGE_MARGIN = 100  # VISQL's on-chip margin in pixels


class MomentFlag(IntFlag):
    """Bits of the per-star `flag`; 0 means a clean measurement."""

    NOT_CONVERGED = 1  # centroid step still >= tol after max_iter, or centroid left the stamp
    LARGE_SHIFT = 2  # centroid more than max_shift px from the stamp centre (a neighbour?)
    BAD_FLUX = 4  # weighted flux <= 0 or not finite: no moments
    EDGE = 8  # star closer than edge_margin to the array edge: skipped, not measured
    NONFINITE = 16  # stamp (or its background) contains NaN/inf pixels: no moments
    # rejected before measuring (set by the caller, see viskom.stages.psf):
    SATURATED = 32  # a pixel of the stamp at or above the quadrant's SATURATE level
    BLENDED = 64  # another object's light overlaps the weighted core
    COSMIC_HIT = 128  # a particle hit in the core (catalogued or found against the mirror)
    OUTLIER = 256  # measured, but R2 or ellipticity far off the frame's stars (see flag_outliers)


@dataclass(frozen=True)
class MomentResult:
    """Moments of one star; xc, yc are offsets (px) from the stamp's centre pixel."""

    xc: float
    yc: float
    wtflux: float
    r2: float
    e1: float
    e2: float
    t1: float
    t2: float
    c1: float
    c2: float
    converged: bool
    n_iter: int
    flag: int


#: Columns returned by `measure_stars`, in order.
STAR_MOMENT_COLUMNS = (
    "xc",
    "yc",
    "x_image",
    "y_image",
    "wtflux",
    "r2",
    "e1",
    "e2",
    "t1",
    "t2",
    "c1",
    "c2",
    "converged",
    "n_iter",
    "flag",
    "skipped",
)


def _axis_weights(
    grid: np.ndarray, centre: np.ndarray, sigma_w: float
) -> tuple[np.ndarray, np.ndarray]:
    """Offsets from each centre and the 1-D Gaussian weights along one axis, each (n, len)."""
    d = grid[None, :] - centre[:, None]
    w = np.exp(-0.5 * (d / sigma_w) ** 2)
    return d, w


def _moments_batch(
    stamps: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    *,
    sigma_w: float,
    max_iter: int,
    tol: float,
    max_shift: float,
) -> dict[str, np.ndarray]:
    """Iterate centroids of all stamps together, then measure moments about them."""
    n, ny, nx = stamps.shape
    gx = np.arange(nx, dtype=float) - nx // 2
    gy = np.arange(ny, dtype=float) - ny // 2
    xc = np.array(x0, dtype=float, copy=True)
    yc = np.array(y0, dtype=float, copy=True)
    n_iter = np.zeros(n, dtype=np.int32)
    converged = np.zeros(n, dtype=bool)
    flag = np.zeros(n, dtype=np.int32)

    finite = np.isfinite(stamps).all(axis=(1, 2))
    flag[~finite] |= MomentFlag.NONFINITE
    active = finite & np.isfinite(xc) & np.isfinite(yc)
    # The weight must stay on the stamp: stop iterating a centroid that walks off it.
    lim_x, lim_y = nx // 2 - 1, ny // 2 - 1

    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        s = stamps[idx]
        dxg, wx = _axis_weights(gx, xc[idx], sigma_w)
        dyg, wy = _axis_weights(gy, yc[idx], sigma_w)
        # Sum over columns first (batched mat-vec), then over rows: w is separable.
        m = s @ np.stack((wx, wx * dxg), axis=2)  # (k, ny, 2)
        s0 = np.einsum("ki,ki->k", m[..., 0], wy)
        sx = np.einsum("ki,ki->k", m[..., 1], wy)
        sy = np.einsum("ki,ki->k", m[..., 0], wy * dyg)
        good = s0 > 0  # also False for NaN
        with np.errstate(divide="ignore", invalid="ignore"):
            step_x = np.where(good, sx / s0, 0.0)
            step_y = np.where(good, sy / s0, 0.0)
        xc[idx] += step_x
        yc[idx] += step_y
        n_iter[idx] += good
        bad = idx[~good]
        flag[bad] |= MomentFlag.BAD_FLUX
        active[bad] = False
        done = good & (np.hypot(step_x, step_y) < tol)
        converged[idx[done]] = True
        active[idx[done]] = False
        off = (np.abs(xc[idx]) > lim_x) | (np.abs(yc[idx]) > lim_y)
        active[idx[off]] = False

    flag[~converged & finite] |= MomentFlag.NOT_CONVERGED
    flag[np.hypot(xc, yc) > max_shift] |= MomentFlag.LARGE_SHIFT
    xc[~finite] = np.nan
    yc[~finite] = np.nan

    out = {k: np.full(n, np.nan) for k in ("wtflux", "r2", "e1", "e2", "t1", "t2", "c1", "c2")}
    idx = np.flatnonzero(finite & ((flag & MomentFlag.BAD_FLUX) == 0))
    if idx.size:
        s = stamps[idx]
        dxg, wx = _axis_weights(gx, xc[idx], sigma_w)
        dyg, wy = _axis_weights(gy, yc[idx], sigma_w)
        px = np.stack([wx * dxg**p for p in range(4)], axis=2)  # (k, nx, 4)
        py = np.stack([wy * dyg**p for p in range(4)], axis=2)  # (k, ny, 4)
        q = np.einsum("kia,kib->kab", s @ px, py)  # q[:, i, j] = sum I w dx^i dy^j
        s0 = q[:, 0, 0]
        good = s0 > 0
        flag[idx[~good]] |= MomentFlag.BAD_FLUX
        with np.errstate(divide="ignore", invalid="ignore"):
            q = q / s0[:, None, None]
            r2 = q[:, 2, 0] + q[:, 0, 2]
            r3 = np.maximum(r2, 0.01) ** 1.5
            vals = {
                "wtflux": s0,
                "r2": r2,
                "e1": (q[:, 2, 0] - q[:, 0, 2]) / r2,
                "e2": 2.0 * q[:, 1, 1] / r2,
                "t1": (q[:, 3, 0] - 3.0 * q[:, 1, 2]) / r3,
                "t2": (3.0 * q[:, 2, 1] - q[:, 0, 3]) / r3,
                "c1": (q[:, 3, 0] + q[:, 1, 2]) / r3,
                "c2": (q[:, 2, 1] + q[:, 0, 3]) / r3,
            }
        for key, v in vals.items():
            out[key][idx] = np.where(good, v, np.nan)
    out.update(xc=xc, yc=yc, converged=converged, n_iter=n_iter, flag=flag)
    return out


def measure_moments(
    stamp: np.ndarray,
    *,
    sigma_w: float = SIGMA_W_PX,
    max_iter: int = 50,
    tol: float = 1e-4,
    max_shift: float = 3.0,
    x0: float = 0.0,
    y0: float = 0.0,
) -> MomentResult:
    """Gaussian-weighted moments of one background-subtracted stamp (star near the centre).

    The stamp has odd sides; offsets are measured from its centre pixel (VISQL's 29x29
    meshgrid(arange(-14, 15))). (x0, y0) is the starting centroid.
    """
    a = np.asarray(stamp, dtype=float)
    if a.ndim != 2 or a.shape[0] % 2 == 0 or a.shape[1] % 2 == 0:
        raise ValueError(f"stamp must be a 2-D array with odd sides, got shape {a.shape}")
    r = _moments_batch(
        a[None],
        np.array([x0]),
        np.array([y0]),
        sigma_w=sigma_w,
        max_iter=max_iter,
        tol=tol,
        max_shift=max_shift,
    )
    return MomentResult(
        xc=float(r["xc"][0]),
        yc=float(r["yc"][0]),
        wtflux=float(r["wtflux"][0]),
        r2=float(r["r2"][0]),
        e1=float(r["e1"][0]),
        e2=float(r["e2"][0]),
        t1=float(r["t1"][0]),
        t2=float(r["t2"][0]),
        c1=float(r["c1"][0]),
        c2=float(r["c2"][0]),
        converged=bool(r["converged"][0]),
        n_iter=int(r["n_iter"][0]),
        flag=int(r["flag"][0]),
    )


def cut_stamps(image: np.ndarray, ix: np.ndarray, iy: np.ndarray, half_size: int) -> np.ndarray:
    """Stack (N, 2h+1, 2h+1) float stamps centred on integer pixels (ix, iy) of `image`."""
    off = np.arange(-half_size, half_size + 1)
    rows = (np.asarray(iy)[:, None] + off)[:, :, None]
    cols = (np.asarray(ix)[:, None] + off)[:, None, :]
    return np.asarray(image[rows, cols], dtype=float)


def measure_stars(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    background: float | np.ndarray,
    half_size: int = HALF_SIZE,
    edge_margin: int = EDGE_MARGIN,
    sigma_w: float = SIGMA_W_PX,
    max_iter: int = 50,
    tol: float = 1e-4,
    max_shift: float = 3.0,
) -> dict[str, np.ndarray]:
    """Moments of many stars on one quadrant image, vectorised over stars.

    x, y are 0-based column/row positions of the stars in `image`. `background` is a scalar,
    one value per star, or an image of the same shape as `image`. Stars nearer than
    `edge_margin` (at least `half_size`) pixels to an edge, or with non-finite positions, are
    skipped (`skipped` True, flag EDGE, NaN values). Returns the columns
    `STAR_MOMENT_COLUMNS` as arrays; x_image, y_image are refined 0-based positions.
    `astropy.table.Table(result)` or `pyarrow.table(result)` turn it into a table.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {img.shape}")
    xs = np.atleast_1d(np.asarray(x, dtype=float))
    ys = np.atleast_1d(np.asarray(y, dtype=float))
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of equal length, got {xs.shape}, {ys.shape}")
    n = xs.size
    ny, nx = img.shape
    margin = max(int(edge_margin), int(half_size))

    ok = np.isfinite(xs) & np.isfinite(ys)
    # VISQL: istar = int(i + 0.5), i.e. round half up.
    ix = np.zeros(n, dtype=np.intp)
    iy = np.zeros(n, dtype=np.intp)
    ix[ok] = np.floor(xs[ok] + 0.5).astype(np.intp)
    iy[ok] = np.floor(ys[ok] + 0.5).astype(np.intp)
    ok &= (ix >= margin) & (ix <= nx - 1 - margin) & (iy >= margin) & (iy <= ny - 1 - margin)
    sel = np.flatnonzero(ok)

    stamps = cut_stamps(img, ix[sel], iy[sel], half_size)
    bg = np.asarray(background, dtype=float)
    if bg.ndim == 0:
        stamps -= bg
    elif bg.shape == (n,):
        stamps -= bg[sel, None, None]
    elif bg.shape == img.shape:
        stamps -= cut_stamps(bg, ix[sel], iy[sel], half_size)
    else:
        raise ValueError(
            f"background must be a scalar, shape ({n},) or the image shape {img.shape}, "
            f"got {bg.shape}"
        )

    r = _moments_batch(
        stamps,
        xs[sel] - ix[sel],
        ys[sel] - iy[sel],
        sigma_w=sigma_w,
        max_iter=max_iter,
        tol=tol,
        max_shift=max_shift,
    )
    out: dict[str, np.ndarray] = {}
    for key in STAR_MOMENT_COLUMNS:
        if key in ("converged", "skipped"):
            out[key] = np.zeros(n, dtype=bool)
        elif key in ("n_iter", "flag"):
            out[key] = np.zeros(n, dtype=np.int32)
        else:
            out[key] = np.full(n, np.nan)
    for key, v in r.items():
        out[key][sel] = v
    out["x_image"][sel] = ix[sel] + r["xc"]
    out["y_image"][sel] = iy[sel] + r["yc"]
    out["skipped"][:] = ~ok
    out["flag"][~ok] = MomentFlag.EDGE
    return out


def replace_neighbours(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    nx: np.ndarray,
    ny: np.ndarray,
    nradius: np.ndarray,
    *,
    half_size: int = HALF_SIZE,
    background: float | np.ndarray = 0.0,
    clip_sigma: float | None = 8.0,
    core_radius_px: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Remove other sources (cosmic rays, neighbours) from the stamps of stars, in place.

    For each star at (x, y) (0-based), every catalogue source at (nx, ny) inside its stamp,
    other than the star itself, has the pixels within `nradius` replaced by the pixel
    mirrored through the star's centre (which belongs to the star's own profile), or by
    the star's background where the mirror is contaminated too. With `clip_sigma`, pixels
    at least 2 px from the centre that exceed their mirror image by clip_sigma times the
    stamp's noise plus half the mirrored value are replaced too (undetected hits).
    Cosmic rays cover 1-3% of a VIS exposure: unmasked, one hit inside a 29 x 29 stamp
    biases R2 by several percent.
    Within `core_radius_px` of the centre nothing can be replaced (the mirror is the star's
    own core): a catalogued source there, or a pixel exceeding its mirror by clip_sigma noise
    plus half its mirrored value, marks the star as hit in the core.
    `image` must be a float array (it is modified). Returns (image, per-star count of
    pixels replaced, per-star core-hit flag).
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    nx = np.asarray(nx, float)
    ny = np.asarray(ny, float)
    nradius = np.asarray(nradius, float)
    bg = np.broadcast_to(np.asarray(background, float), x.shape)
    replaced = np.zeros(x.size, dtype=int)
    core_hit = np.zeros(x.size, dtype=bool)
    ny_max, nx_max = image.shape
    h = half_size
    off = np.arange(-h, h + 1)
    for i in range(x.size):
        if not (np.isfinite(x[i]) and np.isfinite(y[i])):
            continue
        near = (np.abs(nx - x[i]) <= h + 3) & (np.abs(ny - y[i]) <= h + 3)
        dist = np.hypot(nx - x[i], ny - y[i])
        near &= dist > 0.5  # not the star itself
        core_hit[i] = bool((near & (dist <= core_radius_px)).any())
        near &= dist > core_radius_px
        if not near.any() and not clip_sigma:
            continue
        ix, iy = int(np.floor(x[i] + 0.5)), int(np.floor(y[i] + 0.5))
        cols = np.clip(ix + off, 0, nx_max - 1)
        rows = np.clip(iy + off, 0, ny_max - 1)
        yy, xx = np.meshgrid(rows, cols, indexing="ij")
        mask = np.zeros(xx.shape, dtype=bool)
        for cx, cy, r in zip(nx[near], ny[near], nradius[near], strict=True):
            mask |= (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        stamp = image[np.ix_(rows, cols)].astype(float)
        mirrored = _mirror(stamp, x[i] - ix, y[i] - iy, bg[i])
        if clip_sigma:
            # Sharp positive excesses over the mirrored profile, away from the core: hits
            # that were not detected on their own (merged into the star, or faint).
            sky = stamp - bg[i]
            ring = (xx - x[i]) ** 2 + (yy - y[i]) ** 2 > 100
            noise = mad_sigma(sky[ring])
            r2 = (xx - x[i]) ** 2 + (yy - y[i]) ** 2
            far = r2 >= core_radius_px**2
            excess = sky - (mirrored - bg[i])
            hit = excess > clip_sigma * max(noise, 1.0) + 0.5 * np.abs(mirrored - bg[i])
            mask |= far & hit
            # the core, 1 px beyond the centre pixel: a hit there cannot be mirrored away
            core_hit[i] |= bool((hit & ~far & (r2 >= 0.75)).any())
        if not mask.any():
            continue
        fill = np.where(mask[::-1, ::-1], bg[i], mirrored)
        image[np.ix_(rows, cols)] = np.where(mask, fill, stamp)
        replaced[i] = int(mask.sum())
    return image, replaced, core_hit


def _mirror(stamp: np.ndarray, dx: float, dy: float, fill: float) -> np.ndarray:
    """The stamp point-reflected through (dx, dy) from its centre pixel (bilinear)."""
    from scipy.ndimage import map_coordinates

    n = stamp.shape[0]
    c = n // 2
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    # pixel (c + u) maps to (c + 2 d - u)
    src_x = 2 * (c + dx) - xx
    src_y = 2 * (c + dy) - yy
    return map_coordinates(stamp, [src_y, src_x], order=1, mode="constant", cval=fill)


def flag_outliers(
    r2: np.ndarray, e1: np.ndarray, e2: np.ndarray, flag: np.ndarray, *, nsigma: float = 5.0
) -> np.ndarray:
    """Flag (OUTLIER) clean stars whose R2, e1 or e2 lies more than `nsigma` robust sigma
    (1.4826 MAD over the clean stars of the frame) from the median: what an undetected hit
    or blend left. The PSF's real variation over the field is part of that spread. Returns
    the new flags; with fewer than 10 clean stars nothing is flagged."""
    flag = np.asarray(flag).astype(np.int32).copy()
    clean = flag == 0
    if clean.sum() < 10:
        return flag
    bad = np.zeros(flag.size, dtype=bool)
    for values in (r2, e1, e2):
        v = np.asarray(values, dtype=float)
        med = float(np.median(v[clean]))
        sigma = mad_sigma(v[clean])
        if sigma > 0:
            bad |= clean & (np.abs(v - med) > nsigma * sigma)
    flag[bad] |= MomentFlag.OUTLIER
    return flag
