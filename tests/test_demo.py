"""`viskom demo`: a small simulated day, end to end, with no network and default settings."""

from __future__ import annotations

import csv
import io

import pytest
from typer.testing import CliRunner

from viskom.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_demo_day(tmp_path, monkeypatch) -> None:
    for key in ("VISKOM_CONFIG", "VISKOM_DATABASE_URL", "VISKOM_EXECUTOR", "VISKOM_WORKERS"):
        monkeypatch.delenv(key, raising=False)
    demo_dir = tmp_path / "demo"
    result = runner.invoke(app, ["demo", str(demo_dir), "--workers", "2"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "14 files" in out
    # detector_health on 13 frames, catalogue on 6 science + 1 flat + 2 darks, psf and plots
    # on 6 science, events, event plots and space weather on 6 science + 2 darks, gaia on 6
    # science (the simulator's Gaia cones seeded into the cache: no network); the mosaic
    # astrometry finds nothing on the 6 science frames (compact mosaics: no sky layout)
    assert "13 exposures, 90 stage runs ok, 0 failed, 6 found nothing" in out
    assert "1 invalid" in out and "1 of unknown type" in out
    assert (demo_dir / "viskom.toml").is_file()
    assert (demo_dir / "data" / "viskom.db").is_file()

    # The pipeline made the plots and the month products.
    products = demo_dir / "data" / "products"
    assert len(list(products.rglob("*_flux_radius.png"))) == 6
    assert len(list(products.rglob("*_moment_maps.png"))) == 6
    month = products / "months" / "2024-07"
    assert (month / "IQ_timeline_2024-07.png").stat().st_size > 10_000
    assert len((month / "iq_2024-07.csv").read_text().splitlines()) == 7  # header + 6
    assert len(list(products.rglob("*_cosmiX.png"))) == 8
    assert len(list(products.rglob("*_goes.png"))) == 8
    # the simulated flare drives the X-ray events: the fitted relation comes out
    import json

    fits = json.loads((month / "spaceweather_fits_2024-07.json").read_text())
    assert fits["xray_rate_vs_xrsa"]["r"] > 0.9
    assert fits["xray_rate_vs_xrsa"]["slope"] > 5 * fits["xray_rate_vs_xrsa"]["slope_err"]

    # Gaia: every science exposure matched; offsets = minus the injected pointing error and
    # VIS/Gaia at BP-RP 1.75 as injected (single small frames: 40-90 stars each)
    assert len(list(products.rglob("*_gaia_dxdy.png"))) == 6
    assert len(list(products.rglob("*_gaia_colour.png"))) == 6
    import math

    for truth_file in (demo_dir / "data" / "raw").glob("*.truth.json"):
        truth = json.loads(truth_file.read_text())
        if truth.get("kind") != "science" or truth.get("defect"):
            continue
        summary = json.loads(next(products.rglob(f"{truth['name']}_gaia.json")).read_text())
        err = truth["pointing_error_pix"]
        assert summary["dx_pix"] == pytest.approx(-err["dx"], abs=0.1)
        assert summary["dy_pix"] == pytest.approx(-err["dy"], abs=0.1)
        p = truth["photometry"]
        expect = math.exp(p["c0"] + p["c1"] * 1.75 + p["c2"] * 1.75**2) * p["throughput"]
        assert summary["vis_over_gaia"][1] == pytest.approx(expect, rel=0.015)

    # Gaia month products and the all-time ice timeline
    assert len((month / "vis_over_gaia_2024-07_long.csv").read_text().splitlines()) == 5  # +4
    assert len((month / "vis_over_gaia_2024-07_short.csv").read_text().splitlines()) == 3  # +2
    assert (month / "VISGaia_FPA_LONG_2024-07.png").stat().st_size > 50_000
    assert (month / "iceplot_FPA_2024-07_560.52.png").stat().st_size > 20_000
    assert (products / "gaia" / "iceplot_long.png").stat().st_size > 20_000

    # Afterwards any command works from inside the folder.
    monkeypatch.chdir(demo_dir)
    result = runner.invoke(app, ["metrics", "--unit", "FPA", "--metric", "bias_prescan_adu"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert len(rows) == 13
    assert all(2600 < float(r["value"]) < 2800 for r in rows)
    # Running the demo again simulates nothing new and measures nothing twice.
    result = runner.invoke(app, ["demo", str(demo_dir)])
    assert result.exit_code == 0, result.output
    assert "0 new" in result.output and "0 exposures" in result.output
