"""The alert evaluation: the exposures a run measured, against the bands of `[alerts]` and
their quality outcomes; alerts opened, raised to alarms, cleared; new alarms sent.

For each exposure, in DATE-OBS order, and each band whose metric it has, every unit of the
band's level (quadrant, CCD or FPA) is judged against the fixed band and/or a band learned
from the same metric, unit, frame type and exposure time (to 0.1 s) over the band's `days`
before the exposure (the exposure itself left out; no learned band below `min_points`). A
breach opens the key's alert as a warning; an alarm needs `consecutive` breaches in a row
(and the value beyond the alarm band); a value back in band clears it. A quality outcome is
an alert of its own (code, unit, frame type), a warning or, for `alarm_outcomes`, an alarm;
it clears when a later exposure of that frame type is measured by that stage without it.

Each key remembers the DATE-OBS of the last exposure it was evaluated on: an exposure seen
again (another stage recorded later) or older than that changes nothing, so evaluating
twice is harmless. The history comes in one query per (metric, frame type) for the whole
batch. One evaluation at a time holds the `alerts` claim.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from viskom.measure.bands import LearnedBand, classify, learned_band, worst
from viskom.metrics import METRICS, level_of_unit
from viskom.pipeline.failures import short_reason
from viskom.pipeline.leases import holding, new_token
from viskom.sources.notify import send_new_alarms
from viskom.store import AlertState, Exposure, OutcomeRecord, Store

log = logging.getLogger("viskom.alerts")

ALERTS_CLAIM = "alerts"  # one evaluation at a time over a store
ALERTS_STAGE = "alerts"
#: Records that were committing as the last evaluation began are looked at again.
_MARGIN = timedelta(seconds=60)
_DONE = ("ok", "empty")


@dataclass
class AlertSummary:
    """What one evaluation did: the keys it opened as warnings, raised to alarms and cleared,
    the alarms it sent (per channel) and why sending failed; `error` if it stopped."""

    exposures: int = 0
    new_warnings: list[str] = field(default_factory=list)
    new_alarms: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    notified: dict[str, int] = field(default_factory=dict)
    notify_errors: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def line(self) -> str:
        """One line for a log or a terminal."""
        if self.error is not None:
            return f"alerts failed: {self.error}"
        parts = [
            _count(len(self.new_warnings), "new warning"),
            _count(len(self.new_alarms), "new alarm"),
            f"{len(self.cleared)} cleared",
        ]
        text = f"alerts: {', '.join(parts)} ({_count(self.exposures, 'exposure')})"
        for channel, n in self.notified.items():
            text += f"; {_count(n, 'alarm')} sent by {channel}"
        for channel, why in self.notify_errors.items():
            text += f"; not sent by {channel}: {why}"
        return text


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


# -- what run_pending calls ------------------------------------------------------------------


def exposures_to_evaluate(store: Store, run_started: datetime) -> list[int]:
    """Ids of the exposures measured since this run started, or since the last evaluation
    began if that is earlier (a run killed before it evaluated), with a margin."""
    last = store.claim_started(ALERTS_CLAIM)
    since = min(run_started, last) if last is not None else run_started
    return store.exposures_measured_since(since - _MARGIN)


def evaluate_alerts(
    store: Store, settings: Any, exposure_ids: Iterable[int], *, notify: bool = True
) -> AlertSummary:
    """Evaluate the exposures `exposure_ids` (in DATE-OBS order) against `settings.alerts`,
    save the alerts, then (`notify`) send the alarms nobody was told of yet. Waits for
    another evaluation holding the store's `alerts` claim (`[run] claim_wait_s`)."""
    t0 = time.monotonic()
    cfg = settings.alerts
    summary = AlertSummary()
    ids = sorted({int(i) for i in exposure_ids})
    if not cfg.enabled:
        return summary
    if not ids and not (notify and cfg.channels and store.alerts_to_notify()):
        return summary  # nothing to evaluate, nothing to send: no claim taken
    run = settings.run
    with holding(
        store, ALERTS_CLAIM, ALERTS_STAGE, new_token(),
        lease_s=run.lease_s, wait_s=run.claim_wait_s,
    ) as got:  # fmt: skip
        if not got:
            summary.error = "another run kept the alert evaluation busy; left for later"
            return summary
        if ids:
            _evaluate(store, cfg, ids, summary)
        if notify and cfg.channels:
            sent = send_new_alarms(store, cfg)
            summary.notified, summary.notify_errors = sent.sent, sent.errors
    summary.seconds = time.monotonic() - t0
    return summary


def evaluate_after_run(store: Store, settings: Any, run_started: datetime) -> AlertSummary:
    """The hook of `run_pending`: evaluate what was measured since `run_started`; never
    raises (the error is logged and returned in the summary), logs the summary's line."""
    try:
        summary = evaluate_alerts(store, settings, exposures_to_evaluate(store, run_started))
    except Exception as exc:  # the measurements stay recorded; alerts next time
        log.warning("alert evaluation failed", exc_info=exc)
        return AlertSummary(error=short_reason(f"{type(exc).__name__}: {exc}"))
    if summary.new_alarms or summary.notify_errors or summary.error:
        log.warning("%s", summary.line())
    elif summary.exposures or summary.notified:
        log.info("%s", summary.line())
    return summary


# -- the evaluation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Verdict:
    """One unit of one exposure against its band(s)."""

    level: str  # ok | warning | alarm
    value: float
    low: float | None  # the edges reported: the fixed band's, or the learned alarm band's
    high: float | None
    consecutive: int
    fixed: tuple[float | None, float | None] | None
    learned: LearnedBand | None
    days: float

    @property
    def band(self) -> str:
        """The band in words (made only for the messages that say it)."""
        words = []
        if self.fixed is not None:
            words.append(f"band [{_num(self.fixed[0])}, {_num(self.fixed[1])}]")
        if (lb := self.learned) is not None:
            words.append(
                f"learned band {_num(lb.median)} +- {_num(lb.warning)} (warning) / "
                f"+- {_num(lb.alarm)} (alarm), {lb.n_points} points in {self.days:g} d"
            )
        return " and ".join(words)


def _evaluate(store: Store, cfg: Any, ids: Sequence[int], summary: AlertSummary) -> None:
    exposures = [
        e
        for e in store.exposures_by_ids(ids)
        if e.date_obs is not None and e.frame_type and e.state == "registered"
    ]
    summary.exposures = len(exposures)
    if not exposures:
        return
    book = _Book(store.alert_states(), cfg, summary)
    verdicts = band_verdicts(store, cfg.bands, exposures)
    done: dict[int, set[str]] = defaultdict(set)  # the stages that measured each exposure
    for (exposure_id, stage), run in store.stage_runs(e.id for e in exposures).items():
        if run.status in _DONE:
            done[exposure_id].add(stage)
    outcomes = _outcomes_of(store, exposures)
    for e in exposures:
        for key, (metric, unit, verdict) in sorted(verdicts.get(e.id, {}).items()):
            book.band(e, key, metric, unit, verdict)
        book.outcomes(e, done[e.id], outcomes.get(e.name, []))
    store.save_alert_states(book.changed())


def _outcomes_of(store: Store, exposures: Sequence[Exposure]) -> dict[str, list[OutcomeRecord]]:
    names = [e.name for e in exposures]
    found: dict[str, list[OutcomeRecord]] = defaultdict(list)
    for i in range(0, len(names), 500):
        for o in store.quality_outcomes(exposures=names[i : i + 500]):
            found[o.exposure].append(o)
    return found


def band_verdicts(
    store: Store, bands: Sequence[Any], exposures: Sequence[Exposure]
) -> dict[int, dict[str, tuple[str, str, _Verdict]]]:
    """exposure id -> key -> (metric, unit, verdict) for every unit the bands watch (the
    worst, when several bands watch one key); one history query per (metric, frame type)."""
    by_type: dict[str, list[Exposure]] = defaultdict(list)
    for e in exposures:
        by_type[str(e.frame_type)].append(e)
    by_metric: dict[str, list[Any]] = defaultdict(list)
    for band in bands:
        by_metric[band.metric].append(band)
    result: dict[int, dict[str, tuple[str, str, _Verdict]]] = defaultdict(dict)
    for metric, metric_bands in by_metric.items():
        for frame_type, exps in by_type.items():
            applicable = [b for b in metric_bands if _applies(b, frame_type)]
            if not applicable:
                continue
            days = max((b.days for b in applicable if b.learned), default=0.0)
            since = min(_when(e) for e in exps) - timedelta(days=days)
            history = _History(
                store.metric_history(metric, frame_type, since, max(map(_when, exps)))
            )
            for e in exps:
                for unit, value in history.values_of(e.id).items():
                    level = level_of_unit(unit)
                    for band in applicable:
                        if band.level != level:
                            continue
                        verdict = _judge(band, value, history, unit, e)
                        if verdict is None:
                            continue
                        key = band_key(metric, unit, frame_type)
                        before = result[e.id].get(key)
                        if (
                            before is None
                            or worst(before[2].level, verdict.level) != before[2].level
                        ):
                            result[e.id][key] = (metric, unit, verdict)
    return result


def band_key(metric: str, unit: str, frame_type: str) -> str:
    """The identity of a watched metric: 'band:read_noise_e:2-3.F:BIAS'."""
    return f"band:{metric}:{unit}:{frame_type}"


def outcome_key(code: str, unit: str, frame_type: str) -> str:
    """The identity of a watched quality outcome: 'outcome:missing_quadrant:1-1.E:SCIENCE'."""
    return f"outcome:{code}:{unit}:{frame_type}"


def _applies(band: Any, frame_type: str) -> bool:
    kinds = {t.upper() for t in band.frame_types}
    return not kinds or frame_type.upper() in kinds


def _when(e: Exposure) -> datetime:
    assert e.date_obs is not None
    return e.date_obs


def _texp(exptime: float | None) -> int | None:
    """Exposure time to 0.1 s, as a grouping key."""
    return None if exptime is None else round(float(exptime) * 10)


class _History:
    """A metric's stored values for one frame type: those of each exposure, and per (unit,
    exposure time) the time series a learned band is taken from."""

    def __init__(self, rows: Sequence[tuple[int, datetime, float | None, str, float]]) -> None:
        self._own: dict[int, dict[str, float]] = defaultdict(dict)
        grouped: dict[tuple[str, int | None], list[tuple[float, float]]] = defaultdict(list)
        for exposure_id, when, exptime, unit, value in rows:
            if not np.isfinite(value):
                continue
            self._own[exposure_id][unit] = value
            grouped[(unit, _texp(exptime))].append((when.timestamp(), value))
        self._series: dict[tuple[str, int | None], tuple[np.ndarray, np.ndarray]] = {}
        for key, points in grouped.items():
            arr = np.array(sorted(points), dtype=float)
            self._series[key] = (arr[:, 0], arr[:, 1])

    def values_of(self, exposure_id: int) -> dict[str, float]:
        """unit -> value of one exposure."""
        return self._own.get(exposure_id, {})

    def before(self, unit: str, exptime: float | None, when: datetime, days: float) -> np.ndarray:
        """The values of `unit` at the same exposure time in [when - days, when)."""
        series = self._series.get((unit, _texp(exptime)))
        if series is None:
            return np.empty(0)
        times, values = series
        t = when.timestamp()
        lo = int(np.searchsorted(times, t - days * 86400.0, side="left"))
        hi = int(np.searchsorted(times, t, side="left"))
        return values[lo:hi]


def _judge(band: Any, value: float, history: _History, unit: str, e: Exposure) -> _Verdict | None:
    """The verdict of one value against one band; None when the band cannot say (a learned
    band with too little history and no fixed edges)."""
    fixed = band.low is not None or band.high is not None
    learned: LearnedBand | None = None
    if band.learned:
        past = history.before(unit, e.exptime, _when(e), band.days)
        learned = learned_band(past, band.k_warning, band.k_alarm, band.floor, band.min_points)
    if not fixed and learned is None:
        return None
    by_fixed = classify(value, low=band.low, high=band.high) if fixed else "ok"
    by_learned = classify(value, learned=learned) if learned is not None else "ok"
    if learned is None or (by_fixed == "alarm" and by_learned != "alarm"):
        low, high = band.low, band.high
    else:
        low, high = learned.low, learned.high
    return _Verdict(
        worst(by_fixed, by_learned), value, low, high, band.consecutive,
        (band.low, band.high) if fixed else None, learned, band.days,
    )  # fmt: skip


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _stamp(when: datetime | None) -> str:
    return "?" if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class _Book:
    """The alerts being evaluated, by key: what they were, what the batch makes of them."""

    def __init__(self, states: dict[str, AlertState], cfg: Any, summary: AlertSummary) -> None:
        self.states = states
        self.cfg = cfg
        self.summary = summary
        self._changed: set[str] = set()
        self._outcome_keys = {k for k, s in states.items() if s.kind == "outcome"}
        self._now = datetime.now(UTC)

    def changed(self) -> list[AlertState]:
        """The states to save."""
        return [self.states[k] for k in sorted(self._changed)]

    def _seen(self, key: str, when: datetime) -> bool:
        """Whether this key was evaluated on this exposure, or a later one, already."""
        state = self.states.get(key)
        return state is not None and state.last_checked is not None and when <= state.last_checked

    def band(self, e: Exposure, key: str, metric: str, unit: str, verdict: _Verdict) -> None:
        """One unit of one exposure against its band."""
        when = _when(e)
        if self._seen(key, when):
            return
        entry = METRICS.get(metric)
        physical = f" {entry.unit}" if entry is not None and entry.unit else ""
        if verdict.level == "ok":
            state = self.states.get(key)
            if state is not None and state.state == "open":
                self._clear(state, when, f"{metric} {_num(verdict.value)}{physical} on {unit} "
                            f"({e.frame_type}) back in {verdict.band} with {e.name}")  # fmt: skip
            return
        state = self._breach(key, "band", metric, unit, e, entry.stage if entry else None)
        raise_alarm = verdict.level == "alarm" and state.breaches >= verdict.consecutive
        self._level(state, key, raise_alarm)
        state.value, state.low, state.high = verdict.value, verdict.low, verdict.high
        state.message = (
            f"{metric} {_num(verdict.value)}{physical} on {unit} ({e.frame_type}) outside "
            f"{verdict.band}: {state.breaches} in a row since {_stamp(state.first_seen)}"
        )
        if state.level == "warning" and verdict.level == "alarm":
            state.message += f" (an alarm at {verdict.consecutive} in a row)"

    def outcomes(self, e: Exposure, done: set[str], outcomes: Sequence[OutcomeRecord]) -> None:
        """The quality outcomes of one exposure, and the outcome alerts it clears."""
        when, frame_type = _when(e), str(e.frame_type)
        present = set()
        for o in outcomes:
            if o.code in self.cfg.ignored_outcomes:
                continue
            key = outcome_key(o.code, o.unit, frame_type)
            present.add(key)
            if self._seen(key, when):
                continue
            state = self._breach(key, "outcome", o.code, o.unit, e, o.stage)
            self._level(state, key, o.code in self.cfg.alarm_outcomes)
            state.value = state.low = state.high = None
            state.message = (
                f"{o.code} on {o.unit} ({frame_type}, stage {o.stage}): {o.message}; "
                f"{state.breaches} in a row since {_stamp(state.first_seen)}"
            )
        for key in sorted(self._outcome_keys - present):
            state = self.states[key]
            if (
                state.state == "open"
                and state.frame_type == frame_type
                and state.stage in done
                and not self._seen(key, when)
            ):
                self._clear(state, when, f"{state.metric} on {state.unit} ({frame_type}) gone: "
                            f"{e.name} measured by {state.stage} without it")  # fmt: skip

    def _breach(
        self, key: str, kind: str, metric: str, unit: str, e: Exposure, stage: str | None
    ) -> AlertState:
        """The key's open alert, opened (again) if it was clear; one more breach counted."""
        when = _when(e)
        state = self.states.get(key)
        if state is None or state.state != "open":
            state = AlertState(
                key=key, kind=kind, metric=metric, unit=unit, frame_type=e.frame_type,
                stage=stage, level="warning", state="open", value=None, low=None, high=None,
                exposure_id=e.id, first_seen=when, last_seen=when, last_checked=when,
                breaches=0, message="", cleared_at=None, reopened=True,
            )  # fmt: skip
            self.states[key] = state
            if kind == "outcome":
                self._outcome_keys.add(key)
        state.breaches += 1
        state.exposure_id, state.last_seen, state.last_checked = e.id, when, when
        self._changed.add(key)
        return state

    def _level(self, state: AlertState, key: str, alarm: bool) -> None:
        """Warning, or alarm (an open alarm stays one until it clears); counted as new."""
        fresh = state.breaches == 1
        if alarm and state.level != "alarm":
            state.level = "alarm"
            self.summary.new_alarms.append(key)
        elif fresh and state.level == "warning":
            self.summary.new_warnings.append(key)

    def _clear(self, state: AlertState, when: datetime, message: str) -> None:
        state.state, state.cleared_at, state.breaches = "cleared", self._now, 0
        state.last_checked, state.message = when, message
        self._changed.add(state.key)
        self.summary.cleared.append(state.key)
