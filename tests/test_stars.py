"""Stellar-locus ("chimney") search and star selection (viskom.measure.stars)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from viskom.measure.stars import (
    LocusResult,
    chimney_counts,
    find_stellar_locus,
    select_stars,
)
from viskom.sources.visql import read_star_catalogue

DATA = Path(__file__).parent / "data" / "visql"
STARS2 = DATA / "C_20240713_032840_W_52167482.VIS.bin_01_01_stars2.cat"

R_STAR = 1.17  # true half-light radius of unsaturated stars (px)
F_SAT = 2.5e5  # flux at which the peak saturates (ADU)
STAR, SATURATED, GALAXY, COSMIC = 1, 2, 3, 4


def synthetic_catalogue(seed: int = 0, n_star: int = 3000, n_gal: int = 3000, n_cr: int = 20000):
    """SExtractor-like columns: stars, saturated stars ("smoke"), galaxies, cosmic rays."""
    rng = np.random.default_rng(seed)
    f = 10 ** rng.uniform(4, 6, n_star)
    sat = f > F_SAT
    grow = np.where(sat, np.sqrt(f / F_SAT), 1.0)  # saturated cores widen: f ~ r^2
    r = R_STAR * grow * (1 + rng.normal(0, 0.02, n_star))
    r += rng.normal(0, 1, n_star) * 0.03 * np.sqrt(1e4 / f)  # faint radii are noisier
    b = 1.75 * grow + rng.normal(0, 0.08, n_star)
    flags = np.where(sat, 4, 0) | rng.choice([0, 2], n_star, p=[0.9, 0.1])
    f_gal = 10 ** rng.uniform(3, 5.5, n_gal)
    r_gal = 10 ** rng.uniform(np.log10(1.5), np.log10(8), n_gal)
    b_gal = r_gal * rng.uniform(0.5, 1.2, n_gal)
    f_cr = 10 ** rng.uniform(2, 5, n_cr)
    r_cr = rng.uniform(0.4, 1.0, n_cr)
    b_cr = rng.uniform(0.3, 1.25, n_cr)  # thin
    kind = np.concatenate(
        [np.where(sat, SATURATED, STAR), np.full(n_gal, GALAXY), np.full(n_cr, COSMIC)]
    )
    return {
        "flux_radius": np.concatenate([r, r_gal, r_cr]),
        "flux": np.concatenate([f, f_gal, f_cr]),
        "b_image": np.concatenate([b, b_gal, b_cr]),
        "flags": np.concatenate([flags, np.zeros(n_gal + n_cr, dtype=int)]),
        "kind": kind,
    }


def _locus(cat: dict, **kw) -> LocusResult:
    return find_stellar_locus(cat["flux_radius"], cat["flux"], cat["b_image"], **kw)


def _select(cat: dict, locus: LocusResult) -> np.ndarray:
    return select_stars(cat["flux_radius"], cat["flux"], cat["b_image"], locus, flags=cat["flags"])


def visql_chimney(r, f, rc, fc, rwidth=0.1, fwidth=0.15):
    """VISQL-SPEC 5.2's chimney() region, transcribed literally (for cross-checking)."""
    smoke = (
        (f < (r / rc) ** 2 * fc * (1 + fwidth))
        & (f > (r / rc) ** 2 * fc / (1 + fwidth))
        & (f < (r / rc) ** 4 * fc)
        & (r > rc / (1 + rwidth))
    )
    stack = (
        (r > rc / (1 + rwidth))
        & (r < rc * (1 + rwidth))
        & (f > 1e5 * rc**2 / 1.1**2)
        & (f < (r / rc) ** 4 * fc)
    )
    return smoke | stack


def test_vectorised_counts_equal_visqls_loop() -> None:
    cat = synthetic_catalogue(seed=3, n_star=500, n_gal=500, n_cr=2000)
    keep = cat["b_image"] > 1.3
    r, f = cat["flux_radius"][keep], cat["flux"][keep]
    rcs = np.logspace(0, 1, 20)
    fcs = np.logspace(0, 0.5, 8)[None, :] * 3e5 * rcs[:, None] ** 2
    counts = chimney_counts(r, f, rcs, fcs)
    for i, rc in enumerate(rcs):
        for j in range(8):
            assert counts[i, j] == visql_chimney(r, f, rc, fcs[i, j]).sum()


def test_synthetic_locus_found_near_truth() -> None:
    cat = synthetic_catalogue()
    locus = _locus(cat)
    assert locus.found and locus.reason == ""
    rmed = np.sqrt(locus.rmin * locus.rmax)
    assert rmed == pytest.approx(R_STAR, rel=0.02)
    assert locus.rmax / locus.rmin == pytest.approx(1.21)
    assert locus.fmax / locus.fmin == pytest.approx(10.0)
    assert locus.fmax <= F_SAT  # the box stays below saturation
    assert locus.n_in_box > 1000 and locus.best_count > 0


def test_synthetic_purity_and_completeness() -> None:
    cat = synthetic_catalogue()
    sel = _select(cat, _locus(cat))
    kind, flux = cat["kind"], cat["flux"]
    purity = (kind[sel] == STAR).mean()
    assert purity > 0.95
    assert not sel[kind == SATURATED].any()
    assert not sel[kind == COSMIC].any()
    # VISQL's box spans one decade (fmin = fmax / 10): it is complete in the decade below
    # saturation; fainter unsaturated stars are outside it by design.
    top_decade = (kind == STAR) & (flux > F_SAT / 10)
    assert sel[top_decade].mean() > 0.8
    unsaturated = kind == STAR
    assert 0.6 < sel[unsaturated].mean() < 0.8
    # A wider flux box (a parameter) reaches the fainter ones without losing purity.
    wide = _select(cat, _locus(cat, box_flux_ratio=25.0))
    assert wide[unsaturated].mean() > 0.8
    assert (kind[wide] == STAR).mean() > 0.95


def test_flux_scale_handles_short_exposures() -> None:
    """Fluxes x 89.52/560.52 with flux_scale the same factor give the same stars."""
    cat = synthetic_catalogue(seed=1)
    scale = 89.52 / 560.52
    short = {**cat, "flux": cat["flux"] * scale}
    long_locus = _locus(cat)
    short_locus = _locus(short, flux_scale=scale)
    assert short_locus.found
    assert short_locus.rc == long_locus.rc
    assert short_locus.fc == pytest.approx(long_locus.fc * scale, rel=1e-12)
    assert short_locus.rmin == pytest.approx(long_locus.rmin, rel=1e-12)
    np.testing.assert_array_equal(_select(short, short_locus), _select(cat, long_locus))


def test_empty_catalogue_gives_reason_not_exception() -> None:
    locus = find_stellar_locus(np.array([]), np.array([]), np.array([]))
    assert not locus.found and locus.reason == "no sources"
    assert np.isnan(locus.rmin) and locus.n_in_box == 0
    assert select_stars(np.array([]), np.array([]), np.array([]), locus).shape == (0,)


def test_galaxies_only_gives_no_chimney() -> None:
    rng = np.random.default_rng(9)
    n = 5000
    r = 10 ** rng.uniform(np.log10(1.5), np.log10(8), n)
    f = 10 ** rng.uniform(3, 5, n)
    b = r * rng.uniform(0.5, 1.2, n)
    locus = find_stellar_locus(r, f, b)
    assert not locus.found
    assert locus.reason == "no chimney: best count 0"
    assert not select_stars(r, f, b, locus).any()


def test_cosmic_rays_only_and_bad_values() -> None:
    rng = np.random.default_rng(4)
    r, f, b = rng.uniform(0.4, 1, 100), 10 ** rng.uniform(2, 5, 100), rng.uniform(0.3, 1.2, 100)
    locus = find_stellar_locus(r, f, b)
    assert not locus.found and "b_image > 1.3" in locus.reason
    nan = np.full(10, np.nan)
    assert not find_stellar_locus(nan, nan, nan).found
    # NaN rows are ignored, not fatal.
    cat = synthetic_catalogue(seed=2)
    r = cat["flux_radius"].copy()
    r[::7] = np.nan
    assert find_stellar_locus(r, cat["flux"], cat["b_image"]).found
    with pytest.raises(ValueError, match="lengths"):
        find_stellar_locus(np.ones(3), np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="flux_scale"):
        find_stellar_locus(np.ones(3), np.ones(3), np.ones(3), flux_scale=0.0)


def test_select_stars_flags_and_peak() -> None:
    locus = LocusResult(
        found=True, reason="", rc=1.13, fc=4e5, rmin=1.0, rmax=1.3, fmin=2e4, fmax=2e5
    )
    r = np.array([1.1, 1.1, 1.1, 1.1, 1.1, 0.9, 1.1])
    f = np.array([5e4, 5e4, 5e4, 5e4, 5e4, 5e4, 3e5])
    b = np.array([1.8, 1.2, 1.8, 1.8, 1.8, 1.8, 1.8])
    flags = np.array([0, 0, 4, 6, 3, 0, 0])
    peak = np.array([1e4, 1e4, 1e4, 1e4, 6e4, 1e4, 1e4])
    base = select_stars(r, f, b, locus)
    assert base.tolist() == [True, False, True, True, True, False, False]
    with_flags = select_stars(r, f, b, locus, flags=flags)
    assert with_flags.tolist() == [True, False, False, False, True, False, False]
    with_peak = select_stars(r, f, b, locus, flags=flags, peak=peak, saturate=5e4)
    assert with_peak.tolist() == [True, False, False, False, False, False, False]


def test_real_visql_stars2_catalogue() -> None:
    """VISQL's own selection: the locus is found again and most stars fall in our box."""
    cat = read_star_catalogue(STARS2)
    r = np.asarray(cat["flux_radius"])
    f = np.asarray(cat["flux_auto"])
    b = np.asarray(cat["b_image"])
    locus = find_stellar_locus(r, f, b)
    assert locus.found
    # The radius box VISQL applied to the full catalogue spans r = 1.066 ... 1.289.
    assert 1.10 < np.sqrt(locus.rmin * locus.rmax) < 1.23
    inside = select_stars(r, f, b, locus)
    assert inside.mean() > 0.85
    in_radius = (r > locus.rmin) & (r < locus.rmax)
    assert in_radius.mean() > 0.97
    # SExtractor's saturation flag removes a few more.
    flags = np.asarray(cat["flags"])
    assert select_stars(r, f, b, locus, flags=flags).sum() <= inside.sum()
