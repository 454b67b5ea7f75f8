"""GOES space weather for viskom: `GoesClient` gets SWPC's feeds and NCEI's daily archive files.

The client fetches over HTTP (`viskom.sources.http`: timeouts, retries, circuit breaker) into
an on-disk cache, serves the cache offline or when the service fails, and chooses which file
and satellite to use for a day (see its docstring). What the feeds and files look like is
`viskom.sources.goes_files` (SWPC JSON, NCEI names) and `viskom.sources.goes_netcdf` (reading
the netCDF files); their public names are re-exported here for the callers. Writers of the
NCEI layouts (test data) are `viskom.sources.simulator.goes_files`.
"""

from __future__ import annotations

import logging
import re
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import numpy as np

from viskom.sources.goes_files import (
    ARCHIVE_BASES,
    NCEI_GOESR_BASE,
    NCEI_PRODUCTS,
    NCEI_REPROCESSED_XRS_BASE,
    SATELLITE_PREFERENCE,
    SWPC_BASE,
    SWPC_FEEDS,
    XRS_BANDS,
    NceiProduct,
    as_utc,
    best_version,
    days_covering,
    file_pattern,
    load_swpc_json,
    ncei_filename,
    ncei_product,
    parse_index_names,
    parse_swpc_protons,
    parse_swpc_xrays,
    primary_satellite,
    satellite_name,
    satellite_number,
    swpc_proton_series,
)
from viskom.sources.goes_netcdf import (
    SGPS_THRESHOLD_KEV,
    GoesFileError,
    ProtonSeries,
    XrsSeries,
    good_samples,
    parse_time_units,
    read_sgps,
    read_xrs,
)
from viskom.sources.http import HttpClient, ServiceError
from viskom.store.atomic import atomic_path, write_bytes_atomic

log = logging.getLogger(__name__)


class GoesUnavailableError(RuntimeError):
    """Neither the service nor the cache can give what was asked; the message says which.

    `no_data` is True when the archive answered for every satellite tried and has no file
    for the day (nothing to wait for), False when it could not be asked or its file could not
    be used (worth trying again later).
    """

    def __init__(self, message: str, *, no_data: bool = False) -> None:
        super().__init__(message)
        self.no_data = no_data


class MissingDay(str):
    """A missing-day message of `GoesClient.xrs_range`/`protons_range`, with the error's
    `no_data` (see GoesUnavailableError)."""

    no_data: bool = False

    def __new__(cls, message: str, no_data: bool = False) -> MissingDay:
        obj = super().__new__(cls, message)
        obj.no_data = bool(no_data)
        return obj


@dataclass
class Fetched:
    """Bytes of a feed and where they came from."""

    content: bytes
    from_cache: bool
    note: str = ""


_S = TypeVar("_S", XrsSeries, ProtonSeries)


class _NoDataError(Exception):
    """The archive answered, and has no file for that day (404, or not in the folder)."""


class _ServiceFailedError(Exception):
    """The archive could not be reached or kept failing (timeouts, connection, 5xx)."""


class GoesClient:
    """GOES data with an on-disk cache: SWPC's 7-day JSON feeds and NCEI's daily archive files.

    Online it fetches and caches; offline (or when the service fails) it serves the cache and
    says so. NCEI files go to `cache_dir/ncei/<NCEI product>/gNN/YYYY/MM/<file name>` (see
    `cache_path_for`; the simulator may write files there), SWPC feeds to
    `cache_dir/swpc/<feed>`. An archive day is fetched once; a copy fetched before that day
    had ended plus `settle_s` (today's file still grows) is fetched again when older than
    `refresh_after_s`. After a failure other than a 404 (connection, timeout, HTTP 5xx, after
    the retries) the archive host is not tried again for `breaker_cooldown_s`: later calls go
    straight to the cache or fail with a message saying the service was unreachable.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        *,
        swpc_base: str = SWPC_BASE,
        timeout_s: float = 20.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        offline: bool = False,
        archive_bases: Sequence[tuple[int, int, str]] = ARCHIVE_BASES,
        satellite_preference: Sequence[tuple[date, Sequence[int]]] = SATELLITE_PREFERENCE,
        refresh_after_s: float = 3600.0,
        settle_s: float = 6 * 3600.0,
        breaker_cooldown_s: float = 600.0,
        listing_ttl_s: float = 600.0,
        unreachable_file: str | Path | None = None,
        retry_after_s: float = 600.0,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.swpc_base = swpc_base.rstrip("/") + "/"
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.http = HttpClient(
            timeout_s=timeout_s,
            retries=retries,
            backoff_s=backoff_s,
            breaker_cooldown_s=breaker_cooldown_s,
            breaker_file=unreachable_file,
            breaker_shared_s=retry_after_s,
        )
        self.offline = offline
        self.archive_bases = tuple(archive_bases)
        self.satellite_preference = tuple(
            sorted(((d, tuple(s)) for d, s in satellite_preference), key=lambda e: e[0])
        )
        self.refresh_after_s = refresh_after_s
        self.settle_s = settle_s
        self.breaker_cooldown_s = breaker_cooldown_s
        self.listing_ttl_s = listing_ttl_s
        self._listings: dict[str, tuple[float, list[str]]] = {}

    def _cache_path(self, feed: str) -> Path:
        return self.cache_dir / "swpc" / feed

    def fetch_swpc(self, feed: str) -> Fetched:
        """One SWPC feed (e.g. 'xrays-7-day.json'), fresh if possible, else from the cache.

        A malformed answer is asked again (as a failed request is) and never cached.
        """
        if feed not in SWPC_FEEDS:
            raise ValueError(f"unknown SWPC feed {feed!r}; known: {', '.join(SWPC_FEEDS)}")
        cached = self._cache_path(feed)
        if self.offline:
            if cached.exists():
                return Fetched(cached.read_bytes(), True, "offline: cached copy")
            raise GoesUnavailableError(f"offline and {feed} is not in the cache ({cached})")

        def once() -> bytes:
            content = self.http.get(self.swpc_base + feed)
            load_swpc_json(content, feed)  # never cache a broken answer
            return content

        try:
            content = self.http.reask(once, GoesFileError)
        except ServiceError as exc:
            error = exc.error
        except GoesFileError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            try:
                write_bytes_atomic(cached, content)
            except OSError as exc:
                log.warning("SWPC feed %s could not be cached (%s); used uncached", feed, exc)
            return Fetched(content, False)
        if cached.exists():
            return Fetched(cached.read_bytes(), True, f"service failed ({error}); cached copy")
        raise GoesUnavailableError(f"{feed}: service failed ({error}) and nothing is cached")

    # -- NCEI archive: where things are ----------------------------------------------------

    def preferred_satellites(self, day: date) -> tuple[int, ...]:
        """The satellites to try for a day, in order (from `satellite_preference`)."""
        chosen: tuple[int, ...] = ()
        for first, satellites in self.satellite_preference:
            if first <= day:
                chosen = satellites
        return chosen

    def archive_folder_url(self, product: str, satellite: int | str, day: date) -> str:
        """URL of the NCEI month folder that holds a day's files of a product and satellite."""
        prod, sat = ncei_product(product), satellite_number(satellite)
        for first, last, base in self.archive_bases:
            if first <= sat <= last:
                root = base.format(sat=sat).rstrip("/")
                return f"{root}/{prod.folder}/{day:%Y}/{day:%m}/"
        raise ValueError(f"no archive base URL configured for GOES-{sat}")

    def cache_path_for(self, product: str, satellite: int | str, day: date, filename: str) -> Path:
        """Where a day file lives in the cache: ncei/<NCEI product>/gNN/YYYY/MM/<filename>."""
        prod = ncei_product(product)
        folder = self.cache_dir / "ncei" / prod.name / satellite_name(satellite)
        return folder / f"{day:%Y}" / f"{day:%m}" / filename

    def cached_file(self, product: str, satellite: int | str, day: date) -> Path | None:
        """The cached file (highest version) of a day, product and satellite, if any."""
        prod, sat = ncei_product(product), satellite_number(satellite)
        folder = self.cache_path_for(prod, sat, day, "x").parent
        if not folder.is_dir():
            return None
        best = best_version((p.name for p in folder.iterdir()), file_pattern(prod, sat, day))
        return folder / best if best else None

    def cached_days(self, product: str = "avg1m", satellite: int | str | None = None) -> list[date]:
        """The days of a product in the cache (any satellite unless given), sorted; no network."""
        prod = ncei_product(product)
        root = self.cache_dir / "ncei" / prod.name
        sats = f"g{satellite_number(satellite):02d}" if satellite is not None else "g*"
        pattern = re.compile(rf"sci_{re.escape(prod.name)}_g\d+_d(\d{{8}})_v\d+-\d+-\d+\.nc")
        days = set()
        for path in root.glob(f"{sats}/*/*/*.nc"):
            if m := pattern.fullmatch(path.name):
                days.add(datetime.strptime(m.group(1), "%Y%m%d").date())
        return sorted(days)

    # -- NCEI archive: one day ---------------------------------------------------------------

    def xrs_day(
        self, day: date, satellite: int | str | None = None, product: str = "avg1m"
    ) -> XrsSeries:
        """One UTC day of XRS fluxes ("avg1m" or "flx1s"); GoesUnavailableError says why not."""
        prod = ncei_product(product)
        if prod.key not in ("avg1m", "flx1s"):
            raise ValueError(f"{product!r} is not an XRS product (avg1m or flx1s)")
        return self._day(prod, _as_day(day), satellite, read_xrs)

    def protons_day(self, day: date, satellite: int | str | None = None) -> ProtonSeries:
        """One UTC day of >= 10 MeV protons from SGPS; GoesUnavailableError says why not."""
        return self._day(NCEI_PRODUCTS["sgps"], _as_day(day), satellite, read_sgps)

    def _day(
        self,
        prod: NceiProduct,
        day: date,
        satellite: int | str | None,
        reader: Callable[[Path], _S],
    ) -> _S:
        if satellite is not None:
            sats: tuple[int, ...] = (satellite_number(satellite),)
        else:
            sats = self.preferred_satellites(day)
        if not sats:
            raise GoesUnavailableError(f"GOES {prod.label}: no satellite to try for {day}")
        missing = f"GOES {prod.label} missing for {day.isoformat()}"
        # 1. The cache, without any network access (any satellite of the list).
        stale: dict[int, Path] = {}
        for sat in sats:
            path = self.cached_file(prod, sat, day)
            if path is None:
                continue
            if self.offline or not self._may_have_grown(path, day):
                series = self._read_cached(path, reader)
                if series is not None:
                    return series
            else:
                stale[sat] = path
        if self.offline:
            tried = ", ".join(satellite_name(s) for s in sats)
            raise GoesUnavailableError(
                f"{missing} (offline, not cached: {tried}; cache {self.cache_dir / 'ncei'})"
            )
        # 2. The archive, satellite after satellite; a stale copy beats nothing.
        problems = []
        all_no_data = True
        for sat in sats:
            name = satellite_name(sat)
            down = self._service_down(self.archive_folder_url(prod, sat, day))
            try:
                if down:
                    raise _ServiceFailedError(f"unreachable earlier, not tried again: {down}")
                return self._download(prod, sat, day, reader)
            except _NoDataError as exc:
                problem = f"{name}: {exc}"
            except _ServiceFailedError as exc:
                problem, all_no_data = f"{name}: service unreachable ({exc})", False
            except GoesFileError as exc:
                problem = f"{name}: downloaded file unusable, not cached ({exc})"
                all_no_data = False
            if sat in stale:
                series = self._read_cached(stale[sat], reader)
                if series is not None:
                    log.warning("%s; using the cached copy %s", problem, stale[sat].name)
                    return series
            problems.append(problem)
        raise GoesUnavailableError(f"{missing} ({'; '.join(problems)})", no_data=all_no_data)

    def _may_have_grown(self, path: Path, day: date) -> bool:
        """A copy fetched before the day ended (+ settle_s) and older than refresh_after_s."""
        mtime = path.stat().st_mtime
        day_end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC).timestamp()
        return mtime < day_end + self.settle_s and _time.time() - mtime > self.refresh_after_s

    def _read_cached(self, path: Path, reader: Callable[[Path], _S]) -> _S | None:
        """Read a cached file; None (logged) when unreadable, which a download then replaces.

        Not deleted: it may be a file that another process (the simulator) is writing.
        """
        try:
            return reader(path)
        except (GoesFileError, OSError, KeyError, ValueError) as exc:
            log.warning("cached GOES file %s is unreadable (%s); ignored", path, exc)
            return None

    def _download(self, prod: NceiProduct, sat: int, day: date, reader: Callable[[Path], _S]) -> _S:
        """List the month folder, fetch the day's highest version, verify it, then cache it."""
        folder = self.archive_folder_url(prod, sat, day)
        best = best_version(self._listing(folder), file_pattern(prod, sat, day))
        if best is None:
            raise _NoDataError(f"no file for {day.isoformat()} in {folder}")
        dest = self.cache_path_for(prod, sat, day, best)
        with atomic_path(dest) as tmp:  # verified before it takes the name, else removed
            self._http(folder + best, tmp)
            try:
                series = reader(tmp)
            except (GoesFileError, OSError, KeyError, ValueError, TypeError) as exc:
                raise GoesFileError(f"{best} from {folder}: {exc}") from None
        series.source = best
        for old in dest.parent.glob(f"sci_{prod.name}_{satellite_name(sat)}_d{day:%Y%m%d}_v*"):
            if old != dest:
                old.unlink(missing_ok=True)
        return series

    def _listing(self, folder: str) -> list[str]:
        now = _time.monotonic()
        hit = self._listings.get(folder)
        if hit and now - hit[0] < self.listing_ttl_s:
            return hit[1]
        names = parse_index_names(self._http(folder))
        self._listings[folder] = (now, names)
        return names

    def _service_down(self, url: str) -> str | None:
        """Why the host of `url` is not to be asked now (it failed recently), else None."""
        host = urlsplit(url).netloc
        why = self.http.breaker.reason(host)
        return f"{host}: {why}" if why is not None else None

    def _http(self, url: str, sink: Path | None = None) -> bytes:
        """GET with timeouts and retries: the body (or written to `sink`); _NoDataError on 404.

        Any other failure (after the retries) opens the breaker for the host.
        """
        try:
            return self.http.get(url, sink=sink)
        except ServiceError as exc:
            if exc.not_found:
                raise _NoDataError(f"not in the archive (HTTP {exc.status} for {url})") from None
            self.http.breaker.trip(urlsplit(url).netloc, exc.error)
            raise _ServiceFailedError(f"{exc.error}; {exc.attempts} attempt(s) on {url}") from None

    # -- NCEI archive: time windows ----------------------------------------------------------

    def xrs_range(
        self,
        start: datetime,
        end: datetime,
        satellite: int | str | None = None,
        product: str = "avg1m",
    ) -> tuple[XrsSeries, list[str]]:
        """XRS fluxes in [start, end) (UTC), days concatenated, and one message per missing day."""
        parts, missing = self._range(start, end, lambda d: self.xrs_day(d, satellite, product))
        t0, t1 = _ms(start), _ms(end)
        time, keep = _merge_times([p.time for p in parts], t0, t1)
        a = np.concatenate([p.xrsa_flux for p in parts]) if parts else np.zeros(0)
        b = np.concatenate([p.xrsb_flux for p in parts]) if parts else np.zeros(0)
        sat, src = _joined(parts)
        return XrsSeries(time, a[keep], b[keep], sat, src), missing

    def protons_range(
        self, start: datetime, end: datetime, satellite: int | str | None = None
    ) -> tuple[ProtonSeries, list[str]]:
        """>= 10 MeV protons in [start, end) (UTC), days concatenated, and missing-day messages."""
        parts, missing = self._range(start, end, lambda d: self.protons_day(d, satellite))
        time, keep = _merge_times([p.time for p in parts], _ms(start), _ms(end))
        flux = np.concatenate([p.flux_ge10mev for p in parts]) if parts else np.zeros(0)
        sat, src = _joined(parts)
        return ProtonSeries(time, flux[keep], sat, src), missing

    @staticmethod
    def _range(
        start: datetime, end: datetime, one_day: Callable[[date], _S]
    ) -> tuple[list[_S], list[str]]:
        if as_utc(end) <= as_utc(start):
            raise ValueError(f"end {end.isoformat()} is not after start {start.isoformat()}")
        parts, missing = [], []
        for day in days_covering(start, end):
            try:
                parts.append(one_day(day))
            except GoesUnavailableError as exc:
                missing.append(MissingDay(str(exc), exc.no_data))
        return parts, missing


def _as_day(day: date) -> date:
    return as_utc(day).date() if isinstance(day, datetime) else day


def _ms(dt: datetime) -> np.datetime64:
    return np.datetime64(as_utc(dt).replace(tzinfo=None), "ms")


def _merge_times(
    times: list[np.ndarray], t0: np.datetime64, t1: np.datetime64
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted times in [t0, t1) without repeats, and the indices that give them."""
    if not times:
        return np.zeros(0, dtype="datetime64[ms]"), np.zeros(0, dtype=np.int64)
    t = np.concatenate(times).astype("datetime64[ms]")
    order = np.argsort(t, kind="stable")
    first = np.ones(order.size, dtype=bool)
    first[1:] = t[order][1:] != t[order][:-1]
    order = order[first]
    order = order[(t[order] >= t0) & (t[order] < t1)]
    return t[order], order


def _joined(parts: Sequence[XrsSeries | ProtonSeries]) -> tuple[str | None, str]:
    sats = sorted({p.satellite for p in parts if p.satellite})
    return (",".join(sats) or None), ",".join(p.source for p in parts)


__all__ = [
    "ARCHIVE_BASES",
    "NCEI_GOESR_BASE",
    "NCEI_PRODUCTS",
    "NCEI_REPROCESSED_XRS_BASE",
    "SATELLITE_PREFERENCE",
    "SGPS_THRESHOLD_KEV",
    "SWPC_BASE",
    "SWPC_FEEDS",
    "XRS_BANDS",
    "Fetched",
    "GoesClient",
    "GoesFileError",
    "GoesUnavailableError",
    "MissingDay",
    "NceiProduct",
    "ProtonSeries",
    "XrsSeries",
    "days_covering",
    "good_samples",
    "ncei_filename",
    "parse_index_names",
    "parse_swpc_protons",
    "parse_swpc_xrays",
    "parse_time_units",
    "primary_satellite",
    "read_sgps",
    "read_xrs",
    "satellite_name",
    "satellite_number",
    "swpc_proton_series",
]
