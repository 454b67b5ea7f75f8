"""The truth files of a simulated frame: `<name>.truth.json` and `<name>.objects.parquet`.

The truth JSON is strict (NaN written as null) and written atomically; `TRUTH_DEFINITIONS`
(stored in it) says how each truth value is defined. The object list has one row per injected
star, galaxy, cosmic ray, X-ray, proton and hot pixel (`quadrant.OBJECT_COLUMNS`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from viskom.sources.simulator.quadrant import OBJECT_COLUMNS
from viskom.store.atomic import write_text_atomic

OBJECT_SCHEMA = pa.schema(
    [
        pa.field(name, {"str": pa.string(), "f8": pa.float64(), "i8": pa.int64(),
                        "bool": pa.bool_()}[dtype])
        for name, dtype in OBJECT_COLUMNS.items()
    ]
)  # fmt: skip


def objects_table(objects: dict[str, np.ndarray]) -> pa.Table:
    """An object list (OBJECT_COLUMNS arrays) as a table of OBJECT_SCHEMA (-1 ids are null)."""
    kind = objects["kind"]
    arrays = []
    for name, dtype in OBJECT_COLUMNS.items():
        col = objects[name]
        if dtype == "str":
            arrays.append(pa.array(col.astype(str).tolist(), type=pa.string()))
        elif dtype == "f8":
            arrays.append(pa.array(col.astype(np.float64), from_pandas=True))
        elif dtype == "i8":
            arrays.append(pa.array(col.astype(np.int64), mask=col < 0))
        else:
            arrays.append(pa.array(col.astype(bool), mask=kind != "star"))
    return pa.Table.from_arrays(arrays, schema=OBJECT_SCHEMA)


# ---------------------------------------------------------------------------------------------
# The frame


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _clean(value: Any) -> Any:
    """NaN -> None, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value


def write_json(path: Path, payload: dict) -> None:
    """Write `payload` as strict JSON (NaN -> null, numpy values as numbers), atomically."""
    text = json.dumps(_clean(payload), indent=1, default=_json_default, allow_nan=False)
    write_text_atomic(path, text + "\n")


def warn_if_replacing(truth_path: Path, **identity: Any) -> None:
    """Warn when a different frame with the same file name is about to be overwritten.

    File names depend only on DATE-OBS, OBS_ID, dither and exposure index (and the seed for
    IWS names), so two kinds simulated at the same time and place share a name.
    """
    if not truth_path.exists():
        return
    try:
        old = json.loads(truth_path.read_text())
    except (OSError, ValueError):
        return
    changed = {k: (old.get(k), v) for k, v in identity.items() if old.get(k) != v}
    if changed:
        warnings.warn(
            f"simulate_frame overwrites {truth_path.name[: -len('.truth.json')]} made with "
            f"different settings {changed}: give each frame its own date_obs, obs_id, dither "
            "or exposure_index",
            UserWarning,
            stacklevel=3,
        )


TRUTH_DEFINITIONS = {
    "bias_*_adu": (
        "exact mean over that region (le1.geometry regions from the header: serial_prescan, "
        "serial_overscan, parallel_overscan, image) of the noiseless bias model pedestal + "
        "serial gradient (linear in readout order across NAXIS1) + parallel gradient (linear in "
        "rows from the serial register) + frame drift, as written (mirrored if flipped)"
    ),
    "read_noise_digitised_adu": "sqrt(read_noise_adu**2 + 1/12): rms of bias-only pixels",
    "gain_e_per_adu": "electrons per ADU of the quadrant (header GAIN)",
    "relative_gain": (
        "gain/(3.4*qe): multiply ADU fluxes by it to put quadrants on one scale (VISQL)"
    ),
    "sky_e_per_s": "zodiacal sky of the quadrant, e-/px/s (frame level x QE)",
    "flat_level_e": "median of the noiseless LED illumination (e-) over the image area",
    "flat_nonuniformity": "rms/median of that illumination (PRNU excluded)",
    "ci_level_adu": "noiseless injected level above bias in the injected rows (ADU)",
    "cosmic_pixel_fraction": (
        "fraction of image pixels where the charge of all particle hits exceeds "
        "particle_threshold_e = 3 sqrt(read_noise_e^2 + mean background e-)"
    ),
    "n_saturated_pixels": "image pixels at full well after blooming",
    "objects.x/y": "0-based array pixel (column, row) as written",
    "objects.npix": "pixels where that hit's charge alone exceeds particle_threshold_e",
    "objects.true_r2/e1/e2": (
        "VISQL weighted moments of the noiseless pixelated PSF at the star's position "
        "(see psf.truth_moments)"
    ),
}
