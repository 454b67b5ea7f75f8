"""Particle hits in one quadrant: cosmic rays, solar X-ray events and energetic protons.

Two methods (VISQL-SPEC 5.4, 6.4):

* VISQL's catalogue classes, for continuity: compact catalogue sources (FLUX_RADIUS < 0.9 px)
  split by FLUX_AUTO into X-ray events (400-1200 ADU), all cosmics (< 3000 ADU) and high-energy
  protons (1e4-4e4 ADU). `catalogue_classes` gives the masks, `top10count` VISQL's map statistic.
* A pixel-level detector (`detect_hits`) made for VIS's undersampled PSF (FWHM ~1.6 px): a star's
  core can be as sharp as a hit, so sharpness alone is not enough. A pixel is a hit seed when it
  is significant and, along at least one of the four directions through it, brighter than any
  PSF allows given its two neighbours: the PSF puts at least `psf_neighbour_ratio` of the peak
  into the neighbour pair of every direction, wherever the star falls on the pixel grid, while a
  particle's charge is confined to a track a fraction of a pixel wide. Near catalogued objects
  (stars, galaxies) the test also has to beat the noise of the neighbours, so stars are never
  counted; hot pixels (from darks) and saturated areas are masked. Seeds grow into neighbours
  above a lower threshold and connected components are the hits, each with its pixel count,
  charge, peak, centroid and track length (from the second moments along the track).

Positions are 0-based (column, row) in the image passed in. Everything is numpy/scipy on one
quadrant at a time, no BLAS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import sep
from scipy import ndimage

#: VISQL's catalogue classes (plotX.py): compact sources and their FLUX_AUTO windows (ADU).
COMPACT_RADIUS_PX = 0.9
XRAY_ADU = (400.0, 1200.0)
COSMIC_MAX_ADU = 3000.0
PROTON_ADU = (1.0e4, 4.0e4)

#: Pixel size (cm) and VIS readout (s): particles hit during the exposure and half the readout.
PIXEL_CM = 12e-4
READOUT_S = 72.0

HIT_COLUMNS = ("x", "y", "npix", "charge_adu", "peak_adu", "length_px", "kind")
KINDS = ("cosmic", "xray", "proton")


@dataclass(frozen=True)
class HitParams:
    """Settings of the pixel-level hit detector (defaults tuned on simulated VIS frames)."""

    seed_sigma: float = 5.0  # a seed pixel is this many background sigma above the sky
    grow_sigma: float = 2.5  # seeds grow into neighbours above this
    grow_steps: int = 2  # pixels a hit may grow from its seeds
    #: A PSF puts at least this fraction of a pixel's value into its two neighbours along any
    #: direction (single) and, for a pixel pair, into the two pixels flanking it (pair).
    #: Defaults: half the minimum over sub-pixel positions of the simulated VIS PSF (Moffat
    #: beta 2.5, R2 1.95 px2: 0.47 and 0.11); a Gaussian of FWHM 1.6 px gives 0.29 and 0.023.
    psf_single_ratio: float = 0.24
    psf_pair_ratio: float = 0.055
    star_sharp_sigma: float = 5.0  # near a catalogued object the excess must beat this many sigma
    object_radius_px: float = 3.0  # + 2 x FLUX_RADIUS: the area around an object that is guarded
    saturation_margin_px: int = 3  # pixels around saturated ones are masked
    background_mesh_px: int = 64  # sky mesh (sep)
    # classification of hits (pixel-level)
    xray_max_length_px: float = 2.0  # X-ray events are points (a point split over two pixels: 1.7)
    proton_max_length_px: float = 6.0  # protons: short, very bright tracks
    confusion_px: int = 3  # grown hits merge when their cores are within grow_steps + 1 px
    long_track_px: tuple[float, float] = (3.0, 30.0)  # cosmic tracks used as the X-ray baseline
    #: point-like hits in the X-ray window per cosmic track of long_track_px length in quiet
    #: times (near-vertical cosmic rays look like X-ray events): 0.4586 on two quiet simulated
    #: frames (8890 / 19385); recalibrate on real quiet data with `xray_baseline_ratio`.
    xray_cosmic_ratio: float = 0.4586

    def as_dict(self) -> dict:
        return asdict(self)


def _sharpness(
    sig: np.ndarray,
    var_bg: np.ndarray,
    idx: np.ndarray,
    width: int,
    gain: float,
    single_ratio: float,
    pair_ratio: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Is each pixel `idx` of the padded image (pad 2) sharper than any PSF allows?

    Along each of the four directions through the pixel p with neighbours n1, n2 and, beyond
    the brighter neighbour, o: a single-pixel excess p - (n1 + n2) / single_ratio, and a
    two-pixel excess (p + max(n1, n2)) - (o + min(n1, n2)) / pair_ratio for a track that
    straddles two pixel rows. Returns (any excess > 0, largest excess / its noise sigma),
    the noise from the sky variance `var_bg` plus the pixels' own Poisson noise.
    """
    p = sig[idx]
    var_p = var_bg + np.maximum(p, 0.0) / gain
    sharp = np.zeros(idx.size, dtype=bool)
    z = np.full(idx.size, -np.inf, dtype=np.float32)
    for off in (1, width, width + 1, width - 1):
        n_plus, n_minus = sig[idx + off], sig[idx - off]
        excess = p - (n_plus + n_minus) / single_ratio
        var_n = 2.0 * var_bg + (np.maximum(n_plus, 0.0) + np.maximum(n_minus, 0.0)) / gain
        sharp |= excess > 0.0
        z = np.maximum(z, excess / np.sqrt(var_p + var_n / single_ratio**2))
        plus = n_plus >= n_minus
        partner = np.where(plus, n_plus, n_minus)
        other = np.where(plus, n_minus, n_plus)
        beyond = np.where(plus, sig[idx + 2 * off], sig[idx - 2 * off])
        excess2 = (p + partner) - (beyond + other) / pair_ratio
        var_s = var_p + var_bg + np.maximum(partner, 0.0) / gain
        var_o = 2.0 * var_bg + (np.maximum(beyond, 0.0) + np.maximum(other, 0.0)) / gain
        sharp |= excess2 > 0.0
        z = np.maximum(z, excess2 / np.sqrt(var_s + var_o / pair_ratio**2))
    return sharp, z


def detect_hits(
    image: np.ndarray,
    *,
    gain_e_per_adu: float,
    saturation_adu: float | None = None,
    objects: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    hot_pixels: np.ndarray | None = None,
    params: HitParams | None = None,
    return_labels: bool = False,
) -> dict[str, np.ndarray]:
    """Particle hits of a bias-subtracted image area (ADU).

    objects: (x, y, radius) of catalogued non-compact sources, 0-based; hits there must beat
    the noise of the PSF test. hot_pixels: flat indices of known hot pixels (never seeds).
    Returns per-hit columns (HIT_COLUMNS) and `masked_pixels`, `hit_pixels`, `image_pixels`;
    with return_labels, the label image (0 = no hit) and the mask of unmeasured pixels too.
    """
    p = params or HitParams()
    img = np.ascontiguousarray(image, dtype=np.float32)
    height, width = img.shape
    bkg = sep.Background(img, bw=p.background_mesh_px, bh=p.background_mesh_px, fw=3, fh=3)
    sky = bkg.back()
    rms = bkg.rms()
    sig = img - sky
    del sky
    # padded by two pixels (edge values) so every pixel has its neighbours
    pw = width + 4
    cand_rc = np.flatnonzero(sig > np.float32(p.seed_sigma) * rms)
    rows, cols = np.divmod(cand_rc, width)
    pidx = (rows + 2) * pw + (cols + 2)
    padf = np.pad(sig, 2, mode="edge").ravel()
    var_bg = rms.ravel()[cand_rc] ** 2
    sharp, z = _sharpness(
        padf,
        var_bg,
        pidx,
        pw,
        np.float32(gain_e_per_adu),
        np.float32(p.psf_single_ratio),
        np.float32(p.psf_pair_ratio),
    )
    del padf
    seed = sharp
    # near catalogued objects (stars, galaxies): the excess must also beat the noise
    if objects is not None and len(objects[0]):
        guard = _disks(objects, height, width)
        near = guard.ravel()[cand_rc]
        seed &= ~near | (z > np.float32(p.star_sharp_sigma))
    # masks: hot pixels never seed; saturated areas are not measured
    masked = np.zeros((height, width), dtype=bool)
    if saturation_adu is not None and np.isfinite(saturation_adu):
        sat = img >= np.float32(saturation_adu)
        if sat.any():
            masked = ndimage.binary_dilation(sat, iterations=max(p.saturation_margin_px, 1))
    seeds = cand_rc[seed]
    if hot_pixels is not None and len(hot_pixels):
        seeds = seeds[~np.isin(seeds, np.asarray(hot_pixels, dtype=np.int64))]
    seeds = seeds[~masked.ravel()[seeds]]
    hit_mask = np.zeros(height * width, dtype=bool)
    hit_mask[seeds] = True
    hit_mask = hit_mask.reshape(height, width)
    if p.grow_steps > 0 and seeds.size:
        low = (sig > np.float32(p.grow_sigma) * rms) & ~masked
        # grow only inside a box around the seeds (cheap on sparse hits)
        hit_mask = ndimage.binary_dilation(
            hit_mask, structure=np.ones((3, 3), bool), iterations=p.grow_steps, mask=low
        )
    labels, n = ndimage.label(hit_mask, structure=np.ones((3, 3), dtype=int))
    out = hit_table(labels, n, sig)
    out["masked_pixels"] = np.int64(masked.sum())
    out["hit_pixels"] = np.int64(hit_mask.sum())
    out["image_pixels"] = np.int64(height * width)
    out["kind"] = classify_hits(out["charge_adu"], out["length_px"], p)
    # confusion: the measured area within confusion_px of a hit that is not X-ray-like, where a
    # new X-ray event would merge with that hit and be lost
    others = np.zeros(n + 1, dtype=bool)
    others[1:] = out["kind"] != "xray"
    near_others = ndimage.binary_dilation(
        others[labels], structure=np.ones((3, 3), bool), iterations=p.confusion_px
    )
    measured = labels.size - int(masked.sum())
    out["confusion_fraction"] = float((near_others & ~masked).sum() / measured) if measured else 0.0
    if return_labels:
        out["labels"] = labels
        out["masked"] = masked
    return out


def _disks(objects: tuple[np.ndarray, np.ndarray, np.ndarray], height: int, width: int):
    """Boolean image of the disks (x, y, radius) around catalogued objects."""
    guard = np.zeros((height, width), dtype=bool)
    ox, oy, orad = (np.asarray(a, dtype=float) for a in objects)
    r = np.ceil(orad).astype(int)
    for rr in np.unique(r):
        sel = r == rr
        yy, xx = np.mgrid[-rr : rr + 1, -rr : rr + 1]
        disk = (xx**2 + yy**2) <= rr**2
        gy = (np.rint(oy[sel])[:, None] + yy[disk][None, :]).astype(int).ravel()
        gx = (np.rint(ox[sel])[:, None] + xx[disk][None, :]).astype(int).ravel()
        ok = (gx >= 0) & (gx < width) & (gy >= 0) & (gy < height)
        guard[gy[ok], gx[ok]] = True
    return guard


def hit_table(labels: np.ndarray, n: int, sig: np.ndarray) -> dict[str, np.ndarray]:
    """Per connected component: charge-weighted centroid, pixel count, charge, peak, length."""
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx] - 1
    v = sig.ravel()[idx].astype(np.float64)
    y, x = np.divmod(idx, labels.shape[1])
    w = np.maximum(v, 0.0)
    npix = np.bincount(lab, minlength=n)
    charge = np.bincount(lab, weights=v, minlength=n)
    sw = np.bincount(lab, weights=w, minlength=n)
    sw = np.where(sw > 0, sw, 1.0)
    mx = np.bincount(lab, weights=w * x, minlength=n) / sw
    my = np.bincount(lab, weights=w * y, minlength=n) / sw
    dx, dy = x - mx[lab], y - my[lab]
    sxx = np.bincount(lab, weights=w * dx * dx, minlength=n) / sw
    syy = np.bincount(lab, weights=w * dy * dy, minlength=n) / sw
    sxy = np.bincount(lab, weights=w * dx * dy, minlength=n) / sw
    half_diff = np.sqrt(0.25 * (sxx - syy) ** 2 + sxy**2)
    # a uniform track of length L: variance along it L^2/12 (+ width^2, removed by lambda2);
    # one-pixel-wide sampling adds 1/12 to both axes, so it cancels as well
    length = np.sqrt(12.0 * 2.0 * half_diff)
    peak = np.full(n, -np.inf)
    np.maximum.at(peak, lab, v)
    return {
        "x": mx,
        "y": my,
        "npix": npix.astype(np.int64),
        "charge_adu": charge,
        "peak_adu": peak,
        "length_px": length,
    }


def classify_hits(
    charge_adu: np.ndarray, length_px: np.ndarray, params: HitParams | None = None
) -> np.ndarray:
    """'xray' (point-like, 400-1200 ADU), 'proton' (short, 1e4-4e4 ADU) or 'cosmic' per hit.

    The X-ray class also holds the near-vertical cosmic rays of that charge: see
    `xray_excess` for the X-ray count corrected for them.
    """
    p = params or HitParams()
    q = np.asarray(charge_adu, dtype=float)
    length = np.asarray(length_px, dtype=float)
    kind = np.full(q.size, "cosmic", dtype=object)
    kind[(q > XRAY_ADU[0]) & (q < XRAY_ADU[1]) & (length <= p.xray_max_length_px)] = "xray"
    kind[(q > PROTON_ADU[0]) & (q < PROTON_ADU[1]) & (length <= p.proton_max_length_px)] = "proton"
    return kind.astype(str)


def long_tracks(length_px: np.ndarray, params: HitParams | None = None) -> np.ndarray:
    """Cosmic-ray tracks long enough that no X-ray event or proton looks like them."""
    p = params or HitParams()
    length = np.asarray(length_px, dtype=float)
    return (length >= p.long_track_px[0]) & (length <= p.long_track_px[1])


def xray_excess(
    n_xray_class: float, n_long_tracks: float, ratio: float, confusion_fraction: float = 0.0
) -> float:
    """X-ray events above the cosmic rays that look like them: compact hits in the X-ray
    window minus `ratio` per long cosmic track (isotropic cosmic rays give a fixed ratio of
    near-vertical to inclined tracks; the ratio is measured on quiet exposures), divided by
    the fraction of the area where an X-ray event does not merge with another hit."""
    excess = float(n_xray_class) - float(ratio) * float(n_long_tracks)
    return excess / max(1.0 - float(confusion_fraction), 0.5)


def xray_baseline_ratio(n_xray_class: np.ndarray, n_long_tracks: np.ndarray) -> float:
    """The X-ray-window hits per long cosmic track over quiet exposures (sum over sum)."""
    total_long = float(np.sum(n_long_tracks))
    return float(np.sum(n_xray_class)) / total_long if total_long > 0 else 0.0


def particle_exposure_s(exptime_s: float, readout_s: float = READOUT_S) -> float:
    """Time during which particles are recorded: the exposure plus half the readout."""
    return float(exptime_s) + 0.5 * float(readout_s)


def rate_per_cm2_s(count: float, n_pixels: float, exptime_s: float) -> float:
    """Events per cm2 per second over n_pixels of 12 um during exposure + half the readout."""
    area = float(n_pixels) * PIXEL_CM**2
    t = particle_exposure_s(exptime_s)
    return float(count) / (area * t) if area > 0 and t > 0 else float("nan")


def catalogue_classes(flux: np.ndarray, flux_radius: np.ndarray) -> dict[str, np.ndarray]:
    """VISQL's masks of compact catalogue sources (FLUX_RADIUS < 0.9 px): 'xray' (400 <
    FLUX_AUTO < 1200 ADU), 'cosmics' (< 3000 ADU, X-rays included), 'protons' (1e4-4e4 ADU).
    NaN is in no class."""
    f = np.asarray(flux, dtype=float)
    r = np.asarray(flux_radius, dtype=float)
    if f.shape != r.shape:
        raise ValueError(f"flux ({f.size}) and flux_radius ({r.size}) differ in length")
    with np.errstate(invalid="ignore"):
        compact = r < COMPACT_RADIUS_PX
        return {
            "xray": compact & (f > XRAY_ADU[0]) & (f < XRAY_ADU[1]),
            "cosmics": compact & (f < COSMIC_MAX_ADU),
            "protons": compact & (f > PROTON_ADU[0]) & (f < PROTON_ADU[1]),
        }


def top10count(x_world: np.ndarray, y_world: np.ndarray, nbins: int = 115) -> float:
    """VISQL's statistic of an event map: the 10th highest bin minus the median bin, over
    nbins x nbins bins of [-0.4, 0.4] deg squared in the instrument frame (empty bins
    included, as in VISQL); NaN positions are dropped."""
    x = np.asarray(x_world, dtype=float)
    y = np.asarray(y_world, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    counts, _, _ = np.histogram2d(x[ok], y[ok], bins=int(nbins), range=[[-0.4, 0.4], [-0.4, 0.4]])
    return top10_of_counts(counts)


def top10_of_counts(counts: np.ndarray) -> float:
    """`top10count` of an already binned map: 10th highest bin minus the median bin."""
    flat = np.sort(np.asarray(counts, dtype=float).ravel())
    tenth = flat[-10] if flat.size >= 10 else flat[0]
    return float(tenth - np.median(flat))


def hot_pixel_indices(dark_images: list[np.ndarray], nsigma: float = 6.0) -> np.ndarray:
    """Flat indices of hot pixels from dark images (at least two): above sky + nsigma in the
    k = max(2, N/2 rounded up) darks where they are faintest, with those k levels within a
    factor two. Hot pixels come back with the same charge; a cosmic ray on a hot pixel in
    fewer than N - k + 1 darks does not hide it, and cosmic rays hitting the same pixel of k
    darks with similar charge are rare (~0.03 % of pixels with two darks, measured)."""
    n = len(dark_images)
    if n < 2:
        return np.zeros(0, dtype=np.int64)
    z = []
    for image in dark_images:
        img = np.ascontiguousarray(image, dtype=np.float32)
        bkg = sep.Background(img, bw=64, bh=64, fw=3, fh=3)
        z.append(((img - bkg.back()) / bkg.rms()).ravel())
    stack = np.stack(z)
    del z
    k = max(2, -(-n // 2))
    lowest = np.partition(stack, k - 1, axis=0)[:k] if k < n else stack
    low, high = lowest.min(axis=0), lowest.max(axis=0)
    hot = (low > nsigma) & (low >= 0.5 * high)
    return np.flatnonzero(hot).astype(np.int64)
