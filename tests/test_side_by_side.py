"""A frame's stages side by side on its cores (`worker._run_side_by_side`) against the same
stages one after the other: the same outcomes and metrics, each stage after those it reads,
failures handed down, a stage process that dies recorded as a transient failure."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest

from viskom.config import Settings
from viskom.pipeline.work import stage_calls
from viskom.pipeline.worker import run_calls
from viskom.sources.gaia import GaiaCache
from viskom.sources.simulator import SimConfig, read_gaia_catalogue, simulate_frame
from viskom.stages import STAGES, ExposureInfo, get_stage

T0 = datetime(2024, 7, 13, 3, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    out = tmp_path_factory.mktemp("sbs")
    sim = simulate_frame(out, "science", seed=41, date_obs=T0, exptime=560.52,
                         config=SimConfig(geometry="small"))  # fmt: skip
    return out, sim


def _run(out, sim, name: str, cores: int):
    settings = Settings(data_root=out / name, gaia={"online": False}, goes={"online": False})
    truth = json.loads(sim.truth_path.read_text())
    table = read_gaia_catalogue(sim.path.parent / truth["gaia_catalogue"])
    GaiaCache(settings.gaia_cache_path).seed_from_catalogue(
        table, table.meta["ra0"], table.meta["dec0"], table.meta["radius_deg"]
    )
    info = ExposureInfo(
        1, sim.name, str(sim.path), "SCIENCE", 560.52, str(settings.products_path),
        quadrant_workers=cores, date_obs=T0.isoformat(), data_root=str(settings.data_path),
    )  # fmt: skip
    calls = list(stage_calls(settings, STAGES).values())
    return list(run_calls(info, calls))


def test_side_by_side_gives_what_one_after_the_other_gives(frame):
    out, sim = frame
    alone = _run(out, sim, "alone", 1)
    side = _run(out, sim, "side", 2)
    assert [o.call.stage for o in alone] == [s.name for s in STAGES]
    assert sorted(o.call.stage for o in side) == sorted(o.call.stage for o in alone)
    by_stage = {o.call.stage: o for o in side}
    for a in alone:
        s = by_stage[a.call.stage]
        error = None if s.error is None else s.error.replace("/side/", "/alone/")
        assert (s.status, error) == (a.status, a.error), a.call.stage
        mine, theirs = sorted(s.metrics), sorted(a.metrics)
        assert [m[:2] for m in mine] == [m[:2] for m in theirs], a.call.stage
        values = [m[2] for m in mine]
        assert values == pytest.approx([m[2] for m in theirs], nan_ok=True), a.call.stage
        assert [o.code for o in s.outcomes] == [o.code for o in a.outcomes]
    assert by_stage["gaia"].status == "ok" and by_stage["events"].status == "ok"
    # every stage finished after the stages it reads, and started after they finished
    end = {o.call.stage: o.started_at.timestamp() + o.duration_s for o in side}
    for o in side:
        for up in get_stage(o.call.stage).upstream:
            assert o.started_at.timestamp() >= end[up] - 0.05, (o.call.stage, up)
    # and the single-core stages ran beside the catalogue: detector_health started before it
    # ended
    assert by_stage["detector_health"].started_at.timestamp() < end["catalogue"]


def test_a_failed_stage_fails_the_stages_that_need_it(frame, monkeypatch):
    out, sim = frame
    from viskom.stages.catalogue import Catalogue

    def broken(self, frame, inputs, config):
        raise ValueError("a catalogue that cannot be made")

    monkeypatch.setattr(Catalogue, "run", broken)  # the stage processes are forked: they see it
    side = {o.call.stage: o for o in _run(out, sim, "broken", 2)}
    assert side["catalogue"].status == "failed"
    assert "cannot be made" in side["catalogue"].error
    for name in ("psf", "events", "gaia", "science_plots", "event_plots"):
        assert side[name].status == "failed"
        assert "which failed" in side[name].error
    assert side["detector_health"].status == "ok"


def test_a_stage_process_that_dies_is_a_transient_failure(frame, monkeypatch):
    out, sim = frame
    from viskom.stages.psf import PsfMoments

    def dies(self, frame, inputs, config):
        os._exit(3)

    monkeypatch.setattr(PsfMoments, "run", dies)
    side = {o.call.stage: o for o in _run(out, sim, "dies", 2)}
    assert side["psf"].status == "failed"
    assert side["psf"].failure_class == "transient"
    assert "exit code 3" in side["psf"].error
    assert side["gaia"].status == "failed" and side["gaia"].failure_class == "transient"
    assert side["events"].status == "ok"


def test_stopping_early_leaves_no_stage_process_behind(frame):
    """A consumer that stops after the first outcome (an interrupted run) closes the
    generator: the stage processes still running are ended, none is left."""
    import multiprocessing

    out, sim = frame
    settings = Settings(data_root=out / "early", gaia={"online": False}, goes={"online": False})
    info = ExposureInfo(
        1, sim.name, str(sim.path), "SCIENCE", 560.52, str(settings.products_path),
        quadrant_workers=2, date_obs=T0.isoformat(), data_root=str(settings.data_path),
    )  # fmt: skip
    outcomes = run_calls(info, list(stage_calls(settings, STAGES).values()))
    first = next(outcomes)
    assert first.call.stage in {"detector_health", "catalogue", "space_weather"}
    assert multiprocessing.active_children()  # the others are still running
    outcomes.close()
    assert multiprocessing.active_children() == []
