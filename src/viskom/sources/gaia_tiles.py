"""The on-disk HEALPix tile cache of Gaia DR3 rows, and the sky geometry it needs; no network.

The sky is cut into HEALPix tiles (astropy_healpix, nested, ICRS); a tile is one Parquet file
`cache_dir/hpx<nside>/<pix>.parquet`, written atomically. The file's schema metadata
(`viskom_meta`, JSON; the layout of the simulator's `write_gaia_catalogue`, so tiles read with
`read_gaia_catalogue` and vice versa) holds the tile's coverage: the full tile (fetched online)
or a cone (ra, dec, radius) when the tile was seeded from a local catalogue that covers only
part of it (`GaiaCache.seed_from_catalogue`, e.g. the simulator's `gaia_NNNNN.parquet`). A cone
is served from the cache when each tile it touches is full, or seeded by a cone containing it.
Empty tiles are valid cached results; an unreadable tile file is reported (warning) and treated
as missing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy import units as u
from astropy.table import Table

from viskom.sources.gaia_tables import (
    CATALOGUE_NAME,
    COLUMN_UNITS,
    GAIA_COLUMNS,
    GAIA_EPOCH_JYEAR,
    as_columns,
    select_rows,
    to_table,
)
from viskom.store.atomic import atomic_path

log = logging.getLogger(__name__)

# nside 64: tiles of ~0.92 deg (0.84 deg2), so a 0.45-0.6 deg VIS cone touches ~4-9 tiles, each
# fetched once as a ~0.75 deg cone (a few thousand stars off the plane), well within timeouts.
DEFAULT_NSIDE = 64
MAX_RADIUS_DEG = 5.0  # larger cones would mean hundreds of tile fetches
_BOUNDARY_STEP = 16  # points per tile side when measuring distances to a tile
_TILE_TOLERANCE_DEG = 1e-3  # a tile this close to a cone counts as touched (polyline error)
_FETCH_MARGIN_DEG = 0.01  # added to the circumscribing radius of a tile when fetching it
_CONTAIN_EPS_DEG = 1e-9
_META_KEY = b"viskom_meta"


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


def check_cone(ra_deg: float, dec_deg: float, radius_deg: float) -> tuple[float, float, float]:
    """(ra mod 360, dec, radius) of a valid cone; ValueError when it is not a sky cone."""
    ra, dec, r = float(ra_deg), float(dec_deg), float(radius_deg)
    if not (math.isfinite(ra) and math.isfinite(dec) and -90.0 <= dec <= 90.0):
        raise ValueError(f"cone centre RA {ra_deg!r}, Dec {dec_deg!r} is not a sky position")
    if not (math.isfinite(r) and 0.0 < r <= MAX_RADIUS_DEG):
        raise ValueError(f"cone radius {radius_deg!r} deg is not in (0, {MAX_RADIUS_DEG}]")
    return ra % 360.0, dec, r


def cone_text(ra: float, dec: float, r: float) -> str:
    """A cone for messages: "RA 56.20000 Dec -55.70000 r 0.3000 deg"."""
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
        return f"cone {cone_text(self.ra or 0.0, self.dec or 0.0, self.radius_deg or 0.0)}"


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
        ra, dec, r = check_cone(ra_deg, dec_deg, radius_deg)
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
            cols = as_columns(table, path.name)
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            log.warning(
                "Gaia cache tile %s is unreadable (%s: %s); treated as missing",
                path,
                type(exc).__name__,
                exc,
            )
            return None
        return CachedTile(int(pix), to_table(cols), coverage, str(meta.get("origin", "")))

    def write_tile(self, pix: int, table: Table, coverage: TileCoverage, origin: str) -> Path:
        """Store a tile's rows (those of the tile only) atomically; returns the file."""
        cols = as_columns(table, f"tile {pix}")
        cols = select_rows(cols, self.tile_of(cols["RA_ICRS"], cols["DE_ICRS"]) == int(pix))
        meta = {
            "catalogue": CATALOGUE_NAME,
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
        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_arrays(arrays, schema=schema), tmp, compression="zstd")
        return path

    def usable_tiles(
        self, ra_deg: float, dec_deg: float, radius_deg: float
    ) -> tuple[dict[int, CachedTile], list[int]]:
        """Cached tiles that can serve a cone, and the tiles (sorted) that cannot."""
        ra, dec, r = check_cone(ra_deg, dec_deg, radius_deg)
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
        ra0, dec0, r = check_cone(ra0, dec0, radius_deg)
        epoch = table.meta.get("epoch", GAIA_EPOCH_JYEAR)
        if abs(float(epoch) - GAIA_EPOCH_JYEAR) > 1e-6:
            raise ValueError(f"catalogue epoch {epoch} is not Gaia DR3's {GAIA_EPOCH_JYEAR}")
        cols = as_columns(table, "seed catalogue")
        inside = angular_separation_deg(ra0, dec0, cols["RA_ICRS"], cols["DE_ICRS"]) <= r
        cols = select_rows(cols, inside)
        pix_of_row = self.tile_of(cols["RA_ICRS"], cols["DE_ICRS"])
        origin = origin or f"seed: {table.meta.get('catalogue', 'local catalogue')}"
        coverage = TileCoverage.cone(ra0, dec0, r)
        written, kept = [], []
        for pix in self.tiles_for_cone(ra0, dec0, r):
            old = self.read_tile(pix)
            if old is not None and old.coverage.is_full:
                kept.append(pix)
                continue
            self.write_tile(pix, to_table(select_rows(cols, pix_of_row == pix)), coverage, origin)
            written.append(pix)
        log.info(
            "Gaia cache seeded with %d star(s) in %s: %d tile(s) written, %d full tile(s) kept",
            int(inside.sum()),
            cone_text(ra0, dec0, r),
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
