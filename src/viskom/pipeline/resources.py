"""Calibrations and external inputs a stage may declare, and how the runner obtains them.

A calibration (`hot_pixels`, `relative_gains`, `xray_baseline`) is built from many exposures
by `pipeline.calibration` before a run. Its *identity* (a file path, or the gains themselves)
is computed once in the runner's process and hashed into the provenance of every stage that
declares it; the worker loads the content from the identity and hands it in.

An external input (`gaia_cone`, `goes_series`, `blind_solver`, `source_extractor`) comes
from outside the data through one client or program each in `viskom.sources` (cache,
offline mode, timeouts). The stage gets a callable and calls it only when it needs the data,
so that a frame with nothing to match never waits for the Gaia service. Where the data come
from is not provenance.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from viskom.stages.base import ExposureInfo

CALIBRATIONS = ("hot_pixels", "relative_gains", "xray_baseline")
EXTERNAL_INPUTS = ("gaia_cone", "goes_series", "blind_solver", "source_extractor")

# -- calibrations ---------------------------------------------------------------------------

#: In a Gaia or GOES cache folder: the services that failed lately, shared by every client
#: of every worker (`sources.http.CircuitBreaker`), so a run fails fast after one failure.
UNREACHABLE_FILE = "unreachable.json"


def _under_root(path: Path | str, settings: Any) -> str:
    """`path` relative to the data root when it is inside it (moving the data root is not a
    change of calibration), else as it is."""
    try:
        return Path(path).resolve().relative_to(Path(settings.data_path).resolve()).as_posix()
    except ValueError:
        return str(path)


def calibration_identity(name: str, settings: Any) -> Any:
    """The JSON-able identity of a calibration for the current settings (provenance): which
    calibration file, relative to the data root, or the relative gains themselves."""
    from viskom.pipeline.calibration import (
        hot_pixel_map_darks,
        hot_pixel_map_path,
        resolve_relative_gains,
        xray_baseline_path,
    )

    if name == "hot_pixels":
        # which map: its file, and the darks it was built from (a new map re-measures the
        # events of the frames measured with the old one, and only those)
        path = hot_pixel_map_path(settings.products_path)
        darks = hot_pixel_map_darks(path)
        built_from = hashlib.sha256(json.dumps(darks).encode()).hexdigest()[:16] if darks else None
        return {"file": _under_root(path, settings), "darks": built_from}
    if name == "xray_baseline":
        return _under_root(xray_baseline_path(settings.products_path), settings)
    if name == "relative_gains":
        gains, source = resolve_relative_gains(settings)
        if not source.startswith(("error", "none")):
            source = _under_root(source, settings)
        return {"gains": gains, "source": source}
    raise KeyError(f"unknown calibration {name!r} ({', '.join(CALIBRATIONS)})")


def calibration_files(settings: Any) -> list[Path]:
    """The files whose presence or content the calibration identities depend on: a cached
    identity (`viskom status`'s) holds while none of them changed."""
    from viskom.pipeline.calibration import (
        hot_pixel_map_path,
        relative_gains_path,
        xray_baseline_path,
    )

    products = settings.products_path
    gains = settings.gaia_gains_path or relative_gains_path(products)
    return [hot_pixel_map_path(products), Path(gains), xray_baseline_path(products)]


def load_calibration(name: str, identity: Any, exposure: ExposureInfo, root: Path) -> Any:
    """The calibration's content for one exposure: the hot-pixel map {extname: flat indices},
    the X-ray baseline of the exposure's frame type (or None), the relative gains mapping;
    file identities are relative to the data root `root`."""
    from viskom.pipeline.calibration import load_hot_pixels, load_xray_baseline

    if name == "hot_pixels":
        return load_hot_pixels(root / identity["file"])[0]
    if name == "xray_baseline":
        return load_xray_baseline(root / identity, exposure.frame_type)
    if name == "relative_gains":
        return RelativeGains(dict(identity["gains"]), str(identity["source"]))
    raise KeyError(f"unknown calibration {name!r}")


@dataclass(frozen=True)
class RelativeGains:
    """Relative quadrant gains and where they come from ('error: ...' when unusable)."""

    gains: dict[str, float]
    source: str

    @property
    def unusable(self) -> bool:
        return self.source.startswith("error")


# -- external inputs ------------------------------------------------------------------------


def external_config(name: str, settings: Any) -> dict[str, Any]:
    """What the worker needs to build the client of an external input (picklable)."""
    if name == "gaia_cone":
        g = settings.gaia
        return {"cache_dir": str(settings.gaia_cache_path), "online": g.online,
                "timeout_s": g.timeout_s, "retry_after_s": g.retry_after_s}  # fmt: skip
    if name == "goes_series":
        g = settings.goes
        return {"cache_dir": str(settings.goes_cache_path), "online": g.online,
                "timeout_s": g.timeout_s, "retry_after_s": g.retry_after_s}  # fmt: skip
    if name in ("blind_solver", "source_extractor"):
        return {}
    raise KeyError(f"unknown external input {name!r} ({', '.join(EXTERNAL_INPUTS)})")


@dataclass
class GoesSeries:
    """GOES XRS and >= 10 MeV proton series over a window, with the days that are missing."""

    xrs: Any
    missing: list[Any]
    protons: Any
    missing_protons: list[Any]


@contextlib.contextmanager
def _gaia_index(
    gaia_radec_g: tuple[np.ndarray, np.ndarray, np.ndarray], index_stars: int
) -> Iterator[list[Path]]:
    """astrometry.net index files of the brightest `index_stars` Gaia stars, in a temporary
    folder removed afterwards."""
    import tempfile

    from viskom.sources.astrometry_net import build_index

    with tempfile.TemporaryDirectory(prefix="viskom-index-") as tmp:
        yield build_index(gaia_radec_g, tmp, max_stars=index_stars)


class BlindSolver:
    """astrometry.net on an index built from the Gaia cone (`sources.astrometry_net`)."""

    def missing(self) -> str:
        """Why a blind solve cannot run here ('' when the tools are installed)."""
        from viskom.sources.astrometry_net import tools_available

        return tools_available()

    def solve(
        self,
        star_xy_flux: tuple[np.ndarray, np.ndarray, np.ndarray],
        gaia_radec_g: tuple[np.ndarray, np.ndarray, np.ndarray],
        *,
        ra_hint: float,
        dec_hint: float,
        radius_hint_deg: float,
        index_stars: int,
    ) -> Any:
        """The solution of the focal-plane star list, or None when none is found."""
        from viskom.sources.astrometry_net import solve_star_list

        with _gaia_index(gaia_radec_g, index_stars) as index:
            x, y, flux = star_xy_flux
            return solve_star_list(
                x, y, flux, index, ra_hint=ra_hint, dec_hint=dec_hint,
                radius_hint_deg=radius_hint_deg,
            )  # fmt: skip

    def solve_picture(
        self,
        picture: Any,
        gaia_radec_g: tuple[np.ndarray, np.ndarray, np.ndarray],
        *,
        scale_arcsec: float,
        parity: str | None,
        ra_hint: float,
        dec_hint: float,
        radius_hint_deg: float,
        index_stars: int,
        timeout_s: float,
    ) -> Any:
        """The solved WCS of a FITS picture (the mosaic; VISQL's getastrom), or None."""
        from viskom.sources.astrometry_net.image import solve_image

        with _gaia_index(gaia_radec_g, index_stars) as index:
            return solve_image(
                picture, index, scale_arcsec=scale_arcsec, parity=parity, ra_hint=ra_hint,
                dec_hint=dec_hint, radius_hint_deg=radius_hint_deg, timeout_s=timeout_s,
            )  # fmt: skip


def external_provider(name: str, config: Mapping[str, Any]) -> Any:
    """The callable (or solver) a stage gets for a declared external input."""
    if name == "gaia_cone":

        def gaia_cone(ra: float, dec: float, radius_deg: float, epoch: datetime) -> Any:
            from viskom.sources.gaia import GaiaClient

            client = GaiaClient(
                config["cache_dir"], online=bool(config["online"]), timeout_s=config["timeout_s"],
                unreachable_file=Path(config["cache_dir"]) / UNREACHABLE_FILE,
                retry_after_s=float(config.get("retry_after_s", 600.0)),
            )  # fmt: skip
            return client.cone(ra, dec, radius_deg, epoch=epoch)

        return gaia_cone
    if name == "goes_series":

        def goes_series(start: datetime, end: datetime) -> GoesSeries:
            from viskom.sources.goes import GoesClient

            client = GoesClient(
                config["cache_dir"], offline=not config["online"], timeout_s=config["timeout_s"],
                unreachable_file=Path(config["cache_dir"]) / UNREACHABLE_FILE,
                retry_after_s=float(config.get("retry_after_s", 600.0)),
            )  # fmt: skip
            xrs, missing = client.xrs_range(start, end)
            protons, missing_protons = client.protons_range(start, end)
            return GoesSeries(xrs, missing, protons, missing_protons)

        return goes_series
    if name == "blind_solver":
        return BlindSolver()
    if name == "source_extractor":
        from viskom.sources.sextractor import run_sextractor

        return run_sextractor
    raise KeyError(f"unknown external input {name!r}")


def providers(external: Mapping[str, Mapping[str, Any]]) -> dict[str, Callable[..., Any] | Any]:
    """Providers for every declared external input, from their configs."""
    return {name: external_provider(name, cfg) for name, cfg in external.items()}
