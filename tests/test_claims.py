"""Claims, provenance and reprocessing: many runs on one store, kill -9, what re-runs.

The store-level tests run on SQLite and PostgreSQL (the `store_url` fixture). The concurrent
runs are real `viskom` processes on small simulated frames; the reference is one serial run
of the same frames in another store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest

import viskom.pipeline.worker as worker_module
from viskom.config import Settings, load_settings, write_default_config
from viskom.pipeline.executors import SerialExecutor
from viskom.pipeline.failures import describe_failure, failure_class, short_reason
from viskom.pipeline.register import ingest
from viskom.pipeline.runner import explain, plan, run_pipeline
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.stages import STAGES, Stage, StageResult
from viskom.store import Store
from viskom.store.claims import ClaimRequest

T0 = datetime(2024, 7, 14, 2, 0, 0, tzinfo=UTC)
SMALL = SimConfig(geometry="small")


# -- the store's claims ---------------------------------------------------------------------


def test_one_owner_at_a_time_and_leases_run_out(store_url) -> None:
    with Store(store_url) as store:
        a, b = ClaimRequest("unit:a", "s"), ClaimRequest("unit:b", "s")
        assert store.claim([a, b], "owner-1", lease_s=60) == ["unit:a", "unit:b"]
        assert store.claim([a, b], "owner-2", lease_s=60) == []  # held, lease running
        assert store.claim([a], "owner-1", lease_s=60) == ["unit:a"]  # its own: taken back
        assert store.release_claims("owner-1", ["unit:a"]) == 1
        assert store.claim([a, b], "owner-2", lease_s=60) == ["unit:a"]
        # owner-1 stops beating (killed): once its lease has run out, b is free
        assert store.claim([b], "owner-1", lease_s=1) == ["unit:b"]
        assert store.claim([b], "owner-2", lease_s=60) == []
        time.sleep(1.3)
        assert store.claim([b], "owner-2", lease_s=60) == ["unit:b"]
        held = {c.key: c for c in store.held_claims()}
        assert held["unit:b"].owner == "owner-2" and held["unit:b"].pid == os.getpid()
        before = held["unit:b"].expires_at
        time.sleep(0.05)
        assert store.renew_claims("owner-2", lease_s=600) == 2
        assert store.held_claims()[0].expires_at > before
        assert store.release_claims("owner-2") == 2 and store.held_claims() == []


def test_claims_on_postgres_skip_rows_another_transaction_locks(store_url) -> None:
    """SELECT ... FOR UPDATE SKIP LOCKED: a unit locked by a claim in progress is skipped
    at once (no waiting), the other one is granted."""
    from sqlalchemy import create_engine, text

    if not store_url.startswith("postgresql"):
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite's BEGIN IMMEDIATE is tested above")
    pg_url = store_url
    with Store(pg_url) as store:
        store.claim([ClaimRequest("lock:a", "s"), ClaimRequest("lock:b", "s")], "x", lease_s=1)
        store.release_claims("x")
        other = create_engine(pg_url)
        with other.connect() as conn, conn.begin():
            conn.execute(text("SELECT key FROM claims WHERE key = 'lock:a' FOR UPDATE"))
            t0 = time.monotonic()
            got = store.claim(
                [ClaimRequest("lock:a", "s"), ClaimRequest("lock:b", "s")], "y", lease_s=60
            )
            assert got == ["lock:b"] and time.monotonic() - t0 < 5
        other.dispose()
        assert store.claim([ClaimRequest("lock:a", "s")], "y", lease_s=60) == ["lock:a"]
        store.release_claims("y")


def test_a_unit_recorded_since_the_plan_is_not_claimed(store_url, dark_frames) -> None:
    """The planner saw no run; another run records one meanwhile: the claim is refused by
    the stored row itself (no clocks). A lapsed lease refuses the record instead."""
    from viskom.store import StageRun
    from viskom.store.claims import LeaseLost, exposure_key, run_mark

    with Store(store_url) as store:
        ingest(store, dark_frames[:1])
        (exp,) = store.list_exposures()
        key = exposure_key(exp.id, "events")
        seen = run_mark(store.stage_runs().get((exp.id, "events")))
        assert seen is None
        request = ClaimRequest(key, "events", exp.id, seen)
        assert store.claim([request], "other", lease_s=60, check_seen=True) == [key]
        run = StageRun(exp.id, "events", "1", "h" * 16, "0", "ok")
        store.record_stage_run(run, claim=(key, "other"))
        store.release_claims("other")
        assert store.claim([request], "late", lease_s=60, check_seen=True) == []
        fresh = ClaimRequest(
            key, "events", exp.id, run_mark(store.stage_runs()[(exp.id, "events")])
        )
        assert store.claim([fresh], "late", lease_s=60, check_seen=True) == [key]
        with pytest.raises(LeaseLost):  # "other" lost it: its second result is refused
            store.record_stage_run(replace(run, status="empty"), claim=(key, "other"))
        assert store.stage_runs()[(exp.id, "events")].status == "ok"
        assert len(store.stage_run_history(exp.id, "events")) == 1
        store.release_claims("late")


# -- failures: transient or permanent, one short reason -------------------------------------


def test_failure_classes_and_short_reasons() -> None:
    assert failure_class(TimeoutError("read timed out")) == "transient"
    assert failure_class(OSError(28, "No space left on device")) == "transient"
    assert failure_class(ValueError("EXPTIME is not a number")) == "permanent"
    try:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError as exc:
            raise RuntimeError("Gaia service down") from exc
    except RuntimeError as exc:
        assert failure_class(exc) == "transient"  # what caused it decides
    dns = "vizier: HTTPSConnectionPool: Name or service not known; 3 attempt(s)"
    text = "GaiaUnavailable: Gaia DR3 cone at (10, 20): " + "; ".join(
        f"tile {i}: {dns}" for i in range(40)
    )
    assert len(text) > 2000
    reason = short_reason(text)
    assert len(reason) <= 240 and "(x40)" in reason and reason.count("Name or service") == 1
    cls, why = describe_failure(ConnectionError("a\nb\nc"), "x.py:3")
    assert (cls, why) == ("transient", "ConnectionError: a (at x.py:3)")


# -- reprocessing decided by what a result depends on ---------------------------------------


@pytest.fixture(scope="module")
def dark_frames(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("darks")
    return [
        simulate_frame(
            out, "dark", seed=70 + i, date_obs=T0 + timedelta(hours=i), config=SMALL
        ).path
        for i in range(3)
    ]


def _settings(root: Path, url: str, **over) -> Settings:
    base = {"data_root": root, "database_url": url, "workers": 1, "executor": "serial"}
    base["events"] = {"xray_baseline_min_frames": 100, **over.pop("events", {})}
    return Settings(**{**base, **over})


def _pending(store: Store, settings: Settings) -> Counter:
    tasks, _skipped, _blocked = plan(store, settings, workers=1)
    return Counter(name for t in tasks for name in t.stages)


@pytest.fixture
def measured(dark_frames, tmp_path):
    """Two darks measured by one run: (store, settings, root, url)."""
    url = f"sqlite:///{tmp_path / 'data' / 'viskom.db'}"
    settings = _settings(tmp_path / "data", url)
    with Store(url) as store:
        ingest(store, dark_frames[:2])
        first = run_pipeline(store, settings, SerialExecutor(), workers=1)
        # no GOES data in this offline store: a transient failure, retried in 5 min
        assert {s for _e, s, _w in first.failures} <= {"space_weather"}, first.failures
        assert _pending(store, settings) == Counter()
        yield store, settings, tmp_path / "data", url


def _runs_per_stage(store: Store, exposure_id: int) -> Counter:
    return Counter(r.stage for r in store.stage_run_history(exposure_id))


def test_operational_settings_rerun_nothing(measured, tmp_path) -> None:
    store, _, root, url = measured
    moved = _settings(
        root, url, workers=2, executor="process",
        gaia={"online": True, "timeout_s": 5, "cache_dir": tmp_path / "elsewhere"},
        goes={"online": True, "timeout_s": 3, "cache_dir": tmp_path / "g"},
        run={"lease_s": 10, "retry_base_s": 7200, "claim_wait_s": 5},
    )  # fmt: skip
    assert _pending(store, moved) == Counter()
    summary = run_pipeline(store, moved, SerialExecutor(), workers=1)
    assert (summary.exposures, summary.stages_ok, summary.skipped) == (0, 0, 14)


def test_a_science_setting_reruns_its_stage_and_its_readers(measured) -> None:
    store, _, root, url = measured
    stricter = _settings(root, url, events={"seed_sigma": 6.0})
    # and images, whose densest-cosmic-ray zoom reads the events stage's hits
    assert _pending(store, stricter) == Counter({"events": 2, "event_plots": 2, "images": 2})
    (exp, _) = store.list_exposures()
    why = {s.stage: s for s in explain(store, stricter, exp.name)}
    assert why["events"].state == "pending"
    assert "[events] seed_sigma 5.0 -> 6.0" in why["events"].reason
    assert "stage events it reads changed" in why["event_plots"].reason
    assert why["detector_health"].state == "done"
    assert "up to date" in why["detector_health"].reason
    summary = run_pipeline(store, stricter, SerialExecutor(), workers=1)
    assert summary.stages_failed == 0 and summary.stages_ok == 6, summary.failures
    for e in store.list_exposures():
        assert _runs_per_stage(store, e.id) == Counter(
            {"detector_health": 1, "health_plots": 1, "catalogue": 1, "space_weather": 1,
             "events": 2, "event_plots": 2, "images": 2}
        )  # fmt: skip
        last = store.stage_run_history(e.id, "events")[-1]
        assert last.config["config"]["seed_sigma"] == 6.0
    assert _pending(store, stricter) == Counter()


def test_a_new_hot_pixel_map_reruns_the_events_that_used_the_old_one(measured, dark_frames) -> None:
    store, settings, _root, _url = measured
    old = store.list_exposures()
    ingest(store, dark_frames[2:])  # a third dark: the map is built again
    second = run_pipeline(store, settings, SerialExecutor(), workers=1)
    assert {s for _e, s, _w in second.failures} <= {"space_weather"}, second.failures
    for e in old:
        history = store.stage_run_history(e.id)
        events = [r for r in history if r.stage == "events"]
        assert len(events) == 2
        assert events[0].calibrations["hot_pixels"] != events[1].calibrations["hot_pixels"]
        assert _runs_per_stage(store, e.id)["detector_health"] == 1
        assert _runs_per_stage(store, e.id)["catalogue"] == 1
        last = events[-1]  # full provenance of each run
        assert last.host and last.pid and last.raw_checksum == e.checksum
        assert last.config["config"]["seed_sigma"] == 5.0 and last.finished_at
        assert last.stage_version and last.software_version and last.duration_s is not None
    (newest,) = [e for e in store.list_exposures() if e.id not in {o.id for o in old}]
    assert len(store.stage_run_history(newest.id, "events")) == 1
    assert _pending(store, settings) == Counter()


class Flaky(Stage):
    """A stage that fails the way it is told (transient or permanent)."""

    name = "flaky"
    version = "1"
    frame_types = frozenset({"DARK"})
    error: ClassVar[type[Exception] | None] = ConnectionError

    def run(self, frame, inputs, config) -> StageResult:
        if Flaky.error is not None:
            raise Flaky.error("service unreachable" if Flaky.error is ConnectionError else "bad")
        return StageResult()


def test_transient_failures_retry_with_backoff_permanent_ones_wait(
    dark_frames, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(worker_module, "get_stage", lambda name: Flaky())
    url = f"sqlite:///{tmp_path / 'viskom.db'}"
    slow = _settings(tmp_path / "data", url, run={"retry_base_s": 3600})
    quick = _settings(tmp_path / "data", url, run={"retry_base_s": 0})
    with Store(url) as store:
        ingest(store, dark_frames[:1])
        (exp,) = store.list_exposures()
        run_pipeline(store, slow, SerialExecutor(), stages=(Flaky(),), workers=1)
        run = store.stage_runs()[(exp.id, "flaky")]
        assert (run.status, run.failure_class, run.attempts) == ("failed", "transient", 1)
        assert run.retry_after > datetime.now(UTC) + timedelta(minutes=59)
        tasks, *_ = plan(store, slow, stages=(Flaky(),))
        assert tasks == []  # backing off
        summary = run_pipeline(store, quick, SerialExecutor(), stages=(Flaky(),), workers=1)
        assert summary.stages_failed == 1  # the backoff has passed: tried again by itself
        assert store.stage_runs()[(exp.id, "flaky")].attempts == 2
        monkeypatch.setattr(Flaky, "error", ValueError)
        run_pipeline(store, quick, SerialExecutor(), stages=(Flaky(),), workers=1)
        run = store.stage_runs()[(exp.id, "flaky")]
        assert (run.failure_class, run.attempts) == ("permanent", 3)
        tasks, *_ = plan(store, quick, stages=(Flaky(),))
        assert tasks == []  # permanent: waits for a change (or --retry-failed)
        tasks, *_ = plan(store, quick, stages=(Flaky(),), retry_failed=True)
        assert [t.stages for t in tasks] == [("flaky",)]
        assert len(store.stage_run_history(exp.id, "flaky")) == 3


# -- many processes on one store ------------------------------------------------------------


def _viskom() -> list[str]:
    script = Path(sys.executable).with_name("viskom")
    return [str(script)] if script.exists() else [sys.executable, "-m", "viskom"]


def _env(db_url: str | None, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("VISKOM_") or k.startswith(("VISKOM_TEST_", "VISKOM_REQUIRE_"))
    }  # fmt: skip
    env.update(
        VISKOM_GAIA__ONLINE="false", VISKOM_GOES__ONLINE="false",
        VISKOM_EVENTS__XRAY_BASELINE_MIN_FRAMES="100", **extra,
    )  # fmt: skip
    if db_url:
        env["VISKOM_DATABASE_URL"] = db_url
    return env


def _project(tmp_path: Path, frames: list[Path], name: str) -> Path:
    cfg = write_default_config(tmp_path / name)
    raw = load_settings(cfg).raw_path
    raw.mkdir(parents=True, exist_ok=True)
    for f in frames:
        (raw / f.name).write_bytes(f.read_bytes())
        os.utime(raw / f.name, (time.time() - 600, time.time() - 600))
    return cfg


def _snapshot(url: str) -> tuple[dict, Counter]:
    with Store(url) as store:
        metrics = {(m.exposure, m.unit, m.metric): m.value for m in store.metrics()}
        names = {e.id: e.name for e in store.list_exposures()}
        history = Counter()
        for eid, name in names.items():
            for r in store.stage_run_history(eid):
                history[(name, r.stage)] += 1
        assert store.held_claims() == []  # nothing stays claimed
    return metrics, history


@pytest.fixture(scope="module")
def mixed_frames(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("mixed")
    kinds = ("dark", "dark", "bias", "dark", "bias")
    return [
        simulate_frame(
            out, k, seed=300 + i, date_obs=T0 + timedelta(minutes=9 * i), config=SMALL
        ).path
        for i, k in enumerate(kinds)
    ]


@pytest.mark.slow
def test_two_runs_and_a_watch_share_the_work(store_url, mixed_frames, tmp_path) -> None:
    """SQLite: the project's own database file; PostgreSQL: a fresh schema."""
    ref_cfg = _project(tmp_path, mixed_frames, "reference")
    subprocess.run([*_viskom(), "ingest", str(load_settings(ref_cfg).raw_path), "--config",
                    str(ref_cfg)], check=True, env=_env(None), capture_output=True)  # fmt: skip
    subprocess.run([*_viskom(), "run", "--config", str(ref_cfg), "--executor", "serial"],
                   check=True, env=_env(None), capture_output=True)  # fmt: skip
    reference_metrics, reference_history = _snapshot(load_settings(ref_cfg).db_url)

    cfg = _project(tmp_path, mixed_frames, "shared")
    db = store_url if store_url.startswith("postgresql") else None
    env = _env(db)
    url = db or load_settings(cfg).db_url
    raw = str(load_settings(cfg).raw_path)
    subprocess.run([*_viskom(), "ingest", raw, "--config", str(cfg)], check=True, env=env,
                   capture_output=True)  # fmt: skip
    procs = [
        subprocess.Popen([*_viskom(), "run", "--config", str(cfg), "--workers", "1"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        subprocess.Popen([*_viskom(), "run", "--config", str(cfg), "--executor", "serial"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        subprocess.Popen([*_viskom(), "watch", "--once", "--config", str(cfg)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
    ]  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    metrics, history = _snapshot(url)
    assert history == reference_history, outputs  # every (exposure, stage) exactly once
    assert set(history.values()) == {1} and len(history) == 5 * 5 + 2  # + images, health
    assert metrics == reference_metrics and len(metrics) > 1000


# -- kill -9 in the middle of a stage -------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.slow
def test_kill_9_mid_stage_then_a_second_run_completes(mixed_frames, tmp_path) -> None:
    cfg = _project(tmp_path, mixed_frames, "killed")
    settings = load_settings(cfg)
    env = _env(None, VISKOM_RUN__LEASE_S="2")
    subprocess.run([*_viskom(), "ingest", str(settings.raw_path), "--config", str(cfg)],
                   check=True, env=env, capture_output=True)  # fmt: skip
    proc = subprocess.Popen(
        [*_viskom(), "run", "--config", str(cfg), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        with Store(settings.db_url) as store:
            deadline = time.monotonic() + 120
            while not any(c.key.startswith("exposure:") for c in store.held_claims()):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.02)
            workers = _children(proc.pid)
            assert workers, "the run has pool workers"
            # a half-written product, as a killed writer leaves it
            stale = settings.products_path / ".x.parquet.123.abcdef01.tmp"
            stale.parent.mkdir(parents=True, exist_ok=True)
            stale.write_bytes(b"half")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            deadline = time.monotonic() + 10
            while any(_alive(w) for w in workers):  # no orphans: they die with their parent
                assert time.monotonic() < deadline, [w for w in workers if _alive(w)]
                time.sleep(0.05)
            assert store.held_claims(), "the killed run left claims behind"
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(2.5)  # the killed run's leases run out
    os.utime(stale, (time.time() - 60, time.time() - 60))
    done = subprocess.run([*_viskom(), "run", "--config", str(cfg), "--workers", "2"], env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    with Store(settings.db_url) as store:
        assert store.held_claims() == []
        runs = store.stage_runs()
        assert len(runs) == 5 * 5 + 2
        failed = {s for (_e, s), r in runs.items() if r.status == "failed"}
        assert failed <= {"space_weather"}  # no GOES data offline: transient, retried later
        assert _pending(store, settings) == Counter()
        recorded = {p.path for p in store.products()}
    files = {
        p.relative_to(settings.data_path).as_posix()
        for p in settings.products_path.rglob("*") if p.is_file()
    }  # fmt: skip
    assert not [f for f in files if ".tmp" in f], files  # no partial product left
    assert {f for f in files if "/calibration/" not in f} <= recorded | {
        f for f in files if f.endswith((".npz", ".txt", ".json")) and "calibration" in f
    }
    for path in recorded:  # every recorded product is there, whole
        assert (settings.data_path / path).stat().st_size > 0


def test_status_why_needs_a_known_exposure(tmp_path) -> None:
    settings = _settings(tmp_path / "data", f"sqlite:///{tmp_path / 'v.db'}")
    with Store(settings.db_url) as store, pytest.raises(KeyError):
        explain(store, settings, "EUC_NOT_THERE")
    assert {s.name for s in STAGES} >= {"events", "event_plots"}


def test_status_reads_a_store_this_user_cannot_write(mixed_frames, tmp_path) -> None:
    """`viskom status` as another user (nobody) on a data folder owned by root: it reads,
    says the store is read-only, and changes nothing."""
    import shutil

    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run status as another user")
    cfg = _project(tmp_path, mixed_frames[:1], "readonly")
    settings = load_settings(cfg)
    subprocess.run([*_viskom(), "ingest", str(settings.raw_path), "--config", str(cfg)],
                   check=True, env=_env(None), capture_output=True)  # fmt: skip
    db = Path(settings.db_url.removeprefix("sqlite:///"))
    before = db.read_bytes()
    for folder in (tmp_path, *tmp_path.parents):
        if folder == Path(tempfile.gettempdir()) or folder == folder.parent:
            break
        folder.chmod(folder.stat().st_mode | 0o005)  # nobody may enter and read, not write
    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*as_nobody, *_viskom(), "--version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("this viskom install is not readable by another user")
    done = subprocess.run(
        [*as_nobody, *_viskom(), "status", "--config", str(cfg)],
        env={**_env(None), "HOME": "/tmp"}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "read-only" in done.stdout and "detector_health" in done.stdout
    assert db.read_bytes() == before
