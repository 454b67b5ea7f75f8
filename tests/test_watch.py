"""`viskom watch`: complete-file detection, the cycle (ingest + run), backoff, stopping.

Small simulated bias frames (one stage each, so that a measuring cycle takes seconds); the
store and the runner are the real ones. The cycle test runs on both database backends.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from viskom.cli import app
from viskom.config import load_settings, write_default_config
from viskom.le1.names import exposure_name
from viskom.pipeline import watch
from viskom.pipeline.watch import CycleReport, Watcher, file_is_complete, stop_on_signals
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.store import Store

T0 = datetime(2024, 7, 13, 4, 0, 0, tzinfo=UTC)
REFUSED_URL = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
OLD = time.time() - 1200  # older than the settle time, younger than give_up_s


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> dict[str, Path]:
    """Small bias frames: complete plain and gzipped, and the simulator's truncated ones."""
    out = tmp_path_factory.mktemp("frames")
    small, small_gz = SimConfig(geometry="small"), SimConfig(geometry="small", gzip=True)
    made = {
        "plain": simulate_frame(out / "plain", "bias", seed=11, date_obs=T0, config=small),
        "gz": simulate_frame(out / "gz", "bias", seed=12, date_obs=T0, config=small_gz),
        "plain_cut": simulate_frame(
            out / "cut", "bias", seed=13, date_obs=T0, config=small, defect="truncated"
        ),
        "gz_cut": simulate_frame(
            out / "gzcut", "bias", seed=14, date_obs=T0, config=small_gz, defect="truncated"
        ),
        "second": simulate_frame(
            out / "second", "bias", seed=15, date_obs=T0.replace(minute=5), obs_id=2371
        ),
    }
    return {k: v.path for k, v in made.items()}


def _write(path: Path, data: bytes, *, mtime: float | None = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _copy(src: Path, folder: Path, *, mtime: float | None = OLD) -> Path:
    return _write(folder / src.name, src.read_bytes(), mtime=mtime)


# -- file_is_complete ----------------------------------------------------------------------


def test_plain_fits_complete_and_cut(frames, tmp_path) -> None:
    full = frames["plain"].read_bytes()
    ok, reason = file_is_complete(frames["plain"])
    assert ok and "complete: 145 HDU(s)" in reason
    size = len(full)
    for cut in (1, 6, 100, 2879, 2880, 2880 * 5 + 17, size // 2, size - 2880, size - 1):
        ok, reason = file_is_complete(_write(tmp_path / f"c{cut}.fits", full[:cut]))
        assert not ok and "still arriving" in reason, (cut, reason)
    empty = _write(tmp_path / "empty.fits", b"")
    assert file_is_complete(empty) == (False, "empty (still arriving)")
    ok, reason = file_is_complete(frames["plain_cut"])  # the simulator's cut inside an HDU
    assert not ok and "HDU 143" in reason
    # a whole block of zeros after the last HDU: all declared data is there
    ok, reason = file_is_complete(_write(tmp_path / "zeros.fits", full + b"\0" * 2880))
    assert ok and "other bytes" in reason
    # the next extension's header has begun: still arriving
    partial = fits.Header([("XTENSION", "IMAGE"), ("BITPIX", 16)]).tostring()[:800]
    ok, reason = file_is_complete(_write(tmp_path / "next.fits", full + partial.encode()))
    assert not ok and "HDU 146: header incomplete" in reason
    # odd bytes after the end, not an extension: for ingest to judge
    ok, reason = file_is_complete(_write(tmp_path / "tail.fits", full + b"trailing junk"))
    assert ok and "left to ingest" in reason


def test_plain_bytes_are_left_to_ingest(tmp_path) -> None:
    for name, data in (("text.fits", b"hello world\n" * 1000), ("short.fit", b"hello")):
        ok, reason = file_is_complete(_write(tmp_path / name, data))
        assert ok and "not a FITS file" in reason, (name, reason)
    # the start of a primary header: it may still become a FITS file
    assert not file_is_complete(_write(tmp_path / "simple.fits", b"SIMPLE  ="))[0]


def test_fits_with_heap_groups_and_tile_compression(tmp_path) -> None:
    """PCOUNT (a binary table's heap, tile compression) counts in the data size."""
    col = fits.Column(name="v", format="PJ()", array=np.array([[1, 2, 3], [4]], dtype=object))
    hdus = fits.HDUList([
        fits.PrimaryHDU(),
        fits.ImageHDU(np.arange(15, dtype=np.int16).reshape(3, 5)),
        fits.BinTableHDU.from_columns([col]),
    ])  # fmt: skip
    path = tmp_path / "heap.fits"
    hdus.writeto(path)
    assert fits.getheader(path, 2)["PCOUNT"] > 0
    assert file_is_complete(path) == (True, f"complete: 3 HDU(s), {path.stat().st_size} bytes")
    data = path.read_bytes()
    table = fits.getheader(path, 2)
    heap_end = len(data) - (-(table["NAXIS1"] * table["NAXIS2"] + table["PCOUNT"]) % 2880)
    ok, reason = file_is_complete(_write(tmp_path / "nopad.fits", data[:heap_end]))
    assert ok and "without its padding" in reason
    assert not file_is_complete(_write(tmp_path / "noheap.fits", data[: heap_end - 1]))[0]

    fz = tmp_path / "tile.fits.fz"
    image = np.random.default_rng(1).integers(0, 1000, (64, 64)).astype(np.int32)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image)]).writeto(fz)
    assert file_is_complete(fz)[0]
    assert not file_is_complete(_write(tmp_path / "cut.fits.fz", fz.read_bytes()[:-100]))[0]

    groups = tmp_path / "groups.fits"
    gdata = fits.GroupData(np.zeros((4, 1, 3), np.float32), parnames=["a", "b"],
                           pardata=[np.zeros(4), np.zeros(4)], bitpix=-32)  # fmt: skip
    fits.GroupsHDU(gdata).writeto(groups)
    assert file_is_complete(groups)[0]
    assert not file_is_complete(_write(tmp_path / "g.fits", groups.read_bytes()[:2881]))[0]


def test_gzip_complete_cut_and_garbage(frames, tmp_path) -> None:
    full = frames["gz"].read_bytes()
    ok, reason = file_is_complete(frames["gz"])
    assert ok and f"{frames['plain'].stat().st_size} bytes" in reason
    for cut in (1, 2, 10, len(full) // 2, len(full) - 8, len(full) - 1):
        ok, reason = file_is_complete(_write(tmp_path / f"c{cut}.fits.gz", full[:cut]))
        assert not ok and "still arriving" in reason, (cut, reason)
    ok, reason = file_is_complete(frames["gz_cut"])  # flushed but never finished
    assert not ok and "unfinished" in reason
    assert file_is_complete(_write(tmp_path / "e.fits.gz", b""))[0] is False
    ok, reason = file_is_complete(_write(tmp_path / "plain.fits.gz", b"SIMPLE  = T" * 300))
    assert ok and "not a gzip stream" in reason
    bad_crc = bytearray(full)
    bad_crc[-8] ^= 0xFF  # the CRC-32 of the trailer
    ok, reason = file_is_complete(_write(tmp_path / "crc.fits.gz", bytes(bad_crc)))
    assert ok and "corrupt" in reason
    ok, reason = file_is_complete(
        _write(tmp_path / "two.fit.gz", gzip.compress(b"a" * 5000) + gzip.compress(b"b" * 7))
    )
    assert ok and "2 member(s), 5007 bytes" in reason
    assert file_is_complete(_write(tmp_path / "pad.fits.gz", full + b"\0" * 512))[0]
    ok, reason = file_is_complete(_write(tmp_path / "junk.fits.gz", full + b"junk"))
    assert ok and "trailing bytes" in reason


# -- the cycle -----------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A viskom.toml with its data root under tmp_path; serial, offline; returns a function
    giving its settings (the database URL as given, else the SQLite default)."""
    for key in list(os.environ):  # settings only: the test-server variables stay
        if key.startswith("VISKOM_") and not key.startswith(("VISKOM_TEST_", "VISKOM_REQUIRE_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("VISKOM_EXECUTOR", "serial")
    monkeypatch.setenv("VISKOM_WORKERS", "1")
    monkeypatch.setenv("VISKOM_GOES__ONLINE", "false")
    monkeypatch.setenv("VISKOM_GAIA__ONLINE", "false")
    cfg = write_default_config(tmp_path / "proj")

    def settings(db_url: str | None = None):
        if db_url:
            monkeypatch.setenv("VISKOM_DATABASE_URL", db_url)
        return load_settings(cfg)

    settings.config = cfg  # type: ignore[attr-defined]
    return settings


def test_cycle_ingests_and_measures(project, frames, store_url) -> None:
    settings = project(store_url)
    name = exposure_name(_copy(frames["plain"], settings.raw_path))
    _copy(frames["plain"], settings.raw_path / "notes")  # same name twice: one registered
    (settings.raw_path / "readme.txt").write_text("not a frame")
    w = Watcher(settings, interval_s=5)
    report = w.cycle()
    assert report.ok, report.error
    assert report.new == [name] and report.files == 2 and not report.arriving
    assert report.run.summary.stages_ok == 3 and report.run.summary.stages_failed == 0
    assert "cycle 1: 1 new frame, 3 stage runs ok, 0 failed, 0 up to date" in report.line()
    with Store(store_url) as store:
        rows = store.metrics(exposures=[name], metrics=["read_noise_e"], units=["FPA"])
        assert len(rows) == 1 and 3.0 < rows[0].value < 5.5
        assert store.get_exposure(name).state == "registered"
    assert w.delay_after(report) == 5
    assert report.run.periods.made and report.run.periods.months  # the frame's month
    again = w.cycle()
    assert again.ok and again.new == [] and again.known == 1
    assert again.run.summary.stages_ok == 0 and again.run.summary.skipped == 3
    # the loop knows its build saw the frame: the month is not made a second time
    assert again.run.periods.months == [] and again.run.periods.paths == []


def test_half_written_file_waits_for_its_end(project, frames, monkeypatch) -> None:
    settings = project()
    full = frames["plain"].read_bytes()
    target = settings.raw_path / frames["plain"].name
    name = exposure_name(target)
    _write(target, full[: len(full) // 2])  # an old mtime: only its end is missing
    w = Watcher(settings, interval_s=1, settle_s=10)
    first = w.cycle()
    assert first.ok and first.new == [] and len(first.arriving) == 1
    assert "still arriving" in first.arriving[0][1]
    assert "0 new frames (1 still arriving)" in first.line()
    with Store(settings.db_url) as store:
        assert store.get_exposure(name) is None
    _write(target, full, mtime=None)  # the copy finished just now: changed since the last look
    second = w.cycle()
    assert second.new == [] and second.arriving == [(str(target), "changed since the last look")]
    third = w.cycle()  # unchanged since the last look, and complete
    assert third.new == [name] and third.run.summary.stages_ok == 3
    with Store(settings.db_url) as store:
        assert store.get_exposure(name).state == "registered"

    # a complete file seen for the first time with a recent mtime waits for one more look
    fresh = _copy(frames["second"], settings.raw_path, mtime=None)
    calls = []
    real = watch.file_is_complete
    monkeypatch.setattr(watch, "file_is_complete", lambda p: calls.append(p) or real(p))
    fourth = w.cycle()
    assert fourth.new == [] and fourth.arriving[0][1] == "modified within the settle time"
    fifth = w.cycle()
    assert fifth.new == [exposure_name(fresh)]
    assert calls == [fresh]  # registered files are never looked inside again
    # nor by a new watcher (it asks the store)
    calls.clear()
    sixth = Watcher(settings, interval_s=1).cycle()
    assert sixth.ok and sixth.known == 2 and calls == []


def test_stalled_file_is_registered_as_invalid_after_give_up(project, frames) -> None:
    settings = project()
    path = _copy(frames["plain_cut"], settings.raw_path)  # mtime 20 min ago
    waiting = Watcher(settings, interval_s=1, give_up_s=7200).cycle()
    assert waiting.new == [] and len(waiting.arriving) == 1
    report = Watcher(settings, interval_s=1, give_up_s=600).cycle()
    assert report.new == [exposure_name(path)]
    assert len(report.invalid) == 1 and "truncated" in report.invalid[0][1]
    assert "1 invalid" in report.line()


def test_missing_raw_folder_is_logged_and_backs_off(project, frames, tmp_path, caplog) -> None:
    settings = project()
    assert not settings.raw_path.exists()
    caplog.set_level(logging.INFO, logger="viskom.watch")
    w = Watcher(settings, interval_s=2, max_backoff_s=7)
    report = w.run(once=True)
    assert report.ok and report.missing == [str(settings.raw_path)]
    assert report.run is not None  # the rest of the cycle ran
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("does not exist" in m for m in warnings)
    assert any("cycle 1:" in m and "missing folder" in m for m in warnings)
    assert w.failures == 1
    assert [w.delay_after(w.cycle()) for _ in range(3)] == [7, 7, 7]  # 2*2**2 = 8, capped
    # another watched folder with a frame: it is ingested, and no backoff
    extra = tmp_path / "incoming"
    _copy(frames["plain"], extra)
    w2 = Watcher(settings, paths=[extra], interval_s=2)
    report = w2.cycle()
    assert report.ok and len(report.new) == 1 and report.missing == [str(settings.raw_path)]
    assert w2.delay_after(report) == 2


def test_unreachable_database_fails_the_cycle_and_backs_off(project, caplog) -> None:
    settings = project(REFUSED_URL)
    settings.raw_path.mkdir(parents=True)
    caplog.set_level(logging.INFO, logger="viskom.watch")
    w = Watcher(settings, interval_s=2, max_backoff_s=10)
    report = w.run(once=True)  # returns, does not raise
    assert not report.ok and "OperationalError" in report.error
    assert "refused" in report.error.lower() and "\n" not in report.error
    failed = [r for r in caplog.records if "cycle 1 failed" in r.getMessage()]
    assert failed and failed[0].levelno == logging.WARNING
    assert [w.delay_after(w.cycle()) for _ in range(4)] == [8, 10, 10, 10]
    w.settings = project("sqlite:///" + str(settings.data_path / "viskom.db"))
    good = w.cycle()
    assert good.ok, good.error
    assert w.delay_after(good) == 2  # reset after a good cycle


def test_loop_backs_off_and_stops_at_once(project, caplog) -> None:
    settings = project(REFUSED_URL)
    caplog.set_level(logging.INFO, logger="viskom.watch")
    stop = threading.Event()
    w = Watcher(settings, interval_s=0.2, max_backoff_s=0.8)
    thread = threading.Thread(target=w.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while w.cycles < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    t_stop = time.monotonic()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - t_stop < 2
    lines = [r.getMessage() for r in caplog.records]
    failed = [r for r in caplog.records if "failed: OperationalError" in r.getMessage()]
    assert len(failed) >= 4 and all("(backoff)" in r.getMessage() for r in failed[:-1])
    # from one cycle's start to the next: 0.2 * 2, then 0.2 * 4 capped at 0.8 (the lower
    # bounds are the backoff; the upper ones leave room for a loaded machine). Each line is
    # logged when its cycle ends, after the cycle's own time ("(0.3 s)": the first one imports
    # the database driver): start to start is the gap between the lines + ta - tb.
    took = [float(re.search(r"\((\d+\.\d+) s\);", r.getMessage()).group(1)) for r in failed]
    pairs = zip(itertools.pairwise(failed), itertools.pairwise(took), strict=True)
    gaps = [b.created - a.created + ta - tb for (a, b), (ta, tb) in pairs]
    assert 0.3 < gaps[0] < 1.0 and 0.7 < gaps[1] < 1.6 and 0.7 < gaps[2] < 1.6, gaps
    assert lines[-1] == "stopped"


def test_stop_before_the_work_starts_nothing(project, frames) -> None:
    settings = project()
    _copy(frames["plain"], settings.raw_path)
    stop = threading.Event()
    stop.set()
    w = Watcher(settings, interval_s=1, stop_event=stop)
    report = w.cycle()
    assert report.ok and report.stopped and report.new == [] and report.run is None
    with Store(settings.db_url) as store:
        assert store.list_exposures() == []


def test_signals_set_the_flag_then_interrupt() -> None:
    stop = threading.Event()
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is before


def test_report_line_counts() -> None:
    r = CycleReport(number=3, seconds=4.21, new=["a", "b"], arriving=[("x", "why")])
    assert r.line() == "cycle 3: 2 new frames (1 still arriving), 4.2 s"
    assert CycleReport(number=4, error="OperationalError: down").line() == (
        "cycle 4 failed: OperationalError: down (0.0 s)"
    )


# -- the command ---------------------------------------------------------------------------


def test_once_exit_codes(project, frames) -> None:
    runner = CliRunner()
    settings = project()
    _copy(frames["plain"], settings.raw_path)
    result = runner.invoke(app, ["watch", "--once", "--config", str(project.config)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "INFO cycle 1: 1 new frame, 3 stage runs ok" in result.stderr
    project(REFUSED_URL)
    result = runner.invoke(app, ["watch", "--once", "--config", str(project.config)])
    assert result.exit_code == 1
    assert "WARNING cycle 1 failed: OperationalError" in result.stderr
    assert "refused" in result.stderr.lower()


def _viskom() -> list[str]:
    script = Path(sys.executable).with_name("viskom")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from viskom.cli import app; app()"]


def test_sigterm_stops_the_command_cleanly(project, tmp_path) -> None:
    settings = project()
    settings.raw_path.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "VISKOM_CONFIG"}
    log_file = tmp_path / "logs" / "watch.log"
    proc = subprocess.Popen(
        [*_viskom(), "watch", "--interval", "1", "--config", str(project.config),
         "--log-file", str(log_file)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + 60
        while not any("cycle 1:" in x for x in seen):
            assert time.monotonic() < deadline, seen
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                assert proc.poll() is None, seen
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 5
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.2)
    while not lines.empty():
        seen.append(lines.get())
    text = "".join(seen)
    assert "INFO SIGTERM: stopping" in text and text.rstrip().endswith("INFO stopped")
    logged = log_file.read_text()
    assert "cycle 1:" in logged and "stopped" in logged
    # the timestamp format: "2024-07-13 04:00:00,123 INFO ..."
    assert datetime.strptime(logged.split(",")[0], "%Y-%m-%d %H:%M:%S")
