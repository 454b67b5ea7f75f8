"""The astrometry.net command-line tools: are they there, and how to run one safely.

Each tool runs in its own process group with a wall-clock limit (the whole group is killed on
timeout: solve-field starts astrometry-engine as a child) and TMPDIR pointing into the caller's
temporary folder; a missing or failing tool raises AstrometryNetError quoting its output.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SOLVE_FIELD = "solve-field"
BUILD_INDEX = "build-astrometry-index"
TOOLS: tuple[str, ...] = (SOLVE_FIELD, BUILD_INDEX)
APT_PACKAGE = "astrometry.net"
_STDERR_TAIL = 1500  # characters of a tool's output quoted in error messages


class AstrometryNetError(RuntimeError):
    """An astrometry.net tool is missing or failed; the message quotes its output's tail."""


def tools_available() -> str | None:
    """None when solve-field and build-astrometry-index are on PATH, else what is missing."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return None
    return (
        f"astrometry.net tool(s) not found on PATH: {', '.join(missing)} "
        f"(Debian/Ubuntu: apt-get install {APT_PACKAGE})"
    )


def require_tool(tool: str) -> str:
    """The path of a tool; AstrometryNetError (naming the package to install) when missing."""
    path = shutil.which(tool)
    if path is None:
        raise AstrometryNetError(tools_available() or f"{tool} not found on PATH")
    return path


def output_tail(text: str | bytes | None) -> str:
    """The end of a tool's output (at most 1500 characters), for error messages."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    return text if len(text) <= _STDERR_TAIL else "..." + text[-_STDERR_TAIL:]


def run_tool(cmd: Sequence[str], *, cwd: Path, timeout_s: float) -> tuple[int, str, str] | None:
    """Run a tool in its own process group; (returncode, stdout, stderr), None on timeout.

    On timeout the whole group is killed (solve-field starts astrometry-engine as a child).
    """
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(cwd)},  # anything the tools write goes in there
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    return proc.returncode, out, err


def index_paths(index_files: Sequence[str | Path]) -> list[Path]:
    """The index files as absolute paths; ValueError when none is given or one is missing."""
    indexes = [Path(p).resolve() for p in index_files]
    if not indexes:
        raise ValueError("no index files given")
    absent = [str(p) for p in indexes if not p.is_file()]
    if absent:
        raise ValueError(f"index file(s) not found: {', '.join(absent)}")
    return indexes


def backend_config(folder: Path, cpu_s: float, indexes: Sequence[Path]) -> Path:
    """A solve-field backend config in `folder` that lists only `indexes`, with a CPU limit."""
    config = folder / "backend.cfg"
    config.write_text("\n".join([f"cpulimit {cpu_s:g}", *(f"index {p}" for p in indexes)]) + "\n")
    return config


@dataclass(frozen=True)
class SolveRun:
    """What a finished solve-field run said: solved (a `.solved` and a `.wcs` file), whether
    its CPU limit stopped it, and its wall-clock limit."""

    solved: bool
    cpu_limited: bool
    wall_s: float


def run_solve_field(
    cmd: Sequence[str],
    *,
    workdir: Path,
    out: str,
    cpu_s: float,
    timeout_s: float,
    hint: tuple[float, float, float | None] | None = None,
) -> SolveRun | None:
    """Run `cmd` (solve-field, its input and options, writing `out`.* into `workdir`) with
    the options every caller shares: the CPU limit, no new FITS, rdls or index xyls, and the
    search hint (RA, Dec, radius in deg, default 1). None when it is killed, not finished a
    few seconds after `timeout_s`; AstrometryNetError (its output's tail) when it fails."""
    full = [*cmd, "--cpulimit", f"{cpu_s:g}"]
    full += ["--new-fits", "none", "--rdls", "none", "--index-xyls", "none"]
    if hint is not None:
        ra, dec, radius = hint
        full += ["--ra", f"{float(ra) % 360.0:.8f}", "--dec", f"{float(dec):.8f}"]
        full += ["--radius", f"{1.0 if radius is None else float(radius):g}"]
    wall = float(timeout_s) + min(5.0, float(timeout_s))
    result = run_tool(full, cwd=workdir, timeout_s=wall)
    if result is None:
        return None
    code, stdout, stderr = result
    if code != 0:
        raise AstrometryNetError(
            f"{SOLVE_FIELD} failed (exit {code}): {output_tail(stderr) or output_tail(stdout)}"
        )
    solved = (workdir / f"{out}.solved").exists() and (workdir / f"{out}.wcs").exists()
    limited = "time limit reached" in (stdout + stderr).lower()
    return SolveRun(solved, limited, wall)
