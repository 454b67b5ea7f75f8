"""End to end through the `viskom` command: init, ingest (with bad files), run, metrics, status.

Runs on both database backends (the `store_url` fixture: SQLite and PostgreSQL).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from viskom.cli import app
from viskom.sources.gaia import GaiaCache
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.sources.simulator.instrument import write_relative_gains
from viskom.sources.simulator.spaceweather import flare_day, write_goes_cache
from viskom.stages.detector_health import DetectorHealth

T0 = datetime(2024, 7, 13, 2, 0, 0, tzinfo=UTC)
runner = CliRunner()


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A folder of small frames: 6 good ones of every type and 4 bad ones."""
    out = tmp_path_factory.mktemp("raw")
    cfg = SimConfig(geometry="small")
    plan = [
        ("bias", None),
        ("dark", None),
        ("flat", None),
        ("charge", None),
        ("science", None),
        ("dark", "unknown-type"),
        ("science", "truncated"),
        ("science", "missing-extensions"),
        ("science", "not-fits"),
        ("science", "flipped-geometry"),
    ]
    for i, (kind, defect) in enumerate(plan):
        sub = out / ("night" if i % 2 else "")  # folders are searched recursively
        simulate_frame(
            sub,
            kind,
            seed=300 + i,
            date_obs=T0.replace(minute=i),
            config=cfg,
            defect=defect,
            obs_id=2400 + i,
        )
    science_iws = SimConfig(geometry="small", naming="iws", gzip=True)
    simulate_frame(out, "science", seed=399, date_obs=T0.replace(hour=3), config=science_iws)
    return out


def _invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


@pytest.fixture
def project(tmp_path, monkeypatch, store_url, raw) -> Path:
    for key in ("VISKOM_CONFIG", "VISKOM_WORKERS", "VISKOM_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    _invoke("init", str(tmp_path / "proj"))
    monkeypatch.chdir(tmp_path / "proj")
    monkeypatch.setenv("VISKOM_DATABASE_URL", store_url)
    # GOES from the cache only: a quiet simulated day and the day before, as NOAA's files
    monkeypatch.setenv("VISKOM_GOES__ONLINE", "false")
    for day in (T0.date() - timedelta(days=1), T0.date()):
        write_goes_cache(tmp_path / "proj" / "data" / "goes", *flare_day(day))
    # Gaia from the cache only: the simulator's cones stand in for VizieR; the simulated
    # instrument's relative gains as the configured gain table
    monkeypatch.setenv("VISKOM_GAIA__ONLINE", "false")
    gains = write_relative_gains(tmp_path / "proj" / "gains.txt", SimConfig(geometry="small"))
    monkeypatch.setenv("VISKOM_GAIA__GAINS_FILE", str(gains))
    cache = GaiaCache(tmp_path / "proj" / "data" / "gaia")
    for path in sorted(raw.rglob("gaia_*.parquet")):
        cache.seed_from_file(path)
    return tmp_path / "proj"


def _metrics_csv(*args: str) -> list[dict]:
    text = _invoke("metrics", "--format", "csv", *args)
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.slow
def test_ingest_run_metrics_status(project, raw, monkeypatch) -> None:
    out = _invoke("ingest", str(raw))
    assert "11 new" in out
    assert "3 invalid" in out and "1 of unknown type" in out
    assert "truncated" in out and "missing 3 of 144" in out and "not-fits" in out
    # idempotent
    out = _invoke("ingest", str(raw))
    assert "0 new" in out and "11 unchanged" in out

    monkeypatch.setenv("VISKOM_EXECUTOR", "process")
    monkeypatch.setenv("VISKOM_WORKERS", "2")
    out = _invoke("run")
    # 8 detector_health + catalogue on 3 science, 1 flat, 1 dark + psf and plots on 3 science
    # + events, event plots, space weather on 3 science and 1 dark + gaia on 3 science
    # + images and health plots on all 8
    assert "8 exposures, 50 stage runs ok, 0 failed" in out

    rows = _metrics_csv("--unit", "FPA", "--metric", "read_noise_e")
    assert len(rows) == 8
    assert set(rows[0]) == {"exposure", "unit", "metric", "value"}
    assert all(not r["exposure"].endswith((".fits", ".gz")) for r in rows)
    assert all(3.5 < float(r["value"]) < 5.0 for r in rows)

    # Quadrant values agree with the truth of that frame.
    truth_files = sorted(raw.rglob("*.truth.json"))
    checked = 0
    for tf in truth_files:
        truth = json.loads(tf.read_text())
        if truth.get("defect"):
            continue
        payload = json.loads(
            _invoke(
                "metrics",
                "--format",
                "json",
                "--exposure",
                truth["name"],
                "--unit",
                "2-5.F",
                "--metric",
                "bias_prescan_adu",
            )
        )
        assert len(payload) == 1
        want = truth["quadrants"]["2-5.F"]["bias_prescan_adu"]
        assert payload[0]["value"] == pytest.approx(want, abs=0.2)
        checked += 1
    assert checked == 6

    # Nothing pending: a second run does nothing.
    out = _invoke("run")
    # 50 measured and 3 found nothing (the mosaic astrometry of 3 small science frames)
    assert "0 exposures" in out and "53 up to date" in out

    # A new stage version re-runs it everywhere.
    monkeypatch.setattr(DetectorHealth, "version", "999")
    monkeypatch.setenv("VISKOM_EXECUTOR", "serial")
    out = _invoke("run")
    # detector_health changed, and the health plots that read its table
    assert "8 exposures, 16 stage runs ok" in out

    iq_rows = list(
        csv.DictReader(io.StringIO(_invoke("iq", "--month", "2024-07", "--format", "csv")))
    )
    assert len(iq_rows) == 3  # the three measurable science frames
    assert all(1.8 < float(r["r2"]) < 2.1 and 0 <= float(r["score"]) < 100 for r in iq_rows)

    status = _invoke("status")
    for word in ("SCIENCE", "DARK", "BIAS", "FLAT", "CHARGE", "UNKNOWN", "invalid"):
        assert word in status
    assert "truncated" in status and "MYSTERY_MODE" in status
    assert "geometry" in status and "3 quadrant(s)" in status


@pytest.mark.slow
def test_stage_failure_is_recorded_and_isolated(project, raw, monkeypatch) -> None:
    import viskom.stages.detector_health as dh

    _invoke("ingest", str(raw))
    real = dh.quadrant_health

    def broken(data, geometry, *, frame_type, **kw):
        if frame_type == "FLAT":
            raise RuntimeError("simulated failure in the flat measurement")
        return real(data, geometry, frame_type=frame_type, **kw)

    monkeypatch.setattr(dh, "quadrant_health", broken)
    monkeypatch.setenv("VISKOM_EXECUTOR", "serial")
    out = _invoke("run")
    # the flat's health plots run (their input is optional) and say there was no table; the
    # mosaic astrometry of the 3 small science frames finds nothing (no sky layout)
    assert "48 stage runs ok, 1 failed, 4 found nothing" in out
    assert "simulated failure in the flat measurement" in out
    status = _invoke("status")
    assert "failed" in status and "simulated failure" in status
    # Failed stages are not retried on every run, only when asked.
    assert "0 exposures" in _invoke("run")
    monkeypatch.setattr(dh, "quadrant_health", real)
    out = _invoke("run", "--retry-failed")
    assert "1 exposures, 2 stage runs ok, 0 failed" in out  # and its health plots again


def test_commands_without_settings_fail_clearly(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VISKOM_CONFIG", raising=False)
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 2
    assert "viskom init" in result.output
    (tmp_path / "viskom.toml").write_text("workers = -3\n")
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 2 and "workers" in result.output


def test_ingest_missing_path_is_an_error(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VISKOM_CONFIG", raising=False)
    _invoke("init", str(tmp_path / "proj"))
    monkeypatch.chdir(tmp_path / "proj")
    result = runner.invoke(app, ["ingest", "does/not/exist"])
    assert result.exit_code == 2 and "no such file" in result.output


@pytest.mark.slow
def test_corrupt_and_odd_files_never_stop_ingest(project, tmp_path) -> None:
    import gzip
    import shutil

    raw = tmp_path / "odd"
    raw.mkdir()
    cfg = SimConfig(geometry="small")
    good = simulate_frame(raw, "bias", seed=1, date_obs=T0.replace(hour=7), config=cfg)
    # an extension header without NAXIS1 (astropy raises KeyError on it)
    bad = simulate_frame(raw, "bias", seed=2, date_obs=T0.replace(hour=8), config=cfg).path
    blob = bytearray(bad.read_bytes())
    at = blob.find(b"NAXIS1  =", blob.find(b"NAXIS1  =", 2880 * 3) + 1)
    blob[at : at + 6] = b"NAXISZ"  # same length: the FITS stays aligned
    bad.write_bytes(bytes(blob))
    # a gzip stream cut in the middle
    cut = raw / "EUC_LE1_VIS-02999-1-W_20240713T090000.000000Z_01_01_01.00.fits.gz"
    with open(good.path, "rb") as src, gzip.open(cut, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    # the same exposure twice: plain and gzipped
    twin = raw / "sub"
    twin.mkdir()
    with open(good.path, "rb") as src, gzip.open(twin / (good.name + ".fits.gz"), "wb") as dst:
        shutil.copyfileobj(src, dst)

    out = _invoke("ingest", str(raw))
    assert "duplicate name" in out
    assert "unusable header" in out or "cannot read" in out
    assert "EUC_LE1_VIS-02999" in out and "truncated" in out
    # nothing flips on a second ingest
    out = _invoke("ingest", str(raw))
    assert "0 new, 0 updated" in out
