"""Detector health against the simulator's truth, every quadrant, both geometries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from viskom.le1.frame import Le1Frame
from viskom.measure.detector import quadrant_health
from viskom.pipeline.stage_io import roll_up
from viskom.sources.simulator import SimConfig, simulate_frame

T0 = datetime(2024, 7, 13, 1, 0, 0, tzinfo=UTC)


def _measure(path: Path, frame_type: str) -> tuple[dict, dict]:
    truth = json.loads(Path(str(path).replace(".fits", "") + ".truth.json").read_text())
    measured = {}
    with Le1Frame(path) as frame:
        for quad in frame.iter_quadrants():
            measured[quad.extname] = quadrant_health(
                quad.data,
                quad.geometry,
                frame_type=frame_type,
                gain_e_per_adu=quad.header.gain_e_per_adu,
                exptime_s=frame.primary.exptime,
                saturate_adu=quad.header.saturate_adu,
            )
    return measured, truth


@pytest.fixture(scope="module")
def small_frames(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("health")
    cfg = SimConfig(geometry="small")
    frames = {}
    for i, kind in enumerate(("bias", "dark", "flat", "charge", "science")):
        date_obs = T0.replace(minute=10 * i)  # distinct names: one file per frame
        frames[kind] = simulate_frame(out, kind, seed=100 + i, date_obs=date_obs, config=cfg).path
    frames["flipped"] = simulate_frame(
        out, "science", seed=200, date_obs=T0.replace(hour=2), config=cfg, defect="flipped-geometry"
    ).path
    return frames


def _check_bias_and_noise(measured: dict, truth: dict) -> None:
    assert len(measured) == 144
    worst_bias, worst_noise = 0.0, 0.0
    for ext, m in measured.items():
        t = truth["quadrants"][ext]
        for key in ("bias_prescan_adu", "bias_overscan_adu", "bias_parallel_overscan_adu"):
            worst_bias = max(worst_bias, abs(m[key] - t[key]))
        expected = t["read_noise_digitised_adu"]
        worst_noise = max(worst_noise, abs(m["read_noise_adu"] / expected - 1))
        assert m["read_noise_e"] == pytest.approx(m["read_noise_adu"] * t["gain_e_per_adu"], 1e-3)
    # Requirement: bias within 0.2 ADU and read noise within 3% in every quadrant.
    assert worst_bias < 0.2, worst_bias
    assert worst_noise < 0.03, worst_noise


@pytest.mark.parametrize("kind", ["bias", "dark", "flat", "charge", "science"])
def test_bias_and_read_noise_every_quadrant_small(small_frames, kind) -> None:
    measured, truth = _measure(small_frames[kind], kind.upper())
    _check_bias_and_noise(measured, truth)
    assert all(m["geometry_mismatch"] == 0 for m in measured.values())


def test_dark_current(small_frames) -> None:
    measured, truth = _measure(small_frames["dark"], "DARK")
    got = np.array([m["dark_current_e_per_s"] for m in measured.values()])
    want = np.array([truth["quadrants"][e]["dark_current_e_per_s"] for e in measured])
    # One quadrant: bias error ~0.01 ADU ~ 0.035 e- over 560 s ~ 6e-5 e-/s; the median over
    # the focal plane must be close to the true median.
    assert np.median(got) == pytest.approx(np.median(want), abs=2e-4)
    assert np.all(np.abs(got - want) < 5e-4)


def test_flat_level_and_nonuniformity(small_frames) -> None:
    measured, truth = _measure(small_frames["flat"], "FLAT")
    for ext, m in measured.items():
        t = truth["quadrants"][ext]
        assert m["flat_level_e"] == pytest.approx(t["flat_level_e"], rel=0.01)
        assert m["flat_nonuniformity"] == pytest.approx(t["flat_nonuniformity"], abs=0.003)


def test_charge_injection_level(small_frames) -> None:
    measured, truth = _measure(small_frames["charge"], "CHARGE")
    for ext, m in measured.items():
        t = truth["quadrants"][ext]
        assert m["ci_level_adu"] == pytest.approx(t["ci_level_adu"], rel=0.02)
        assert m["ci_rows"] > 0


def test_science_saturation_and_levels(small_frames) -> None:
    measured, truth = _measure(small_frames["science"], "SCIENCE")
    sat_true = sum(t["n_saturated_pixels"] for t in truth["quadrants"].values())
    sat = sum(m["saturated_pixels"] for m in measured.values())
    assert sat == pytest.approx(sat_true, rel=0.05, abs=3)
    rows = roll_up([(ext, name, v) for ext, m in measured.items() for name, v in m.items()])
    units = {u for u, _, _ in rows}
    assert "FPA" in units and "3-4" in units and "3-4.G" in units
    fpa = {m: v for u, m, v in rows if u == "FPA"}
    assert fpa["saturated_pixels"] == sat
    assert fpa["read_noise_adu"] == pytest.approx(
        np.median([m["read_noise_adu"] for m in measured.values()])
    )


def test_flipped_quadrants_are_flagged(small_frames) -> None:
    measured, truth = _measure(small_frames["flipped"], "SCIENCE")
    flagged = sorted(e for e, m in measured.items() if m["geometry_mismatch"] == 1)
    assert flagged == sorted(truth["flipped_quadrants"])
    assert flagged


@pytest.mark.slow
def test_full_geometry(tmp_path) -> None:
    """The real 2128 x 2086 quadrants: one full-size dark frame, every quadrant."""
    path = simulate_frame(
        tmp_path, "dark", seed=5, date_obs=T0, config=SimConfig(geometry="full")
    ).path
    measured, truth = _measure(path, "DARK")
    _check_bias_and_noise(measured, truth)
    got = np.array([m["dark_current_e_per_s"] for m in measured.values()])
    want = np.array([truth["quadrants"][e]["dark_current_e_per_s"] for e in measured])
    assert np.all(np.abs(got - want) < 1e-4)
