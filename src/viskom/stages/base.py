"""What a stage is: a small declarative shell around a pure measurement.

A stage names itself, declares a version (bump it when its results change), the frame
types it applies to and the level it reports at, and turns one opened frame into metric
rows `(unit, metric, value)`. It does no database I/O: the runner records what it returns,
and records its exception, if any, for that exposure only.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from viskom.le1.frame import Le1Frame
from viskom.store.products import exposure_dir, product_path

MetricRow = tuple[str, str, float]


@dataclass(frozen=True)
class ExposureInfo:
    """What a stage may know about the exposure besides its pixels (picklable)."""

    exposure_id: int
    name: str
    path: str
    frame_type: str
    exptime: float | None
    products_dir: str
    quadrant_workers: int = 1  # processes a stage may use on this exposure's quadrants
    date_obs: str | None = None  # ISO UTC, for the product tree

    @property
    def product_folder(self) -> Path:
        """This exposure's folder in the product tree."""
        return exposure_dir(self.products_dir, self.name, self.date_obs)

    def product(self, product: str, ext: str) -> Path:
        """Path of one of this exposure's products, e.g. product('catalogue', 'parquet')."""
        return product_path(self.product_folder, self.name, product, ext)


@dataclass
class StageResult:
    """A stage's output: metric rows and any products it wrote (paths)."""

    metrics: list[MetricRow] = field(default_factory=list)
    products: list[Path] = field(default_factory=list)


class Stage(ABC):
    """Base class of every per-exposure stage."""

    name: ClassVar[str]
    version: ClassVar[str]
    frame_types: ClassVar[frozenset[str]]
    level: ClassVar[str] = "quadrant"
    #: Stages whose products this one reads; it runs after them and re-runs when they change.
    requires: ClassVar[tuple[str, ...]] = ()

    def applies_to(self, frame_type: str | None) -> bool:
        return (frame_type or "UNKNOWN").upper() in self.frame_types

    @staticmethod
    def config_of(settings: Any) -> dict[str, Any]:
        """The settings this stage depends on (hashed into its provenance); override."""
        return {}

    @abstractmethod
    def run(
        self, frame: Le1Frame, exposure: ExposureInfo, config: Mapping[str, Any]
    ) -> StageResult:
        """Measure one exposure; raise on failure (the runner records it)."""


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable short hash of a stage's configuration."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
