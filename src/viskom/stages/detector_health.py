"""Detector-health stage: bias, read noise and type-specific levels for every quadrant."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from viskom.le1.frame import Le1Frame, Quadrant
from viskom.measure.detector import DetectorHealthParams, quadrant_health, summarise
from viskom.stages.base import ExposureInfo, Stage, StageResult
from viskom.stages.quadrants import map_quadrants


class DetectorHealth(Stage):
    """Per-quadrant detector statistics, with CCD and focal-plane summaries."""

    name = "detector_health"
    version = "1"
    frame_types = frozenset({"SCIENCE", "DARK", "BIAS", "FLAT", "CHARGE", "UNKNOWN"})
    level = "quadrant"

    @staticmethod
    def config_of(settings: Any) -> dict[str, Any]:
        return settings.detector_health.model_dump()

    def run(
        self, frame: Le1Frame, exposure: ExposureInfo, config: Mapping[str, Any]
    ) -> StageResult:
        params = DetectorHealthParams(**{**asdict(DetectorHealthParams()), **dict(config)})
        if not frame.quadrant_extnames:
            raise ValueError("no quadrant extensions to measure")
        per_quadrant = map_quadrants(
            frame,
            _quadrant_health,
            args=(exposure.frame_type, exposure.exptime, params),
            workers=exposure.quadrant_workers,
        )
        return StageResult(metrics=list(summarise(per_quadrant)))


def _quadrant_health(
    quad: Quadrant, frame_type: str, exptime: float | None, params: DetectorHealthParams
) -> dict[str, float]:
    return quadrant_health(
        quad.data,
        quad.geometry,
        frame_type=frame_type,
        gain_e_per_adu=quad.header.gain_e_per_adu,
        exptime_s=exptime,
        saturate_adu=quad.header.saturate_adu,
        params=params,
    )
