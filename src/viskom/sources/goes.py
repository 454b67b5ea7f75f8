"""GOES space weather for viskom: NOAA's SWPC feeds, NCEI's daily archive files, and writers.

Reading the netCDF files (every XRS product, SGPS protons) is `viskom.sources.goes_netcdf`,
through xarray; its names (`read_xrs`, `read_sgps`, `XrsSeries`, `ProtonSeries`,
`GoesFileError`, ...) are re-exported here. This module holds the SWPC near-real-time JSON
feeds, the NCEI product and file naming, writers of the NCEI XRS and SGPS layouts (tests,
simulator; h5py, read back by the same xarray reader), and `GoesClient`, which fetches SWPC
feeds and NCEI daily archive files into an on-disk cache (see its docstring). The satellite
always comes from the data, never from a constant.
"""

from __future__ import annotations

import logging
import os
import re
import time as _time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np

from viskom.sources.goes_netcdf import SGPS_THRESHOLD_KEV as SGPS_THRESHOLD_KEV
from viskom.sources.goes_netcdf import GoesFileError as GoesFileError
from viskom.sources.goes_netcdf import ProtonSeries as ProtonSeries
from viskom.sources.goes_netcdf import XrsSeries as XrsSeries
from viskom.sources.goes_netcdf import good_samples as good_samples
from viskom.sources.goes_netcdf import parse_time_units as parse_time_units
from viskom.sources.goes_netcdf import read_sgps as read_sgps
from viskom.sources.goes_netcdf import read_xrs as read_xrs

log = logging.getLogger(__name__)


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


def swpc_proton_series(
    text: str | bytes, energy: str = ">=10 MeV", source: str = "integral-protons-7-day.json"
) -> ProtonSeries:
    """SWPC's integral protons JSON as a ProtonSeries (one energy channel, pfu), for the pipeline.

    Only the default >=10 MeV channel fits the field name `flux_ge10mev`; the satellite is
    the one(s) the rows of that channel name.
    """
    times, flux = parse_swpc_protons(text, energy, source)
    satellites: set[str] = set()
    for row in _load_json(text, source):
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
    rows = _load_json(text, "instrument-sources.json")
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


def _product(product: str | NceiProduct) -> NceiProduct:
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
    name = _product(product).name
    return f"sci_{name}_{satellite_name(satellite)}_d{day:%Y%m%d}_v{version}.nc"


def _file_regex(product: NceiProduct, satellite: int, day: date) -> re.Pattern[str]:
    return re.compile(
        rf"sci_{re.escape(product.name)}_g{satellite:02d}_d{day:%Y%m%d}_v(\d+)-(\d+)-(\d+)\.nc"
    )


def _best_version(names: Iterable[str], pattern: re.Pattern[str]) -> str | None:
    """The name with the highest version (compared as numbers) among those matching."""
    found = [(tuple(int(g) for g in m.groups()), n) for n in names if (m := pattern.fullmatch(n))]
    return max(found)[1] if found else None


def days_covering(start: datetime, end: datetime) -> list[date]:
    """The UTC days that [start, end) touches (naive datetimes are UTC)."""
    start, end = _utc(start), _utc(end)
    if end <= start:
        return []
    last = (end - timedelta(microseconds=1)).date()
    return [start.date() + timedelta(days=i) for i in range((last - start.date()).days + 1)]


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# -- Writers of the NCEI layouts (tests, simulator) ----------------------------------------

J2000_UNITS = "seconds since 2000-01-01T12:00:00"
_J2000 = np.datetime64("2000-01-01T12:00:00", "ms")
GOESR_XRS_FLAG_MEANINGS = (
    "good_data eclipse bad_data e_contam_significant e_correction_valid "
    "e_correction_invalid e_correction_interp e_correction_decay"
)
GOESR_XRS_FLAG_MASKS = (3, 1, 2, 4, 8, 8, 48, 48)
GOESR_XRS_FLAG_VALUES = (0, 1, 2, 4, 0, 8, 16, 32)
_XRS_VALID = {"xrsa": (1e-9, 0.003), "xrsb": (1e-9, 0.2)}  # as in the real GOES-16 file
_XRS_LONG_NAME = {"xrsa": "XRS-A primary average flux.", "xrsb": "XRS-B primary average flux."}
# Nominal SGPS proton channels (lower, upper) in keV, from public descriptions of the v3 files;
# real files carry their own per-unit bounds and read_sgps always uses the file's.
SGPS_CHANNELS_KEV = (
    (1020, 1860),  # P1
    (1900, 2300),  # P2A
    (2310, 3340),  # P2B
    (3400, 6480),  # P3
    (5840, 11000),  # P4, contains 10 MeV
    (11640, 23270),  # P5
    (25900, 38100),  # P6
    (40300, 73400),  # P7
    (83700, 98500),  # P8A
    (99900, 118000),  # P8B
    (115000, 143000),  # P8C
    (160000, 242000),  # P9
    (276000, 404000),  # P10; P11 (AvgIntProtonFlux) is > 500 MeV
)
SGPS_FILL = np.float32(-1e31)
_SGPS_P11_SHARE = 0.01  # share of the written >= 10 MeV flux put in the >500 MeV channel


@contextmanager
def _h5_atomic(path: Path) -> Iterator:
    """An HDF5 file written under a hidden temporary name, renamed to `path` when complete."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with h5py.File(tmp, "w") as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _seconds_j2000(time: np.ndarray) -> np.ndarray:
    t = np.asarray(time).astype("datetime64[ms]")
    return (t - _J2000).astype(np.int64) / 1000.0


def _nc_dimension(fh, name: str, size: int):
    """A netCDF-4 dimension that is not a variable (as netCDF-C writes it)."""
    dim = fh.create_dataset(name, shape=(size,), dtype="f4")
    dim.make_scale(f"This is a netCDF dimension but not a netCDF variable.{size:>10}")
    return dim


def _nc_time(fh, seconds: np.ndarray, long_name: str):
    t = fh.create_dataset("time", data=np.asarray(seconds, dtype=np.float64))
    t.make_scale("time")
    t.attrs["_FillValue"] = np.float64(-9999.0)
    t.attrs["units"] = J2000_UNITS
    t.attrs["calendar"] = "proleptic_gregorian"
    t.attrs["long_name"] = long_name
    return t


def _nc_variable(fh, name: str, data: np.ndarray, dims: Sequence, fill, **attrs):
    data = np.asarray(data)
    kwargs = {"compression": "gzip", "compression_opts": 4} if data.size > 256 else {}
    var = fh.create_dataset(name, data=data, fillvalue=fill, **kwargs)
    var.attrs["_FillValue"] = np.asarray(fill, dtype=data.dtype)
    for key, value in attrs.items():
        var.attrs[key] = value
    for i, dim in enumerate(dims):
        var.dims[i].attach_scale(dim)
    return var


def _global_attrs(fh, path: Path, satellite: str, title: str, seconds: np.ndarray, res: str):
    fh.attrs["Conventions"] = "ACDD-1.3, Spase v2.2.6"
    fh.attrs["title"] = title
    fh.attrs["id"] = path.name
    fh.attrs["platform"] = satellite
    fh.attrs["processing_level"] = "Level 2"
    fh.attrs["institution"] = "DOC/NOAA/NESDIS"
    fh.attrs["history"] = "synthetic file written by viskom.sources.goes (not NOAA data)"
    fh.attrs["time_coverage_resolution"] = res
    finite = seconds[np.isfinite(seconds)]
    if finite.size:
        for key, value in (("start", finite.min()), ("end", finite.max())):
            stamp = _J2000 + np.timedelta64(round(float(value) * 1000), "ms")
            fh.attrs[f"time_coverage_{key}"] = f"{np.datetime_as_string(stamp, unit='ms')}Z"


def write_xrs_netcdf(
    path: str | Path,
    time: np.ndarray,
    xrsa: np.ndarray,
    xrsb: np.ndarray,
    satellite: str | int = "g18",
    flags: np.ndarray | Mapping[str, np.ndarray] | None = None,
    *,
    product: str = "avg1m",
) -> Path:
    """Write an XRS file in the NCEI L2 layout (names, attributes as the real files), atomically.

    `time` is datetime64 (UTC); NaN fluxes are written as the fill value -9999. `flags` is one
    uint8 array for both bands or {"xrsa": ..., "xrsb": ...} in the GOES-R meanings (0 = good);
    default all good. `product` "flx1s" only changes the title and resolution attributes.
    """
    path = Path(path)
    seconds = _seconds_j2000(time)
    n = seconds.shape[0]
    sat = satellite_name(satellite)
    one_second = _product(product).name == "xrsf-l2-flx1s"
    if flags is None or not isinstance(flags, Mapping):
        flags = {"xrsa": flags, "xrsb": flags}
    with _h5_atomic(path) as fh:
        title = "L2 XRS 1 second flux" if one_second else "L2 XRS 1 minute average"
        _global_attrs(fh, path, sat, title, seconds, "PT1S" if one_second else "PT1M")
        t = _nc_time(fh, seconds, "Record start time, neglecting leap seconds.")
        for band, values in (("xrsa", xrsa), ("xrsb", xrsb)):
            flux = np.asarray(values, dtype=np.float64)
            if flux.shape != (n,):
                raise ValueError(f"{band} has shape {flux.shape}, time has ({n},)")
            lo, hi = _XRS_VALID[band]
            _nc_variable(
                fh,
                f"{band}_flux",
                np.where(np.isfinite(flux), flux, -9999.0).astype(np.float32),
                [t],
                np.float32(-9999.0),
                units="W/m2",
                long_name=_XRS_LONG_NAME[band],
                valid_min=np.float32(lo),
                valid_max=np.float32(hi),
                ancillary_variables=f"{band}_flag",
            )
            flag = flags.get(band)
            flag = np.zeros(n, np.uint8) if flag is None else np.asarray(flag, dtype=np.uint8)
            if flag.shape != (n,):
                raise ValueError(f"{band} flags have shape {flag.shape}, time has ({n},)")
            _nc_variable(
                fh,
                f"{band}_flag",
                flag,
                [t],
                np.uint8(255),
                long_name=f"Flags for {band}_flux.",
                flag_masks=np.asarray(GOESR_XRS_FLAG_MASKS, dtype=np.uint8),
                flag_meanings=GOESR_XRS_FLAG_MEANINGS,
                flag_values=np.asarray(GOESR_XRS_FLAG_VALUES, dtype=np.uint8),
            )
    return path


def write_sgps_netcdf(
    path: str | Path, time: np.ndarray, flux_ge10mev: np.ndarray, satellite: str | int = "g18"
) -> Path:
    """Write (atomically) an SGPS L2 avg5m-layout file whose read_sgps result is `flux_ge10mev`.

    Same variables and dimensions as the real files (time, sensor_units=2, diff_channels=13;
    the alpha variables are left out). Both sensor units get the same values: a power-law
    spectrum (E^-2) over the nominal channels, scaled so that the channels above 10 MeV (the
    one containing 10 MeV pro rata) hold 99 % of the flux and the >500 MeV channel 1 %. NaN
    writes fill values with zero valid samples.
    """
    path = Path(path)
    seconds = _seconds_j2000(time)
    flux = np.asarray(flux_ge10mev, dtype=np.float64)
    n = seconds.shape[0]
    if flux.shape != (n,):
        raise ValueError(f"flux_ge10mev has shape {flux.shape}, time has ({n},)")
    lower, upper = np.asarray(SGPS_CHANNELS_KEV, dtype=np.float64).T
    n_units, n_channels = 2, lower.size
    shape = (n, n_units, n_channels)
    weight = 1.0 / (lower * upper)  # E_eff^-2 with E_eff = sqrt(lower * upper)
    above = np.clip(upper - np.maximum(lower, SGPS_THRESHOLD_KEV), 0.0, None)
    good = np.isfinite(flux) & (flux >= 0)
    scale = np.where(good, flux * (1 - _SGPS_P11_SHARE), 0.0) / np.sum(weight * above)
    diff = np.broadcast_to((scale[:, None] * weight[None, :])[:, None, :], shape)
    diff = np.where(good[:, None, None], diff, SGPS_FILL).astype(np.float32)
    p11 = np.where(good, flux * _SGPS_P11_SHARE, SGPS_FILL).astype(np.float32)
    p11 = np.repeat(p11[:, None], n_units, axis=1)
    valid = np.where(good, 300, 0).astype(np.uint32)
    u32_fill = np.uint32(4294967295)
    with _h5_atomic(path) as fh:
        _global_attrs(
            fh, path, satellite_name(satellite), "L2 SGPS 5 minute average", seconds, "PT5M"
        )
        t = _nc_time(fh, seconds, "Time stamp at the start of the averaging period")
        units = _nc_dimension(fh, "sensor_units", n_units)
        chans = _nc_dimension(fh, "diff_channels", n_channels)
        tuc, tu, uc, u = [t, units, chans], [t, units], [units, chans], [units]
        _nc_variable(
            fh,
            "L1bRecordsInAvg",
            valid[:].copy(),
            [t],
            u32_fill,
            long_name="Number of L1b records in the average",
        )
        _nc_variable(
            fh,
            "yaw_flip_flag",
            np.zeros(n, np.uint8),
            [t],
            np.uint8(255),
            long_name="Spacecraft yaw flip flag (0 upright)",
        )
        _nc_variable(
            fh,
            "AvgDiffProtonFlux",
            diff,
            tuc,
            SGPS_FILL,
            units="protons/(cm^2 sr keV s)",
            long_name="Time-averaged proton fluxes in differential channels between 1 and 500 MeV",
        )
        counts = np.repeat(np.repeat(valid[:, None, None], n_units, 1), n_channels, 2)
        _nc_variable(
            fh,
            "DiffValidL1bSamplesInAvg",
            counts,
            tuc,
            u32_fill,
            long_name="Number of valid L1b samples in each differential flux average",
        )
        for name in ("DiffDQFdtcSum", "DiffDQFoobSum", "DiffDQFerrSum"):
            _nc_variable(fh, name, np.zeros(shape, np.uint32), tuc, u32_fill)
        _nc_variable(
            fh,
            "AvgIntProtonFlux",
            p11,
            tu,
            SGPS_FILL,
            units="protons/(cm^2 sr s)",
            long_name="Time-averaged proton fluxes in the P11 >500 MeV integral channel",
        )
        _nc_variable(fh, "IntValidL1bSamplesInAvg", counts[:, :, 0].copy(), tu, u32_fill)
        for name in ("IntDQFdtcSum", "IntDQFoobSum", "IntDQFerrSum"):
            _nc_variable(fh, name, np.zeros((n, n_units), np.uint32), tu, u32_fill)
        for name, values, what in (
            ("DiffProtonLowerEnergy", lower, "Lower"),
            ("DiffProtonUpperEnergy", upper, "Upper"),
            ("DiffProtonEffectiveEnergy", np.sqrt(lower * upper), "Effective"),
        ):
            _nc_variable(
                fh,
                name,
                np.repeat(values[None, :], n_units, 0).astype(np.float32),
                uc,
                np.float32(-9999.0),
                units="keV",
                long_name=f"{what} band energies for the SGPS proton differential channels",
            )
        _nc_variable(
            fh,
            "IntegralProtonEffectiveEnergy",
            np.full(n_units, 5e5, np.float32),
            u,
            np.float32(-9999.0),
            units="keV",
        )
    return path


# -- The client: HTTP with timeouts and retries, an on-disk cache, an offline mode -------

SWPC_BASE = "https://services.swpc.noaa.gov/json/goes/primary/"
SWPC_FEEDS = ("xrays-7-day.json", "integral-protons-7-day.json", "instrument-sources.json")


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

_S = TypeVar("_S", XrsSeries, ProtonSeries)
_HREF_RE = re.compile(r"""href\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)


class _NoDataError(Exception):
    """The archive answered, and has no file for that day (404, or not in the folder)."""


class _ServiceFailedError(Exception):
    """The archive could not be reached or kept failing (timeouts, connection, 5xx)."""


def parse_index_names(html: str | bytes) -> list[str]:
    """File names linked from an Apache-style folder index (href targets, last path part)."""
    from urllib.parse import unquote

    if isinstance(html, bytes):
        html = html.decode("utf-8", "replace")
    names = []
    for href in _HREF_RE.findall(html):
        name = unquote(href.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1])
        if name:
            names.append(name)
    return names


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
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.swpc_base = swpc_base.rstrip("/") + "/"
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.offline = offline
        self.archive_bases = tuple(archive_bases)
        self.satellite_preference = tuple(
            sorted(((d, tuple(s)) for d, s in satellite_preference), key=lambda e: e[0])
        )
        self.refresh_after_s = refresh_after_s
        self.settle_s = settle_s
        self.breaker_cooldown_s = breaker_cooldown_s
        self.listing_ttl_s = listing_ttl_s
        self._down: dict[str, tuple[float, str]] = {}  # host -> (monotonic time, why)
        self._listings: dict[str, tuple[float, list[str]]] = {}

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
        prod, sat = _product(product), satellite_number(satellite)
        for first, last, base in self.archive_bases:
            if first <= sat <= last:
                root = base.format(sat=sat).rstrip("/")
                return f"{root}/{prod.folder}/{day:%Y}/{day:%m}/"
        raise ValueError(f"no archive base URL configured for GOES-{sat}")

    def cache_path_for(self, product: str, satellite: int | str, day: date, filename: str) -> Path:
        """Where a day file lives in the cache: ncei/<NCEI product>/gNN/YYYY/MM/<filename>."""
        prod = _product(product)
        folder = self.cache_dir / "ncei" / prod.name / satellite_name(satellite)
        return folder / f"{day:%Y}" / f"{day:%m}" / filename

    def cached_file(self, product: str, satellite: int | str, day: date) -> Path | None:
        """The cached file (highest version) of a day, product and satellite, if any."""
        prod, sat = _product(product), satellite_number(satellite)
        folder = self.cache_path_for(prod, sat, day, "x").parent
        if not folder.is_dir():
            return None
        best = _best_version((p.name for p in folder.iterdir()), _file_regex(prod, sat, day))
        return folder / best if best else None

    def cached_days(self, product: str = "avg1m", satellite: int | str | None = None) -> list[date]:
        """The days of a product in the cache (any satellite unless given), sorted; no network."""
        prod = _product(product)
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
        prod = _product(product)
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
        best = _best_version(self._listing(folder), _file_regex(prod, sat, day))
        if best is None:
            raise _NoDataError(f"no file for {day.isoformat()} in {folder}")
        dest = self.cache_path_for(prod, sat, day, best)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{best}.{os.getpid()}.part")
        try:
            self._http(folder + best, tmp)
            try:
                series = reader(tmp)
            except (GoesFileError, OSError, KeyError, ValueError, TypeError) as exc:
                raise GoesFileError(f"{best} from {folder}: {exc}") from None
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
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
        from urllib.parse import urlsplit

        host = urlsplit(url).netloc
        down = self._down.get(host)
        if down and _time.monotonic() - down[0] < self.breaker_cooldown_s:
            return f"{host}: {down[1]}"
        return None

    def _http(self, url: str, sink: Path | None = None) -> bytes:
        """GET with timeouts and retries: the body (or written to `sink`); _NoDataError on 404."""
        import http.client
        import urllib.error
        import urllib.request
        from urllib.parse import urlsplit

        error = ""
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                    if sink is None:
                        return resp.read()
                    expected = resp.headers.get("Content-Length")
                    size = 0
                    with sink.open("wb") as fh:
                        while chunk := resp.read(1 << 20):
                            fh.write(chunk)
                            size += len(chunk)
                    if expected is not None and size != int(expected):
                        raise http.client.IncompleteRead(b"", int(expected) - size)
                    return b""
            except urllib.error.HTTPError as exc:
                if exc.code in (404, 410):
                    raise _NoDataError(f"not in the archive (HTTP {exc.code} for {url})") from None
                error = f"HTTP {exc.code} {exc.reason}"
            except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None)
                error = f"{type(exc).__name__}: {reason if reason is not None else exc}"
            if attempt < self.retries:
                _time.sleep(self.backoff_s * 2**attempt)
        self._down[urlsplit(url).netloc] = (_time.monotonic(), error)
        raise _ServiceFailedError(f"{error}; {self.retries + 1} attempt(s) on {url}")

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
        if _utc(end) <= _utc(start):
            raise ValueError(f"end {end.isoformat()} is not after start {start.isoformat()}")
        parts, missing = [], []
        for day in days_covering(start, end):
            try:
                parts.append(one_day(day))
            except GoesUnavailableError as exc:
                missing.append(MissingDay(str(exc), exc.no_data))
        return parts, missing


def _as_day(day: date) -> date:
    return _utc(day).date() if isinstance(day, datetime) else day


def _ms(dt: datetime) -> np.datetime64:
    return np.datetime64(_utc(dt).replace(tzinfo=None), "ms")


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
