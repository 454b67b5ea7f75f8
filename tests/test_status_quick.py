"""`viskom status`'s reader without SQLAlchemy (`store.quick`) and its cached view of the
settings (`pipeline.status_view`): the same answers as the ORM store and the planner.

The oracle of every query is the `Store` method of the same name on the same database
(SQLite and PostgreSQL); that of the pending counts is `runner.plan` under the settings.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from viskom.cli import app
from viskom.cli.status_report import quick_status_args
from viskom.config import load_settings, write_default_config
from viskom.pipeline.pending import StagePlan, pending_work
from viskom.pipeline.runner import plan
from viskom.pipeline.status_view import build_view, status_view
from viskom.pipeline.work import stage_calls
from viskom.stages import STAGES
from viskom.store import ExposureRecord, StageRun, Store
from viskom.store.claims import ClaimRequest
from viskom.store.fetches import FetchOutcome
from viskom.store.migrate import head_revision
from viskom.store.quick import QuickReader, QuickReadError, postgres_params, sqlite_path

VISKOM = str(Path(sys.executable).with_name("viskom"))
T0 = datetime(2025, 3, 1, 23, 30, tzinfo=UTC)  # near midnight: the UTC day matters


def _record(name: str, **overrides) -> ExposureRecord:
    values = {
        "path": f"/data/{name}.fits",
        "state": "registered",
        "frame_type": "SCIENCE",
        "date_obs": T0,
        "exptime": 566.0,
        "header": {"OBJECT": "field"},
    }
    values.update(overrides)
    return ExposureRecord(name=name, **values)


def _run(exposure_id: int, stage: str, status: str = "ok", **overrides) -> StageRun:
    values = {
        "stage_version": "1",
        "config_hash": "c" * 64,
        "software_version": "0.1.0",
        "error": None if status == "ok" else "boom: a quoted 'error'",
        "started_at": T0 + timedelta(hours=1),
        "duration_s": 0.5,
        "config": {"config": {"k": 1}, "upstream": {}},
        "failure_class": "permanent" if status == "failed" else None,
    }
    values.update(overrides)
    return StageRun(exposure_id=exposure_id, stage=stage, status=status, **values)


@pytest.fixture
def filled(store: Store) -> Store:
    """A store with what status shows: days and types, undated, invalid and unknown frames,
    header warnings, ok/empty/failed runs, a geometry flag, outcomes, claims, fetches."""
    warning = {"keyword": "GAIN", "value": "x", "reason": "is not a number", "extname": "1-1.E"}
    exposures = [
        store.register_exposure(_record("EUC_B"))[0],
        store.register_exposure(_record("EUC_A", date_obs=T0 + timedelta(hours=1)))[0],
        store.register_exposure(_record("EUC_DARK", frame_type="DARK"))[0],
        store.register_exposure(_record("EUC_Z_UNDATED", date_obs=None))[0],
        store.register_exposure(
            _record("EUC_BAD", state="invalid", frame_type=None, reason="truncated FITS")
        )[0],
        store.register_exposure(_record("EUC_ODD", frame_type="UNKNOWN", reason="IMG_CAT?"))[0],
        store.register_exposure(_record("EUC_W", header_warnings=[warning]))[0],
        store.register_exposure(_record("EUC_FINE", header_warnings=[]))[0],
    ]
    b, a, dark = exposures[0], exposures[1], exposures[2]
    store.record_stage_run(
        _run(b.id, "detector_health"),
        metrics=[("FPA", "geometry_mismatch", 2.0), ("FPA", "read_noise_e", 3.1)],
        outcomes=[("no_stars", "1-1.E", "no stars"), ("no_stars", "1-1.F", "no stars")],
    )
    store.record_stage_run(
        _run(a.id, "detector_health"), metrics=[("FPA", "geometry_mismatch", 0.0)]
    )
    store.record_stage_run(_run(a.id, "catalogue", "failed"))
    store.record_stage_run(
        _run(b.id, "catalogue", "empty"), outcomes=[("no_sources", "FPA", "nothing")]
    )
    store.record_stage_run(
        _run(dark.id, "detector_health", "failed", failure_class="transient", attempts=2)
    )
    store.claim([ClaimRequest(f"exposure:{a.id}:psf", "psf", a.id)], "owner-1", lease_s=600)
    store.claim([ClaimRequest("period:2025-03", "period")], "owner-2", lease_s=-5)  # stale
    store.record_fetches(
        "fake",
        [
            FetchOutcome("EUC_B.fits", "http://x/EUC_B.fits", "fetched", "raw/EUC_B.fits", 10, "s"),
            FetchOutcome("EUC_Q.fits", "http://x/EUC_Q.fits", "failed", error="timed out"),
        ],
    )
    return store


def test_every_query_answers_as_the_store_does(filled: Store) -> None:
    store = filled
    reader = QuickReader(store.url, "shown")
    with reader.opened():
        reader.check_revision(head_revision())
        assert reader.status_summary() == store.status_summary()
        assert reader.held_claims() == store.held_claims()
        assert reader.fetched_files() == store.fetched_files()
        assert reader.quality_outcome_counts() == store.quality_outcome_counts()
        assert reader.quality_outcomes() == store.quality_outcomes()
        assert reader.writable() is True
        exposures = reader.exposures()
        runs = reader.stage_runs()
        flagged = reader.fpa_metric("geometry_mismatch")
        now = reader.now()
    assert [(e.id, e.name, e.frame_type, e.state, e.reason, e.date_obs, e.header_warnings)
            for e in exposures] == [
        (e.id, e.name, e.frame_type, e.state, e.reason, e.date_obs, e.header_warnings)
        for e in store.list_exposures()
    ]  # fmt: skip
    fields = ("stage_version", "config_hash", "status", "error", "failure_class",
              "finished_at", "attempts", "retry_after")  # fmt: skip
    stored = store.stage_runs()
    assert runs.keys() == stored.keys()
    for key, run in runs.items():
        assert [getattr(run, f) for f in fields] == [getattr(stored[key], f) for f in fields]
    expected = store.metrics(metrics=["geometry_mismatch"], units=["FPA"])
    assert flagged == [(m.exposure, m.value) for m in expected]
    assert abs((now - store.now()).total_seconds()) < 60
    # the summary put the undated exposure last and counted the two UTC days apart
    summary = store.status_summary()
    assert summary[-1]["date"] is None and {r["date"].day for r in summary[:-1]} == {1, 2}


def test_another_schema_is_refused_in_the_store_s_words(store: Store) -> None:
    reader = QuickReader(store.url, "shown")
    with reader.opened(), pytest.raises(QuickReadError, match=r"schema revision .* reads 0000"):
        reader.check_revision("0000")


def test_missing_database_and_unknown_backend(tmp_path: Path) -> None:
    missing = QuickReader(f"sqlite:///{tmp_path / 'none.db'}", "x")
    with pytest.raises(QuickReadError, match="no database at"), missing.opened():
        pass
    with pytest.raises(QuickReadError, match="mysql"):
        QuickReader("mysql://u@h/db", "x")
    assert sqlite_path("sqlite:////abs/v.db") == Path("/abs/v.db")
    assert sqlite_path("sqlite:///rel/v.db?timeout=5") == Path("rel/v.db")
    assert postgres_params("postgresql+psycopg://u:p%40w@h:5433/db?options=-ca%3Db+-cc%3Dd") == {
        "dbname": "db", "user": "u", "password": "p@w", "host": "h", "port": 5433,
        "options": "-ca=b -cc=d",
    }  # fmt: skip
    assert sqlite_path("sqlite://") is None and sqlite_path("sqlite:///:memory:") is None


def test_pending_counts_follow_the_planner(filled: Store, tmp_path: Path) -> None:
    """The planner's rules over the view's calls give the planner's tasks: never ran, ran
    with another version, up to date, failed and waiting (permanent), blocked."""
    config = write_default_config(tmp_path, overrides={"database_url": filled.url})
    settings = load_settings(config)
    calls = stage_calls(settings)
    ids = {e.name: e.id for e in filled.list_exposures()}
    for name, stage, status in (
        ("EUC_W", "detector_health", "ok"),
        ("EUC_A", "catalogue", "failed"),
    ):  # up to date; waits
        filled.record_stage_run(
            _run(ids[name], stage, status, stage_version=calls[stage].version,
                 config_hash=calls[stage].config_hash)
        )  # fmt: skip
    view, _files = build_view(settings)
    now = filled.now()
    tasks, skipped, blocked = plan(filled, settings, workers=1)
    planned, n_skipped, n_blocked = pending_work(
        filled.list_exposures(state="registered"), filled.stage_runs(), view.stages,
        view.calls, now, retry_wait=view.retry_wait,
    )  # fmt: skip
    assert [(e.id, tuple(names)) for e, names in planned] == [
        (t.exposure_id, t.stages) for t in tasks
    ]
    assert (n_skipped, n_blocked) == (skipped, blocked)
    assert n_skipped >= 1 and n_blocked >= 1  # EUC_W's detector_health; EUC_A's readers
    assert [s.name for s in view.stages] == [s.name for s in STAGES]
    assert view.stages[0] == StagePlan.of(STAGES[0])


def _status_json(config: Path, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [VISKOM, "status", "--json", "--config", str(config)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_cached_view_follows_settings_and_calibrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view is computed once, reused while nothing it came from changed, and computed
    again when the settings file, the environment or a calibration file changes; a damaged
    cache file is replaced."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    config = write_default_config(tmp_path / "project")
    first = status_view(config)
    files = list((cache / "viskom" / "status").glob("*.json"))
    assert len(files) == 1
    assert status_view(config) == first
    settings = load_settings(config)
    calls = stage_calls(settings)
    assert {n: (c.version, c.config_hash) for n, c in calls.items()} == {
        n: (c.version, c.config_hash) for n, c in first.calls.items()
    }
    # a calibration file appears: the events stage's provenance moves
    from viskom.pipeline.resources import calibration_files

    gains = calibration_files(settings)[1]
    gains.parent.mkdir(parents=True, exist_ok=True)
    gains.write_text("# quadrant relative gains\n1-1.E 1.01\n")
    with_gains = status_view(config)
    assert with_gains.calls["gaia"].config_hash != first.calls["gaia"].config_hash
    assert with_gains.calls["gaia"].config_hash == stage_calls(settings)["gaia"].config_hash
    # the environment, then the file's own settings
    monkeypatch.setenv("VISKOM_EVENTS__SEED_SIGMA", "9.5")
    env_view = status_view(config)
    assert env_view.calls["events"].config_hash != with_gains.calls["events"].config_hash
    monkeypatch.delenv("VISKOM_EVENTS__SEED_SIGMA")
    text = re.sub(r"(?m)^seed_sigma = .*$", "seed_sigma = 9.5", config.read_text(), count=1)
    config.write_text(text)
    file_view = status_view(config)
    assert file_view.calls["events"].config_hash == env_view.calls["events"].config_hash
    for damaged in (cache / "viskom" / "status").glob("*.json"):
        damaged.write_text("{not json")
    assert status_view(config) == file_view


def test_status_is_the_same_through_a_fresh_and_a_cached_view(
    filled: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command prints the same report when it computes the view and when it reads it
    back, with the planner's pending counts."""
    import os

    config = write_default_config(tmp_path, overrides={"database_url": filled.url})
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    fresh = _status_json(config, env)
    cached = _status_json(config, env)
    assert fresh == cached
    through_typer = CliRunner().invoke(app, ["status", "--format", "json", "-c", str(config)])
    assert through_typer.exit_code == 0, through_typer.output
    assert json.loads(through_typer.stdout) == fresh
    table = subprocess.run([VISKOM, "status", f"--config={config}"], capture_output=True,
                           text=True, env=env)  # fmt: skip
    assert table.returncode == 0 and "detector_health" in table.stdout
    assert "EUC_BAD: truncated FITS" in table.stdout and "GAIN = x is not a number" in table.stdout
    settings = load_settings(config)
    tasks, _skipped, _blocked = plan(filled, settings, workers=1)
    pending = {s.name: 0 for s in STAGES}
    for task in tasks:
        for name in task.stages:
            pending[name] += 1
    assert {r["stage"]: r["pending"] for r in fresh["stages"]} == pending
    assert [r["exposure"] for r in fresh["failed"]] == ["EUC_DARK", "EUC_A"]
    assert [r["exposure"] for r in fresh["geometry_mismatch"]] == ["EUC_B"]
    assert [r["exposure"] for r in fresh["header_warnings"]] == ["EUC_W"]  # [] is none
    assert (
        fresh["fetched"]["fetched"] == 1 and fresh["fetched"]["failed"][0]["file"] == "EUC_Q.fits"
    )
    assert sum(c["live"] for c in fresh["claims"]) == 1 and len(fresh["claims"]) == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["status"], (None, "table")),
        (["status", "--json"], (None, "json")),
        (["status", "--format", "json", "--config", "a.toml"], ("a.toml", "json")),
        (["status", "--format=table", "--config=b.toml", "-c", "c.toml"], ("c.toml", "table")),
        (["status", "--format", "csv", "--json"], (None, "json")),  # --json wins, as in typer
        (["status", "--format", "csv"], None),  # typer says what is wrong
        (["status", "--why", "EUC_A"], None),
        (["status", "--help"], None),
        (["status", "--config"], None),
        (["status", "-c=a.toml"], None),
        (["status", "extra"], None),
        (["run"], None),
        ([], None),
    ],
)
def test_the_script_answers_only_the_plain_forms(args, expected) -> None:
    assert quick_status_args(args) == expected


def test_both_paths_give_the_same_error(tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    script = subprocess.run([VISKOM, "status", "--config", str(missing)], capture_output=True,
                            text=True)  # fmt: skip
    typed = CliRunner().invoke(app, ["status", "--config", str(missing)])
    assert script.returncode == typed.exit_code == 2
    assert f"error: settings file {missing} does not exist" in script.stderr
    assert f"settings file {missing} does not exist" in typed.output
