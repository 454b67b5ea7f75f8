"""A GOES-like day of solar X-rays and protons, to drive the simulator's particle rates.

`flare_day` makes one-minute XRS-A/XRS-B fluxes: a quiet B-class Sun plus flares with a
fast (Gaussian, ~5 min) rise and an exponential decay, harder (more XRS-A per XRS-B) at the
peak as real flares are. `xray_rate_table` turns XRS-A into the simulator's X-ray event rate
multiplier (proportional to the flux), so a simulated day has X-ray events that follow the
flare; `write_goes_cache` puts the day into viskom's GOES cache as NOAA's own files, so the
pipeline finds it offline exactly as it finds a downloaded day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

QUIET_XRSB = 1.0e-7  # B1
QUIET_XRSA = 5.0e-9  # XRS-A of a quiet B1 Sun (XRS-A/XRS-B ~ 0.05)
QUIET_PROTONS = 0.3  # pfu >= 10 MeV, no event


def flare_day(
    day: date,
    flares: Sequence[tuple[datetime, float]] = (),
    *,
    rise_min: float = 5.0,
    decay_min: float = 25.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time datetime64[ms], xrsa, xrsb) every minute of a UTC day; flares as (peak, XRS-B)."""
    t0 = datetime(day.year, day.month, day.day, tzinfo=UTC)
    minutes = np.arange(1440, dtype=float)
    rng = np.random.default_rng(seed)
    quiet = QUIET_XRSB * np.exp(0.05 * np.cumsum(rng.standard_normal(1440)) / np.sqrt(1440))
    flare_b = np.zeros(1440)
    for peak, xrsb_peak in flares:
        dt = (peak - t0).total_seconds() / 60.0 - minutes
        shape = np.where(dt > 0, np.exp(-0.5 * (dt / rise_min) ** 2), np.exp(dt / decay_min))
        flare_b += xrsb_peak * shape
    xrsb = quiet + flare_b
    # harder at the peak: XRS-A/XRS-B from 0.05 (quiet) to ~0.15 (M-class)
    hardness = 0.05 + 0.10 * flare_b / np.maximum(xrsb, 1e-12)
    xrsa = xrsb * hardness * (QUIET_XRSA / (0.05 * QUIET_XRSB))
    time = np.datetime64(t0.replace(tzinfo=None), "ms") + (minutes * 60000).astype(
        "timedelta64[ms]"
    )
    return time, xrsa.astype(np.float32), xrsb.astype(np.float32)


def xray_rate_table(time: np.ndarray, xrsa: np.ndarray) -> tuple[list[datetime], list[float]]:
    """The simulator's X-ray rate multiplier table: XRS-A relative to the quiet Sun."""
    times = [
        datetime.fromisoformat(str(t)).replace(tzinfo=UTC)
        for t in np.asarray(time, dtype="datetime64[s]")
    ]
    return times, (np.asarray(xrsa, dtype=float) / QUIET_XRSA).tolist()


def write_goes_cache(
    cache_dir: str | Path,
    time: np.ndarray,
    xrsa: np.ndarray,
    xrsb: np.ndarray,
    *,
    satellite: int = 16,
    protons: np.ndarray | None = None,
) -> list[Path]:
    """Write a simulated day into viskom's GOES cache as NCEI XRS (and SGPS) day files."""
    from viskom.sources.goes import GoesClient, ncei_filename
    from viskom.sources.simulator.goes_files import write_sgps_netcdf, write_xrs_netcdf

    client = GoesClient(cache_dir, offline=True)
    day = datetime.fromisoformat(str(np.asarray(time, dtype="datetime64[s]")[0])).date()
    xrs_path = client.cache_path_for(
        "avg1m", satellite, day, ncei_filename("avg1m", satellite, day, "2-2-0")
    )
    paths = [write_xrs_netcdf(xrs_path, time, xrsa, xrsb, satellite=f"g{satellite}")]
    flux = np.full(np.asarray(time).size, QUIET_PROTONS) if protons is None else protons
    sgps_path = client.cache_path_for(
        "sgps", satellite, day, ncei_filename("sgps", satellite, day, "3-0-1")
    )
    paths.append(write_sgps_netcdf(sgps_path, time, flux, satellite=f"g{satellite}"))
    return paths
