"""Apply a per-quadrant measurement to a frame: in file order, on threads or processes.

`fn(quadrant, *args)` must be a top-level (picklable) function. With `workers > 1` on a
plain FITS file, the quadrants are shared out to forked worker processes, each of which
opens the frame itself (memory-mapped reads, one quadrant in memory at a time); gzip
streams are read sequentially in this process. Results come back keyed by EXTNAME.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

from viskom.le1.frame import Le1Frame, Quadrant

R = TypeVar("R")
T = TypeVar("T")


def die_with_parent() -> None:
    """A pool worker's initializer: Ctrl-C is for the parent (which stops handing out work
    and lets this one finish its task), and Linux kills this process when its parent dies,
    so that a worker whose run was killed with `kill -9` does not live on, orphaned."""
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM kills, whatever handler the parent had (a pool that breaks terminates its
    # other workers; they must not live on)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not glibc: the next run reaps nothing, but runs
        return
    if os.getppid() != parent:  # the parent died before the request: go now
        os._exit(1)


def map_quadrants(
    frame: Le1Frame,
    fn: Callable[..., R],
    *,
    args: Sequence[Any] = (),
    names: Sequence[str] | None = None,
    workers: int = 1,
) -> dict[str, R]:
    """`{extname: fn(quadrant, *args)}` for the frame's quadrants (all, or `names`)."""
    todo = list(names) if names is not None else frame.quadrant_extnames
    workers = min(workers, len(todo))
    if workers > 1 and not frame.gzipped:
        chunks = [todo[i::workers] for i in range(workers)]
        jobs = [(str(frame.path), chunk, fn, tuple(args)) for chunk in chunks]
        out: dict[str, R] = {}
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=die_with_parent
        ) as pool:
            for part in pool.map(_run_chunk, jobs):
                out.update(part)
        return {n: out[n] for n in todo}
    # One process: a second thread reads ahead while this one measures (numpy releases
    # the GIL while copying pixels). Two processes with two threads each contend and lose
    # more than they gain (measured), so workers use one thread.
    return _apply(frame, todo, fn, tuple(args), threads=2)


def _apply(
    frame: Le1Frame, names: list[str], fn: Callable[..., R], args: tuple, threads: int
) -> dict[str, R]:
    def one(quad: Quadrant) -> tuple[str, R]:
        return quad.extname, fn(quad, *args)

    return dict(bounded_map(one, frame.iter_quadrants(names), workers=threads, ahead=2))


def _run_chunk(job: tuple[str, list[str], Callable[..., R], tuple]) -> dict[str, R]:
    """Worker-process entry: open the frame, measure a share of its quadrants."""
    path, names, fn, args = job
    with Le1Frame(path) as frame:
        return _apply(frame, names, fn, args, threads=1)


def bounded_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int = 2, ahead: int = 2
) -> Iterator[R]:
    """Like map(fn, items), in order, with at most `workers + ahead` items in flight (overlap
    reading and measuring without holding many quadrants)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        window: deque[Future[R]] = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= workers + ahead:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
