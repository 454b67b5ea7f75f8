"""Health plots stage: focal-plane maps of one frame's detector metrics (every frame type).

Bias, read noise and the level that matters for the frame type (dark current, flat level,
charge-injection level, else the image level), each quadrant's cell filled, the alert
settings' fixed bands outlined. A stage of its own, so that better pictures can be made
again without measuring anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from viskom.le1.frame import Le1Frame
from viskom.stages.base import ProductInput, ProductSpec, Stage, StageInputs, StageResult

MAPPED = ("bias_overscan_adu", "read_noise_e", "dark_current_e_per_s", "flat_level_e",
          "ci_level_adu", "image_level_adu")  # fmt: skip


class HealthPlots(Stage):
    """PNG maps of the detector_health stage's per-quadrant table."""

    name = "health_plots"
    version = "1"
    imports = ("viskom.present.health_plots",)
    frame_types = frozenset({"SCIENCE", "DARK", "BIAS", "FLAT", "CHARGE", "UNKNOWN"})
    # optional: a detector_health run that found nothing writes no table (said below)
    inputs = (ProductInput("detector_health", "health", optional=True),)
    products = (ProductSpec("health_maps", "png", "bias, read noise and level maps"),)

    @classmethod
    def config_of(cls, settings: Any) -> dict[str, Any]:
        bands = {}
        for metric in MAPPED:
            for kind in ("SCIENCE", "DARK", "BIAS", "FLAT", "CHARGE", "UNKNOWN"):
                band = settings.alerts.fixed_band(metric, kind)
                if band is not None:
                    bands.setdefault(metric, {})[kind] = list(band)
        return {"bands": bands}

    def run(self, frame: Le1Frame, inputs: StageInputs, config: Mapping[str, Any]) -> StageResult:
        from viskom.present.health_plots import plot_health_maps

        exposure = inputs.exposure
        table = inputs.product("health")
        if table is None:
            return StageResult.nothing(
                "no_health_table", "detector_health measured no quadrant: nothing to draw"
            )
        kind = exposure.frame_type.upper()
        bands = {m: tuple(b[kind]) for m, b in config["bands"].items() if kind in b}
        when = (exposure.date_obs or "")[:19].replace("T", " ")
        exptime = f"  {exposure.exptime:g} s" if exposure.exptime is not None else ""
        title = f"{exposure.name}  {kind}  {when}{exptime}"
        figure = plot_health_maps(table, frame_type=kind, title=title,
                                  bands=bands)  # fmt: skip
        return StageResult(products={"health_maps": figure})
