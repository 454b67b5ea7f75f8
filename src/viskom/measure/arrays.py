"""Array inputs of the pure measurement functions: floats from any array-like, quiet numpy,
per-quadrant tables joined.

`stack_tables` joins per-quadrant tables into one; `quadrant_codes` numbers their rows'
quadrants. `as_float` turns lists, numpy (also masked and object) arrays and columns of
mixed Python values into a flat float array, NaN where a value is missing or not a number,
so that the functions of `viskom.measure` (and the plots of `viskom.present`) accept table
columns as they come. `quiet_numpy` silences numpy's warnings for all-NaN slices and
invalid values.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["as_float", "quadrant_codes", "quiet_numpy", "stack_tables"]


def as_float(values: Any) -> np.ndarray:
    """Flat float array of `values`; masked, None and unparseable entries become NaN."""
    if isinstance(values, np.ma.MaskedArray):
        if values.dtype.kind in "fiub":
            return np.ma.filled(values.astype(float), np.nan).ravel()
        values = np.ma.filled(values.astype(object), None)
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr.astype(float).ravel()
    out = np.full(arr.size, np.nan)
    for i, v in enumerate(arr.ravel()):
        with contextlib.suppress(TypeError, ValueError):
            out[i] = float(v)
    return out


@contextlib.contextmanager
def quiet_numpy() -> Iterator[None]:
    """Silence numpy's warnings for all-NaN slices and invalid comparisons inside a block."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def stack_tables(
    tables: Iterable[Mapping[str, np.ndarray]], columns: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-quadrant tables as one: each of `columns` concatenated (empty when there is no
    table, so that readers find every column), `extname` as str."""
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for table in tables:
        for c in columns:
            parts[c].append(table[c])
    merged = {c: np.concatenate(v) if v else np.zeros(0) for c, v in parts.items()}
    if "extname" in merged:
        merged["extname"] = merged["extname"].astype(str)
    return merged


def quadrant_codes(extnames: Any, names: Sequence[str]) -> np.ndarray:
    """Each row's quadrant as its index in `names` (len(names) for a quadrant not in it).
    Joined tables hold each quadrant's rows in a run: one lookup per run, not per row (a
    frame's catalogue has a million rows and 144 quadrants)."""
    values = np.asarray(extnames, dtype=object)
    if not values.size:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    index = {str(name): i for i, name in enumerate(names)}
    run_codes = np.array([index.get(str(v), len(names)) for v in values[starts]], dtype=np.int64)
    return np.repeat(run_codes, np.diff(np.r_[starts, values.size]))
