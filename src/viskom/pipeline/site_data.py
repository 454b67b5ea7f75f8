"""The dashboard's copy of the metrics, kept up to date incrementally.

One array per metric, exposures x units (FPA, the 36 CCDs, the 144 quadrants; NaN where
none), in `site/.cache/` with the exposure names in the order rows were added. An update
asks the store only for the metrics of the exposures measured since the last build and
replaces or appends their rows, so that a new exposure costs a few small queries, not a
reading of every number ever recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from viskom.le1.geometry import all_ccds, all_extnames
from viskom.store.atomic import atomic_path, write_text_atomic

#: The units of every metric array, in column order.
UNITS: tuple[str, ...] = ("FPA", *all_ccds(), *all_extnames())
COLUMN = {u: i for i, u in enumerate(UNITS)}
_CHUNK = 200  # exposure names per store query


@dataclass
class MetricCache:
    """Exposure names (row order) and, per metric, a float32 array exposures x UNITS."""

    folder: Path
    names: list[str] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> MetricCache:
        """The cache in `folder`, or an empty one (missing or unreadable: rebuilt)."""
        cache = cls(folder)
        index = folder / "index.json"
        try:
            meta = json.loads(index.read_text())
            if meta.get("units") != list(UNITS):
                return cache
            cache.names = list(meta["names"])
            for metric in meta["metrics"]:
                arr = np.load(folder / f"{metric}.npy")
                if arr.shape != (len(cache.names), len(UNITS)):
                    return cls(folder)
                cache.arrays[metric] = arr
        except (OSError, ValueError, KeyError):
            return cls(folder)
        return cache

    def save(self, metrics: Iterable[str] | None = None) -> None:
        """Write the arrays (all, or those of `metrics`) and the index."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for metric in self.arrays if metrics is None else metrics:
            with atomic_path(self.folder / f"{metric}.npy", suffix=".npy") as tmp:
                np.save(tmp, self.arrays[metric])
        meta = {"units": list(UNITS), "names": self.names, "metrics": sorted(self.arrays)}
        write_text_atomic(self.folder / "index.json", json.dumps(meta))

    def update(self, store: Any, exposures: Sequence[str]) -> set[str]:
        """Replace (or add) the rows of `exposures` from the store; returns the metrics whose
        arrays changed."""
        if not exposures:
            return set()
        row_of = {n: i for i, n in enumerate(self.names)}
        new = [n for n in exposures if n not in row_of]
        for name in new:
            row_of[name] = len(self.names)
            self.names.append(name)
        for metric, arr in self.arrays.items():
            if new:
                grown = np.full((len(self.names), len(UNITS)), np.nan, np.float32)
                grown[: arr.shape[0]] = arr
                self.arrays[metric] = arr = grown
            arr[[row_of[n] for n in exposures]] = np.nan  # what was there is replaced
        changed: set[str] = set()
        for i in range(0, len(exposures), _CHUNK):
            for r in store.metrics(exposures=list(exposures[i : i + _CHUNK])):
                col = COLUMN.get(r.unit)
                if col is None:
                    continue  # 3x3 blocks: not in the trends
                arr = self.arrays.get(r.metric)
                if arr is None:
                    arr = np.full((len(self.names), len(UNITS)), np.nan, np.float32)
                    self.arrays[r.metric] = arr
                arr[row_of[r.exposure], col] = np.nan if r.value is None else r.value
                changed.add(r.metric)
        return changed | ({m for m in self.arrays} if new else set())

    def forget(self, exposures: Iterable[str]) -> None:
        """Drop the rows of exposures the store no longer has."""
        gone = set(exposures)
        keep = [i for i, n in enumerate(self.names) if n not in gone]
        if len(keep) == len(self.names):
            return
        self.names = [self.names[i] for i in keep]
        for metric in self.arrays:
            self.arrays[metric] = self.arrays[metric][keep]
