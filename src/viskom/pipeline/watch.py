"""`viskom watch`: the unattended monitor loop (register what arrived, measure what is pending).

Every `interval_s` seconds (and at start) one *cycle*: find frame files under the settings'
raw folder and any extra paths, register the *complete* ones (`register.ingest`), then
`service.run_pending` (measure what is pending, rebuild the month products of the months
measured anew). One log line per cycle on the `viskom.watch` logger; nothing is printed.

A file still being written or copied is left for the next cycle. A file is handed to
`ingest` when

- it is *stable*: its size and mtime are those of the previous look (a file seen for the
  first time is stable when its mtime is older than `settle_s`), and
- its end is there (`file_is_complete`): a FITS file's last HDU ends where the file ends
  (headers walked block by block, the data never read); a gzip stream is finished and its
  CRC matches. A file that is not FITS or not gzip at all is handed on: `ingest` records it
  as invalid with the reason.

A stable file whose end is still missing after `give_up_s` without a change (a transfer that
died) is handed to `ingest` too, which records it as invalid (truncated); if it grows later it
is registered again. Files registered with the same path, size and mtime are skipped without
looking inside (remembered in memory between cycles, asked of the store again after a failed
cycle and every 60 cycles; one `get_exposure` per other file, or one `list_exposures`).

A cycle never raises (except KeyboardInterrupt and SystemExit): a database that cannot be
opened or used fails the cycle, and the loop waits `interval_s * 2**k` (k consecutive failed
cycles, capped at `max_backoff_s`) before the next one. A missing watched folder is logged
as a warning and the rest of the cycle runs; when none of the watched folders exists the
loop backs off too (an unmounted disk is not fixed by looking every minute). Stage failures
are recorded by `run_pending` and counted in the cycle's line.

`run(stop_event)` returns once the event is set (`stop_on_signals` sets it on SIGINT or
SIGTERM): the work in flight of the current cycle finishes (`run_pending` is given
`should_stop=stop_event.is_set`, so it hands out no new exposure), nothing new starts.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from viskom.le1.completeness import file_is_complete
from viskom.pipeline.failures import describe_failure
from viskom.store import shown_url

log = logging.getLogger("viskom.watch")

_INGEST_BATCH = 16  # files per ingest call (the stop flag is asked between batches)
_LIST_ALL_ABOVE = 50  # more unknown files than this: one list_exposures() instead of lookups
_REVERIFY_EVERY = 60  # cycles: then files remembered as registered are checked in the store


# -- the loop ------------------------------------------------------------------------------


@dataclass
class _Look:
    """What a file looked like at the previous cycle, and what was found then."""

    size: int
    mtime_ns: int
    verdict: tuple[bool, str] | None = None  # file_is_complete at this size and mtime
    registered: bool = False  # registered with this path, size and mtime (and current checks)


@dataclass
class CycleReport:
    """What one cycle did. `error` is set when the cycle itself failed (e.g. the database)."""

    number: int
    seconds: float = 0.0
    files: int = 0  # frame files found
    known: int = 0  # already registered, unchanged
    new: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)  # of this cycle's new/updated
    arriving: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    missing: list[str] = field(default_factory=list)  # watched folders that do not exist
    fetch: Any = None  # the archive fetch's FetchResult, when [archive] is set
    fetch_error: str | None = None  # why the fetch failed (the cycle goes on without it)
    run: Any = None  # the service's PendingRun, when run_pending ran
    error: str | None = None
    stopped: bool = False  # a stop was asked for during the cycle

    @property
    def ok(self) -> bool:
        """The cycle ran (stage failures are recorded, not a failed cycle)."""
        return self.error is None

    def line(self) -> str:
        """The cycle's log line (without the 'next in ...' part)."""
        if self.error is not None:
            return f"cycle {self.number} failed: {self.error} ({self.seconds:.1f} s)"
        n_arr = len(self.arriving)
        parts = []
        if self.fetch_error is not None:
            parts.append(f"fetch failed: {self.fetch_error}")
        elif self.fetch is not None:
            r = self.fetch.report
            parts.append(f"fetched {len(r.new)} of {self.fetch.listed} listed "
                         f"({r.bytes / 1e6:.0f} MB" + (f", {len(r.failed)} failed" if r.failed
                                                      else "") + ")")  # fmt: skip
            if r.stopped:
                parts.append(f"fetch stopped: {r.stopped}")
        parts += [f"{len(self.new)} new frame{'s' if len(self.new) != 1 else ''}"
                 + (f" ({n_arr} still arriving)" if n_arr else "")]  # fmt: skip
        if self.updated:
            parts.append(f"{len(self.updated)} changed")
        if self.invalid:
            parts.append(f"{len(self.invalid)} invalid")
        if self.missing:
            parts.append(f"missing folder{'s' if len(self.missing) > 1 else ''} "
                         + ", ".join(self.missing))  # fmt: skip
        if self.run is not None:
            s = self.run.summary
            parts.append(f"{s.stages_ok} stage runs ok")
            parts.append(f"{s.stages_failed} failed")
            if s.stages_empty:
                parts.append(f"{s.stages_empty} found nothing")
            if s.blocked:
                parts.append(f"{s.blocked} blocked")
            parts.append(f"{s.skipped} up to date")
            periods = self.run.periods
            if periods.error:
                parts.append(f"period products failed: {periods.error}")
            elif periods.deferred_until is not None:
                parts.append(f"month products of {', '.join(periods.months)} due "
                             f"{periods.deferred_until:%H:%M} UTC")  # fmt: skip
            else:
                parts.append(f"{len(periods.paths)} period files")
            alerts = self.run.alerts
            if alerts.error:
                parts.append(f"alerts failed: {alerts.error}")
            elif alerts.new_alarms or alerts.new_warnings or alerts.cleared:
                parts.append(f"{len(alerts.new_alarms)} new alarms, "
                             f"{len(alerts.new_warnings)} new warnings, "
                             f"{len(alerts.cleared)} cleared")  # fmt: skip
            site = self.run.site
            if site is not None and site.error:
                parts.append(f"site not updated: {site.error}")
            elif site is not None and site.written:
                parts.append(f"{len(site.written)} site pages")
        if self.stopped:
            parts.append("stop requested (what was not started is left for the next run)")
        return f"cycle {self.number}: " + ", ".join(parts) + f", {self.seconds:.1f} s"


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 or float(s).is_integer() else f"{s:.1f} s"


class Watcher:
    """The loop of `viskom watch`, without the command: `cycle()` once, `run()` until stopped.

    settings: viskom's Settings (raw_path, rules_path, db_url, ...). paths: more files or
    folders to watch besides `settings.raw_path`. The store is opened for each cycle and
    closed after it, so that a database that went away is simply found again.
    """

    def __init__(
        self,
        settings: Any,
        *,
        paths: Iterable[str | Path] = (),
        interval_s: float = 60.0,
        settle_s: float = 10.0,
        max_backoff_s: float = 900.0,
        give_up_s: float = 3600.0,
        stop_event: threading.Event | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self.settings = settings
        self.paths = [Path(settings.raw_path), *(Path(p) for p in paths)]
        self.interval_s = float(interval_s)
        self.settle_s = float(settle_s)
        self.max_backoff_s = max(float(max_backoff_s), self.interval_s)
        self.give_up_s = float(give_up_s)
        self.stop_event = stop_event or threading.Event()
        self.cycles = 0
        self.failures = 0  # consecutive cycles that failed (or found no folder at all)
        self._looks: dict[str, _Look] = {}
        #: the records the last period build of this loop saw (`service.run_pending`)
        self._covered: frozenset = frozenset()

    # -- one cycle -------------------------------------------------------------------------

    def cycle(self) -> CycleReport:
        """Register the complete new files, run what is pending; never raises (but
        KeyboardInterrupt and SystemExit)."""
        t0 = time.monotonic()
        from viskom.pipeline.service import open_store, run_pending

        self.cycles += 1
        report = CycleReport(number=self.cycles)
        try:
            store = open_store(self.settings)
            try:
                if self.settings.archive.kind != "none" and not self.stop_event.is_set():
                    self._fetch(store, report)
                files = self._find_files(report)
                self._register(store, files, report)
                if self.stop_event.is_set():
                    report.stopped = True
                else:
                    report.run = run_pending(
                        self.settings, store=store, should_stop=self.stop_event.is_set,
                        covered=self._covered,
                    )  # fmt: skip
                    periods = report.run.periods
                    if periods.made and periods.months and not periods.error:
                        self._covered = periods.covered
                    report.stopped = self.stop_event.is_set()
            finally:
                store.close()
        except Exception as exc:  # the cycle failed; the loop goes on
            report.error = describe_failure(exc)[1]
            log.debug("cycle %d failed", report.number, exc_info=True)
            for look in self._looks.values():  # the database may come back as another one
                look.registered = False
        report.seconds = time.monotonic() - t0
        return report

    def _fetch(self, store: Any, report: CycleReport) -> None:
        """Download and register what the archive has that is not here (`viskom fetch` of
        the settings' window); a failed fetch is said in the cycle's line, the rest goes on."""
        from viskom.pipeline.fetch import fetch

        try:
            report.fetch = fetch(self.settings, store, stop=self.stop_event)
        except Exception as exc:  # the archive, credentials, a listing: not the cycle's end
            report.fetch_error = describe_failure(exc)[1]
            log.debug("cycle %d: fetch failed", report.number, exc_info=True)
            return
        for name, why in report.fetch.report.failed:
            log.warning("cycle %d: not fetched %s: %s", report.number, name, why)
        if report.fetch.ingest is not None:
            report.new.extend(report.fetch.ingest.new)
            report.invalid.extend(report.fetch.ingest.invalid)

    def _find_files(self, report: CycleReport) -> list[tuple[str, Path]]:
        """(resolved path, path) of the frame files under the watched paths."""
        from viskom.sources.local import find_frame_files

        found: list[Path] = []
        for p in self.paths:
            if not p.exists():
                report.missing.append(str(p))
                log.warning("cycle %d: %s does not exist; looking again next cycle",
                            report.number, p)  # fmt: skip
                continue
            try:
                found.extend(find_frame_files([p]))
            except FileNotFoundError as exc:  # vanished while listed
                report.missing.append(str(p))
                log.warning("cycle %d: %s", report.number, exc)
        unique: dict[str, Path] = {}
        for f in found:
            unique.setdefault(str(f.resolve()), f)
        report.files = len(unique)
        return list(unique.items())

    def _register(self, store: Any, files: Sequence[tuple[str, Path]], report: CycleReport) -> None:
        from viskom.le1.header import HEADER_CHECK_VERSION
        from viskom.le1.names import exposure_name

        now_ns = time.time_ns()
        looks: dict[str, _Look] = {}
        stats: dict[str, os.stat_result] = {}
        for key, f in files:
            try:
                stats[key] = f.stat()
            except OSError:  # gone since it was listed
                continue
        if self.cycles % _REVERIFY_EVERY == 0:  # now and then, ask the store again
            for look in self._looks.values():
                look.registered = False
        # which files are registered as they are now (the store, for those not known so)
        n_unsure = sum(
            1 for key, st in stats.items()
            if not ((prev := self._looks.get(key)) is not None and prev.registered
                    and (prev.size, prev.mtime_ns) == (st.st_size, st.st_mtime_ns))
        )  # fmt: skip
        if n_unsure > _LIST_ALL_ABOVE:
            exposures = {e.name: e for e in store.list_exposures()}
            lookup = exposures.get
        else:
            lookup = store.get_exposure

        to_ingest: list[Path] = []
        for key, f in files:
            st = stats.get(key)
            if st is None:
                continue
            prev = self._looks.get(key)
            same = prev is not None and (prev.size, prev.mtime_ns) == (st.st_size, st.st_mtime_ns)
            look = prev if same else _Look(st.st_size, st.st_mtime_ns)
            looks[key] = look
            if look.registered:
                report.known += 1
                continue
            known = lookup(exposure_name(f))
            if (
                known is not None
                and known.path == key
                and known.size_bytes == st.st_size
                and known.header is not None
                and known.header.get("_mtime_ns") == st.st_mtime_ns
            ):
                if known.header.get("_header_check") == HEADER_CHECK_VERSION:
                    look.registered = True
                    report.known += 1
                else:  # registered, complete; the checks changed: ingest reads it again
                    to_ingest.append(f)
                continue
            age_s = (now_ns - st.st_mtime_ns) / 1e9
            if not same and not (prev is None and age_s >= self.settle_s):
                report.arriving.append((str(f), "changed since the last look" if prev
                                        else "modified within the settle time"))  # fmt: skip
                continue
            if look.verdict is None:
                if self.stop_event.is_set():
                    break  # the expensive checks wait for the next run
                try:
                    look.verdict = file_is_complete(f)
                except OSError as exc:
                    report.arriving.append((str(f), f"unreadable for now: {exc}"))
                    continue
            ready, reason = look.verdict
            if ready:
                to_ingest.append(f)
            elif age_s >= self.give_up_s:
                log.warning("cycle %d: %s unchanged for %s and still %s; registering it as it is",
                            report.number, f, _seconds(age_s), reason)  # fmt: skip
                to_ingest.append(f)
            else:
                report.arriving.append((str(f), reason))
        self._looks = looks

        for i in range(0, len(to_ingest), _INGEST_BATCH):
            if self.stop_event.is_set():
                break
            batch = to_ingest[i : i + _INGEST_BATCH]
            done = self._ingest(store, batch)
            report.new.extend(done.new)
            report.updated.extend(done.updated)
            fresh = set(done.new) | set(done.updated)
            report.invalid.extend((n, r) for n, r in done.invalid if n in fresh)
            for name, reason in done.duplicates:
                log.debug("cycle %d: %s: %s", report.number, name, reason)
        for name, reason in report.invalid:
            log.debug("cycle %d: invalid %s: %s", report.number, name, reason)
        for path, reason in report.arriving:
            log.debug("cycle %d: waiting for %s: %s", report.number, path, reason)

    def _ingest(self, store: Any, batch: list[Path]) -> Any:
        from viskom.pipeline.register import ingest

        for _ in range(3):
            try:
                return ingest(store, batch, rules_path=self.settings.rules_path)
            except FileNotFoundError:  # a file went away since it was looked at
                batch = [f for f in batch if f.exists()]
        return ingest(store, batch, rules_path=self.settings.rules_path)

    # -- the loop --------------------------------------------------------------------------

    def delay_after(self, report: CycleReport) -> float:
        """Seconds from this cycle's start to the next one's: the interval (a cycle that
        takes longer is followed at once), or interval * 2**k after k failed
        cycles in a row (capped at max_backoff_s); a cycle that found no watched folder at
        all counts as failed."""
        failed = not report.ok or len(report.missing) == len(self.paths)
        self.failures = self.failures + 1 if failed else 0
        return min(self.interval_s * 2**self.failures, self.max_backoff_s)

    def run(self, stop_event: threading.Event | None = None, *, once: bool = False) -> CycleReport:
        """Cycles until `stop_event` is set (or one cycle with `once`); the last report."""
        if stop_event is not None:
            self.stop_event = stop_event
        stop = self.stop_event
        log.info(
            "watching %s every %s (settle %s, database %s)",
            ", ".join(str(p) for p in self.paths), _seconds(self.interval_s),
            _seconds(self.settle_s), shown_url(self.settings.db_url),
        )  # fmt: skip
        report = CycleReport(number=0)
        while True:
            started = time.monotonic()
            report = self.cycle()
            deadline = started + self.delay_after(report)  # from start to start
            level = logging.INFO if report.ok and not report.missing else logging.WARNING
            if once:
                tail = ""
            elif stop.is_set():
                tail = "; stopping"
            else:
                wait_s = max(0.0, deadline - time.monotonic())
                tail = f"; next in {_seconds(wait_s)}" + (" (backoff)" if self.failures else "")
            log.log(level, "%s%s", report.line(), tail)
            if once or stop.is_set():
                break
            while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
                stop.wait(min(left, 0.5))
            if stop.is_set():
                break
        if stop.is_set():
            log.info("stopped")
        return report


@contextmanager
def stop_on_signals(
    stop_event: threading.Event, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[threading.Event]:
    """While inside: the first SIGINT or SIGTERM sets `stop_event`, a second one raises
    KeyboardInterrupt. The previous handlers come back on exit. Processes forked inside
    (a process pool's workers) inherit handlers that ignore both signals, so a Ctrl-C to
    the process group lets their work in flight finish. Outside the main thread (where
    handlers cannot be installed) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield stop_event
        return
    pid = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != pid:  # a forked worker: the parent decides
            return
        if stop_event.is_set():
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        log.info("%s: stopping once the work in flight is done (again to abort)",
                 signal.Signals(signum).name)  # fmt: skip
        stop_event.set()

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield stop_event
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
