"""Gaia DR3 cone searches (VIS-REFERENCE 7) with an on-disk HEALPix tile cache.

What: `GaiaClient.cone` returns the Gaia DR3 stars in a cone with the VizieR I/355/gaiadr3 column
names (`GAIA_COLUMNS`; positions ICRS at epoch 2016.0) and, given an exposure epoch, the
positions moved by the proper motions (`propagate_to_epoch`, the simulator's formula).

Why a tile cache: VIS fields (cones of 0.45-0.6 deg) are revisited and overlap, large cones
time out, and the monitor must keep working offline. The sky is cut into HEALPix tiles
(astropy_healpix, nested, ICRS); a tile is fetched once, as a cone around its centre that
circumscribes it, trimmed to the tile, and kept as one Parquet file
`cache_dir/hpx<nside>/<pix>.parquet` (written atomically: temporary file, then replace). The
file's schema metadata (`viskom_meta`, JSON; the layout of the simulator's
`write_gaia_catalogue`, so tiles read with `read_gaia_catalogue` and vice versa) holds the
tile's coverage: the full tile (fetched online) or a cone (ra, dec, radius) when the tile was
seeded from a local catalogue that covers only part of it (`GaiaCache.seed_from_catalogue`,
e.g. the simulator's `gaia_NNNNN.parquet`). A cone is served from the cache when each tile it
touches is full, or seeded by a cone containing it. Empty tiles are valid cached results;
an unreadable tile file is reported (warning) and treated as missing.

Missing tiles come from VizieR through astroquery (columns asked for by name, no row limit,
astroquery's own cache off), with ESA's Gaia TAP service (`gaiadr3.gaia_source`, synchronous
ADQL, column names mapped to VizieR's) as fallback. Each call has a timeout and retries with
a short backoff; a service that keeps failing is not tried again for the client's lifetime
(circuit breaker). A truncated answer (QUERY_STATUS OVERFLOW) is never cached. Offline, the
network is never touched and `GaiaUnavailable` names the cone, the missing tiles and how to
fill them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy import units as u
from astropy.table import Table

log = logging.getLogger(__name__)

GAIA_COLUMNS: tuple[str, ...] = (
    "RA_ICRS",
    "DE_ICRS",
    "Source",
    "Gmag",
    "e_Gmag",
    "FG",
    "e_FG",
    "BPmag",
    "RPmag",
    "BP-RP",
    "pmRA",
    "pmDE",
    "Plx",
    "RUWE",
)
GAIA_EPOCH_JYEAR = 2016.0  # epoch of the DR3 positions
COLUMN_UNITS: dict[str, u.UnitBase | None] = {
    "RA_ICRS": u.deg,
    "DE_ICRS": u.deg,
    "Source": None,
    "Gmag": u.mag,
    "e_Gmag": u.mag,
    "FG": u.electron / u.s,
    "e_FG": u.electron / u.s,
    "BPmag": u.mag,
    "RPmag": u.mag,
    "BP-RP": u.mag,
    "pmRA": u.mas / u.yr,
    "pmDE": u.mas / u.yr,
    "Plx": u.mas,
    "RUWE": None,
}
VIZIER_CATALOGUE = "I/355/gaiadr3"
GAIA_TAP_URL = "https://gea.esac.esa.int/tap-server/tap"
GAIA_TAP_TABLE = "gaiadr3.gaia_source"
# VizieR column <- gaia_source column (e_Gmag is derived from the flux and its error).
TAP_COLUMNS: dict[str, str] = {
    "RA_ICRS": "ra",
    "DE_ICRS": "dec",
    "Source": "source_id",
    "Gmag": "phot_g_mean_mag",
    "FG": "phot_g_mean_flux",
    "e_FG": "phot_g_mean_flux_error",
    "BPmag": "phot_bp_mean_mag",
    "RPmag": "phot_rp_mean_mag",
    "BP-RP": "bp_rp",
    "pmRA": "pmra",
    "pmDE": "pmdec",
    "Plx": "parallax",
    "RUWE": "ruwe",
}
E_GMAG_FACTOR = 1.0857  # 2.5 / ln(10): e_Gmag = 1.0857 e_FG / FG
# nside 64: tiles of ~0.92 deg (0.84 deg2), so a 0.45-0.6 deg VIS cone touches ~4-9 tiles, each
# fetched once as a ~0.75 deg cone (a few thousand stars off the plane), well within timeouts.
DEFAULT_NSIDE = 64
MAX_RADIUS_DEG = 5.0  # larger cones would mean hundreds of tile fetches
_BOUNDARY_STEP = 16  # points per tile side when measuring distances to a tile
_TILE_TOLERANCE_DEG = 1e-3  # a tile this close to a cone counts as touched (polyline error)
_FETCH_MARGIN_DEG = 0.01  # added to the circumscribing radius of a tile when fetching it
_CONTAIN_EPS_DEG = 1e-9
_META_KEY = b"viskom_meta"
_CATALOGUE_NAME = "Gaia DR3 (VizieR I/355/gaiadr3 columns)"
_USER_AGENT = "viskom-gaia/0.1 (Euclid VIS quick-look monitor)"

_T = TypeVar("_T")


class GaiaUnavailable(RuntimeError):  # noqa: N818 (name asked for by the callers)
    """The cache cannot serve a cone and the services cannot (or may not) fill it; says why."""


class GaiaAnswerError(ValueError):
    """An answer from VizieR or the Gaia TAP service that cannot be used; `truncated` if cut."""

    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


class _ServiceError(Exception):
    """One call to a service failed; `retry` when trying again may help (timeouts, 5xx)."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


# -- Epochs and proper motions ------------------------------------------------------------


def julian_epoch(epoch: datetime | float | Any) -> float:
    """Julian epoch (decimal year) of a datetime (naive = UTC), an astropy Time or a number."""
    if isinstance(epoch, datetime):
        t = epoch if epoch.tzinfo is not None else epoch.replace(tzinfo=UTC)
        j2000 = datetime(2000, 1, 1, 12, 0, 0, tzinfo=UTC)
        return 2000.0 + (t - j2000).total_seconds() / (365.25 * 86400.0)
    if hasattr(epoch, "jyear"):  # astropy Time
        return float(epoch.jyear)
    value = float(epoch)
    if not math.isfinite(value):
        raise ValueError(f"epoch {epoch!r} is not a finite decimal year")
    return value


def propagate_to_epoch(
    ra: Any, dec: Any, pmra: Any, pmde: Any, years: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move positions (deg) by proper motions (mas/yr, pmRA includes cos Dec) over `years`.

    Linear, as the simulator's `propagate`; NaN proper motions mean no motion.
    """
    dec = np.asarray(dec, dtype=float)
    pmra = np.nan_to_num(np.asarray(pmra, dtype=float), nan=0.0)
    pmde = np.nan_to_num(np.asarray(pmde, dtype=float), nan=0.0)
    ddec = pmde * years / 3.6e6
    dra = pmra * years / 3.6e6 / np.cos(np.radians(dec))
    return (np.asarray(ra, dtype=float) + dra) % 360.0, dec + ddec


# -- Geometry -------------------------------------------------------------------------------


def _unit_vectors(lon_deg: Any, lat_deg: Any) -> np.ndarray:
    lon = np.radians(np.asarray(lon_deg, dtype=float))
    lat = np.radians(np.asarray(lat_deg, dtype=float))
    c = np.cos(lat)
    return np.stack([c * np.cos(lon), c * np.sin(lon), np.sin(lat)], axis=-1)


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in radians between unit vectors (last axis), accurate at small angles."""
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1))


def angular_separation_deg(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    """Great-circle distance in degrees between positions in degrees (broadcast)."""
    return np.degrees(_angle(_unit_vectors(ra1, dec1), _unit_vectors(ra2, dec2)))


def _check_cone(ra_deg: float, dec_deg: float, radius_deg: float) -> tuple[float, float, float]:
    ra, dec, r = float(ra_deg), float(dec_deg), float(radius_deg)
    if not (math.isfinite(ra) and math.isfinite(dec) and -90.0 <= dec <= 90.0):
        raise ValueError(f"cone centre RA {ra_deg!r}, Dec {dec_deg!r} is not a sky position")
    if not (math.isfinite(r) and 0.0 < r <= MAX_RADIUS_DEG):
        raise ValueError(f"cone radius {radius_deg!r} deg is not in (0, {MAX_RADIUS_DEG}]")
    return ra % 360.0, dec, r


def _cone_text(ra: float, dec: float, r: float) -> str:
    return f"RA {ra:.5f} Dec {dec:+.5f} r {r:.4f} deg"


@dataclass(frozen=True)
class TileCoverage:
    """What part of a tile its cached rows are complete for: all of it, or a cone."""

    kind: str  # "full" or "cone"
    ra: float | None = None
    dec: float | None = None
    radius_deg: float | None = None

    @classmethod
    def full(cls) -> TileCoverage:
        """The whole tile (fetched from a service)."""
        return cls("full")

    @classmethod
    def cone(cls, ra: float, dec: float, radius_deg: float) -> TileCoverage:
        """Only the part of the tile inside this cone (seeded from a local catalogue)."""
        return cls("cone", float(ra) % 360.0, float(dec), float(radius_deg))

    @property
    def is_full(self) -> bool:
        """True when the rows are complete for the whole tile."""
        return self.kind == "full"

    def contains(self, ra: float, dec: float, radius_deg: float) -> bool:
        """Whether the rows are complete for (the tile's part of) this cone."""
        if self.is_full:
            return True
        assert self.ra is not None and self.dec is not None and self.radius_deg is not None
        sep = float(angular_separation_deg(self.ra, self.dec, ra, dec))
        return sep + radius_deg <= self.radius_deg + _CONTAIN_EPS_DEG

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as stored in the tile file."""
        if self.is_full:
            return {"kind": "full"}
        return {"kind": "cone", "ra": self.ra, "dec": self.dec, "radius_deg": self.radius_deg}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TileCoverage:
        """Inverse of `to_dict`; ValueError when it is not a coverage record."""
        kind = data.get("kind")
        if kind == "full":
            return cls.full()
        if kind == "cone":
            ra, dec, r = (float(data[k]) for k in ("ra", "dec", "radius_deg"))
            if not (math.isfinite(ra) and -90 <= dec <= 90 and r > 0):
                raise ValueError(f"bad coverage cone {dict(data)}")
            return cls.cone(ra, dec, r)
        raise ValueError(f"unknown coverage kind {kind!r}")

    def describe(self) -> str:
        """Short text for messages."""
        if self.is_full:
            return "full tile"
        return f"cone {_cone_text(self.ra or 0.0, self.dec or 0.0, self.radius_deg or 0.0)}"


# -- Tables --------------------------------------------------------------------------------


def _float_column(col: Any) -> np.ndarray:
    """float64 values of a (masked) column or quantity; masked entries become NaN."""
    if isinstance(col, u.Quantity):
        col = col.value
    return np.ma.filled(np.ma.asarray(col).astype(np.float64), np.nan)


def _as_columns(table: Table, what: str) -> dict[str, np.ndarray]:
    """The GAIA_COLUMNS of a table as plain arrays (Source int64, others float64, NaN = null)."""
    missing = [c for c in GAIA_COLUMNS if c not in table.colnames]
    if missing:
        raise GaiaAnswerError(f"{what}: no column(s) {', '.join(missing)}")
    cols: dict[str, np.ndarray] = {}
    for name in GAIA_COLUMNS:
        if name == "Source":
            src = np.ma.asarray(table[name])
            if np.ma.count_masked(src):
                raise GaiaAnswerError(f"{what}: rows without a Source identifier")
            cols[name] = np.asarray(src.filled(0)).astype(np.int64)
        else:
            cols[name] = _float_column(table[name])
    good = np.isfinite(cols["RA_ICRS"]) & np.isfinite(cols["DE_ICRS"])
    if not np.all(good):
        log.warning("%s: %d row(s) without a position dropped", what, int(np.sum(~good)))
        cols = {k: v[good] for k, v in cols.items()}
    cols["RA_ICRS"] = cols["RA_ICRS"] % 360.0
    return cols


def _empty_columns() -> dict[str, np.ndarray]:
    return {c: np.zeros(0, np.int64 if c == "Source" else np.float64) for c in GAIA_COLUMNS}


def _to_table(cols: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> Table:
    table = Table()
    for name in GAIA_COLUMNS:
        table[name] = cols[name]
        if COLUMN_UNITS[name] is not None:
            table[name].unit = COLUMN_UNITS[name]
    table.meta.update(meta or {})
    return table


def _select(cols: Mapping[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[keep] for k, v in cols.items()}


def _concat(parts: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = list(parts)
    if not parts:
        return _empty_columns()
    return {c: np.concatenate([p[c] for p in parts]) for c in GAIA_COLUMNS}


def _parse_votable(content: bytes, what: str) -> Any:
    from astropy.io import votable
    from astropy.utils.exceptions import AstropyWarning

    if content.lstrip()[:5] not in (b"<?xml", b"<VOTA"):
        head = content[:80].decode("utf-8", "replace").strip()
        raise GaiaAnswerError(f"{what}: not a VOTable (starts with {head!r})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            vot = votable.parse(BytesIO(content), verify="ignore")
    except Exception as exc:  # astropy raises many kinds on malformed XML
        raise GaiaAnswerError(f"{what}: unreadable VOTable ({type(exc).__name__}: {exc})") from None
    for info in vot.iter_info():
        name = str(info.name or "").strip().lower()
        value = str(info.value or "").strip().upper()
        text = str(getattr(info, "content", None) or info.value or "").strip()
        if name == "query_status" and value == "OVERFLOW":
            raise GaiaAnswerError(f"{what}: truncated answer ({text})", truncated=True)
        if (name == "query_status" and value == "ERROR") or name == "error":
            raise GaiaAnswerError(f"{what}: service error ({text})")
    return vot


def parse_vizier_votable(content: bytes) -> Table:
    """The I/355/gaiadr3 rows of a VizieR VOTable answer as a GAIA_COLUMNS table.

    No such table and no error: zero rows (VizieR leaves empty tables out). GaiaAnswerError
    when malformed, an error, truncated (QUERY_STATUS OVERFLOW) or missing columns.
    """
    from astropy.utils.exceptions import AstropyWarning

    vot = _parse_votable(content, "VizieR")
    found = [
        t for t in vot.iter_tables() if VIZIER_CATALOGUE in (t.name, str(t.ID).replace("_", "/"))
    ]
    if not found:
        return _to_table(_empty_columns())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        table = found[0].to_table(use_names_over_ids=True)
    return _to_table(_as_columns(table, f"VizieR {VIZIER_CATALOGUE}"))


def parse_tap_votable(content: bytes) -> Table:
    """A Gaia TAP gaia_source VOTable answer as a GAIA_COLUMNS table (VizieR names)."""
    from astropy.utils.exceptions import AstropyWarning

    vot = _parse_votable(content, "Gaia TAP")
    tables = list(vot.iter_tables())
    if not tables:
        raise GaiaAnswerError("Gaia TAP: answer holds no table")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        raw = tables[0].to_table(use_names_over_ids=True)
    lower = {name.lower(): name for name in raw.colnames}
    missing = [t for t in TAP_COLUMNS.values() if t not in lower]
    if missing:
        raise GaiaAnswerError(f"Gaia TAP: no column(s) {', '.join(missing)}")
    table = Table()
    for viz, tap in TAP_COLUMNS.items():
        table[viz] = raw[lower[tap]]
    with np.errstate(divide="ignore", invalid="ignore"):
        fg, e_fg = _float_column(table["FG"]), _float_column(table["e_FG"])
        table["e_Gmag"] = np.where(fg > 0, E_GMAG_FACTOR * e_fg / fg, np.nan)
    return _to_table(_as_columns(table, f"Gaia TAP {GAIA_TAP_TABLE}"))


def tap_query(ra: float, dec: float, radius_deg: float) -> str:
    """ADQL for the gaia_source rows in a cone (columns to be renamed with TAP_COLUMNS)."""
    cols = ", ".join(TAP_COLUMNS.values())
    return (
        f"SELECT {cols} FROM {GAIA_TAP_TABLE} WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), "
        f"CIRCLE('ICRS', {ra:.10f}, {dec:.10f}, {radius_deg:.10f}))"
    )


# -- The tile cache ---------------------------------------------------------------------------


@dataclass
class CachedTile:
    """One cached tile: its rows (GAIA_COLUMNS), coverage and where the rows came from."""

    pix: int
    table: Table
    coverage: TileCoverage
    origin: str


class GaiaCache:
    """HEALPix (nested, ICRS) tiles of Gaia DR3 rows, one Parquet file each; no network."""

    def __init__(self, cache_dir: str | Path, nside: int = DEFAULT_NSIDE) -> None:
        from astropy.coordinates import ICRS
        from astropy_healpix import HEALPix

        self.cache_dir = Path(cache_dir)
        self.nside = int(nside)
        self.hpx = HEALPix(nside=self.nside, order="nested", frame=ICRS())

    @property
    def folder(self) -> Path:
        """Where the tiles of this nside live: cache_dir/hpx<nside>."""
        return self.cache_dir / f"hpx{self.nside}"

    def tile_path(self, pix: int) -> Path:
        """The file of a tile: cache_dir/hpx<nside>/<pix>.parquet."""
        return self.folder / f"{int(pix)}.parquet"

    def tile_of(self, ra: Any, dec: Any) -> np.ndarray:
        """Tile (pixel) numbers of positions in degrees."""
        ra = np.asarray(ra, dtype=float) % 360.0
        return np.asarray(self.hpx.lonlat_to_healpix(ra * u.deg, np.asarray(dec) * u.deg))

    def _distance_to_tiles(self, ra: float, dec: float, pixels: np.ndarray) -> np.ndarray:
        """Distance (deg) from a point to each tile (0 inside), boundaries as fine polylines."""
        lon, lat = self.hpx.boundaries_lonlat(pixels, step=_BOUNDARY_STEP)
        a = _unit_vectors(lon.to_value(u.deg), lat.to_value(u.deg))  # (N, M, 3)
        b = np.roll(a, -1, axis=1)
        p = _unit_vectors(ra, dec)
        n = np.cross(a, b)
        norm = np.linalg.norm(n, axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            n = n / norm
            pn = n @ p
            q = p - pn[..., None] * n
            q = q / np.linalg.norm(q, axis=-1, keepdims=True)
            between = (np.sum(np.cross(a, q) * n, axis=-1) >= 0) & (
                np.sum(np.cross(q, b) * n, axis=-1) >= 0
            )
        between &= norm[..., 0] > 0
        d_end = _angle(np.broadcast_to(p, a.shape), a)
        d_arc = np.arcsin(np.clip(np.abs(np.nan_to_num(pn)), 0.0, 1.0))
        d = np.where(between, np.minimum(d_arc, d_end), d_end)
        dist = np.degrees(d.min(axis=1))
        dist[pixels == int(self.tile_of(ra, dec))] = 0.0
        return dist

    def tiles_for_cone(self, ra_deg: float, dec_deg: float, radius_deg: float) -> list[int]:
        """The tiles a cone touches (within 1e-3 deg), sorted."""
        ra, dec, r = _check_cone(ra_deg, dec_deg, radius_deg)
        start = int(self.tile_of(ra, dec))
        found, seen = {start}, {start}
        frontier = np.array([start])
        while frontier.size:
            nb = np.asarray(self.hpx.neighbours(frontier)).ravel()
            nb = np.unique(nb[nb >= 0])
            nb = nb[~np.isin(nb, np.fromiter(seen, dtype=np.int64))]
            if not nb.size:
                break
            seen.update(nb.tolist())
            frontier = nb[self._distance_to_tiles(ra, dec, nb) <= r + _TILE_TOLERANCE_DEG]
            found.update(frontier.tolist())
        return sorted(found)

    def tile_cone(self, pix: int) -> tuple[float, float, float]:
        """(ra, dec, radius) in degrees of a cone around the tile's centre that contains it."""
        centre = self.hpx.healpix_to_lonlat(np.array([int(pix)]))
        ra, dec = float(centre[0].to_value(u.deg)[0]), float(centre[1].to_value(u.deg)[0])
        lon, lat = self.hpx.boundaries_lonlat(np.array([int(pix)]), step=_BOUNDARY_STEP)
        r = float(np.max(angular_separation_deg(ra, dec, lon.to_value(u.deg), lat.to_value(u.deg))))
        return ra, dec, r + _FETCH_MARGIN_DEG

    # -- reading and writing tiles ------------------------------------------------------------

    def read_tile(self, pix: int) -> CachedTile | None:
        """A cached tile, or None when absent or unusable (warned; a new copy replaces it)."""
        path = self.tile_path(pix)
        if not path.exists():
            return None
        try:
            pt = pq.read_table(path)
            meta = json.loads((pt.schema.metadata or {})[_META_KEY].decode())
            if (
                int(meta["hpx_nside"]) != self.nside
                or int(meta["hpx_pix"]) != int(pix)
                or meta.get("hpx_order") != "nested"
            ):
                raise ValueError(
                    f"it holds tile {meta.get('hpx_pix')} of nside {meta.get('hpx_nside')} "
                    f"({meta.get('hpx_order')})"
                )
            coverage = TileCoverage.from_dict(meta["coverage"])
            table = Table({name: pt.column(name).to_numpy() for name in pt.column_names})
            cols = _as_columns(table, path.name)
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            log.warning(
                "Gaia cache tile %s is unreadable (%s: %s); treated as missing",
                path,
                type(exc).__name__,
                exc,
            )
            return None
        return CachedTile(int(pix), _to_table(cols), coverage, str(meta.get("origin", "")))

    def write_tile(self, pix: int, table: Table, coverage: TileCoverage, origin: str) -> Path:
        """Store a tile's rows (those of the tile only) atomically; returns the file."""
        cols = _as_columns(table, f"tile {pix}")
        cols = _select(cols, self.tile_of(cols["RA_ICRS"], cols["DE_ICRS"]) == int(pix))
        meta = {
            "catalogue": _CATALOGUE_NAME,
            "epoch": GAIA_EPOCH_JYEAR,
            "hpx_nside": self.nside,
            "hpx_order": "nested",
            "hpx_frame": "icrs",
            "hpx_pix": int(pix),
            "coverage": coverage.to_dict(),
            "origin": origin,
            "written_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        fields, arrays = [], []
        for name in GAIA_COLUMNS:
            arr = pa.array(cols[name])
            unit = COLUMN_UNITS[name]
            field_meta = {b"unit": unit.to_string().encode()} if unit is not None else None
            fields.append(pa.field(name, arr.type, metadata=field_meta))
            arrays.append(arr)
        schema = pa.schema(fields, metadata={_META_KEY: json.dumps(meta).encode()})
        path = self.tile_path(pix)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            pq.write_table(pa.Table.from_arrays(arrays, schema=schema), tmp, compression="zstd")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def usable_tiles(
        self, ra_deg: float, dec_deg: float, radius_deg: float
    ) -> tuple[dict[int, CachedTile], list[int]]:
        """Cached tiles that can serve a cone, and the tiles (sorted) that cannot."""
        ra, dec, r = _check_cone(ra_deg, dec_deg, radius_deg)
        usable: dict[int, CachedTile] = {}
        missing: list[int] = []
        for pix in self.tiles_for_cone(ra, dec, r):
            tile = self.read_tile(pix)
            if tile is not None and tile.coverage.contains(ra, dec, r):
                usable[pix] = tile
            else:
                missing.append(pix)
        return usable, missing

    def missing_tiles(self, ra_deg: float, dec_deg: float, radius_deg: float) -> list[int]:
        """The tiles of a cone that the cache cannot serve (absent, unreadable, partial)."""
        return self.usable_tiles(ra_deg, dec_deg, radius_deg)[1]

    def seed_from_catalogue(
        self,
        table: Table,
        ra0: float,
        dec0: float,
        radius_deg: float,
        *,
        origin: str | None = None,
    ) -> list[int]:
        """Store a local catalogue complete within a cone into the tiles it touches.

        Each touched tile gets the catalogue's rows inside it and the cone as coverage; full
        tiles (fetched online) are left alone; an earlier seed is replaced (last seed wins,
        as two simulated catalogues of one sky do not mix). Returns the tiles written.
        """
        ra0, dec0, r = _check_cone(ra0, dec0, radius_deg)
        epoch = table.meta.get("epoch", GAIA_EPOCH_JYEAR)
        if abs(float(epoch) - GAIA_EPOCH_JYEAR) > 1e-6:
            raise ValueError(f"catalogue epoch {epoch} is not Gaia DR3's {GAIA_EPOCH_JYEAR}")
        cols = _as_columns(table, "seed catalogue")
        inside = angular_separation_deg(ra0, dec0, cols["RA_ICRS"], cols["DE_ICRS"]) <= r
        cols = _select(cols, inside)
        pix_of_row = self.tile_of(cols["RA_ICRS"], cols["DE_ICRS"])
        origin = origin or f"seed: {table.meta.get('catalogue', 'local catalogue')}"
        coverage = TileCoverage.cone(ra0, dec0, r)
        written, kept = [], []
        for pix in self.tiles_for_cone(ra0, dec0, r):
            old = self.read_tile(pix)
            if old is not None and old.coverage.is_full:
                kept.append(pix)
                continue
            self.write_tile(pix, _to_table(_select(cols, pix_of_row == pix)), coverage, origin)
            written.append(pix)
        log.info(
            "Gaia cache seeded with %d star(s) in %s: %d tile(s) written, %d full tile(s) kept",
            int(inside.sum()),
            _cone_text(ra0, dec0, r),
            len(written),
            len(kept),
        )
        return written

    def seed_from_file(self, path: str | Path) -> list[int]:
        """Seed from a catalogue Parquet file whose meta gives ra0, dec0, radius_deg."""
        path = Path(path)
        pt = pq.read_table(path)
        raw = (pt.schema.metadata or {}).get(_META_KEY)
        meta = json.loads(raw.decode()) if raw else {}
        try:
            ra0, dec0, r = (float(meta[k]) for k in ("ra0", "dec0", "radius_deg"))
        except KeyError:
            raise ValueError(f"{path}: no ra0/dec0/radius_deg in its metadata") from None
        table = Table({name: pt.column(name).to_numpy() for name in pt.column_names}, meta=meta)
        return self.seed_from_catalogue(table, ra0, dec0, r, origin=f"seed: {path.name}")


# -- The client --------------------------------------------------------------------------------


def _url_vizier(base_url: str) -> Any:
    """An astroquery VizierClass whose requests go to `base_url` + /viz-bin/<type>."""
    from astroquery.vizier import VizierClass

    class _UrlVizier(VizierClass):
        def _server_to_url(self, return_type: str = "votable") -> str:
            return f"{base_url}/viz-bin/{return_type}"

    return _UrlVizier


class GaiaClient:
    """Gaia DR3 cones from the tile cache, filled from VizieR (TAP as fallback) when online.

    `vizier_server` is a VizieR mirror host name (astroquery's default when None) or a base
    URL with scheme (e.g. a local test server); `tap_url` the TAP service base (ESA's when
    None). A service that failed (after `retries` retries with backoff `backoff_s` x 2^n) is
    not called again by this client. `online=False` never touches the network.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        *,
        online: bool = True,
        timeout_s: float = 60.0,
        retries: int = 2,
        nside: int = DEFAULT_NSIDE,
        vizier_server: str | None = None,
        tap_url: str | None = None,
        backoff_s: float = 1.0,
        tap_maxrec: int = 3_000_000,
    ) -> None:
        self.cache = GaiaCache(cache_dir, nside)
        self.online = online
        self.timeout_s = float(timeout_s)
        self.retries = max(0, int(retries))
        self.backoff_s = float(backoff_s)
        self.vizier_server = vizier_server.rstrip("/") if vizier_server else None
        tap = (tap_url or GAIA_TAP_URL).rstrip("/")
        self.tap_sync_url = tap if tap.endswith("/sync") else tap + "/sync"
        self.tap_maxrec = int(tap_maxrec)
        self._down: dict[str, str] = {}  # service -> why it is no longer called
        self._vizier: Any = None

    @property
    def services_down(self) -> dict[str, str]:
        """Services this client no longer calls, and why."""
        return dict(self._down)

    def missing_tiles(self, ra_deg: float, dec_deg: float, radius_deg: float) -> list[int]:
        """Tiles of a cone the cache cannot serve (what a cone() call would fetch); no network."""
        return self.cache.missing_tiles(ra_deg, dec_deg, radius_deg)

    def cone(
        self,
        ra_deg: float,
        dec_deg: float,
        radius_deg: float,
        *,
        epoch: datetime | float | None = None,
    ) -> Table:
        """Gaia DR3 rows (GAIA_COLUMNS) within a cone; with `epoch`, also ra_epoch/dec_epoch."""
        ra, dec, r = _check_cone(ra_deg, dec_deg, radius_deg)
        usable, missing = self.cache.usable_tiles(ra, dec, r)
        parts = {pix: tile.table for pix, tile in usable.items()}
        origins = {tile.origin for tile in usable.values()}
        if missing:
            if not self.online:
                raise GaiaUnavailable(self._offline_message(ra, dec, r, missing))
            failures = []
            for pix in missing:
                try:
                    parts[pix], origin = self._fetch_tile(pix)
                    origins.add(origin)
                except GaiaUnavailable as exc:
                    failures.append(f"tile {pix}: {exc}")
            if failures:
                raise GaiaUnavailable(
                    f"Gaia DR3 cone {_cone_text(ra, dec, r)}: {len(failures)} of "
                    f"{len(usable) + len(missing)} HEALPix tile(s) (nside {self.cache.nside}) "
                    f"could not be fetched (tiles fetched meanwhile are cached; try again "
                    f"later or seed the cache): {'; '.join(failures)}"
                )
        cols = _concat(_as_columns(parts[pix], f"tile {pix}") for pix in sorted(parts))
        sep = angular_separation_deg(ra, dec, cols["RA_ICRS"], cols["DE_ICRS"])
        cols = _select(cols, sep <= r)
        meta = {
            "catalogue": _CATALOGUE_NAME,
            "epoch": GAIA_EPOCH_JYEAR,
            "ra0": ra,
            "dec0": dec,
            "radius_deg": r,
            "hpx_nside": self.cache.nside,
            "tiles": sorted(parts),
            "origins": sorted(origins),
        }
        table = _to_table(cols, meta)
        if epoch is not None:
            target = julian_epoch(epoch)
            years = target - GAIA_EPOCH_JYEAR
            ra_e, dec_e = propagate_to_epoch(
                cols["RA_ICRS"], cols["DE_ICRS"], cols["pmRA"], cols["pmDE"], years
            )
            table["ra_epoch"] = ra_e * u.deg
            table["dec_epoch"] = dec_e * u.deg
            table.meta["target_epoch"] = target
        return table

    def _offline_message(self, ra: float, dec: float, r: float, missing: list[int]) -> str:
        shown = ", ".join(str(p) for p in missing[:20])
        if len(missing) > 20:
            shown += f", ... ({len(missing) - 20} more)"
        return (
            f"Gaia DR3 cone {_cone_text(ra, dec, r)}: offline and {len(missing)} HEALPix "
            f"tile(s) (nside {self.cache.nside}, nested) are not in the cache "
            f"{self.cache.folder} or only partly (seeded by a cone that does not contain this "
            f"one): {shown}. Fill them by running once online (GaiaClient(..., online=True)) "
            "or by seeding the cache from a local catalogue that covers this cone "
            "(GaiaCache.seed_from_catalogue / seed_from_file, e.g. the simulator's "
            "gaia_NNNNN.parquet)."
        )

    # -- fetching -------------------------------------------------------------------------

    def _fetch_tile(self, pix: int) -> tuple[Table, str]:
        """Fetch a whole tile (VizieR, then TAP), cache it; GaiaUnavailable says why not."""
        ra, dec, r = self.cache.tile_cone(pix)
        problems = []
        services: tuple[tuple[str, Callable[[], Table]], ...] = (
            ("vizier", lambda: self._call("vizier", lambda: self._vizier_once(ra, dec, r))),
            ("tap", lambda: self._call("tap", lambda: self._tap_once(ra, dec, r))),
        )
        for name, fetch in services:
            try:
                table = fetch()
            except _ServiceError as exc:
                problems.append(f"{name}: {exc}")
                continue
            cols = _as_columns(table, name)
            cols = _select(cols, self.cache.tile_of(cols["RA_ICRS"], cols["DE_ICRS"]) == pix)
            tile = _to_table(cols)
            try:
                self.cache.write_tile(pix, tile, TileCoverage.full(), name)
            except OSError as exc:
                log.warning("Gaia tile %d could not be cached (%s); used uncached", pix, exc)
            log.info(
                "Gaia tile %d (nside %d): %d star(s) from %s",
                pix,
                self.cache.nside,
                len(tile),
                name,
            )
            return tile, name
        raise GaiaUnavailable("; ".join(problems))

    def _call(self, service: str, once: Callable[[], _T]) -> _T:
        """`once()` with retries and backoff; a failure opens the breaker for `service`."""
        if service in self._down:
            raise _ServiceError(f"failed earlier, not tried again ({self._down[service]})")
        error = ""
        attempts = 0
        for attempt in range(self.retries + 1):
            attempts += 1
            try:
                return once()
            except GaiaAnswerError as exc:
                if exc.truncated:  # deterministic: no retry, the service itself is fine
                    raise _ServiceError(str(exc), retry=False) from None
                error = str(exc)
            except _ServiceError as exc:
                error = str(exc)
                if not exc.retry:
                    break
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        why = f"{error}; {attempts} attempt(s)"
        self._down[service] = why
        log.warning("Gaia service %s failed (%s); not called again by this client", service, why)
        raise _ServiceError(why, retry=False)

    def _vizier_instance(self) -> Any:
        if self._vizier is None:
            from astroquery.vizier import VizierClass

            kwargs = {"columns": list(GAIA_COLUMNS), "row_limit": -1, "timeout": self.timeout_s}
            server = self.vizier_server
            if server and "://" in server:
                self._vizier = _url_vizier(server)(**kwargs)
            elif server:
                self._vizier = VizierClass(vizier_server=server, **kwargs)
            else:
                self._vizier = VizierClass(**kwargs)
        return self._vizier

    def _vizier_once(self, ra: float, dec: float, r: float) -> Table:
        import requests
        from astropy.coordinates import SkyCoord

        viz = self._vizier_instance()
        try:
            resp = viz.query_region_async(
                SkyCoord(ra * u.deg, dec * u.deg, frame="icrs"),
                radius=r * u.deg,
                catalog=VIZIER_CATALOGUE,
                frame="icrs",
                cache=False,
            )
        except (requests.RequestException, OSError) as exc:
            raise _ServiceError(f"{type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            raise _ServiceError(
                f"HTTP {resp.status_code} {resp.reason} from {resp.url}",
                retry=resp.status_code >= 500 or resp.status_code == 429,
            )
        return parse_vizier_votable(resp.content)

    def _tap_once(self, ra: float, dec: float, r: float) -> Table:
        import http.client
        import urllib.error
        import urllib.request
        from urllib.parse import urlencode

        form = {
            "REQUEST": "doQuery",
            "LANG": "ADQL",
            "FORMAT": "votable",
            "MAXREC": str(self.tap_maxrec),
            "QUERY": tap_query(ra, dec, r),
        }
        request = urllib.request.Request(
            self.tap_sync_url, data=urlencode(form).encode(), headers={"User-Agent": _USER_AGENT}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                content = resp.read()
        except urllib.error.HTTPError as exc:
            detail = _tap_error_text(exc.read())
            raise _ServiceError(
                f"HTTP {exc.code} {exc.reason} from {self.tap_sync_url}"
                + (f" ({detail})" if detail else ""),
                retry=exc.code >= 500 or exc.code == 429,
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None)
            raise _ServiceError(
                f"{type(exc).__name__}: {reason if reason is not None else exc}"
            ) from None
        return parse_tap_votable(content)


def _tap_error_text(body: bytes) -> str:
    """The message of a TAP error document (QUERY_STATUS ERROR), if the body is one."""
    m = re.search(rb"QUERY_STATUS[^>]*ERROR[^>]*>(.*?)</INFO>", body or b"", re.S | re.I)
    text = m.group(1) if m else b""
    return " ".join(text.decode("utf-8", "replace").split())[:300]


__all__ = [
    "COLUMN_UNITS",
    "DEFAULT_NSIDE",
    "GAIA_COLUMNS",
    "GAIA_EPOCH_JYEAR",
    "GAIA_TAP_TABLE",
    "GAIA_TAP_URL",
    "TAP_COLUMNS",
    "VIZIER_CATALOGUE",
    "CachedTile",
    "GaiaAnswerError",
    "GaiaCache",
    "GaiaClient",
    "GaiaUnavailable",
    "TileCoverage",
    "angular_separation_deg",
    "julian_epoch",
    "parse_tap_votable",
    "parse_vizier_votable",
    "propagate_to_epoch",
    "tap_query",
]
