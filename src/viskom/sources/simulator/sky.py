"""The sky of a simulated science frame: pointings, the Gaia-like catalogue, objects per quadrant.

A field's pointing is drawn per OBS_ID (high galactic latitude) and dithered; its Gaia-like
catalogue is kept as `gaia_NNNNN.parquet` beside the frames (reused when it covers the
pointing); fainter stars and galaxies are added, all moved by their proper motions to the
frame's epoch; `select_for_quadrant` finds what lands on (or spills into) a quadrant.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from astropy.wcs import WCS

from viskom.le1.focalplane import PIXELS_PER_DEG, unwrap_longitude
from viskom.sources.simulator.catalogue import (
    faint_stars_and_galaxies,
    gaia_like_catalogue,
    julian_year,
    propagate,
    read_gaia_catalogue,
    write_gaia_catalogue,
)
from viskom.sources.simulator.config import SimConfig
from viskom.sources.simulator.instrument import QuadrantModel
from viskom.sources.simulator.seeds import derived_seed, rng_for
from viskom.sources.simulator.stamps import STAMP_MARGIN_PX

log = logging.getLogger(__name__)

#: Dither offsets (east, north) in arcsec of the 4 exposures of a field (assumed pattern).
DITHER_OFFSETS_ARCSEC = ((0.0, 0.0), (100.0, 50.0), (0.0, 100.0), (100.0, 150.0))
#: Radius (deg) around the boresight that the focal plane (with distortion and errors) reaches.
FPA_RADIUS_DEG = 0.535


def default_pointing(obs_id: int, dither: int, sky_seed: int) -> tuple[float, float, float]:
    """A high-latitude field for OBS_ID with the dither offset of `dither` (RA, Dec, PA deg)."""
    ra0, dec0, pa = base_pointing(obs_id, sky_seed)
    east, north = DITHER_OFFSETS_ARCSEC[(max(dither, 1) - 1) % len(DITHER_OFFSETS_ARCSEC)]
    dec = dec0 + north / 3600.0
    ra = (ra0 + east / 3600.0 / np.cos(np.radians(dec0))) % 360.0
    return float(ra), float(dec), pa


def base_pointing(obs_id: int, sky_seed: int) -> tuple[float, float, float]:
    """The undithered field centre of OBS_ID (RA, Dec, PA deg), drawn from the sky seed."""
    rng = rng_for(sky_seed, "pointing", obs_id)
    return (
        float(rng.uniform(40.0, 80.0)),
        float(rng.uniform(-65.0, -45.0)),
        float(rng.uniform(0.0, 360.0)),
    )


def _angular_separation(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    r1, d1, r2, d2 = (np.radians(v) for v in (ra1, dec1, ra2, dec2))
    c = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(r1 - r2)
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


# ---------------------------------------------------------------------------------------------


def catalogue_for(
    outdir: Path,
    obs_id: int,
    pointing: tuple[float, float, float],
    centre: tuple[float, float],
    config: SimConfig,
) -> tuple[Path, Any]:
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


def sky_objects(table: Any, date_obs: datetime, config: SimConfig, obs_id: int) -> dict:
    """Stars (Gaia-like and fainter) and galaxies of the field at the frame's epoch."""
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


def select_for_quadrant(
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
