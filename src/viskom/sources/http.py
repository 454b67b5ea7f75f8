"""The HTTP layer of every viskom client (GOES, Gaia): one way to ask a service and to give up.

`HttpClient` holds a `requests.Session` whose adapter retries with urllib3's `Retry`: connection
errors, timeouts and HTTP 429/500/502/503/504 are retried `retries` times with exponential
backoff (`backoff_s`, 2x, 4x ... between attempts; a server's Retry-After is honoured up to
`MAX_WAIT_S`), and every call passes (connect, read) timeouts. Whatever still fails comes out
as one exception, `ServiceError` (the HTTP status if there was one, the body, the number of
attempts). `reask` repeats a call whose answer came but is unusable (a maintenance page instead
of a VOTable) on the same Retry schedule. `CircuitBreaker` remembers services that kept failing,
so that a client does not wait for them again during a cooldown.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import takewhile
from pathlib import Path
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from viskom.store.atomic import write_text_atomic

log = logging.getLogger(__name__)

USER_AGENT = "viskom/0.1 (Euclid VIS quick-look monitor)"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# The POSTs of viskom's clients are read-only queries (VizieR, TAP): safe to send again.
RETRY_METHODS = frozenset({"GET", "HEAD", "POST"})
MAX_WAIT_S = 60.0  # longest wait between two attempts (backoff or Retry-After)
NOT_FOUND = frozenset({404, 410})
_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-\d+/(\d+|\*)$")
_POOL_PREFIX = re.compile(r"^\S*(?:ConnectionPool|Connection)\(host=[^)]*\):\s*|^<[^>]*>:\s*")

_T = TypeVar("_T")


class ServiceError(Exception):
    """A request that gave no usable answer: `error` says why (HTTP status, timeout...).

    `status` is the final HTTP status (None when no answer came), `body` its content,
    `attempts` how many times the request was sent, `incomplete` True when the answer broke
    off while its body was read.
    """

    def __init__(
        self,
        error: str,
        url: str,
        *,
        status: int | None = None,
        reason: str = "",
        body: bytes = b"",
        attempts: int = 1,
        incomplete: bool = False,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.url = url
        self.status = status
        self.reason = reason
        self.body = body
        self.attempts = attempts
        self.incomplete = incomplete

    @property
    def not_found(self) -> bool:
        """The service answered that there is no such resource (HTTP 404 or 410)."""
        return self.status in NOT_FOUND


class _Retry(Retry):
    """urllib3's Retry with the backoff of viskom's clients: b, 2b, 4b... before each retry
    (urllib3 does not wait before the first one), and Retry-After capped at `backoff_max`."""

    def get_backoff_time(self) -> float:
        """Seconds to wait before the next attempt: backoff_factor x 2^(failures - 1)."""
        failures = len(list(takewhile(lambda h: h.redirect_location is None, self.history[::-1])))
        if failures == 0:
            return 0.0
        return float(min(self.backoff_max, self.backoff_factor * 2 ** (failures - 1)))

    def get_retry_after(self, response: Any) -> float | None:
        """The server's Retry-After in seconds, at most `backoff_max`."""
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(float(seconds), self.backoff_max)


def retry_policy(retries: int, backoff_s: float) -> Retry:
    """The Retry of viskom's sessions: `retries` retries on connection errors, timeouts, 429/5xx."""
    return _Retry(
        total=max(0, int(retries)),
        backoff_factor=max(0.0, float(backoff_s)),
        backoff_max=MAX_WAIT_S,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=RETRY_METHODS,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last answer comes back; ServiceError then says which
    )


def make_session(
    retry: Retry, user_agent: str = USER_AGENT, pool_size: int = 10
) -> requests.Session:
    """A requests.Session that retries every http(s) request per `retry`, keeping up to
    `pool_size` connections per host (one per thread that uses it at once)."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent
    return session


def _describe(exc: BaseException) -> tuple[str, bool]:
    """Short text of a requests/urllib3 failure, and whether the retries were used up."""
    cause: BaseException = exc
    exhausted = False
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, MaxRetryError):
        cause, exhausted = inner.reason or inner, True
    elif isinstance(inner, Urllib3Error):
        cause = inner
    text = _POOL_PREFIX.sub("", str(cause)) or repr(cause)
    return f"{type(cause).__name__}: {text}", exhausted


class CircuitBreaker:
    """Services (by key: a host, a service name) that failed, not to be called for `cooldown_s`.

    The default cooldown is infinite: a service that failed stays off for the breaker's
    lifetime. With `shared_file`, a trip is also written there (JSON: key -> wall time and
    why) and read by every breaker given the same file, for `shared_cooldown_s`: the clients
    that each exposure's stage makes, in any worker process, then fail at once after the
    first failed call of a run instead of each waiting through its timeouts and retries.
    """

    def __init__(
        self,
        cooldown_s: float = math.inf,
        *,
        shared_file: str | Path | None = None,
        shared_cooldown_s: float = 600.0,
    ) -> None:
        self.cooldown_s = float(cooldown_s)
        self.shared_file = Path(shared_file) if shared_file is not None else None
        self.shared_cooldown_s = float(shared_cooldown_s)
        self._open: dict[str, tuple[float, str]] = {}  # key -> (monotonic time, why)

    def trip(self, key: str, why: str) -> None:
        """Record that `key` failed (and why); it is not to be called during the cooldown."""
        self._open[key] = (time.monotonic(), why)
        if self.shared_file is not None:
            shared = self._shared()
            shared[key] = {"at": time.time(), "why": why}
            try:
                self.shared_file.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(self.shared_file, json.dumps(shared, indent=1) + "\n")
            except OSError as exc:  # a read-only cache: this breaker still holds the trip
                log.warning("cannot record %s as unreachable in %s: %s", key, self.shared_file, exc)

    def reason(self, key: str) -> str | None:
        """Why `key` is not to be called now, or None when it may be."""
        hit = self._open.get(key)
        if hit and time.monotonic() - hit[0] < self.cooldown_s:
            return hit[1]
        entry = self._shared().get(key)
        if isinstance(entry, dict):
            age = time.time() - float(entry.get("at", 0.0))
            if 0 <= age < self.shared_cooldown_s:
                at = datetime.fromtimestamp(float(entry["at"]), UTC).strftime("%H:%M:%S UTC")
                left = self.shared_cooldown_s - age
                return f"{entry.get('why', '?')} (failed at {at}; tried again in {left:.0f} s)"
        return None

    def _shared(self) -> dict[str, Any]:
        if self.shared_file is None:
            return {}
        try:
            data = json.loads(self.shared_file.read_text())
        except (OSError, ValueError):  # absent, or half-written by an older viskom: none
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def open(self) -> dict[str, str]:
        """The keys not to be called now, and why."""
        keys = set(self._open) | set(self._shared())
        return {k: why for k in sorted(keys) if (why := self.reason(k)) is not None}


class HttpClient:
    """A retrying requests.Session with timeouts on every call, and a circuit breaker.

    One per client object (GoesClient, GaiaClient): `session` may be handed to libraries that
    make the requests themselves (astroquery's query objects), `send` then turns their outcome
    into a response or a ServiceError like `request` does.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        breaker_cooldown_s: float = math.inf,
        breaker_file: str | Path | None = None,
        breaker_shared_s: float = 600.0,
        user_agent: str = USER_AGENT,
        pool_size: int = 10,
    ) -> None:
        self.timeout_s = float(timeout_s)
        self.retries = max(0, int(retries))
        self.retry = retry_policy(self.retries, backoff_s)
        self.session = make_session(self.retry, user_agent, pool_size)
        self.breaker = CircuitBreaker(
            breaker_cooldown_s, shared_file=breaker_file, shared_cooldown_s=breaker_shared_s
        )

    @property
    def timeouts(self) -> tuple[float, float]:
        """(connect, read) timeouts in seconds, passed on every call."""
        return self.timeout_s, self.timeout_s

    def send(self, call: Callable[[], requests.Response], url: str = "") -> requests.Response:
        """The response of `call()` (a request through `session`); ServiceError unless 2xx/3xx.

        `url` names the request in errors when no response came (else the response's URL).
        """
        try:
            resp = call()
        except requests.RequestException as exc:
            error, exhausted = _describe(exc)
            attempts = self.retries + 1 if exhausted else 1
            raise ServiceError(error, url, attempts=attempts) from None
        if resp.status_code >= 400:
            retries = getattr(resp.raw, "retries", None)
            attempts = len(retries.history) + 1 if retries is not None else 1
            try:
                body = resp.content
            except requests.RequestException:
                body = b""
            resp.close()
            raise ServiceError(
                f"HTTP {resp.status_code} {resp.reason}",
                resp.url or url,
                status=resp.status_code,
                reason=str(resp.reason or ""),
                body=body or b"",
                attempts=attempts,
            )
        return resp

    def request(self, method: str, url: str, *, sink: Path | None = None, **kwargs: Any) -> bytes:
        """The body of a request (or, with `sink`, streamed into that file); ServiceError if not.

        A body that breaks off (shorter than its Content-Length: urllib3 checks it) is asked
        for again, on the same Retry schedule as a failed request.
        """
        return self.reask(
            lambda: self._once(method, url, sink, kwargs),
            ServiceError,
            when=lambda exc: getattr(exc, "incomplete", False),
        )

    def _once(self, method: str, url: str, sink: Path | None, kwargs: dict[str, Any]) -> bytes:
        resp = self.send(  # the body is read below, where a broken-off one is told apart
            lambda: self.session.request(method, url, timeout=self.timeouts, stream=True, **kwargs),
            url,
        )
        with resp:
            try:
                if sink is None:
                    return resp.content
                with sink.open("wb") as fh:
                    for chunk in resp.iter_content(_CHUNK):
                        fh.write(chunk)
                return b""
            except requests.RequestException as exc:
                raise ServiceError(_describe(exc)[0], url, incomplete=True) from None

    def download(
        self,
        url: str,
        part: Path,
        *,
        auth: Any = None,
        on_attempt: Callable[[int, int | None], Callable[[bytes], None]] | None = None,
    ) -> int:
        """Stream `url` into the file `part`, resuming what it already holds with an HTTP
        Range request; a body that breaks off is asked for again from where it stopped, on
        the Retry schedule. Returns the file's size once the server has sent everything
        (ServiceError as `request`; 416 on a file that is already whole is success).

        `on_attempt(offset, total)`, when given, is called as each answer's body starts
        (written from byte `offset` of the file; `total` its full size when the server
        says it) and returns what is handed every chunk written after that: a check or a
        progress bar sees each byte once, in order, also across resumed attempts."""
        return self.reask(
            lambda: self._resume(url, part, auth, on_attempt),
            ServiceError,
            when=lambda exc: getattr(exc, "incomplete", False),
        )

    def _resume(
        self,
        url: str,
        part: Path,
        auth: Any,
        on_attempt: Callable[[int, int | None], Callable[[bytes], None]] | None,
    ) -> int:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            resp = self.send(
                lambda: self.session.get(
                    url, timeout=self.timeouts, stream=True, headers=headers, auth=auth
                ),
                url,
            )
        except ServiceError as exc:
            if exc.status == 416 and have:  # nothing after what we hold: it is all there
                return have
            raise
        with resp:
            total: int | None = None
            mode = "wb"
            found = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if resp.status_code == 206 and found and int(found.group(1)) == have:
                mode = "ab"
                total = int(found.group(2)) if found.group(2) != "*" else None
            elif resp.headers.get("Content-Length", "").isdigit():
                total = int(resp.headers["Content-Length"])  # the whole body, from byte 0
            consume = on_attempt(have if mode == "ab" else 0, total) if on_attempt else None
            try:
                with part.open(mode) as fh:
                    # read1 hands over every byte that arrived, also when the body breaks
                    # off next (iter_content drops the last partial chunk); the bytes as
                    # served, not decoded (a .fits.gz stays a gzip stream)
                    while chunk := resp.raw.read1(_CHUNK):
                        fh.write(chunk)
                        if consume is not None:
                            consume(chunk)
            except (requests.RequestException, Urllib3Error, OSError) as exc:
                raise ServiceError(_describe(exc)[0], url, incomplete=True) from None
        size = part.stat().st_size
        if total is not None and size < total:
            raise ServiceError(f"body broke off at {size} of {total} bytes", url, incomplete=True)
        return size

    def get(self, url: str, *, sink: Path | None = None, **kwargs: Any) -> bytes:
        """GET: see `request`."""
        return self.request("GET", url, sink=sink, **kwargs)

    def post(self, url: str, **kwargs: Any) -> bytes:
        """POST: see `request`."""
        return self.request("POST", url, **kwargs)

    def reask(
        self,
        once: Callable[[], _T],
        unusable: type[Exception] | tuple[type[Exception], ...],
        when: Callable[[Exception], bool] = lambda exc: True,
    ) -> _T:
        """`once()`, asked again while it raises `unusable` (and `when` agrees) on the session's
        Retry schedule (as many attempts, same backoff); the last such error is re-raised."""
        retry = self.retry
        while True:
            try:
                return once()
            except unusable as exc:
                if not when(exc):
                    raise
                try:
                    retry = retry.increment(error=exc)
                except MaxRetryError:
                    raise exc from None
                retry.sleep()


def wait_until(done: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> bool:
    """Ask `done()` every `interval_s` until it says True (True) or `timeout_s` passed (False):
    the wait of a service's asynchronous job (a TAP query's phase)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
    return True


__all__ = [
    "MAX_WAIT_S",
    "RETRY_METHODS",
    "RETRY_STATUSES",
    "USER_AGENT",
    "CircuitBreaker",
    "HttpClient",
    "ServiceError",
    "make_session",
    "retry_policy",
    "wait_until",
]
