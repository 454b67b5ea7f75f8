"""Calibration products built from many exposures: the hot-pixel map from recent darks.

A hot pixel looks exactly like a one-pixel particle hit in a single frame; only its coming
back, frame after frame, gives it away. `update_hot_pixel_map` takes the most recent DARK
frames of the store (`[events] hot_pixel_darks`), finds the pixels that are hot in all of
them and writes one map per quadrant to `<products>/calibration/hot_pixels.npz`, rebuilt only
when the set of darks changes. The events stage uses the map current when it runs (and records
how many pixels it masked); a new map does not re-measure the past.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from viskom.le1.frame import FrameError, Le1Frame
from viskom.measure.cosmics import hot_pixel_indices
from viskom.measure.detector import quadrant_bias

HOT_PIXEL_FILE = Path("calibration") / "hot_pixels.npz"


def hot_pixel_map_path(products_dir: str | Path) -> Path:
    """Where the hot-pixel map lives in the product tree."""
    return Path(products_dir) / HOT_PIXEL_FILE


def load_hot_pixels(path: str | Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The map: {extname: flat indices in the image area} and the darks it was built from."""
    path = Path(path)
    if not path.exists():
        return {}, []
    with np.load(path) as z:
        darks = json.loads(str(z["darks"]))
        return {k[4:]: z[k] for k in z.files if k.startswith("ext:")}, darks


def hot_pixel_map_darks(path: str | Path) -> list[str]:
    """The darks (name:checksum) a map was built from, without reading its pixel lists."""
    path = Path(path)
    if not path.exists():
        return []
    with np.load(path) as z:
        return json.loads(str(z["darks"]))


def _image_area(frame: Le1Frame, name: str) -> np.ndarray:
    quad = frame.quadrant(name)
    g = quad.geometry
    bias = quadrant_bias(quad.data, g)[2]
    return quad.data[g.image.slices].astype(np.float32) - np.float32(bias)


def build_hot_pixel_map(dark_paths: list[str], nsigma: float = 6.0) -> dict[str, np.ndarray]:
    """Hot pixels per quadrant from dark frames (one quadrant of every dark in memory at once)."""
    frames = [Le1Frame(p) for p in dark_paths]
    try:
        names = [
            n for n in frames[0].quadrant_extnames if all(n in f.quadrant_extnames for f in frames)
        ]
        return {n: hot_pixel_indices([_image_area(f, n) for f in frames], nsigma) for n in names}
    finally:
        for f in frames:
            f.close()


def update_hot_pixel_map(store: Any, settings: Any) -> tuple[Path | None, str]:
    """Rebuild the map when the most recent darks changed; returns (path or None, message)."""
    n = int(settings.events.hot_pixel_darks)
    darks = [
        e
        for e in store.list_exposures(frame_type="DARK", state="registered")
        if e.path and Path(e.path).exists()
    ][-n:]
    path = hot_pixel_map_path(settings.products_path)
    if len(darks) < 2:
        return (path if path.exists() else None), "hot pixels: fewer than 2 darks, map unchanged"
    key = [f"{d.name}:{d.checksum}" for d in darks]
    if hot_pixel_map_darks(path) == key:
        return path, "hot pixels: map up to date"
    try:
        hot = build_hot_pixel_map([d.path for d in darks], settings.events.hot_pixel_sigma)
    except (FrameError, OSError, ValueError) as exc:
        return (path if path.exists() else None), f"hot pixels: map not rebuilt ({exc})"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".hot_pixels.", suffix=".npz", dir=path.parent)
    os.close(fd)
    np.savez_compressed(
        tmp, darks=np.array(json.dumps(key)), **{f"ext:{k}": v for k, v in hot.items()}
    )
    os.replace(tmp, path)
    total = sum(v.size for v in hot.values())
    return path, f"hot pixels: {total} in {len(hot)} quadrants from {len(darks)} darks"


# ---------------------------------------------------------------------------------------------
# Relative quadrant gains (VIS-Gaia photometry)
# ---------------------------------------------------------------------------------------------
GAINS_FILE = Path("calibration") / "relative_gains.txt"


def relative_gains_path(products_dir: str | Path) -> Path:
    """Where the relative gains derived from the latest flat live in the product tree."""
    return Path(products_dir) / GAINS_FILE


def update_relative_gains(store: Any, settings: Any) -> tuple[Path | None, str]:
    """Write relative gains from the latest measured FLAT (VISQL's mean(level) / level).

    Only needed (and only done) when no gains table is configured ([gaia] gains_file). The
    flat levels are the detector-health stage's `image_level_adu` per quadrant, so a flat
    registered in this run is used from the next run on.
    """
    from viskom.measure.gaia import gains_from_flat_levels

    path = relative_gains_path(settings.products_path)
    if settings.gaia_gains_path is not None:
        return settings.gaia_gains_path, f"relative gains: from {settings.gaia_gains_path}"
    flats = store.list_exposures(frame_type="FLAT", state="registered")
    for flat in reversed(flats):
        levels = {
            m.unit: m.value
            for m in store.metrics(exposures=[flat.name], metrics=["image_level_adu"])
            if m.value is not None and "." in m.unit
        }
        if len(levels) < 4:
            continue
        key = f"# from the flat {flat.name} (mean level / level)"
        if path.exists() and path.read_text().startswith(key):
            return path, f"relative gains: up to date ({flat.name})"
        gains = gains_from_flat_levels(levels)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".relative_gains.", suffix=".txt", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
            fh.writelines(f"{ext} {g:.10f}\n" for ext, g in sorted(gains.items()))
        os.replace(tmp, path)
        return path, f"relative gains: {len(gains)} quadrants from the flat {flat.name}"
    if path.exists():
        return path, "relative gains: no measured flat, keeping the existing table"
    return None, "relative gains: no gains table and no measured flat; all gains 1"


def resolve_relative_gains(settings: Any) -> tuple[dict[str, float], str]:
    """The gains the Gaia stage uses and where they come from (configured file, flat, none)."""
    from viskom.sources.visql import read_quadrant_gains

    configured = settings.gaia_gains_path
    path = configured or relative_gains_path(settings.products_path)
    if configured is None and not path.exists():
        return {}, "none (all 1)"
    try:
        return read_quadrant_gains(path), str(path)
    except (OSError, ValueError) as exc:
        return {}, f"error: {exc}"
