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
