"""The sky and its noise under a quadrant: SExtractor's background, in one compiled pass.

SExtractor's algorithm (Bertin & Arnouts 1996; what sep implements): per mesh of
`mesh_px` x `mesh_px` pixels, the mean and sigma clipped at +-2 sigma, a histogram over
+-5 sigma, iterated +-3 sigma clipping about its median, and the mode estimate
2.5 median - 1.5 mean (the median where the two differ by 0.3 sigma or more); the meshes
then median-filtered (`filter_size`) and interpolated between mesh centres by a natural
bicubic spline. sep computes the same (the tests use it as the oracle: equal to float
rounding). What is new is how it is used: `sky_mesh` gives the meshes alone (~23 ms on a
full VIS quadrant, sep's statistics ~30 ms; the clipping done on cumulative histogram sums),
and a kernel that needs the sky evaluates it row by row (`sky_kernels.sky_row`, ~6 ms per
map) while it reads the pixels, instead of reading two full-size float maps that sep's
`back()` and `rms()` allocate (~25 ms, and 35 MB per quadrant). The catalogue stage hands
its meshes to the events stage (the `sky` product), which measures no sky of its own.

The loops are compiled (`measure.sky_kernels`, numba), imported on first use: the CLI and
the stages' main processes, which only move meshes around, do not load numba.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SkyMesh:
    """The sky (`back`) and its noise (`rms`) at the centres of a grid of meshes (ADU), and
    what is needed to evaluate them at every pixel of an image of `shape`."""

    back: np.ndarray  # (ny, nx) float32
    rms: np.ndarray  # (ny, nx) float32
    mesh_px: int
    shape: tuple[int, int]
    filter_size: int = 3  # meshes of the median filter

    def __post_init__(self) -> None:
        # the compiled evaluation trusts these sizes (no bounds checks): refuse others here
        h, w = (int(v) for v in self.shape)
        grid = ((h - 1) // int(self.mesh_px) + 1, (w - 1) // int(self.mesh_px) + 1)
        if np.shape(self.back) != grid or np.shape(self.rms) != grid:
            raise ValueError(
                f"sky meshes of {np.shape(self.back)} and {np.shape(self.rms)} for an image of "
                f"{h} x {w} px in meshes of {self.mesh_px} px: {grid} expected"
            )

    @property
    def global_back(self) -> float:
        """The median sky over the meshes (sep's `globalback`)."""
        return float(np.median(self.back))

    @property
    def global_rms(self) -> float:
        """The median noise over the meshes (sep's `globalrms`): where that is not positive
        (a flat or saturated quadrant), the median of the positive ones, or 1, as sep's."""
        median = float(np.median(self.rms))
        if median > 0:
            return median
        positive = self.rms[self.rms > 0]
        return float(np.median(positive)) if positive.size else 1.0

    def fits(self, shape: tuple[int, ...], mesh_px: int, filter_size: int) -> bool:
        """Whether these are the meshes an image of `shape` gets with these settings."""
        same_shape = tuple(int(v) for v in shape) == tuple(self.shape)
        return same_shape and (self.mesh_px, self.filter_size) == (mesh_px, max(filter_size, 1))


def sky_mesh(image: np.ndarray, mesh_px: int = 64, filter_size: int = 3) -> SkyMesh:
    """SExtractor's sky and noise meshes of `image` (float32), median-filtered over
    `filter_size` x `filter_size` meshes. A mesh holding a NaN pixel takes the mean of the
    nearest meshes without one (sep leaves NaN pixels out of the mesh instead; LE1 pixels
    are integers, never NaN)."""
    from viskom.measure.sky_kernels import median_filter, mesh_statistics

    img = np.ascontiguousarray(image, dtype=np.float32)
    back, rms = mesh_statistics(img, int(mesh_px))
    back, rms = _fill_bad(back, rms)
    if filter_size > 1:
        back, rms = median_filter(back, rms, int(filter_size) // 2)
    shape = (int(img.shape[0]), int(img.shape[1]))
    return SkyMesh(back, rms, int(mesh_px), shape, max(int(filter_size), 1))


def sky_maps(mesh: SkyMesh, noise: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The sky and noise at every pixel (float32 maps of `mesh.shape`), as sep's
    `back()` and `rms()`; without `noise`, the sky alone (and None)."""
    from viskom.measure.sky_kernels import evaluate

    back = evaluate(mesh.back, _spline_y(mesh.back), mesh.mesh_px, *mesh.shape)
    if not noise:
        return back, None
    return back, evaluate(mesh.rms, _spline_y(mesh.rms), mesh.mesh_px, *mesh.shape)


def subtract_sky(data: np.ndarray, mesh: SkyMesh) -> None:
    """Subtract the sky from `data` (float32, C-ordered, `mesh.shape`) in place, row by row:
    what `data -= sky_maps(mesh)[0]` does, without the map."""
    from viskom.measure.sky_kernels import subtract_rows

    subtract_rows(data, mesh.back, _spline_y(mesh.back), mesh.mesh_px)


def sky_at(mesh: SkyMesh, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The sky (ADU, float32) at pixels (x, y), 0-based column and row indices within
    `mesh.shape`: sep's `back()[y, x]` without the map."""
    from viskom.measure.sky_kernels import values_at

    cols = np.asarray(x, dtype=np.int64)
    rows = np.asarray(y, dtype=np.int64)
    order = np.argsort(rows, kind="stable")  # one row evaluated per row of points
    out = np.empty(rows.size, dtype=np.float32)
    back = mesh.back
    out[order] = values_at(
        back, _spline_y(back), mesh.mesh_px, rows[order], cols[order], mesh.shape[1]
    )
    return out


def spline_tables(mesh: SkyMesh) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(back, d2 back, rms, d2 rms): the meshes and their second derivatives along y, what
    `sky_kernels.sky_row` needs to evaluate the sky row by row inside another kernel."""
    return mesh.back, _spline_y(mesh.back), mesh.rms, _spline_y(mesh.rms)


def sky_product(skies: Mapping[str, SkyMesh]) -> dict[str, np.ndarray]:
    """The meshes of every quadrant as named arrays (an npz product): `back_<quadrant>`,
    `rms_<quadrant>`, `shape_<quadrant>` (the image's rows, columns), `mesh_px_<quadrant>` and
    `filter_<quadrant>`."""
    out: dict[str, np.ndarray] = {}
    for ext, mesh in skies.items():
        out[f"back_{ext}"] = mesh.back
        out[f"rms_{ext}"] = mesh.rms
        out[f"shape_{ext}"] = np.asarray(mesh.shape, dtype=np.int64)
        out[f"mesh_px_{ext}"] = np.asarray(mesh.mesh_px, dtype=np.int64)
        out[f"filter_{ext}"] = np.asarray(mesh.filter_size, dtype=np.int64)
    return out


def skies_from_product(arrays: Mapping[str, np.ndarray] | None) -> dict[str, SkyMesh]:
    """`sky_product`'s arrays back as meshes per quadrant (none for None)."""
    if not arrays:
        return {}
    out = {}
    for key in arrays:
        if key.startswith("back_"):
            ext = key[len("back_") :]
            h, w = (int(v) for v in arrays[f"shape_{ext}"])
            out[ext] = SkyMesh(
                np.ascontiguousarray(arrays[key], dtype=np.float32),
                np.ascontiguousarray(arrays[f"rms_{ext}"], dtype=np.float32),
                int(arrays[f"mesh_px_{ext}"]),
                (h, w),
                int(arrays[f"filter_{ext}"]),
            )
    return out


def _fill_bad(back: np.ndarray, rms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Meshes measured as NaN take the mean of the nearest good ones (none good: sky 0,
    noise 1)."""
    bad = ~np.isfinite(back)
    if not bad.any():
        return back, rms
    back, rms = back.copy(), rms.copy()
    good = np.argwhere(~bad)
    if good.size == 0:
        return np.zeros_like(back), np.ones_like(rms)
    for j, i in np.argwhere(bad):
        d2 = (good[:, 0] - j) ** 2 + (good[:, 1] - i) ** 2
        near = good[d2 == d2.min()]
        back[j, i] = back[near[:, 0], near[:, 1]].mean()
        rms[j, i] = rms[near[:, 0], near[:, 1]].mean()
    return back, rms


def _spline_y(mesh: np.ndarray) -> np.ndarray:
    """Second derivatives along y of each column of meshes."""
    from viskom.measure.sky_kernels import natural_d2

    d2 = np.zeros_like(mesh)
    col = np.empty(mesh.shape[0], dtype=np.float32)
    for i in range(mesh.shape[1]):
        natural_d2(np.ascontiguousarray(mesh[:, i]), col)
        d2[:, i] = col
    return d2
