"""Metric maps colour the right cells: a value placed in one quadrant shows at that quadrant's
place in the focal plane (from the CCD layout and the readout corners of VIS-REFERENCE 1,
not from the drawing code), the band's breaches are outlined; `viskom map` from the CLI;
the health maps and the month's health trends."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import matplotlib as mpl
import numpy as np
import pytest
from typer.testing import CliRunner

from viskom.cli import app
from viskom.config import load_settings, write_default_config
from viskom.le1.focalplane import CCD_PITCH_X_DEG, CCD_PITCH_Y_DEG
from viskom.le1.geometry import all_extnames
from viskom.present.health_plots import plot_health_maps, plot_health_trends
from viskom.present.metric_maps import plot_metric_map
from viskom.store import ExposureRecord, StageRun, Store

T0 = datetime(2024, 7, 13, 4, 0, 0, tzinfo=UTC)
CORNER_1_3 = {"E": (-1, -1), "F": (1, -1), "G": (1, 1), "H": (-1, 1)}  # readout corners


def _expected_centre(name: str) -> tuple[float, float]:
    """A quadrant's centre: its CCD's centre plus a quarter CCD towards its readout corner
    (CCD columns 4-6 turned by 180 degrees), CCD column along +X, row along +Y."""
    row, col = int(name[0]), int(name[2])
    sx, sy = CORNER_1_3[name[-1]]
    if col >= 4:
        sx, sy = -sx, -sy
    xc, yc = (col - 3.5) * CCD_PITCH_X_DEG, (row - 3.5) * CCD_PITCH_Y_DEG
    return xc + sx * 0.0569 / 2, yc + sy * 0.0574 / 2


def _colour_at(fig, ax, x: float, y: float) -> np.ndarray:
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    px, py = ax.transData.transform((x, y))
    return rgba[round(fig.bbox.height - py), round(px), :3] / 255.0


@pytest.mark.parametrize("hot", ["2-4.H", "5-1.E", "6-6.G", "1-3.F"])
def test_a_value_lands_in_its_quadrant(hot: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    values = dict.fromkeys(all_extnames(), 1.0)
    values[hot] = 10.0
    values["3-3.E"] = float("nan")
    fig = plot_metric_map(values, metric="read_noise_e", unit="e-", band=(None, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.axes[0]
    top = np.asarray(mpl.colormaps["viridis"](1.0)[:3])
    low = np.asarray(mpl.colormaps["viridis"](0.0)[:3])
    for name in (hot, "4-4.F", "1-1.E", "3-3.E"):
        colour = _colour_at(fig, ax, *_expected_centre(name))
        if name == hot:
            assert np.allclose(colour, top, atol=0.03), name
        elif name == "3-3.E":  # no value: hatched grey, not a colour of the scale
            assert not np.allclose(colour, low, atol=0.1) and abs(colour[0] - colour[2]) < 0.05
        else:
            assert np.allclose(colour, low, atol=0.03), name
    assert "1 outside the band" in ax.get_title()


def test_ccd_level_metrics_fill_ccds() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    values = {f"{r}-{c}": float(r * 10 + c) for r in range(1, 7) for c in range(1, 7)}
    fig = plot_metric_map(values, metric="psf_r2", unit="px2")
    FigureCanvasAgg(fig)
    ax = fig.axes[0]
    hi = _colour_at(fig, ax, (6 - 3.5) * CCD_PITCH_X_DEG, (6 - 3.5) * CCD_PITCH_Y_DEG)
    lo = _colour_at(fig, ax, (1 - 3.5) * CCD_PITCH_X_DEG, (1 - 3.5) * CCD_PITCH_Y_DEG)
    assert np.allclose(hi, mpl.colormaps["viridis"](1.0)[:3], atol=0.03)
    assert np.allclose(lo, mpl.colormaps["viridis"](0.0)[:3], atol=0.03)
    assert "36/36 CCDs" in ax.get_title()


@pytest.fixture
def project(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("VISKOM_") and not key.startswith(("VISKOM_TEST_", "VISKOM_REQUIRE_")):
            monkeypatch.delenv(key)
    cfg = write_default_config(tmp_path / "p")
    settings = load_settings(cfg)
    with Store(settings.db_url) as store:
        for i, kind in enumerate(["BIAS", "BIAS", "DARK"]):
            when = T0 + timedelta(hours=i)
            exp = store.register_exposure(ExposureRecord(
                name=f"EUC_{i}", path=f"/d/{i}.fits", state="registered", frame_type=kind,
                checksum="a" * 64, date_obs=when,
            ))[0]  # fmt: skip
            rows = [(q, "read_noise_e", 4.0 + (0.9 if q == "2-2.F" and i == 1 else 0.0))
                    for q in all_extnames()]  # fmt: skip
            rows += [(q, "bias_overscan_adu", 2700.0 + i) for q in all_extnames()]
            run = StageRun(exp.id, "detector_health", "2", "c" * 16, "0", "ok", None, when)
            store.record_stage_run(run, rows)
    return cfg


def test_map_command(project, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "m.png"
    done = runner.invoke(app, ["map", "--config", str(project), "--metric", "read_noise_e",
                               "--exposure", "EUC_1", "--output", str(out)])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "144 cells" in done.output
    day = tmp_path / "d.png"
    args = ["--metric", "bias_overscan_adu", "--day", "2024-07-13", "--type", "BIAS"]
    done = runner.invoke(app, ["map", "--config", str(project), *args, "--output", str(day)])
    assert done.exit_code == 0 and day.exists(), done.output
    done = runner.invoke(app, ["map", "--config", str(project), "--metric", "read_nose_e",
                               "--month", "2024-07"])  # fmt: skip
    assert done.exit_code == 2 and "did you mean: read_noise_e" in done.output
    done = runner.invoke(app, ["map", "--config", str(project), "--metric", "psf_r2",
                               "--month", "2024-07"])  # fmt: skip
    assert done.exit_code == 1 and "no psf_r2 values" in done.output
    done = runner.invoke(app, ["map", "--config", str(project), "--metric", "psf_r2"])
    assert done.exit_code == 2 and "one of --exposure, --day or --month" in done.output


def test_health_pictures_show_the_band_and_the_bad_quadrant() -> None:
    names = np.array(all_extnames())
    table = {
        "extname": names,
        "bias_overscan_adu": np.full(144, 2700.0),
        "read_noise_e": np.where(names == "2-2.F", 4.9, 4.1),
        "dark_current_e_per_s": np.full(144, 6e-4),
    }
    fig = plot_health_maps(table, frame_type="DARK", title="x", bands={"read_noise_e": (None, 4.5)})
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert any("dark_current_e_per_s" in t for t in titles)
    assert any("1 outside the band" in t for t in titles)
    times = [T0 + timedelta(hours=i) for i in range(5)]
    noise = {q: [4.1] * 5 for q in all_extnames()}
    noise["2-2.F"] = [4.1, 4.1, 4.9, 4.1, 4.1]
    bias = {q: [2700.0, 2700.5, 2699.5, 2700.0, 2703.0] for q in all_extnames()}
    fig = plot_health_trends(times, ["BIAS"] * 5, bias, noise, month_label="2024-07")
    worst = next(line for line in fig.axes[1].lines if line.get_label() == "worst quadrant")
    assert np.allclose(worst.get_ydata(), [4.1, 4.1, 4.9, 4.1, 4.1])
    heat = fig.axes[2].images[0].get_array()
    assert heat.shape == (144, 5) and np.allclose(heat[:, -1], 2703.0 - 2700.0)
