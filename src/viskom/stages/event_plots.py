"""Event plots stage: VISQL's cosmic maps, the radius-flux diagram and hit histograms.

From the catalogue (VISQL's classes: `_cosmiX`, `_cosmics`, `_protons` maps in the instrument
frame, colour ranges scaled by exposure time, and `_rf`) and from the pixel-level hits
(`_hit_histograms`). For SCIENCE and DARK frames; a separate stage so plots can be improved
without measuring again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from viskom.le1.frame import Le1Frame
from viskom.measure.cosmics import catalogue_classes
from viskom.stages.base import ProductInput, ProductSpec, Stage, StageInputs, StageResult

#: What VISQL's class maps say at the quick-look catalogue depth (20 sigma sources only).
UNMEASURED = (
    "not measured: the quick-look catalogue (catalogue_depth = quicklook) holds the sources "
    "above 20 sigma only; the hit finder's counts are in the hit histograms"
)

#: product name of each VISQL map
MAP_PRODUCTS = {"xray": "cosmiX", "cosmics": "cosmics", "protons": "protons"}


class EventPlots(Stage):
    """PNG maps and histograms of one exposure's particle events."""

    name = "event_plots"
    version = "1"
    imports = ("viskom.present.event_maps", "viskom.present.hit_histograms")
    frame_types = frozenset({"SCIENCE", "DARK"})
    inputs = (ProductInput("catalogue", "catalogue"), ProductInput("events", "hits"))
    products = (
        *(ProductSpec(p, "png", f"VISQL's {kind} map over the focal plane")
          for kind, p in MAP_PRODUCTS.items()),
        ProductSpec("rf", "png", "radius-flux diagram of the catalogue"),
        ProductSpec("hit_histograms", "png", "hit size, length and charge histograms"),
    )  # fmt: skip
    reads_catalogue_depth = True  # VISQL's class maps need VISQL's depth

    def run(self, frame: Le1Frame, inputs: StageInputs, config: Mapping[str, Any]) -> StageResult:
        from viskom.present.event_maps import plot_event_map, plot_rf_diagram
        from viskom.present.hit_histograms import plot_hit_histograms

        exposure = inputs.exposure
        cat, hits = inputs.product("catalogue"), inputs.product("hits")
        exptime = exposure.exptime
        when = (exposure.date_obs or "")[:19].replace("T", " ")
        title = f"{exposure.name}  {when}"
        classes = catalogue_classes(cat["flux_auto"], cat["flux_radius"])
        xw, yw = np.asarray(cat["x_world"], float), np.asarray(cat["y_world"], float)
        unmeasured = UNMEASURED if config.get("catalogue_depth") == "quicklook" else None
        figures = {
            p: plot_event_map(
                xw[classes[kind]], yw[classes[kind]], kind, exptime, title, unmeasured=unmeasured
            )
            for kind, p in MAP_PRODUCTS.items()
        }
        figures["rf"] = plot_rf_diagram(cat["flux_radius"], cat["flux_auto"], title)
        area = float(sum(frame.geometry(n).image.size for n in frame.quadrant_extnames))
        figures["hit_histograms"] = plot_hit_histograms(
            hits["npix"],
            hits["length_px"],
            hits["charge_adu"],
            hits["kind"],
            exptime,
            title,
            area_px=area,
        )
        return StageResult(products=figures)
