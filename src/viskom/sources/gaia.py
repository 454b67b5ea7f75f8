"""Gaia DR3 cone searches (VIS-REFERENCE 7) through an on-disk HEALPix tile cache.

What: `GaiaClient.cone` returns the Gaia DR3 stars in a cone with the VizieR I/355/gaiadr3 column
names (`GAIA_COLUMNS`; positions ICRS at epoch 2016.0) and, given an exposure epoch, the
positions moved by the proper motions (`propagate_to_epoch`, the simulator's formula).

Why a tile cache (`viskom.sources.gaia_tiles`): VIS fields (cones of 0.45-0.6 deg) are
revisited and overlap, large cones time out, and the monitor must keep working offline. A tile
is fetched once, as a cone around its centre that circumscribes it, trimmed to the tile.

Missing tiles come from VizieR through astroquery (columns asked for by name, no row limit,
astroquery's own cache off), with ESA's Gaia TAP service (`gaiadr3.gaia_source`, synchronous
ADQL, column names mapped to VizieR's; `viskom.sources.gaia_tables`) as fallback. Both go
through the client's HTTP session (`viskom.sources.http`: timeouts, retries with backoff; the
astroquery query object is given that session); an unusable answer is asked again on the same
schedule, and a service that keeps failing is not tried again for the client's lifetime
(circuit breaker). A truncated answer (QUERY_STATUS OVERFLOW) is never cached. Offline, the
network is never touched and `GaiaUnavailable` names the cone, the missing tiles and how to
fill them. The names of the tile cache and table modules are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from astropy import units as u
from astropy.table import Table

from viskom.sources.gaia_tables import (
    CATALOGUE_NAME,
    COLUMN_UNITS,
    E_GMAG_FACTOR,
    GAIA_COLUMNS,
    GAIA_EPOCH_JYEAR,
    GAIA_TAP_TABLE,
    GAIA_TAP_URL,
    TAP_COLUMNS,
    VIZIER_CATALOGUE,
    GaiaAnswerError,
    as_columns,
    concat_columns,
    julian_epoch,
    parse_tap_votable,
    parse_vizier_votable,
    propagate_to_epoch,
    select_rows,
    tap_error_text,
    tap_query,
    to_table,
)
from viskom.sources.gaia_tiles import (
    DEFAULT_NSIDE,
    MAX_RADIUS_DEG,
    CachedTile,
    GaiaCache,
    TileCoverage,
    angular_separation_deg,
    check_cone,
    cone_text,
)
from viskom.sources.http import HttpClient, ServiceError

log = logging.getLogger(__name__)

_USER_AGENT = "viskom-gaia/0.1 (Euclid VIS quick-look monitor)"

_T = TypeVar("_T")


class GaiaUnavailable(RuntimeError):  # noqa: N818 (name asked for by the callers)
    """The cache cannot serve a cone and the services cannot (or may not) fill it; says why."""

    transient = True  # the runner's failure class: later runs retry it, with backoff


class _ServiceError(Exception):
    """A service gave no usable answer (after its retries), or may not be called any more."""


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
    not called again by this client. `online=False` never touches the network. All requests
    go through `self.http` (one session, timeouts `timeout_s` on every call).
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
        unreachable_file: str | Path | None = None,
        retry_after_s: float = 600.0,
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
        self.http = HttpClient(
            timeout_s=self.timeout_s,
            retries=self.retries,
            backoff_s=self.backoff_s,
            user_agent=_USER_AGENT,
            breaker_file=unreachable_file,
            breaker_shared_s=retry_after_s,
        )  # its breaker (no cooldown) holds the services no longer called; with
        # `unreachable_file`, so do the other clients' for `retry_after_s` (fail fast)
        self._vizier: Any = None

    @property
    def services_down(self) -> dict[str, str]:
        """Services this client no longer calls, and why."""
        return self.http.breaker.open

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
        ra, dec, r = check_cone(ra_deg, dec_deg, radius_deg)
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
                    f"Gaia DR3 cone {cone_text(ra, dec, r)}: {len(failures)} of "
                    f"{len(usable) + len(missing)} HEALPix tile(s) (nside {self.cache.nside}) "
                    f"could not be fetched (tiles fetched meanwhile are cached; try again "
                    f"later or seed the cache): {'; '.join(failures)}"
                )
        cols = concat_columns(as_columns(parts[pix], f"tile {pix}") for pix in sorted(parts))
        sep = angular_separation_deg(ra, dec, cols["RA_ICRS"], cols["DE_ICRS"])
        cols = select_rows(cols, sep <= r)
        meta = {
            "catalogue": CATALOGUE_NAME,
            "epoch": GAIA_EPOCH_JYEAR,
            "ra0": ra,
            "dec0": dec,
            "radius_deg": r,
            "hpx_nside": self.cache.nside,
            "tiles": sorted(parts),
            "origins": sorted(origins),
        }
        table = to_table(cols, meta)
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
            f"Gaia DR3 cone {cone_text(ra, dec, r)}: offline and {len(missing)} HEALPix "
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
            cols = as_columns(table, name)
            cols = select_rows(cols, self.cache.tile_of(cols["RA_ICRS"], cols["DE_ICRS"]) == pix)
            tile = to_table(cols)
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
        """`once()`, asked again while its answer is unusable (the session retries failed
        requests itself); a failure opens the breaker for `service`, a truncated answer not."""
        down = self.http.breaker.reason(service)
        if down is not None:
            raise _ServiceError(f"failed earlier, not tried again ({down})")
        try:
            return self.http.reask(
                once, GaiaAnswerError, when=lambda exc: not getattr(exc, "truncated", False)
            )
        except GaiaAnswerError as exc:
            if exc.truncated:  # deterministic: no retry, the service itself is fine
                raise _ServiceError(str(exc)) from None
            why = f"{exc}; {self.retries + 1} attempt(s)"
        except ServiceError as exc:
            why = f"{exc}; {exc.attempts} attempt(s)"
        self.http.breaker.trip(service, why)
        log.warning("Gaia service %s failed (%s); not called again by this client", service, why)
        raise _ServiceError(why)

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
            self._vizier._session = self.http.session  # astroquery's BaseQuery session
        return self._vizier

    def _vizier_once(self, ra: float, dec: float, r: float) -> Table:
        """One VizieR cone through astroquery (on our session); ServiceError if it failed."""
        from astropy.coordinates import SkyCoord

        viz = self._vizier_instance()
        try:
            resp = self.http.send(
                lambda: viz.query_region_async(
                    SkyCoord(ra * u.deg, dec * u.deg, frame="icrs"),
                    radius=r * u.deg,
                    catalog=VIZIER_CATALOGUE,
                    frame="icrs",
                    cache=False,
                )
            )
        except ServiceError as exc:
            if exc.status is None:
                raise
            raise ServiceError(
                f"{exc.error} from {exc.url}", exc.url, attempts=exc.attempts
            ) from None
        return parse_vizier_votable(resp.content)

    def _tap_once(self, ra: float, dec: float, r: float) -> Table:
        """One synchronous ADQL cone on the Gaia TAP service; ServiceError if it failed."""
        form = {
            "REQUEST": "doQuery",
            "LANG": "ADQL",
            "FORMAT": "votable",
            "MAXREC": str(self.tap_maxrec),
            "QUERY": tap_query(ra, dec, r),
        }
        try:
            content = self.http.post(self.tap_sync_url, data=form)
        except ServiceError as exc:
            if exc.status is None:
                raise
            detail = tap_error_text(exc.body)
            raise ServiceError(
                f"{exc.error} from {self.tap_sync_url}" + (f" ({detail})" if detail else ""),
                self.tap_sync_url,
                attempts=exc.attempts,
            ) from None
        return parse_tap_votable(content)


__all__ = [
    "COLUMN_UNITS",
    "DEFAULT_NSIDE",
    "E_GMAG_FACTOR",
    "GAIA_COLUMNS",
    "GAIA_EPOCH_JYEAR",
    "GAIA_TAP_TABLE",
    "GAIA_TAP_URL",
    "MAX_RADIUS_DEG",
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
