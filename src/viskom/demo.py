"""The demo day: a small, realistic set of simulated frames (with two bad files on purpose)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

DEMO_START = datetime(2024, 7, 13, 0, 0, 0, tzinfo=UTC)


def make_demo_day(raw_dir: Path, *, seed: int = 2024, geometry: str = "small") -> list[Path]:
    """Simulate 2 bias, 2 dark, 1 flat, 1 charge-injection and 6 science frames of one day,
    plus one truncated file and one frame of unknown type, as a real day may bring.
    Frames already present are not simulated again.
    """
    from viskom.sources.simulator import SimConfig, simulate_frame

    cfg = SimConfig(geometry=geometry)
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
    return paths
