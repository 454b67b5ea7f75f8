"""The colour relation of VIS against Gaia: ln(VIS/Gaia) against BP-RP, per focal-plane unit.

VISQL's gaiaphotom colour fit (VISQL-SPEC 8.4, 8.11): a quadratic with one 3-sigma-clipped
refit (8.4) or four (8.11, for stacks), evaluated at BP-RP = 0.75, 1.75, 2.75; for the focal
plane and for every 3x3 block, CCD and quadrant of an exposure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

COLOURS = (0.75, 1.75, 2.75)  # BP-RP at which VIS/Gaia is reported
COLOUR_FIT_GMAX = 19.5  # VISQL: only G < 19.5 enter the colour fit


# ---------------------------------------------------------------------------------------------
# Colour relation
# ---------------------------------------------------------------------------------------------
@dataclass
class ColourFit:
    """ln(VIS/Gaia) = c0 + c1 c + c2 c^2 (c = BP-RP), as VISQL fits it."""

    c0: float
    c1: float
    c2: float
    rms: float  # of ln(VIS/Gaia) about the fit, kept stars
    n_fit: int  # stars kept
    n_total: int  # stars offered
    n_terms: int  # 3: full quadratic; 1: offset only, shape from another fit; 0: no fit
    kept: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, bool))

    def ln_ratio(self, colour: np.ndarray | float) -> np.ndarray:
        """The fitted ln(VIS/Gaia) at BP-RP `colour`."""
        c = np.asarray(colour, float)
        return self.c0 + self.c1 * c + self.c2 * c**2

    def ratio_at(self, colours: Sequence[float] = COLOURS) -> tuple[float, ...]:
        """VIS/Gaia at the given BP-RP (VISQL: 0.75, 1.75, 2.75)."""
        return tuple(float(v) for v in np.exp(self.ln_ratio(np.asarray(colours, float))))

    def as_dict(self) -> dict:
        """JSON-friendly summary including VIS/Gaia at the three colours."""
        out = {k: v for k, v in asdict(self).items() if k != "kept"}
        out["vis_over_gaia"] = list(self.ratio_at())
        return out


NO_FIT = ColourFit(math.nan, math.nan, math.nan, math.nan, 0, 0, 0)


def fit_colour_relation(
    bp_rp: np.ndarray,
    ln_ratio: np.ndarray,
    *,
    clip_sigma: float = 3.0,
    refits: int = 1,
    min_stars: int = 10,
    shape: ColourFit | None = None,
) -> ColourFit:
    """Quadratic least squares of ln(VIS/Gaia) against BP-RP with sigma clipping.

    VISQL (8.4): rms = sqrt(sum r^2 / N); keep r^2 < (3 rms)^2; refit once (`refits=1`);
    the stacked fits of 8.11 use four. Fewer than `min_stars` stars: with `shape` (e.g. the
    focal plane's fit of the same exposure) only the offset c0 is fitted, same clipping,
    with at least 3 stars; else no fit (NaN, n_terms 0).
    """
    c = np.asarray(bp_rp, float)
    v = np.asarray(ln_ratio, float)
    ok = np.isfinite(c) & np.isfinite(v)
    n_total = int(ok.sum())
    if n_total >= min_stars:
        terms, design = 3, np.column_stack([np.ones(c.size), c, c**2])
        base = np.zeros(c.size)
    elif shape is not None and shape.n_terms == 3 and n_total >= 3:
        terms, design = 1, np.ones((c.size, 1))
        base = shape.c1 * c + shape.c2 * c**2
    else:
        return ColourFit(math.nan, math.nan, math.nan, math.nan, 0, n_total, 0, ok & False)
    target = np.where(ok, v - base, 0.0)
    keep = ok.copy()
    coef = np.zeros(terms)
    rms = math.nan
    for i in range(refits + 1):
        coef = np.linalg.lstsq(design[keep], target[keep], rcond=None)[0]
        resid = np.where(ok, target - design @ coef, np.inf)
        rms = math.sqrt(float(np.sum(resid[keep] ** 2)) / keep.sum())
        if i == refits:
            break
        new = ok & (resid**2 < (clip_sigma * rms) ** 2)
        if new.sum() < max(terms, 3) or np.array_equal(new, keep):
            break
        keep = new
    if terms == 3:
        c0, c1, c2 = (float(x) for x in coef)
    else:
        c0, c1, c2 = float(coef[0]), shape.c1, shape.c2  # type: ignore[union-attr]
    return ColourFit(c0, c1, c2, rms, int(keep.sum()), n_total, terms, keep)


def frat_model(bp_rp: np.ndarray, ratios: Sequence[float]) -> np.ndarray:
    """VISQL's FRATMOD: exp of the quadratic through (0.75, ln r1), (1.75, ln r2), (2.75, ln r3).

    The Lagrange form of mapzptwithgaia.py (VISQL-SPEC 8.5), so that a residual table can be
    rebuilt from the three published ratios alone.
    """
    c = np.asarray(bp_rp, float)
    lr = np.log(np.asarray(ratios, float))
    b = COLOURS
    out = np.zeros_like(c)
    for i in range(3):
        term = np.full_like(c, lr[i])
        for j in range(3):
            if j != i:
                term = term * (c - b[j]) / (b[i] - b[j])
        out = out + term
    return np.exp(out)


# ---------------------------------------------------------------------------------------------
# Focal-plane units
# ---------------------------------------------------------------------------------------------
def block_name(ccd_row: int, ccd_column: int) -> str:
    """VISQL's 3x3 block of a CCD: column pair then row pair, e.g. CCD 3-5 (row 3) -> '5634'."""
    c0 = 2 * ((ccd_column - 1) // 2) + 1
    r0 = 2 * ((ccd_row - 1) // 2) + 1
    return f"{c0}{c0 + 1}{r0}{r0 + 1}"


def unit_members(extnames: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices of each unit: 'FPA', each 3x3 block 'B1212'..., each CCD 'R-C', quadrant."""
    from viskom.le1.geometry import parse_extname

    ext = np.asarray(extnames, dtype=str)
    groups: dict[str, list[int]] = {"FPA": list(range(ext.size))}
    parsed: dict[str, tuple[str, str]] = {}
    for name in np.unique(ext):
        try:
            q = parse_extname(str(name))
        except ValueError:
            continue
        parsed[str(name)] = (
            f"{q.ccd_row}-{q.ccd_column}",
            "B" + block_name(q.ccd_row, q.ccd_column),
        )
    for i, name in enumerate(ext):
        if name not in parsed:
            continue
        ccd, block = parsed[name]
        for unit in (block, ccd, name):
            groups.setdefault(unit, []).append(i)
    return {k: np.asarray(v, np.intp) for k, v in groups.items()}


def colour_fits_by_unit(
    extnames: np.ndarray,
    bp_rp: np.ndarray,
    ln_ratio: np.ndarray,
    usable: np.ndarray,
    *,
    min_stars: int = 10,
    refits: int = 1,
) -> dict[str, ColourFit]:
    """The colour relation of the focal plane and of every block, CCD and quadrant.

    Units with fewer than `min_stars` usable stars get the focal plane's shape and their
    own offset (n_terms 1), so that every unit with >= 3 stars has a VIS/Gaia.
    """
    groups = unit_members(extnames)
    usable = np.asarray(usable, bool)
    fits: dict[str, ColourFit] = {}
    idx = groups.pop("FPA")
    sel = idx[usable[idx]]
    fpa = fit_colour_relation(bp_rp[sel], ln_ratio[sel], min_stars=min_stars, refits=refits)
    fits["FPA"] = fpa
    for unit, idx in groups.items():
        sel = idx[usable[idx]]
        fits[unit] = fit_colour_relation(
            bp_rp[sel], ln_ratio[sel], min_stars=min_stars, refits=refits, shape=fpa
        )
    return fits


def colour_metrics(fits: Mapping[str, ColourFit]) -> list[tuple[str, str, float]]:
    """Metric rows (unit, metric, value) of colour fits: VIS/Gaia at the 3 colours and terms."""
    rows: list[tuple[str, str, float]] = []
    for unit, f in fits.items():
        r = f.ratio_at()
        rows += [
            (unit, "vis_over_gaia_075", r[0]),
            (unit, "vis_over_gaia_175", r[1]),
            (unit, "vis_over_gaia_275", r[2]),
            (unit, "gaia_colour_n_stars", float(f.n_fit)),
        ]
        if unit == "FPA" or f.n_terms == 3:
            rows += [
                (unit, "gaia_colour_c0", f.c0),
                (unit, "gaia_colour_c1", f.c1),
                (unit, "gaia_colour_c2", f.c2),
                (unit, "gaia_colour_rms", f.rms),
            ]
    return rows
