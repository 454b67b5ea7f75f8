"""Reading NOAA's GOES netCDF files through xarray (CF decoding), for every XRS product and SGPS.

XRS (`read_xrs`), one reader for:

- GOES-R (16-19) L2 one-minute averages `xrsf-l2-avg1m`: `xrsa_flux`, `xrsb_flux`, `xrsa_flag`,
  `xrsb_flag` (good_data = flag & 3 == 0; e_contam_significant and the e_correction bits are
  electron contamination, not bad data), `xrsa_num`/`xrsb_num`, `xrs*_flag_excluded`;
- GOES-R L2 one-second fluxes `xrsf-l2-flx1s`: `xrsa_flux`, `xrsb_flux` (already the primary
  channel: `xrsa_primary_chan` says which diode it came from), `xrsa_flags`, `xrsb_flags`
  (good_data = flag == 0), plus the per-diode `xrsa1_flux`... that are not used;
- GOES 13-15 reprocessed one-minute averages `xrsf-l2-avg1m` (v1-0-0): the same names as GOES-R,
  other flag meanings (good_data = flag & 7 == 0, electron-correction bits 8-64 not bad);
- GOES 13-15 reprocessed high-resolution (2 s) irradiances `gxrs-l2-irrad`: `a_flux`, `b_flux`,
  `a_flags`, `b_flags` (good_data = flag & 1023 == 0; the `*_swpc_flags` are not used).

xarray does the CF decoding: `_FillValue`/`missing_value` become NaN, `scale_factor`/
`add_offset` are applied, `time` is decoded from its `units` ("seconds since 2000-01-01
12:00:00", leap seconds ignored) and rounded to the millisecond. On top of that, values outside
`valid_min`/`valid_max`/`valid_range` become NaN (xarray leaves them), and so do samples whose
quality flag is not good (`good_samples`: decoded from `flag_meanings`, `flag_masks`,
`flag_values`) or whose average holds no measurement (`*_num == 0`). Attributes may be scalars
or one-element arrays, strings or bytes. Samples without a valid time are dropped. The
`*_flag_excluded` variables describe the 1-s samples left out of an average (the average itself
is good) and are not used. The satellite is the file's `platform` (else its `id` or file name).

Files are opened with h5netcdf (netCDF-4/HDF5, also without dimension scales: phony
dimensions) or, for netCDF-3 classic files, scipy. A file that is not netCDF, is truncated, or
lacks a variable raises GoesFileError with a message saying which.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

_UNITS_RE = re.compile(r"^\s*(seconds|milliseconds|minutes|hours|days)\s+since\s+(.+?)\s*$")
_SCALE = {"seconds": 1.0, "milliseconds": 1e-3, "minutes": 60.0, "hours": 3600.0, "days": 86400.0}
_BAD_WORDS = ("bad", "missing", "invalid_data", "fill", "data_gap")
_ELECTRON_WORDS = ("electron", "e_contam", "e_correction")  # contamination is not bad data
_SATELLITE_RE = re.compile(r"(?:^|[_\-.\s])g(?:oes[_\-\s]?)?(\d{1,2})(?=$|[_\-.\s])", re.IGNORECASE)
# (band, candidate flux variables): GOES-R and reprocessed avg1m / flx1s, then gxrs-l2-irrad
_XRS_FLUX_NAMES = (("xrsa", ("xrsa_flux", "a_flux")), ("xrsb", ("xrsb_flux", "b_flux")))
_FLAG_SUFFIXES = ("_flag", "_flags")  # never *_flag_excluded, *_swpc_flags or *_primary_chan
_SGPS_TIME_NAMES = ("time", "L2_SciData_TimeStamp")  # v3 files / v1-v2 files
SGPS_THRESHOLD_KEV = 10_000.0


class GoesFileError(ValueError):
    """A file that is not a readable GOES product; the message says why."""


@dataclass
class XrsSeries:
    """XRS-A (0.05-0.4 nm) and XRS-B (0.1-0.8 nm) fluxes in W/m2; NaN where bad or missing."""

    time: np.ndarray  # datetime64[ms], UTC
    xrsa_flux: np.ndarray
    xrsb_flux: np.ndarray
    satellite: str | None
    source: str


@dataclass
class ProtonSeries:
    """Integral proton flux >= 10 MeV in pfu (particles/(cm2 s sr)); NaN where bad or missing."""

    time: np.ndarray  # datetime64[ms], UTC
    flux_ge10mev: np.ndarray
    satellite: str | None
    source: str


def parse_time_units(units: str) -> tuple[float, datetime]:
    """Scale to seconds and the epoch of a CF time `units` string (UTC; leap seconds ignored)."""
    m = _UNITS_RE.match(units)
    if not m:
        raise GoesFileError(f"time units {units!r} are not '<unit> since <date>'")
    text = m.group(2).replace("UTC", "").strip().replace(" ", "T", 1).rstrip("Z")
    try:
        epoch = datetime.fromisoformat(text)
    except ValueError:
        raise GoesFileError(f"time units {units!r}: {m.group(2)!r} is not a date") from None
    epoch = epoch.replace(tzinfo=UTC) if epoch.tzinfo is None else epoch.astimezone(UTC)
    return _SCALE[m.group(1)], epoch


# -- attributes: scalars or one-element arrays, str or bytes --------------------------------


def _attrs_of(obj: Any) -> Mapping[str, Any]:
    return obj if isinstance(obj, Mapping) else getattr(obj, "attrs", {})


def attr_text(attrs: Mapping[str, Any], name: str) -> str | None:
    """A text attribute as str (bytes, numpy strings and one-element arrays decoded)."""
    value = attrs.get(name)
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return None
        value = value.ravel()[0] if value.size == 1 else " ".join(map(_text, value.ravel()))
    return _text(value)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def attr_numbers(attrs: Mapping[str, Any], name: str) -> np.ndarray | None:
    """A numeric attribute as a 1-D float64 array (a scalar gives one element); None if absent."""
    value = attrs.get(name)
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        numbers = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return None
    return numbers if numbers.size else None


def _valid_bounds(attrs: Mapping[str, Any], encoding: Mapping[str, Any]) -> tuple[float, float]:
    """valid_min/valid_max (or valid_range) in the decoded units; -inf/inf when absent.

    Bounds of the packed integer type are unpacked with scale_factor/add_offset (CF: they are
    given in the packed type); bounds of another type are taken as decoded values.
    """
    lo, hi = -np.inf, np.inf
    rng = attr_numbers(attrs, "valid_range")
    if rng is not None and rng.size >= 2:
        lo, hi = float(rng[0]), float(rng[1])
    vmin, vmax = attr_numbers(attrs, "valid_min"), attr_numbers(attrs, "valid_max")
    lo = float(vmin[0]) if vmin is not None else lo
    hi = float(vmax[0]) if vmax is not None else hi
    scale, offset = encoding.get("scale_factor"), encoding.get("add_offset")
    packed = np.dtype(encoding.get("dtype", np.float64))
    given = [attrs[k] for k in ("valid_range", "valid_min", "valid_max") if k in attrs]
    packed_bounds = given and np.asarray(given[0]).dtype.kind in "iu" and packed.kind in "iu"
    if packed_bounds and (scale is not None or offset is not None):  # unpack them
        s = float(np.ravel(scale)[0]) if scale is not None else 1.0
        o = float(np.ravel(offset)[0]) if offset is not None else 0.0
        lo, hi = sorted((lo * s + o, hi * s + o))
    return lo, hi


def outside_valid_range(values: np.ndarray, var: Any) -> np.ndarray:
    """Where decoded values lie outside the variable's valid_min/valid_max/valid_range."""
    values = np.asarray(values, dtype=np.float64)
    lo, hi = _valid_bounds(_attrs_of(var), getattr(var, "encoding", {}) or {})
    with np.errstate(invalid="ignore"):
        return (values < lo) | (values > hi)


# -- quality flags ---------------------------------------------------------------------------


def good_samples(flag: np.ndarray, flag_var: Any, name: str = "") -> np.ndarray:
    """Which samples a CF quality-flag variable calls good, from its flag_* attributes.

    `flag` holds the decoded values (NaN where fill) or raw integers (then `_FillValue` of
    the attributes marks missing); `flag_var` is the variable (xarray, h5py) or its attrs.
    With a `good_data` meaning a sample is good when that meaning holds (for a mask/value pair:
    flag & mask == value; GOES-R avg1m: flag & 3 == 0, flx1s: flag == 0, GOES 13-15: flag & 7
    == 0), whatever the electron-contamination bits say. Without it (some older products), a
    sample is good unless a meaning naming bad or missing data holds (never an electron one).
    Without any flag_meanings: avg1m's `*_flag` convention flag & 3 == 0, or flag == 0 for a
    `*_flags` variable. Fill, non-finite and out-of-valid-range flags are never good.
    """
    attrs = _attrs_of(flag_var)
    name = name or str(getattr(flag_var, "name", "") or "")
    values = np.asarray(flag, dtype=np.float64)
    missing = ~np.isfinite(values) | outside_valid_range(values, flag_var)
    fill = attr_numbers(attrs, "_FillValue")
    if fill is not None:
        missing |= values == fill[0]
    flag_int = np.where(missing, 0, values).astype(np.int64)
    meanings = (attr_text(attrs, "flag_meanings") or "").split()
    if not meanings:
        good = (flag_int == 0) if name.endswith("_flags") else ((flag_int & 3) == 0)
        return ~missing & good
    n = len(meanings)
    masks = attr_numbers(attrs, "flag_masks")
    values_attr = attr_numbers(attrs, "flag_values")
    if values_attr is None and masks is None:
        raise GoesFileError(f"{name or 'flag'}: flag_meanings without flag_masks or flag_values")
    for what, arr in (("flag_masks", masks), ("flag_values", values_attr)):
        if arr is not None and arr.size not in (1, n):
            raise GoesFileError(
                f"{name or 'flag'}: {arr.size} {what} for {n} flag_meanings ({' '.join(meanings)})"
            )
    masks_i = None if masks is None else np.broadcast_to(masks.astype(np.int64), (n,))
    vals_i = np.broadcast_to((values_attr if values_attr is not None else masks), (n,))
    vals_i = vals_i.astype(np.int64)

    def holds(i: int) -> np.ndarray:
        if masks_i is None:
            return flag_int == vals_i[i]
        return (flag_int & masks_i[i]) == vals_i[i]

    if "good_data" in meanings:
        return ~missing & holds(meanings.index("good_data"))
    bad = np.zeros(values.shape, dtype=bool)
    for i, meaning in enumerate(meanings):
        word = meaning.lower()
        if any(e in word for e in _ELECTRON_WORDS):
            continue
        if any(b in word for b in _BAD_WORDS) and vals_i[i] != 0:
            bad |= holds(i)
    return ~missing & ~bad


# -- opening and decoding --------------------------------------------------------------------


def open_raw(path: Path) -> Any:
    """The file as an undecoded xarray Dataset (lazy); GoesFileError when it is not netCDF.

    netCDF-4/HDF5 through h5netcdf (phony dimensions where the writer left no dimension
    scales, as netCDF-C names them), netCDF-3 classic through scipy.
    """
    import xarray as xr

    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise
    except OSError as exc:  # a folder, no permission...
        raise GoesFileError(f"{path.name}: cannot be read ({exc})") from None
    netcdf3 = head[:3] == b"CDF"
    kwargs: dict[str, Any] = {} if netcdf3 else {"phony_dims": "sort"}
    try:
        return xr.open_dataset(
            path, engine="scipy" if netcdf3 else "h5netcdf", decode_cf=False, **kwargs
        )
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        what = "netCDF-3" if netcdf3 else "netCDF-4/HDF5"
        raise GoesFileError(f"{path.name}: not a {what} file, or a damaged one ({exc})") from None


def decode(raw: Any, names: Sequence[str], path: Path) -> Any:
    """CF-decode (fill values, scale factors, times) the named variables, loaded in memory."""
    import xarray as xr

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undecodable times are checked by the caller
            ds = xr.decode_cf(raw[list(names)], decode_timedelta=False)
            return ds.load()
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, OverflowError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise GoesFileError(f"{path.name}: cannot be decoded ({why})") from None


def times_ms(var: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A decoded time variable as datetime64[ms] (rounded) and where it is not a valid time."""
    values = np.asarray(var.values)
    if values.dtype.kind != "M":
        units = attr_text(_attrs_of(var), "units") or ""
        parse_time_units(units)  # a clear message for malformed units
        raise GoesFileError(f"{path.name}: time units {units!r} cannot be decoded")
    ns = values.astype("datetime64[ns]")
    bad = np.isnat(ns)
    ticks = np.where(bad, 0, ns.astype(np.int64))
    ms = (ticks + 500_000) // 1_000_000
    return ms.astype("datetime64[ms]"), bad


def satellite_of(attrs: Mapping[str, Any], path: Path) -> str | None:
    """'g16' from the `platform` attribute, else from `id` or the file name; None if unknown."""
    platform = (attr_text(attrs, "platform") or "").strip()
    for text in (platform, (attr_text(attrs, "id") or "").strip(), path.name):
        if m := _SATELLITE_RE.search(f"_{text}_"):
            return f"g{int(m.group(1)):02d}"
    return platform or None  # a platform spelled some other way is kept as the file says


def _require(raw: Any, path: Path, name: str, what: str) -> None:
    if name not in raw.variables:
        raise GoesFileError(f"{path.name}: no variable {name!r} (not an {what} product?)")


def _series_1d(ds: Any, name: str, n: int, path: Path) -> np.ndarray:
    values = np.asarray(ds[name].values, dtype=np.float64)
    if values.shape != (n,):
        raise GoesFileError(f"{path.name}: {name} has shape {values.shape}, time has ({n},)")
    return values


# -- XRS -------------------------------------------------------------------------------------


def xrs_variables(raw: Any, path: Path) -> dict[str, dict[str, str]]:
    """The flux, flag and count variables of each band: {"xrsa": {"flux": ..., "flag": ...}}."""
    _require(raw, path, "time", "XRS")
    found: dict[str, dict[str, str]] = {}
    for band, candidates in _XRS_FLUX_NAMES:
        flux = next((c for c in candidates if c in raw.variables), None)
        if flux is None:
            raise GoesFileError(f"{path.name}: no variable {candidates[0]!r} (not an XRS product?)")
        stem = flux.removesuffix("_flux")
        names = {"flux": flux}
        flag = next((stem + s for s in _FLAG_SUFFIXES if stem + s in raw.variables), None)
        if flag is not None:
            names["flag"] = flag
        if f"{stem}_num" in raw.variables:
            names["num"] = f"{stem}_num"
        found[band] = names
    return found


def read_xrs(path: str | Path) -> XrsSeries:
    """Fluxes of any GOES XRS netCDF product (see the module docstring); GoesFileError if unusable.

    NaN where the value is fill, outside the valid range, flagged not good or averaged from
    no measurement; samples without a valid time are dropped.
    """
    path = Path(path)
    with open_raw(path) as raw:
        names = xrs_variables(raw, path)
        wanted = ["time", *(v for band in names.values() for v in band.values())]
        ds = decode(raw, wanted, path)
        satellite = satellite_of(raw.attrs, path)
    times, bad_t = times_ms(ds["time"], path)
    n = times.shape[0]
    fluxes = {}
    for band, var in names.items():
        flux = _series_1d(ds, var["flux"], n, path)
        bad = ~np.isfinite(flux) | outside_valid_range(flux, ds[var["flux"]])
        if "flag" in var:
            flag = _series_1d(ds, var["flag"], n, path)
            bad |= ~good_samples(flag, ds[var["flag"]], var["flag"])
        if "num" in var:
            bad |= _series_1d(ds, var["num"], n, path) == 0
        flux[bad] = np.nan
        fluxes[band] = flux
    keep = ~bad_t
    return XrsSeries(times[keep], fluxes["xrsa"][keep], fluxes["xrsb"][keep], satellite, path.name)


# -- SGPS protons (L2 five-minute averages) --------------------------------------------------


def _bad_values(var: Any) -> np.ndarray:
    """Fill (NaN after decoding), not finite, negative or outside the valid range."""
    a = np.asarray(var.values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(a) | (a < 0) | outside_valid_range(a, var)


def _no_valid_samples(ds: Any, name: str, shape: tuple[int, ...], path: Path) -> np.ndarray:
    """Where an SGPS `*ValidL1bSamplesInAvg` count says the average holds no valid sample."""
    if name not in ds.variables:
        return np.zeros(shape, dtype=bool)
    count = np.asarray(ds[name].values, dtype=np.float64)
    try:
        return np.broadcast_to(~np.isfinite(count) | (count == 0), shape)
    except ValueError:
        why = f"{name} has shape {count.shape}, expected {shape}"
        raise GoesFileError(f"{path.name}: {why}") from None


def _energies_kev(var: Any, shape: tuple[int, int], path: Path) -> np.ndarray:
    """Channel energy bounds in keV as (sensor_units, diff_channels); NaN where fill."""
    e = np.where(_bad_values(var), np.nan, np.asarray(var.values, dtype=np.float64))
    if (attr_text(var.attrs, "units") or "keV").strip().lower() == "mev":
        e = e * 1000.0
    try:
        return np.broadcast_to(e, shape)
    except ValueError:
        why = f"{var.name} has shape {e.shape}, expected {shape}"
        raise GoesFileError(f"{path.name}: {why}") from None


def read_sgps(path: str | Path) -> ProtonSeries:
    """Integral >= 10 MeV proton flux (pfu) of an SGPS L2 avg5m netCDF file; GoesFileError if not.

    SGPS files hold no >= 10 MeV integral, so it is derived from `AvgDiffProtonFlux` (time,
    sensor_units, diff_channels; protons/(cm2 sr keV s)) and the channel bounds
    `DiffProtonLowerEnergy`/`DiffProtonUpperEnergy` (sensor_units, diff_channels; keV): the
    sum of flux x width over the channels above 10 MeV, the channel that contains 10 MeV
    counted pro rata (the part of its width above 10 MeV, i.e. a flat spectrum inside it),
    plus the >500 MeV integral channel `AvgIntProtonFlux` (P11) when the file has it.

    Approximation: the gaps between the channels (e.g. 404-500 MeV, and the few-MeV gaps
    between P5..P10) are not counted and overlaps (P8B/P8C) are counted twice, so this
    approximates SWPC's >= 10 MeV value (its own algorithm, not reproduced here) for a quick
    look and tends to be slightly low.

    A channel value is bad when it is fill (-1e31), negative, not finite, outside
    valid_min..valid_max, or its `DiffValidL1bSamplesInAvg`/`IntValidL1bSamplesInAvg` count
    is 0 or fill (NOAA already leaves L1b samples with DQF flags out of the averages). A sensor
    unit (+X/-X) counts at a time only when every channel it needs is good; the result is the
    mean over the good units, NaN when none is. The time variable is `time` (v3 files) or
    `L2_SciData_TimeStamp` (v1/v2), decoded from its `units`; the satellite is the file's
    `platform` attribute. Read through xarray like `read_xrs`.
    """
    path = Path(path)
    with open_raw(path) as raw:
        tname = next((n for n in _SGPS_TIME_NAMES if n in raw.variables), None)
        if tname is None:
            raise GoesFileError(f"{path.name}: no variable 'time' (not an SGPS product?)")
        required = ("AvgDiffProtonFlux", "DiffProtonLowerEnergy", "DiffProtonUpperEnergy")
        for name in required:
            _require(raw, path, name, "SGPS")
        optional = ("AvgIntProtonFlux", "DiffValidL1bSamplesInAvg", "IntValidL1bSamplesInAvg")
        present = [n for n in optional if n in raw.variables]
        ds = decode(raw, [tname, *required, *present], path)
        satellite = satellite_of(raw.attrs, path)
    times, bad_t = times_ms(ds[tname], path)
    var = ds["AvgDiffProtonFlux"]
    diff = np.asarray(var.values, dtype=np.float64)
    if diff.ndim != 3 or diff.shape[0] != times.shape[0]:
        raise GoesFileError(
            f"{path.name}: AvgDiffProtonFlux has shape {diff.shape}, expected "
            f"(time={times.shape[0]}, sensor_units, diff_channels)"
        )
    n_units, n_channels = diff.shape[1], diff.shape[2]
    bad = _bad_values(var) | _no_valid_samples(ds, "DiffValidL1bSamplesInAvg", diff.shape, path)
    diff[bad] = np.nan
    lower = _energies_kev(ds["DiffProtonLowerEnergy"], (n_units, n_channels), path)
    upper = _energies_kev(ds["DiffProtonUpperEnergy"], (n_units, n_channels), path)
    width = upper - np.maximum(lower, SGPS_THRESHOLD_KEV)  # keV above 10 MeV, per channel
    width = np.where(np.isfinite(width), np.clip(width, 0.0, None), 0.0)
    flux_units = (attr_text(var.attrs, "units") or "").lower()
    if "mev" in flux_units and "kev" not in flux_units:
        width = width / 1000.0  # flux per MeV
    used = width > 0
    unit_bad = np.any(np.isnan(diff) & used[None, :, :], axis=2) | ~np.any(used, axis=1)
    total = np.sum(np.where(used[None, :, :], np.nan_to_num(diff) * width[None], 0.0), axis=2)
    if "AvgIntProtonFlux" in ds.variables:
        ivar = ds["AvgIntProtonFlux"]
        integral = np.asarray(ivar.values, dtype=np.float64)
        if integral.shape != diff.shape[:2]:
            raise GoesFileError(f"{path.name}: AvgIntProtonFlux has shape {integral.shape}")
        ibad = _bad_values(ivar) | _no_valid_samples(
            ds, "IntValidL1bSamplesInAvg", integral.shape, path
        )
        unit_bad |= ibad
        total += np.where(ibad, 0.0, integral)
    total[unit_bad] = np.nan
    good_units = np.sum(~unit_bad, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        flux = np.where(good_units > 0, np.nansum(total, axis=1) / good_units, np.nan)
    keep = ~bad_t
    return ProtonSeries(times[keep], flux[keep], satellite, path.name)
