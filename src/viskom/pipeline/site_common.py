"""Small helpers shared by the dashboard's page builders: times, numbers, links, levels."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

LEVEL = {"ok": 0, "warning": 1, "failed": 1, "alarm": 2}


def iso(when: datetime | None) -> str:
    """'YYYY-MM-DD hh:mm:ss' in UTC, or '' for no time."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if when else ""


def num(value: float | None, digits: int = 4) -> str:
    """A number with `digits` significant digits, '–' for none or NaN."""
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


def src(root: str, path: str) -> str:
    """Link from a page whose way to the site root is `root` ('', '../') to a product file
    (its path relative to the data root; the site is the data root's `site/`)."""
    return f"{root}../{path}"


def epoch_ms(when: datetime | None) -> float:
    """Milliseconds since 1970 (what Bokeh's datetime axes take), NaN for none."""
    return when.timestamp() * 1000.0 if when else float("nan")


def worst(levels: list[str]) -> str:
    """The worst of some statuses ('ok' when none)."""
    return max(levels, key=lambda x: LEVEL.get(x, 0), default="ok")


_ABSOLUTE = re.compile(r"(?<![\w.:/])/(?:[^\s/:;,'\")]+/)+")


class Redactor:
    """Takes local paths out of text shown on a page (failure reasons, outcome messages):
    the data root, the raw folder and the home folder by name, any other absolute folder
    as '…/' (a file name stays: it says which file)."""

    def __init__(self, *roots: tuple[str, Path | None]) -> None:
        known = [(str(p), label) for label, p in roots if p is not None]
        known.append((str(Path.home()), "~"))
        self.known = sorted(known, key=lambda kv: -len(kv[0]))

    def __call__(self, text: str | None) -> str:
        if not text:
            return ""
        for path, label in self.known:
            text = text.replace(path, label)
        return _ABSOLUTE.sub("…/", text)
