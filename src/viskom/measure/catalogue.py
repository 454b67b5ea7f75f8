"""Source catalogue of one quadrant with SExtractor's meanings, using sep (SExtractor as a library).

Configuration mirrors VISQL's SExtractor run (VISQL-SPEC 3.5): background mesh 64 px,
filter 3, detection at 1.5 sigma over 5 pixels with the 3x3 "all-ground" filter, 32
deblending thresholds at contrast 0.005, cleaning 1.0, AUTO photometry with Kron factor
2.5 and minimum radius 3.5, FLUX_RADIUS the half-light radius. Positions are returned
1-based like SExtractor's X_IMAGE/Y_IMAGE. Beyond SExtractor's columns, `sharp_single` and
`sharp_pair` say how sharp each source is at its brightest pixel (see
`viskom.measure.cosmics.sharpness_ratios`): the hit detector takes its PSF limits from the stars.
The exposure catalogue puts the quadrants together (`merge_catalogues`), whether from sep or
from SExtractor's own columns (`sextractor_quadrant`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sep

from viskom.le1.focalplane import unwrap_longitude
from viskom.measure.arrays import stack_tables
from viskom.measure.cosmics import sharpness_ratios

if TYPE_CHECKING:
    from viskom.measure.sky import SkyMesh

#: SExtractor FLAGS bits
FLAG_NEIGHBOURS = 1
FLAG_DEBLENDED = 2
FLAG_SATURATED = 4
FLAG_TRUNCATED = 8
FLAG_APERTURE_INCOMPLETE = 16
#: viskom's own FLAGS bit (SExtractor's stop at 128): the detection touches pixels masked as
#: particle hits (`ExtractionParams.hit_mask_fraction`): a star with a hit on it, whose
#: photometry holds the hit's charge, or what is left of a hit around its masked pixels.
#: Never set at VISQL's depth. The hit finder's PSF limits leave these out
#: (`measure.hit_counts.frame_psf_limits`): a hit beside a core looks sharper than a PSF.
#: The stellar locus search and the star selection keep them, as VISQL's catalogue, where a
#: hit merges into a star, would (leaving them out of the search cost 2-5 % of the
#: selection's completeness; the PSF stage rejects hits in a star's core itself).
#: sep leaves masked pixels out of what it measures on the detection, so PEAK (and the
#: saturation flag taken from it) is the source's own, without the hit; FLUX_AUTO, measured
#: on the unmasked pixels, holds the hit's charge.
FLAG_HIT_MASKED = 256

#: Columns of a quadrant catalogue, in order.
CATALOGUE_COLUMNS = (
    "number",
    "x_image",
    "y_image",
    "flux_auto",
    "fluxerr_auto",
    "flux_radius",
    "a_image",
    "b_image",
    "theta_image",
    "kron_radius",
    "flags",
    "peak",
    "area",
    "background",
    "sharp_single",
    "sharp_pair",
)

#: Columns of the exposure catalogue: the quadrant, the per-quadrant measurements, and the
#: instrument-frame position after the pixel position.
EXPOSURE_COLUMNS = (
    "extname",
    *CATALOGUE_COLUMNS[:3],
    "x_world",
    "y_world",
    "field_radius",
    *CATALOGUE_COLUMNS[3:],
)

#: sep's process-wide settings (the pixel stack) are set and used under this lock
_SEP_SETTINGS = threading.Lock()
#: sep's first pixel stack for a whole image: VISQL's MEMORY_PIXSTACK (visql.sex). sep
#: allocates and links every entry on each call, so a stack of a quarter of a quadrant
#: (1.07 million entries, ~30 MB of fresh pages) cost ~20-30 ms a call, as much as the scan
_FIRST_PIXSTACK = 100_000
_PIXSTACK_FULL = "internal pixel buffer full"

ALLGROUND_FILTER = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32)


@dataclass(frozen=True)
class ExtractionParams:
    """SExtractor-equivalent settings (defaults: VISQL's default.sex)."""

    detect_thresh: float = 1.5
    detect_minarea: int = 5
    back_size: int = 64
    back_filtersize: int = 3
    deblend_nthresh: int = 32
    deblend_mincont: float = 0.005
    clean: bool = True
    clean_param: float = 1.0
    kron_factor: float = 2.5
    kron_min_radius: float = 3.5
    #: the largest pixel stack: this fraction of the image, >= 300000 (used when VISQL's is full)
    pixstack_fraction: float = 0.25
    radius_subpix: int = 3  # FLUX_RADIUS sub-sampling: 0.1% median error, 2x faster than 5
    thin_b_px: float = 1.0  # below this B_IMAGE a source is thin (not a star): FLUX_RADIUS fast
    #: FLUX_RADIUS's outer radius in A_IMAGE (at least 3 px): 6 for every source at VISQL's
    #: depth; a straight track's light lies within sqrt(3) A of its centre, so thin sources
    #: (particle tracks) need 3 where only speed matters (quicklook: 0.11 -> 0.04 s per quadrant)
    thin_rmax_a: float = 6.0
    aperture_subpix: int = 1  # AUTO aperture sub-sampling (5 gives the same medians, 5% slower)
    #: With a detection threshold above VISQL's, the isophote (sigma) at which the Kron ellipse
    #: of sources that can be stars or galaxies is measured again, in a cutout of
    #: +-shape_box_px: FLUX_AUTO then means what it means in VISQL's 1.5 sigma catalogue
    #: (None: the detection's ellipse). Those sources are the resolved ones (b >= thin_b_px)
    #: and those no sharper than a PSF can be (sharp_single >= shape_sharp_min; the VIS PSF's
    #: own minimum is ~0.48, the hit detector's default limit half that): not particle hits.
    shape_thresh: float | None = None
    shape_box_px: int = 12
    shape_sharp_min: float = 0.24
    #: Particle hits left out of the detection (None: none are): pixels sharper than any PSF
    #: by the hit detector's single- and two-pixel tests at this fraction of its default PSF
    #: limits (`HitParams.psf_single_ratio`, `psf_pair_ratio`; its seeds, `sharp_hit_mask`)
    #: are masked, so that the detection does not deblend, clean and measure thousands of
    #: hits no quick-look consumer wants.
    hit_mask_fraction: float | None = None


#: The quick-look detection (`catalogue_depth = "quicklook"`): what the PSF, the hit guards
#: and the aperture correction need, the sources with S/N >= 100, not VISQL's 1.5 sigma
#: catalogue. Thresholds are in units of the quadrant's own measured noise: a point source
#: of total S/N 100 peaks at ~60-80 sigma in a VIS pixel, so at 20 sigma its footprint still
#: holds ~8 pixels, while most particle hits (a VIS frame's most numerous detections) have
#: fewer; 16 deblending levels are enough for bright sources. On the full-size simulated
#: frame: 2x faster (benchmarks/bench_quicklook.py); on 6 of its quadrants 95 of the 96
#: PSF stars of the full catalogue are found again.
#: A 20 sigma isophote is smaller than VISQL's 1.5 sigma one, and so are the Kron ellipses
#: drawn from it: FLUX_AUTO of stars fell by 1 % in the median and by up to 25 %, which moved
#: VIS/Gaia. The resolved sources' ellipses are therefore measured again at 1.5 sigma
#: (`shape_thresh`), in cutouts: bright stars' FLUX_AUTO then agrees with the full catalogue's
#: to 0.1 % in the median (99.6 % of them within 1 %), for ~0.1 s per full quadrant.
#: Particle hits, ~4,450 of a full quadrant's ~4,600 detections at 20 sigma, are masked before
#: the detection (`hit_mask_fraction`) at half the hit detector's default PSF limits, a
#: quarter of the VIS PSF's own minimum ratios (~0.48 and ~0.11). On dense small frames
#: over a grid of PSFs (Moffat 2.5 and 1.5, Gaussian; R2 1.2-1.95 px2) the masked detection
#: finds as many bright stars as the unmasked one, or more (hits no longer blend with them),
#: while of the detections that are no star or galaxy (particle hits) 3-11 % are left
#: (3-6 % with the VIS PSF and the sharp Gaussian, which tests/test_quicklook.py runs); on
#: the full-size frame ~170 detections per quadrant instead of ~4,600, `extract_sources`
#: 2x faster and the catalogue stage 2.7x (29 CPU-s against 80).
QUICKLOOK_PARAMS = ExtractionParams(
    detect_thresh=20.0,
    detect_minarea=8,
    deblend_nthresh=16,
    shape_thresh=1.5,
    thin_rmax_a=3.0,
    hit_mask_fraction=0.5,
)


def empty_catalogue() -> dict[str, np.ndarray]:
    """A catalogue with no rows but every column, so that empty quadrants concatenate."""
    ints = {"number", "flags", "area"}
    return {c: np.zeros(0, dtype=np.int32 if c in ints else np.float64) for c in CATALOGUE_COLUMNS}


def extract_sources(
    image: np.ndarray,
    *,
    gain_e_per_adu: float | None = None,
    saturation_adu: float | None = None,
    params: ExtractionParams | None = None,
    overwrite: bool = False,
    sky: SkyMesh | None = None,
    radii: bool = True,
) -> dict[str, np.ndarray]:
    """Detect and measure sources on a bias-subtracted image area (ADU, any float dtype).

    `saturation_adu` is the saturation level above bias: sources whose peak reaches it
    get FLAGS bit 4. `overwrite`: a C-ordered float32 `image` may have its sky subtracted in
    place (no copy of the quadrant); with the hit mask (`hit_mask_fraction`) it is never
    changed, as the hit test makes the sky-subtracted image. `sky`: the image's SExtractor
    background meshes (`measure.sky.sky_mesh` with `back_size` and `back_filtersize`), when
    the caller has them (measured here otherwise, or if they do not fit). `radii=False`: the
    half-light radii, and the sharpness ratios unless the quick-look shapes need them, are not
    measured (NaN, and FLAGS lack their apertures' truncation), for a caller that needs the
    positions and FLUX_AUTO only (the aperture correction's neighbours: 13.7 -> 11.4 ms a
    quadrant of cutouts). Returns a dict of equal-length columns (`CATALOGUE_COLUMNS`).
    """
    from viskom.measure.sky import sky_at, sky_mesh, subtract_sky

    p = params or ExtractionParams()
    masking = p.hit_mask_fraction is not None
    # with the hit mask the hit test makes the sky-subtracted image: the caller's array is only
    # read; without it the sky is subtracted in place, in a copy unless the caller gives its
    # own array away
    copy = not (masking or overwrite)
    data = (np.array if copy else np.asarray)(image, dtype=np.float32, order="C")
    if sky is None or not sky.fits(data.shape, p.back_size, p.back_filtersize):
        sky = sky_mesh(data, p.back_size, p.back_filtersize)
    hits = None
    if masking:
        hits, data = sharp_hit_mask(data, sky, p)
    else:
        subtract_sky(data, sky)
    sep.set_sub_object_limit(4096)
    rms = sky.global_rms
    objects, segments = _detect(data, p.detect_thresh, rms, p, mask=hits, segments=True)
    touched = np.zeros(len(objects), dtype=bool)
    if hits is not None and len(objects):
        from viskom.measure.hit_kernels import labels_beside

        touched = labels_beside(segments, hits, len(objects))  # beside a masked pixel
    del hits, segments
    if len(objects) == 0:
        return empty_catalogue()
    x, y = objects["x"], objects["y"]
    a, b, theta = objects["a"], objects["b"], objects["theta"]
    reshape = p.shape_thresh is not None and p.shape_thresh < p.detect_thresh
    if radii or reshape:  # the shapes are measured again for sources no PSF is sharper than
        sharp_single, sharp_pair = sharpness_ratios(data, x, y)
    else:
        sharp_single = sharp_pair = np.full(len(objects), np.nan)
    merged = (objects["flag"] & sep.OBJ_MERGED) != 0
    if reshape:
        x, y, a, b, theta = (v.astype(np.float64) for v in (x, y, a, b, theta))
        with np.errstate(invalid="ignore"):
            resolved = np.flatnonzero((b >= p.thin_b_px) | (sharp_single >= p.shape_sharp_min))
        shapes = isophote_shapes(data, x[resolved], y[resolved], rms, p)
        found = np.isfinite(shapes[:, 0])
        for column, values in zip((x, y, a, b, theta), shapes.T[:5], strict=True):
            column[resolved[found]] = values[found]
        merged[resolved[found]] = shapes[found, 5] > 0  # blended at the catalogue's isophote
    # Guard degenerate shapes (single-row or single-column detections).
    a = np.maximum(a, 1e-3)
    b = np.clip(b, 1e-3, a)
    theta = np.clip(theta, -np.pi / 2, np.pi / 2)
    kron, kflag = sep.kron_radius(data, x, y, a, b, theta, 6.0)
    kron = np.where(np.isfinite(kron) & (kron > 0), kron, 0.0)
    # SExtractor's AUTO aperture: the ellipse (a, b, theta) scaled by
    # max(kron_factor * kron_radius, kron_min_radius) (PHOT_AUTOPARAMS 2.5, 3.5).
    scale = np.maximum(p.kron_factor * kron, p.kron_min_radius)
    flux, fluxerr, aflag = sep.sum_ellipse(
        data,
        x,
        y,
        a,
        b,
        theta,
        scale,
        err=rms,
        gain=gain_e_per_adu,
        subpix=p.aperture_subpix,
    )
    rmax = np.maximum(np.where(b < p.thin_b_px, p.thin_rmax_a, 6.0) * a, 3.0)
    normflux = np.where(flux > 0, flux, np.nan)
    # Thin sources (b < thin_b_px: cosmic rays, most of the detections in a VIS frame) are
    # never stars: their half-light radius needs no sub-pixel precision.
    radius = np.full(len(objects), np.nan)
    rflag = np.zeros(len(objects), dtype=np.int16)
    for sel, subpix in ((b >= p.thin_b_px, p.radius_subpix), (b < p.thin_b_px, 1)):
        if radii and sel.any():
            radius[sel], rflag[sel] = sep.flux_radius(
                data, x[sel], y[sel], rmax[sel], 0.5, normflux=normflux[sel], subpix=subpix
            )
    flags = np.zeros(len(objects), dtype=np.int32)
    flags[merged] |= FLAG_DEBLENDED
    flags[(objects["flag"] & sep.OBJ_TRUNC) != 0] |= FLAG_TRUNCATED
    flags[((aflag | kflag | rflag) & sep.APER_TRUNC) != 0] |= FLAG_TRUNCATED
    flags[((aflag | kflag) & sep.APER_HASMASKED) != 0] |= FLAG_APERTURE_INCOMPLETE
    flags[touched] |= FLAG_HIT_MASKED
    xi = np.clip(x.round().astype(int), 0, data.shape[1] - 1)
    yi = np.clip(y.round().astype(int), 0, data.shape[0] - 1)
    back = sky_at(sky, xi, yi)
    if saturation_adu is not None:
        flags[objects["peak"] + back >= saturation_adu] |= FLAG_SATURATED
    return {
        "number": np.arange(1, len(objects) + 1, dtype=np.int32),
        "x_image": x + 1.0,
        "y_image": y + 1.0,
        "flux_auto": flux.astype(np.float64),
        "fluxerr_auto": fluxerr.astype(np.float64),
        "flux_radius": radius.astype(np.float64),
        "a_image": a.astype(np.float64),
        "b_image": b.astype(np.float64),
        "theta_image": np.degrees(theta).astype(np.float64),
        "kron_radius": kron.astype(np.float64),
        "flags": flags,
        "peak": objects["peak"].astype(np.float64),
        "area": objects["npix"].astype(np.int32),
        "background": back.astype(np.float64),
        "sharp_single": sharp_single,
        "sharp_pair": sharp_pair,
    }


def sharp_hit_mask(
    image: np.ndarray, sky: SkyMesh, params: ExtractionParams
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of particle hits no PSF can make (boolean, the image's shape): the hit detector's
    seeds (`measure.cosmics.detect_hits`: above its seed sigma, and failing its single- or
    two-pixel PSF test at `params.hit_mask_fraction` of its default limits), on `image`
    (float32) above its `sky` meshes; and the sky-subtracted image the test made on the way
    (a new array), which the detection measures.
    The seeds are not grown: growing into a neighbouring star's wings cost sharp PSFs' stars
    (two pixels, R2 1.2 px2: 27 % of the bright ones), while the seeds alone lose none and
    still remove 89-97 % of the hits' detections."""
    from viskom.measure import hit_kernels as kern  # lazily: numba, start-up time of the CLI
    from viskom.measure.cosmics import HitParams
    from viskom.measure.sky import spline_tables

    hp = HitParams()
    subtracted, _low, candidates, sharp, _z = kern.significance_and_seeds_on_mesh(
        np.ascontiguousarray(image, dtype=np.float32),
        *spline_tables(sky),
        sky.mesh_px,
        float(hp.seed_sigma),
        float(hp.grow_sigma),
        1.0,  # the gain weighs the significances only, which are not made here
        float(params.hit_mask_fraction) * float(hp.psf_single_ratio),
        float(params.hit_mask_fraction) * float(hp.psf_pair_ratio),
        False,  # the seeds only: no growth mask, no significances
    )
    mask = np.zeros(image.shape, dtype=bool)
    mask.ravel()[candidates[sharp]] = True
    return mask, subtracted


def _detect(
    data: np.ndarray,
    thresh: float,
    rms: float,
    p: ExtractionParams,
    mask: np.ndarray | None = None,
    segments: bool = False,
    pixstack: int | None = None,
) -> Any:
    """sep's detection at `thresh` x `rms` with the filter, area, deblending and cleaning of
    `p` on a sky-subtracted image, `mask`ed pixels left out; with `segments`, (objects, the
    segmentation map: each object's pixels hold its index + 1, its NUMBER) when there is a
    mask, (objects, None) without one. `pixstack`: sep's pixel stack (default: a fraction
    `p.pixstack_fraction` of the image, at least 300,000), which sep allocates on every call.
    Without one, VISQL's stack first and the large one only if sep finds the first full: the
    same objects either way (a full stack is an error, never a partial result)."""
    if segments and mask is None:
        return _detect(data, thresh, rms, p, pixstack=pixstack), None
    if pixstack is not None:
        return _sep_extract(data, thresh, rms, p, mask, segments, pixstack)
    largest = max(300_000, int(p.pixstack_fraction * data.size))
    if largest > _FIRST_PIXSTACK:
        try:
            return _sep_extract(data, thresh, rms, p, mask, segments, _FIRST_PIXSTACK)
        except Exception as exc:  # sep raises a bare Exception
            if _PIXSTACK_FULL not in str(exc):
                raise
    return _sep_extract(data, thresh, rms, p, mask, segments, largest)


def _sep_extract(
    data: np.ndarray,
    thresh: float,
    rms: float,
    p: ExtractionParams,
    mask: np.ndarray | None,
    segments: bool,
    pixstack: int,
) -> Any:
    """One `sep.extract` call with the settings of `_detect`, with a pixel stack of `pixstack`."""
    # the stack size is one setting for the whole process: two threads measuring two
    # quadrants (`le1.quadrant_map`) must not change it between the other's set and extract
    with _SEP_SETTINGS:
        sep.set_extract_pixstack(int(pixstack))
        return sep.extract(
            data,
            thresh,
            err=rms,
            minarea=p.detect_minarea,
            filter_kernel=ALLGROUND_FILTER,
            deblend_nthresh=p.deblend_nthresh,
            deblend_cont=p.deblend_mincont,
            clean=p.clean,
            clean_param=p.clean_param,
            mask=mask,
            segmentation_map=segments,
        )


def isophote_shapes(
    data: np.ndarray, x: np.ndarray, y: np.ndarray, rms: float, params: ExtractionParams
) -> np.ndarray:
    """(x, y, a, b, theta, deblended) of the sources at (x, y) (0-based) as a detection at the
    isophote `params.shape_thresh` x `rms` finds them, each in its own cutout of the
    sky-subtracted `data` with VISQL's filter, area and deblending: +-shape_box_px, twice and
    four times that where the isophote reaches the cutout's edge inside the image. NaN rows
    where no detection lies within 1.5 px or the largest cutout still cuts the isophote short."""
    out = np.full((len(x), 6), np.nan)
    largest = 4 * int(params.shape_box_px)
    for i, (xc, yc) in enumerate(zip(x, y, strict=True)):
        half = int(params.shape_box_px)
        while half <= largest:
            shape, cut_short = _cutout_shape(data, xc, yc, half, rms, params)
            if not cut_short:
                if shape is not None:
                    out[i] = shape
                break
            half *= 2
    return out


def _cutout_shape(
    data: np.ndarray, xc: float, yc: float, half: int, rms: float, params: ExtractionParams
) -> tuple[tuple[float, ...] | None, bool]:
    """The isophote detection nearest (xc, yc) in a cutout of +-half: ((x, y, a, b, theta,
    deblended), or None when none lies within 1.5 px; whether it reaches the cutout's edge
    inside the image)."""
    height, width = data.shape
    xi, yi = round(xc), round(yc)
    x0, x1 = max(xi - half, 0), min(xi + half + 1, width)
    y0, y1 = max(yi - half, 0), min(yi + half + 1, height)
    cut = np.ascontiguousarray(data[y0:y1, x0:x1])
    visql = ExtractionParams(clean=params.clean, clean_param=params.clean_param)
    # sep allocates its pixel stack on every call: four times the cutout, not 16 MB (a
    # 25 x 25 px cutout is measured in ~0.19 ms with 2,500 entries, ~0.25 ms with 37,636)
    objs = _detect(cut, float(params.shape_thresh), rms, visql, pixstack=max(4 * cut.size, 2_000))
    if len(objs) == 0:
        return None, False
    d = np.hypot(objs["x"] - (xc - x0), objs["y"] - (yc - y0))
    o = objs[int(np.argmin(d))]
    if d.min() > 1.5:
        return None, False
    cut_short = bool(
        (o["xmin"] == 0 and x0 > 0)
        or (o["ymin"] == 0 and y0 > 0)
        or (o["xmax"] == cut.shape[1] - 1 and x1 < width)
        or (o["ymax"] == cut.shape[0] - 1 and y1 < height)
    )
    deblended = float((o["flag"] & sep.OBJ_MERGED) != 0)
    return (o["x"] + x0, o["y"] + y0, o["a"], o["b"], o["theta"], deblended), cut_short


def sextractor_quadrant(
    sex: Mapping[str, np.ndarray],
    rows: np.ndarray,
    extname: str,
    image: np.ndarray,
    bias: float,
    origin: tuple[int, int],
) -> dict[str, np.ndarray]:
    """SExtractor's `rows` of one quadrant in the exposure catalogue's columns.

    SExtractor measures the raw pixels, so its BACKGROUND includes the bias: `bias` is removed
    to give sep's meaning (sky above bias). `image` is the bias-subtracted image area, its
    first pixel at `origin` (row0, col0) of the quadrant array: the sharpness is measured on it.
    """
    row0, col0 = origin
    x_world = np.asarray(unwrap_longitude(sex["x_world"][rows]))
    sky = sex["background"][rows] - bias
    single, pair = sharpness_ratios(
        image, sex["x_image"][rows] - 1.0 - col0, sex["y_image"][rows] - 1.0 - row0, sky
    )
    return {
        "extname": np.full(rows.size, extname, dtype=object),
        "number": sex["number"][rows].astype(np.int32),
        "x_image": sex["x_image"][rows],
        "y_image": sex["y_image"][rows],
        "x_world": x_world,
        "y_world": sex["y_world"][rows],
        "field_radius": np.hypot(x_world, sex["y_world"][rows]),
        "flux_auto": sex["flux_auto"][rows],
        "fluxerr_auto": sex["fluxerr_auto"][rows],
        "flux_radius": sex["flux_radius"][rows],
        "a_image": sex["a_image"][rows],
        "b_image": sex["b_image"][rows],
        "theta_image": sex["theta_image"][rows],
        "kron_radius": sex["kron_radius"][rows],
        "flags": sex["flags"][rows].astype(np.int32),
        "peak": sex["flux_max"][rows],
        "area": sex["isoarea_image"][rows].astype(np.int32),
        "background": sky,
        "sharp_single": single,
        "sharp_pair": pair,
    }


def merge_catalogues(per_quadrant: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The quadrant catalogues as one exposure table (`EXPOSURE_COLUMNS`; every column, even
    without rows, so that the stages reading it find them)."""
    return stack_tables(per_quadrant.values(), EXPOSURE_COLUMNS)


def catalogue_metrics(
    per_quadrant: Mapping[str, Mapping[str, np.ndarray]],
) -> list[tuple[str, str, float]]:
    """Metric rows per quadrant: the number of sources and the median sky background (ADU)."""
    rows = []
    for ext, cat in per_quadrant.items():
        rows.append((ext, "n_sources", float(len(cat["number"]))))
        rows.append((ext, "sky_background_adu", _median(cat["background"])))
    return rows


def _median(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.median(values)) if values.size else float("nan")
