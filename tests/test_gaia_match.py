"""VIS-Gaia match and colour fit: known truth, VISQL's real exposure, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from viskom.cli import app
from viskom.measure.gaia import (
    PIX_PER_DEG,
    block_name,
    compare_with_gaia,
    find_offset,
    fit_affine,
    fit_colour_relation,
    frat_model,
    gaia_flux,
    gaia_mag,
    match_nearest,
    unit_members,
)

REF = Path(__file__).parent / "data" / "visql"  # copies of shared/reference/visql-example
ROOT = REF / "C_20240713_032840_W_52167482.VIS.bin_01_01"
GAIA_CAT = f"{ROOT}_stars2_gaia.cat.gz"


def _field(rng, n_gaia=3000, n_vis=1000, *, dx_pix=3.7, dy_pix=-2.2, grad=(0.0, 0.0, 0.0, 0.0),
           noise_pix=0.3, n_spurious=50):  # fmt: skip
    """A Gaia field in the instrument frame and VIS stars = Gaia - offset (+ noise)."""
    xg = rng.uniform(-0.4, 0.4, n_gaia)
    yg = rng.uniform(-0.4, 0.4, n_gaia)
    pick = rng.choice(n_gaia, n_vis, replace=False)
    g = np.array(grad) / PIX_PER_DEG / 0.75
    # Gaia - VIS = d0 + gradients . (x, y): VIS = Gaia - model (model at VIS ~ at Gaia)
    mx = dx_pix / PIX_PER_DEG + g[0] * xg[pick] + g[2] * yg[pick]
    my = dy_pix / PIX_PER_DEG + g[1] * xg[pick] + g[3] * yg[pick]
    xv = xg[pick] - mx + rng.normal(0, noise_pix / PIX_PER_DEG, n_vis)
    yv = yg[pick] - my + rng.normal(0, noise_pix / PIX_PER_DEG, n_vis)
    # spurious VIS detections with no Gaia counterpart
    xv = np.concatenate([xv, rng.uniform(-0.4, 0.4, n_spurious)])
    yv = np.concatenate([yv, rng.uniform(-0.4, 0.4, n_spurious)])
    return xg, yg, xv, yv, pick


def test_gaia_flux_roundtrip():
    g = np.array([12.0, 17.5, 20.9])
    assert np.allclose(gaia_mag(gaia_flux(g)), g)
    assert gaia_flux(np.array([30.0]))[0] == pytest.approx(1 / 1.5)


@pytest.mark.parametrize("shift_pix", [(3.7, -2.2), (-410.0, 250.0), (0.0, 0.0)])
def test_offset_search_finds_large_and_small_shifts(shift_pix):
    rng = np.random.default_rng(1)
    xg, yg, xv, yv, _ = _field(rng, dx_pix=shift_pix[0], dy_pix=shift_pix[1])
    dx, dy, n = find_offset(xv, yv, xg, yg)
    # refined on the pairs near the peak: within 1 pixel (the affine fit does the rest)
    assert dx * PIX_PER_DEG == pytest.approx(shift_pix[0], abs=1.0)
    assert dy * PIX_PER_DEG == pytest.approx(shift_pix[1], abs=1.0)
    assert n >= 900


def test_offset_search_empty_lists():
    dx, dy, n = find_offset(np.zeros(0), np.zeros(0), np.ones(3), np.ones(3))
    assert math.isnan(dx) and math.isnan(dy) and n == 0


def test_match_nearest_is_one_to_one():
    xg = np.array([0.0, 0.1])
    yg = np.array([0.0, 0.1])
    xv = np.array([0.0, 0.00001, 0.1, 0.3])
    yv = np.array([0.0, 0.0, 0.1, 0.3])
    iv, ig = match_nearest(xv, yv, xg, yg, max_sep_deg=0.001)
    assert sorted(zip(iv.tolist(), ig.tolist(), strict=True)) == [(0, 0), (2, 1)]


def test_affine_fit_recovers_offsets_and_gradients():
    """Injected offset and gradients back within 0.05 px, sigma near the injected noise."""
    rng = np.random.default_rng(2)
    grad = (4.0, -2.5, 1.5, 6.0)
    xg, yg, xv, yv, pick = _field(rng, dx_pix=3.7, dy_pix=-2.2, grad=grad, noise_pix=0.3)
    n = pick.size
    dx, dy = xg[pick] - xv[:n], yg[pick] - yv[:n]
    # 3% gross outliers (blends, wrong matches) must be clipped
    bad = rng.choice(n, 30, replace=False)
    dx[bad] += rng.choice([-1, 1], 30) * 8.0 / PIX_PER_DEG
    fit = fit_affine(xv[:n], yv[:n], dx, dy)
    assert fit.dx_pix == pytest.approx(3.7, abs=0.05)
    assert fit.dy_pix == pytest.approx(-2.2, abs=0.05)
    # gradients are against VIS positions, the truth against Gaia ones: same to 1e-4
    assert np.allclose(fit.gradients_pix, grad, atol=0.1)
    assert fit.sigma_pix == pytest.approx(0.3, rel=0.1)
    assert n - 40 <= fit.n_matched <= n - 25  # the 30 outliers (and a few tails) clipped


def test_colour_fit_recovers_truth_and_clips():
    rng = np.random.default_rng(3)
    c = rng.uniform(0.5, 3.0, 400)
    truth = (-0.3807, 0.40095, -0.0649)
    y = truth[0] + truth[1] * c + truth[2] * c**2 + rng.normal(0, 0.02, c.size)
    y[:10] += 0.5  # blends: 10 stars far too bright
    fit = fit_colour_relation(c, y)
    assert fit.n_terms == 3 and fit.n_fit <= 390
    assert fit.c0 == pytest.approx(truth[0], abs=0.01)
    assert fit.c1 == pytest.approx(truth[1], abs=0.01)
    assert fit.c2 == pytest.approx(truth[2], abs=0.01)
    assert fit.rms == pytest.approx(0.02, rel=0.15)
    r = fit.ratio_at()
    expect = np.exp(np.polyval(truth[::-1], [0.75, 1.75, 2.75]))
    assert np.allclose(r, expect, rtol=0.005)
    # few stars: only an offset, shape from the given fit
    few = fit_colour_relation(c[:5], y[:5] - 0.1 + 0.0, shape=fit, min_stars=10)
    assert few.n_terms == 1 and few.c1 == fit.c1
    nothing = fit_colour_relation(c[:2], y[:2], shape=fit)
    assert nothing.n_terms == 0 and math.isnan(nothing.ratio_at()[1])


def test_frat_model_passes_through_the_three_ratios():
    ratios = (0.89, 1.13, 1.26)
    assert np.allclose(frat_model(np.array([0.75, 1.75, 2.75]), ratios), ratios)


def test_units_and_blocks():
    assert block_name(1, 1) == "1212"
    assert block_name(3, 5) == "5634"  # column pair first, then row pair (VISQL)
    assert block_name(6, 6) == "5656"
    groups = unit_members(np.array(["1-1.E", "3-5.G", "3-5.H", "bogus"]))
    assert groups["FPA"].tolist() == [0, 1, 2, 3]
    assert groups["B5634"].tolist() == [1, 2]
    assert groups["3-5"].tolist() == [1, 2]
    assert groups["1-1.E"].tolist() == [0]


def test_compare_with_gaia_recovers_zero_point_colour_terms_and_gains():
    """End to end on catalogue level: gains applied, 0.5% zero point, 0.01 colour terms."""
    rng = np.random.default_rng(4)
    xg, yg, xv, yv, pick = _field(rng, dx_pix=-1.3, dy_pix=2.4, n_spurious=0)
    n = pick.size
    gmag = rng.uniform(15.0, 20.5, xg.size)
    bp_rp = rng.uniform(0.5, 3.0, xg.size)
    exts = np.array([f"{r}-{c}.{q}" for r in range(1, 7) for c in range(1, 7) for q in "EFGH"])
    ext = exts[rng.integers(0, exts.size, n)]
    gains = {e: float(rng.uniform(0.95, 1.05)) for e in exts}
    c = bp_rp[pick]
    ln = -0.38 + 0.40 * c - 0.065 * c**2
    flux = gaia_flux(gmag[pick]) * np.exp(ln) * 560.52 / 89.52
    flux = flux / np.array([gains[e] for e in ext]) * rng.normal(1, 0.01, n)
    res = compare_with_gaia(ext, xv, yv, flux, xg, yg, gmag, bp_rp, exptime=560.52, gains=gains)
    assert res.match.fit.dx_pix == pytest.approx(-1.3, abs=0.1)
    assert res.match.fit.dy_pix == pytest.approx(2.4, abs=0.1)
    fpa = res.colour["FPA"]
    assert fpa.c0 == pytest.approx(-0.38, abs=0.005)
    assert fpa.c1 == pytest.approx(0.40, abs=0.01)
    assert fpa.c2 == pytest.approx(-0.065, abs=0.01)
    assert np.median(res.stars["frat"][res.stars["colour_used"]]) == pytest.approx(1, abs=0.005)
    names = {m[1] for m in res.metrics()}
    assert {"astrom_dx_pix", "astrom_sigma_pix", "astrom_ddy_dy", "n_matched",
            "vis_over_gaia_175", "gaia_colour_c1"} <= names  # fmt: skip
    units = {m[0] for m in res.metrics()}
    assert {"FPA", "B1212", "3-4", "3-4.G"} <= units
    # without the gains the quadrant scatter shows up in the rms
    res1 = compare_with_gaia(ext, xv, yv, flux, xg, yg, gmag, bp_rp, exptime=560.52)
    assert res1.colour["FPA"].rms > 2 * fpa.rms


# ---------------------------------------------------------------------------------------------
# VISQL's real exposure
# ---------------------------------------------------------------------------------------------
def test_gaia_match_on_the_real_visql_exposure():
    """`viskom gaia-match` on C_20240713_032840_W_52167482 (560.52 s), pinned.

    Pinned to this implementation's result (VISQL's own _x_gaia_dxdy.txt is not in the
    reference folder). Independent checks: VIS/Gaia within 0.02 of VIS-REFERENCE's typical
    0.89 / 1.13 / 1.26, and VISQL's own acceptance (sigma < 10 px, curvature in -0.175..-0.025).
    """
    result = CliRunner().invoke(
        app,
        [
            "gaia-match",
            "--stars",
            f"{ROOT}_stars2_mom.cat",
            "--gaia",
            GAIA_CAT,
            "--exptime",
            "560.52",
            "--gains",
            str(REF / "quadrant_relative_gains.txt"),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["n_vis"] == 765 and got["n_gaia"] == 2615
    assert got["n_matched"] == 719
    assert got["sigma_pix"] == pytest.approx(5.775, abs=0.005)
    assert got["dx_pix"] == pytest.approx(6.170, abs=0.005)
    assert got["dy_pix"] == pytest.approx(-3.514, abs=0.005)
    assert got["gradients_pix"] == pytest.approx([8.288, -6.847, 9.923, 5.439], abs=0.005)
    assert got["vis_over_gaia"] == pytest.approx([0.8863, 1.1343, 1.2598], abs=5e-4)
    assert got["colour_fit"]["n_fit"] == 325
    assert got["quadrants_without_gain"] == []
    # independent of the pin
    assert got["vis_over_gaia"] == pytest.approx([0.89, 1.13, 1.26], abs=0.02)
    r = got["vis_over_gaia"]
    assert got["sigma_pix"] < 10 and -0.175 < r[0] + r[2] - 2 * r[1] < -0.025


def test_gaia_match_bad_input(tmp_path):
    bad = tmp_path / "bad_stars2_mom.cat"
    bad.write_text("# EXT XWORLD\n1-1.E 0.1\n")
    result = CliRunner().invoke(app, ["gaia-match", "--stars", str(bad), "--gaia", GAIA_CAT])
    assert result.exit_code == 2
    assert "error" in result.output
    missing = CliRunner().invoke(
        app, ["gaia-match", "--stars", str(tmp_path / "nope.cat"), "--gaia", str(bad)]
    )
    assert missing.exit_code == 2
