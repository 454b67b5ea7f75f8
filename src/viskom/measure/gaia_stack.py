"""Stacked colour fits of many exposures: every focal-plane unit of every period at once.

VISQL's plotzptCCD (fitcolcol mode 3, VISQL-SPEC 8.11): all stars of a day (or a month)
stacked and fitted with the quadratic colour relation, 4 clipped refits, for the focal plane,
the 9 blocks, 36 CCDs and 144 quadrants. The fits are vectorised over all units and periods
(`grouped_colour_fits`, the same estimator as `measure.gaia_colour.fit_colour_relation(...,
refits=4)`): per-group sums by np.bincount and a batched 3 x 3 solve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from viskom.le1.geometry import all_ccds, all_extnames, parse_extname
from viskom.measure.gaia_colour import COLOURS, ColourFit, block_name

#: Stacked fits: VISQL plotzptCCD's 4 clipped refits, at least this many stars.
STACK_REFITS = 4
STACK_MIN_STARS = 10
#: Columns of a stacked-fit row (`stacked_fits`), as written to the CSV tables.
FIT_COLUMNS = ("unit", "n_fit", "n_total", "rms", "c0", "c1", "c2", "r075", "r175", "r275")

# Focal-plane units, with integer codes: quadrant q in all_extnames() order, CCD q // 4,
# block by lookup. Block names are 'B' + VISQL's (CCD-column pair, CCD-row pair).
QUADRANTS: tuple[str, ...] = tuple(all_extnames())
CCDS: tuple[str, ...] = tuple(all_ccds())
_QUAD_ID = [parse_extname(q) for q in QUADRANTS]
BLOCKS: tuple[str, ...] = tuple(
    sorted({"B" + block_name(q.ccd_row, q.ccd_column) for q in _QUAD_ID})
)
QUAD_TO_CCD = np.array([CCDS.index(q.ccd) for q in _QUAD_ID], np.int64)
QUAD_TO_BLOCK = np.array(
    [BLOCKS.index("B" + block_name(q.ccd_row, q.ccd_column)) for q in _QUAD_ID], np.int64
)


# ---------------------------------------------------------------------------------------------
# Vectorised stacked colour fits


@dataclass
class GroupFits:
    """Colour relations ln(VIS/Gaia) = c0 + c1 c + c2 c^2 of many groups (arrays over groups)."""

    c0: np.ndarray
    c1: np.ndarray
    c2: np.ndarray
    rms: np.ndarray
    n_fit: np.ndarray
    n_total: np.ndarray

    def ln_ratio(self, colour: float) -> np.ndarray:
        """The fitted ln(VIS/Gaia) of every group at BP-RP `colour`."""
        return self.c0 + self.c1 * colour + self.c2 * colour**2

    def ratios(self, colours: Sequence[float] = COLOURS) -> np.ndarray:
        """VIS/Gaia at each colour: array (n_groups, len(colours))."""
        return np.exp(np.column_stack([self.ln_ratio(c) for c in colours]))

    def colour_fit(self, i: int) -> ColourFit:
        """Group i as a `measure.gaia.ColourFit` (n_terms 3, or 0 where it was not fitted)."""
        terms = 3 if np.isfinite(self.c0[i]) else 0
        return ColourFit(
            float(self.c0[i]), float(self.c1[i]), float(self.c2[i]), float(self.rms[i]),
            int(self.n_fit[i]), int(self.n_total[i]), terms,
        )  # fmt: skip

    def rows(self) -> list[dict[str, Any]]:
        """Every group as a table row (FIT_COLUMNS without 'unit'), in group order."""
        r = self.ratios()
        cols = {
            "n_fit": self.n_fit.tolist(),
            "n_total": self.n_total.tolist(),
            "rms": self.rms.tolist(),
            "c0": self.c0.tolist(),
            "c1": self.c1.tolist(),
            "c2": self.c2.tolist(),
            "r075": r[:, 0].tolist(),
            "r175": r[:, 1].tolist(),
            "r275": r[:, 2].tolist(),
        }
        return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]


def grouped_colour_fits(
    group: np.ndarray,
    colour: np.ndarray,
    ln_ratio: np.ndarray,
    n_groups: int,
    *,
    refits: int = STACK_REFITS,
    clip_sigma: float = 3.0,
    min_stars: int = STACK_MIN_STARS,
) -> GroupFits:
    """`fit_colour_relation(colour, ln_ratio, refits=refits)` of every group at once.

    The same estimator (quadratic least squares; rms = sqrt(sum r^2 / N) of the kept stars;
    keep r^2 < (clip rms)^2 among the finite stars; refit; a group stops when its kept set no
    longer changes or would fall below 3 stars; groups with fewer than `min_stars` finite
    stars get NaN), computed with per-group sums (np.bincount) and a batched 3 x 3 solve, so
    the cost is a few passes over the rows whatever the number of groups. Colours are centred
    at 1.75 for conditioning. Rows with group < 0 are ignored.
    """
    group = np.asarray(group, np.int64)
    c = np.asarray(colour, float)
    v = np.asarray(ln_ratio, float)
    ok = (group >= 0) & np.isfinite(c) & np.isfinite(v)
    g, x, v = group[ok], c[ok] - 1.75, v[ok]
    n_total = np.bincount(g, minlength=n_groups)
    fitted = n_total >= min_stars
    coef = np.full((n_groups, 3), np.nan)
    rms, n_fit = np.full(n_groups, np.nan), np.zeros(n_groups, np.int64)
    keep = fitted[g]
    active = fitted.copy()
    rows = np.flatnonzero(keep)  # rows of the groups still iterating
    for i in range(refits + 1):
        gr, xr, vr, kr = g[rows], x[rows], v[rows], keep[rows]
        gk, xk, vk = gr[kr], xr[kr], vr[kr]
        x2 = xk * xk
        s = [np.bincount(gk, w, minlength=n_groups) for w in (None, xk, x2, x2 * xk, x2 * x2)]
        t = [np.bincount(gk, w, minlength=n_groups) for w in (vk, vk * xk, vk * x2)]
        act = np.flatnonzero(active)
        a = np.stack(
            [np.stack([s[0], s[1], s[2]], -1), np.stack([s[1], s[2], s[3]], -1),
             np.stack([s[2], s[3], s[4]], -1)], -2,
        )[act]  # fmt: skip
        coef[act] = _solve3(a, np.stack(t, -1)[act])
        resid = vr - (coef[gr, 0] + coef[gr, 1] * xr + coef[gr, 2] * xr * xr)
        with np.errstate(invalid="ignore", divide="ignore"):
            ms = np.bincount(gk, resid[kr] ** 2, minlength=n_groups) / s[0]
        rms[act] = np.sqrt(ms[act])
        n_fit[act] = s[0][act].astype(np.int64)
        if i == refits:
            break
        with np.errstate(invalid="ignore"):
            new = resid**2 < (clip_sigma * rms[gr]) ** 2
        n_new = np.bincount(gr, new, minlength=n_groups)
        changed = np.bincount(gr, new != kr, minlength=n_groups) > 0
        active &= changed & (n_new >= 3)
        if not active.any():
            break
        still = active[gr]
        keep[rows[still]] = new[still]
        rows = rows[still]
    # Back from the centred colour x = c - 1.75 to c.
    k0, k1, k2 = coef[:, 0], coef[:, 1], coef[:, 2]
    c0 = k0 - 1.75 * k1 + 1.75**2 * k2
    c1 = k1 - 3.5 * k2
    return GroupFits(c0, c1, k2.copy(), rms, n_fit, n_total)


def _solve3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched least-squares solution of the normal equations a x = b (singular: min-norm)."""
    if a.shape[0] == 0:
        return np.zeros((0, 3))
    try:
        sol = np.linalg.solve(a, b[..., None])[..., 0]
        if np.isfinite(sol).all():
            return sol
    except np.linalg.LinAlgError:
        pass
    return np.einsum("nij,nj->ni", np.linalg.pinv(a), b)


# ---------------------------------------------------------------------------------------------
# Unit levels of stacked fits


def unit_levels(quadrant: np.ndarray) -> list[tuple[str, tuple[str, ...], np.ndarray]]:
    """(level, unit names, unit code per row) for FPA, blocks, CCDs and quadrants.

    Rows with an unknown quadrant (-1) count for the focal plane only.
    """
    q = np.asarray(quadrant, np.int64)
    known = q >= 0
    qq = np.where(known, q, 0)
    return [
        ("fpa", ("FPA",), np.zeros(q.size, np.int64)),
        ("block", BLOCKS, np.where(known, QUAD_TO_BLOCK[qq], -1)),
        ("ccd", CCDS, np.where(known, QUAD_TO_CCD[qq], -1)),
        ("quadrant", QUADRANTS, np.where(known, q, -1)),
    ]


def stacked_fits(
    quadrant: np.ndarray,
    colour: np.ndarray,
    ln_ratio: np.ndarray,
    period: np.ndarray | None = None,
    n_periods: int = 1,
    *,
    refits: int = STACK_REFITS,
    min_stars: int = STACK_MIN_STARS,
) -> dict[str, list[dict[str, Any]]]:
    """Stacked colour fits of every unit (FPA, blocks, CCDs, quadrants) in every period.

    `period` (e.g. a day index per row, default all 0) splits the rows. Returns, per period
    index as str, the rows 'unit' + FIT_COLUMNS in the order FPA, 9 blocks, 36 CCDs, 144
    quadrants.
    """
    q = np.asarray(quadrant, np.int64)
    per = np.zeros(q.size, np.int64) if period is None else np.asarray(period, np.int64)
    out: dict[str, list[dict[str, Any]]] = {str(p): [] for p in range(n_periods)}
    for _, names, code in unit_levels(q):
        n_units = len(names)
        grp = np.where((code >= 0) & (per >= 0), per * n_units + code, -1)
        fits = grouped_colour_fits(
            grp, colour, ln_ratio, n_periods * n_units, refits=refits, min_stars=min_stars
        )
        rows = fits.rows()
        for p in range(n_periods):
            for u, unit in enumerate(names):
                out[str(p)].append({"unit": unit, **rows[p * n_units + u]})
    return out


def visql_unit_order(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """FPA, then each CCD followed by its quadrants (VISQL's visgaiacolour order); no blocks."""
    by_unit = {r["unit"]: r for r in rows}
    order = ["FPA"]
    for ccd in CCDS:
        order += [ccd, *(f"{ccd}.{qd}" for qd in "EFGH")]
    return [by_unit[u] for u in order if u in by_unit]
