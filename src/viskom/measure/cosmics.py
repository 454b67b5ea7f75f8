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
  charge, peak, centroid, second moments and track length (from the moments along the track).
  Hits are classified one by one (`classify_hits`): X-ray events are point deposits (no track:
  a major-axis variance a point can have, given the charge diffusion measured on the frame's
  own tracks) of 400-1200 ADU; near-vertical cosmic rays look the same, and their share is
  measured on quiet frames (`xray_baseline`) and removed by `xray_net`.

Positions are 0-based (column, row) in the image passed in. Everything is numpy on one
quadrant at a time; the pixel loops are compiled (`measure.hit_kernels`, numba), no BLAS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import sep

from viskom.measure.robust import MEDIAN_ERROR_FACTOR, mad_sigma

if TYPE_CHECKING:
    from viskom.measure.sky import SkyMesh

#: VISQL's catalogue classes (plotX.py): compact sources and their FLUX_AUTO windows (ADU).
COMPACT_RADIUS_PX = 0.9
XRAY_ADU = (400.0, 1200.0)
COSMIC_MAX_ADU = 3000.0
PROTON_ADU = (1.0e4, 4.0e4)

#: Pixel size (cm) and VIS readout (s): particles hit during the exposure and half the readout.
PIXEL_CM = 12e-4
READOUT_S = 72.0

HIT_COLUMNS = (
    "x", "y", "npix", "charge_adu", "peak_adu", "length_px",
    "var_major_px2", "var_minor_px2", "peak_fraction", "kind",
)  # fmt: skip
KINDS = ("cosmic", "xray", "proton")


@dataclass(frozen=True)
class HitParams:
    """Settings of the pixel-level hit detector (defaults tuned on simulated VIS frames)."""

    seed_sigma: float = 5.0  # a seed pixel is this many background sigma above the sky
    grow_sigma: float = 2.5  # seeds grow into neighbours above this
    grow_steps: int = 2  # pixels a hit may grow from its seeds
    #: A PSF puts at least this fraction of a pixel's value into its two neighbours along any
    #: direction (single) and, for a pixel pair, into the two pixels flanking it (pair). The
    #: events stage measures both on the frame's own stars (`psf_limits`); these values are
    #: used only where a frame has fewer than 5 measurable stars (darks, empty fields): half
    #: the minimum over sub-pixel positions of the VIS PSF (Moffat beta 2.5, R2 1.95 px2).
    psf_single_ratio: float = 0.24
    psf_pair_ratio: float = 0.055
    star_sharp_sigma: float = 5.0  # near a catalogued object the excess must beat this many sigma
    object_radius_px: float = 3.0  # + 2 x FLUX_RADIUS: the area around an object that is guarded
    saturation_margin_px: int = 3  # pixels around saturated ones are masked
    background_mesh_px: int = 64  # sky mesh (sep)
    # classification of hits (pixel-level)
    proton_max_length_px: float = 6.0  # protons: short, very bright tracks
    #: a point deposit's footprint reaches ~1 px from its centre and merges with another hit
    #: it touches (8-connected): its centre within 2 px of that hit's footprint. Measured on
    #: simulated flares: the share of X-ray events not merged is 1 - confusion within 0.5 %.
    confusion_px: int = 2
    object_min_px: int = 5  # an object's light: >= this many connected pixels above grow_sigma
    #: tracks used to measure the charge diffusion (minor-axis variance) on the frame itself
    diffusion_track_px: tuple[float, float] = (5.0, 30.0)
    min_diffusion_tracks: int = 20  # fewer such tracks: the nominal diffusion below is used
    nominal_diffusion_var_px2: float = 0.08  # (0.28 px)^2: VIS CCD273 charge diffusion

    def as_dict(self) -> dict:
        return asdict(self)


def detect_hits(
    image: np.ndarray,
    *,
    gain_e_per_adu: float,
    saturation_adu: float | None = None,
    objects: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    hot_pixels: np.ndarray | None = None,
    params: HitParams | None = None,
    diffusion_var_px2: float | None = None,
    return_labels: bool = False,
    sky: SkyMesh | None = None,
) -> dict[str, np.ndarray]:
    """Particle hits of a bias-subtracted image area (ADU).

    `diffusion_var_px2` sets the point-deposit limit of the X-ray class (default: measured
    on this image's own tracks, `diffusion_variance`); callers with a whole frame classify
    again with the frame's value.

    objects: (x, y, radius) of catalogued non-compact sources, 0-based; hits there must beat
    the noise of the PSF test. hot_pixels: flat indices of known hot pixels (never seeds).
    sky: the image's SExtractor background meshes (the catalogue's, `measure.sky`), used
    when they were made with `background_mesh_px` and a 3 x 3 filter, else measured here.
    Returns per-hit columns (HIT_COLUMNS) and `masked_pixels`, `hit_pixels`, `image_pixels`;
    with return_labels, the label image (0 = no hit) and the mask of unmeasured pixels too.
    """
    from viskom.measure import hit_kernels as kern  # lazily: numba, start-up time of the CLI

    p = params or HitParams()
    img = np.ascontiguousarray(image, dtype=np.float32)
    height, width = img.shape
    from viskom.measure.sky import sky_mesh, spline_tables

    # SExtractor's sky (as sep's), evaluated row by row inside the kernel: no sky maps
    mesh = sky
    if mesh is None or not mesh.fits(img.shape, p.background_mesh_px, 3):
        mesh = sky_mesh(img, p.background_mesh_px, 3)
    sig, low, cand_rc, sharp, z = kern.significance_and_seeds_on_mesh(
        img,
        *spline_tables(mesh),
        mesh.mesh_px,
        float(p.seed_sigma),
        float(p.grow_sigma),
        float(gain_e_per_adu),
        float(p.psf_single_ratio),
        float(p.psf_pair_ratio),
    )
    seed = sharp
    # near catalogued objects (stars, galaxies): the excess must also beat the noise
    if objects is not None and len(objects[0]):
        guard = _disks(objects, height, width)
        near = guard.ravel()[cand_rc]
        seed &= ~near | (z > np.float32(p.star_sharp_sigma))
    # masks: hot pixels never seed; saturated areas are not measured
    masked, n_masked = None, 0
    if saturation_adu is not None and np.isfinite(saturation_adu):
        radius = max(p.saturation_margin_px, 1)
        masked, n_masked = kern.saturated_area(img, saturation_adu, radius, low)
    seeds = cand_rc[seed]
    if hot_pixels is not None and len(hot_pixels):
        seeds = seeds[~np.isin(seeds, np.asarray(hot_pixels, dtype=np.int64))]
    if masked is not None:
        seeds = seeds[~masked.ravel()[seeds]]
    hit_mask = kern.grow(seeds, low, max(int(p.grow_steps), 0))
    labels, n, hit_sizes = kern.label8_sizes(hit_mask)
    # the hits' pixels, listed once for the table and the touch statistics
    pixels = kern.labelled_pixels(labels, int(hit_sizes.sum()))
    out = hit_table(labels, n, sig, pixels)
    out["masked_pixels"] = np.int64(n_masked)
    out["hit_pixels"] = np.int64(pixels[0].size)
    out["image_pixels"] = np.int64(height * width)
    if diffusion_var_px2 is None:
        diffusion_var_px2, _ = diffusion_variance(out["var_minor_px2"], out["length_px"], p)
    point_var_max = point_variance_limit(diffusion_var_px2)
    out["kind"] = classify_hits(
        out["charge_adu"], out["var_major_px2"], out["length_px"], point_var_max, p
    )
    # confusion: the measured area within confusion_px of a hit that is not X-ray-like, or of
    # an object's light (stars, galaxies: connected areas above grow_sigma of at least
    # object_min_px pixels), where a new X-ray event would merge with it and be lost
    others = np.zeros(n + 1, dtype=bool)
    others[1:] = out["kind"] != "xray"
    low &= ~hit_mask
    busy = kern.busy_pixels(labels, others, low, int(p.object_min_px))
    del low
    near_others = kern.dilate(busy, int(p.confusion_px), True)
    if masked is not None:
        near_others &= ~masked
    measured = labels.size - n_masked
    out["confusion_fraction"] = float(near_others.sum() / measured) if measured else 0.0
    out["touch_probability"] = touch_probability(labels, n, pixels=pixels, footprint=hit_mask)
    if return_labels:
        out["labels"] = labels
        out["masked"] = np.zeros_like(hit_mask) if masked is None else masked
    return out


def sharpness_ratios(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, background: np.ndarray | float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """How sharp each source is, in the terms of the hit detector's PSF tests: at its
    brightest pixel p (within 1 px of (x, y), 0-based), the smallest over the four directions
    of (n1 + n2) / p (single-pixel test) and of (beyond + other) / (p + partner) (two-pixel
    test). Measured on the frame's stars, these bound what its PSF can do (`psf_limits`).
    NaN within 3 px of the edge or where the peak is not positive."""
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    xs = np.atleast_1d(np.asarray(x, dtype=float))
    ys = np.atleast_1d(np.asarray(y, dtype=float))
    bg = np.broadcast_to(np.asarray(background, dtype=np.float32), xs.shape)
    single = np.full(xs.size, np.nan)
    pair = np.full(xs.size, np.nan)
    ix = np.rint(xs).astype(np.int64)
    iy = np.rint(ys).astype(np.int64)
    ok = np.isfinite(xs) & np.isfinite(ys) & (ix >= 3) & (ix < w - 3) & (iy >= 3) & (iy < h - 3)
    if not ok.any():
        return single, pair
    ix, iy, b = ix[ok], iy[ok], bg[ok]
    # the brightest pixel of the 3 x 3 around the position
    off = np.array([-1, 0, 1])
    box = img[(iy[:, None, None] + off[None, :, None]), (ix[:, None, None] + off[None, None, :])]
    k = np.argmax(box.reshape(ix.size, 9), axis=1)
    py, px = iy + k // 3 - 1, ix + k % 3 - 1
    p = img[py, px] - b
    s1 = np.full(ix.size, np.inf)
    s2 = np.full(ix.size, np.inf)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        n_plus = img[py + dy, px + dx] - b
        n_minus = img[py - dy, px - dx] - b
        s1 = np.minimum(s1, (n_plus + n_minus) / p)
        plus = n_plus >= n_minus
        partner = np.where(plus, n_plus, n_minus)
        other = np.where(plus, n_minus, n_plus)
        beyond = np.where(plus, img[py + 2 * dy, px + 2 * dx], img[py - 2 * dy, px - 2 * dx]) - b
        s2 = np.minimum(s2, (beyond + other) / (p + partner))
    good = p > 0
    single[np.flatnonzero(ok)[good]] = s1[good]
    pair[np.flatnonzero(ok)[good]] = s2[good]
    return single, pair


def psf_limits(
    single: np.ndarray, pair: np.ndarray, params: HitParams | None = None, min_stars: int = 5
) -> tuple[float, float, int]:
    """The hit detector's PSF ratios from the sharpness of the frame's own stars: half the
    1st percentile of their single- and two-pixel ratios (half the minimum with fewer than
    100 stars), so that no star of this PSF is sharper than the limit, whatever its profile
    (Moffat or Gaussian, 0.7 or 1.6 px). Returns (single, pair, stars used); with fewer than
    `min_stars` stars, the configured limits."""
    p = params or HitParams()
    s1 = np.asarray(single, dtype=float)
    s2 = np.asarray(pair, dtype=float)
    ok = np.isfinite(s1) & np.isfinite(s2) & (s1 > 0) & (s2 > 0)
    n = int(ok.sum())
    if n < min_stars:
        return float(p.psf_single_ratio), float(p.psf_pair_ratio), n
    q = 1.0 if n >= 100 else 0.0
    return 0.5 * float(np.percentile(s1[ok], q)), 0.5 * float(np.percentile(s2[ok], q)), n


def touch_probability(
    labels: np.ndarray,
    n: int,
    trials: int | None = None,
    seed: int = 0,
    *,
    pixels: tuple[np.ndarray, np.ndarray] | None = None,
    footprint: np.ndarray | None = None,
) -> float:
    """Chance that a particle's deposit touches another's (and the two count as one hit),
    measured with the image's own hits: each hit's footprint is placed at random positions
    and tested against the (8-connected) footprint of all hits. With pairs merging, the
    particles are about n_hits / (1 - p / 2) (`particles_from_hits`). Trials: enough for
    ~2000 placements (one on a full quadrant's ~9000 hits), at most 8. `pixels` (flat
    indices, 0-based labels) and `footprint` (labels > 0), when the caller has them."""
    from viskom.measure.hit_kernels import dilate, label_boxes

    if n == 0:
        return 0.0
    if trials is None:
        trials = int(min(8, max(1, np.ceil(2000 / n))))
    height, width = labels.shape
    occupied = dilate(labels > 0 if footprint is None else footprint, 1, True)
    idx, lab = _labelled(labels) if pixels is None else pixels
    y, x = np.divmod(idx, width)
    y0, x0, y1, x1 = label_boxes(idx, lab, int(n), int(width))
    span_y, span_x = y1 - y0 + 1, x1 - x0 + 1
    rng = np.random.default_rng(seed)
    touched = 0.0
    for _ in range(trials):
        sy = rng.integers(0, np.maximum(height - span_y, 1))
        sx = rng.integers(0, np.maximum(width - span_x, 1))
        ny = np.clip(y - y0[lab] + sy[lab], 0, height - 1)
        nx = np.clip(x - x0[lab] + sx[lab], 0, width - 1)
        touched += float((np.bincount(lab, weights=occupied[ny, nx], minlength=n) > 0).mean())
    return touched / trials


def particles_from_hits(n_hits: float, touch_probability: float) -> float:
    """Particles behind n_hits distinct hits when a fraction p of them touch another one:
    two touching particles make one hit, so n_hits = N (1 - p / 2). Measured on simulated
    frames: within 2 % of the injected particles for isotropic to near-vertical cosmic rays
    (up to 16 % of them merged); underestimates where long tracks merge in chains."""
    p = min(max(float(touch_probability), 0.0), 0.9)
    return float(n_hits) / (1.0 - 0.5 * p)


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


def _labelled(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the labelled pixels and their 0-based labels."""
    idx = np.flatnonzero(labels)
    return idx, labels.ravel()[idx].astype(np.int64) - 1


def hit_table(
    labels: np.ndarray,
    n: int,
    sig: np.ndarray,
    pixels: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per connected component: charge-weighted centroid, pixel count, charge, peak, length.
    `pixels`: the labelled pixels' flat indices and 0-based labels, when the caller has them."""
    idx, lab = _labelled(labels) if pixels is None else pixels
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
    from viskom.measure.hit_kernels import label_max

    peak = label_max(v, lab, int(n))
    with np.errstate(divide="ignore", invalid="ignore"):
        peak_fraction = np.where(charge > 0, peak / charge, np.nan)
    return {
        "x": mx,
        "y": my,
        "npix": npix.astype(np.int64),
        "charge_adu": charge,
        "peak_adu": peak,
        "length_px": length,
        "var_major_px2": 0.5 * (sxx + syy) + half_diff,
        "var_minor_px2": 0.5 * (sxx + syy) - half_diff,
        "peak_fraction": peak_fraction,
    }


def diffusion_variance(
    var_minor_px2: np.ndarray, length_px: np.ndarray, params: HitParams | None = None
) -> tuple[float, int]:
    """The charge-diffusion variance (px^2) measured on the frame's own cosmic-ray tracks.

    Across a straight track the charge profile is the diffusion plus the pixel sampling
    (1/12 px^2 on average over track angles), so the median minor-axis variance of tracks of
    `diffusion_track_px` length minus 1/12 is the diffusion variance. Returns it and the number
    of tracks used; with fewer than `min_diffusion_tracks`, the nominal value and that count.
    """
    p = params or HitParams()
    length = np.asarray(length_px, dtype=float)
    minor = np.asarray(var_minor_px2, dtype=float)
    lo, hi = p.diffusion_track_px
    sel = (length >= lo) & (length <= hi) & np.isfinite(minor)
    n = int(sel.sum())
    if n < p.min_diffusion_tracks:
        return float(p.nominal_diffusion_var_px2), n
    return max(float(np.median(minor[sel])) - 1.0 / 12.0, 0.0), n


def point_variance_limit(diffusion_var_px2: float) -> float:
    """Largest major-axis variance (px^2) of a point deposit: a point split between two
    pixels has at most 1/4 px^2 of pixel variance along the split, plus the diffusion."""
    return 0.25 + max(float(diffusion_var_px2), 0.0)


def classify_hits(
    charge_adu: np.ndarray,
    var_major_px2: np.ndarray,
    length_px: np.ndarray,
    point_var_max: float,
    params: HitParams | None = None,
) -> np.ndarray:
    """Hit by hit: 'xray' (a point deposit without a track, 400-1200 ADU), 'proton' (short,
    1e4-4e4 ADU) or 'cosmic'.

    A point deposit has a major-axis variance no larger than `point_var_max` (see
    `point_variance_limit`); a cosmic ray whose track is shorter than about a pixel (a
    near-vertical one) looks the same and is counted here too: `xray_net` removes that
    contamination with a baseline measured on quiet frames.
    """
    p = params or HitParams()
    q = np.asarray(charge_adu, dtype=float)
    major = np.asarray(var_major_px2, dtype=float)
    length = np.asarray(length_px, dtype=float)
    kind = np.full(q.size, "cosmic", dtype=object)
    point = major <= float(point_var_max)
    kind[(q > XRAY_ADU[0]) & (q < XRAY_ADU[1]) & point] = "xray"
    kind[(q > PROTON_ADU[0]) & (q < PROTON_ADU[1]) & (length <= p.proton_max_length_px)] = "proton"
    return kind.astype(str)


@dataclass(frozen=True)
class XrayBaseline:
    """X-ray-class hits per cosmic-ray track on quiet frames: the cosmic rays (near-vertical
    ones) that pass as X-ray events, measured, not assumed."""

    ratio: float
    ratio_err: float
    n_frames: int
    frames: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)


def xray_baseline(
    xray_candidates: np.ndarray, cr_tracks: np.ndarray, names: tuple[str, ...] = ()
) -> XrayBaseline | None:
    """The quiet-time ratio of X-ray-class hits to tracks over frames (the median of the
    per-frame ratios, robust to a flare among them; its error from the spread, or from Poisson
    counts when the frames agree better than that). None without at least one usable frame."""
    cand = np.asarray(xray_candidates, dtype=float)
    tracks = np.asarray(cr_tracks, dtype=float)
    ok = np.isfinite(cand) & np.isfinite(tracks) & (tracks > 0)
    if not ok.any():
        return None
    cand, tracks = cand[ok], tracks[ok]
    ratios = cand / tracks
    ratio = float(np.median(ratios))
    poisson = float(np.sqrt(max(cand.sum(), 1.0)) / tracks.sum())
    n = ratios.size
    spread = mad_sigma(ratios) * MEDIAN_ERROR_FACTOR / np.sqrt(n) if n > 2 else 0.0
    used = tuple(np.asarray(names, dtype=object)[ok].tolist()) if len(names) == ok.size else ()
    return XrayBaseline(ratio, max(poisson, spread), int(n), used)


def xray_net(
    n_candidates: float,
    n_tracks: float,
    baseline: XrayBaseline,
    confusion_fraction: float = 0.0,
) -> tuple[float, float, float]:
    """X-ray events net of the cosmic rays that pass as X-ray events: (events, error,
    contamination). The contamination is the baseline ratio times this frame's tracks; the
    events are never negative and are corrected for the area where a new event would merge
    with another hit. The error combines the Poisson noise of the candidates and the
    baseline's uncertainty."""
    contamination = float(baseline.ratio) * float(n_tracks)
    keep = max(1.0 - float(confusion_fraction), 0.5)
    net = max(float(n_candidates) - contamination, 0.0) / keep
    var = float(n_candidates) + (float(baseline.ratio_err) * float(n_tracks)) ** 2
    return net, float(np.sqrt(var)) / keep, contamination


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
