"""Stellar-locus search and star selection (viskom.measure.stars): the adaptive locus on
catalogues of any PSF width, density and exposure, and VISQL's chimney as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from viskom.measure.stars import (
    LocusResult,
    chimney_counts,
    find_stellar_locus,
    find_visql_chimney,
    select_stars,
    select_visql_box,
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
    return find_visql_chimney(cat["flux_radius"], cat["flux"], cat["b_image"], **kw)


def _select(cat: dict, locus: LocusResult) -> np.ndarray:
    return select_visql_box(
        cat["flux_radius"], cat["flux"], cat["b_image"], locus, flags=cat["flags"]
    )


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


def test_visql_empty_catalogue_gives_reason_not_exception() -> None:
    locus = find_visql_chimney(np.array([]), np.array([]), np.array([]))
    assert not locus.found and locus.reason == "no sources"
    assert np.isnan(locus.rmin) and locus.n_in_box == 0
    assert select_visql_box(np.array([]), np.array([]), np.array([]), locus).shape == (0,)


def test_visql_galaxies_only_gives_no_chimney() -> None:
    rng = np.random.default_rng(9)
    n = 5000
    r = 10 ** rng.uniform(np.log10(1.5), np.log10(8), n)
    f = 10 ** rng.uniform(3, 5, n)
    b = r * rng.uniform(0.5, 1.2, n)
    locus = find_visql_chimney(r, f, b)
    assert not locus.found
    assert locus.reason == "no chimney: best count 0"
    assert not select_visql_box(r, f, b, locus).any()


def test_visql_cosmic_rays_only_and_bad_values() -> None:
    rng = np.random.default_rng(4)
    r, f, b = rng.uniform(0.4, 1, 100), 10 ** rng.uniform(2, 5, 100), rng.uniform(0.3, 1.2, 100)
    locus = find_visql_chimney(r, f, b)
    assert not locus.found and "b_image > 1.3" in locus.reason
    nan = np.full(10, np.nan)
    assert not find_visql_chimney(nan, nan, nan).found
    # NaN rows are ignored, not fatal.
    cat = synthetic_catalogue(seed=2)
    r = cat["flux_radius"].copy()
    r[::7] = np.nan
    assert find_visql_chimney(r, cat["flux"], cat["b_image"]).found
    with pytest.raises(ValueError, match="lengths"):
        find_visql_chimney(np.ones(3), np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="flux_scale"):
        find_visql_chimney(np.ones(3), np.ones(3), np.ones(3), flux_scale=0.0)


def test_visql_box_flags_and_peak() -> None:
    locus = LocusResult(
        found=True, reason="", rc=1.13, fc=4e5, rmin=1.0, rmax=1.3, fmin=2e4, fmax=2e5
    )
    r = np.array([1.1, 1.1, 1.1, 1.1, 1.1, 0.9, 1.1])
    f = np.array([5e4, 5e4, 5e4, 5e4, 5e4, 5e4, 3e5])
    b = np.array([1.8, 1.2, 1.8, 1.8, 1.8, 1.8, 1.8])
    flags = np.array([0, 0, 4, 6, 3, 0, 0])
    peak = np.array([1e4, 1e4, 1e4, 1e4, 6e4, 1e4, 1e4])
    base = select_visql_box(r, f, b, locus)
    assert base.tolist() == [True, False, True, True, True, False, False]
    with_flags = select_visql_box(r, f, b, locus, flags=flags)
    assert with_flags.tolist() == [True, False, False, False, True, False, False]
    with_peak = select_visql_box(r, f, b, locus, flags=flags, peak=peak, saturate=5e4)
    assert with_peak.tolist() == [True, False, False, False, False, False, False]


def test_visql_chimney_on_real_stars2_catalogue() -> None:
    """VISQL's own selection: the locus is found again and most stars fall in our box."""
    cat = read_star_catalogue(STARS2)
    r = np.asarray(cat["flux_radius"])
    f = np.asarray(cat["flux_auto"])
    b = np.asarray(cat["b_image"])
    locus = find_visql_chimney(r, f, b)
    assert locus.found
    # The radius box VISQL applied to the full catalogue spans r = 1.066 ... 1.289.
    assert 1.10 < np.sqrt(locus.rmin * locus.rmax) < 1.23
    inside = select_visql_box(r, f, b, locus)
    assert inside.mean() > 0.85
    in_radius = (r > locus.rmin) & (r < locus.rmax)
    assert in_radius.mean() > 0.97
    # SExtractor's saturation flag removes a few more.
    flags = np.asarray(cat["flags"])
    assert select_visql_box(r, f, b, locus, flags=flags).sum() <= inside.sum()


# ------------------------------------------------------------------------------------------
# The adaptive locus: measured on the catalogue, for any PSF, density and exposure

GAIN = 3.4


def vis_like_catalogue(
    seed: int = 0,
    *,
    r_star: float = 1.17,
    n_star: int = 600,
    n_gal: int = 2000,
    n_cr: int = 20000,
    flux_scale: float = 1.0,
    saturate_flux: float | None = 2.5e5,
) -> dict[str, np.ndarray]:
    """SExtractor-like columns with errors, shapes and peaks: stars at half-light radius
    r_star (2 % scatter plus noise), galaxies larger, particle hits sharper and of limited
    charge (they do not scale with exposure time; stars do, by flux_scale)."""
    rng = np.random.default_rng(seed)
    f = 10 ** rng.uniform(3.3, 6.2, n_star) * flux_scale
    sat = np.zeros(n_star, bool) if saturate_flux is None else f > saturate_flux * flux_scale
    grow = np.where(sat, np.sqrt(f / (saturate_flux or 1.0) / flux_scale), 1.0)
    noise = np.sqrt(f / GAIN + 30 * 4.0)
    snr = f / noise
    r = r_star * grow * (1 + rng.normal(0, 0.02, n_star)) * (1 + rng.normal(0, 1, n_star) / snr)
    a = 1.2 * r_star * grow * (1 + rng.normal(0, 0.01, n_star))
    q = np.clip(rng.normal(0.95, 0.02, n_star) - 2.0 / snr * rng.random(n_star), 0.5, 1.0)
    sigma = r_star / 1.1774
    pf_star = 1.0 / (2 * np.pi * sigma**2 + 1.0) * rng.uniform(0.7, 1.0, n_star)
    f_gal = 10 ** rng.uniform(3.0, 5.5, n_gal) * flux_scale
    r_gal = 10 ** rng.uniform(np.log10(1.6 * r_star), np.log10(15), n_gal)
    q_gal = rng.uniform(0.3, 1.0, n_gal)
    f_cr = 10 ** rng.normal(2.8, 0.3, n_cr)  # a few hundred to a few thousand ADU
    r_cr = 10 ** rng.uniform(np.log10(0.3), np.log10(3.0), n_cr)
    # a hit is point-like (round, small) or a track: the larger, the more elongated
    q_cr = rng.uniform(0.6, 0.95, n_cr) * np.minimum(1.0, 0.6 / r_cr)
    pf_cr = rng.uniform(0.15, 0.9, n_cr)
    kind = np.concatenate(
        [np.where(sat, SATURATED, STAR), np.full(n_gal, GALAXY), np.full(n_cr, COSMIC)]
    )
    flux = np.concatenate([f, f_gal, f_cr])
    radius = np.concatenate([r, r_gal, r_cr])
    a_all = np.concatenate([a, 1.2 * r_gal, 1.2 * r_cr])
    return {
        "flux_radius": radius,
        "flux": flux,
        "fluxerr": np.sqrt(flux / GAIN + 30 * 4.0),
        "a_image": a_all,
        "b_image": a_all * np.concatenate([q, q_gal, q_cr]),
        "peak": flux * np.concatenate([pf_star, 0.3 / (2 * np.pi * r_gal**2), pf_cr]),
        "flags": np.concatenate([np.where(sat, 4, 0), np.zeros(n_gal + n_cr, int)]),
        "kind": kind,
    }


def _adaptive(cat: dict, **kw) -> tuple[LocusResult, np.ndarray]:
    shape = {k: cat[k] for k in ("a_image", "b_image", "peak", "flags")}
    locus = find_stellar_locus(cat["flux_radius"], cat["flux"], cat["fluxerr"], **shape, **kw)
    sel = select_stars(cat["flux_radius"], cat["flux"], cat["fluxerr"], locus, **shape)
    return locus, sel


@pytest.mark.parametrize(
    ("r_star", "n_star", "flux_scale"),
    [
        (0.85, 600, 1.0),  # a Gaussian PSF of sigma 0.7 px: as sharp as many particle hits
        (1.17, 600, 1.0),  # VIS
        (1.30, 600, 1.0),  # sigma 1.1 px: all stars have b_image below VISQL's 1.3
        (1.90, 600, 1.0),  # sigma 1.6 px
        (1.17, 60, 1.0),  # sparse: 0.2 % of the sources are stars (20 per VIS quadrant)
        (1.17, 3000, 1.0),  # dense
        (1.17, 600, 89.52 / 560.52),  # short exposure: the brightest stars unsaturated
        (1.75, 600, 0.3),  # wide PSF, no star above 1.5e5 ADU (no saturated stars at all)
    ],
)
def test_adaptive_locus_over_psf_width_density_and_exposure(r_star, n_star, flux_scale) -> None:
    cat = vis_like_catalogue(
        7, r_star=r_star, n_star=n_star, n_cr=max(20000, 500 * n_star), flux_scale=flux_scale
    )
    locus, sel = _adaptive(cat)
    assert locus.found, locus.reason
    assert locus.method == "adaptive"
    assert locus.rc == pytest.approx(r_star, rel=0.02)
    kind = cat["kind"]
    assert (kind[sel] == STAR).mean() >= 0.97  # particle hits and galaxies stay out
    assert not sel[kind == SATURATED].any()
    snr = cat["flux"] / cat["fluxerr"]
    wanted = (kind == STAR) & (snr >= locus.snr_min)
    assert sel[wanted].mean() > 0.85


def test_adaptive_particle_hits_alone_make_no_locus() -> None:
    """Hot pixels and point-like hits pile up at one radius, but only below S/N 100."""
    cat = vis_like_catalogue(3, n_star=0, n_gal=500, n_cr=50000)
    point = np.random.default_rng(1).random(cat["flux"].size) < 0.3
    cat["flux_radius"] = np.where(point, 0.39, cat["flux_radius"])  # one-pixel events
    cat["peak"] = np.where(point, 0.9 * cat["flux"], cat["peak"])
    cat["b_image"] = np.where(point, cat["a_image"], cat["b_image"])
    locus, sel = _adaptive(cat)
    assert not locus.found and "no stellar locus" in locus.reason
    assert not sel.any()


def test_adaptive_no_locus_says_why() -> None:
    empty = find_stellar_locus(np.array([]), np.array([]), np.array([]))
    assert not empty.found and empty.reason == "no sources"
    assert select_stars(np.array([]), np.array([]), np.array([]), empty).shape == (0,)
    no_stars = vis_like_catalogue(5, n_star=0)
    locus, sel = _adaptive(no_stars)
    assert not locus.found and locus.reason.startswith("no stellar locus")
    assert not sel.any()
    nan = np.full(10, np.nan)
    assert not find_stellar_locus(nan, nan, nan).found
    with pytest.raises(ValueError, match="lengths"):
        find_stellar_locus(np.ones(3), np.ones(2), np.ones(3))


def test_adaptive_locus_on_visqls_real_star_catalogue() -> None:
    """VISQL's 867 stars of a real exposure: the locus is theirs (VISQL's radius box was
    1.066-1.289 px) and nearly all of them pass the shape limits measured on them."""
    cat = {k: np.asarray(v) for k, v in read_star_catalogue(STARS2).items()}
    shape = {k: cat[k] for k in ("a_image", "b_image", "flags")}
    locus = find_stellar_locus(cat["flux_radius"], cat["flux_auto"], cat["fluxerr_auto"], **shape)
    assert locus.found and locus.snr_min == 100
    assert 1.10 < locus.rc < 1.23
    assert locus.rmin < 1.07 and locus.rmax > 1.28
    sel = select_stars(cat["flux_radius"], cat["flux_auto"], cat["fluxerr_auto"], locus, **shape)
    assert sel.size == 867 and sel.mean() > 0.9
