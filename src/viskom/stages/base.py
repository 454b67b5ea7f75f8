"""What a stage is: a small declarative shell around a pure measurement.

A stage names itself, declares a version (bump it when its results change), the frame
types it applies to, the level it reports at and the primary header keywords it needs, and
turns one opened frame into metric rows `(unit, metric, value)` and quality outcomes. It
does no database I/O: the runner records what it returns, and records its exception, if
any, for that exposure only.

Quality outcomes say what a monitor could not find ("no_stellar_locus", "no_gaia_stars",
"no_goes_data") or left out (a quadrant with a bad GAIN). A stage that measured nothing
returns its outcomes and no metrics: the runner records it with status ``empty`` (done, not
re-run until its version or configuration changes; downstream stages still run). Outcomes
may also come with an ``ok`` result (a few quadrants without stars, the rest measured).
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from viskom.le1.frame import Le1Frame
from viskom.le1.header import QUADRANT_KEYWORDS
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


_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class QualityOutcome:
    """Something a monitor found nothing of, or left out, on one exposure and unit.

    `code` is a stable snake_case name (alerts and the dashboard key on it), `message` says
    why for a person, `unit` is "FPA", a CCD "R-C" or a quadrant "R-C.Q".
    """

    code: str
    message: str
    unit: str = "FPA"

    def __post_init__(self) -> None:
        if not _CODE.match(self.code):
            raise ValueError(f"outcome code {self.code!r} is not snake_case (<= 64 chars)")
        if not self.message:
            raise ValueError(f"outcome {self.code!r} needs a message")
        if not self.unit or len(self.unit) > 16:
            raise ValueError(f"outcome unit {self.unit!r} must have 1-16 characters")


@dataclass
class StageResult:
    """A stage's output: metric rows, products it wrote (paths) and quality outcomes.

    `measured` says whether the stage measured anything; None (default) means "yes, unless it
    returns outcomes and no metrics". A result that did not measure is recorded as ``empty``.
    """

    metrics: list[MetricRow] = field(default_factory=list)
    products: list[Path] = field(default_factory=list)
    outcomes: list[QualityOutcome] = field(default_factory=list)
    measured: bool | None = None

    @property
    def status(self) -> str:
        """'ok' when the stage measured, 'empty' when it ran and found nothing to measure."""
        measured = self.measured
        if measured is None:
            measured = bool(self.metrics) or not self.outcomes
        return "ok" if measured else "empty"

    @classmethod
    def nothing(cls, code: str, message: str, unit: str = "FPA", **kw: Any) -> StageResult:
        """A result that measured nothing, with one outcome saying why."""
        outcomes = [QualityOutcome(code, message, unit), *kw.pop("outcomes", [])]
        return cls(outcomes=outcomes, measured=False, **kw)


class Stage(ABC):
    """Base class of every per-exposure stage."""

    name: ClassVar[str]
    version: ClassVar[str]
    frame_types: ClassVar[frozenset[str]]
    level: ClassVar[str] = "quadrant"
    #: Stages whose products this one reads; it runs after them and re-runs when they change.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Primary header keywords the stage cannot run without: when one is unusable or missing,
    #: the runner records the stage as failed with that reason instead of running it.
    header_keywords: ClassVar[tuple[str, ...]] = ()

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


def usable_quadrants(
    frame: Le1Frame,
    keywords: tuple[str, ...] = QUADRANT_KEYWORDS,
    names: list[str] | None = None,
) -> tuple[list[str], list[QualityOutcome]]:
    """The quadrants (all, or `names`) whose `keywords` are usable, and a `bad_header_value`
    outcome for each quadrant left out (the reason is the header problem)."""
    bad = frame.quadrant_problems(keywords)
    todo = list(names) if names is not None else frame.quadrant_extnames
    outcomes = [
        QualityOutcome(
            "bad_header_value",
            "; ".join(p.describe() for p in bad[name]) + ": quadrant not measured",
            name,
        )
        for name in todo
        if name in bad
    ]
    return [n for n in todo if n not in bad], outcomes
