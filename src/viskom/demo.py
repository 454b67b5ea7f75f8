"""The demo day: a small, realistic set of simulated frames (with two bad files on purpose)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DEMO_START = datetime(2024, 7, 13, 0, 0, 0, tzinfo=UTC)


#: The demo day's solar flare: M1 (XRS-B 1e-5 W/m2) peaking at 01:50, after three quiet science
#: frames (which give the store its quiet X-ray baseline for science frames) and during three more.
DEMO_FLARE = (DEMO_START + timedelta(hours=1, minutes=50), 1.0e-5)


def make_demo_day(
    raw_dir: Path,
    *,
    seed: int = 2024,
    geometry: str = "small",
    goes_cache: Path | None = None,
    gaia_cache: Path | None = None,
    gains_file: Path | None = None,
) -> list[Path]:
    """Simulate 2 bias, 2 dark, 1 flat, 1 charge-injection and 6 science frames of one day,
    plus one truncated file and one frame of unknown type, as a real day may bring.
    Frames already present are not simulated again. With `gaia_cache`, the simulator's
    Gaia-like cones are stored in the Gaia tile cache (standing in for VizieR); with
    `gains_file`, the simulated relative quadrant gains are written there.
    """
    from viskom.sources.simulator import SimConfig, simulate_frame
    from viskom.sources.simulator.instrument import write_relative_gains
    from viskom.sources.simulator.spaceweather import flare_day, write_goes_cache, xray_rate_table

    # GOES of the day (an M1 flare), written into the GOES cache as NOAA's files; the
    # simulated X-ray event rate follows its XRS-A flux.
    time, xrsa, xrsb = flare_day(DEMO_START.date(), [DEMO_FLARE], seed=seed)
    if goes_cache is not None:
        write_goes_cache(goes_cache, time, xrsa, xrsb)
        # the +-12 h GOES panels of the first exposures reach into the day before (quiet)
        write_goes_cache(goes_cache, *flare_day(DEMO_START.date() - timedelta(days=1), seed=seed))
    # Gaia-like cones of 0.7 deg: they contain the 0.55 deg cone of every dithered pointing
    cfg = SimConfig(
        geometry=geometry, xray_rate_multiplier=xray_rate_table(time, xrsa), gaia_radius_deg=0.7
    )
    raw_dir.mkdir(parents=True, exist_ok=True)
    plan: list[tuple[str, float | None, int, str | None]] = [
        ("bias", None, 1, None),
        ("bias", None, 1, None),
        ("dark", None, 1, None),
        ("dark", None, 1, None),
        ("flat", None, 1, None),
        ("charge", None, 1, None),
        ("science", None, 1, None),
        ("science", None, 1, None),
        ("science", 89.52, 2, None),
        ("science", None, 1, None),
        ("science", None, 1, None),
        ("science", 89.52, 2, None),
        ("science", None, 1, "truncated"),
        ("dark", None, 1, "unknown-type"),
    ]
    t = DEMO_START
    paths = []
    for i, (kind, exptime, index, defect) in enumerate(plan):
        frame = simulate_frame(
            raw_dir,
            kind,
            seed=seed * 1000 + i,
            date_obs=t,
            exptime=exptime,
            config=cfg,
            exposure_index=index,
            obs_id=2370 + i // 6,
            dither=1 + i % 4,
            defect=defect,
        )
        paths.append(frame.path)
        t += timedelta(seconds=(exptime or 560.52) + 72.0 + 60.0)
    if gains_file is not None:
        write_relative_gains(gains_file, cfg)
    if gaia_cache is not None:
        seed_gaia_cache(gaia_cache, raw_dir)
    return paths


def seed_gaia_cache(cache_dir: Path, folder: Path) -> int:
    """Store every simulated Gaia cone (`gaia_*.parquet` in `folder`) in the Gaia tile cache."""
    from viskom.sources.gaia import GaiaCache
    from viskom.sources.simulator import read_gaia_catalogue

    cache = GaiaCache(cache_dir)
    n = 0
    for path in sorted(folder.glob("gaia_*.parquet")):
        table = read_gaia_catalogue(path)
        meta = table.meta
        cache.seed_from_catalogue(
            table, float(meta["ra0"]), float(meta["dec0"]), float(meta["radius_deg"])
        )
        n += 1
    return n


def prepare_demo(directory: Path, *, seed: int = 2024, say: Callable[[str], Any] = print) -> Path:
    """The demo project in `directory`: a viskom.toml that works offline (the demo day brings
    its own GOES files and Gaia cones; the simulated instrument's relative gains stand in for
    a gain calibration) and the simulated day in its raw folder; returns the settings file."""
    from viskom.config import load_settings, write_default_config

    cfg_path = directory / "viskom.toml"
    if not cfg_path.exists():
        offline = {"online": False}
        write_default_config(
            directory,
            overrides={"goes": offline, "gaia": {**offline, "gains_file": "relative_gains.txt"}},
        )
    settings = load_settings(cfg_path)
    say(f"simulating a small day of VIS frames into {settings.raw_path} ...")
    paths = make_demo_day(
        settings.raw_path,
        seed=seed,
        goes_cache=settings.goes_cache_path,
        gaia_cache=settings.gaia_cache_path,
        gains_file=directory / "relative_gains.txt",
    )
    say(f"  {len(paths)} files")
    return cfg_path
