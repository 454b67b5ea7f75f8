"""Array inputs of the pure measurement functions: floats from any array-like, quiet numpy.

`as_float` turns lists, numpy (also masked and object) arrays and columns of mixed Python
values into a flat float array, NaN where a value is missing or not a number, so that the
functions of `viskom.measure` (and the plots of `viskom.present`) accept table columns as
they come. `quiet_numpy` silences numpy's warnings for all-NaN slices and invalid values.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["as_float", "quiet_numpy"]


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
