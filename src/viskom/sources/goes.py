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
