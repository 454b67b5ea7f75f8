"""Compiled (numba) loops of `measure.sky`: SExtractor's mesh statistics, the median filter of
the meshes, and the natural bicubic spline evaluated row by row (`sky_row`), which other
kernels (`measure.hit_kernels`) call while they read the pixels. Compiled on first use and
cached on disk; imported lazily, so the CLI does not load numba."""

from __future__ import annotations

import numpy as np
from numba import njit

NSIGMA_HISTOGRAM = 5.0  # the histogram spans the clipped mean +- this many sigma
MAX_LEVELS = 4096  # at most this many histogram bins
MIN_PER_LEVEL = 4.0  # ~this many pixels per bin near the mode
#: SExtractor's (and sep's) rounding of a pixel to its histogram bin, int(v / q + 0.499999 -
#: q0 / q): kept as it is, so that the meshes equal sep's, not a value fitted to any data
BIN_ROUNDING = 0.499999


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def mesh_statistics(img: np.ndarray, mesh: int):
    height, width = img.shape
    ny = (height - 1) // mesh + 1
    nx = (width - 1) // mesh + 1
    back = np.empty((ny, nx), dtype=np.float32)
    rms = np.empty((ny, nx), dtype=np.float32)
    hist = np.zeros(MAX_LEVELS, dtype=np.int64)
    step = np.sqrt(2.0 / np.pi) * NSIGMA_HISTOGRAM / MIN_PER_LEVEL
    for j in range(ny):
        r0, r1 = j * mesh, min((j + 1) * mesh, height)
        for i in range(nx):
            c0, c1 = i * mesh, min((i + 1) * mesh, width)
            # mean and sigma, then again within +-2 sigma
            s = 0.0
            s2 = 0.0
            n = 0
            for r in range(r0, r1):
                for c in range(c0, c1):
                    v = np.float64(img[r, c])
                    s += v
                    s2 += v * v
            n = (r1 - r0) * (c1 - c0)
            mean = s / n
            var = s2 / n - mean * mean
            sigma = np.sqrt(var) if var > 0.0 else 0.0
            lcut = np.float32(mean - 2.0 * sigma)
            hcut = np.float32(mean + 2.0 * sigma)
            s = 0.0
            s2 = 0.0
            n = 0
            for r in range(r0, r1):
                for c in range(c0, c1):
                    v = img[r, c]
                    inside = v >= lcut and v <= hcut
                    w = np.float64(v) if inside else 0.0
                    s += w
                    s2 += w * w
                    n += inside
            if n == 0:  # a NaN among the pixels (no pixel within NaN cuts): filled later
                back[j, i] = np.float32(mean)
                rms[j, i] = np.float32(0.0) if mean == mean else np.float32(np.nan)
                continue
            mean = s / n
            var = s2 / n - mean * mean
            sigma = np.sqrt(var) if var > 0.0 else 0.0
            nlevels = min(int(step * n + 1), MAX_LEVELS)
            qscale = np.float32(2.0 * NSIGMA_HISTOGRAM * sigma / nlevels if sigma > 0 else 1.0)
            qzero = np.float32(mean - NSIGMA_HISTOGRAM * sigma)
            offset = np.float32(BIN_ROUNDING) - qzero / qscale
            hist[:nlevels] = 0
            for r in range(r0, r1):
                for c in range(c0, c1):
                    b = int(img[r, c] / qscale + offset)
                    if b >= 0 and b < nlevels:
                        hist[b] += 1
            mode, sig_bins = histogram_mode(hist, nlevels, (mean - qzero) / qscale)
            back[j, i] = np.float32(qzero + mode * qscale)
            rms[j, i] = np.float32(sig_bins * qscale)
    return back, rms


@njit(cache=True, nogil=True)
def histogram_mode(hist: np.ndarray, nlevels: int, start: float):
    """Mode and sigma (in bins) of a mesh's histogram: +-3 sigma clipping about the median
    until sigma settles (at most 100 times), then 2.5 median - 1.5 mean, or the median where
    the two differ by 0.3 sigma or more.

    SExtractor finds the median by walking in from both ends, always on the lighter side;
    bin k then falls to the lower side exactly when the counts below it are fewer than those
    above it, so with cumulative sums each clipping step costs a binary search, not a pass
    over the bins."""
    cum = np.zeros(nlevels + 1, dtype=np.float64)
    cum1 = np.zeros(nlevels + 1, dtype=np.float64)
    cum2 = np.zeros(nlevels + 1, dtype=np.float64)
    for k in range(nlevels):
        h = np.float64(hist[k])
        cum[k + 1] = cum[k] + h
        cum1[k + 1] = cum1[k] + h * k
        cum2[k + 1] = cum2[k] + h * k * k
    lo, hi = 0, nlevels - 1
    sig = 10.0 * (nlevels - 1)
    sig_before = 1.0
    mea = start
    med = start
    for _ in range(100):
        if not (sig >= 0.1 and abs(sig / sig_before - 1.0) > 1e-4):
            break
        sig_before = sig
        total = cum[hi + 1] - cum[lo]
        mea = cum1[hi + 1] - cum1[lo]
        sig = cum2[hi + 1] - cum2[lo]
        # the first bin k of lo..hi whose count below (from lo) is not below its count
        # above (to hi): the walk's meeting point
        left, right = lo, hi + 1
        while left < right:
            mid = (left + right) // 2
            if cum[mid] - cum[lo] >= cum[hi + 1] - cum[mid + 1]:
                right = mid
            else:
                left = mid + 1
        m = left
        low_sum = cum[m] - cum[lo]
        high_sum = cum[hi + 1] - cum[m]
        b = m - 1
        if b >= 0:
            h_a = hist[m] if m < nlevels else 0
            denom = 2.0 * max(h_a, hist[b])
            med = b + 0.5 + ((high_sum - low_sum) / denom if denom > 0 else 0.0)
        else:
            med = 0.0
        if total > 0:
            mea /= total
            sig = sig / total - mea * mea
        sig = np.sqrt(sig) if sig > 0.0 else 0.0
        t = med - 3.0 * sig
        lo = int(t + 0.5) if t > 0.0 else 0
        t = med + 3.0 * sig
        hi = (int(t + 0.5) if t > 0.0 else int(t - 0.5)) if t < nlevels - 1 else nlevels - 1
        if hi < lo:
            hi = lo
    if sig > 0.0 and abs((mea - med) / sig) < 0.3:
        return 2.5 * med - 1.5 * mea, sig
    if sig > 0.0:
        return med, sig
    return mea, sig


@njit(cache=True, nogil=True)
def median_filter(back: np.ndarray, rms: np.ndarray, half: int):
    """Each mesh replaced by the median of the meshes within +-half (a window shrunk
    symmetrically at the edges, as SExtractor's)."""
    ny, nx = back.shape
    out_b = np.empty_like(back)
    out_r = np.empty_like(rms)
    for j in range(ny):
        hy = min(half, j, ny - 1 - j)
        for i in range(nx):
            hx = min(half, i, nx - 1 - i)
            out_b[j, i] = np.median(back[j - hy : j + hy + 1, i - hx : i + hx + 1])
            out_r[j, i] = np.median(rms[j - hy : j + hy + 1, i - hx : i + hx + 1])
    return out_b, out_r


@njit(cache=True, nogil=True)
def natural_d2(values: np.ndarray, out: np.ndarray) -> None:
    """Second derivatives of the natural cubic spline through equally spaced `values`."""
    n = values.size
    out[0] = 0.0
    if n < 3:
        out[:] = 0.0
        return
    u = np.zeros(n - 1, dtype=np.float32)
    for k in range(1, n - 1):
        t = np.float32(-1.0) / (out[k - 1] + np.float32(4.0))
        out[k] = t
        u[k] = t * (u[k - 1] - np.float32(6.0) * (values[k + 1] + values[k - 1] - 2 * values[k]))
    out[n - 1] = 0.0
    for k in range(n - 2, 0, -1):
        out[k] = (out[k] * out[k + 1] + u[k]) / np.float32(6.0)


@njit(cache=True, nogil=True)
def sky_row(
    y: int,
    mesh: np.ndarray,
    d2: np.ndarray,
    mesh_px: int,
    node: np.ndarray,
    dnode: np.ndarray,
    out: np.ndarray,
) -> None:
    """The spline through `mesh` at image row `y`, into `out` (one value per column):
    interpolated along y at every mesh column, then along x between mesh centres."""
    ny, nx = mesh.shape
    width = out.size
    if ny > 1:
        dy = np.float32(y) / mesh_px - np.float32(0.5)
        yl = int(dy)
        dy -= yl
        if yl < 0:
            yl = 0
            dy -= 1.0
        elif yl >= ny - 1:
            yl = ny - 2
            dy += 1.0
        cdy = 1.0 - dy
        dy3 = dy * dy * dy - dy
        cdy3 = cdy * cdy * cdy - cdy
        for i in range(nx):
            node[i] = (
                cdy * mesh[yl, i] + dy * mesh[yl + 1, i] + cdy3 * d2[yl, i] + dy3 * d2[yl + 1, i]
            )
        natural_d2(node, dnode)
    else:
        for i in range(nx):
            node[i] = mesh[0, i]
            dnode[i] = d2[0, i]
    if nx == 1:
        for x in range(width):
            out[x] = node[0]
        return
    # pixel x lies between mesh centres lo and lo + 1 at fraction dx: pos = (x + 0.5) / mesh
    # - 0.5 in mesh units; the first and last pairs of centres also extrapolate to the edges
    step = np.float32(1.0 / mesh_px)
    start = 0
    for lo in range(nx - 1):
        end = width if lo == nx - 2 else min((lo + 1) * mesh_px + mesh_px // 2, width)
        b0, b1 = node[lo], node[lo + 1]
        d0, d1 = dnode[lo], dnode[lo + 1]
        first = np.float32((start + 0.5) / mesh_px - 0.5 - lo)
        for k in range(end - start):
            dx = first + np.float32(k) * step
            cdx = np.float32(1.0) - dx
            out[start + k] = cdx * (b0 + (cdx * cdx - np.float32(1.0)) * d0) + dx * (
                b1 + (dx * dx - np.float32(1.0)) * d1
            )
        start = end


@njit(cache=True, nogil=True)
def evaluate(mesh, d2, mesh_px, height, width):
    out = np.empty((height, width), dtype=np.float32)
    node = np.empty(mesh.shape[1], dtype=np.float32)
    dnode = np.empty(mesh.shape[1], dtype=np.float32)
    for y in range(height):
        sky_row(y, mesh, d2, mesh_px, node, dnode, out[y])
    return out


@njit(cache=True, nogil=True)
def subtract_rows(data, mesh, d2, mesh_px):
    """`data` -= the spline through `mesh`, in place, row by row (no sky map)."""
    height, width = data.shape
    line = np.empty(width, dtype=np.float32)
    node = np.empty(mesh.shape[1], dtype=np.float32)
    dnode = np.empty(mesh.shape[1], dtype=np.float32)
    for y in range(height):
        sky_row(y, mesh, d2, mesh_px, node, dnode, line)
        for x in range(width):
            data[y, x] -= line[x]


@njit(cache=True, nogil=True)
def values_at(mesh, d2, mesh_px, rows, cols, width):
    """The spline through `mesh` at pixels (rows, cols) of an image `width` wide (one row
    evaluated per point, again only where the row changes)."""
    out = np.empty(rows.size, dtype=np.float32)
    line = np.empty(width, dtype=np.float32)
    node = np.empty(mesh.shape[1], dtype=np.float32)
    dnode = np.empty(mesh.shape[1], dtype=np.float32)
    last = -1
    for k in range(rows.size):
        if rows[k] != last:
            sky_row(rows[k], mesh, d2, mesh_px, node, dnode, line)
            last = rows[k]
        out[k] = line[cols[k]]
    return out


def warm_up() -> None:
    """Load one kernel from numba's on-disk cache: it starts numba's compiler target (~0.4 s
    in a new process), which processes forked afterwards inherit (`pipeline.preload`)."""
    column = np.zeros(4, dtype=np.float32)
    natural_d2(column, np.empty_like(column))
