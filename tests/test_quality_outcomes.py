"""A monitor that finds nothing says so (issue 11): quality outcomes and the `empty` status.

A stage that ran and measured nothing returns a QualityOutcome; the runner records the stage
as `empty` (done: not re-run until its version or configuration changes, and the stages that
read it still run) with the outcome rows, replaced whenever the stage is recorded again;
`viskom run` and `viskom status` print them. Store tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect, make_url, text
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

import viskom.pipeline.worker as worker_module
from viskom.config import Settings
from viskom.le1.frame import Le1Frame
from viskom.measure.spaceweather import archive_has_no_data
from viskom.pipeline.executors import SerialExecutor
from viskom.pipeline.register import ingest
from viskom.pipeline.runner import run_one, run_pipeline
from viskom.sources.gaia import GaiaCache
from viskom.sources.simulator import SimConfig, read_gaia_catalogue, simulate_frame
from viskom.stages import STAGES, ExposureInfo, QualityOutcome, Stage, StageResult
from viskom.stages.detector_health import DetectorHealth
from viskom.stages.gaia import GaiaPhotometry
from viskom.stages.space_weather import SpaceWeather
from viskom.store import ExposureRecord, StageRun, Store
from viskom.store.migrate import head_revision

T0 = datetime(2024, 7, 13, 4, 0, 0, tzinfo=UTC)


# -- the API ------------------------------------------------------------------------------


def test_quality_outcome_and_result_status() -> None:
    o = QualityOutcome("no_stellar_locus", "no chimney in the flux-radius diagram")
    assert o.unit == "FPA"
    for bad in ({"code": "No Locus"}, {"message": ""}, {"unit": ""}, {"unit": "x" * 17}):
        with pytest.raises(ValueError):
            QualityOutcome(**{"code": "no_x", "message": "m", **bad})
    assert StageResult().status == "ok"  # plots: no metrics, nothing to say
    assert StageResult(metrics=[("FPA", "n", 1.0)], outcomes=[o]).status == "ok"
    assert StageResult(outcomes=[o]).status == "empty"
    assert StageResult(metrics=[("FPA", "n_stars", 0.0)], outcomes=[o], measured=False).status == (
        "empty"
    )
    nothing = StageResult.nothing("no_gaia_stars", "empty cone", products=[])
    assert nothing.status == "empty" and nothing.outcomes[0].code == "no_gaia_stars"


# -- the store ----------------------------------------------------------------------------


def _exposure(store: Store, name: str = "EUC_VIS_Q", **kw: Any):
    values = {"path": f"/d/{name}.fits", "state": "registered", "frame_type": "SCIENCE",
              "checksum": "a" * 64, "date_obs": T0, **kw}  # fmt: skip
    return store.register_exposure(ExposureRecord(name=name, **values))[0]


def _run(exposure_id: int, stage: str, status: str) -> StageRun:
    error = "boom" if status == "failed" else None
    return StageRun(exposure_id, stage, "1", "c" * 16, "0", status, error, T0)


def test_store_records_replaces_and_counts_outcomes(store: Store) -> None:
    a, b = _exposure(store, "EUC_A"), _exposure(store, "EUC_B", date_obs=T0 + timedelta(1))
    store.record_stage_run(
        _run(a.id, "psf", "empty"),
        [("FPA", "n_stars", 0.0)],
        [("no_stellar_locus", "FPA", "no chimney")],
    )
    store.record_stage_run(
        _run(a.id, "gaia", "ok"),
        [("FPA", "n_matched", 40.0)],
        [("few_stars", "1-1.E", "3 stars"), ("few_stars", "1-1.F", "2 stars")],
    )
    store.record_stage_run(_run(b.id, "psf", "empty"), (), [("no_stellar_locus", "FPA", "x")])
    assert store.stage_runs()[(a.id, "psf")].status == "empty"
    # metrics of an empty run are kept (a zero is a measurement)
    assert [m.value for m in store.metrics(metrics=["n_stars"])] == [0.0]
    rows = store.quality_outcomes()
    assert [(r.exposure, r.stage, r.code, r.unit) for r in rows] == [
        ("EUC_A", "gaia", "few_stars", "1-1.E"),
        ("EUC_A", "gaia", "few_stars", "1-1.F"),
        ("EUC_A", "psf", "no_stellar_locus", "FPA"),
        ("EUC_B", "psf", "no_stellar_locus", "FPA"),
    ]
    assert rows[0].recorded_at is not None and rows[0].recorded_at.tzinfo is not None
    assert store.quality_outcome_counts() == [
        ("gaia", "few_stars", 1),
        ("psf", "no_stellar_locus", 2),
    ]
    assert [r.exposure for r in store.quality_outcomes(codes=["no_stellar_locus"])] == [
        "EUC_A",
        "EUC_B",
    ]
    assert store.quality_outcomes(exposures=["EUC_B"], stages=["gaia"]) == []
    assert len(store.quality_outcomes(since=T0 + timedelta(hours=12))) == 1
    # recorded again: replaced (an ok run without outcomes clears them; others untouched)
    store.record_stage_run(_run(a.id, "psf", "ok"), [("FPA", "n_stars", 12.0)])
    assert [r.exposure for r in store.quality_outcomes(stages=["psf"])] == ["EUC_B"]
    store.record_stage_run(_run(a.id, "gaia", "failed"))
    assert store.quality_outcomes(exposures=["EUC_A"]) == []
    # a changed file forgets its outcomes with its runs; deleting the exposure cascades
    _exposure(store, "EUC_B", date_obs=T0 + timedelta(1), checksum="b" * 64)
    assert store.quality_outcomes() == [] and store.quality_outcome_counts() == []
    with pytest.raises(ValueError, match="outcome unit"):
        store.record_stage_run(_run(a.id, "psf", "empty"), (), [("x", "U" * 17, "m")])
    with pytest.raises(ValueError, match="status"):
        store.record_stage_run(_run(a.id, "psf", "nothing"))


def test_store_header_warnings_column(store: Store) -> None:
    warning = {"keyword": "EXPTIME", "extname": None, "value": "'abc'", "reason": "is not a number"}
    _exposure(store, "EUC_W", header_warnings=[warning])
    _exposure(store, "EUC_FINE", header_warnings=[])
    assert store.get_exposure("EUC_W").header_warnings == [warning]
    assert store.get_exposure("EUC_FINE").header_warnings is None  # none: NULL
    assert [e.name for e in store.exposures_with_header_warnings()] == ["EUC_W"]


def test_upgrade_from_the_first_schema_keeps_the_data(store_url: str) -> None:
    """A database made by the previous release (revision 0001) migrates in place."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from viskom.store import migrate
    from viskom.store.models import Base

    url = make_url(store_url)
    if url.get_backend_name() == "sqlite":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(store_url, poolclass=NullPool)
    with engine.begin() as connection:
        migrate.upgrade(connection, "0001")
        connection.execute(
            text(
                "INSERT INTO exposures (name, path, state, ingested_at, updated_at) "
                "VALUES ('EUC_OLD', '/d/old.fits', 'registered', :t, :t)"
            ),
            {"t": T0.replace(tzinfo=None)},
        )
    engine.dispose()
    with Store(store_url) as store:
        old = store.get_exposure("EUC_OLD")
        assert old is not None and old.header_warnings is None
        store.record_stage_run(_run(old.id, "psf", "empty"), (), [("no_stellar_locus", "FPA", "x")])
        assert len(store.quality_outcomes()) == 1
        with store.engine.connect() as connection:
            assert migrate.current_revision(connection) == head_revision() == "0006"
            assert "quality_outcomes" in inspect(connection).get_table_names()
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


# -- the runner ---------------------------------------------------------------------------


class Finder(Stage):
    """A stage that finds nothing (or, when told, something) on BIAS frames."""

    name = "finder"
    version = "1"
    frame_types = frozenset({"BIAS"})
    behaviour: ClassVar[str] = "nothing"

    def run(self, frame, inputs, config) -> StageResult:
        if Finder.behaviour == "fail":
            raise RuntimeError("finder broke")
        if Finder.behaviour == "some":
            return StageResult(
                metrics=[("FPA", "found", 3.0)],
                outcomes=[QualityOutcome("nothing_here", "quadrant empty", "1-1.E")],
            )
        return StageResult.nothing("nothing_here", f"no thing in {len(frame.extnames)} HDUs")


class Follower(Stage):
    """Reads the finder's results: runs after it, also when it found nothing."""

    name = "follower"
    version = "1"
    frame_types = frozenset({"BIAS"})
    after = ("finder",)

    def run(self, frame, inputs, config) -> StageResult:
        return StageResult(metrics=[("FPA", "followed", 1.0)])


@pytest.fixture
def bias_frame(tmp_path_factory):
    out = tmp_path_factory.mktemp("bias")
    return simulate_frame(
        out, "bias", seed=1201, date_obs=T0, config=SimConfig(geometry="small")
    ).path


def test_runner_records_empty_stages_with_outcomes(store_url, bias_frame, tmp_path, monkeypatch):
    from viskom.metrics import METRICS, Metric

    fakes = {s.name: s for s in (Finder(), Follower())}
    monkeypatch.setattr(worker_module, "get_stage", lambda name: fakes[name])
    for metric, stage in (("found", "finder"), ("followed", "follower")):  # registered, as any
        entry = Metric(
            metric, "", "a test metric", stage, "measured", frozenset({"BIAS"}), ("fpa",)
        )
        monkeypatch.setitem(METRICS, metric, entry)
    monkeypatch.setattr(Finder, "behaviour", "nothing")
    settings = Settings(data_root=tmp_path / "data", database_url=store_url)
    stages = tuple(fakes.values())
    with Store(store_url) as store:
        ingest(store, [bias_frame])
        (exp,) = store.list_exposures()

        def go():
            return run_pipeline(store, settings, SerialExecutor(), stages=stages, workers=1)

        summary = go()
        assert (summary.stages_ok, summary.stages_empty, summary.stages_failed) == (1, 1, 0)
        ((name, stage, outcome),) = summary.outcomes
        assert (name, stage, outcome.code, outcome.unit) == (
            exp.name,
            "finder",
            "nothing_here",
            "FPA",
        )
        runs = store.stage_runs()
        assert runs[(exp.id, "finder")].status == "empty"
        assert runs[(exp.id, "follower")].status == "ok"  # ran although finder found nothing
        (row,) = store.quality_outcomes()
        assert (row.stage, row.code, row.message) == (
            "finder",
            "nothing_here",
            "no thing in 144 HDUs",
        )
        # done: not pending again, not even with --retry-failed
        summary = run_pipeline(
            store, settings, SerialExecutor(), stages=stages, retry_failed=True, workers=1
        )
        assert (summary.exposures, summary.skipped) == (0, 2)
        # a new version re-runs it; its outcomes are replaced
        monkeypatch.setattr(Finder, "version", "2")
        monkeypatch.setattr(Finder, "behaviour", "some")
        summary = go()
        assert (summary.stages_ok, summary.stages_empty) == (2, 0)
        assert store.stage_runs()[(exp.id, "finder")].status == "ok"
        assert [(r.code, r.unit, r.message) for r in store.quality_outcomes()] == [
            ("nothing_here", "1-1.E", "quadrant empty")
        ]
        assert [m.value for m in store.metrics(metrics=["found"])] == [3.0]
        # a failure clears them, and what needs the stage waits
        monkeypatch.setattr(Finder, "version", "3")
        monkeypatch.setattr(Finder, "behaviour", "fail")
        summary = go()
        assert summary.stages_failed == 2 and summary.outcomes == []
        assert store.quality_outcomes() == [] and store.metrics(metrics=["found"]) == []


def test_every_stage_declares_known_header_keywords() -> None:
    from viskom.le1.header import PRIMARY_ATTRIBUTES

    for stage in STAGES:
        assert set(stage.header_keywords) <= set(PRIMARY_ATTRIBUTES), stage.name


# -- the command line ---------------------------------------------------------------------


def test_cli_prints_outcomes(store_url, bias_frame, tmp_path, monkeypatch) -> None:
    from viskom.cli import app

    def dull(self, frame, exposure, config) -> StageResult:
        return StageResult(
            outcomes=[
                QualityOutcome("no_signal", f"nothing in {name}", name)
                for name in ("1-1.E", "1-1.F", "1-1.G", "1-1.H", "1-2.E")
            ]
            + [QualityOutcome("no_signal_fpa", "the focal plane is dark")],
        )

    runner = CliRunner()
    for key in ("VISKOM_CONFIG", "VISKOM_WORKERS"):
        monkeypatch.delenv(key, raising=False)
    assert runner.invoke(app, ["init", str(tmp_path / "proj")]).exit_code == 0
    monkeypatch.chdir(tmp_path / "proj")
    monkeypatch.setenv("VISKOM_DATABASE_URL", store_url)
    monkeypatch.setenv("VISKOM_EXECUTOR", "serial")
    monkeypatch.setattr(DetectorHealth, "run", dull)
    assert runner.invoke(app, ["ingest", str(bias_frame)]).exit_code == 0
    name = bias_frame.name.removesuffix(".fits")

    result = runner.invoke(app, ["run"])
    assert result.exit_code == 0, result.output
    out = result.output
    # images still pictures the frame; health_plots has no table to draw and says so
    assert "1 stage runs ok, 0 failed, 2 found nothing" in out
    assert "7 quality outcomes:" in out
    assert f"{name} health_plots no_health_table (FPA)" in out
    assert (
        f"{name} detector_health no_signal: 5 units (1-1.E, 1-1.F, 1-1.G, 1-1.H ...): "
        "nothing in 1-1.E"
    ) in " ".join(out.split())
    assert f"{name} detector_health no_signal_fpa (FPA): the focal plane is dark" in out

    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "quality outcomes" in result.output
    assert "no_signal_fpa" in result.output and "the focal plane is dark" in result.output

    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert {"stage": "detector_health", "code": "no_signal", "exposures": 1} in payload[
        "quality_outcome_counts"
    ]
    assert len(payload["quality_outcomes"]) == 7
    assert payload["quality_outcomes"][0]["exposure"] == name
    assert payload["exposures"][0]["frame_type"] == "BIAS"


# -- the stages this issue made say so -----------------------------------------------------


@pytest.fixture(scope="module")
def science(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("sci")
    sim = simulate_frame(
        out, "science", seed=1301, date_obs=T0, config=SimConfig(geometry="small"), obs_id=2613
    )
    truth = json.loads(sim.truth_path.read_text())
    return {"sim": sim, "gaia": read_gaia_catalogue(out / truth["gaia_catalogue"])}


def _gaia_setup(science, tmp_path, *, seed_rows: bool, stars: dict | None):
    from viskom.store.products import write_table

    settings = Settings(
        data_root=tmp_path / "data",
        gaia={"online": False, "aperture_radius_px": 0.0, "blind_solve": False},
    )
    table = science["gaia"]
    meta = table.meta
    GaiaCache(settings.gaia_cache_path).seed_from_catalogue(
        table if seed_rows else table[:0], meta["ra0"], meta["dec0"], meta["radius_deg"]
    )
    sim = science["sim"]
    info = ExposureInfo(0, sim.name, str(sim.path), "SCIENCE", 560.52,
                        str(settings.products_path), date_obs=T0.isoformat())  # fmt: skip
    empty = {"extname": np.zeros(0, str), "x_world": np.zeros(0), "y_world": np.zeros(0),
             "flux_auto": np.zeros(0)}  # fmt: skip
    write_table(stars if stars is not None else empty, info.product("stars", "parquet"))
    return settings, info


def _random_stars(n: int = 60) -> dict:
    rng = np.random.default_rng(3)
    return {
        "extname": np.full(n, "3-3.E"),
        "x_world": rng.uniform(-0.3, 0.3, n),
        "y_world": rng.uniform(-0.3, 0.3, n),
        "flux_auto": rng.uniform(1e4, 1e6, n),
    }


@pytest.mark.parametrize(
    ("seed_rows", "stars", "code", "words"),
    [
        (True, None, "no_vis_stars", "selected no stars"),
        (False, "random", "no_gaia_stars", "Gaia DR3 has no star within 0.55 deg"),
        (True, "random", "no_gaia_match", "expected by chance, and the blind solve is off"),
    ],
)
def test_gaia_outcomes(science, tmp_path, seed_rows, stars, code, words) -> None:
    settings, info = _gaia_setup(
        science, tmp_path, seed_rows=seed_rows, stars=_random_stars() if stars else None
    )
    stale = info.product("gaia_stars", "parquet")
    stale.write_bytes(b"an older run's table")
    with Le1Frame(science["sim"].path) as frame:
        result = run_one(GaiaPhotometry(), frame, info, settings)
    assert result.status == "empty" and result.metrics == []
    (outcome,) = result.outcomes
    assert outcome.code == code and words in outcome.message, outcome.message
    assert not stale.exists()  # the month aggregates must not read an older result


def _goes_day(cache, gap: tuple[datetime, datetime] | None = None, protons: bool = True):
    from viskom.sources.simulator.spaceweather import flare_day, write_goes_cache

    t, a, b = flare_day(T0.date())
    if gap is not None:
        inside = (t >= np.datetime64(gap[0].replace(tzinfo=None))) & (
            t <= np.datetime64(gap[1].replace(tzinfo=None))
        )
        a, b = np.where(inside, np.nan, a), np.where(inside, np.nan, b)
    flux = None if protons else np.full(t.size, np.nan)
    write_goes_cache(cache, t, a, b, protons=flux)


def _space_weather(tmp_path) -> tuple[Settings, ExposureInfo]:
    settings = Settings(data_root=tmp_path / "data", goes={"online": False})
    info = ExposureInfo(0, "EUC_DARK", "/nowhere.fits", "DARK", 560.52,
                        str(settings.products_path), date_obs=T0.isoformat())  # fmt: skip
    return settings, info


def test_space_weather_no_goes_data_is_an_outcome(tmp_path) -> None:
    """The day's file is there, but no valid XRS sample covers the exposure."""
    settings, info = _space_weather(tmp_path)
    _goes_day(settings.goes_cache_path, gap=(T0 - timedelta(minutes=30), T0 + timedelta(hours=1)))
    result = run_one(SpaceWeather(), None, info, settings)
    assert result.status == "empty" and result.metrics == []
    (outcome,) = result.outcomes
    assert outcome.code == "no_goes_data" and "no valid XRS sample" in outcome.message


def test_space_weather_without_protons_is_ok_with_an_outcome(tmp_path) -> None:
    settings, info = _space_weather(tmp_path)
    _goes_day(settings.goes_cache_path, protons=False)
    result = run_one(SpaceWeather(), None, info, settings)
    assert result.status == "ok"
    assert {m for _, m, _ in result.metrics} >= {"goes_xrsa_mean", "goes_xrsb_max"}
    assert [o.code for o in result.outcomes] == ["no_goes_protons"]


def test_space_weather_unavailable_goes_stays_a_failure(tmp_path) -> None:
    from viskom.stages.space_weather import GoesDataMissingError

    settings, info = _space_weather(tmp_path)  # offline, empty cache: retry later
    with pytest.raises(GoesDataMissingError, match="offline, not cached"):
        run_one(SpaceWeather(), None, info, settings)


@pytest.mark.parametrize(
    ("failures", "no_data"),
    [
        (("nodata", "nodata", "nodata"), True),  # every satellite: the archive has no file
        (("nodata", "down", "nodata"), False),  # one could not be asked: try again later
        (("unusable", "nodata", "nodata"), False),  # a broken download: try again later
    ],
)
def test_no_data_is_told_apart_from_unreachable(tmp_path, monkeypatch, failures, no_data) -> None:
    """The client says, per missing day, whether the archive answered "no file" for every
    satellite (an outcome) or could not be asked or used (a failure to retry)."""
    from viskom.sources import goes

    client = goes.GoesClient(tmp_path / "goes", offline=False)
    plan = iter(failures * 4)

    def download(prod, sat, day, reader):
        kind = next(plan)
        if kind == "nodata":
            raise goes._NoDataError(f"no file for {day} in https://x/")
        if kind == "down":
            raise goes._ServiceFailedError("HTTP 503")
        raise goes.GoesFileError("truncated")

    monkeypatch.setattr(client, "_download", download)
    monkeypatch.setattr(client, "_service_down", lambda url: None)
    monkeypatch.setattr(client, "preferred_satellites", lambda day: (16, 18, 17))
    series, missing = client.xrs_range(T0, T0 + timedelta(hours=1))
    assert series.time.size == 0 and len(missing) == 1
    assert archive_has_no_data(missing[0]) is no_data
    assert "missing for" in missing[0]  # still the message it always was
