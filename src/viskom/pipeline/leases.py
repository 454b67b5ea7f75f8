"""Claims from a worker's side: its own database connection, a lease kept alive by a
heartbeat thread, and waiting for a unit another run holds.

A task carries the settings and names, never a connection: each worker process opens the
store once (`worker_store`) and keeps it. While a task holds claims, a `LeaseKeeper` thread
renews their lease every third of it; a worker killed with `kill -9` stops renewing, and its
units are free for others once the lease has run out.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

from viskom.store import Store
from viskom.store.claims import ClaimRequest

log = logging.getLogger(__name__)

_STORES: dict[tuple[int, str], Store] = {}
_LOCK = threading.Lock()


def new_token() -> str:
    """A fresh owner token for one task (a retried task keeps its token, so it may take its
    own claims back at once)."""
    return uuid.uuid4().hex


def share_store(store: Store, url: str) -> None:
    """Let work done in this process use `store` for `url` (an in-memory database, or simply
    one connection pool less)."""
    with _LOCK:
        _STORES[(os.getpid(), url)] = store


def worker_store(url: str) -> Store:
    """This process's store for `url`, opened on first use (a forked child opens its own)."""
    key = (os.getpid(), url)
    with _LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = Store(url)
        return store


class LeaseKeeper:
    """Renews the lease of everything `owner` holds every `lease_s / 3` seconds, in a
    daemon thread, until the block ends (a database that does not answer is logged and tried
    again at the next beat)."""

    def __init__(self, store: Store, owner: str, lease_s: float) -> None:
        self.store, self.owner, self.lease_s = store, owner, float(lease_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{owner[:8]}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 3.0):
            try:
                if self.store.renew_claims(self.owner, lease_s=self.lease_s) == 0:
                    # nothing held any more (all recorded, or taken over after a lapse: the
                    # record then refuses this owner's result, see Store.check_claim)
                    continue
            except Exception as exc:  # the next beat tries again; the lease may run out
                log.warning("could not renew the lease of %s: %s", self.owner[:8], exc)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


@contextmanager
def holding(
    store: Store,
    key: str,
    stage: str,
    owner: str,
    *,
    lease_s: float,
    wait_s: float,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[bool]:
    """Hold the unit `key` for the block (yields True), waiting up to `wait_s` while another
    run holds it; yields False when it stayed taken. Released at the end, whatever happens."""
    deadline = time.monotonic() + wait_s
    request = ClaimRequest(key, stage)
    got = bool(store.claim([request], owner, lease_s=lease_s))
    pause = threading.Event()  # never set: a wait that a signal handler does not break
    while not got and time.monotonic() < deadline and not (should_stop and should_stop()):
        pause.wait(min(1.0, max(0.05, lease_s / 10.0)))
        got = bool(store.claim([request], owner, lease_s=lease_s))
    try:
        if got:
            with LeaseKeeper(store, owner, lease_s):
                yield True
        else:
            yield False
    finally:
        if got:
            store.release_claims(owner, [key])


def settings_of_worker(settings: Any) -> Any:
    """The settings a worker uses: its own when `VISKOM_WORKER_CONFIG` names a settings file
    (a machine that mounts the data elsewhere), else those the task brought."""
    path = os.environ.get("VISKOM_WORKER_CONFIG")
    if not path:
        return settings
    from viskom.config import load_settings

    return _cached_settings(path, load_settings)


_SETTINGS: dict[str, Any] = {}


def _cached_settings(path: str, loader: Callable[[str], Any]) -> Any:
    if path not in _SETTINGS:
        _SETTINGS[path] = loader(path)
    return _SETTINGS[path]
