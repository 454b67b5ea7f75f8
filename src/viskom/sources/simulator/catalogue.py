"""Sky content: a Gaia-DR3-like star catalogue, fainter stars and galaxies.

Star counts and colours follow the real Gaia DR3 field of VISQL's example exposure (RA 56.2,
Dec -55.7, b ~ -47 deg; shared/reference/visql-example): about 4300 stars per deg2 with G < 21,
counts per magnitude rising by ~1.45 per mag from G 13 to 21, and BP-RP a mixture of halo
turn-off stars (~0.8), disc stars (~1.35) and M dwarfs (~2.3) whose share grows with G
(percentiles 5/50/95 % ~ 0.7/1.45/2.6). Columns are those of VizieR I/355/gaiadr3.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy import units as u
from astropy.table import Table

from viskom.sources.gaia_tables import COLUMN_UNITS, GAIA_EPOCH_JYEAR, propagate_to_epoch
from viskom.sources.simulator.seeds import rng_for
from viskom.store.atomic import atomic_path

G_ZEROPOINT = 25.6874  # Gaia DR3 G zero point (e-/s)

# Stars per 1-mag bin of G (lower edges 6..22) per deg2, from the real field (0.64 deg2,
# Gerr < 0.02), extended beyond G = 21 with the same slope (for stars Gaia does not list).
_G_EDGES = np.arange(6.0, 24.0, 1.0)
_G_COUNTS_PER_DEG2 = (
    np.array(
        [0.2, 0.5, 1, 1, 5, 9, 19, 62, 92, 141, 192, 280, 393, 582, 838, 1131, 1527],
        dtype=float,
    )
    / 0.64
    * 1.05
)


def _sample_gmag(rng: np.random.Generator, density: float, area: float, gmin: float, gmax: float):
    """G magnitudes of the stars in an area (deg2), counts x density, uniform within 1-mag bins."""
    lo = _G_EDGES[:-1]
    frac = np.clip(np.minimum(lo + 1.0, gmax) - np.maximum(lo, gmin), 0.0, 1.0)
    expected = _G_COUNTS_PER_DEG2 * frac * area * density
    counts = rng.poisson(expected)
    parts = []
    for b, n in enumerate(counts):
        if n:
            a = max(lo[b], gmin)
            parts.append(rng.uniform(a, a + frac[b], n))
    return np.concatenate(parts) if parts else np.zeros(0)


def _sample_colour(rng: np.random.Generator, gmag: np.ndarray) -> np.ndarray:
    """BP-RP of stars of magnitude G: turn-off / disc / M-dwarf mixture (M share grows with G)."""
    n = gmag.size
    t = np.clip((gmag - 14.0) / 7.0, 0.0, 1.0)
    w_a = 0.28 - 0.08 * t
    w_c = 0.10 + 0.30 * t
    r = rng.random(n)
    comp_a = rng.normal(0.82, 0.12, n)
    comp_b = rng.normal(1.35, 0.35, n)
    comp_c = rng.normal(2.30, 0.32, n)
    c = np.where(r < w_a, comp_a, np.where(r < 1.0 - w_c, comp_b, comp_c))
    return np.clip(c, 0.15, 4.0)


def _uniform_in_cone(rng, ra0: float, dec0: float, radius_deg: float, n: int):
    """n points uniform on the sphere within radius_deg of (ra0, dec0); degrees."""
    cos_r = np.cos(np.radians(radius_deg))
    cos_t = rng.uniform(cos_r, 1.0, n)
    sin_t = np.sqrt(np.clip(1.0 - cos_t**2, 0.0, None))
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    # Around the pole, then rotate the pole to (ra0, dec0).
    x, y, z = sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t
    a, d = np.radians(ra0), np.radians(dec0)
    # Rotation: pole -> (a, d). Rows of the matrix are the local (east?, north?, out) frame.
    xr = -np.sin(a) * x - np.sin(d) * np.cos(a) * y + np.cos(d) * np.cos(a) * z
    yr = np.cos(a) * x - np.sin(d) * np.sin(a) * y + np.cos(d) * np.sin(a) * z
    zr = np.cos(d) * y + np.sin(d) * z
    ra = np.degrees(np.arctan2(yr, xr)) % 360.0
    dec = np.degrees(np.arcsin(np.clip(zr, -1.0, 1.0)))
    return ra, dec


def cone_area_deg2(radius_deg: float) -> float:
    """Solid angle (deg2) of a cone of `radius_deg`."""
    return float(2.0 * np.pi * (1.0 - np.cos(np.radians(radius_deg))) * (180.0 / np.pi) ** 2)


def _stellar_columns(rng, gmag: np.ndarray) -> dict[str, np.ndarray]:
    n = gmag.size
    bp_rp = _sample_colour(rng, gmag)
    g_minus_rp = np.clip(-0.02 + 0.42 * bp_rp - 0.06 * bp_rp**2 + 0.004 * bp_rp**3, -0.1, 1.6)
    rp = gmag - g_minus_rp
    bp = rp + bp_rp
    halo = rng.random(n) < 0.1
    pm_sd = np.where(halo, 30.0, 6.0)
    pmra = rng.normal(2.0, 1.0, n) + rng.normal(0.0, 1.0, n) * pm_sd
    pmde = rng.normal(-3.0, 1.0, n) + rng.normal(0.0, 1.0, n) * pm_sd
    e_plx = 0.02 + 0.9 * 10 ** (0.4 * (gmag - 21.0))
    plx = 0.8 * 10 ** (-0.15 * (gmag - 15.0)) * rng.lognormal(0.0, 0.6, n)
    plx = plx + rng.normal(0.0, 1.0, n) * e_plx
    x = 10 ** (0.4 * (gmag - 20.0))
    e_g = np.sqrt(4e-8 + 1.07e-5 * x + 1.23e-5 * x * x) * rng.lognormal(0.0, 0.2, n)
    fg = 10 ** (-0.4 * (gmag - G_ZEROPOINT))
    e_fg = fg * e_g / 1.086
    ruwe = rng.lognormal(0.0, 0.07, n)
    binary = rng.random(n) < 0.05
    ruwe[binary] *= rng.uniform(1.4, 3.0, int(binary.sum()))
    return {
        "pmRA": pmra,
        "pmDE": pmde,
        "Plx": plx,
        "Gmag": gmag,
        "e_Gmag": e_g,
        "FG": fg,
        "e_FG": e_fg,
        "BPmag": bp,
        "RPmag": rp,
        "BP-RP": bp_rp,
        "RUWE": ruwe,
    }


def gaia_like_catalogue(
    ra0: float,
    dec0: float,
    radius_deg: float,
    *,
    seed: int,
    density_factor: float = 1.0,
) -> Table:
    """A Gaia-DR3-like cone (G < 21) around (ra0, dec0): VizieR I/355/gaiadr3 column names.

    Positions are ICRS at epoch 2016.0; ~4300 x density_factor stars per deg2.
    """
    rng = rng_for(seed, "gaia-like", float(ra0), float(dec0), float(radius_deg), density_factor)
    area = cone_area_deg2(radius_deg)
    gmag = _sample_gmag(rng, density_factor, area, 6.0, 21.0)
    n = gmag.size
    rng.shuffle(gmag)
    ra, dec = _uniform_in_cone(rng, ra0, dec0, radius_deg, n)
    cols = _stellar_columns(rng, gmag)
    pix = (
        np.floor(ra * 10.0).astype(np.int64) * 1800 + np.floor((dec + 90.0) * 10.0).astype(np.int64)
    ) % (1 << 27)
    offset = int(rng.integers(0, 1 << 33))
    source = (pix << 35) | ((offset + np.arange(n, dtype=np.int64)) & ((1 << 35) - 1))
    table = Table()
    table["Source"] = source.astype(np.int64)
    table["RA_ICRS"] = ra * u.deg
    table["DE_ICRS"] = dec * u.deg
    units = {k: v for k, v in COLUMN_UNITS.items() if k not in table.colnames}
    for name, unit in units.items():
        table[name] = cols[name] if unit is None else cols[name] * unit
    table.meta.update(
        {
            "catalogue": "viskom simulated Gaia DR3-like (VizieR I/355/gaiadr3 columns)",
            "ra0": float(ra0),
            "dec0": float(dec0),
            "radius_deg": float(radius_deg),
            "seed": int(seed),
            "density_factor": float(density_factor),
            "epoch": GAIA_EPOCH_JYEAR,
        }
    )
    return table


def write_gaia_catalogue(table: Table, path: Path | str) -> Path:
    """Write a Gaia-like table as parquet (pyarrow; units and table meta kept); returns the path.

    Column units are stored as field metadata ``unit`` and the table meta as JSON under the
    schema metadata key ``viskom_meta``; `read_gaia_catalogue` restores both.
    """
    path = Path(path)
    fields = []
    arrays = []
    for name in table.colnames:
        col = table[name]
        data = np.asarray(col)
        arr = pa.array(data)
        unit = getattr(col, "unit", None)
        meta = {b"unit": str(unit).encode()} if unit is not None else None
        fields.append(pa.field(name, arr.type, metadata=meta))
        arrays.append(arr)
    meta_json = json.dumps(dict(table.meta), default=str)
    schema = pa.schema(fields, metadata={b"viskom_meta": meta_json.encode()})
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), tmp, compression="zstd")
    return path


def read_gaia_catalogue(path: Path | str) -> Table:
    """Read a catalogue written by `write_gaia_catalogue` (or any parquet with those columns)."""
    pt = pq.read_table(Path(path))
    table = Table()
    for field in pt.schema:
        data = pt.column(field.name).to_numpy()
        unit = (field.metadata or {}).get(b"unit")
        if unit:
            table[field.name] = data * u.Unit(unit.decode())
        else:
            table[field.name] = data
    raw = (pt.schema.metadata or {}).get(b"viskom_meta")
    if raw:
        table.meta.update(json.loads(raw.decode()))
    return table


def julian_year(t: datetime) -> float:
    """Julian epoch of a UTC datetime (J2000.0 = 2000-01-01T12:00 TT; UTC used, < 1e-6 yr off)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    j2000 = datetime(2000, 1, 1, 12, 0, 0, tzinfo=UTC)
    return 2000.0 + (t - j2000).total_seconds() / (365.25 * 86400.0)


def propagate(
    ra: np.ndarray, dec: np.ndarray, pmra: np.ndarray, pmde: np.ndarray, years: float
) -> tuple[np.ndarray, np.ndarray]:
    """Apply proper motions (mas/yr, pmRA includes cos Dec) over `years` (linear, small);
    the Gaia client's `propagate_to_epoch`, so that the simulated sky and the pipeline agree."""
    return propagate_to_epoch(ra, dec, pmra, pmde, years)


def faint_stars_and_galaxies(
    ra0: float,
    dec0: float,
    radius_deg: float,
    *,
    seed: int,
    density_factor: float,
    faint_gmax: float,
    galaxy_density_per_deg2: float,
    galaxy_mag_range: tuple[float, float],
) -> dict[str, np.ndarray]:
    """Stars from G = 21 to faint_gmax and galaxies in a cone (positions epoch 2016.0)."""
    rng = rng_for(seed, "faint-sky", float(ra0), float(dec0), float(radius_deg), density_factor)
    area = cone_area_deg2(radius_deg)
    gmag = _sample_gmag(rng, density_factor, area, 21.0, max(21.0, faint_gmax))
    ra, dec = _uniform_in_cone(rng, ra0, dec0, radius_deg, gmag.size)
    cols = _stellar_columns(rng, gmag)
    out = {
        "star_ra": ra,
        "star_dec": dec,
        "star_gmag": gmag,
        "star_bp_rp": cols["BP-RP"],
        "star_pmra": cols["pmRA"],
        "star_pmde": cols["pmDE"],
    }
    # Galaxies: N(<m) = D 10^(0.33 (m - 24.5)), D per deg2.
    s = 0.33
    m1, m2 = galaxy_mag_range
    c1, c2 = 10 ** (s * (m1 - 24.5)), 10 ** (s * (m2 - 24.5))
    grng = rng_for(seed, "galaxies", float(ra0), float(dec0), float(radius_deg))
    n_gal = int(grng.poisson(galaxy_density_per_deg2 * (c2 - c1) * area)) if m2 > m1 else 0
    mag = 24.5 + np.log10(c1 + grng.random(n_gal) * (c2 - c1)) / s
    gra, gdec = _uniform_in_cone(grng, ra0, dec0, radius_deg, n_gal)
    re_px = np.clip(10 ** (0.5 - 0.1 * (mag - 24.0) + grng.normal(0.0, 0.2, n_gal)), 1.0, 20.0)
    disc = grng.random(n_gal) < 0.7
    sersic = np.where(disc, grng.uniform(0.8, 1.5, n_gal), grng.uniform(2.0, 4.0, n_gal))
    q = np.clip(grng.beta(3.0, 1.6, n_gal), 0.2, 1.0)
    theta = grng.uniform(0.0, 180.0, n_gal)
    out.update(
        {
            "gal_ra": gra,
            "gal_dec": gdec,
            "gal_mag": mag,
            "gal_re_px": re_px,
            "gal_n": sersic,
            "gal_q": q,
            "gal_theta_deg": theta,
        }
    )
    return out
