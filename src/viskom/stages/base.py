"""What a stage is: a small declarative shell around a pure measurement (stpipe's Step,
Rubin's PipelineTask connections).

A stage declares its name, version (bump it when its results change), the frame types it
applies to, the products of other stages it reads, the calibrations and external inputs
(Gaia cone, GOES series) it needs, its settings section, the products it writes and the
primary header keywords it cannot run without; its metrics are registered in
`viskom.metrics`. `run` turns one opened frame and the inputs handed in into metric rows
`(unit, metric, value)`, product payloads and quality outcomes. It does no file, database or
network I/O: the runner (`viskom.pipeline.stage_io.run_stage`) reads and writes, and records
its exception, if any, for that exposure only.

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
from viskom.metrics import metrics_of_stage
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
    data_root: str | None = None  # product paths are recorded relative to it

    @property
    def root(self) -> Path:
        """The data root (default: the folder above the product tree)."""
        return Path(self.data_root) if self.data_root else Path(self.products_dir).parent

    @property
    def product_folder(self) -> Path:
        """This exposure's folder in the product tree."""
        return exposure_dir(self.products_dir, self.name, self.date_obs)

    def product(self, product: str, ext: str) -> Path:
        """Path of one of this exposure's products, e.g. product('catalogue', 'parquet')."""
        return product_path(self.product_folder, self.name, product, ext)


_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_MEMBER = re.compile(r"^[a-z0-9][a-z0-9_]{0,31}$")


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


#: File formats of products and how the runner writes a stage's payload for each.
PRODUCT_FORMATS = {
    "parquet": "a table: a mapping of column name to array",
    "json": "a JSON-able mapping",
    "npz": "a mapping of name to numpy array",
    "png": "a matplotlib Figure (from viskom.present), or the PNG file's bytes",
    "fits": "an astropy HDU or HDUList",
}


@dataclass(frozen=True)
class ProductSpec:
    """A file a stage writes for each exposure: `<exposure>_<kind>.<ext>` in its folder.

    A kind ending in `*` declares a family (`zoom_*`: `zoom_ll`, `zoom_hottest` ...): the
    stage names its members at run time; each member is a lower-case word after the prefix.
    """

    kind: str
    ext: str
    description: str

    def __post_init__(self) -> None:
        if self.ext not in PRODUCT_FORMATS:
            raise ValueError(f"product {self.kind}: format {self.ext!r} not in {PRODUCT_FORMATS}")

    @property
    def family(self) -> bool:
        """Whether this declares a family of products (`prefix_*`)."""
        return self.kind.endswith("*")

    def covers(self, kind: str) -> bool:
        """Whether `kind` is this product, or a member of this family."""
        if not self.family:
            return kind == self.kind
        prefix = self.kind[:-1]
        return kind.startswith(prefix) and bool(_MEMBER.match(kind[len(prefix) :]))


@dataclass(frozen=True)
class ProductInput:
    """A product of another stage that a stage reads; the runner loads it and hands it in."""

    stage: str
    kind: str
    optional: bool = False  # None is handed in when the file does not exist


@dataclass
class StageInputs:
    """What the runner hands a stage: the exposure, the products it reads, the calibrations
    and the external inputs it declared (obtained through `viskom.sources` on first use)."""

    exposure: ExposureInfo
    products: Mapping[str, Any] = field(default_factory=dict)
    calibrations: Mapping[str, Any] = field(default_factory=dict)
    external: Mapping[str, Any] = field(default_factory=dict)

    def product(self, kind: str) -> Any:
        """A declared input product (None when optional and absent)."""
        if kind not in self.products:
            raise KeyError(f"product {kind!r} is not a declared input of this stage")
        return self.products[kind]

    def calibration(self, name: str) -> Any:
        """A declared calibration (e.g. the hot-pixel map), as the runner loaded it."""
        if name not in self.calibrations:
            raise KeyError(f"calibration {name!r} is not declared by this stage")
        return self.calibrations[name]

    def source(self, name: str) -> Any:
        """A declared external input: a callable that fetches it (Gaia cone, GOES series)."""
        if name not in self.external:
            raise KeyError(f"external input {name!r} is not declared by this stage")
        return self.external[name]


@dataclass
class StageResult:
    """A stage's output: metric rows, product payloads (kind -> data, written by the runner)
    and quality outcomes.

    `measured` says whether the stage measured anything; None (default) means "yes, unless it
    returns outcomes and no metrics". A result that did not measure is recorded as ``empty``.
    After the runner wrote them, `written` holds the product records (kind, path, size, sha256).
    """

    metrics: list[MetricRow] = field(default_factory=list)
    products: dict[str, Any] = field(default_factory=dict)
    outcomes: list[QualityOutcome] = field(default_factory=list)
    measured: bool | None = None
    written: list[Any] = field(default_factory=list)

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
    """Base class of every per-exposure stage: a declaration plus one pure `run`.

    Declared: `name`, `version` (bump it when results change), `frame_types`, `inputs` (the
    products of other stages it reads; it runs after those stages and re-runs when they
    change), `calibrations` (built from many exposures: `hot_pixels`, `relative_gains`,
    `xray_baseline`), `external` (inputs from outside: `gaia_cone`, `goes_series`,
    `blind_solver`), `config_section` (its pydantic section of the settings), `products` it
    writes, the primary `header_keywords` it cannot run without; its metrics are those the
    registry (`viskom.metrics`) lists for its name. `run` gets everything handed in and does
    no file, database or network I/O.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    frame_types: ClassVar[frozenset[str]]
    inputs: ClassVar[tuple[ProductInput, ...]] = ()
    #: Stages it runs after without reading their products (rare; inputs imply their stages).
    after: ClassVar[tuple[str, ...]] = ()
    calibrations: ClassVar[tuple[str, ...]] = ()
    external: ClassVar[tuple[str, ...]] = ()
    config_section: ClassVar[str | None] = None
    #: Only these keys of the section make the stage's configuration (None: all of them).
    config_keys: ClassVar[tuple[str, ...] | None] = None
    products: ClassVar[tuple[ProductSpec, ...]] = ()
    #: Primary header keywords the stage cannot run without: when one is unusable or missing,
    #: the runner records the stage as failed with that reason instead of running it.
    header_keywords: ClassVar[tuple[str, ...]] = ()
    #: Long and pixel-bound, measuring its quadrants on every core the exposure has: a frame's
    #: runner runs it alone; the other stages run side by side, one core each.
    parallel_quadrants: ClassVar[bool] = False
    #: What it measures depends on the catalogue's depth: at `catalogue_depth = "quicklook"`
    #: its configuration names it (`catalogue_depth`); at VISQL's depth it is left out, so
    #: that stores measured before the quick look existed keep their provenance hashes.
    reads_catalogue_depth: ClassVar[bool] = False
    #: The heavy modules `run` imports lazily (kept out of the CLI's start-up). The runner
    #: imports them once, before it forks the stage processes that follow, and a stage
    #: process imports its own before forking quadrant workers: each process inherits them
    #: instead of importing them again (`pipeline.preload`; a module's `warm_up()` runs too).
    imports: ClassVar[tuple[str, ...]] = ()

    @property
    def needs(self) -> tuple[str, ...]:
        """The stages that must have run (ok or empty) first: those whose products it cannot
        do without, and `after`; a stage whose required input failed does not run."""
        names = [i.stage for i in self.inputs if not i.optional] + list(self.after)
        return tuple(dict.fromkeys(names))

    @property
    def upstream(self) -> tuple[str, ...]:
        """Every stage whose products it reads (optional ones too) or which it runs after:
        their versions and configurations are part of this stage's provenance."""
        return tuple(dict.fromkeys([i.stage for i in self.inputs] + list(self.after)))

    @property
    def metrics(self) -> tuple[str, ...]:
        """The registered metrics this stage writes."""
        return metrics_of_stage(self.name)

    def product_spec(self, kind: str) -> ProductSpec:
        """The declared product `kind`; KeyError if the stage does not declare it."""
        for spec in self.products:
            if spec.covers(kind):
                return spec
        raise KeyError(f"stage {self.name} does not declare a product {kind!r}")

    def applies_to(self, frame_type: str | None) -> bool:
        return (frame_type or "UNKNOWN").upper() in self.frame_types

    @classmethod
    def config_of(cls, settings: Any) -> dict[str, Any]:
        """The settings this stage depends on (hashed into its provenance): its section, or
        the `config_keys` of it, and the quick-look depth (`reads_catalogue_depth`); override
        to add keys from elsewhere."""
        section: dict[str, Any] = {}
        if cls.config_section is not None:
            section = getattr(settings, cls.config_section).model_dump(mode="json")
            if cls.config_keys is not None:
                section = {k: section[k] for k in cls.config_keys}
        quick = getattr(settings, "catalogue_depth", "full") == "quicklook"
        if cls.reads_catalogue_depth and quick:
            section["catalogue_depth"] = "quicklook"
        return section

    @abstractmethod
    def run(self, frame: Le1Frame, inputs: StageInputs, config: Mapping[str, Any]) -> StageResult:
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
