"""Compiled (numba) pixel loops of the hit detector: one pass instead of many full-image arrays.

`measure.cosmics.detect_hits` spent most of its time making full-quadrant temporaries (the
padded image, masks, three binary dilations, two labellings) for what touches ~2 % of the
pixels. These loops do the same on the pixels that matter, with the same results as
scipy.ndimage (8-connected labels in raster order of their first pixel, iterated dilations as
distance boxes), which the tests use as their oracle. Compiled on first use and cached on disk
(`cache=True`); imported lazily, so the CLI does not load numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from viskom.measure.sky_kernels import sky_row


@njit(cache=True, nogil=True)
def significance_and_seeds(
    image: np.ndarray,
    sky: np.ndarray,
    rms: np.ndarray,
    seed_sigma: float,
    grow_sigma: float,
    gain: float,
    single_ratio: float,
    pair_ratio: float,
):
    """Sky-subtracted image, the pixels above `grow_sigma` (the growth mask) and the seed
    candidates: pixels above `seed_sigma` with, along one of the four directions through them,
    more charge than any PSF allows (`cosmics._sharpness`, edges padded by their own values).
    `sky` and `rms` are maps of the image's shape. Returns (sig, low, candidate flat
    indices, sharp, z)."""
    height, width = image.shape
    # the outputs are made here, so the compiler knows they alias nothing: vectorised loops
    sig = np.empty((height, width), dtype=np.float32)
    low = np.zeros((height, width), dtype=np.bool_)
    for r in range(height):
        for c in range(width):
            s = image[r, c] - sky[r, c]
            sig[r, c] = s
            low[r, c] = s > grow_sigma * rms[r, c]
    n_cand = 0
    for r in range(height):
        for c in range(width):
            if sig[r, c] > seed_sigma * rms[r, c]:
                n_cand += 1
    cand = np.empty(n_cand, dtype=np.int64)
    cand_rms = np.empty(n_cand, dtype=np.float32)
    k = 0
    for r in range(height):
        for c in range(width):
            if sig[r, c] > seed_sigma * rms[r, c]:
                cand[k] = r * width + c
                cand_rms[k] = rms[r, c]
                k += 1
    sharp, z = _seed_tests(sig, cand, cand_rms, gain, single_ratio, pair_ratio)
    return sig, low, cand, sharp, z


@njit(cache=True, nogil=True)
def significance_and_seeds_on_mesh(
    image: np.ndarray,
    back: np.ndarray,
    d_back: np.ndarray,
    rms: np.ndarray,
    d_rms: np.ndarray,
    mesh_px: int,
    seed_sigma: float,
    grow_sigma: float,
    gain: float,
    single_ratio: float,
    pair_ratio: float,
):
    """`significance_and_seeds` with the sky and its noise given as SExtractor's meshes and
    their spline tables (`measure.sky.spline_tables`), evaluated row by row: no full-size
    sky or noise map is made."""
    height, width = image.shape
    sig = np.empty((height, width), dtype=np.float32)
    low = np.zeros((height, width), dtype=np.bool_)
    sky_line = np.empty(width, dtype=np.float32)
    rms_line = np.empty(width, dtype=np.float32)
    node = np.empty(back.shape[1], dtype=np.float32)
    dnode = np.empty(back.shape[1], dtype=np.float32)
    cand = np.empty(max(height * width // 64, 1024), dtype=np.int64)
    cand_rms = np.empty(cand.size, dtype=np.float32)
    n = 0
    for r in range(height):
        sky_row(r, back, d_back, mesh_px, node, dnode, sky_line)
        sky_row(r, rms, d_rms, mesh_px, node, dnode, rms_line)
        for c in range(width):
            s = image[r, c] - sky_line[c]
            sig[r, c] = s
            low[r, c] = s > grow_sigma * rms_line[c]
        in_row = 0
        for c in range(width):
            in_row += sig[r, c] > seed_sigma * rms_line[c]
        if n + in_row > cand.size:  # more candidates than 1 in 64 pixels: more room
            size = max(2 * cand.size, n + in_row)
            more = np.empty(size, dtype=np.int64)
            more[:n] = cand[:n]
            cand = more
            more_rms = np.empty(size, dtype=np.float32)
            more_rms[:n] = cand_rms[:n]
            cand_rms = more_rms
        if in_row:
            for c in range(width):
                if sig[r, c] > seed_sigma * rms_line[c]:
                    cand[n] = r * width + c
                    cand_rms[n] = rms_line[c]
                    n += 1
    cand = cand[:n].copy()
    sharp, z = _seed_tests(sig, cand, cand_rms[:n], gain, single_ratio, pair_ratio)
    return sig, low, cand, sharp, z


@njit(cache=True, nogil=True)
def _seed_tests(sig, cand, cand_rms, gain, single_ratio, pair_ratio):
    """For each candidate: whether it is sharper than any PSF along one of the four
    directions (single- or two-pixel test), and its best significance of that excess."""
    height, width = sig.shape
    sharp = np.zeros(cand.size, dtype=np.bool_)
    z = np.empty(cand.size, dtype=np.float32)
    dirs = ((0, 1), (1, 0), (1, 1), (1, -1))
    for k in range(cand.size):
        r, c = divmod(cand[k], width)
        p = sig[r, c]
        var_bg = cand_rms[k] * cand_rms[k]
        var_p = var_bg + max(p, 0.0) / gain
        is_sharp = False
        best = -np.inf
        for dy, dx in dirs:
            ry1 = min(max(r + dy, 0), height - 1)
            cx1 = min(max(c + dx, 0), width - 1)
            ry2 = min(max(r - dy, 0), height - 1)
            cx2 = min(max(c - dx, 0), width - 1)
            n_plus = sig[ry1, cx1]
            n_minus = sig[ry2, cx2]
            excess = p - (n_plus + n_minus) / single_ratio
            var_n = 2.0 * var_bg + (max(n_plus, 0.0) + max(n_minus, 0.0)) / gain
            if excess > 0.0:
                is_sharp = True
            best = max(best, excess / np.sqrt(var_p + var_n / single_ratio**2))
            if n_plus >= n_minus:
                partner, other = n_plus, n_minus
                by = min(max(r + 2 * dy, 0), height - 1)
                bx = min(max(c + 2 * dx, 0), width - 1)
            else:
                partner, other = n_minus, n_plus
                by = min(max(r - 2 * dy, 0), height - 1)
                bx = min(max(c - 2 * dx, 0), width - 1)
            beyond = sig[by, bx]
            excess2 = (p + partner) - (beyond + other) / pair_ratio
            var_s = var_p + var_bg + max(partner, 0.0) / gain
            var_o = 2.0 * var_bg + (max(beyond, 0.0) + max(other, 0.0)) / gain
            if excess2 > 0.0:
                is_sharp = True
            best = max(best, excess2 / np.sqrt(var_s + var_o / pair_ratio**2))
        sharp[k] = is_sharp
        z[k] = best
    return sharp, z


@njit(cache=True, nogil=True)
def grow(seeds: np.ndarray, allowed: np.ndarray, steps: int) -> np.ndarray:
    """The seeds (flat indices) grown `steps` times into their 8 neighbours where `allowed`:
    scipy's binary_dilation(seeds, 3x3, iterations=steps, mask=allowed)."""
    height, width = allowed.shape
    out = np.zeros((height, width), dtype=np.bool_)
    front = np.empty(seeds.size, dtype=np.int64)
    n_front = 0
    for i in seeds:
        r, c = divmod(i, width)
        if not out[r, c]:
            out[r, c] = True
            front[n_front] = i
            n_front += 1
    for _ in range(steps):
        nxt = np.empty(max(9 * n_front, 1), dtype=np.int64)
        n_next = 0
        for j in range(n_front):
            r, c = divmod(front[j], width)
            for rr in range(max(r - 1, 0), min(r + 2, height)):
                for cc in range(max(c - 1, 0), min(c + 2, width)):
                    if allowed[rr, cc] and not out[rr, cc]:
                        out[rr, cc] = True
                        nxt[n_next] = rr * width + cc
                        n_next += 1
        front, n_front = nxt, n_next
        if n_front == 0:
            break
    return out


@njit(cache=True, nogil=True)
def label8(mask: np.ndarray):
    """8-connected components of `mask`, numbered 1..n in raster order of their first pixel
    (scipy.ndimage.label with a 3x3 structure). Returns (labels int32, n)."""
    labels, n, _sizes = label8_sizes(mask)
    return labels, n


@njit(cache=True, nogil=True)
def label8_sizes(mask: np.ndarray):
    """`label8`, and the number of pixels of each component (index 0: none, always 0),
    counted while labelling instead of in another pass over the image."""
    height, width = mask.shape
    labels = np.zeros((height, width), dtype=np.int32)
    stack = np.empty(1024, dtype=np.int64)
    sizes = np.zeros(1024, dtype=np.int64)
    n = 0
    for r0 in range(height):
        for c0 in range(width):
            if not mask[r0, c0] or labels[r0, c0]:
                continue
            n += 1
            if n == sizes.size:
                more = np.zeros(2 * sizes.size, dtype=np.int64)
                more[:n] = sizes[:n]
                sizes = more
            labels[r0, c0] = n
            count = 1
            stack[0] = r0 * width + c0
            top = 1
            while top:
                top -= 1
                r, c = divmod(stack[top], width)
                for rr in range(max(r - 1, 0), min(r + 2, height)):
                    for cc in range(max(c - 1, 0), min(c + 2, width)):
                        if mask[rr, cc] and not labels[rr, cc]:
                            labels[rr, cc] = n
                            count += 1
                            if top == stack.size:
                                bigger = np.empty(2 * stack.size, dtype=np.int64)
                                bigger[:top] = stack
                                stack = bigger
                            stack[top] = rr * width + cc
                            top += 1
            sizes[n] = count
    return labels, n, sizes[: n + 1].copy()


@njit(cache=True, nogil=True)
def labelled_pixels(labels: np.ndarray, total: int):
    """Flat indices (raster order) and 0-based labels of the `total` labelled pixels of
    `labels`: what np.flatnonzero and a gather give, in one pass without the count pass."""
    width = labels.shape[1]
    idx = np.empty(total, dtype=np.int64)
    lab = np.empty(total, dtype=np.int64)
    k = 0
    for r in range(labels.shape[0]):
        for c in range(width):
            v = labels[r, c]
            if v:
                idx[k] = r * width + c
                lab[k] = v - 1
                k += 1
    return idx[:k], lab[:k]


@njit(cache=True, nogil=True)
def busy_pixels(
    labels: np.ndarray, flagged: np.ndarray, light: np.ndarray, min_px: int
) -> np.ndarray:
    """Pixels of a flagged hit (`flagged[labels]`) or of an 8-connected component of `light`
    with at least `min_px` pixels: scipy's labelling of `light`, its sizes, two gathers and
    a union, in one pass that keeps no label image (each component's pixels are listed while
    it is filled, and marked if it is large enough)."""
    height, width = labels.shape
    out = np.empty((height, width), dtype=np.bool_)
    for r in range(height):
        for c in range(width):
            out[r, c] = flagged[labels[r, c]]
    seen = np.zeros((height, width), dtype=np.bool_)
    comp = np.empty(1024, dtype=np.int64)
    for r0 in range(height):
        for c0 in range(width):
            if not light[r0, c0] or seen[r0, c0]:
                continue
            seen[r0, c0] = True
            comp[0] = r0 * width + c0
            count = 1
            k = 0
            while k < count:  # the component's list is also the queue of the fill
                r, c = divmod(comp[k], width)
                k += 1
                for rr in range(max(r - 1, 0), min(r + 2, height)):
                    for cc in range(max(c - 1, 0), min(c + 2, width)):
                        if light[rr, cc] and not seen[rr, cc]:
                            seen[rr, cc] = True
                            if count == comp.size:
                                bigger = np.empty(2 * comp.size, dtype=np.int64)
                                bigger[:count] = comp
                                comp = bigger
                            comp[count] = rr * width + cc
                            count += 1
            if count >= min_px:
                for j in range(count):
                    r, c = divmod(comp[j], width)
                    out[r, c] = True
    return out


@njit(cache=True, nogil=True)
def dilate(mask: np.ndarray, radius: int, box: bool) -> np.ndarray:
    """`mask` dilated by `radius` pixels: within a (2r+1)^2 box (`box`, iterations of the 3x3
    structure) or a diamond (iterations of the cross, scipy's default structure)."""
    height, width = mask.shape
    out = np.zeros((height, width), dtype=np.bool_)
    for r in range(height):
        for c in range(width):
            if not mask[r, c]:
                continue
            for rr in range(max(r - radius, 0), min(r + radius + 1, height)):
                reach = radius if box else radius - abs(rr - r)
                for cc in range(max(c - reach, 0), min(c + reach + 1, width)):
                    out[rr, cc] = True
    return out
