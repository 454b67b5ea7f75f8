"""The per-exposure stages, in the order the runner executes them."""

from viskom.stages.base import (
    ExposureInfo,
    ProductInput,
    ProductSpec,
    QualityOutcome,
    Stage,
    StageInputs,
    StageResult,
    config_hash,
    usable_quadrants,
)
from viskom.stages.catalogue import Catalogue
from viskom.stages.detector_health import DetectorHealth
from viskom.stages.event_plots import EventPlots
from viskom.stages.events import Events
from viskom.stages.gaia import GaiaPhotometry
from viskom.stages.health_plots import HealthPlots
from viskom.stages.images import Images
from viskom.stages.mosaic_astrometry import MosaicAstrometry
from viskom.stages.psf import PsfMoments
from viskom.stages.science_plots import SciencePlots
from viskom.stages.space_weather import SpaceWeather

#: Registered stages, in execution order (a stage comes after the stages it needs). A new
#: monitor is one module and one line here (and its metrics in `viskom.metrics`).
STAGES: tuple[Stage, ...] = (
    DetectorHealth(),
    HealthPlots(),
    Catalogue(),
    PsfMoments(),
    SciencePlots(),
    GaiaPhotometry(),
    Events(),
    EventPlots(),
    Images(),
    MosaicAstrometry(),
    SpaceWeather(),
)


def get_stage(name: str) -> Stage:
    """The registered stage called `name`; KeyError lists the known ones."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage {name!r}; known: {', '.join(s.name for s in STAGES)}")


__all__ = [
    "STAGES",
    "ExposureInfo",
    "ProductInput",
    "ProductSpec",
    "QualityOutcome",
    "Stage",
    "StageInputs",
    "StageResult",
    "config_hash",
    "get_stage",
    "usable_quadrants",
]
