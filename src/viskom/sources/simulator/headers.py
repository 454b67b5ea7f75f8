"""FITS headers of a simulated LE1 frame, and the per-detector layout they come with.

The primary header carries the frame type keywords of each kind (IMG_CAT, IMG_T1, IMG_T2,
OBSMODE, CALBLKID), times, pointing, attitude and the simulator's own SIM* keywords; each
extension header its quadrant's geometry, gain, noise, saturation level and WCS. `frame_layout`
caches quadrant models, their WCS and extension header blocks per detector settings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from viskom.sources.simulator.config import SimConfig
from viskom.sources.simulator.fitsio import header_bytes
from viskom.sources.simulator.instrument import QuadrantModel, quadrant_models
from viskom.sources.simulator.seeds import rng_for

#: Frame-type keywords per kind: IMG_CAT, IMG_T1, IMG_T2, OBSMODE, CALBLKID.
KIND_KEYWORDS: dict[str, tuple[str, str, str, str, str]] = {
    "science": ("SCIENCE", "SURVEY", "WIDE", "WIDE", "NONE"),
    "dark": ("CALIB", "DARK", "OTHER", "CALIBRATION", "VIS_DARK"),
    "bias": ("CALIB", "BIAS", "OTHER", "CALIBRATION", "VIS_BIAS"),
    "flat": ("CALIB", "FLAT", "LAMP", "CALIBRATION", "VIS_FLAT_LED"),
    "charge": ("CALIB", "CHARGE_INJECTION", "OTHER", "CALIBRATION", "VIS_CHARGE_INJECTION"),
}
UNKNOWN_TYPE_KEYWORDS = ("TECHNICAL", "MYSTERY_MODE", "TEST")


def as_utc(t: datetime) -> datetime:
    """An aware UTC datetime (naive datetimes are taken as UTC)."""
    if t.tzinfo is None:
        return t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def primary_header(
    *,
    kind: str,
    defect: str | None,
    date_obs: datetime,
    exptime: float,
    obs_id: int,
    dither: int,
    exposure_index: int,
    pointing: tuple[float, float, float],
    seed: int,
    config: SimConfig,
) -> fits.Header:
    """The primary header of a frame (no data): type keywords, times, pointing, SIM* keys."""
    t = as_utc(date_obs)
    img_cat, t1, t2, obsmode, calblk = KIND_KEYWORDS[kind]
    if defect == "unknown-type":
        img_cat, t1, t2 = UNKNOWN_TYPE_KEYWORDS
        obsmode, calblk = "TECHNICAL", "NONE"
    att = rng_for(seed, "attitude")
    h = fits.Header()
    h["SIMPLE"] = (True, "conforms to FITS standard")
    h["BITPIX"] = (8, "no data in the primary HDU")
    h["NAXIS"] = 0
    h["EXTEND"] = True
    h["TELESCOP"] = "EUCLID"
    h["INSTRUME"] = "VIS"
    h["ORIGIN"] = ("viskom simulator", "simulated LE1 raw frame")
    h["DATE-OBS"] = (t.replace(tzinfo=None).isoformat(timespec="milliseconds"), "UTC start")
    h["MJD-OBS"] = (float(Time(t.replace(tzinfo=None), scale="utc").mjd), "UTC start, MJD")
    end = t + timedelta(seconds=float(exptime))
    h["DATE-END"] = (end.replace(tzinfo=None).isoformat(timespec="milliseconds"), "UTC end")
    h["EXPTIME"] = (float(exptime), "[s] exposure time")
    h["OBS_ID"] = (int(obs_id), "observation id")
    h["DITHOBS"] = (int(dither), "dither number")
    h["PTGID"] = (int(obs_id) * 10 + int(dither), "pointing id")
    h["EXPNUM"] = (int(exposure_index), "exposure number within the dither")
    h["FIELDID"] = (int(obs_id), "survey field id")
    h["PLAN_ID"] = (int(t.strftime("%Y%m")), "observation plan id")
    h["OBSMODE"] = obsmode
    h["IMG_CAT"] = img_cat
    h["IMG_T1"] = t1
    h["IMG_T2"] = t2
    h["CI_STAT"] = ("ON" if kind == "charge" else "OFF", "charge injection")
    h["TP_STAT"] = ("OFF", "trap pumping")
    h["CUSTATUS"] = (config.flat_led if kind == "flat" else "OFF", "calibration unit")
    h["CALBLKID"] = (calblk, "calibration block")
    h["CALBLKVR"] = ("V1" if kind != "science" else "NONE", "calibration block variant")
    h["RA"] = (float(pointing[0]), "[deg] commanded pointing")
    h["DEC"] = (float(pointing[1]), "[deg] commanded pointing")
    h["PA"] = (float(pointing[2]), "[deg] position angle of the focal plane")
    h["SAA"] = (round(float(att.uniform(92.0, 118.0)), 4), "[deg] solar aspect angle")
    h["ALPHA"] = (round(float(att.uniform(-5.0, 5.0)), 4), "[deg] angle about the Sun line")
    h["SIMULATE"] = (True, "simulated data")
    h["SIMSEED"] = (int(seed), "simulator frame seed")
    h["SIMKIND"] = (kind, "simulated frame kind")
    h["SIMGEOM"] = (config.geometry, "simulated geometry")
    h["SIMISEED"] = (int(config.instrument_seed), "simulator instrument seed")
    return h


def extension_header(model: QuadrantModel, config: SimConfig) -> fits.Header:
    """The header of a quadrant's image extension: geometry, gain, noise, saturation, WCS."""
    g = model.geometry
    h = fits.Header()
    h["XTENSION"] = ("IMAGE", "image extension")
    h["BITPIX"] = 16
    h["NAXIS"] = 2
    h["NAXIS1"] = g.naxis1
    h["NAXIS2"] = g.naxis2
    h["PCOUNT"] = 0
    h["GCOUNT"] = 1
    h["BZERO"] = (32768, "uint16 data")
    h["BSCALE"] = 1
    h["BUNIT"] = "ADU"
    h["EXTNAME"] = model.extname
    h["CCDID"] = (model.ccd, "CCD row-column")
    h["QUADID"] = (model.quadrant, "readout quadrant")
    h["DETID"] = (model.detid, "detector number 0..35")
    h["ROEID"] = (model.roeid, "readout electronics unit")
    h["PRESCANX"] = (g.prescan_x, "serial prescan columns")
    h["OVRSCANX"] = (g.overscan_x, "serial overscan columns")
    h["OVRSCANY"] = (g.overscan_y, "parallel overscan rows")
    h["GAIN"] = (round(model.gain_e_per_adu, 5), "[e-/ADU]")
    h["RDNOISE"] = (round(model.read_noise_e, 4), "[e-] read noise")
    full_adu = config.full_well_e / model.gain_e_per_adu
    low_bias = (
        model.pedestal_adu - abs(model.serial_gradient_adu) - abs(model.parallel_gradient_adu)
    )
    h["SATURATE"] = (
        int(min(65535, np.floor(low_bias + full_adu - 5.0 * model.read_noise_adu))),
        "[ADU] full-well level",
    )
    for key, value in model.wcs_header().items():
        h[key] = value
    return h


_LAYOUT_FIELDS = (
    "geometry", "instrument_seed", "gain_e_per_adu", "gain_spread_e_per_adu", "qe_spread",
    "read_noise_range_e", "bias_range_adu", "bias_serial_gradient_adu",
    "bias_parallel_gradient_adu", "dark_current_e_per_s", "hot_pixels_per_quadrant",
    "hot_pixel_rate_e_per_s", "flat_level_range_e", "ci_level_range_adu", "full_well_e",
)  # fmt: skip
_LAYOUT_CACHE: dict[tuple, tuple] = {}


def frame_layout(
    cfg: SimConfig,
) -> tuple[dict[str, QuadrantModel], dict[str, WCS], dict[str, bytes]]:
    """Quadrant models, their WCS and extension header blocks (cached per detector settings)."""
    key = tuple(
        tuple(v) if isinstance(v, list) else v for v in (getattr(cfg, f) for f in _LAYOUT_FIELDS)
    )
    hit = _LAYOUT_CACHE.get(key)
    if hit is None:
        models = quadrant_models(cfg)
        wcs = {e: WCS(m.wcs_header()) for e, m in models.items()}
        headers = {e: header_bytes(extension_header(m, cfg)) for e, m in models.items()}
        if len(_LAYOUT_CACHE) >= 4:
            _LAYOUT_CACHE.pop(next(iter(_LAYOUT_CACHE)))
        hit = _LAYOUT_CACHE[key] = (models, wcs, headers)
    return hit
