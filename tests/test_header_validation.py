"""Header values are validated at registration (issue 11, failure 4).

Every keyword a monitor uses is checked for type and range: a bad value is stored as a
warning on the exposure (never replaced by a default), the frame stays registered, and the
stage that needs the keyword fails with that reason, or leaves the quadrant out with a
`bad_header_value` quality outcome. One end-to-end test per keyword: a small simulated frame,
the keyword rewritten with astropy, ingested into a store, the stage run through the runner.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from astropy.io import fits
from typer.testing import CliRunner

from viskom.config import Settings
from viskom.le1.frame import FrameError, Le1Frame
from viskom.le1.header import HeaderProblem, PrimaryHeader, QuadrantHeader
from viskom.pipeline.executors import SerialExecutor
from viskom.pipeline.register import ingest
from viskom.pipeline.runner import run_pipeline
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.stages import STAGES
from viskom.stages.catalogue import Catalogue
from viskom.stages.detector_health import DetectorHealth
from viskom.stages.events import Events
from viskom.stages.gaia import GaiaPhotometry
from viskom.stages.psf import PsfMoments
from viskom.stages.space_weather import SpaceWeather
from viskom.store import Exposure, StageRun, Store

T0 = datetime(2024, 7, 13, 5, 0, 0, tzinfo=UTC)
QUAD = "2-5.F"


# -- parsing, without files ---------------------------------------------------------------

GOOD_PRIMARY = {
    "DATE-OBS": "2024-07-13T05:00:00.000",
    "MJD-OBS": 60504.208333333336,
    "EXPTIME": 560.52,
    "IMG_CAT": "SCIENCE",
    "IMG_T1": "SURVEY",
    "IMG_T2": "WIDE",
    "RA": 56.25,
    "DEC": -55.7,
    "PA": 46.2,
}


@pytest.mark.parametrize(
    ("keyword", "value", "reason"),
    [
        ("EXPTIME", "abc", "is not a number"),
        ("EXPTIME", True, "is not a number"),
        ("EXPTIME", -1.0, "is outside [0, 100000) s"),
        ("EXPTIME", 1e6, "is outside [0, 100000) s"),
        ("EXPTIME", "nan", "is not finite"),
        ("DATE-OBS", "13/07/2024", "is not an ISO date and time"),
        ("DATE-OBS", 2024.5, "is not an ISO date and time (not a string)"),
        ("DATE-OBS", "1970-01-01T00:00:00", "is outside the years 2000-2099"),
        ("MJD-OBS", "abc", "is not a number"),
        ("MJD-OBS", 12.0, "is outside [40000, 100000]"),
        ("MJD-OBS", 60504.5, "disagrees with DATE-OBS by 25200 s"),
        ("RA", 360.5, "is outside [0, 360] deg"),
        ("RA", -0.1, "is outside [0, 360] deg"),
        ("DEC", 90.5, "is outside [-90, 90] deg"),
        ("PA", "north", "is not a number"),
        ("PA", "inf", "is not finite"),
        ("IMG_CAT", 7, "is not a string"),
        ("IMG_T1", 42, "is not a string"),
        ("IMG_T2", False, "is not a string"),
    ],
)
def test_bad_primary_value_parses_as_none(keyword, value, reason) -> None:
    ph = PrimaryHeader.from_header({**GOOD_PRIMARY, keyword: value})
    attribute = {"DATE-OBS": "date_obs", "MJD-OBS": "mjd_obs"}.get(keyword, keyword.lower())
    assert getattr(ph, attribute) is None
    (problem,) = ph.problems
    assert (problem.keyword, problem.extname, problem.reason) == (keyword, None, reason)
    assert ph.blocking_problem([keyword]) == problem
    assert problem.describe().startswith(f"{keyword} = ")
    assert problem.describe().endswith(f"{reason} (primary header)")


def test_good_primary_values_and_edge_cases() -> None:
    ph = PrimaryHeader.from_header(GOOD_PRIMARY)
    assert ph.problems == () and ph.exptime == 560.52 and ph.pa == pytest.approx(46.2)
    assert ph.date_obs == T0 and ph.blocking_problem(GOOD_PRIMARY) is None
    # a numeric string is a number, PA wraps, RA 360 and a trailing Z are fine
    ph = PrimaryHeader.from_header(
        {
            **GOOD_PRIMARY,
            "EXPTIME": " 89.52 ",
            "PA": -313.8,
            "RA": 360,
            "DATE-OBS": "2024-07-13T05:00:00Z",
        }
    )
    assert ph.problems == ()
    assert ph.exptime == 89.52 and ph.pa == pytest.approx(46.2) and ph.ra == 360.0
    # blank values count as missing, not as problems
    ph = PrimaryHeader.from_header({**GOOD_PRIMARY, "EXPTIME": "  ", "PA": fits.card.UNDEFINED})
    assert ph.problems == () and ph.exptime is None and ph.pa is None
    assert ph.blocking_problem(["PA"]) == HeaderProblem("PA", None, None, "is missing")


@pytest.mark.parametrize(
    ("frame_type", "missing"),
    [
        ("SCIENCE", ["DATE-OBS", "EXPTIME", "RA", "DEC"]),
        ("DARK", ["DATE-OBS", "EXPTIME"]),
        ("FLAT", ["DATE-OBS"]),
        ("BIAS", ["DATE-OBS"]),
        ("CHARGE", ["DATE-OBS"]),
        ("UNKNOWN", []),
    ],
)
def test_missing_keywords_matter_per_frame_type(frame_type, missing) -> None:
    """A missing PA is never a problem (blind solve); EXPTIME only where rates need it."""
    ph = PrimaryHeader.from_header({"IMG_T1": "X"})
    assert [p.keyword for p in ph.missing_for(frame_type)] == missing
    assert all(
        p.describe() == f"{p.keyword} is missing (primary header)"
        for p in ph.missing_for(frame_type)
    )


GOOD_QUADRANT = {
    "EXTNAME": QUAD,
    "NAXIS1": 336,
    "NAXIS2": 276,
    "BITPIX": 16,
    "BZERO": 32768,
    "BSCALE": 1,
    "PRESCANX": 51,
    "OVRSCANX": 29,
    "OVRSCANY": 20,
    "GAIN": 3.4,
    "RDNOISE": 4.1,
    "SATURATE": 61000,
}


@pytest.mark.parametrize(
    ("keyword", "value", "reason"),
    [
        ("GAIN", "abc", "is not a number"),
        ("GAIN", 0.0, "is outside [0.5, 20] e-/ADU"),
        ("GAIN", None, "is missing"),
        ("RDNOISE", -1.0, "is outside [0, 100] e-"),
        ("SATURATE", 0, "is outside (0, 65535] ADU"),
        ("SATURATE", 70000, "is outside (0, 65535] ADU"),
        ("PRESCANX", "abc", "is not an integer"),
        ("PRESCANX", 336, "is outside [0, 336)"),
        ("OVRSCANX", 2.5, "is not an integer"),
        ("OVRSCANX", 300, "leaves no image columns (PRESCANX + OVRSCANX = 351, NAXIS1 = 336)"),
        ("OVRSCANY", -1, "is outside [0, 276)"),
    ],
)
def test_bad_quadrant_value_parses_as_none(keyword, value, reason) -> None:
    header = {**GOOD_QUADRANT, keyword: value}
    if value is None:
        del header[keyword]
    qh = QuadrantHeader.from_header(header)
    attribute = {
        "GAIN": "gain_e_per_adu", "RDNOISE": "read_noise_e", "SATURATE": "saturate_adu",
        "PRESCANX": "prescan_x", "OVRSCANX": "overscan_x", "OVRSCANY": "overscan_y",
    }[keyword]  # fmt: skip
    assert getattr(qh, attribute) is None
    (problem,) = qh.problems
    assert (problem.keyword, problem.extname, problem.reason) == (keyword, QUAD, reason)
    assert problem.describe().endswith(f"{reason} (extension {QUAD})")
    assert bool(qh.geometry_problems) == (keyword in ("PRESCANX", "OVRSCANX", "OVRSCANY"))


def test_good_quadrant_values() -> None:
    qh = QuadrantHeader.from_header(GOOD_QUADRANT)
    assert qh.problems == () and qh.gain_e_per_adu == 3.4 and qh.saturate_adu == 61000
    # missing geometry keywords are the checked nominal defaults, not problems
    qh = QuadrantHeader.from_header({k: v for k, v in GOOD_QUADRANT.items() if "SCAN" not in k})
    assert qh.problems == () and qh.prescan_x is None


# -- end to end: simulate, rewrite the keyword, ingest, run -------------------------------


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> dict[str, Path]:
    """One small science frame and one bias frame, never modified (tests copy them)."""
    out = tmp_path_factory.mktemp("frames")
    cfg = SimConfig(geometry="small")
    science = simulate_frame(out, "science", seed=1101, date_obs=T0, config=cfg, obs_id=2611)
    bias = simulate_frame(out, "bias", seed=1102, date_obs=T0.replace(hour=6), config=cfg)
    return {"science": science.path, "bias": bias.path}


def _edited(src: Path, folder: Path, keyword: str, value=None, *, extname=None, delete=False):
    """A copy of `src` in `folder` with `keyword` set to `value` (or deleted)."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / src.name
    shutil.copyfile(src, dst)
    where = {"extname": extname} if extname else {"ext": 0}
    if delete:
        fits.delval(dst, keyword, **where)
    else:
        fits.setval(dst, keyword, value=value, **where)
    return dst


def _settings(tmp: Path) -> Settings:
    return Settings(
        data_root=tmp / "data",
        database_url=f"sqlite:///{tmp / 'data' / 'viskom.db'}",
        gaia={"online": False},
        goes={"online": False},
    )


def _ingest_one(tmp: Path, path: Path) -> tuple[Store, Settings, Exposure]:
    settings = _settings(tmp)
    store = Store(settings.db_url)
    report = ingest(store, [path])
    assert not report.invalid, report.invalid
    (exposure,) = store.list_exposures()
    assert exposure.state == "registered"  # a bad value is a warning, not an invalid file
    return store, settings, exposure


def _warnings(exposure: Exposure) -> list[HeaderProblem]:
    return [HeaderProblem.from_dict(w) for w in exposure.header_warnings or []]


def _run(store: Store, settings: Settings, *stages) -> dict[str, StageRun]:
    run_pipeline(store, settings, SerialExecutor(), stages=stages, workers=1)
    return {stage: r for (_, stage), r in store.stage_runs().items()}


def _pretend_psf_ran(store: Store, exposure: Exposure) -> None:
    """The gaia stage needs psf: record it as done, so that only gaia runs."""
    store.record_stage_run(
        StageRun(exposure.id, "psf", PsfMoments.version, "-", "test", "ok", started_at=T0)
    )


@pytest.mark.parametrize(
    ("keyword", "value", "text", "stage"),
    [
        ("EXPTIME", "abc", "EXPTIME = 'abc' is not a number", "space_weather"),
        ("EXPTIME", -5.0, "EXPTIME = -5.0 is outside [0, 100000) s", "space_weather"),
        ("EXPTIME", None, "EXPTIME is missing", "space_weather"),
        ("DATE-OBS", "yesterday", "DATE-OBS = 'yesterday' is not an ISO date", "space_weather"),
        ("RA", 400.0, "RA = 400.0 is outside [0, 360] deg", "gaia"),
        ("DEC", -95.0, "DEC = -95.0 is outside [-90, 90] deg", "gaia"),
    ],
)
def test_primary_keyword_needed_by_a_stage(frames, tmp_path, keyword, value, text, stage) -> None:
    path = _edited(frames["science"], tmp_path / "raw", keyword, value, delete=value is None)
    store, settings, exposure = _ingest_one(tmp_path, path)
    with store:
        (problem,) = _warnings(exposure)
        assert problem.describe().startswith(text) and problem.extname is None
        # the value is not used: NULL, never a default (DATE-OBS: the file name's timestamp)
        column = {"EXPTIME": "exptime", "RA": "ra", "DEC": "dec"}.get(keyword)
        if column:
            assert getattr(exposure, column) is None
        else:
            assert exposure.date_obs == T0  # from EUC_LE1_VIS-..._20240713T050000...
        if stage == "gaia":
            _pretend_psf_ran(store, exposure)
            runs = _run(store, settings, GaiaPhotometry())
        else:
            runs = _run(store, settings, SpaceWeather())
        assert runs[stage].status == "failed"
        assert runs[stage].error.startswith(text)
        assert runs[stage].error.endswith(f"(primary header): needed by {stage}")
        assert store.metrics(exposures=[exposure.name]) == []


@pytest.mark.parametrize(
    ("keyword", "value", "text"),
    [
        ("MJD-OBS", "soon", "MJD-OBS = 'soon' is not a number"),
        ("PA", "abc", "PA = 'abc' is not a number"),
        ("IMG_CAT", 7, "IMG_CAT = 7 is not a string"),
        ("IMG_T2", 42, "IMG_T2 = 42 is not a string"),
    ],
)
def test_primary_keyword_no_stage_needs(frames, tmp_path, keyword, value, text) -> None:
    """Recorded and not used; no stage fails for it (a bad PA: gaia solves blind)."""
    path = _edited(frames["science"], tmp_path / "raw", keyword, value)
    store, settings, exposure = _ingest_one(tmp_path, path)
    with store:
        (problem,) = _warnings(exposure)
        assert problem.describe() == f"{text} (primary header)"
        assert exposure.frame_type == "SCIENCE"  # IMG_T1 = SURVEY still says so
        column = {"MJD-OBS": "mjd_obs", "PA": "pa", "IMG_CAT": "img_cat", "IMG_T2": "img_t2"}
        assert getattr(exposure, column[keyword]) is None
        with Le1Frame(path) as frame:
            for stage in STAGES:
                assert frame.primary.blocking_problem(stage.header_keywords) is None, stage.name
        _pretend_psf_ran(store, exposure)
        runs = _run(store, settings, GaiaPhotometry())
        assert "needed by" not in (runs["gaia"].error or "")  # gaia ran (and found no stars)


def test_img_t1_not_a_string_is_unknown_type(frames, tmp_path) -> None:
    path = _edited(frames["science"], tmp_path / "raw", "IMG_T1", 42)
    store, _, exposure = _ingest_one(tmp_path, path)
    with store:
        assert [p.describe() for p in _warnings(exposure)] == [
            "IMG_T1 = 42 is not a string (primary header)"
        ]
        assert exposure.frame_type == "UNKNOWN" and exposure.img_t1 is None


def test_missing_exptime_on_a_bias_is_fine(frames, tmp_path) -> None:
    path = _edited(frames["bias"], tmp_path / "raw", "EXPTIME", delete=True)
    store, settings, exposure = _ingest_one(tmp_path, path)
    with store:
        assert exposure.frame_type == "BIAS" and exposure.header_warnings is None
        assert _run(store, settings, DetectorHealth())["detector_health"].status == "ok"


def _quadrant_metrics(store: Store, exposure: Exposure, unit: str = QUAD) -> dict[str, float]:
    return {m.metric: m.value for m in store.metrics(exposures=[exposure.name], units=[unit])}


def _outcomes(store: Store, stage: str) -> dict[str, tuple[str, str]]:
    return {o.unit: (o.code, o.message) for o in store.quality_outcomes(stages=[stage])}


@pytest.mark.parametrize(
    ("value", "text"),
    [("abc", "GAIN = 'abc' is not a number"), (None, "GAIN is missing")],
)
def test_gain(frames, tmp_path, value, text) -> None:
    """Detector health keeps the quadrant's ADU metrics and drops those in electrons;
    the catalogue leaves the quadrant out (its flux errors need the gain)."""
    path = _edited(frames["science"], tmp_path / "raw", "GAIN", value, extname=QUAD,
                   delete=value is None)  # fmt: skip
    store, settings, exposure = _ingest_one(tmp_path, path)
    with store:
        (problem,) = _warnings(exposure)
        assert problem.describe() == f"{text} (extension {QUAD})"
        with Le1Frame(path) as frame:
            assert frame.quadrant_header(QUAD).gain_e_per_adu is None
            assert frame.quadrant_header("2-5.E").gain_e_per_adu is not None
        runs = _run(store, settings, DetectorHealth(), Catalogue())
        assert runs["detector_health"].status == runs["catalogue"].status == "ok"
        mine = _quadrant_metrics(store, exposure)
        assert "read_noise_adu" in mine and "read_noise_e" not in mine
        assert "n_sources" not in mine
        assert "read_noise_e" in _quadrant_metrics(store, exposure, "2-5.E")
        for stage, what in (("detector_health", "read_noise_e not measured"),
                            ("catalogue", "quadrant not measured")):  # fmt: skip
            code, message = _outcomes(store, stage)[QUAD]
            assert code == "bad_header_value"
            assert message == f"{text} (extension {QUAD}): {what}"


def test_rdnoise(frames, tmp_path) -> None:
    """No monitor uses RDNOISE: the warning is recorded, every stage measures."""
    path = _edited(frames["science"], tmp_path / "raw", "RDNOISE", -3.0, extname=QUAD)
    store, settings, exposure = _ingest_one(tmp_path, path)
    with store:
        assert [p.describe() for p in _warnings(exposure)] == [
            f"RDNOISE = -3.0 is outside [0, 100] e- (extension {QUAD})"
        ]
        runs = _run(store, settings, DetectorHealth())
        assert runs["detector_health"].status == "ok"
        assert "read_noise_e" in _quadrant_metrics(store, exposure)
        assert store.quality_outcomes() == []


def test_saturate(frames, tmp_path) -> None:
    path = _edited(frames["science"], tmp_path / "raw", "SATURATE", 70000, extname=QUAD)
    store, settings, exposure = _ingest_one(tmp_path, path)
    with store:
        text = f"SATURATE = 70000 is outside (0, 65535] ADU (extension {QUAD})"
        assert [p.describe() for p in _warnings(exposure)] == [text]
        runs = _run(store, settings, DetectorHealth())
        assert runs["detector_health"].status == "ok"
        mine = _quadrant_metrics(store, exposure)
        assert "saturated_pixels" not in mine and "hot_pixels" in mine
        assert _outcomes(store, "detector_health")[QUAD] == (
            "bad_header_value",
            f"{text}: saturated_pixels not measured",
        )


@pytest.mark.parametrize(
    ("keyword", "value", "text"),
    [
        ("PRESCANX", "abc", "PRESCANX = 'abc' is not an integer"),
        ("PRESCANX", 5000, "PRESCANX = 5000 is outside [0, 336)"),
        ("OVRSCANX", 2.5, "OVRSCANX = 2.5 is not an integer"),
        ("OVRSCANY", -1, "OVRSCANY = -1 is outside [0, 276)"),
    ],
)
def test_geometry_keyword(frames, tmp_path, keyword, value, text) -> None:
    """The quadrant's regions are unknown: it is not read with default widths, the frame's
    other quadrants are measured."""
    path = _edited(frames["science"], tmp_path / "raw", keyword, value, extname=QUAD)
    store, settings, exposure = _ingest_one(tmp_path, path)
    with store:
        assert [p.describe() for p in _warnings(exposure)] == [f"{text} (extension {QUAD})"]
        with Le1Frame(path) as frame:
            with pytest.raises(FrameError, match=r"regions are unknown"):
                frame.quadrant(QUAD)
            assert frame.quadrant("2-5.E").data.size
        runs = _run(store, settings, DetectorHealth())
        assert runs["detector_health"].status == "ok"
        assert _quadrant_metrics(store, exposure) == {}
        assert "bias_prescan_adu" in _quadrant_metrics(store, exposure, "2-5.E")
        code, message = _outcomes(store, "detector_health")[QUAD]
        assert code == "bad_header_value" and message.startswith(text)


def test_exptime_abc_end_to_end(frames, tmp_path, monkeypatch) -> None:
    """The issue's case: EXPTIME = 'abc' on a science frame. The events stage fails with the
    reason and stores no cosmic-ray rate (it used to report 16x the true rate)."""
    if "EXPTIME" not in Events.header_keywords:  # until stages/events.py declares it
        monkeypatch.setattr(Events, "header_keywords", ("EXPTIME",))
    path = _edited(frames["science"], tmp_path / "raw", "EXPTIME", "abc")
    store, settings, exposure = _ingest_one(tmp_path, path)
    with store:
        assert exposure.frame_type == "SCIENCE" and exposure.exptime is None
        runs = _run(store, settings, Catalogue(), Events())
        assert runs["catalogue"].status == "ok"
        assert runs["events"].status == "failed"
        assert runs["events"].error == (
            "EXPTIME = 'abc' is not a number (primary header): needed by events"
        )
        assert store.metrics(metrics=["cr_hits_per_cm2_s"]) == []
        assert store.metrics(metrics=["cr_hits"]) == []


def test_stages_declare_the_keywords_they_need() -> None:
    """Every stage that scales by the exposure time or places the exposure in time says so;
    the PSF stage's adaptive locus needs no exposure time (VISQL's chimney does, and checks)."""
    assert set(GaiaPhotometry.header_keywords) == {"DATE-OBS", "EXPTIME", "RA", "DEC"}
    assert set(SpaceWeather.header_keywords) == {"DATE-OBS", "EXPTIME"}
    assert "EXPTIME" in Events.header_keywords
    assert "EXPTIME" not in PsfMoments.header_keywords


def test_cli_prints_the_warnings(frames, tmp_path, monkeypatch) -> None:
    """`viskom ingest` and `viskom status` (and --json) show the warnings."""
    from viskom.cli import app

    runner = CliRunner()
    for key in ("VISKOM_CONFIG", "VISKOM_DATABASE_URL", "VISKOM_WORKERS", "VISKOM_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    assert runner.invoke(app, ["init", str(tmp_path / "proj")]).exit_code == 0
    monkeypatch.chdir(tmp_path / "proj")
    raw = tmp_path / "raw"
    _edited(frames["science"], raw, "EXPTIME", "abc")
    fits.setval(raw / frames["science"].name, "GAIN", value=0.0, extname="1-1.E")
    fits.setval(raw / frames["science"].name, "GAIN", value=0.0, extname="1-1.F")
    result = runner.invoke(app, ["ingest", str(raw)])
    assert result.exit_code == 0, result.output
    assert "1 with header warnings" in result.output
    assert "EXPTIME = 'abc' is not a number (primary header)" in result.output
    assert "GAIN = 0.0 is outside [0.5, 20] e-/ADU (2 extensions: 1-1.E, 1-1.F)" in result.output
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "header" in result.output and "EXPTIME = 'abc' is not a number" in result.output
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)["header_warnings"]
    assert {"keyword": "EXPTIME", "extname": None, "value": "'abc'",
            "reason": "is not a number"} in entry["warnings"]  # fmt: skip
    # a second ingest changes nothing and still says so
    result = runner.invoke(app, ["ingest", str(raw)])
    assert "0 new, 0 updated, 1 unchanged" in result.output
    assert "EXPTIME = 'abc'" in result.output


def test_exposures_checked_by_older_code_are_read_again(frames, tmp_path) -> None:
    """A store filled before the checks existed: the next ingest re-reads those files."""
    path = _edited(frames["science"], tmp_path / "raw", "EXPTIME", "abc")
    store, _, exposure = _ingest_one(tmp_path, path)
    with store:
        old_header = {k: v for k, v in exposure.header.items() if k != "_header_check"}
        from viskom.store import ExposureRecord

        fields = {k: getattr(exposure, k) for k in ExposureRecord.__dataclass_fields__}
        store.register_exposure(
            replace(ExposureRecord(**fields), header=old_header, header_warnings=None)
        )
        assert store.get_exposure(exposure.name).header_warnings is None
        report = ingest(store, [path])
        assert report.updated == [exposure.name]
        assert _warnings(store.get_exposure(exposure.name))[0].keyword == "EXPTIME"
