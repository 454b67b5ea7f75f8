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
    Returns (sig, low, candidate flat indices, sharp, z)."""
    height, width = image.shape
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
    sharp = np.zeros(n_cand, dtype=np.bool_)
    z = np.empty(n_cand, dtype=np.float32)
    dirs = ((0, 1), (1, 0), (1, 1), (1, -1))
    k = 0
    for r in range(height):
        for c in range(width):
            if not sig[r, c] > seed_sigma * rms[r, c]:
                continue
            p = sig[r, c]
            var_bg = rms[r, c] * rms[r, c]
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
            cand[k] = r * width + c
            sharp[k] = is_sharp
            z[k] = best
            k += 1
    return sig, low, cand, sharp, z


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
    labels: np.ndarray, flagged: np.ndarray, light: np.ndarray, sizes: np.ndarray, min_px: int
) -> np.ndarray:
    """Pixels of a flagged hit (`flagged[labels]`) or of a component of `light` with at
    least `min_px` pixels (`sizes` from `label8_sizes`), in one pass: the two gathers and
    the union that numpy makes as three full-image arrays."""
    height, width = labels.shape
    out = np.empty((height, width), dtype=np.bool_)
    for r in range(height):
        for c in range(width):
            k = light[r, c]
            out[r, c] = flagged[labels[r, c]] or (k > 0 and sizes[k] >= min_px)
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
