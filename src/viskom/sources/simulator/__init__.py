"""Simulator of Euclid VIS raw LE1 frames with truth: the test-data factory of viskom.

Public API::

    FRAME_KINDS, DEFECTS, SimConfig, SimulatedFrame
    simulate_frame(outdir, kind, *, seed, date_obs, ...) -> SimulatedFrame
    simulate_set(outdir, kind, count, *, seed, start, ...) -> list[SimulatedFrame]
    gaia_like_catalogue(ra0, dec0, radius_deg, *, seed, density_factor=1.0) -> Table
    write_gaia_catalogue(table, path)

Each frame `<name>.fits[.gz]` comes with `<name>.truth.json` (frame and per-quadrant truth) and
`<name>.objects.parquet` (one row per injected star, galaxy, cosmic ray, X-ray, proton, hot
pixel). Frames are written one quadrant at a time; the same seed gives identical bytes.
"""

from viskom.sources.simulator.catalogue import (
    gaia_like_catalogue,
    read_gaia_catalogue,
    write_gaia_catalogue,
)
from viskom.sources.simulator.config import (
    DEFECTS,
    FRAME_KINDS,
    NOMINAL_EXPTIME,
    SHORT_EXPTIME,
    SimConfig,
    SimulatedFrame,
)
from viskom.sources.simulator.frame import (
    DEFAULT_EXPTIME,
    frame_name,
    simulate_frame,
    simulate_set,
)
from viskom.sources.simulator.sky import default_pointing

__all__ = [
    "DEFAULT_EXPTIME",
    "DEFECTS",
    "FRAME_KINDS",
    "NOMINAL_EXPTIME",
    "SHORT_EXPTIME",
    "SimConfig",
    "SimulatedFrame",
    "default_pointing",
    "frame_name",
    "gaia_like_catalogue",
    "read_gaia_catalogue",
    "simulate_frame",
    "simulate_set",
    "write_gaia_catalogue",
]
