"""astrometry.net index files built from Gaia stars (`build-astrometry-index`).

`build_index` writes the Gaia stars (brightest first: `-S MAG`) to a FITS table and builds one
index file per astrometry.net scale preset (`-P`) whose quads fall in `scale_arcmin` (default
4-22 arcmin, presets 2-6: quads from a tenth to about half of the ~40 arcmin VIS field, the
range solve-field searches by default). `-E` limits the work to the HEALPix cells the catalogue
occupies (without it, -P 2 takes ~50 s for 5000 stars instead of 0.1 s); `-M` keeps it in
memory; `-I` gives each file a unique id. Files replace older ones atomically.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from viskom.sources.astrometry_net.tools import (
    BUILD_INDEX,
    AstrometryNetError,
    output_tail,
    require_tool,
    run_tool,
)
from viskom.store.atomic import atomic_path

log = logging.getLogger(__name__)

#: Quad sizes (arcmin) of the index files: a tenth to about half of the ~40 arcmin field.
DEFAULT_SCALE_ARCMIN: tuple[float, float] = (4.0, 22.0)
#: Quad size range (arcmin) of `build-astrometry-index -P 0`; presets go in steps of sqrt(2).
_PRESET0_ARCMIN = 2.0
_MAX_PRESET = 19
_SORT_FILL_MAG = 99.0  # stars without a magnitude go last
_MAX_INDEX_ID = 20_000_000  # base ids below this; file ids are base * 100 + preset + 5


def preset_quad_range_arcmin(preset: int) -> tuple[float, float]:
    """Quad size range (arcmin) of `build-astrometry-index -P preset` (2.0-2.8 for -P 0)."""
    lo = _PRESET0_ARCMIN * math.sqrt(2.0) ** preset
    return lo, lo * math.sqrt(2.0)


def presets_for_scale(scale_arcmin: tuple[float, float]) -> list[int]:
    """The `-P` presets whose quad sizes overlap the range `scale_arcmin` (arcmin)."""
    lo, hi = (float(v) for v in scale_arcmin)
    if not (0 < lo < hi):
        raise ValueError(f"scale_arcmin {scale_arcmin!r} is not an increasing positive range")
    chosen = []
    for p in range(-5, _MAX_PRESET + 1):
        qlo, qhi = preset_quad_range_arcmin(p)
        if qhi > lo * (1 + 1e-9) and qlo < hi * (1 - 1e-9):
            chosen.append(p)
    if not chosen:
        raise ValueError(f"no build-astrometry-index preset covers quads of {lo}-{hi} arcmin")
    return chosen


def _column(table: Any, name: str) -> np.ndarray:
    col = table[name]
    if isinstance(col, u.Quantity):
        col = col.value
    return np.ma.filled(np.ma.asarray(col).astype(np.float64), np.nan)


def _catalogue_arrays(
    catalogue: Table | Mapping[str, Any] | tuple[Any, Any, Any], mag_column: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(catalogue, tuple | list):
        if len(catalogue) != 3:
            raise ValueError("catalogue arrays must be (ra_deg, dec_deg, mag)")
        ra, dec, mag = (
            np.asarray(np.ma.filled(np.ma.asarray(a, float), np.nan)) for a in catalogue
        )
    else:
        names = list(getattr(catalogue, "colnames", None) or catalogue.keys())
        missing = [c for c in ("RA_ICRS", "DE_ICRS", mag_column) if c not in names]
        if missing:
            raise ValueError(f"Gaia table has no column(s) {', '.join(missing)}")
        ra = _column(catalogue, "RA_ICRS")
        dec = _column(catalogue, "DE_ICRS")
        mag = _column(catalogue, mag_column)
    ra, dec, mag = (np.ravel(a).astype(np.float64) for a in (ra, dec, mag))
    if not (ra.size == dec.size == mag.size):
        raise ValueError(f"ra, dec, mag lengths differ ({ra.size}, {dec.size}, {mag.size})")
    good = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0)
    mag = np.where(np.isfinite(mag), mag, _SORT_FILL_MAG)
    return ra[good] % 360.0, dec[good], mag[good]


def default_index_id(ra: np.ndarray, dec: np.ndarray) -> int:
    """A stable index id in 1..19999999 from the catalogue's positions (milliarcsec).

    `build_index` multiplies it by 100 and adds the preset, staying below 2**31.
    """
    key = np.round(np.stack([ra, dec]) * 3.6e6).astype(np.int64).tobytes()
    return 1 + zlib.crc32(key) % (_MAX_INDEX_ID - 1)


def build_index(
    catalogue: Table | Mapping[str, Any] | tuple[Any, Any, Any],
    folder: str | Path,
    *,
    scale_arcmin: tuple[float, float] = DEFAULT_SCALE_ARCMIN,
    presets: Sequence[int] | None = None,
    index_id: int | None = None,
    mag_column: str = "Gmag",
    max_stars: int | None = None,
    stars_per_cell: int = 10,
    jitter_arcsec: float = 1.0,
    timeout_s: float = 120.0,
) -> list[Path]:
    """Build astrometry.net index files from Gaia stars; returns their paths (one per preset).

    `catalogue`: a Gaia table (VizieR columns RA_ICRS, DE_ICRS and `mag_column`, as from
    `GaiaClient.cone`) or arrays (ra_deg, dec_deg, mag). Stars are used brightest first
    (`-S MAG`), at most `max_stars`; stars without a magnitude last. Presets default to those
    whose quads fall in `scale_arcmin`. Each file gets the unique id `index_id * 100 +
    preset + 5` (`index_id` defaults to a hash of the positions) and is written to `folder`
    as `viskom-gaia-<id>.fits` (atomically replacing an older one). AstrometryNetError when
    the tool is missing or fails; ValueError for an empty catalogue or bad scales. Positions
    are used as given (Gaia DR3: epoch 2016.0; `sources.gaia.propagate_to_epoch` moves them
    first if the ~10-100 mas of proper motion matter).
    """
    exe = require_tool(BUILD_INDEX)
    ra, dec, mag = _catalogue_arrays(catalogue, mag_column)
    if ra.size < 4:
        raise ValueError(f"only {ra.size} catalogue star(s) with a position; need at least 4")
    order = np.argsort(mag, kind="stable")
    if max_stars is not None:
        order = order[: int(max_stars)]
    ra, dec, mag = ra[order], dec[order], mag[order]
    chosen = sorted(set(presets)) if presets is not None else presets_for_scale(scale_arcmin)
    if any(not (-5 <= p <= _MAX_PRESET) for p in chosen):
        raise ValueError(f"presets {chosen} outside -5..{_MAX_PRESET}")
    base = default_index_id(ra, dec) if index_id is None else int(index_id)
    if not (0 < base < _MAX_INDEX_ID):
        raise ValueError(f"index_id {index_id!r} must be in 1..{_MAX_INDEX_ID - 1}")
    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="viskom-anidx-") as tmp:
        tmpdir = Path(tmp)
        cat_path = tmpdir / "gaia.fits"
        cols = [
            fits.Column(name="RA", format="D", unit="deg", array=ra),
            fits.Column(name="DEC", format="D", unit="deg", array=dec),
            fits.Column(name="MAG", format="E", unit="mag", array=mag.astype(np.float32)),
        ]
        fits.BinTableHDU.from_columns(cols).writeto(cat_path)
        for preset in chosen:
            uid = base * 100 + (preset + 5)
            target = out_dir / f"viskom-gaia-{uid}.fits"
            partial = tmpdir / target.name
            cmd = [exe, "-i", str(cat_path), "-o", str(partial), "-P", str(preset)]
            cmd += ["-A", "RA", "-D", "DEC", "-S", "MAG", "-E", "-M", "-I", str(uid)]
            cmd += ["-n", str(int(stars_per_cell)), "-j", f"{float(jitter_arcsec):g}"]
            cmd += ["-t", str(tmpdir)]
            t0 = time.perf_counter()
            result = run_tool(cmd, cwd=tmpdir, timeout_s=timeout_s)
            if result is None:
                raise AstrometryNetError(f"{BUILD_INDEX} -P {preset} timed out after {timeout_s} s")
            code, out, err = result
            if code != 0 or not partial.exists():
                raise AstrometryNetError(
                    f"{BUILD_INDEX} -P {preset} failed (exit {code}): {output_tail(err or out)}"
                )
            with atomic_path(target) as staged:
                shutil.move(str(partial), staged)
            log.debug("index %s (-P %d) built in %.2f s", target, preset, time.perf_counter() - t0)
            written.append(target)
    log.info(
        "astrometry.net index %d: %d stars, presets %s, %d file(s) in %s",
        base,
        ra.size,
        chosen,
        len(written),
        out_dir,
    )
    return written
