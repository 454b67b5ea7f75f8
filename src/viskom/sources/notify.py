"""Telling people about new alarms: a JSON POST to a webhook and/or an e-mail.

One message per channel and evaluation, with every alarm not yet sent on that channel (a
batch: 144 quadrants going bad at once make one message, not 144). Each alarm says what,
where, how much, against which band, since when, on which exposure, with a link to the
exposure's page when `site_url` is set. The webhook gets `{"text": ..., "alarms": [...]}`
(Mattermost and Slack show `text`; a script reads `alarms`) through the retrying HTTP
client; the e-mail goes over SMTP (STARTTLS), user and password only from the environment
(VISKOM_SMTP_USER, VISKOM_SMTP_PASSWORD), never logged or stored. A channel that fails is
recorded on each alarm and tried again at the next evaluation; the others are not resent.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote, urlsplit

from viskom.sources.http import HttpClient, ServiceError
from viskom.store import AlertNotification, AlertRecord, Store

log = logging.getLogger("viskom.alerts")

SMTP_USER_ENV = "VISKOM_SMTP_USER"
SMTP_PASSWORD_ENV = "VISKOM_SMTP_PASSWORD"
#: Alarms listed in a webhook's text (all of them are in its `alarms`) and a mail's subject.
MAX_TEXT_LINES = 20


class NotifyError(Exception):
    """A message that could not be sent; the text names no secret (URL token, password)."""


@dataclass
class NotifyReport:
    """Alarms sent per channel, and why a channel failed."""

    sent: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def send_new_alarms(store: Store, cfg: Any, *, client: HttpClient | None = None) -> NotifyReport:
    """Send the open alarms nobody was told of (`Store.alerts_to_notify`) on every channel of
    `cfg` ([alerts] settings) that has not taken them yet, and record the outcome."""
    report = NotifyReport()
    channels = tuple(cfg.channels)
    pending = store.alerts_to_notify() if channels else []
    if not pending:
        return report
    via = {a.id: set(a.notified_via) for a in pending}
    failed: dict[int, list[str]] = {}
    for channel in channels:
        todo = [a for a in pending if channel not in via[a.id]]
        if not todo:
            continue
        try:
            if channel == "webhook":
                http = client or HttpClient(
                    timeout_s=cfg.timeout_s, retries=cfg.retries, backoff_s=2.0
                )
                post_webhook(http, cfg.webhook_url, webhook_payload(todo, cfg.site_url))
            else:
                message = mail_message(todo, cfg.site_url, cfg.smtp_from, cfg.smtp_to)
                send_mail(message, cfg.smtp_host, cfg.smtp_port, cfg.smtp_starttls, cfg.timeout_s)
        except Exception as exc:  # any failure of one channel: recorded, tried again later
            if not isinstance(exc, NotifyError):
                exc = NotifyError(f"{channel}: {type(exc).__name__}: {exc}")
            report.errors[channel] = str(exc)
            for a in todo:
                failed.setdefault(a.id, []).append(f"{channel}: {exc}")
            log.warning("%d alarm(s) not sent by %s: %s (tried again at the next evaluation)",
                        len(todo), channel, exc)  # fmt: skip
            continue
        for a in todo:
            via[a.id].add(channel)
        report.sent[channel] = len(todo)
        log.info("%d alarm(s) sent by %s", len(todo), channel)
    store.record_notifications(
        AlertNotification(
            a.id,
            tuple(sorted(via[a.id])),
            done=set(channels) <= via[a.id],
            error="; ".join(failed[a.id]) if a.id in failed else None,
        )
        for a in pending
    )
    return report


# -- what the messages say -------------------------------------------------------------------


def exposure_link(alert: AlertRecord, site_url: str | None) -> str | None:
    """The page of the alert's last breaching exposure on the site, if there is a site."""
    if not site_url or not alert.exposure:
        return None
    return f"{site_url.rstrip('/')}/exposures/{quote(alert.exposure)}.html"


def _time(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _band(alert: AlertRecord) -> str:
    if alert.low is None and alert.high is None:
        return "-"
    low = "-" if alert.low is None else f"{alert.low:.6g}"
    high = "-" if alert.high is None else f"{alert.high:.6g}"
    return f"[{low}, {high}]"


def alarm_fields(alert: AlertRecord, site_url: str | None) -> dict[str, Any]:
    """An alarm as the JSON a script reads."""
    return {
        "id": alert.id,
        "key": alert.key,
        "kind": alert.kind,
        "level": alert.level,
        "metric": alert.metric,
        "unit": alert.unit,
        "frame_type": alert.frame_type,
        "stage": alert.stage,
        "value": alert.value,
        "low": alert.low,
        "high": alert.high,
        "exposure": alert.exposure,
        "first_seen": alert.first_seen.isoformat() if alert.first_seen else None,
        "last_seen": alert.last_seen.isoformat() if alert.last_seen else None,
        "breaches": alert.breaches,
        "message": alert.message,
        "url": exposure_link(alert, site_url),
    }


def alarm_lines(alert: AlertRecord, site_url: str | None) -> list[str]:
    """An alarm for a person: what and where, value and band, exposure, since when, link."""
    what = "quality outcome" if alert.kind == "outcome" else "metric"
    lines = [
        f"ALARM {alert.metric} on {alert.unit} ({alert.frame_type} frames)  [alert {alert.id}]",
        f"  {alert.message}",
    ]
    if alert.kind == "band":
        lines.append(f"  {what} value {alert.value:.6g}, band {_band(alert)}"
                     if alert.value is not None else f"  band {_band(alert)}")  # fmt: skip
    lines += [
        f"  exposure {alert.exposure or '(deleted)'} (DATE-OBS {_time(alert.last_seen)})",
        f"  first seen {_time(alert.first_seen)}, last seen {_time(alert.last_seen)}, "
        f"{alert.breaches} in a row",
    ]
    link = exposure_link(alert, site_url)
    if link:
        lines.append(f"  {link}")
    return lines


def _headline(alerts: Sequence[AlertRecord]) -> str:
    first = alerts[0]
    more = f" and {len(alerts) - 1} more" if len(alerts) > 1 else ""
    plural = "s" if len(alerts) > 1 else ""
    return (
        f"{len(alerts)} new VIS alarm{plural}: {first.metric} on {first.unit} "
        f"({first.frame_type}){more}"
    )


def webhook_payload(alerts: Sequence[AlertRecord], site_url: str | None) -> dict[str, Any]:
    """The webhook's JSON: a readable `text` (the first MAX_TEXT_LINES alarms) and every
    alarm's fields in `alarms`."""
    lines = [f"viskom: {_headline(alerts)}"]
    for a in alerts[:MAX_TEXT_LINES]:
        link = exposure_link(a, site_url)
        lines.append(f"- {a.message} (alert {a.id}, {a.exposure or 'exposure deleted'})"
                     + (f" {link}" if link else ""))  # fmt: skip
    if len(alerts) > MAX_TEXT_LINES:
        lines.append(f"... and {len(alerts) - MAX_TEXT_LINES} more (`viskom alerts`)")
    return {
        "source": "viskom",
        "text": "\n".join(lines),
        "alarms": [alarm_fields(a, site_url) for a in alerts],
    }


def mail_message(
    alerts: Sequence[AlertRecord], site_url: str | None, sender: str, recipients: Sequence[str]
) -> EmailMessage:
    """The alarm mail: one block per alarm, then how to acknowledge."""
    message = EmailMessage()
    message["Subject"] = f"[viskom] {_headline(alerts)}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    body = [f"{_headline(alerts)}.", ""]
    for a in alerts:
        body += [*alarm_lines(a, site_url), ""]
    body += [
        "Acknowledge with `viskom alerts ack ID --by NAME`; `viskom alerts` lists the open "
        "alerts. An alert clears by itself when the values are back in band.",
    ]
    message.set_content("\n".join(body))
    return message


# -- sending ---------------------------------------------------------------------------------


def _scrub(text: str, secrets: Sequence[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def post_webhook(client: HttpClient, url: str, payload: dict[str, Any]) -> None:
    """POST `payload` as JSON to `url`; NotifyError (naming only the host) if it failed."""
    parts = urlsplit(url)
    try:
        client.post(url, json=payload)
    except ServiceError as exc:
        why = _scrub(exc.error, [url, parts.path if len(parts.path) > 1 else None, parts.query])
        raise NotifyError(f"webhook at {parts.hostname}: {why}") from None


def send_mail(
    message: EmailMessage, host: str, port: int, starttls: bool, timeout_s: float
) -> None:
    """Send `message` through the SMTP server, logging in with VISKOM_SMTP_USER and
    VISKOM_SMTP_PASSWORD when set; NotifyError (without the password) if it failed."""
    user = os.environ.get(SMTP_USER_ENV) or None
    password = os.environ.get(SMTP_PASSWORD_ENV) or None
    try:
        with smtplib.SMTP(host, port, timeout=timeout_s) as smtp:
            smtp.ehlo()
            if starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if user:
                smtp.login(user, password or "")
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        why = _scrub(f"{type(exc).__name__}: {exc}", [password])
        raise NotifyError(f"mail through {host}:{port}: {why}") from None
