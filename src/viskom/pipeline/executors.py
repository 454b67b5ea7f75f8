"""Executors: where per-exposure tasks run. A local process pool by default, or Dask.

An executor takes a picklable top-level function and its tasks and yields
`(task, result or exception)` as tasks finish, so the caller can record each outcome at
once. `DaskExecutor` does it on a Dask distributed cluster (submit + as_completed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import Any, Protocol, TypeVar

from viskom.le1.quadrant_map import die_with_parent
from viskom.pipeline.failures import WorkerDied

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs `fn(task)` for each task; yields (task, result-or-exception) in completion order.
    `meanwhile`: called once in this process while the first tasks run elsewhere (a local
    pool's processes; not called where the tasks run in this process or on a cluster)."""

    def map_unordered(
        self,
        fn: Callable[[T], R],
        tasks: Iterable[T],
        meanwhile: Callable[[], object] | None = None,
    ) -> Iterator[tuple[T, R | BaseException]]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Everything in this process, one task after the other (debugging, tiny runs)."""

    def close(self) -> None:
        """Nothing to release."""

    def map_unordered(
        self,
        fn: Callable[[T], R],
        tasks: Iterable[T],
        meanwhile: Callable[[], object] | None = None,
    ) -> Iterator[tuple[T, R | BaseException]]:
        for task in tasks:
            try:
                yield task, fn(task)
            except Exception as exc:  # recorded by the caller, never stops the run
                yield task, exc


class ProcessExecutor:
    """A local pool of worker processes; at most `2 * workers` tasks in flight.

    A worker that dies (killed, out of memory) breaks the pool: the tasks it held are
    reported as failed and a fresh pool takes the rest.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))

    def close(self) -> None:
        """Nothing to release: each call's pool is shut down when it ends."""

    def _pool(self) -> ProcessPoolExecutor:
        # workers die with this process (no orphans after a kill -9 of the run)
        return ProcessPoolExecutor(max_workers=self.workers, initializer=die_with_parent)

    def map_unordered(
        self,
        fn: Callable[[T], R],
        tasks: Iterable[T],
        meanwhile: Callable[[], object] | None = None,
    ) -> Iterator[tuple[T, R | BaseException]]:
        pending_tasks = iter(tasks)
        pool = self._pool()
        in_flight: dict[Future[Any], T] = {}
        aborted = False
        try:
            while True:
                while len(in_flight) < 2 * self.workers:
                    task = next(pending_tasks, None)
                    if task is None:
                        break
                    in_flight[pool.submit(fn, task)] = task
                if not in_flight:
                    return
                if meanwhile is not None:  # the pool's processes are forked: use the wait
                    meanwhile()
                    meanwhile = None
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    task = in_flight.pop(fut)
                    try:
                        yield task, fut.result()
                    except BrokenProcessPool as exc:
                        broken = True
                        yield task, WorkerDied(f"worker process died: {exc}")
                    except Exception as exc:
                        yield task, exc
                if broken:
                    for task in list(in_flight.values()):
                        yield task, WorkerDied("worker pool broke while this task was queued")
                    in_flight.clear()
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = self._pool()
        except BaseException:  # Ctrl-C twice, or the caller gave up: do not wait for them
            aborted = True
            raise
        finally:
            pool.shutdown(wait=not aborted, cancel_futures=True)


class DaskExecutor:
    """Tasks on a Dask distributed cluster: an existing scheduler (`tcp://host:8786`), or a
    `LocalCluster` of `workers` single-threaded worker processes started for the run.

    Results stream back in completion order (`as_completed`); a task's exception, or a worker
    lost with its task, comes back as that task's exception. Dask workers are daemonic and
    cannot fork process pools, so stages get no quadrant processes (`nested_pools`).
    """

    nested_pools = False

    def __init__(self, workers: int, scheduler: str | None = None) -> None:
        self.workers = max(1, int(workers))
        self.scheduler = scheduler
        self._client: Any = None
        self._cluster: Any = None

    def client(self) -> Any:
        """The cluster's client, connected (and the LocalCluster started) on first use and
        kept for the calibrations, the exposures and the period products of a run."""
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.scheduler:
                self._client = Client(self.scheduler)
            else:
                self._cluster = LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True,
                    dashboard_address=None, silence_logs=logging.ERROR,
                )  # fmt: skip
                self._client = Client(self._cluster)
        return self._client

    def close(self) -> None:
        """Disconnect, and stop the LocalCluster if this executor started one."""
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None

    def map_unordered(
        self,
        fn: Callable[[T], R],
        tasks: Iterable[T],
        meanwhile: Callable[[], object] | None = None,
    ) -> Iterator[tuple[T, R | BaseException]]:
        from distributed import as_completed

        pending = iter(tasks)
        first = next(pending, None)
        if first is None:
            return
        client = self.client()
        # a bounded number in flight, so that a stop request (a generator that ends) leaves
        # the rest unsubmitted
        slots = 2 * max(self.workers, sum(client.nthreads().values()) or 1)
        futures: dict[Any, T] = {}
        queue = as_completed()
        for task in (first, *islice(pending, slots - 1)):
            future = client.submit(fn, task, pure=False)
            futures[future] = task
            queue.add(future)
        for future in queue:
            task = futures.pop(future)
            try:
                yield task, future.result()
            except Exception as exc:  # recorded by the caller, never stops the run
                yield task, exc
            more = next(pending, None)
            if more is not None:
                nxt = client.submit(fn, more, pure=False)
                futures[nxt] = more
                queue.add(nxt)


def make_executor(kind: str, workers: int, scheduler: str | None = None) -> Executor:
    """The executor named in the settings: `process`, `serial` or `dask` (a LocalCluster of
    `workers` processes, or the cluster at `scheduler`)."""
    if kind == "dask":
        return DaskExecutor(workers, scheduler)
    if kind == "serial" or workers <= 1:
        return SerialExecutor()
    if kind == "process":
        return ProcessExecutor(workers)
    raise ValueError(f"unknown executor {kind!r} (expected 'process', 'serial' or 'dask')")
