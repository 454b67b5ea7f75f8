"""Movie frames (panels side by side) and their MP4 encoding with ffmpeg (VISQL-SPEC 9.8).

VISQL built each frame of its X-ray movie with ImageMagick (GOES panel, X-ray map, rf diagram,
about 1840x480) and encoded MPEG-1 with ffmpeg/ImageMagick. Here frames are composed with
Pillow and encoded as H.264 (libx264, yuv420p, even dimensions, `+faststart` so a browser can
start playing before the whole file has arrived). ffmpeg comes from PATH or, failing that, from
the `imageio-ffmpeg` package. Outputs are written atomically (`viskom.store.atomic`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from viskom.store.atomic import atomic_path

__all__ = ["compose_frame", "encode_mp4", "ffmpeg_executable"]

PathLike = str | os.PathLike[str]
_BACKGROUND = (255, 255, 255)
_STDERR_TAIL_LINES = 25


def _even(n: int) -> int:
    return n + (n % 2)


def compose_frame(panels: Sequence[PathLike], path: PathLike, height_px: int = 480) -> Path:
    """Images side by side, each scaled to height_px, on white; width and height made even.

    Even dimensions are what H.264 in yuv420p needs; the odd pixel is white padding.
    """
    if not panels:
        raise ValueError("compose_frame needs at least one panel")
    if height_px < 2:
        raise ValueError(f"height_px must be at least 2, got {height_px}")
    scaled: list[Image.Image] = []
    for panel in panels:
        with Image.open(panel) as im:
            im.load()
            rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        if flat.height != height_px:
            width = max(1, round(flat.width * height_px / flat.height))
            flat = flat.resize((width, height_px), Image.Resampling.LANCZOS)
        scaled.append(flat)
    width = _even(sum(im.width for im in scaled))
    frame = Image.new("RGB", (width, _even(height_px)), _BACKGROUND)
    x = 0
    for im in scaled:
        frame.paste(im, (x, 0))
        x += im.width
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        frame.save(tmp, format="PNG")
    return path


def ffmpeg_executable() -> str:
    """Path of ffmpeg: from PATH if there, else the binary shipped with imageio-ffmpeg."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        imageio_ffmpeg = None
    if imageio_ffmpeg is not None:
        try:
            return str(imageio_ffmpeg.get_ffmpeg_exe())
        except RuntimeError:
            pass
    raise RuntimeError(
        "ffmpeg not found: install it on PATH (e.g. apt-get install ffmpeg) or install the "
        "'imageio-ffmpeg' Python package, which ships an ffmpeg binary"
    )


def _frame_size(frame: Path) -> tuple[int, int]:
    with Image.open(frame) as im:
        return im.size


def _link_frames(frames: Sequence[Path], folder: Path) -> str:
    """Numbered links (copies where links are impossible) to the frames; the ffmpeg pattern."""
    for i, frame in enumerate(frames):
        link = folder / f"{i:07d}.png"
        try:
            link.symlink_to(frame.resolve())
        except OSError:
            shutil.copyfile(frame, link)
    return str(folder / "%07d.png")


def _run_ffmpeg(cmd: list[str], n_frames: int, label: str, progress: bool) -> None:
    """Run ffmpeg; with progress, show a rich bar fed by its `-progress pipe:1` frame counts."""
    with tempfile.TemporaryFile() as err:
        if not progress:
            result = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, check=False
            )
            code = result.returncode
        else:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            columns = (
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with (
                Progress(*columns, console=Console(stderr=True), transient=True) as bar,
                subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                    bufsize=1,
                ) as proc,
            ):
                task = bar.add_task(label, total=n_frames)
                assert proc.stdout is not None
                for line in proc.stdout:
                    key, _, value = line.strip().partition("=")
                    if key == "frame" and value.isdigit():
                        bar.update(task, completed=min(int(value), n_frames))
                code = proc.wait()
        if code != 0:
            err.seek(0)
            text = err.read().decode("utf-8", "replace")
            tail = "\n".join(deque(text.splitlines(), maxlen=_STDERR_TAIL_LINES))
            raise RuntimeError(
                f"ffmpeg failed (exit status {code}) making {label}:\n{tail or '(no output)'}"
            )


def encode_mp4(
    frames: Sequence[PathLike], path: PathLike, fps: float = 4.0, progress: bool = True
) -> Path:
    """Encode PNG frames, in order, as an H.264 MP4 (yuv420p, +faststart) at fps frames/s.

    Frames of different sizes are scaled (keeping their aspect) and padded with white to the
    largest width and height, rounded up to even numbers. Raises ValueError for no frames,
    FileNotFoundError for a missing frame and RuntimeError (with ffmpeg's last messages) when
    ffmpeg fails.
    """
    frame_paths = [Path(f) for f in frames]
    if not frame_paths:
        raise ValueError("encode_mp4: no frames to encode")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    missing = [str(f) for f in frame_paths if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} movie frame(s) missing, first: {missing[0]}")
    sizes = {_frame_size(f) for f in frame_paths}
    width = _even(max(w for w, _ in sizes))
    height = _even(max(h for _, h in sizes))
    scale = (
        f"scale={width}:{height}:force_original_aspect_ratio=decrease:flags=lanczos,"
        f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color=white,"
        if sizes != {(width, height)}
        else ""
    )
    vf = f"{scale}setsar=1,format=yuv420p"

    path = Path(path)
    exe = ffmpeg_executable()
    with tempfile.TemporaryDirectory(prefix="viskom-movie-") as folder:
        pattern = _link_frames(frame_paths, Path(folder))
        with atomic_path(path, suffix=".mp4") as tmp:
            cmd = [
                exe, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
                "-framerate", f"{fps:g}", "-start_number", "0", "-i", pattern,
                "-vf", vf, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "20",
                "-movflags", "+faststart", "-f", "mp4",
            ]  # fmt: skip
            if progress:
                cmd += ["-progress", "pipe:1", "-nostats"]
            cmd.append(str(tmp))
            _run_ffmpeg(cmd, len(frame_paths), path.name, progress)
    return path
