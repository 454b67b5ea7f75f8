"""Plot inputs as numpy arrays: tables of any common kind, locus results, mission time.

Plot functions accept a mapping of column name -> array-like, an astropy `Table`, a pyarrow
`Table`/`RecordBatch`, a pandas `DataFrame` or a numpy structured array. `Columns` reads
columns from any of these as float (NaN for missing/masked/unparseable values), str or
datetime64. An input with no rows (or `None`, or `{}`) is empty; a non-empty input lacking a
required column is a contract error (KeyError naming the column).

Mission time: VISQL's "mission day" is days since 2023-07-01T00:00:00 UTC (VISQL-SPEC 0.5).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from viskom.measure.arrays import as_float as _as_float

MISSION_EPOCH = np.datetime64("2023-07-01T00:00:00", "us")
_US_PER_DAY = 86400e6
_NAT = np.datetime64("NaT", "us")
_MONTH_RE = re.compile(r"^(\d{4})-?(\d{2})$")


def _column_names(data: Any) -> list[str]:
    if data is None:
        return []
    if hasattr(data, "column_names") and hasattr(data, "column"):  # pyarrow Table / RecordBatch
        return [str(n) for n in data.column_names]
    if hasattr(data, "colnames"):  # astropy Table
        return [str(n) for n in data.colnames]
    if isinstance(data, Mapping):
        return [str(k) for k in data]
    if isinstance(data, np.ndarray) and data.dtype.names:
        return list(data.dtype.names)
    if hasattr(data, "columns"):  # pandas DataFrame
        return [str(c) for c in data.columns]
    raise TypeError(f"cannot read columns from a {type(data).__name__}")


def _raw_column(data: Any, name: str) -> Any:
    if hasattr(data, "column_names") and hasattr(data, "column"):
        col = data.column(name)
        try:
            return col.to_numpy(zero_copy_only=False)
        except TypeError:  # ChunkedArray.to_numpy has no zero_copy_only in some versions
            return col.to_numpy()
    return data[name]


def _as_str(values: Any) -> np.ndarray:
    if isinstance(values, np.ma.MaskedArray):
        values = np.ma.filled(values.astype(object), "")
    arr = np.asarray(values)
    if arr.dtype.kind == "U":
        return np.char.strip(arr.ravel())
    items = [
        "" if v is None else (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
        for v in arr.ravel()
    ]
    return np.array([s.strip() for s in items], dtype=str)


def _one_datetime(v: Any) -> np.datetime64:
    if v is None:
        return _NAT
    if isinstance(v, np.datetime64):
        return v.astype("datetime64[us]")
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, str):
        text = v.strip()
        if not text:
            return _NAT
        try:
            v = datetime.fromisoformat(text)
        except ValueError:
            return _NAT
    if isinstance(v, datetime):
        if v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        return np.datetime64(v, "us")
    if isinstance(v, date):
        return np.datetime64(v, "us")
    return _NAT


def as_datetime64(values: Any) -> np.ndarray:
    """datetime64[us] (UTC) from datetimes, numpy datetimes, ISO strings or astropy Time.

    Naive datetimes and strings without an offset are taken as UTC; unparseable values are NaT.
    """
    if hasattr(values, "datetime64") and hasattr(values, "utc"):  # astropy Time
        return np.asarray(values.utc.datetime64, dtype="datetime64[us]").ravel()
    if isinstance(values, np.ma.MaskedArray):
        values = np.ma.filled(values.astype(object), None)
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[us]").ravel()
    out = np.full(arr.size, _NAT, dtype="datetime64[us]")
    for i, v in enumerate(arr.ravel()):
        out[i] = _one_datetime(v)
    return out


def mission_day(values: Any) -> np.ndarray:
    """Days since 2023-07-01T00:00:00 UTC (VISQL's mission day) as float; NaN where unknown."""
    dt = as_datetime64(values)
    out = (dt - MISSION_EPOCH).astype("timedelta64[us]").astype(np.int64) / _US_PER_DAY
    out = np.asarray(out, dtype=float)
    out[np.isnat(dt)] = np.nan
    return out


def month_bounds(month_label: str) -> tuple[np.datetime64, np.datetime64]:
    """First instant of the month 'YYYY-MM' (or 'YYYYMM') and of the next month, UTC."""
    m = _MONTH_RE.match(str(month_label).strip())
    if not m or not 1 <= int(m[2]) <= 12:
        raise ValueError(f"month label must be 'YYYY-MM', got {month_label!r}")
    start = np.datetime64(f"{m[1]}-{m[2]}", "M")
    return start.astype("datetime64[us]"), (start + 1).astype("datetime64[us]")


def month_mission_days(month_label: str) -> tuple[float, float]:
    """Mission days of the start of the month and of the start of the next month."""
    start, end = month_bounds(month_label)
    return float(mission_day(start)[0]), float(mission_day(end)[0])


def mission_day_to_date(day: float) -> datetime:
    """The UTC calendar datetime (naive) of a mission day."""
    us = np.timedelta64(round(float(day) * _US_PER_DAY), "us")
    return (MISSION_EPOCH + us).astype(datetime)


class Columns:
    """Read columns of a table-like input as numpy arrays (see the module docstring)."""

    def __init__(self, data: Any, what: str = "table") -> None:
        self.data = data
        self.what = what
        self.names = _column_names(data)
        self.n = len(np.asarray(_raw_column(data, self.names[0])).ravel()) if self.names else 0

    def find(self, *names: str) -> str | None:
        """The first of `names` that is a column (exact, then case-insensitive), else None."""
        for name in names:
            if name in self.names:
                return name
        lower = {n.lower(): n for n in self.names}
        for name in names:
            if name.lower() in lower:
                return lower[name.lower()]
        return None

    def _get(self, names: Sequence[str], required: bool) -> Any | None:
        found = self.find(*names)
        if found is None:
            if required and self.n > 0:
                raise KeyError(f"{self.what}: no column {names[0]!r} (columns: {self.names})")
            return None
        return _raw_column(self.data, found)

    def float(self, *names: str, required: bool = True) -> np.ndarray:
        """Float column (first name found); NaN-filled if absent and not required."""
        raw = self._get(names, required)
        return np.full(self.n, np.nan) if raw is None else _as_float(raw)

    def str(self, *names: str, required: bool = True) -> np.ndarray:
        """String column, stripped (bytes decoded); empty strings if absent and not required."""
        raw = self._get(names, required)
        return np.full(self.n, "", dtype=str) if raw is None else _as_str(raw)

    def datetime(self, *names: str, required: bool = True) -> np.ndarray:
        """datetime64[us] UTC column; NaT if absent and not required."""
        raw = self._get(names, required)
        return np.full(self.n, _NAT) if raw is None else as_datetime64(raw)


def locus_value(locus: Any, name: str, default: Any = None) -> Any:
    """Attribute `name` of a locus result (dataclass/object) or key of a mapping."""
    if locus is None:
        return default
    if isinstance(locus, Mapping):
        return locus.get(name, default)
    return getattr(locus, name, default)


def finite_float(value: Any) -> float:
    """float(value), NaN when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def finite_positive(value: Any) -> float:
    """float(value) if it is a finite number > 0, else NaN (an unknown exposure time)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v if np.isfinite(v) and v > 0 else float("nan")
