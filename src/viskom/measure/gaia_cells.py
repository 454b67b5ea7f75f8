"""Focal-plane maps of star values: regular hexagonal cells and their clipped statistics.

VISQL's plotzptFP (VISQL-SPEC 8.10) binned stars with matplotlib's `hexbin` and reduced each
cell with a Python function (`clip3m`, `clip3s100`). Here the cells are regular hexagons of a
fixed size (`FPA_HEX_SIZE_DEG`) on matplotlib's hexbin lattice, so that maps of a day, a week
and a month share one grid and can be compared cell by cell, and the clipped statistics of
all cells are computed at once (np.bincount).

`clipped_cell_stats` keeps its own vectorised clipping rather than `astropy.stats.sigma_clip`,
which clips one sample at a time (a Python loop over thousands of cells) and would not give
the same numbers: astropy keeps values on the bound (here strictly inside), never re-admits a
clipped value (here each pass judges all values against the kept ones' mean and variance) and
has no rule for a cell of equal values (kept here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Hexagon width (centre-to-centre along X) of every focal-plane map: 0.8 deg / 60, i.e.
#: 480 VIS pixels: about 4 hexagons across a quadrant and 5 rows of them up it.
FPA_HEX_SIZE_DEG = 0.8 / 60
#: Map extent (deg): x0, x1, y0, y1, the focal-plane limits (`present.focal.FPA_XLIM/YLIM`).
FPA_EXTENT = (-0.4, 0.4, -0.45, 0.45)


@dataclass(frozen=True)
class HexGrid:
    """Regular hexagons over an extent, with matplotlib's `hexbin` lattice and cell assignment.

    Two rectangular lattices: (i sx, j sy) and ((i + 1/2) sx, (j + 1/2) sy) from the lower-left
    corner, with sy = sqrt(3) sx so that hexagons are regular on equal-aspect axes. A point
    belongs to the nearest lattice point. Cell ids: lattice 1 first (row-major), then lattice 2.
    """

    size: float = FPA_HEX_SIZE_DEG
    extent: tuple[float, float, float, float] = FPA_EXTENT

    @property
    def sx(self) -> float:
        """Lattice step along X (the hexagon width)."""
        return self.size

    @property
    def sy(self) -> float:
        """Lattice step along Y: sqrt(3) sx."""
        return self.size * math.sqrt(3.0)

    @property
    def nx(self) -> int:
        """Lattice columns over the extent."""
        return max(1, round((self.extent[1] - self.extent[0]) / self.sx))

    @property
    def ny(self) -> int:
        """Lattice rows over the extent."""
        return max(1, math.ceil((self.extent[3] - self.extent[2]) / self.sy - 1e-9))

    @property
    def n_cells(self) -> int:
        """Number of cells of both lattices."""
        return (self.nx + 1) * (self.ny + 1) + self.nx * self.ny

    def cells(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Cell id of each point; -1 outside the extent or where x or y is not finite."""
        xmin, _, ymin, _ = self.extent
        xs = (np.asarray(x, float) - xmin) / self.sx
        ys = (np.asarray(y, float) - ymin) / self.sy
        inside = (
            np.isfinite(xs)
            & np.isfinite(ys)
            & (xs >= 0)
            & (xs <= self.nx)
            & (ys >= 0)
            & (ys <= self.ny)
        )
        xs, ys = np.where(inside, xs, 0.0), np.where(inside, ys, 0.0)
        ix1, iy1 = np.rint(xs).astype(np.int64), np.rint(ys).astype(np.int64)
        ix2 = np.minimum(np.floor(xs).astype(np.int64), self.nx - 1)
        iy2 = np.minimum(np.floor(ys).astype(np.int64), self.ny - 1)
        d1 = (xs - ix1) ** 2 + 3.0 * (ys - iy1) ** 2
        d2 = (xs - ix2 - 0.5) ** 2 + 3.0 * (ys - iy2 - 0.5) ** 2
        first = d1 < d2
        cell = np.where(
            first,
            iy1 * (self.nx + 1) + ix1,
            (self.nx + 1) * (self.ny + 1) + iy2 * self.nx + ix2,
        )
        return np.where(inside, cell, -1)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of every cell centre, indexed by cell id."""
        xmin, _, ymin, _ = self.extent
        j1, i1 = np.divmod(np.arange((self.nx + 1) * (self.ny + 1)), self.nx + 1)
        j2, i2 = np.divmod(np.arange(self.nx * self.ny), self.nx)
        cx = np.concatenate([i1 * self.sx, (i2 + 0.5) * self.sx]) + xmin
        cy = np.concatenate([j1 * self.sy, (j2 + 0.5) * self.sy]) + ymin
        return cx, cy

    def polygon(self) -> np.ndarray:
        """The hexagon's vertices relative to its centre (matplotlib's, pointy top)."""
        unit = np.array([[0.5, -0.5], [0.5, 0.5], [0.0, 1.0], [-0.5, 0.5], [-0.5, -0.5], [0, -1]])
        return np.array([self.sx, self.sy / 3.0]) * unit


def clipped_cell_stats(
    cell: np.ndarray,
    values: np.ndarray,
    n_cells: int,
    *,
    nsigma: float = 3.0,
    iterations: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell sigma-clipped mean and standard deviation, all cells at once.

    VISQL's `clip3m`/`clip3s100`: start from all values of a cell, then `iterations` times keep
    (v - mean)^2 < nsigma^2 var with mean and var of the kept values. Returns (mean, sigma,
    n_kept) per cell; NaN where a cell has no finite value. Rows with cell < 0 are ignored.
    """
    cell = np.asarray(cell, np.int64)
    v = np.asarray(values, float)
    ok = (cell >= 0) & np.isfinite(v)
    cell, v = cell[ok], v[ok]
    keep = np.ones(v.size, bool)
    mean = var = np.full(n_cells, np.nan)
    n = np.zeros(n_cells)
    for it in range(iterations + 1):
        w = keep.astype(float)
        n = np.bincount(cell, w, minlength=n_cells)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(cell, w * v, minlength=n_cells) / n
            dev = v - mean[cell]
            var = np.bincount(cell, w * dev**2, minlength=n_cells) / n
        if it == iterations:
            break
        new = dev**2 < nsigma**2 * var[cell]
        # A cell whose values are all equal has var 0: keep them rather than drop all.
        new |= (var[cell] == 0) & keep
        if np.array_equal(new, keep):
            break
        keep = new
    return mean, np.sqrt(var), n


@dataclass(frozen=True)
class FpaCellMaps:
    """Per-cell statistics of the stars of a period (arrays indexed by cell id of `grid`).

    counts: stars per cell; residual_mean / residual_sigma: 3-sigma-clipped mean and sigma of
    the residual (5 iterations); g_mean: mean Gaia G; log_flux_mean: mean log10 VIS flux;
    occupied: ids of the cells with stars; n_stars: stars inside the grid.
    """

    grid: HexGrid
    counts: np.ndarray
    residual_mean: np.ndarray
    residual_sigma: np.ndarray
    g_mean: np.ndarray
    log_flux_mean: np.ndarray
    occupied: np.ndarray
    n_stars: int


def fpa_cell_maps(
    x: np.ndarray,
    y: np.ndarray,
    residual: np.ndarray,
    g_mag: np.ndarray,
    flux_adu: np.ndarray,
    grid: HexGrid | None = None,
) -> FpaCellMaps:
    """Bin stars (instrument frame, deg) into `grid` and reduce each cell (`FpaCellMaps`).

    The residual is 3-sigma clipped per cell (VISQL's clip3m / clip3s100); G and log10 flux
    are plain means (fluxes <= 0 left out).
    """
    grid = grid or HexGrid()
    x, y = np.asarray(x, float), np.asarray(y, float)
    z = np.asarray(residual, float)
    g, f = np.asarray(g_mag, float), np.asarray(flux_adu, float)
    cell = grid.cells(x, y)
    n_cells = grid.n_cells
    counts = np.bincount(cell[cell >= 0], minlength=n_cells).astype(float)
    zmean, zsig, _ = clipped_cell_stats(cell, z, n_cells)
    gmean, _, _ = clipped_cell_stats(cell, g, n_cells, iterations=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lf = np.where(f > 0, np.log10(f), np.nan)
    fmean, _, _ = clipped_cell_stats(cell, lf, n_cells, iterations=0)
    return FpaCellMaps(
        grid=grid,
        counts=counts,
        residual_mean=zmean,
        residual_sigma=zsig,
        g_mean=gmean,
        log_flux_mean=fmean,
        occupied=np.flatnonzero(counts > 0),
        n_stars=int((cell >= 0).sum()),
    )
