"""Movies of a period (VISQL's xmovie): one frame per exposure from its existing plots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from viskom.pipeline.runner import exposure_info

#: The plots composed into each frame, per movie kind.
MOVIE_PANELS = {"xray": ("goes", "cosmiX", "rf"), "protons": ("goes", "protons")}


@dataclass
class Movie:
    """A rendered movie: its file, frames and the exposures left out (plots missing)."""

    path: Path | None
    frames: int
    skipped: int


def make_movie(
    store: Any, settings: Any, since: datetime, until: datetime, kind: str,
    output: Path | None = None, *, label: str = "", fps: float = 4.0, progress: bool = False,
) -> Movie:  # fmt: skip
    """Compose each SCIENCE and DARK exposure's panels into a frame and encode them as MP4
    (`output`, default the product tree's movies folder); no frame: `Movie(None, 0, n)`."""
    from viskom.present.movie import compose_frame, encode_mp4

    if kind not in MOVIE_PANELS:
        raise ValueError(f"unknown movie kind {kind!r} (expected {', '.join(MOVIE_PANELS)})")
    panels = MOVIE_PANELS[kind]
    exposures = [
        e
        for ft in ("SCIENCE", "DARK")
        for e in store.list_exposures(frame_type=ft, state="registered", since=since, until=until)
    ]
    exposures.sort(key=lambda e: e.date_obs)
    label = label or f"{since:%Y-%m-%d}_{until:%Y-%m-%d}"
    frames_dir = settings.products_path / "movies" / f".frames_{kind}_{label}"
    frames, skipped = [], 0
    for e in exposures:
        info = exposure_info(e, settings)
        paths = [info.product(p, "png") for p in panels]
        if not all(p.exists() for p in paths):
            skipped += 1
            continue
        frames.append(compose_frame(paths, frames_dir / f"{len(frames):05d}_{e.name}.png"))
    if not frames:
        return Movie(None, 0, skipped)
    name = f"{'XCOSMIX' if kind == 'xray' else 'PROTONS'}_{label}.mp4"
    path = output or settings.products_path / "movies" / name
    encode_mp4(frames, path, fps=fps, progress=progress)
    return Movie(path, len(frames), skipped)
