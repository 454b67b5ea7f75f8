"""Optional engine: Debian's `source-extractor` with VISQL's configuration (VISQL-SPEC 3.5).

Runs SExtractor on a whole raw MEF frame, as VISQL's detectall_xx does, so that its
catalogue can be compared with viskom's own (sep) on the same file. Besides VISQL's ten
parameters it asks for EXT_NUMBER, X_IMAGE, Y_IMAGE, FLUX_MAX, ISOAREA_IMAGE and
BACKGROUND, so that every source keeps its quadrant.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

#: VISQL's default.param, in order.
VISQL_PARAMS = (
    "X_WORLD",
    "Y_WORLD",
    "FLUX_AUTO",
    "FLUXERR_AUTO",
    "FLUX_RADIUS",
    "A_IMAGE",
    "B_IMAGE",
    "THETA_IMAGE",
    "NUMBER",
    "FLAGS",
)
EXTRA_PARAMS = (
    "EXT_NUMBER",
    "X_IMAGE",
    "Y_IMAGE",
    "FLUX_MAX",
    "ISOAREA_IMAGE",
    "BACKGROUND",
    "KRON_RADIUS",
)
EXECUTABLES = ("source-extractor", "sex")


class SExtractorUnavailableError(RuntimeError):
    """No SExtractor executable on this machine."""


def find_executable() -> str:
    """Path of source-extractor (Debian's name) or sex; SExtractorUnavailableError if neither."""
    for name in EXECUTABLES:
        path = shutil.which(name)
        if path:
            return path
    raise SExtractorUnavailableError(
        "source-extractor is not installed (Debian: apt-get install source-extractor)"
    )


def run_sextractor(
    frame_path: str | Path,
    *,
    visql_params_only: bool = False,
    timeout_s: float = 3600.0,
) -> dict[str, np.ndarray]:
    """Run SExtractor with VISQL's settings on a frame; returns the catalogue as columns.

    Column names are lower case (`x_world`, `flux_auto`, `ext_number`...). Raises
    SExtractorUnavailableError without the program, RuntimeError if it fails.
    """
    exe = find_executable()
    params = VISQL_PARAMS if visql_params_only else VISQL_PARAMS + EXTRA_PARAMS
    config_dir = resources.files("viskom.sources").joinpath("sextractor_config")
    with tempfile.TemporaryDirectory(prefix="viskom-sex-") as tmp:
        tmpdir = Path(tmp)
        for name in ("visql.sex", "visql.conv"):
            (tmpdir / name).write_text(config_dir.joinpath(name).read_text())
        (tmpdir / "visql.param").write_text("\n".join(params) + "\n")
        catalogue = tmpdir / "out.cat"
        cmd = [exe, str(Path(frame_path).resolve()), "-c", "visql.sex"]
        cmd += ["-CATALOG_NAME", str(catalogue), "-VERBOSE_TYPE", "QUIET"]
        proc = subprocess.run(
            cmd, cwd=tmpdir, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if proc.returncode != 0 or not catalogue.exists():
            raise RuntimeError(f"source-extractor failed ({proc.returncode}): {proc.stderr[-500:]}")
        return read_ascii_head(catalogue)


def read_ascii_head(path: str | Path) -> dict[str, np.ndarray]:
    """Read a SExtractor ASCII_HEAD catalogue (column names from its '#   n NAME' lines)."""
    names: list[str] = []
    rows: list[list[float]] = []
    with open(path) as fh:
        for line in fh:
            if line.startswith("#"):
                parts = line[1:].split()
                if len(parts) >= 2 and parts[0].isdigit():
                    names.append(parts[1].lower())
                continue
            if line.strip():
                rows.append([float(v) for v in line.split()])
    data = (
        np.array(rows, dtype=float).reshape(-1, len(names)) if rows else np.zeros((0, len(names)))
    )
    return {name: data[:, i] for i, name in enumerate(names)}
