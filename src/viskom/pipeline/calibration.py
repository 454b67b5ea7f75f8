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
from pathlib import Path
from typing import Any

import numpy as np

from viskom.le1.frame import FrameError, Le1Frame
from viskom.measure.cosmics import hot_pixel_indices
from viskom.measure.detector import quadrant_bias
from viskom.store.atomic import write_text_atomic
from viskom.store.products import write_arrays

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
    write_arrays({"darks": np.array(json.dumps(key)), **{f"ext:{k}": v for k, v in hot.items()}},
                 path)  # fmt: skip
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
        lines = [key, *(f"{ext} {g:.10f}" for ext, g in sorted(gains.items()))]
        write_text_atomic(path, "\n".join(lines) + "\n")
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


# ---------------------------------------------------------------------------------------------
# X-ray baseline: the cosmic rays that pass as X-ray events, measured on quiet frames
# ---------------------------------------------------------------------------------------------
XRAY_BASELINE_FILE = Path("calibration") / "xray_baseline.json"
BASELINE_FRAME_TYPES = ("SCIENCE", "DARK")


def xray_baseline_path(products_dir: str | Path) -> Path:
    """Where the X-ray baseline lives in the product tree."""
    return Path(products_dir) / XRAY_BASELINE_FILE


def load_xray_baseline(path: str | Path, frame_type: str | None) -> Any:
    """The baseline for a frame type, or None. Types are never pooled: the hit detector's
    PSF limits differ between science frames (their stars) and darks, and so does the share
    of cosmic rays that pass as X-ray events."""
    from viskom.measure.cosmics import XrayBaseline

    path = Path(path)
    if not path.exists():
        return None
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    entry = table.get(str(frame_type or "").upper())
    if not entry:
        return None
    return XrayBaseline(
        float(entry["ratio"]),
        float(entry["ratio_err"]),
        int(entry["n_frames"]),
        tuple(entry.get("frames", ())),
    )


def quiet_frames(store: Any, settings: Any) -> dict[str, list[tuple[str, float, float]]]:
    """Per frame type, (exposure, xray_candidates, cr_tracks) of the most recent measured
    frames, without those the GOES X-ray flux marks as flaring (when it is known)."""
    cfg = settings.events
    out: dict[str, list[tuple[str, float, float]]] = {}
    for frame_type in BASELINE_FRAME_TYPES:
        names = [e.name for e in store.list_exposures(frame_type=frame_type, state="registered")]
        # the most recent ones only (ten times what is kept: some are flaring or unmeasured),
        # so that the query stays small on a store of years
        names = names[-10 * int(cfg.xray_baseline_frames) :]
        if not names:
            continue
        values: dict[str, dict[str, float]] = {}
        for m in store.metrics(
            exposures=names,
            metrics=["xray_candidates", "cr_tracks", "goes_xrsb_max"],
            units=["FPA"],
        ):
            if m.value is not None:
                values.setdefault(m.exposure, {})[m.metric] = float(m.value)
        rows = []
        for name in names:  # in date order
            v = values.get(name, {})
            if "xray_candidates" not in v or v.get("cr_tracks", 0.0) <= 0:
                continue
            if v.get("goes_xrsb_max", 0.0) >= cfg.xray_quiet_goes_xrsb:
                continue
            rows.append((name, v["xray_candidates"], v["cr_tracks"]))
        out[frame_type] = rows[-int(cfg.xray_baseline_frames) :]
    return out


def update_xray_baseline(store: Any, settings: Any) -> tuple[Path | None, str]:
    """Rebuild the X-ray baseline from the store's quiet frames when they changed.

    Per frame type: the median over the most recent `[events] xray_baseline_frames` measured
    frames (flaring ones left out when GOES says so) of X-ray-class hits per cosmic-ray track,
    with at least `xray_baseline_min_frames` frames. The events stage uses the baseline current
    when it runs and records the ratio it used.
    """
    from viskom.measure.cosmics import xray_baseline

    path = xray_baseline_path(settings.products_path)
    need = int(settings.events.xray_baseline_min_frames)
    frames = quiet_frames(store, settings)
    table: dict[str, Any] = {}
    for frame_type, rows in frames.items():
        if len(rows) >= need:
            base = xray_baseline(
                np.array([r[1] for r in rows]),
                np.array([r[2] for r in rows]),
                tuple(r[0] for r in rows),
            )
            if base is not None:
                table[frame_type] = base.as_dict()
    if not table:
        found = sum(len(r) for r in frames.values())
        have = "kept" if path.exists() else "none yet"
        return (path if path.exists() else None), (
            f"X-ray baseline: {found} quiet measured frame(s), need {need}; {have}"
        )
    if path.exists():
        try:
            if json.loads(path.read_text()) == json.loads(json.dumps(table)):
                return path, "X-ray baseline: up to date"
        except (OSError, ValueError):
            pass
    write_text_atomic(path, json.dumps(table, indent=1))
    summary = ", ".join(
        f"{k} {v['ratio']:.4f} +- {v['ratio_err']:.4f} ({v['n_frames']} frames)"
        for k, v in table.items()
    )
    return path, f"X-ray baseline: {summary}"
