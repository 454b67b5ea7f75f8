"""Space-weather stage: GOES X-rays and protons during each SCIENCE and DARK exposure.

Metrics on the FPA: `goes_xrsa_mean`, `goes_xrsa_max`, `goes_xrsb_mean`, `goes_xrsb_max`
(W/m2 over the exposure plus readout) and `goes_protons_ge10mev` (pfu), from the GOES day
cache (fetched from NOAA when `[goes] online`), and the GOES panel of +-12 h around the
exposure (`_goes.png`, as VISQL's).

When GOES cannot be had (offline and not cached, the archive unreachable, a downloaded
file unusable) the stage fails with a message naming the days, so `viskom run
--retry-failed` picks it up once the data are there. When the archive answered and has no
XRS data for the exposure (no file for the day, or no valid sample in the window) that is a
quality outcome, `no_goes_data` (status `empty`); missing protons beside good XRS data are a
`no_goes_protons` outcome of an `ok` run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from viskom.le1.frame import Le1Frame
from viskom.measure.spaceweather import (
    archive_has_no_data,
    exposure_window,
    missing_in_window,
    window_stats,
)
from viskom.stages.base import ProductSpec, QualityOutcome, Stage, StageInputs, StageResult

PANEL_HALF_WIDTH = timedelta(hours=12)


class GoesDataMissingError(RuntimeError):
    """GOES has no usable XRS data for the exposure and the archive did not say it has none
    (unreachable, offline without the day, a file that cannot be read): retry later."""

    transient = True  # the runner's failure class: later runs retry it, with backoff


class SpaceWeather(Stage):
    """GOES XRS and proton fluxes over the exposure, and the +-12 h GOES panel."""

    name = "space_weather"
    version = "1"
    imports = ("viskom.present.goes_panel", "viskom.sources.goes", "xarray", "h5netcdf")
    frame_types = frozenset({"SCIENCE", "DARK"})
    external = ("goes_series",)
    products = (ProductSpec("goes", "png", "GOES X-ray and proton fluxes +-12 h around it"),)
    header_keywords = ("DATE-OBS", "EXPTIME")

    def run(self, frame: Le1Frame, inputs: StageInputs, config: Mapping[str, Any]) -> StageResult:
        from viskom.present.goes_panel import plot_goes_panel

        exposure = inputs.exposure
        if not exposure.date_obs:
            raise ValueError("no DATE-OBS: the exposure cannot be placed in time")
        t_obs = datetime.fromisoformat(exposure.date_obs)
        t_obs = t_obs.replace(tzinfo=UTC) if t_obs.tzinfo is None else t_obs.astimezone(UTC)
        if exposure.exptime is None:
            raise ValueError("no usable EXPTIME: the exposure's time window is unknown")
        exptime = float(exposure.exptime)
        start, end = t_obs - PANEL_HALF_WIDTH, t_obs + PANEL_HALF_WIDTH
        goes = inputs.source("goes_series")(start, end)
        xrs, missing = goes.xrs, goes.missing
        protons, missing_protons = goes.protons, goes.missing_protons
        w0, w1 = exposure_window(t_obs, exptime)
        a_mean, a_max = window_stats(xrs.time, xrs.xrsa_flux, w0, w1)
        b_mean, b_max = window_stats(xrs.time, xrs.xrsb_flux, w0, w1)
        p_mean, _ = window_stats(protons.time, protons.flux_ge10mev, w0, w1)
        if not np.isfinite(b_mean) and not np.isfinite(a_mean):
            mine = missing_in_window(missing, w0, w1)
            if not all(archive_has_no_data(m) for m in mine):
                raise GoesDataMissingError(
                    "no GOES XRS data for the exposure: " + "; ".join(mine or missing)
                )
            why = "; ".join(mine) or (
                f"no valid XRS sample between {w0:%Y-%m-%d %H:%M:%S} and {w1:%H:%M:%S} UTC "
                f"(nor within the nearest-sample margin) in {xrs.source or 'the GOES files'}"
            )
            return StageResult.nothing("no_goes_data", f"no GOES XRS data for the exposure: {why}")
        outcomes = []
        if not np.isfinite(p_mean):
            outcomes.append(
                QualityOutcome(
                    "no_goes_protons",
                    "no >= 10 MeV proton flux for the exposure"
                    + (f": {'; '.join(missing_protons)}" if missing_protons else ""),
                )
            )
        metrics = [
            ("FPA", "goes_xrsa_mean", a_mean),
            ("FPA", "goes_xrsa_max", a_max),
            ("FPA", "goes_xrsb_mean", b_mean),
            ("FPA", "goes_xrsb_max", b_max),
        ]
        if np.isfinite(p_mean):
            metrics.append(("FPA", "goes_protons_ge10mev", p_mean))
        title = f"{exposure.name}  {exposure.date_obs[:19].replace('T', ' ')}"
        figure = plot_goes_panel(
            xrs.time,
            xrs.xrsa_flux,
            xrs.xrsb_flux,
            t_obs,
            exptime,
            title,
            proton_time=protons.time if protons.time.size else None,
            proton_flux=protons.flux_ge10mev if protons.time.size else None,
        )
        return StageResult(metrics=metrics, products={"goes": figure}, outcomes=outcomes)
