"""Executors: where per-exposure tasks run. A local process pool by default.

An executor takes a picklable top-level function and its tasks and yields
`(task, result or exception)` as tasks finish, so the caller can record each outcome at
once. A Dask distributed client fits the same interface (submit + as_completed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs `fn(task)` for each task; yields (task, result-or-exception) in completion order."""

    def map_unordered(
        self, fn: Callable[[T], R], tasks: Iterable[T]
    ) -> Iterator[tuple[T, R | BaseException]]: ...


class SerialExecutor:
    """Everything in this process, one task after the other (debugging, tiny runs)."""

    def map_unordered(
        self, fn: Callable[[T], R], tasks: Iterable[T]
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

    def map_unordered(
        self, fn: Callable[[T], R], tasks: Iterable[T]
    ) -> Iterator[tuple[T, R | BaseException]]:
        pending_tasks = iter(tasks)
        pool = ProcessPoolExecutor(max_workers=self.workers)
        in_flight: dict[Future[Any], T] = {}
        try:
            while True:
                while len(in_flight) < 2 * self.workers:
                    task = next(pending_tasks, None)
                    if task is None:
                        break
                    in_flight[pool.submit(fn, task)] = task
                if not in_flight:
                    return
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    task = in_flight.pop(fut)
                    try:
                        yield task, fut.result()
                    except BrokenProcessPool as exc:
                        broken = True
                        yield task, RuntimeError(f"worker process died: {exc}")
                    except Exception as exc:
                        yield task, exc
                if broken:
                    for task in list(in_flight.values()):
                        yield task, RuntimeError("worker pool broke while this task was queued")
                    in_flight.clear()
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = ProcessPoolExecutor(max_workers=self.workers)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def make_executor(kind: str, workers: int) -> Executor:
    """The executor named in the settings (`process` or `serial`)."""
    if kind == "serial" or workers <= 1:
        return SerialExecutor()
    if kind == "process":
        return ProcessExecutor(workers)
    raise ValueError(f"unknown executor {kind!r} (expected 'process' or 'serial')")
