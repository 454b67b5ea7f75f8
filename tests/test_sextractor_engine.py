"""viskom's sep catalogue against Debian's source-extractor with VISQL's configuration.

Both run on the same simulated raw frame; sources are matched by quadrant and position.
Skipped where source-extractor is not installed, unless VISKOM_REQUIRE_SEXTRACTOR=1 (CI).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.spatial import cKDTree

from viskom.config import Settings
from viskom.le1.frame import Le1Frame
from viskom.pipeline.runner import run_one
from viskom.sources.sextractor import SExtractorUnavailableError, find_executable, run_sextractor
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.stages import ExposureInfo
from viskom.stages.catalogue import Catalogue


@pytest.fixture(scope="module")
def sextractor() -> str:
    try:
        return find_executable()
    except SExtractorUnavailableError as exc:
        if os.environ.get("VISKOM_REQUIRE_SEXTRACTOR") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def test_sep_agrees_with_source_extractor(sextractor, tmp_path) -> None:
    sim = simulate_frame(
        tmp_path,
        "science",
        seed=77,
        date_obs=datetime(2024, 7, 14, tzinfo=UTC),
        config=SimConfig(geometry="small"),
    )
    info = ExposureInfo(0, sim.name, str(sim.path), "SCIENCE", 560.52, str(tmp_path / "p"))
    with Le1Frame(sim.path) as frame:
        run_one(Catalogue(), frame, info, Settings())
        hdu_to_ext = {int(n): frame.extname_of_hdu(int(n)) for n in range(1, 145)}
    ours = {
        k: np.asarray(v)
        for k, v in pq.read_table(info.product("catalogue", "parquet")).to_pydict().items()
    }
    sex = run_sextractor(sim.path)
    sex_ext = np.array([hdu_to_ext[int(n)] for n in sex["ext_number"]])
    matched_flux, matched_radius, n_bright, n_found = [], [], 0, 0
    for ext in np.unique(sex_ext):
        s = np.flatnonzero((sex_ext == ext) & (sex["flux_auto"] > 2e4) & (sex["flags"] < 4))
        o = np.flatnonzero(ours["extname"] == ext)
        if s.size == 0 or o.size == 0:
            n_bright += s.size
            continue
        d, j = cKDTree(np.c_[ours["x_image"][o], ours["y_image"][o]]).query(
            np.c_[sex["x_image"][s], sex["y_image"][s]]
        )
        ok = d < 1.0
        n_bright += s.size
        n_found += int(ok.sum())
        matched_flux.append(ours["flux_auto"][o[j[ok]]] / sex["flux_auto"][s[ok]])
        matched_radius.append(ours["flux_radius"][o[j[ok]]] / sex["flux_radius"][s[ok]])
    flux_ratio = np.concatenate(matched_flux)
    radius_ratio = np.concatenate(matched_radius)
    # The same detection and measurement algorithms: nearly every bright SExtractor source
    # is found by sep at the same place, with the same AUTO flux and half-light radius.
    assert n_found / n_bright > 0.9, (n_found, n_bright)
    assert np.median(flux_ratio) == pytest.approx(1.0, abs=0.03)
    assert np.median(radius_ratio) == pytest.approx(1.0, abs=0.05)


def test_source_extractor_engine_feeds_the_psf_stage(sextractor, tmp_path) -> None:
    """With catalogue_engine = "source-extractor" the stage writes the same columns and the
    PSF stage measures the same PSF."""
    from viskom.stages.psf import PsfMoments

    sim = simulate_frame(
        tmp_path,
        "science",
        seed=78,
        date_obs=datetime(2024, 7, 14, 1, tzinfo=UTC),
        config=SimConfig(geometry="small"),
    )
    results = {}
    for engine in ("sep", "source-extractor"):
        settings = Settings(catalogue_engine=engine)
        info = ExposureInfo(0, sim.name, str(sim.path), "SCIENCE", 560.52, str(tmp_path / engine))
        with Le1Frame(sim.path) as frame:
            run_one(Catalogue(), frame, info, settings)
            res = run_one(PsfMoments(), frame, info, settings)
        table = pq.read_table(info.product("catalogue", "parquet"))
        sky = np.median(table.column("background").to_numpy())
        assert 20 < sky < 80, (engine, sky)  # sky above bias (~0.22 e-/s x 560 s / 3.4), no bias
        results[engine] = {m: v for u, m, v in res.metrics if u == "FPA"}
    assert results["source-extractor"]["n_stars"] > 20
    assert results["source-extractor"]["psf_r2"] == pytest.approx(
        results["sep"]["psf_r2"], rel=0.01
    )
