"""Detector-health stage: bias, read noise and type-specific levels for every quadrant."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from viskom.le1.frame import Le1Frame, Quadrant
from viskom.measure.detector import DetectorHealthParams, quadrant_health, summarise
from viskom.pipeline.threads import bounded_map
from viskom.stages.base import ExposureInfo, Stage, StageResult


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

        def measure(quad: Quadrant) -> tuple[str, dict[str, float]]:
            return quad.extname, quadrant_health(
                quad.data,
                quad.geometry,
                frame_type=exposure.frame_type,
                gain_e_per_adu=quad.header.gain_e_per_adu,
                exptime_s=exposure.exptime,
                saturate_adu=quad.header.saturate_adu,
                params=params,
            )

        # Quadrants are read in file order here and measured on a second thread, so reading
        # and measuring overlap (numpy releases the GIL in most of either); at most a few
        # quadrants are held at once.
        per_quadrant = dict(bounded_map(measure, frame.iter_quadrants(), workers=2, ahead=2))
        if not per_quadrant:
            raise ValueError("no quadrant extensions to measure")
        return StageResult(metrics=list(summarise(per_quadrant)))
