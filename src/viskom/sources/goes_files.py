"""What NOAA's GOES feeds and archive look like: SWPC's JSON feeds and NCEI's daily files.

Parsing of SWPC's near-real-time JSON feeds (last 7 days), and the NCEI archive's products,
satellite spellings, file names and versions, folder URLs, folder listings and which satellite
to try first on a day. No network and no file access here: `viskom.sources.goes.GoesClient`
fetches, `viskom.sources.goes_netcdf` reads the files, `viskom.sources.simulator.goes_files`
writes files in NCEI's layouts. The satellite always comes from the data, never from a constant.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import unquote

import numpy as np

from viskom.sources.goes_netcdf import GoesFileError, ProtonSeries, XrsSeries

# -- NOAA SWPC near-real-time JSON feeds (last 7 days) -------------------------------------

XRS_BANDS = {"0.05-0.4nm": "xrsa", "0.1-0.8nm": "xrsb"}


def load_swpc_json(text: str | bytes, what: str) -> list:
    """The JSON array of an SWPC feed; GoesFileError when malformed or not an array."""
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
    rows = load_swpc_json(text, source)
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
    rows = load_swpc_json(text, source)
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


def swpc_proton_series(
    text: str | bytes, energy: str = ">=10 MeV", source: str = "integral-protons-7-day.json"
) -> ProtonSeries:
    """SWPC's integral protons JSON as a ProtonSeries (one energy channel, pfu), for the pipeline.

    Only the default >=10 MeV channel fits the field name `flux_ge10mev`; the satellite is
    the one(s) the rows of that channel name.
    """
    times, flux = parse_swpc_protons(text, energy, source)
    satellites: set[str] = set()
    for row in load_swpc_json(text, source):
        if not isinstance(row, dict) or row.get("satellite") is None:
            continue
        if str(row.get("energy", "")).replace(" ", "") != energy.replace(" ", ""):
            continue
        try:
            satellites.add(f"g{int(row['satellite'])}")
        except (TypeError, ValueError):
            continue
    return ProtonSeries(times, flux, ",".join(sorted(satellites)) or None, source)


def primary_satellite(text: str | bytes, instrument: str = "xrs") -> int | None:
    """The primary satellite for an instrument from SWPC's instrument-sources JSON."""
    rows = load_swpc_json(text, "instrument-sources.json")
    for row in rows:
        if isinstance(row, dict) and str(row.get("instrument", "")).lower() == instrument.lower():
            try:
                return int(row.get("satellite"))
            except (TypeError, ValueError):
                return None
    return None


# -- NCEI archive products, satellites and file names --------------------------------------


@dataclass(frozen=True)
class NceiProduct:
    """One NCEI daily-file product: its short key, file-name stem and archive folder."""

    key: str
    name: str  # as in the file names, e.g. "xrsf-l2-avg1m"
    folder: str  # the folder under .../goes{NN}/l2/data/
    label: str  # for messages


NCEI_PRODUCTS = {
    "avg1m": NceiProduct("avg1m", "xrsf-l2-avg1m", "xrsf-l2-avg1m_science", "XRS avg1m"),
    "flx1s": NceiProduct("flx1s", "xrsf-l2-flx1s", "xrsf-l2-flx1s_science", "XRS flx1s"),
    "sgps": NceiProduct("sgps", "sgps-l2-avg5m", "sgps-l2-avg5m", "SGPS protons avg5m"),
}


def ncei_product(product: str | NceiProduct) -> NceiProduct:
    """The NceiProduct of a key ("avg1m"), NCEI name or folder; ValueError when unknown."""
    if isinstance(product, NceiProduct):
        return product
    for p in NCEI_PRODUCTS.values():
        if product in (p.key, p.name, p.folder):
            return p
    known = ", ".join(NCEI_PRODUCTS)
    raise ValueError(f"unknown GOES product {product!r}; known: {known} (or their NCEI names)")


def satellite_number(satellite: int | str) -> int:
    """16 from 16, "16", "g16", "G16" or "goes16"; ValueError otherwise."""
    if isinstance(satellite, (int, np.integer)) and not isinstance(satellite, bool):
        number = int(satellite)
    else:
        m = re.fullmatch(r"\s*(?:goes-?|g)?(\d{1,2})\s*", str(satellite), re.IGNORECASE)
        if not m:
            raise ValueError(f"{satellite!r} is not a GOES satellite such as 18 or 'g18'")
        number = int(m.group(1))
    if not 1 <= number <= 99:
        raise ValueError(f"{satellite!r} is not a GOES satellite number (1..99)")
    return number


def satellite_name(satellite: int | str) -> str:
    """The `platform` spelling of a satellite: 'g18' (two digits, as in NCEI file names)."""
    return f"g{satellite_number(satellite):02d}"


def ncei_filename(product: str, satellite: int | str, day: date, version: str = "1-0-0") -> str:
    """NCEI daily file name, e.g. sci_xrsf-l2-avg1m_g18_d20240713_v2-2-0.nc (simulator, tests)."""
    version = version.removeprefix("v")
    if not re.fullmatch(r"\d+-\d+-\d+", version):
        raise ValueError(f"version {version!r} is not like 2-2-0")
    name = ncei_product(product).name
    return f"sci_{name}_{satellite_name(satellite)}_d{day:%Y%m%d}_v{version}.nc"


def file_pattern(product: NceiProduct, satellite: int, day: date) -> re.Pattern[str]:
    """The file names of a day's product and satellite, any version (groups: the version)."""
    return re.compile(
        rf"sci_{re.escape(product.name)}_g{satellite:02d}_d{day:%Y%m%d}_v(\d+)-(\d+)-(\d+)\.nc"
    )


def best_version(names: Iterable[str], pattern: re.Pattern[str]) -> str | None:
    """The name with the highest version (compared as numbers) among those matching."""
    found = [(tuple(int(g) for g in m.groups()), n) for n in names if (m := pattern.fullmatch(n))]
    return max(found)[1] if found else None


def days_covering(start: datetime, end: datetime) -> list[date]:
    """The UTC days that [start, end) touches (naive datetimes are UTC)."""
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        return []
    last = (end - timedelta(microseconds=1)).date()
    return [start.date() + timedelta(days=i) for i in range((last - start.date()).days + 1)]


def as_utc(dt: datetime) -> datetime:
    """An aware UTC datetime (naive datetimes are taken as UTC)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# -- Where the archive keeps the files, and which satellite to try first --------------------

SWPC_BASE = "https://services.swpc.noaa.gov/json/goes/primary/"
SWPC_FEEDS = ("xrays-7-day.json", "integral-protons-7-day.json", "instrument-sources.json")

NCEI_GOESR_BASE = (
    "https://data.ngdc.noaa.gov/platforms/solar-space-observing-satellites/"
    "goes/goes{sat:02d}/l2/data/"
)
NCEI_REPROCESSED_XRS_BASE = (
    "https://www.ncei.noaa.gov/data/goes-space-environment-monitor/access/science/"
    "xrs/goes{sat:02d}/"
)
# (first satellite, last satellite, base URL with {sat}): product folder/YYYY/MM/ follow.
ARCHIVE_BASES: tuple[tuple[int, int, str], ...] = (
    (16, 99, NCEI_GOESR_BASE),
    (1, 15, NCEI_REPROCESSED_XRS_BASE),  # reprocessed GOES 13-15 XRS (no SGPS there)
)
# (first day, satellites to try in order): the entry with the latest first day <= the day.
SATELLITE_PREFERENCE: tuple[tuple[date, tuple[int, ...]], ...] = (
    (date(2025, 4, 7), (19, 18, 16)),  # GOES-19 is GOES-East from 2025-04-07
    (date(2017, 1, 1), (16, 18, 17)),
    (date(1, 1, 1), (15, 13, 14)),
)

_HREF_RE = re.compile(r"""href\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)


def parse_index_names(html: str | bytes) -> list[str]:
    """File names linked from an Apache-style folder index (href targets, last path part)."""
    if isinstance(html, bytes):
        html = html.decode("utf-8", "replace")
    names = []
    for href in _HREF_RE.findall(html):
        name = unquote(href.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1])
        if name:
            names.append(name)
    return names
