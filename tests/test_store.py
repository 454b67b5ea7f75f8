"""Tests of viskom.store on SQLite and PostgreSQL (see the store_url fixture in conftest)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from viskom.store import (
    Exposure,
    ExposureRecord,
    MetricValue,
    StageRun,
    Store,
)
from viskom.store.migrate import current_revision, head_revision
from viskom.store.models import Base

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SHA_A = "a" * 64
SHA_B = "b" * 64


def record(name: str, **overrides: Any) -> ExposureRecord:
    """A registered SCIENCE exposure record with sensible defaults."""
    values: dict[str, Any] = {
        "path": f"/data/{name}.fits",
        "state": "registered",
        "size_bytes": 123_456_789_012,
        "checksum": SHA_A,
        "frame_type": "SCIENCE",
        "date_obs": T0,
        "mjd_obs": 60735.5,
        "exptime": 566.0,
        "ra": 150.1,
        "dec": 2.2,
        "pa": 90.0,
        "obs_id": "12345",
        "dither": 1,
        "exposure_index": 0,
        "img_cat": "SCIENCE",
        "img_t1": "WIDE",
        "img_t2": "NOMINAL",
        "obs_mode": "WIDE",
        "n_quadrants": 144,
        "header": {"OBJECT": "field", "NAXIS": 0, "NESTED": {"a": [1, 2.5, None]}},
    }
    values.update(overrides)
    return ExposureRecord(name=name, **values)


def run(exposure_id: int, stage: str = "basic", status: str = "ok", **overrides: Any) -> StageRun:
    """A stage run with sensible defaults."""
    values: dict[str, Any] = {
        "stage_version": "1",
        "config_hash": "c" * 64,
        "software_version": "0.1.0",
        "error": None if status == "ok" else "boom",
        "started_at": T0 + timedelta(hours=1),
        "duration_s": 0.25,
    }
    values.update(overrides)
    return StageRun(exposure_id=exposure_id, stage=stage, status=status, **values)


def add(store: Store, name: str, **overrides: Any) -> Exposure:
    exposure, created = store.register_exposure(record(name, **overrides))
    assert created
    return exposure


def scalar(store: Store, sql: str, **params: Any) -> Any:
    with store.engine.connect() as connection:
        return connection.execute(text(sql), params).scalar()


# -- schema and migrations ------------------------------------------------------------------


def test_migrations_create_schema_and_are_idempotent(store_url: str) -> None:
    with Store(store_url) as first:
        exposure = add(first, "EUC_VIS_1")
        with first.engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            expected = {"exposures", "stage_runs", "metrics", "quality_outcomes", "products"}
            assert expected | {"alembic_version"} <= tables
            assert current_revision(connection) == head_revision() == "0006"
            # The migration and the ORM models describe the same schema.
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []

    with Store(store_url) as second:  # migrating again is a no-op and keeps the data
        second.upgrade()
        assert second.get_exposure("EUC_VIS_1") == exposure
        with second.engine.connect() as connection:
            assert current_revision(connection) == "0006"
            indexes = {ix["name"] for ix in inspect(connection).get_indexes("metrics")}
            assert "ix_metrics_metric" in indexes


def test_sqlite_folder_created_with_foreign_keys_and_wal(tmp_path: Any) -> None:
    path = tmp_path / "new" / "folder" / "viskom.db"
    with Store(f"sqlite:///{path}") as store:
        assert path.exists()
        assert store.dialect == "sqlite"
        assert scalar(store, "PRAGMA foreign_keys") == 1
        assert scalar(store, "PRAGMA journal_mode") == "wal"
        assert scalar(store, "PRAGMA busy_timeout") > 0


# -- exposures ------------------------------------------------------------------------------


def test_register_exposure_is_idempotent(store: Store) -> None:
    first, created = store.register_exposure(record("EUC_VIS_1"))
    again, created_again = store.register_exposure(record("EUC_VIS_1"))
    assert created is True
    assert created_again is False
    assert again == first
    assert [e.name for e in store.list_exposures()] == ["EUC_VIS_1"]
    stored = store.get_exposure("EUC_VIS_1")
    assert stored == first
    assert stored is not None
    assert stored.header == {"OBJECT": "field", "NAXIS": 0, "NESTED": {"a": [1, 2.5, None]}}
    assert stored.size_bytes == 123_456_789_012
    assert store.get_exposure("missing") is None


def test_register_exposure_updates_fields(store: Store) -> None:
    first = add(store, "EUC_VIS_1")
    store.record_stage_run(run(first.id), [("FPA", "median", 1.0)])

    # Same file (checksum and path): fields follow the record, updated_at does not move.
    same_file, created = store.register_exposure(
        record("EUC_VIS_1", header={"OBJECT": "renamed"}, obs_mode="DEEP")
    )
    assert not created
    assert same_file.header == {"OBJECT": "renamed"}
    assert same_file.obs_mode == "DEEP"
    assert same_file.updated_at == first.updated_at
    assert store.get_exposure("EUC_VIS_1") == same_file

    # Moved file: updated_at moves, measurements are kept (same bytes).
    moved, _ = store.register_exposure(
        record("EUC_VIS_1", path="/elsewhere/EUC_VIS_1.fits.gz", header={"OBJECT": "renamed"})
    )
    assert moved.path == "/elsewhere/EUC_VIS_1.fits.gz"
    assert moved.updated_at is not None and first.updated_at is not None
    assert moved.updated_at >= first.updated_at
    assert moved.ingested_at == first.ingested_at
    assert (first.id, "basic") in store.stage_runs()
    assert len(store.metrics()) == 1


def test_checksum_change_wipes_runs_and_metrics(store: Store) -> None:
    changed = add(store, "EUC_VIS_1")
    other = add(store, "EUC_VIS_2")
    for exposure in (changed, other):
        store.record_stage_run(run(exposure.id, "basic"), [("FPA", "median", 1.0)])
        store.record_stage_run(run(exposure.id, "noise"), [("1-1.E", "rms", 2.0)])
    store.record_stage_run(run(changed.id, "broken", "failed"))

    updated, created = store.register_exposure(record("EUC_VIS_1", checksum=SHA_B))
    assert not created
    assert updated.id == changed.id
    assert updated.checksum == SHA_B
    assert updated.ingested_at == changed.ingested_at
    assert updated.updated_at is not None and changed.updated_at is not None
    assert updated.updated_at >= changed.updated_at

    assert set(store.stage_runs()) == {(other.id, "basic"), (other.id, "noise")}
    assert {m.exposure for m in store.metrics()} == {"EUC_VIS_2"}
    assert len(store.metrics()) == 2
    assert store.failed_stage_runs() == []


def test_register_exposure_validates(store: Store) -> None:
    with pytest.raises(ValueError, match="state"):
        store.register_exposure(record("x", state="done"))
    with pytest.raises(ValueError, match="frame_type"):
        store.register_exposure(record("x", frame_type="SKY"))
    with pytest.raises(ValueError, match="name"):
        store.register_exposure(record(""))
    invalid, _ = store.register_exposure(
        ExposureRecord(name="broken", path="/data/broken.fits", state="invalid", reason="EOF")
    )
    assert invalid.state == "invalid"
    assert invalid.reason == "EOF"
    assert invalid.frame_type is None
    assert invalid.header is None
    assert scalar(store, "SELECT count(*) FROM exposures WHERE header IS NULL") == 1


def test_list_exposures_filters_and_order(store: Store) -> None:
    add(store, "c_late", date_obs=T0 + timedelta(hours=2))
    add(store, "b_early", date_obs=T0, frame_type="DARK")
    add(store, "a_early", date_obs=T0)
    add(store, "undated", date_obs=None, state="invalid", frame_type=None)

    names = [e.name for e in store.list_exposures()]
    assert names == ["a_early", "b_early", "c_late", "undated"]
    assert [e.name for e in store.list_exposures(frame_type="DARK")] == ["b_early"]
    assert [e.name for e in store.list_exposures(state="invalid")] == ["undated"]
    window = store.list_exposures(since=T0, until=T0 + timedelta(hours=2))
    assert [e.name for e in window] == ["a_early", "b_early"]  # until is exclusive
    assert [e.name for e in store.list_exposures(since=T0 + timedelta(minutes=1))] == ["c_late"]
    assert store.list_exposures(frame_type="SCIENCE", until=T0) == []


# -- stage runs and metrics -------------------------------------------------------------------


def test_record_stage_run_replaces_only_its_stage(store: Store) -> None:
    exposure = add(store, "EUC_VIS_1")
    store.record_stage_run(
        run(exposure.id, "basic"), [("1-1.E", "median", 1.0), ("1-1.E", "mad", 2.0)]
    )
    store.record_stage_run(run(exposure.id, "noise"), [("1-1.E", "rms", 3.0)])

    store.record_stage_run(
        run(exposure.id, "basic", stage_version="2", duration_s=1.5),
        [("1-1.E", "median", 10.0), ("FPA", "median", 11.0)],
    )
    got = {(m.unit, m.metric): m.value for m in store.metrics()}
    assert got == {("1-1.E", "median"): 10.0, ("FPA", "median"): 11.0, ("1-1.E", "rms"): 3.0}

    runs = store.stage_runs()
    assert set(runs) == {(exposure.id, "basic"), (exposure.id, "noise")}
    assert runs[(exposure.id, "basic")].stage_version == "2"
    assert runs[(exposure.id, "basic")].duration_s == 1.5
    assert scalar(store, "SELECT count(*) FROM stage_runs") == 2
    assert scalar(store, "SELECT count(*) FROM metrics WHERE stage = 'noise'") == 1


def test_failed_run_clears_stage_metrics_and_is_listed(store: Store) -> None:
    exposure = add(store, "EUC_VIS_1")
    store.record_stage_run(run(exposure.id, "basic"), [("FPA", "median", 1.0)])
    store.record_stage_run(run(exposure.id, "noise"), [("FPA", "rms", 2.0)])

    failed = run(exposure.id, "basic", "failed", error="Traceback: boom")
    store.record_stage_run(failed, [("FPA", "median", 5.0)])  # metrics of a failure are ignored
    assert [(m.metric, m.value) for m in store.metrics()] == [("rms", 2.0)]
    [(name, stored)] = store.failed_stage_runs()
    assert stored.finished_at is not None and stored.attempts == 1  # set by the store
    assert (name, replace(stored, finished_at=None, attempts=None)) == ("EUC_VIS_1", failed)
    assert store.stage_runs()[(exposure.id, "basic")].status == "failed"

    store.record_stage_run(run(exposure.id, "basic"), [("FPA", "median", 1.0)])
    assert store.failed_stage_runs() == []
    assert store.stage_runs()[(exposure.id, "basic")].error is None


def test_non_finite_values_are_stored_as_null(store: Store) -> None:
    exposure = add(store, "EUC_VIS_1", exptime=np.float32(566.0), mjd_obs=float("nan"))
    assert exposure.exptime == 566.0 and type(exposure.exptime) is float
    assert exposure.mjd_obs is None

    values = {
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": -math.inf,
        "npnan": np.float64("nan"),
        "none": None,
        "f32": np.float32(1.5),
        "i64": np.int64(3),
        "plain": 2.25,
    }
    store.record_stage_run(run(exposure.id), [("FPA", k, v) for k, v in values.items()])
    got = {m.metric: m.value for m in store.metrics()}
    assert got == {
        "nan": None,
        "inf": None,
        "ninf": None,
        "npnan": None,
        "none": None,
        "f32": 1.5,
        "i64": 3.0,
        "plain": 2.25,
    }
    assert all(type(v) is float for v in got.values() if v is not None)
    assert scalar(store, "SELECT count(*) FROM metrics WHERE value IS NULL") == 5


def test_metrics_filters_and_order(store: Store) -> None:
    late = add(store, "a_late", date_obs=T0 + timedelta(hours=2))
    early = add(store, "z_early", date_obs=T0)
    undated = add(store, "undated", date_obs=None)
    rows = [
        ("FPA", "median", 1.0),
        ("1-1", "median", 2.0),
        ("1-1.E", "median", 3.0),
        ("1-1.E", "rms", 4.0),
        ("10-1.F", "rms", 5.0),
    ]
    for exposure in (late, early, undated):
        store.record_stage_run(run(exposure.id), rows)

    everything = store.metrics()
    assert len(everything) == 15
    order = [(m.exposure, m.unit, m.metric) for m in everything[:5]]
    assert order == [
        ("z_early", "1-1", "median"),
        ("z_early", "1-1.E", "median"),
        ("z_early", "1-1.E", "rms"),
        ("z_early", "10-1.F", "rms"),
        ("z_early", "FPA", "median"),
    ]
    assert [m.exposure for m in everything[::5]] == ["z_early", "a_late", "undated"]

    assert {m.exposure for m in store.metrics(exposures=["a_late"])} == {"a_late"}
    assert len(store.metrics(exposures="a_late")) == 5  # a lone name is accepted
    assert store.metrics(exposures=[]) == []
    assert {m.metric for m in store.metrics(metrics=["rms"])} == {"rms"}
    by_unit = store.metrics(units=["FPA", "1-1"])
    assert {(m.unit, m.value) for m in by_unit} == {("FPA", 1.0), ("1-1", 2.0)}
    assert len(by_unit) == 6

    windowed = store.metrics(since=T0 + timedelta(hours=1))
    assert {m.exposure for m in windowed} == {"a_late"}
    windowed = store.metrics(until=T0 + timedelta(hours=2))
    assert {m.exposure for m in windowed} == {"z_early"}

    combined = store.metrics(
        exposures=["a_late", "z_early"], metrics=["rms"], units=["1-1.E"], since=T0
    )
    assert combined == [
        MetricValue("z_early", "1-1.E", "rms", 4.0),
        MetricValue("a_late", "1-1.E", "rms", 4.0),
    ]


def test_stage_runs_by_exposure_ids(store: Store) -> None:
    one = add(store, "one")
    two = add(store, "two")
    store.record_stage_run(run(one.id, "basic"))
    store.record_stage_run(run(two.id, "basic"))
    store.record_stage_run(run(two.id, "noise", "failed"))

    assert set(store.stage_runs()) == {(one.id, "basic"), (two.id, "basic"), (two.id, "noise")}
    assert set(store.stage_runs([two.id])) == {(two.id, "basic"), (two.id, "noise")}
    assert set(store.stage_runs(iter([one.id]))) == {(one.id, "basic")}
    assert store.stage_runs([]) == {}
    got = store.stage_runs([one.id])[(one.id, "basic")]
    assert got.finished_at is not None
    assert replace(got, finished_at=None) == run(one.id, "basic")


def test_record_stage_run_rejects_bad_input(store: Store) -> None:
    exposure = add(store, "EUC_VIS_1")
    with pytest.raises(LookupError):
        store.record_stage_run(run(exposure.id + 1000))
    with pytest.raises(ValueError, match="status"):
        store.record_stage_run(run(exposure.id, status="maybe"))
    with pytest.raises(ValueError, match="twice"):
        store.record_stage_run(run(exposure.id), [("FPA", "m", 1.0), ("FPA", "m", 2.0)])

    store.record_stage_run(run(exposure.id, "basic"), [("FPA", "median", 1.0)])
    with pytest.raises(ValueError, match="another stage"):
        store.record_stage_run(run(exposure.id, "other"), [("FPA", "median", 2.0)])
    # The failed call was rolled back as a whole: no run row for "other".
    assert set(store.stage_runs()) == {(exposure.id, "basic")}
    assert [(m.metric, m.value) for m in store.metrics()] == [("median", 1.0)]


def test_deleting_an_exposure_cascades(store: Store) -> None:
    exposure = add(store, "EUC_VIS_1")
    store.record_stage_run(run(exposure.id), [("FPA", "median", 1.0)])
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM exposures WHERE id = :id"), {"id": exposure.id})
    assert store.stage_runs() == {}
    assert store.metrics() == []
    assert scalar(store, "SELECT count(*) FROM metrics") == 0


def test_bulk_metrics_replace_a_full_focal_plane(store: Store) -> None:
    """A focal plane of quadrant metrics, recorded and then replaced in full (its speed is
    measured by benchmarks/bench_store.py, not here)."""
    exposure = add(store, "EUC_VIS_1")
    units = [f"{r}-{c}.{q}" for r in range(1, 7) for c in range(1, 7) for q in "EFGH"]
    rows = [(u, f"metric_{k:02d}", float(k) + 0.5) for u in units for k in range(18)]
    assert len(rows) == 2592
    for shift in (0.0, 1.0):  # first insert, then a full replacement with other values
        store.record_stage_run(
            run(exposure.id, "quadrants"), [(u, m, v + shift) for u, m, v in rows]
        )
    assert scalar(store, "SELECT count(*) FROM metrics") == len(rows)
    third = store.metrics(metrics=["metric_03"])
    assert len(third) == len(units) and {m.value for m in third} == {4.5}


# -- reports and time zones ------------------------------------------------------------------


def test_status_summary_counts(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    add(store, "s1", date_obs=T0)
    add(store, "s2", date_obs=T0 + timedelta(hours=3))
    # 00:30 at UTC+2 is still the 1st of March in UTC.
    add(store, "s3", date_obs=datetime(2025, 3, 2, 0, 30, tzinfo=plus_two))
    add(store, "d1", date_obs=T0 + timedelta(days=1), frame_type="DARK")
    add(store, "bad", date_obs=None, frame_type=None, state="invalid", checksum=None)

    assert store.status_summary() == [
        {"date": date(2025, 3, 1), "frame_type": "SCIENCE", "state": "registered", "count": 3},
        {"date": date(2025, 3, 2), "frame_type": "DARK", "state": "registered", "count": 1},
        {"date": None, "frame_type": None, "state": "invalid", "count": 1},
    ]


def test_datetimes_round_trip_as_aware_utc(store: Store) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2025, 3, 1, 17, 45, 12, 345678, tzinfo=india)
    exposure = add(store, "EUC_VIS_1", date_obs=local)
    naive = add(store, "EUC_VIS_2", date_obs=datetime(2025, 3, 1, 13, 0))  # naive = UTC

    for got in (exposure, store.get_exposure("EUC_VIS_1")):
        assert got is not None and got.date_obs is not None
        assert got.date_obs == local
        assert got.date_obs.utcoffset() == timedelta(0)
        assert got.date_obs.replace(tzinfo=None) == datetime(2025, 3, 1, 12, 15, 12, 345678)
        assert got.ingested_at is not None and got.ingested_at.utcoffset() == timedelta(0)
        assert got.updated_at is not None and got.updated_at.utcoffset() == timedelta(0)
    assert naive.date_obs == datetime(2025, 3, 1, 13, 0, tzinfo=UTC)

    # Windows given in another zone select by instant.
    window = store.list_exposures(
        since=datetime(2025, 3, 1, 17, 45, tzinfo=india),
        until=datetime(2025, 3, 1, 18, 30, tzinfo=india),
    )
    assert [e.name for e in window] == ["EUC_VIS_1"]

    started = datetime(2025, 3, 1, 8, 0, 0, 1, tzinfo=timezone(timedelta(hours=-4)))
    store.record_stage_run(run(exposure.id, started_at=started))
    stored = store.stage_runs()[(exposure.id, "basic")].started_at
    assert stored == started
    assert stored is not None and stored.tzinfo is not None
    assert stored.utcoffset() == timedelta(0)

    store.record_stage_run(run(exposure.id, "auto", started_at=None))
    auto = store.stage_runs()[(exposure.id, "auto")].started_at
    assert auto is not None and auto.utcoffset() == timedelta(0)


def test_parquet_products_round_trip_with_dictionaries_only_where_values_repeat(tmp_path):
    import pyarrow.parquet as pq

    from viskom.store.products import write_table

    rng = np.random.default_rng(1)
    n = 5000
    columns = {
        "extname": np.array(["1-1.E", "6-6.H"] * (n // 2)),
        "npix": rng.integers(1, 40, n),
        "flagged": rng.random(n) < 0.1,
        "x": rng.uniform(0, 2048, n),
        "charge_adu": np.where(rng.random(n) < 0.05, np.nan, rng.normal(800, 90, n)),
        "kind": ["cosmic"] * (n - 1) + ["xray"],
    }
    path = write_table(columns, tmp_path / "hits.parquet")
    back = pq.read_table(path).to_pydict()
    for name, values in columns.items():
        np.testing.assert_array_equal(np.asarray(back[name]), np.asarray(values), err_msg=name)
    meta = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings
                 for i in range(meta.num_columns)}  # fmt: skip
    dictionary = {name for name, enc in encodings.items() if any("DICTIONARY" in e for e in enc)}
    assert {"extname", "npix", "kind"} <= dictionary  # (Parquet has no boolean dictionary)
    assert not dictionary & {"x", "charge_adu"}
