"""Space-weather stage: GOES X-rays and protons during each SCIENCE and DARK exposure.

Metrics on the FPA: `goes_xrsa_mean`, `goes_xrsa_max`, `goes_xrsb_mean`, `goes_xrsb_max`
(W/m2 over the exposure plus readout) and `goes_protons_ge10mev` (pfu), from the GOES day
cache (fetched from NOAA when `[goes] online`), and the GOES panel of +-12 h around the
exposure (`_goes.png`, as VISQL's). Without GOES data the stage fails with a message naming
the missing days, so `viskom run --retry-failed` picks it up once the data are there.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from viskom.le1.frame import Le1Frame
from viskom.measure.spaceweather import exposure_window, window_stats
from viskom.stages.base import ExposureInfo, Stage, StageResult

PANEL_HALF_WIDTH = timedelta(hours=12)


class SpaceWeather(Stage):
    """GOES XRS and proton fluxes over the exposure, and the +-12 h GOES panel."""

    name = "space_weather"
    version = "1"
    frame_types = frozenset({"SCIENCE", "DARK"})
    level = "exposure"

    @staticmethod
    def config_of(settings: Any) -> dict[str, Any]:
        return {
            "cache_dir": str(settings.goes_cache_path),
            "online": settings.goes.online,
            "timeout_s": settings.goes.timeout_s,
        }

    def run(
        self, frame: Le1Frame, exposure: ExposureInfo, config: Mapping[str, Any]
    ) -> StageResult:
        from viskom.present.events import plot_goes_panel
        from viskom.sources.goes import GoesClient, GoesUnavailableError

        if not exposure.date_obs:
            raise GoesUnavailableError("no DATE-OBS: the exposure cannot be placed in time")
        t_obs = datetime.fromisoformat(exposure.date_obs)
        t_obs = t_obs.replace(tzinfo=UTC) if t_obs.tzinfo is None else t_obs.astimezone(UTC)
        exptime = float(exposure.exptime or 0.0)
        client = GoesClient(
            config["cache_dir"], offline=not config["online"], timeout_s=config["timeout_s"]
        )
        start, end = t_obs - PANEL_HALF_WIDTH, t_obs + PANEL_HALF_WIDTH
        xrs, missing = client.xrs_range(start, end)
        protons, _missing_protons = client.protons_range(start, end)
        w0, w1 = exposure_window(t_obs, exptime)
        a_mean, a_max = window_stats(xrs.time, xrs.xrsa_flux, w0, w1)
        b_mean, b_max = window_stats(xrs.time, xrs.xrsb_flux, w0, w1)
        p_mean, _ = window_stats(protons.time, protons.flux_ge10mev, w0, w1)
        if not np.isfinite(b_mean) and not np.isfinite(a_mean):
            raise GoesUnavailableError("no GOES XRS data for the exposure: " + "; ".join(missing))
        metrics = [
            ("FPA", "goes_xrsa_mean", a_mean),
            ("FPA", "goes_xrsa_max", a_max),
            ("FPA", "goes_xrsb_mean", b_mean),
            ("FPA", "goes_xrsb_max", b_max),
        ]
        if np.isfinite(p_mean):
            metrics.append(("FPA", "goes_protons_ge10mev", p_mean))
        title = f"{exposure.name}  {exposure.date_obs[:19].replace('T', ' ')}"
        path = plot_goes_panel(
            xrs.time,
            xrs.xrsa_flux,
            xrs.xrsb_flux,
            t_obs,
            exptime,
            title,
            exposure.product("goes", "png"),
            proton_time=protons.time if protons.time.size else None,
            proton_flux=protons.flux_ge10mev if protons.time.size else None,
        )
        return StageResult(metrics=metrics, products=[path])
