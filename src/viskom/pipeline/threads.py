"""A bounded thread map: overlap reading and measuring without holding many quadrants."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int = 2, ahead: int = 2
) -> Iterator[R]:
    """Like map(fn, items), in order, with at most `workers + ahead` items in flight."""
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
