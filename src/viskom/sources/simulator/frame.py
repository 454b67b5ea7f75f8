"""Whole frames: headers, sky projection, quadrant scheduling, file, truth and object list."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from viskom.le1.focalplane import PIXELS_PER_DEG, sky_to_instrument, unwrap_longitude
from viskom.le1.geometry import all_extnames
from viskom.sources.simulator.catalogue import (
    faint_stars_and_galaxies,
    gaia_like_catalogue,
    julian_year,
    propagate,
    read_gaia_catalogue,
    write_gaia_catalogue,
)
from viskom.sources.simulator.config import (
    DEFECTS,
    FRAME_KINDS,
    NOMINAL_EXPTIME,
    SHORT_EXPTIME,
    SimConfig,
    SimulatedFrame,
)
from viskom.sources.simulator.events import mean_rate_multiplier
from viskom.sources.simulator.fitsio import BLOCK, FitsStream, header_bytes, padding
from viskom.sources.simulator.instrument import QuadrantModel, quadrant_models
from viskom.sources.simulator.psf import PsfModel
from viskom.sources.simulator.quadrant import (
    OBJECT_COLUMNS,
    STAMP_MARGIN_PX,
    QuadrantResult,
    QuadrantTask,
    concat_objects,
    synthesize,
)
from viskom.sources.simulator.seeds import derived_seed, rng_for

log = logging.getLogger(__name__)

#: Default EXPTIME (s) per frame kind.
DEFAULT_EXPTIME: dict[str, float] = {
    "science": NOMINAL_EXPTIME,
    "dark": NOMINAL_EXPTIME,
    "bias": 0.0,
    "flat": 5.0,
    "charge": 0.0,
}
#: Frame-type keywords per kind: IMG_CAT, IMG_T1, IMG_T2, OBSMODE, CALBLKID.
KIND_KEYWORDS: dict[str, tuple[str, str, str, str, str]] = {
    "science": ("SCIENCE", "SURVEY", "WIDE", "WIDE", "NONE"),
    "dark": ("CALIB", "DARK", "OTHER", "CALIBRATION", "VIS_DARK"),
    "bias": ("CALIB", "BIAS", "OTHER", "CALIBRATION", "VIS_BIAS"),
    "flat": ("CALIB", "FLAT", "LAMP", "CALIBRATION", "VIS_FLAT_LED"),
    "charge": ("CALIB", "CHARGE_INJECTION", "OTHER", "CALIBRATION", "VIS_CHARGE_INJECTION"),
}
UNKNOWN_TYPE_KEYWORDS = ("TECHNICAL", "MYSTERY_MODE", "TEST")
#: Dither offsets (east, north) in arcsec of the 4 exposures of a field (assumed pattern).
DITHER_OFFSETS_ARCSEC = ((0.0, 0.0), (100.0, 50.0), (0.0, 100.0), (100.0, 150.0))
#: Radius (deg) around the boresight that the focal plane (with distortion and errors) reaches.
FPA_RADIUS_DEG = 0.535
N_DEFECT_QUADRANTS = 3
REF_EXPTIME = 89.52


# ---------------------------------------------------------------------------------------------
# Names, times, pointings
# ---------------------------------------------------------------------------------------------
def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        return t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def frame_name(
    date_obs: datetime, *, naming: str, seed: int, obs_id: int, dither: int, exposure_index: int
) -> str:
    """File name (without .fits) in the archive or the instrument-workstation convention."""
    t = _utc(date_obs)
    if naming == "iws":
        hex8 = f"{derived_seed(seed, 'iws-name'):08X}"
        return f"C_{t:%Y%m%d}_{t:%H%M%S}_W_{hex8}.VIS.bin_{exposure_index:02d}_01"
    return (
        f"EUC_LE1_VIS-{obs_id:05d}-{dither}-W_{t:%Y%m%dT%H%M%S.%f}Z_{exposure_index:02d}_01_01.00"
    )


def default_pointing(obs_id: int, dither: int, sky_seed: int) -> tuple[float, float, float]:
    """A high-latitude field for OBS_ID with the dither offset of `dither` (RA, Dec, PA deg)."""
    ra0, dec0, pa = _base_pointing(obs_id, sky_seed)
    east, north = DITHER_OFFSETS_ARCSEC[(max(dither, 1) - 1) % len(DITHER_OFFSETS_ARCSEC)]
    dec = dec0 + north / 3600.0
    ra = (ra0 + east / 3600.0 / np.cos(np.radians(dec0))) % 360.0
    return float(ra), float(dec), pa


def _base_pointing(obs_id: int, sky_seed: int) -> tuple[float, float, float]:
    rng = rng_for(sky_seed, "pointing", obs_id)
    return (
        float(rng.uniform(40.0, 80.0)),
        float(rng.uniform(-65.0, -45.0)),
        float(rng.uniform(0.0, 360.0)),
    )


def _angular_separation(ra1, dec1, ra2, dec2) -> float:
    r1, d1, r2, d2 = (np.radians(v) for v in (ra1, dec1, ra2, dec2))
    c = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(r1 - r2)
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


# ---------------------------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------------------------
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
    t = _utc(date_obs)
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


def _layout(cfg: SimConfig) -> tuple[dict[str, QuadrantModel], dict[str, WCS], dict[str, bytes]]:
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


# ---------------------------------------------------------------------------------------------
# Sky
# ---------------------------------------------------------------------------------------------
def _catalogue_for(
    outdir: Path,
    obs_id: int,
    pointing: tuple[float, float, float],
    centre: tuple[float, float],
    config: SimConfig,
):
    """Load gaia_{obs_id}.parquet if it covers this pointing, else (re)write it; (path, table)."""
    path = outdir / f"gaia_{obs_id:05d}.parquet"
    factor = config.effective_star_density_factor
    radius = float(config.gaia_radius_deg)
    if path.exists():
        try:
            table = read_gaia_catalogue(path)
            meta = table.meta
            sep = _angular_separation(meta["ra0"], meta["dec0"], pointing[0], pointing[1])
            if (
                sep + FPA_RADIUS_DEG <= float(meta["radius_deg"])
                and abs(float(meta.get("density_factor", factor)) - factor) < 1e-9
            ):
                return path, table
            log.warning("%s does not cover this pointing or density: regenerating it", path)
        except Exception as err:  # unreadable or foreign file
            log.warning("cannot reuse %s (%s): regenerating it", path, err)
    ra0, dec0 = centre
    if _angular_separation(ra0, dec0, pointing[0], pointing[1]) + FPA_RADIUS_DEG > radius:
        ra0, dec0 = pointing[0], pointing[1]
    table = gaia_like_catalogue(
        ra0, dec0, radius, seed=derived_seed(config.sky_seed, "gaia", obs_id),
        density_factor=factor,
    )  # fmt: skip
    write_gaia_catalogue(table, path)
    return path, table


def _sky_objects(table, date_obs: datetime, config: SimConfig, obs_id: int) -> dict:
    meta = table.meta
    years = julian_year(date_obs) - float(meta.get("epoch", 2016.0))
    gaia_ra, gaia_dec = propagate(
        np.asarray(table["RA_ICRS"], float),
        np.asarray(table["DE_ICRS"], float),
        np.nan_to_num(np.asarray(table["pmRA"], float)),
        np.nan_to_num(np.asarray(table["pmDE"], float)),
        years,
    )
    faint = faint_stars_and_galaxies(
        float(meta["ra0"]),
        float(meta["dec0"]),
        float(meta["radius_deg"]),
        seed=derived_seed(config.sky_seed, "faint", obs_id),
        density_factor=config.effective_star_density_factor,
        faint_gmax=config.faint_star_gmax,
        galaxy_density_per_deg2=config.galaxy_density_per_deg2,
        galaxy_mag_range=tuple(config.galaxy_mag_range),
    )
    f_ra, f_dec = propagate(
        faint["star_ra"], faint["star_dec"], faint["star_pmra"], faint["star_pmde"], years
    )
    return {
        "star_ra": np.concatenate([gaia_ra, f_ra]),
        "star_dec": np.concatenate([gaia_dec, f_dec]),
        "star_source": np.concatenate(
            [np.asarray(table["Source"], np.int64), np.full(f_ra.size, -1, np.int64)]
        ),
        "star_gmag": np.concatenate([np.asarray(table["Gmag"], float), faint["star_gmag"]]),
        "star_bp_rp": np.nan_to_num(
            np.concatenate([np.asarray(table["BP-RP"], float), faint["star_bp_rp"]]), nan=1.2
        ),
        **{k: v for k, v in faint.items() if k.startswith("gal_")},
    }


def _select_for_quadrant(
    model: QuadrantModel, wcs: WCS, X: np.ndarray, Y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Objects landing on (or spilling into) a quadrant's image area: (index, x, y, inside)."""
    img = model.geometry.image
    m = STAMP_MARGIN_PX
    cols = np.array([img.col0 - 0.5 - m, img.col1 - 0.5 + m])
    rows = np.array([img.row0 - 0.5 - m, img.row1 - 0.5 + m])
    cx, cy = np.meshgrid(cols, rows)
    wx, wy = wcs.all_pix2world(cx.ravel(), cy.ravel(), 0)
    wx = unwrap_longitude(wx)
    pad = 2.0 / PIXELS_PER_DEG
    box = (
        (wx.min() - pad <= X)
        & (wx.max() + pad >= X)
        & (wy.min() - pad <= Y)
        & (wy.max() + pad >= Y)
    )
    idx = np.flatnonzero(box)
    if idx.size == 0:
        e = np.zeros(0)
        return idx, e, e, np.zeros(0, dtype=bool)
    px, py = wcs.all_world2pix(X[idx], Y[idx], 0)
    keep = (px >= cols[0]) & (px <= cols[1]) & (py >= rows[0]) & (py <= rows[1])
    idx, px, py = idx[keep], px[keep], py[keep]
    inside = (
        (px >= img.col0 - 0.5) & (px < img.col1 - 0.5) & (py >= img.row0 - 0.5)
        & (py < img.row1 - 0.5)
    )  # fmt: skip
    return idx, px, py, inside


# ---------------------------------------------------------------------------------------------
# Scheduling
# ---------------------------------------------------------------------------------------------
def _run(tasks: list[QuadrantTask], workers: int) -> Iterator[QuadrantResult]:
    """Results in task order. workers > 1: a thread pool (numpy releases the GIL in its heavy
    loops), at most 2 x workers quadrants in flight so that memory stays bounded."""
    if workers <= 1 or len(tasks) < 2:
        for task in tasks:
            yield synthesize(task)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="viskom-sim") as pool:
        pending: deque = deque()
        it = iter(tasks)
        for task in it:
            pending.append(pool.submit(synthesize, task))
            if len(pending) >= 2 * workers:
                break
        try:
            while pending:
                result = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(synthesize, nxt))
                yield result
        finally:
            for future in pending:
                future.cancel()


_OBJECT_SCHEMA = pa.schema(
    [
        pa.field(name, {"str": pa.string(), "f8": pa.float64(), "i8": pa.int64(),
                        "bool": pa.bool_()}[dtype])
        for name, dtype in OBJECT_COLUMNS.items()
    ]
)  # fmt: skip


def _objects_table(objects: dict[str, np.ndarray]) -> pa.Table:
    kind = objects["kind"]
    arrays = []
    for name, dtype in OBJECT_COLUMNS.items():
        col = objects[name]
        if dtype == "str":
            arrays.append(pa.array(col.astype(str).tolist(), type=pa.string()))
        elif dtype == "f8":
            arrays.append(pa.array(col.astype(np.float64), from_pandas=True))
        elif dtype == "i8":
            arrays.append(pa.array(col.astype(np.int64), mask=col < 0))
        else:
            arrays.append(pa.array(col.astype(bool), mask=kind != "star"))
    return pa.Table.from_arrays(arrays, schema=_OBJECT_SCHEMA)


# ---------------------------------------------------------------------------------------------
# The frame
# ---------------------------------------------------------------------------------------------
def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _clean(value):
    """NaN -> None, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value


def _write_json(path: Path, payload: dict) -> None:
    text = json.dumps(_clean(payload), indent=1, default=_json_default, allow_nan=False)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


def _warn_if_replacing(truth_path: Path, **identity) -> None:
    """Warn when a different frame with the same file name is about to be overwritten.

    File names depend only on DATE-OBS, OBS_ID, dither and exposure index (and the seed for
    IWS names), so two kinds simulated at the same time and place share a name.
    """
    if not truth_path.exists():
        return
    try:
        old = json.loads(truth_path.read_text())
    except (OSError, ValueError):
        return
    changed = {k: (old.get(k), v) for k, v in identity.items() if old.get(k) != v}
    if changed:
        warnings.warn(
            f"simulate_frame overwrites {truth_path.name[: -len('.truth.json')]} made with "
            f"different settings {changed}: give each frame its own date_obs, obs_id, dither "
            "or exposure_index",
            UserWarning,
            stacklevel=3,
        )


def _resolved_config(config: SimConfig) -> SimConfig:
    """A picklable copy (rate multipliers are resolved per frame before use)."""
    return dataclasses.replace(config, xray_rate_multiplier=1.0, proton_rate_multiplier=1.0)


def simulate_frame(
    outdir: Path,
    kind: str,
    *,
    seed: int,
    date_obs: datetime,
    exptime: float | None = None,
    config: SimConfig | None = None,
    exposure_index: int = 1,
    obs_id: int = 2370,
    dither: int = 1,
    pointing: tuple[float, float, float] | None = None,
    defect: str | None = None,
) -> SimulatedFrame:
    """Simulate one LE1 VIS raw frame in `outdir` (created if missing), with its truth files.

    kind: one of FRAME_KINDS. exptime: default 560.52 s (science, dark), 0 (bias, charge),
    5 s (flat). pointing: commanded (RA, Dec, PA) in degrees, default a high-latitude field of
    OBS_ID with the dither offset. defect: one of DEFECTS or None.
    """
    cfg = config if config is not None else SimConfig()
    cfg.validate()
    if kind not in FRAME_KINDS:
        raise ValueError(f"kind must be one of {FRAME_KINDS}, not {kind!r}")
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"defect must be one of {DEFECTS} or None, not {defect!r}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    date_obs = _utc(date_obs)
    exptime = float(DEFAULT_EXPTIME[kind] if exptime is None else exptime)
    if exptime < 0:
        raise ValueError("exptime must be >= 0")
    seed = int(seed)
    base = frame_name(
        date_obs, naming=cfg.naming, seed=seed, obs_id=obs_id, dither=dither,
        exposure_index=exposure_index,
    )  # fmt: skip
    path = outdir / (base + (".fits.gz" if cfg.gzip else ".fits"))
    truth_path = outdir / (base + ".truth.json")
    objects_path = outdir / (base + ".objects.parquet")
    _warn_if_replacing(truth_path, kind=kind, seed=seed, defect=defect, geometry=cfg.geometry)
    if pointing is None:
        pointing = default_pointing(obs_id, dither, cfg.sky_seed)
        centre = _base_pointing(obs_id, cfg.sky_seed)[:2]
    else:
        pointing = tuple(float(v) for v in pointing)  # type: ignore[assignment]
        centre = (pointing[0], pointing[1])

    truth: dict = {
        "name": base,
        "file": path.name,
        "kind": kind,
        "geometry": cfg.geometry,
        "seed": seed,
        "instrument_seed": int(cfg.instrument_seed),
        "exptime": exptime,
        "date_obs": date_obs.replace(tzinfo=None).isoformat(timespec="microseconds"),
        "obs_id": int(obs_id),
        "dither": int(dither),
        "exposure_index": int(exposure_index),
        "defect": defect,
        "missing_extensions": [],
        "flipped_quadrants": [],
        "pointing": {"ra": pointing[0], "dec": pointing[1], "pa": pointing[2]},
    }

    if defect == "not-fits":
        rng = rng_for(seed, "not-fits")
        text = (
            "<html><body>503 Service Unavailable: the archive could not deliver "
            f"{path.name}</body></html>\n"
        ).encode()
        path.write_bytes(text + rng.bytes(int(rng.integers(3000, 9000))))
        truth.update({"pointing_error_pix": None, "photometry": None, "psf": None,
                      "gaia_catalogue": None, "objects_file": None, "quadrants": {}})  # fmt: skip
        _write_json(truth_path, truth)
        if objects_path.exists():
            objects_path.unlink()
        return SimulatedFrame(path, truth_path, None, base, kind)

    frng = rng_for(seed, kind, "frame")
    models, wcs_of, header_of = _layout(cfg)
    extnames = all_extnames()
    order = [extnames[i] for i in rng_for(seed, "extension-order").permutation(len(extnames))]
    missing: list[str] = []
    flipped: list[str] = []
    if defect == "missing-extensions":
        missing = sorted(
            rng_for(seed, "missing").choice(extnames, N_DEFECT_QUADRANTS, replace=False).tolist(),
            key=extnames.index,
        )
        order = [e for e in order if e not in missing]
    if defect == "flipped-geometry":
        flipped = sorted(
            rng_for(seed, "flipped").choice(extnames, N_DEFECT_QUADRANTS, replace=False).tolist(),
            key=extnames.index,
        )

    # Frame-level random state (fixed draw order).
    err_dx, err_dy = (float(v) for v in frng.normal(0.0, cfg.pointing_error_pix, 2))
    sky_frame = float(cfg.sky_e_per_s * frng.lognormal(0.0, cfg.sky_variation))
    flat_factor = float(frng.normal(1.0, 0.01))
    ci_factor = float(frng.normal(1.0, 0.002))
    drifts = frng.normal(0.0, cfg.bias_drift_adu, len(extnames))
    psf = PsfModel.from_config(cfg, frng)

    # Dark current and hot pixels integrate over EXPTIME; particles also hit during the
    # readout (on average half of it, as VISQL's expfactor assumes).
    t_dark = exptime
    t_particles = exptime + cfg.readout_time_s / 2.0
    xray_mult = mean_rate_multiplier(cfg.xray_rate_multiplier, date_obs, t_particles)
    proton_mult = mean_rate_multiplier(cfg.proton_rate_multiplier, date_obs, t_particles)

    # Sky content (science only).
    gaia_path = None
    sky = None
    X = Y = Xg = Yg = None
    if kind == "science":
        gaia_path, table = _catalogue_for(outdir, obs_id, pointing, centre, cfg)
        sky = _sky_objects(table, date_obs, cfg, obs_id)
        shift_x, shift_y = err_dx / PIXELS_PER_DEG, err_dy / PIXELS_PER_DEG
        X, Y = sky_to_instrument(sky["star_ra"], sky["star_dec"], *pointing)
        X, Y = unwrap_longitude(X) + shift_x, Y + shift_y
        Xg, Yg = sky_to_instrument(sky["gal_ra"], sky["gal_dec"], *pointing)
        Xg, Yg = unwrap_longitude(Xg) + shift_x, Yg + shift_y
        colour = sky["star_bp_rp"]
        ratio = np.exp(cfg.colour_c0 + cfg.colour_c1 * colour + cfg.colour_c2 * colour**2)
        star_flux0 = 10 ** (-0.4 * (sky["star_gmag"] - 30.0)) / 1.5 * ratio
        gal_flux0 = 10 ** (-0.4 * (sky["gal_mag"] - 30.0)) / 1.5
        scale = exptime / REF_EXPTIME * cfg.throughput

    run_cfg = _resolved_config(cfg)
    tasks: list[QuadrantTask] = []
    for ext in order:
        m = models[ext]
        task = QuadrantTask(
            model=m,
            kind=kind,
            frame_seed=seed,
            config=run_cfg,
            exptime=exptime,
            t_dark=t_dark,
            bias_drift_adu=float(drifts[m.index]),
            sky_e_per_s=sky_frame * m.qe if kind == "science" else 0.0,
            flat_factor=flat_factor,
            ci_factor=ci_factor,
            n_cosmic_mean=cfg.cosmic_rate_per_cm2_s * m.image_area_cm2 * t_particles,
            n_xray_mean=cfg.xray_rate_per_cm2_s * xray_mult * m.image_area_cm2 * t_particles,
            n_proton_mean=(
                cfg.proton_rate_per_cm2_s * proton_mult * m.image_area_cm2 * t_particles
            ),
            psf_beta=psf.beta,
            flipped=ext in flipped,
        )
        if kind == "science":
            wcs = wcs_of[ext]
            img = m.geometry.image
            ccx, ccy = wcs.all_pix2world(
                [(img.col0 + img.col1 - 1) / 2.0], [(img.row0 + img.row1 - 1) / 2.0], 0
            )
            a_c, g1_c, g2_c = psf.params_at(unwrap_longitude(ccx), ccy)
            task.psf_at_centre = (float(a_c[0]), float(g1_c[0]), float(g2_c[0]))
            idx, px, py, inside = _select_for_quadrant(m, wcs, X, Y)
            alpha, g1, g2 = psf.params_at(X[idx], Y[idx])
            task.stars = {
                "x": px, "y": py, "inside": inside,
                "flux_adu": star_flux0[idx] * scale / m.relative_gain,
                "alpha": alpha, "g1": g1, "g2": g2,
                "source": sky["star_source"][idx], "gmag": sky["star_gmag"][idx],
                "bp_rp": sky["star_bp_rp"][idx],
            }  # fmt: skip
            gidx, gx, gy, gin = _select_for_quadrant(m, wcs, Xg, Yg)
            task.galaxies = {
                "x": gx, "y": gy, "inside": gin,
                "flux_adu": gal_flux0[gidx] * scale / m.relative_gain,
                "mag": sky["gal_mag"][gidx], "re_px": sky["gal_re_px"][gidx],
                "sersic_n": sky["gal_n"][gidx], "axis_ratio": sky["gal_q"][gidx],
                "theta_deg": sky["gal_theta_deg"][gidx],
            }  # fmt: skip
        tasks.append(task)

    # Headers and byte layout (for the truncation point).
    phdr = primary_header(
        kind=kind, defect=defect, date_obs=date_obs, exptime=exptime, obs_id=obs_id,
        dither=dither, exposure_index=exposure_index, pointing=pointing, seed=seed, config=cfg,
    )  # fmt: skip
    headers = [header_of[e] for e in order]
    truncate_at = None
    truncated_ext = None
    if defect == "truncated" and order:
        pos = len(header_bytes(phdr))
        target = max(0, len(order) - 3)
        for i, h in enumerate(headers):
            g = models[order[i]].geometry
            data_len = g.naxis1 * g.naxis2 * 2
            pos += len(h)
            if i == target:
                truncate_at = pos + data_len // 2 + 1
                if truncate_at % BLOCK == 0:
                    truncate_at += 1
                truncated_ext = order[i]
                break
            pos += data_len + len(padding(data_len))

    workers = cfg.workers
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if cfg.geometry == "full" else 1
    quadrant_truth: dict[str, dict] = {}
    tmp_path = path.with_name(f"{path.name}.{os.getpid()}.part")
    tmp_objects = objects_path.with_name(f"{objects_path.name}.{os.getpid()}.part")
    writer = pq.ParquetWriter(tmp_objects, _OBJECT_SCHEMA, compression="zstd")
    buffered: list[dict[str, np.ndarray]] = []
    n_buffered = 0
    try:
        with FitsStream(tmp_path, gzip=cfg.gzip, level=cfg.gzip_level,
                        truncate_at=truncate_at) as stream:  # fmt: skip
            stream.write_hdu(phdr)
            for header, result in zip(headers, _run(tasks, int(workers)), strict=True):
                stream.write_hdu(header, result.data)
                quadrant_truth[result.extname] = result.truth
                buffered.append(result.objects)
                n_buffered += result.objects["kind"].size
                if n_buffered >= 250_000:
                    writer.write_table(_objects_table(concat_objects(buffered)))
                    buffered, n_buffered = [], 0
        writer.write_table(_objects_table(concat_objects(buffered)))
    finally:
        writer.close()
    tmp_path.replace(path)
    tmp_objects.replace(objects_path)

    truth.update(
        {
            "missing_extensions": missing,
            "flipped_quadrants": flipped,
            "extension_order": order,
            "truncated_at_byte": truncate_at,
            "truncated_extension": truncated_ext,
            "pointing_error_pix": {"dx": err_dx, "dy": err_dy},
            "pointing_error_definition": (
                "true instrument-frame position = sky_to_instrument(ra, dec, RA, DEC, PA, "
                "distortion=True) + (dx, dy) / 36000 deg"
            ),
            "photometry": {
                "c0": cfg.colour_c0,
                "c1": cfg.colour_c1,
                "c2": cfg.colour_c2,
                "throughput": cfg.throughput,
                "reference_exptime": REF_EXPTIME,
                "flux_definition": (
                    "star flux_adu = 10**(-0.4*(G-30))/1.5 * exp(c0+c1*c+c2*c**2) * "
                    "EXPTIME/89.52 * throughput / relative_gain (c = BP-RP); galaxies the same "
                    "with their VIS magnitude and no colour term"
                ),
            },
            "psf": psf.describe(),
            "gaia_catalogue": gaia_path.name if gaia_path is not None else None,
            "star_density_factor": cfg.effective_star_density_factor,
            "sky_e_per_s": sky_frame if kind == "science" else None,
            "dark_time_s": t_dark,
            "particle_time_s": t_particles,
            "xray_rate_multiplier": xray_mult,
            "proton_rate_multiplier": proton_mult,
            "objects_file": objects_path.name,
            "definitions": TRUTH_DEFINITIONS,
            "quadrants": {e: quadrant_truth[e] for e in extnames if e in quadrant_truth},
        }
    )
    _write_json(truth_path, truth)
    return SimulatedFrame(path, truth_path, objects_path, base, kind)


TRUTH_DEFINITIONS = {
    "bias_*_adu": (
        "exact mean over that region (le1.geometry regions from the header: serial_prescan, "
        "serial_overscan, parallel_overscan, image) of the noiseless bias model pedestal + "
        "serial gradient (linear in readout order across NAXIS1) + parallel gradient (linear in "
        "rows from the serial register) + frame drift, as written (mirrored if flipped)"
    ),
    "read_noise_digitised_adu": "sqrt(read_noise_adu**2 + 1/12): rms of bias-only pixels",
    "gain_e_per_adu": "electrons per ADU of the quadrant (header GAIN)",
    "relative_gain": (
        "gain/(3.4*qe): multiply ADU fluxes by it to put quadrants on one scale (VISQL)"
    ),
    "sky_e_per_s": "zodiacal sky of the quadrant, e-/px/s (frame level x QE)",
    "flat_level_e": "median of the noiseless LED illumination (e-) over the image area",
    "flat_nonuniformity": "rms/median of that illumination (PRNU excluded)",
    "ci_level_adu": "noiseless injected level above bias in the injected rows (ADU)",
    "cosmic_pixel_fraction": (
        "fraction of image pixels where the charge of all particle hits exceeds "
        "particle_threshold_e = 3 sqrt(read_noise_e^2 + mean background e-)"
    ),
    "n_saturated_pixels": "image pixels at full well after blooming",
    "objects.x/y": "0-based array pixel (column, row) as written",
    "objects.npix": "pixels where that hit's charge alone exceeds particle_threshold_e",
    "objects.true_r2/e1/e2": (
        "VISQL weighted moments of the noiseless pixelated PSF at the star's position "
        "(see psf.truth_moments)"
    ),
}


def simulate_set(
    outdir: Path,
    kind: str,
    count: int,
    *,
    seed: int,
    start: datetime,
    config: SimConfig | None = None,
    defect: str | None = None,
    obs_id: int = 2370,
    exptime: float | None = None,
) -> list[SimulatedFrame]:
    """`count` consecutive frames of one kind, EXPTIME + readout (72 s) apart.

    Science frames cycle through the 4 dithers of a field (OBS_ID incremented every 4 frames);
    calibration frames share OBS_ID and number their exposures 1, 2, ... Frame i uses the seed
    derived_seed(seed, "set", i).
    """
    cfg = config if config is not None else SimConfig()
    if kind not in FRAME_KINDS:
        raise ValueError(f"kind must be one of {FRAME_KINDS}, not {kind!r}")
    t_exp = float(DEFAULT_EXPTIME[kind] if exptime is None else exptime)
    step = timedelta(seconds=t_exp + cfg.readout_time_s)
    frames: list[SimulatedFrame] = []
    t = _utc(start)
    for i in range(int(count)):
        if kind == "science":
            obs, dither, index = obs_id + i // 4, i % 4 + 1, 1 if t_exp != SHORT_EXPTIME else 2
        else:
            obs, dither, index = obs_id, 1, i + 1
        frames.append(
            simulate_frame(
                outdir, kind, seed=derived_seed(seed, "set", i), date_obs=t, exptime=t_exp,
                config=cfg, exposure_index=index, obs_id=obs, dither=dither, defect=defect,
            )
        )  # fmt: skip
        t = t + step
    return frames
