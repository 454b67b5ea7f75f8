"""`viskom demo`: a small simulated day, end to end, with no network and default settings."""

from __future__ import annotations

import csv
import io

from typer.testing import CliRunner

from viskom.cli import app

runner = CliRunner()


def test_demo_day(tmp_path, monkeypatch) -> None:
    for key in ("VISKOM_CONFIG", "VISKOM_DATABASE_URL", "VISKOM_EXECUTOR", "VISKOM_WORKERS"):
        monkeypatch.delenv(key, raising=False)
    demo_dir = tmp_path / "demo"
    result = runner.invoke(app, ["demo", str(demo_dir), "--workers", "2"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "14 files" in out
    # detector_health on 13 frames, catalogue on 6 science + 1 flat + 2 darks, psf and plots
    # on 6 science, events, event plots and space weather on 6 science + 2 darks
    assert "13 exposures, 58 stage runs ok, 0 failed" in out
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
