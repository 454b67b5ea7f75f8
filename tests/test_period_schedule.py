"""The month products on a timer (`[run] period_every_s`): made after the first run, left
waiting by the runs that follow within the interval (months named, due time given), made by
the first run after it or when asked for (`month_products=True`), never with False."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from viskom.config import Settings
from viskom.pipeline.executors import SerialExecutor
from viskom.pipeline.register import ingest
from viskom.pipeline.service import PERIOD_CLAIM, PeriodProducts, period_due, run_pending
from viskom.pipeline.watch import CycleReport
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.store import Store

T0 = datetime(2025, 3, 14, 2, 0, tzinfo=UTC)


def test_period_due() -> None:
    now = T0
    assert period_due(None, now, 1800.0) is None  # never made: now
    assert period_due(now - timedelta(hours=1), now, 0.0) is None  # no interval: always now
    assert period_due(now - timedelta(seconds=1801), now, 1800.0) is None
    last = now - timedelta(seconds=600)
    assert period_due(last, now, 1800.0) == last + timedelta(seconds=1800)


def test_the_lines_say_what_happened() -> None:
    due = datetime(2025, 3, 14, 3, 5, tzinfo=UTC)
    waiting = PeriodProducts(months=["2025-03"], made=False, deferred_until=due)
    assert waiting.line() == (
        "month products of 2025-03 wait until 2025-03-14 03:05 UTC ([run] period_every_s)"
    )
    held = PeriodProducts(months=["2025-03"], made=False)
    assert "not made in this run" in (held.line() or "")
    assert PeriodProducts(months=["2025-03"], paths=[Path("a.png")]).line() == (
        "month products: 1 files for ['2025-03']"
    )
    assert PeriodProducts().line() is None
    assert PeriodProducts(months=["2025-03"], error="boom").line() == (
        "month products failed: boom"
    )


def _bias(folder: Path, seed: int, when: datetime) -> Path:
    return simulate_frame(folder, "bias", seed=seed, date_obs=when,
                          config=SimConfig(geometry="small")).path  # fmt: skip


@pytest.mark.filterwarnings("ignore")
def test_month_products_wait_for_their_interval(store_url: str, tmp_path: Path) -> None:
    settings = Settings(data_root=tmp_path / "data", database_url=store_url,
                        run={"period_every_s": 3600})  # fmt: skip
    raw = tmp_path / "raw"
    with Store(store_url) as store:
        ingest(store, [_bias(raw, 1, T0)])
        first = run_pending(settings, SerialExecutor(), store=store, workers=1)
        assert first.summary.stages_ok > 0
        # never made before: made now, whatever the interval
        assert first.periods.made and first.periods.deferred_until is None
        assert first.periods.months == ["2025-03"] and first.periods.paths
        made_at = store.claim_started(PERIOD_CLAIM)
        assert made_at is not None
        written = {p: p.stat().st_mtime_ns for p in first.periods.paths}

        # a new frame of the same month within the hour: measured, its month waits
        ingest(store, [_bias(raw, 2, T0 + timedelta(minutes=10))])
        second = run_pending(settings, SerialExecutor(), store=store, workers=1)
        assert second.summary.stages_ok > 0
        assert not second.periods.made and second.periods.paths == []
        assert second.periods.months == ["2025-03"]
        assert second.periods.deferred_until == made_at + timedelta(seconds=3600)
        assert store.claim_started(PERIOD_CLAIM) == made_at  # not made again
        assert {p: p.stat().st_mtime_ns for p in written} == written
        report = CycleReport(number=2, run=second)
        assert "month products of 2025-03 due" in report.line()

        # still waiting on a run that measured nothing: the month is remembered
        third = run_pending(settings, SerialExecutor(), store=store, workers=1)
        assert third.summary.stages_ok == 0
        assert third.periods.months == ["2025-03"] and not third.periods.made

        # never, when told not to, even when due
        now_settings = settings.model_copy(update={"run": settings.run.model_copy(
            update={"period_every_s": 0.0})})  # fmt: skip
        held = run_pending(now_settings, SerialExecutor(), store=store, workers=1,
                           month_products=False)  # fmt: skip
        assert not held.periods.made and held.periods.deferred_until is None
        assert "not made in this run" in (held.periods.line() or "")

        # asked for: made now, with the second frame in them
        forced = run_pending(settings, SerialExecutor(), store=store, workers=1,
                             month_products=True)  # fmt: skip
        assert forced.periods.made and forced.periods.months == ["2025-03"]
        assert forced.periods.paths and forced.periods.error is None
        assert store.claim_started(PERIOD_CLAIM) > made_at


@pytest.mark.filterwarnings("ignore")
def test_a_build_is_not_made_again_for_the_records_it_saw(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records finished within the margin before a build began count as new for the next
    run (they may have been committing); the records that build saw, passed back by the same
    process (`viskom watch`), do not. A new frame's month is made again."""
    import viskom.pipeline.service as service

    # a margin no slow machine outlasts between two runs of this test
    monkeypatch.setattr(service, "PERIOD_MARGIN", timedelta(hours=1))
    settings = Settings(data_root=tmp_path / "data", database_url=store_url)
    raw = tmp_path / "raw"
    with Store(store_url) as store:
        ingest(store, [_bias(raw, 3, T0)])
        first = run_pending(settings, SerialExecutor(), store=store, workers=1)
        assert first.periods.made and first.periods.months == ["2025-03"]
        assert first.periods.covered  # this run's records, finished just before the build
        names = {name for name, _stage, _done in first.periods.covered}
        assert names == {e.name for e in store.list_exposures()}

        blind = run_pending(settings, SerialExecutor(), store=store, workers=1)
        assert blind.summary.stages_ok == 0
        assert blind.periods.months == ["2025-03"]  # without the covered set: made again
        covered = blind.periods.covered
        assert covered

        told = run_pending(settings, SerialExecutor(), store=store, workers=1, covered=covered)
        assert told.periods.months == [] and told.periods.paths == []

        ingest(store, [_bias(raw, 4, T0 + timedelta(minutes=5))])
        new = run_pending(settings, SerialExecutor(), store=store, workers=1, covered=covered)
        assert new.summary.stages_ok > 0 and new.periods.months == ["2025-03"]
        assert new.periods.made and new.periods.paths
