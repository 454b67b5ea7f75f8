"""GOES X-ray (XRS) time series from NOAA's netCDF files (VIS-REFERENCE 6).

Reads the GOES-R XRS L2 products (one-minute averages `xrsf-l2-avg1m`, one-second fluxes
`xrsf-l2-flx1s`, GOES-16 to 19) and the reprocessed GOES 13-15 files with the same variable
names: `time`, `xrsa_flux`, `xrsb_flux` and their `xrsa_flag`/`xrsb_flag`. Fill values and
values outside valid_min..valid_max become NaN; flags are decoded from their CF attributes
(`flag_meanings`, `flag_masks`, `flag_values`), so a sample is kept when `good_data` holds
(GOES-R: flag & 3 == 0; electron contamination is not bad data) or, without that meaning,
when no meaning naming bad or missing data holds. The epoch comes from the `units` attribute.
The satellite comes from the file (`platform`), never from a constant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

_UNITS_RE = re.compile(r"^\s*(seconds|milliseconds|minutes|hours|days)\s+since\s+(.+?)\s*$")
_SCALE = {"seconds": 1.0, "milliseconds": 1e-3, "minutes": 60.0, "hours": 3600.0, "days": 86400.0}
_BAD_WORDS = ("bad", "missing", "invalid_data", "fill", "data_gap")


class GoesFileError(ValueError):
    """A file that is not a readable GOES XRS product; the message says why."""


@dataclass
class XrsSeries:
    """XRS-A (0.05-0.4 nm) and XRS-B (0.1-0.8 nm) fluxes in W/m2; NaN where bad or missing."""

    time: np.ndarray  # datetime64[ms], UTC
    xrsa_flux: np.ndarray
    xrsb_flux: np.ndarray
    satellite: str | None
    source: str


def parse_time_units(units: str) -> tuple[float, datetime]:
    """Scale to seconds and the epoch of a CF time `units` string (UTC; leap seconds ignored)."""
    m = _UNITS_RE.match(units)
    if not m:
        raise GoesFileError(f"time units {units!r} are not '<unit> since <date>'")
    text = m.group(2).replace("UTC", "").strip().replace(" ", "T", 1).rstrip("Z")
    epoch = datetime.fromisoformat(text)
    epoch = epoch.replace(tzinfo=UTC) if epoch.tzinfo is None else epoch.astimezone(UTC)
    return _SCALE[m.group(1)], epoch


def _attr(obj, name: str, default=None):
    value = obj.attrs.get(name, default)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind == "S":
        return value.astype(str)
    return value


def good_samples(flag: np.ndarray, flag_var) -> np.ndarray:
    """Which samples a CF flag variable calls good (see the module docstring)."""
    flag = np.asarray(flag).astype(np.int64)
    meanings = str(_attr(flag_var, "flag_meanings", "") or "").split()
    masks = _attr(flag_var, "flag_masks")
    values = _attr(flag_var, "flag_values")
    fill = _attr(flag_var, "_FillValue")
    missing = flag == int(fill) if fill is not None else np.zeros(flag.shape, bool)
    if not meanings:
        return ~missing & ((flag & 3) == 0)  # GOES-R convention when attributes are absent
    n = len(meanings)
    masks = np.broadcast_to(np.asarray(masks if masks is not None else -1, np.int64), (n,))
    values = np.asarray(values if values is not None else masks, np.int64)
    values = np.broadcast_to(values, (n,))

    def holds(i: int) -> np.ndarray:
        return (flag & masks[i]) == values[i] if masks[i] >= 0 else flag == values[i]

    if "good_data" in meanings:
        return ~missing & holds(meanings.index("good_data"))
    bad = np.zeros(flag.shape, bool)
    for i, meaning in enumerate(meanings):
        if any(word in meaning.lower() for word in _BAD_WORDS):
            bad |= holds(i) & (values[i] != 0)
    return ~missing & ~bad


def read_xrs(path: str | Path) -> XrsSeries:
    """Read an XRS netCDF-4 file; GoesFileError (clear message) if it cannot be used."""
    import h5py

    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise GoesFileError(f"{path.name}: not a netCDF-4/HDF5 file ({exc})") from None
    with fh:
        for name in ("time", "xrsa_flux", "xrsb_flux"):
            if name not in fh:
                raise GoesFileError(f"{path.name}: no variable {name!r} (not an XRS product?)")
        tvar = fh["time"]
        scale, epoch = parse_time_units(str(_attr(tvar, "units", "")))
        t = np.asarray(tvar[:], dtype=np.float64)
        t_fill = _attr(tvar, "_FillValue")
        bad_t = ~np.isfinite(t) | ((t == t_fill) if t_fill is not None else False)
        ms = np.where(bad_t, 0, np.round(t * scale * 1000.0)).astype(np.int64)
        times = np.datetime64(epoch.replace(tzinfo=None), "ms") + ms.astype("timedelta64[ms]")
        fluxes = {}
        for band in ("xrsa", "xrsb"):
            var = fh[f"{band}_flux"]
            flux = np.asarray(var[:], dtype=np.float64)
            fill = _attr(var, "_FillValue")
            bad = ~np.isfinite(flux)
            if fill is not None:
                bad |= flux == float(fill)
            lo, hi = _attr(var, "valid_min"), _attr(var, "valid_max")
            if lo is not None:
                bad |= flux < float(lo)
            if hi is not None:
                bad |= flux > float(hi)
            if f"{band}_flag" in fh:
                bad |= ~good_samples(fh[f"{band}_flag"][:], fh[f"{band}_flag"])
            flux[bad | bad_t] = np.nan
            fluxes[band] = flux
        keep = ~bad_t
        satellite = _attr(fh, "platform")
    return XrsSeries(times[keep], fluxes["xrsa"][keep], fluxes["xrsb"][keep], satellite, path.name)


# -- NOAA SWPC near-real-time JSON feeds (last 7 days) -------------------------------------

XRS_BANDS = {"0.05-0.4nm": "xrsa", "0.1-0.8nm": "xrsb"}


def _load_json(text: str | bytes, what: str) -> list:
    import json

    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GoesFileError(f"{what}: malformed JSON ({exc})") from None
    if not isinstance(data, list):
        raise GoesFileError(f"{what}: expected a JSON array, got {type(data).__name__}")
    return data


def _swpc_time(tag: object) -> np.datetime64 | None:
    try:
        dt = datetime.fromisoformat(str(tag).replace("Z", "+00:00"))
    except ValueError:
        return None
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return np.datetime64(dt.replace(tzinfo=None), "ms")


def _flux(value: object) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return v if np.isfinite(v) and v > 0 else float("nan")


def parse_swpc_xrays(text: str | bytes, source: str = "xrays-7-day.json") -> XrsSeries:
    """SWPC's xrays JSON (one object per minute per band, bands interleaved) as an XrsSeries.

    Rows without a usable time are dropped; a missing or non-positive flux is NaN. The
    satellite is the one the rows name (the feed follows the primary satellite).
    """
    rows = _load_json(text, source)
    by_time: dict[np.datetime64, dict[str, float]] = {}
    satellites: set[str] = set()
    for row in rows:
        if not isinstance(row, dict):
            continue
        band = XRS_BANDS.get(str(row.get("energy", "")))
        t = _swpc_time(row.get("time_tag"))
        if band is None or t is None:
            continue
        by_time.setdefault(t, {})[band] = _flux(row.get("flux"))
        if row.get("satellite") is not None:
            satellites.add(f"g{int(row['satellite'])}")
    times = np.array(sorted(by_time), dtype="datetime64[ms]")
    a = np.array([by_time[t].get("xrsa", np.nan) for t in times], dtype=float)
    b = np.array([by_time[t].get("xrsb", np.nan) for t in times], dtype=float)
    satellite = ",".join(sorted(satellites)) or None
    return XrsSeries(times, a, b, satellite, source)


def parse_swpc_protons(
    text: str | bytes, energy: str = ">=10 MeV", source: str = "integral-protons-7-day.json"
) -> tuple[np.ndarray, np.ndarray]:
    """Times and integral proton flux (pfu) of one energy channel of SWPC's protons JSON."""
    rows = _load_json(text, source)
    pairs = []
    for row in rows:
        if isinstance(row, dict) and str(row.get("energy", "")).replace(" ", "") == energy.replace(
            " ", ""
        ):
            t = _swpc_time(row.get("time_tag"))
            if t is not None:
                pairs.append((t, _flux(row.get("flux"))))
    pairs.sort(key=lambda p: p[0])
    times = np.array([p[0] for p in pairs], dtype="datetime64[ms]")
    return times, np.array([p[1] for p in pairs], dtype=float)


def primary_satellite(text: str | bytes, instrument: str = "xrs") -> int | None:
    """The primary satellite for an instrument from SWPC's instrument-sources JSON."""
    rows = _load_json(text, "instrument-sources.json")
    for row in rows:
        if isinstance(row, dict) and str(row.get("instrument", "")).lower() == instrument.lower():
            try:
                return int(row.get("satellite"))
            except (TypeError, ValueError):
                return None
    return None


# -- The client: HTTP with timeouts and retries, an on-disk cache, an offline mode -------

SWPC_BASE = "https://services.swpc.noaa.gov/json/goes/primary/"
SWPC_FEEDS = ("xrays-7-day.json", "integral-protons-7-day.json", "instrument-sources.json")


class GoesUnavailableError(RuntimeError):
    """Neither the service nor the cache can give what was asked; the message says which."""


@dataclass
class Fetched:
    """Bytes of a feed and where they came from."""

    content: bytes
    from_cache: bool
    note: str = ""


class GoesClient:
    """SWPC feeds with an on-disk cache: online it refreshes the cache, offline (or when the
    service fails) it serves the cached copy and says so."""

    def __init__(
        self,
        cache_dir: str | Path,
        *,
        swpc_base: str = SWPC_BASE,
        timeout_s: float = 20.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        offline: bool = False,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.swpc_base = swpc_base.rstrip("/") + "/"
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.offline = offline

    def _cache_path(self, feed: str) -> Path:
        return self.cache_dir / "swpc" / feed

    def fetch_swpc(self, feed: str) -> Fetched:
        """One SWPC feed (e.g. 'xrays-7-day.json'), fresh if possible, else from the cache."""
        import os
        import time
        import urllib.error
        import urllib.request

        if feed not in SWPC_FEEDS:
            raise ValueError(f"unknown SWPC feed {feed!r}; known: {', '.join(SWPC_FEEDS)}")
        cached = self._cache_path(feed)
        if self.offline:
            if cached.exists():
                return Fetched(cached.read_bytes(), True, "offline: cached copy")
            raise GoesUnavailableError(f"offline and {feed} is not in the cache ({cached})")
        error = ""
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(self.swpc_base + feed, timeout=self.timeout_s) as resp:
                    content = resp.read()
                _load_json(content, feed)  # never cache a broken answer
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_name(f".{cached.name}.tmp")
                tmp.write_bytes(content)
                os.replace(tmp, cached)
                return Fetched(content, False)
            except (urllib.error.URLError, TimeoutError, OSError, GoesFileError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt < self.retries:
                    time.sleep(self.backoff_s * 2**attempt)
        if cached.exists():
            return Fetched(cached.read_bytes(), True, f"service failed ({error}); cached copy")
        raise GoesUnavailableError(f"{feed}: service failed ({error}) and nothing is cached")
