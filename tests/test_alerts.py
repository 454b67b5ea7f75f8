"""Alerts (issue 16): metrics out of their bands and quality outcomes become alerts in the
store, raised to alarms after K breaches in a row, cleared when back, acknowledged, and new
alarms sent to a webhook and by e-mail. Store tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from viskom.config import BandSettings, Settings
from viskom.config.monitors import AlertSettings
from viskom.measure.bands import LearnedBand, classify, learned_band
from viskom.measure.robust import mad_sigma
from viskom.pipeline.alerts import evaluate_alerts
from viskom.store import AlertState, Exposure, ExposureRecord, StageRun, Store

T0 = datetime(2024, 7, 13, tzinfo=UTC)
HOUR = timedelta(hours=1)
READ_NOISE = BandSettings(metric="read_noise_e", level="quadrant", high=4.5, consecutive=3)


# -- helpers ------------------------------------------------------------------------------


def _settings(tmp_path: Path, store: Store, *bands: BandSettings, **alerts: Any) -> Settings:
    cfg = AlertSettings(bands=list(bands or [READ_NOISE]), **alerts)
    return Settings(data_root=tmp_path / "data", database_url=store.url, alerts=cfg)


def _exposure(
    store: Store, name: str, when: datetime, frame_type: str = "BIAS", exptime: float = 0.0
) -> Exposure:
    record = ExposureRecord(name=name, path=f"/d/{name}.fits", state="registered",
                            frame_type=frame_type, date_obs=when, exptime=exptime,
                            checksum="a" * 64)  # fmt: skip
    return store.register_exposure(record)[0]


def _measure(
    store: Store,
    exposure: Exposure,
    metrics: dict[tuple[str, str], float],
    stage: str = "detector_health",
    outcomes: tuple[tuple[str, str, str], ...] = (),
    status: str = "ok",
) -> None:
    run = StageRun(exposure.id, stage, "1", "c" * 16, "0", status,
                   "boom" if status == "failed" else None, exposure.date_obs)  # fmt: skip
    rows = [(unit, metric, value) for (metric, unit), value in metrics.items()]
    store.record_stage_run(run, rows, outcomes)


def _noise_series(store: Store, values: list[float], frame_type: str = "BIAS") -> list[Exposure]:
    """Exposures an hour apart whose quadrant 2-3.F has these read noises (the others 3 e-;
    the CCD 2-3 the same value: the band watches quadrants only)."""
    exposures = []
    for i, v in enumerate(values):
        e = _exposure(store, f"EUC_{frame_type}_{i:02d}", T0 + i * HOUR, frame_type)
        _measure(store, e, {("read_noise_e", "2-3.F"): v, ("read_noise_e", "1-1.E"): 3.0,
                            ("read_noise_e", "2-3"): v})  # fmt: skip
        exposures.append(e)
    return exposures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Hook:
    """A local webhook: records the JSON of every POST."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/s3cr3t-token"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[_Hook]:
    server = _Hook()
    yield server
    server.close()


# -- the bands, by hand ---------------------------------------------------------------------


def test_learned_band_against_hand_computed_numbers() -> None:
    # median 12; |deviations| 2 1 0 1 88 -> MAD 1 -> robust sigma 1.4826
    band = learned_band([10.0, 11.0, 12.0, 13.0, 100.0, float("nan")], 3.0, 5.0, 0.0, 5)
    assert band is not None and band.n_points == 5
    assert band.median == 12.0
    assert band.warning == pytest.approx(3 * 1.4826) and band.alarm == pytest.approx(5 * 1.4826)
    assert (band.low, band.high) == pytest.approx((12 - 7.413, 12 + 7.413))
    floored = learned_band(np.array([10.0, 11.0, 12.0, 13.0, 100.0]), 3.0, 5.0, 5.0, 5)
    assert floored is not None and (floored.warning, floored.alarm) == pytest.approx((5.0, 7.413))
    assert learned_band([10.0, 11.0, 12.0, 13.0, 100.0], 3.0, 5.0, 0.0, 6) is None  # too few
    assert learned_band([1.0, float("nan")] * 3, 3.0, 5.0, 0.0, 4) is None  # NaN not counted
    flat = learned_band([7.0] * 8, 3.0, 5.0, 2.0, 8)  # no spread at all: the floor
    assert flat == LearnedBand(7.0, 2.0, 2.0, 8)
    rng = np.random.default_rng(4)
    for n in (3, 8, 41, 200):  # the robust sigma is measure.robust's, odd and even sizes
        values = rng.normal(1000.0, 2.0, n)
        band = learned_band(values, 1.0, 1.0, 0.0, 3)
        assert band is not None and band.median == pytest.approx(np.median(values), abs=1e-9)
        assert band.alarm == pytest.approx(mad_sigma(values), rel=1e-12)


def test_classify_fixed_and_learned() -> None:
    assert classify(4.5, high=4.5) == "ok"  # the edge is in band
    assert classify(4.51, high=4.5) == "alarm"
    assert classify(0.9, low=1.0, high=2.0) == "alarm" and classify(1.5, low=1.0) == "ok"
    band = LearnedBand(median=12.0, warning=4.0, alarm=7.0, n_points=10)
    assert classify(15.9, learned=band) == "ok"
    assert classify(16.5, learned=band) == "warning" and classify(7.5, learned=band) == "warning"
    assert classify(19.5, learned=band) == "alarm" and classify(4.0, learned=band) == "alarm"
    assert classify(16.5, high=16.0, learned=band) == "alarm"  # the worse of the two
    with pytest.raises(ValueError, match="non-finite"):
        classify(float("nan"), high=1.0)


def test_alert_settings() -> None:
    cfg = AlertSettings(smtp_host="mail", smtp_from="v@x.org", smtp_to="a@x.org, b@y.org",
                        site_url="https://ql.example.org/", webhook_url="https://h/x/")  # fmt: skip
    assert cfg.smtp_to == ["a@x.org", "b@y.org"] and cfg.site_url == "https://ql.example.org"
    assert cfg.channels == ("webhook", "email") and AlertSettings().channels == ()
    assert "missing_quadrant" in AlertSettings().alarm_outcomes
    with pytest.raises(ValueError, match="never go in the settings file"):
        AlertSettings(smtp_password="hunter2")
    with pytest.raises(ValueError, match="smtp_from and smtp_to"):
        AlertSettings(smtp_host="mail")
    with pytest.raises(ValueError, match="http"):
        AlertSettings(webhook_url="ftp://x")
    assert AlertSettings().fixed_band("read_noise_e", "BIAS") == (None, 4.5)  # plots' use


# -- the store ----------------------------------------------------------------------------


def _state(key: str, exposure: Exposure, **kw: Any) -> AlertState:
    values = dict(key=key, kind="band", metric="read_noise_e", unit="1-1.E", frame_type="BIAS",
                  stage="detector_health", level="warning", state="open", value=5.0, low=None,
                  high=4.5, exposure_id=exposure.id, first_seen=exposure.date_obs,
                  last_seen=exposure.date_obs, last_checked=exposure.date_obs, breaches=1,
                  message="read_noise_e 5 e- on 1-1.E (BIAS) outside band [-, 4.5]")  # fmt: skip
    return AlertState(**{**values, **kw})


def test_store_alerts_ack_and_order(store: Store) -> None:
    a = _exposure(store, "EUC_A", T0)
    b = _exposure(store, "EUC_B", T0 + HOUR)
    store.save_alert_states([
        _state("band:read_noise_e:1-1.E:BIAS", a, reopened=True),
        _state("band:read_noise_e:1-2.E:BIAS", b, unit="1-2.E", state="cleared", breaches=0,
               cleared_at=T0 + 2 * HOUR),
        _state("outcome:missing_quadrant:1-1.F:BIAS", b, kind="outcome", level="alarm",
               metric="missing_quadrant", unit="1-1.F", value=None, high=None, stage="images"),
    ])  # fmt: skip
    rows = store.alerts()
    assert [r.key.split(":")[2] for r in rows] == ["1-1.F", "1-1.E", "1-2.E"]  # open, recent
    first = rows[1]
    assert (first.exposure, first.exposure_id) == ("EUC_A", a.id)
    assert (first.level, first.value) == ("warning", 5.0)
    assert first.first_seen == T0 and first.first_seen.tzinfo is not None
    assert first.updated_at is not None and first.updated_at.tzinfo is not None
    assert [r.unit for r in store.alerts(state="open")] == ["1-1.F", "1-1.E"]
    assert [r.unit for r in store.alerts(kind="outcome")] == ["1-1.F"]
    assert [r.unit for r in store.alerts(exposure="EUC_A")] == ["1-1.E"]
    assert [r.unit for r in store.alerts(since=T0 + HOUR)] == ["1-1.F", "1-2.E"]
    assert store.open_alert_counts() == {"warning": 1, "alarm": 1}
    assert store.alert(first.id) == first and store.alert(9999) is None

    acked = store.acknowledge_alert(first.id, "vis-duty")
    assert acked.acknowledged_by == "vis-duty" and acked.acknowledged_at is not None
    with pytest.raises(LookupError):
        store.acknowledge_alert(9999, "vis-duty")
    # an evaluation that continues the alert keeps the acknowledgement; a reopening forgets it
    store.save_alert_states([_state("band:read_noise_e:1-1.E:BIAS", a, breaches=2)])
    assert store.alert(first.id).acknowledged_by == "vis-duty"  # type: ignore[union-attr]
    store.save_alert_states([_state("band:read_noise_e:1-1.E:BIAS", a, reopened=True)])
    assert store.alert(first.id).acknowledged_by is None  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="level"):
        store.save_alert_states([_state("band:x:1-1.E:BIAS", a, level="panic")])
    # deleting the exposure leaves the alert, without its exposure
    with store.engine.begin() as connection:
        connection.exec_driver_sql(f"DELETE FROM exposures WHERE id = {a.id}")
    gone = store.alert(first.id)
    assert gone is not None and gone.exposure_id is None and gone.exposure is None


# -- the evaluation -------------------------------------------------------------------------


def test_read_noise_out_of_band_warning_then_alarm_then_cleared(store: Store, tmp_path) -> None:
    settings = _settings(tmp_path, store)
    exposures = _noise_series(store, [3.0, 5.0, 5.1, 5.2, 5.3, 3.0])
    seen = []
    for e in exposures:  # one run per exposure, as they arrive
        s = evaluate_alerts(store, settings, [e.id])
        alerts = store.alerts(state=None)
        seen.append((len(s.new_warnings), len(s.new_alarms), len(s.cleared),
                     [(a.unit, a.state, a.level, a.breaches) for a in alerts]))  # fmt: skip
    key_rows = [row for *_, row in seen]
    assert key_rows == [
        [],
        [("2-3.F", "open", "warning", 1)],  # the CCD 2-3 is not watched: level quadrant
        [("2-3.F", "open", "warning", 2)],
        [("2-3.F", "open", "alarm", 3)],  # the third in a row
        [("2-3.F", "open", "alarm", 4)],
        [("2-3.F", "cleared", "alarm", 0)],  # back in band
    ]
    assert [c[:3] for c in seen] == [(0, 0, 0), (1, 0, 0), (0, 0, 0), (0, 1, 0), (0, 0, 0),
                                     (0, 0, 1)]  # fmt: skip
    (alert,) = store.alerts(state="cleared")
    assert alert.key == "band:read_noise_e:2-3.F:BIAS" and alert.cleared_at is not None
    assert (alert.first_seen, alert.last_seen) == (T0 + HOUR, T0 + 4 * HOUR)
    assert (alert.value, alert.high, alert.exposure) == (5.3, 4.5, exposures[4].name)
    assert "back in band" in alert.message and exposures[5].name in alert.message
    # evaluated again (another stage of it recorded later): nothing changes
    again = evaluate_alerts(store, settings, [e.id for e in exposures])
    assert (again.new_warnings, again.new_alarms, again.cleared) == ([], [], [])
    assert store.alerts(state=None) == [alert]

    # the same series as DARK frames in one batch (1000 exposures a run: the same answer)
    darks = _noise_series(store, [3.0, 5.0, 5.1, 5.2, 5.3], "DARK")
    batch = evaluate_alerts(store, settings, [e.id for e in darks])
    assert batch.new_warnings == ["band:read_noise_e:2-3.F:DARK"]
    assert batch.new_alarms == ["band:read_noise_e:2-3.F:DARK"] and batch.cleared == []
    (dark,) = store.alerts(state="open")
    assert (dark.level, dark.breaches, dark.exposure) == ("alarm", 4, darks[-1].name)
    assert dark.message == (
        "read_noise_e 5.3 e- on 2-3.F (DARK) outside band [-, 4.5]: 4 in a row since "
        "2024-07-13 01:00 UTC"
    )
    # a new breach of a cleared key opens it again, from the start
    late = _noise_series(store, [6.0] * 7)[-1]
    evaluate_alerts(store, settings, [late.id])
    bias = store.alerts(state="open", kind="band")[0]
    assert bias.id == alert.id and (bias.level, bias.breaches) == ("warning", 1)
    assert bias.first_seen == late.date_obs and bias.cleared_at is None


def test_learned_band_leaves_the_point_out_and_needs_history(store: Store, tmp_path) -> None:
    band = BandSettings(metric="bias_overscan_adu", level="quadrant", learned=True, days=2.0,
                        k_warning=3.0, k_alarm=5.0, min_points=5, floor=0.5)  # fmt: skip
    settings = _settings(tmp_path, store, band)

    def frame(name: str, when: datetime, f: float, e: float | None = None, exptime: float = 0.0):
        x = _exposure(store, name, when, "BIAS", exptime)
        _measure(store, x, {("bias_overscan_adu", "2-3.F"): f,
                            ("bias_overscan_adu", "1-1.E"): f if e is None else e})  # fmt: skip
        return x

    old = frame("EUC_OLD", T0 - 3 * 24 * HOUR, 5000.0)  # outside the 2-day window
    other = frame("EUC_1S", T0 - HOUR, 2000.0, exptime=1.04)  # another exposure time
    first = [frame(f"EUC_{i}", T0 + i * HOUR, v)
             for i, v in enumerate([1000.0, 1000.2, 999.8, 1000.1, 999.9])]  # fmt: skip
    summary = evaluate_alerts(store, settings, [old.id, other.id] + [x.id for x in first])
    assert summary.exposures == 7 and store.alerts(state=None) == []  # too few points yet

    # 5 points before it: median 1000, MAD 0.1 -> sigma 0.14826: warning +-0.5 (the floor),
    # alarm +-0.7413; 2-3.F jumps to 1003 (alarm), 1-1.E to 1000.6 (warning)
    jump = frame("EUC_JUMP", T0 + 5 * HOUR, 1003.0, e=1000.6)
    summary = evaluate_alerts(store, settings, [jump.id])
    assert summary.new_alarms == ["band:bias_overscan_adu:2-3.F:BIAS"]
    assert summary.new_warnings == ["band:bias_overscan_adu:1-1.E:BIAS"]
    alarm = store.alerts(level="alarm")[0]
    # the band of 5 points, without the jump itself (with it: median 1000.05, 6 points)
    assert (alarm.low, alarm.high) == pytest.approx((1000 - 5 * 0.14826, 1000 + 5 * 0.14826))
    assert "5 points in 2 d" in alarm.message and "learned band 1000 +- 0.5 (warning)" in (
        alarm.message
    )
    # back: 1000.0 against 6 points (the jump now in the history): in band, cleared
    back = frame("EUC_BACK", T0 + 6 * HOUR, 1000.0)
    summary = evaluate_alerts(store, settings, [back.id])
    assert sorted(summary.cleared) == ["band:bias_overscan_adu:1-1.E:BIAS",
                                       "band:bias_overscan_adu:2-3.F:BIAS"]  # fmt: skip
    assert store.alerts(state="open") == []


def test_one_history_query_per_metric_and_frame_type(store: Store, tmp_path, monkeypatch) -> None:
    learned = BandSettings(metric="bias_overscan_adu", level="quadrant", learned=True, floor=2.0)
    settings = _settings(tmp_path, store, READ_NOISE, learned)
    units = [f"{r}-{c}.{q}" for r in range(1, 7) for c in range(1, 7) for q in "EFGH"]
    rng = np.random.default_rng(16)
    ids = []
    for i in range(24):
        e = _exposure(store, f"EUC_Q{i:02d}", T0 + i * HOUR)
        noise = rng.normal(3.0, 0.1, len(units))
        bias = rng.normal(1000.0, 0.5, len(units))
        metrics = {("read_noise_e", u): n for u, n in zip(units, noise, strict=True)}
        metrics |= {("bias_overscan_adu", u): b for u, b in zip(units, bias, strict=True)}
        _measure(store, e, metrics)
        ids.append(e.id)
    calls = []
    real = Store.metric_history
    monkeypatch.setattr(Store, "metric_history",
                        lambda self, *a: calls.append(a[:2]) or real(self, *a))  # fmt: skip
    summary = evaluate_alerts(store, settings, ids)
    assert sorted(calls) == [("bias_overscan_adu", "BIAS"), ("read_noise_e", "BIAS")]
    assert summary.exposures == 24 and summary.new_alarms == [] and summary.new_warnings == []


def test_quality_outcomes_are_alerts_and_clear(store: Store, tmp_path) -> None:
    settings = _settings(tmp_path, store, ignored_outcomes=["empty_zoom"])
    s1 = _exposure(store, "EUC_S1", T0, "SCIENCE")
    outcomes = (("missing_quadrant", "1-1.E", "no such extension"),
                ("empty_zoom", "FPA", "nothing there"))  # fmt: skip
    _measure(store, s1, {}, "images", outcomes, "empty")
    _measure(store, s1, {}, "gaia", (("no_gaia_match", "FPA", "no pairs"),), "empty")
    summary = evaluate_alerts(store, settings, [s1.id])
    assert summary.new_alarms == ["outcome:missing_quadrant:1-1.E:SCIENCE"]
    assert summary.new_warnings == ["outcome:no_gaia_match:FPA:SCIENCE"]  # empty_zoom: ignored
    missing = store.alerts(level="alarm")[0]
    assert (missing.kind, missing.metric, missing.stage, missing.exposure) == (
        "outcome", "missing_quadrant", "images", "EUC_S1")  # fmt: skip
    assert missing.message.startswith("missing_quadrant on 1-1.E (SCIENCE, stage images): no such")

    # a bias measured without them clears nothing (another frame type); the next science
    # frame's images clears the quadrant; its gaia failed: no_gaia_match stays open
    b = _exposure(store, "EUC_B1", T0 + HOUR, "BIAS")
    _measure(store, b, {}, "images")
    s2 = _exposure(store, "EUC_S2", T0 + 2 * HOUR, "SCIENCE")
    _measure(store, s2, {}, "images")
    _measure(store, s2, {}, "gaia", status="failed")
    summary = evaluate_alerts(store, settings, [b.id, s2.id])
    assert summary.cleared == ["outcome:missing_quadrant:1-1.E:SCIENCE"]
    assert [a.metric for a in store.alerts(state="open")] == ["no_gaia_match"]
    s3 = _exposure(store, "EUC_S3", T0 + 3 * HOUR, "SCIENCE")
    _measure(store, s3, {}, "gaia")
    assert evaluate_alerts(store, settings, [s3.id]).cleared == [
        "outcome:no_gaia_match:FPA:SCIENCE"
    ]
    assert store.alerts(state="open") == []


# -- telling people -------------------------------------------------------------------------


def _one_alarm(store: Store, settings: Settings, unit: str = "2-3.F") -> Any:
    e = _exposure(store, f"EUC_VIS_{unit}", T0, "BIAS")
    _measure(store, e, {("read_noise_e", unit): 9.5})
    return evaluate_alerts(store, settings, [e.id])


def test_webhook_gets_the_new_alarms_as_json(store: Store, tmp_path, hook, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    band = BandSettings(metric="read_noise_e", level="quadrant", high=4.5)
    settings = _settings(tmp_path, store, band, webhook_url=hook.url, retries=0,
                         site_url="https://ql.example.org")  # fmt: skip
    summary = _one_alarm(store, settings)
    assert summary.notified == {"webhook": 1} and summary.notify_errors == {}
    (post,) = hook.posts
    assert post["source"] == "viskom"
    assert post["text"].startswith("viskom: 1 new VIS alarm: read_noise_e on 2-3.F (BIAS)")
    (alarm,) = post["alarms"]
    assert {k: alarm[k] for k in ("metric", "unit", "frame_type", "level", "value", "high")} == {
        "metric": "read_noise_e", "unit": "2-3.F", "frame_type": "BIAS", "level": "alarm",
        "value": 9.5, "high": 4.5,
    }  # fmt: skip
    assert alarm["exposure"] == "EUC_VIS_2-3.F" and alarm["first_seen"].startswith("2024-07-13")
    assert alarm["url"] == "https://ql.example.org/exposures/EUC_VIS_2-3.F.html"
    assert alarm["url"] in post["text"]
    (stored,) = store.alerts()
    assert stored.notified_at is not None and stored.notified_via == ("webhook",)
    # told once: the next evaluation sends nothing more
    assert evaluate_alerts(store, settings, []).notified == {}
    assert len(hook.posts) == 1
    ours = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("viskom"))
    assert "sent by webhook" in ours and "s3cr3t-token" not in ours  # (urllib3's DEBUG has it)


def test_webhook_down_is_recorded_and_sent_next_time(store: Store, tmp_path, hook) -> None:
    band = BandSettings(metric="read_noise_e", level="quadrant", high=4.5)
    down = f"http://127.0.0.1:{_free_port()}/hooks/s3cr3t-token"  # nobody listens
    settings = _settings(tmp_path, store, band, webhook_url=down, retries=0, timeout_s=5)
    summary = _one_alarm(store, settings)  # does not raise
    assert summary.new_alarms and summary.notified == {}
    assert "refused" in summary.notify_errors["webhook"].lower()
    (alert,) = store.alerts()
    assert alert.notified_at is None and alert.notify_error.startswith("webhook: webhook at")
    assert "s3cr3t-token" not in alert.notify_error
    # the webhook is back (here: another address): the next evaluation sends it
    settings.alerts.webhook_url = hook.url
    assert evaluate_alerts(store, settings, []).notified == {"webhook": 1}
    (alert,) = store.alerts()
    assert alert.notified_at is not None and alert.notify_error is None
    assert [a["unit"] for a in hook.posts[0]["alarms"]] == ["2-3.F"]


def test_mail_through_smtp_with_credentials_from_the_environment(
    store: Store, tmp_path, monkeypatch, caplog
) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    caplog.set_level(logging.DEBUG)
    received: list[bytes] = []
    logins: list[tuple[bytes, bytes]] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802
            received.append(envelope.original_content or envelope.content)
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"pa55-w0rd-xyz", handled=False)

    port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port,
                            authenticator=authenticator, auth_require_tls=False)  # fmt: skip
    controller.start()
    try:
        monkeypatch.setenv("VISKOM_SMTP_USER", "viskom")
        monkeypatch.setenv("VISKOM_SMTP_PASSWORD", "pa55-w0rd-xyz")
        Settings()  # the credentials' variables are not settings: loading still works
        band = BandSettings(metric="read_noise_e", level="quadrant", high=4.5)
        settings = _settings(tmp_path, store, band, smtp_host="127.0.0.1", smtp_port=port,
                             smtp_starttls=False, smtp_from="viskom@example.org",
                             smtp_to=["vis-duty@example.org"], site_url="https://ql.example.org",
                             timeout_s=10)  # fmt: skip
        summary = _one_alarm(store, settings)
        assert summary.notified == {"email": 1}, summary.notify_errors
        assert logins == [(b"viskom", b"pa55-w0rd-xyz")]
        mail = message_from_bytes(received[0])
        assert mail["Subject"] == "[viskom] 1 new VIS alarm: read_noise_e on 2-3.F (BIAS)"
        assert mail["To"] == "vis-duty@example.org"
        body = mail.get_payload(decode=True).decode()
        for text in ("ALARM read_noise_e on 2-3.F (BIAS frames)", "value 9.5, band [-, 4.5]",
                     "exposure EUC_VIS_2-3.F", "first seen 2024-07-13 00:00:00 UTC",
                     "https://ql.example.org/exposures/EUC_VIS_2-3.F.html",
                     "viskom alerts ack"):  # fmt: skip
            assert text in body, text
        assert store.alerts()[0].notified_via == ("email",)

        # a wrong password: recorded (without the password), not fatal, tried again
        monkeypatch.setenv("VISKOM_SMTP_PASSWORD", "wrong-pa55-abc")
        summary = _one_alarm(store, settings, unit="1-1.E")
        assert "SMTPAuthenticationError" in summary.notify_errors["email"]
        failed = store.alerts(exposure="EUC_VIS_1-1.E")[0]
        assert failed.notified_at is None and "SMTPAuthentication" in failed.notify_error
        texts = [caplog.text, summary.line()] + [repr(a) for a in store.alerts(state=None)]
        for secret in ("pa55-w0rd-xyz", "wrong-pa55-abc"):
            assert not any(secret in t for t in texts)
    finally:
        controller.stop()


# -- the hook in run_pending ----------------------------------------------------------------


def test_run_pending_evaluates_what_it_measured(store: Store, tmp_path, monkeypatch) -> None:
    import viskom.pipeline.alerts as alerts_module
    import viskom.pipeline.service as service
    from viskom.pipeline.executors import SerialExecutor
    from viskom.pipeline.runner import RunSummary

    settings = _settings(tmp_path, store)
    e = _exposure(store, "EUC_RUN", T0)

    def fake_run(store: Store, *args: Any, **kwargs: Any) -> RunSummary:
        _measure(store, e, {("read_noise_e", "1-1.E"): 9.0})  # "measured" by this run
        return RunSummary(exposures=1, stages_ok=1)

    monkeypatch.setattr(service, "run_pipeline", fake_run)
    monkeypatch.setattr(service, "period_task", lambda task: service.PeriodProducts())
    done = service.run_pending(settings, SerialExecutor(), store=store, workers=1)
    assert done.alerts.error is None and done.alerts.exposures == 1
    assert done.alerts.new_warnings == ["band:read_noise_e:1-1.E:BIAS"]
    assert store.alerts()[0].exposure == "EUC_RUN"

    # an evaluation that breaks is logged and reported, never fatal for the measurements
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bands broke")

    monkeypatch.setattr(alerts_module, "evaluate_alerts", broken)
    done = service.run_pending(settings, SerialExecutor(), store=store, workers=1)
    assert done.alerts.error == "RuntimeError: bands broke"
    assert done.summary.stages_ok == 1 and store.metrics(exposures=["EUC_RUN"])


@pytest.mark.filterwarnings("ignore")
def test_run_pending_on_a_simulated_bias(store_url: str, tmp_path) -> None:
    """The real pipeline on a small simulated bias: every quadrant above a 0.1 e- read-noise
    band is an alert of that run."""
    from viskom.pipeline.executors import SerialExecutor
    from viskom.pipeline.register import ingest
    from viskom.pipeline.service import run_pending
    from viskom.sources.simulator import SimConfig, simulate_frame

    frame = simulate_frame(tmp_path / "raw", "bias", seed=1616, date_obs=T0,
                           config=SimConfig(geometry="small")).path  # fmt: skip
    band = BandSettings(metric="read_noise_e", level="ccd", high=0.1)
    cfg = AlertSettings(bands=[band])
    settings = Settings(data_root=tmp_path / "data", database_url=store_url, alerts=cfg)
    with Store(store_url) as store:
        ingest(store, [frame])
        done = run_pending(settings, SerialExecutor(), store=store, workers=1)
        assert done.alerts.error is None and done.alerts.exposures == 1
        assert len(done.alerts.new_alarms) == 36  # every CCD
        assert store.open_alert_counts() == {"warning": 0, "alarm": 36}
        assert {a.exposure for a in store.alerts()} == {frame.name.removesuffix(".fits")}


# -- the command line -----------------------------------------------------------------------


def test_cli_lists_and_acknowledges(store_url: str, tmp_path, monkeypatch) -> None:
    from viskom.cli import app

    runner = CliRunner()
    for key in ("VISKOM_CONFIG", "VISKOM_WORKERS"):
        monkeypatch.delenv(key, raising=False)
    assert runner.invoke(app, ["init", str(tmp_path / "proj")]).exit_code == 0
    monkeypatch.chdir(tmp_path / "proj")
    monkeypatch.setenv("VISKOM_DATABASE_URL", store_url)
    monkeypatch.setenv("COLUMNS", "200")  # the table as on a wide terminal
    with Store(store_url) as store:
        settings = _settings(tmp_path, store)
        _noise_series(store, [9.0, 3.0])  # opened, then cleared
        evaluate_alerts(store, settings, [e.id for e in store.list_exposures()])
        _one_alarm(store, settings, unit="1-1.F")
        (open_alert,) = store.alerts(state="open")

    result = runner.invoke(app, ["alerts"])
    assert result.exit_code == 0, result.output
    assert "1 open alert" in result.output and "1-1.F" in result.output
    assert "2-3.F" not in result.output  # cleared: only with --all
    result = runner.invoke(app, ["alerts", "--all", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["unit"], r["state"]) for r in rows] == [("1-1.F", "open"), ("2-3.F", "cleared")]
    assert rows[0]["first_seen"] == "2024-07-13T00:00:00+00:00" and rows[0]["value"] == 9.5
    result = runner.invoke(app, ["alerts", "--format", "csv"])
    assert result.stdout.splitlines()[0].startswith("id,state,level,kind,metric,unit")

    result = runner.invoke(app, ["alerts", "ack", str(open_alert.id), "--by", "vis-duty"])
    assert result.exit_code == 0, result.output
    assert f"acknowledged alert {open_alert.id}" in result.output
    result = runner.invoke(app, ["alerts", "--format", "json"])
    assert json.loads(result.stdout)[0]["acknowledged_by"] == "vis-duty"
    result = runner.invoke(app, ["alerts", "ack", "424242"])
    assert result.exit_code == 2
    assert "no alert with id 424242" in result.output
