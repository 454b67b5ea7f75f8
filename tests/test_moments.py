"""Gaussian-weighted moments against analytic and numerical truth (viskom.measure.moments)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from viskom.measure.moments import (
    STAR_MOMENT_COLUMNS,
    MomentFlag,
    cut_stamps,
    measure_moments,
    measure_stars,
)

SIGMA_W = 2.5
SUB = 9  # sub-samples per pixel and axis when rendering
HALF = 14


def _sub_offsets(n: int = SUB) -> np.ndarray:
    return (np.arange(n) + 0.5) / n - 0.5


def render(profile, x0: float, y0: float, half: int = HALF, n: int = SUB) -> np.ndarray:
    """Pixel-integrated (n x n supersampled) stamp of profile(dx, dy) centred at (x0, y0)."""
    g = np.arange(-half, half + 1, dtype=float)
    s = _sub_offsets(n)
    x = g[None, :, None, None] + s[None, None, None, :] - x0
    y = g[:, None, None, None] + s[None, None, :, None] - y0
    return profile(x, y).mean(axis=(2, 3))


def gaussian(cov: np.ndarray):
    """Elliptical Gaussian profile with covariance `cov` (x = column, y = row)."""
    ci = np.linalg.inv(cov)

    def f(x, y):
        return np.exp(-0.5 * (ci[0, 0] * x * x + 2 * ci[0, 1] * x * y + ci[1, 1] * y * y))

    return f


def moffat(alpha: float, beta: float, g1: float = 0.0, g2: float = 0.0):
    """Moffat profile sheared by reduced shear (g1, g2), as the simulator's PSF."""
    norm = 1.0 / np.sqrt(1.0 - g1 * g1 - g2 * g2)

    def f(x, y):
        u = norm * ((1.0 - g1) * x - g2 * y)
        v = norm * (-g2 * x + (1.0 + g1) * y)
        return (1.0 + (u * u + v * v) / alpha**2) ** (-beta)

    return f


def weighted_gaussian_truth(cov: np.ndarray, n: int = SUB) -> tuple[float, float, float]:
    """R2, e1, e2 of a pixelised Gaussian under a Gaussian weight (continuous limit).

    Pixel integration by n x n sub-samples adds (n^2 - 1) / (12 n^2) per axis (the variance
    of the sub-sample grid); the weighted moments of a Gaussian of covariance S are those of
    the product Gaussian, (S^-1 + I / sigma_w^2)^-1.
    """
    s = cov + np.eye(2) * (n * n - 1) / (12.0 * n * n)
    m = np.linalg.inv(np.linalg.inv(s) + np.eye(2) / SIGMA_W**2)
    r2 = m[0, 0] + m[1, 1]
    return r2, (m[0, 0] - m[1, 1]) / r2, 2 * m[0, 1] / r2


def weighted_numerical_truth(profile, x0: float, y0: float, k: int = 3) -> dict[str, float]:
    """Weighted moments of a symmetric profile by fine-grid integration over the stamp area.

    The profile is box-averaged over the same n x n sub-sample offsets as `render`
    (separable shifts on a grid of step 1/(9k)); the weight is centred on the profile's
    centre, which is its weighted centroid by symmetry.
    """
    h = 1.0 / (SUB * k)
    pad = (SUB // 2) * k
    npts = round((2 * HALF + 1) / h)
    idx = np.arange(-pad, npts + pad)
    xs = -HALF - 0.5 + (idx + 0.5) * h
    f = profile(xs[None, :] - x0, xs[:, None] - y0)
    shifts = [(j - SUB // 2) * k for j in range(SUB)]
    gx = sum(f[:, pad + d : pad + d + npts] for d in shifts) / SUB
    g = sum(gx[pad + d : pad + d + npts, :] for d in shifts) / SUB
    xc = xs[pad : pad + npts]
    dx = xc[None, :] - x0
    dy = xc[:, None] - y0
    w = np.exp(-0.5 * (dx * dx + dy * dy) / SIGMA_W**2) * g
    s0 = w.sum()
    q20, q02, q11 = (w * dx * dx).sum() / s0, (w * dy * dy).sum() / s0, (w * dx * dy).sum() / s0
    r2 = q20 + q02
    return {"r2": r2, "e1": (q20 - q02) / r2, "e2": 2 * q11 / r2}


def visql_centroid(stamp: np.ndarray) -> tuple[float, float]:
    """VISQL's centroid: 5 weighted-first-moment steps over-relaxed by 1.2 (for comparison)."""
    g = np.arange(-HALF, HALF + 1)
    xx, yy = np.meshgrid(g, g)
    xc = yc = 0.0
    for _ in range(5):
        wt = np.exp(-0.5 * ((xx - xc) ** 2 + (yy - yc) ** 2) / SIGMA_W**2)
        s = (stamp * wt).sum()
        dx = (stamp * wt * (xx - xc)).sum() / s
        dy = (stamp * wt * (yy - yc)).sum() / s
        xc += 1.2 * dx
        yc += 1.2 * dy
    return xc, yc


COVARIANCES = [
    np.array([[1.0, 0.0], [0.0, 1.0]]),
    np.array([[1.2, 0.15], [0.15, 0.9]]),
    np.array([[0.7, -0.1], [-0.1, 1.1]]),
    np.array([[2.0, 0.4], [0.4, 1.5]]),
]


@pytest.mark.parametrize("cov", COVARIANCES, ids=lambda c: f"S={c.ravel().tolist()}")
def test_gaussian_matches_analytic_weighted_moments(cov: np.ndarray) -> None:
    rng = np.random.default_rng(11)
    r2_true, e1_true, e2_true = weighted_gaussian_truth(cov)
    for _ in range(4):
        x0, y0 = rng.uniform(-0.5, 0.5, 2)
        res = measure_moments(render(gaussian(cov), x0, y0))
        assert res.converged and res.flag == 0
        assert res.xc == pytest.approx(x0, abs=1e-4)
        assert res.yc == pytest.approx(y0, abs=1e-4)
        assert res.r2 == pytest.approx(r2_true, rel=1.5e-3)
        assert res.e1 == pytest.approx(e1_true, abs=3e-4)
        assert res.e2 == pytest.approx(e2_true, abs=3e-4)
        # A point-symmetric source has no odd moments.
        for odd in (res.c1, res.c2, res.t1, res.t2):
            assert abs(odd) < 2e-4


def test_e1_e2_orientation_conventions() -> None:
    """x is the column axis: elongation along columns gives e1 > 0, along x = y gives e2 > 0."""
    along_x = measure_moments(render(gaussian(np.diag([1.5, 0.8])), 0.15, 0.15))
    along_y = measure_moments(render(gaussian(np.diag([0.8, 1.5])), 0.15, 0.15))
    diagonal = measure_moments(render(gaussian(np.array([[1.2, 0.3], [0.3, 1.2]])), 0.15, 0.15))
    assert along_x.e1 > 0.1 and abs(along_x.e2) < 1e-4
    assert along_y.e1 < -0.1 and abs(along_y.e2) < 1e-4
    assert diagonal.e2 > 0.1 and abs(diagonal.e1) < 1e-4
    assert along_x.r2 == pytest.approx(along_y.r2, rel=1e-9)


@pytest.mark.parametrize(
    ("alpha", "beta", "g1", "g2"),
    [(2.0, 3.0, 0.0, 0.0), (2.2, 3.0, 0.05, -0.03), (2.0, 2.5, -0.04, 0.06)],
)
def test_moffat_matches_numerical_truth(alpha: float, beta: float, g1: float, g2: float) -> None:
    """A well-sampled Moffat: pixel sums equal the continuous weighted moments."""
    prof = moffat(alpha, beta, g1, g2)
    rng = np.random.default_rng(5)
    for _ in range(3):
        x0, y0 = rng.uniform(-0.5, 0.5, 2)
        truth = weighted_numerical_truth(prof, x0, y0)
        res = measure_moments(render(prof, x0, y0))
        assert res.converged and res.flag == 0
        assert res.xc == pytest.approx(x0, abs=3e-4)
        assert res.yc == pytest.approx(y0, abs=3e-4)
        assert res.r2 == pytest.approx(truth["r2"], rel=1e-3)
        assert res.e1 == pytest.approx(truth["e1"], abs=3e-4)
        assert res.e2 == pytest.approx(truth["e2"], abs=3e-4)
        for odd in (res.c1, res.c2, res.t1, res.t2):
            assert abs(odd) < 1e-3


def test_undersampled_moffat_aliasing_averages_out_over_sub_pixel_phase() -> None:
    """A VIS-like undersampled PSF: R2 depends on the sub-pixel phase (aliasing, ~0.3%).

    That is the pixel sampling, not the algorithm: averaged over phases it matches the truth.
    """
    prof = moffat(1.3, 2.4, 0.03, -0.02)
    truth = weighted_numerical_truth(prof, 0.0, 0.0)
    phases = (np.arange(6) + 0.5) / 6 - 0.5
    res = [measure_moments(render(prof, px, py)) for px in phases for py in phases]
    r2 = np.array([r.r2 for r in res])
    assert all(r.converged for r in res)
    assert np.abs(r2 / truth["r2"] - 1).max() < 6e-3
    assert r2.mean() == pytest.approx(truth["r2"], rel=3e-4)
    assert np.mean([r.e1 for r in res]) == pytest.approx(truth["e1"], abs=2e-4)
    assert np.mean([r.e2 for r in res]) == pytest.approx(truth["e2"], abs=2e-4)
    px = np.repeat(phases, len(phases))
    assert np.mean([r.xc for r in res] - px) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize(
    ("dx", "dy", "axis", "sign"),
    [(1.5, 0.0, "c1", 1), (-1.5, 0.0, "c1", -1), (0.0, 1.5, "c2", 1), (0.0, -1.5, "c2", -1)],
)
def test_offset_companion_gives_coma_of_the_right_sign(
    dx: float, dy: float, axis: str, sign: int
) -> None:
    main = gaussian(np.eye(2) * 1.0)
    faint = gaussian(np.eye(2) * 0.8)

    def prof(x, y):
        return main(x, y) + 0.15 * faint(x - dx, y - dy)

    res = measure_moments(render(prof, 0.2, -0.3))
    other = "c2" if axis == "c1" else "c1"
    assert sign * getattr(res, axis) > 0.02
    assert abs(getattr(res, other)) < 1e-3
    # The centroid is pulled toward the companion.
    pull = np.array([res.xc - 0.2, res.yc + 0.3])
    assert pull @ np.array([dx, dy]) > 0


def test_trefoil_of_a_three_fold_source() -> None:
    """Three companions at 0, 120, 240 degrees give t1 > 0 and no coma."""
    core = gaussian(np.eye(2))
    ang = np.deg2rad([0.0, 120.0, 240.0])

    def prof(x, y):
        out = core(x, y)
        for a in ang:
            out = out + 0.1 * core(x - 1.5 * np.cos(a), y - 1.5 * np.sin(a))
        return out

    res = measure_moments(render(prof, 0.0, 0.0))
    assert res.t1 > 0.05
    assert abs(res.t2) < 1e-3
    assert abs(res.c1) < 1e-3 and abs(res.c2) < 1e-3


@pytest.mark.parametrize(
    "shift", [(0, 0), (1, 0), (2, 1), (-3, 0), (0, -3), (-2, -2), (2, -2), (1, 2)]
)
def test_centroid_converges_for_offsets_up_to_3px(shift: tuple[int, int]) -> None:
    """Same star, moved by whole pixels up to ~3 px off centre: same converged answer."""
    prof = moffat(1.5, 2.5, 0.02, 0.03)
    frac = np.where(np.array(shift) > 0, -1.0, 1.0) * np.array([0.3, 0.2])  # |offset| <= 3
    ref = measure_moments(render(prof, *frac))
    res = measure_moments(render(prof, *(frac + shift)))
    assert res.converged and res.flag == 0
    assert res.n_iter < 20
    assert res.xc - shift[0] == pytest.approx(ref.xc, abs=1e-4)
    assert res.yc - shift[1] == pytest.approx(ref.yc, abs=1e-4)
    assert res.r2 == pytest.approx(ref.r2, rel=1e-4)
    assert res.e1 == pytest.approx(ref.e1, abs=1e-4)
    assert res.e2 == pytest.approx(ref.e2, abs=1e-4)


def test_converges_where_visql_five_steps_do_not() -> None:
    """A broad source (sigma 2.5 px) 3 px off centre: VISQL's 5 steps stop short."""
    stamp = render(gaussian(np.eye(2) * 6.25), 3.0, 0.0)
    res = measure_moments(stamp, max_shift=4.0)
    assert res.converged and res.flag == 0
    assert res.xc == pytest.approx(3.0, abs=1e-3)
    vx, _ = visql_centroid(stamp)
    assert abs(vx - 3.0) > 10 * abs(res.xc - 3.0)


def test_large_shift_is_flagged_not_hidden() -> None:
    res = measure_moments(render(moffat(1.5, 2.5), 3.6, 0.0))
    assert res.converged
    assert res.flag & MomentFlag.LARGE_SHIFT
    assert not res.flag & MomentFlag.NOT_CONVERGED
    assert res.xc == pytest.approx(3.6, abs=1e-3)


def test_non_convergence_is_reported() -> None:
    res = measure_moments(render(moffat(1.5, 2.5), 1.0, -1.0), max_iter=2)
    assert not res.converged
    assert res.n_iter == 2
    assert res.flag & MomentFlag.NOT_CONVERGED
    assert np.isfinite(res.r2)


def test_bad_and_nonfinite_stamps() -> None:
    neg = measure_moments(-render(moffat(1.5, 2.5), 0.0, 0.0))
    assert neg.flag & MomentFlag.BAD_FLUX and np.isnan(neg.r2) and not neg.converged
    stamp = render(moffat(1.5, 2.5), 0.0, 0.0)
    stamp[3, 4] = np.nan
    nan = measure_moments(stamp)
    assert nan.flag & MomentFlag.NONFINITE and np.isnan(nan.r2) and np.isnan(nan.xc)
    with pytest.raises(ValueError, match="odd"):
        measure_moments(np.ones((28, 29)))


def _image_with_stars(
    positions: np.ndarray, profile, flux: float, shape=(600, 700), sky: float = 0.0
) -> np.ndarray:
    img = np.full(shape, sky)
    for x, y in positions:
        ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        img[iy - HALF : iy + HALF + 1, ix - HALF : ix + HALF + 1] += flux * render(
            profile, x - ix, y - iy
        )
    return img


def test_result_independent_of_integer_position() -> None:
    frac = np.array([0.37, -0.21])
    base = np.array([[150, 150], [230, 410], [517, 180], [301, 299]], dtype=float)
    img = _image_with_stars(base + frac, moffat(1.5, 2.5, 0.03, 0.02), 5e4, sky=120.0)
    res = measure_stars(img, base[:, 0] + frac[0], base[:, 1] + frac[1], background=120.0)
    for key in ("xc", "yc", "wtflux", "r2", "e1", "e2", "t1", "t2", "c1", "c2"):
        np.testing.assert_allclose(res[key], res[key][0], rtol=1e-9, atol=1e-12, err_msg=key)
    # Refined positions to within the pixel-sampling bias of the weighted centroid.
    np.testing.assert_allclose(res["x_image"], base[:, 0] + frac[0], atol=2e-3)
    np.testing.assert_allclose(res["y_image"], base[:, 1] + frac[1], atol=2e-3)
    np.testing.assert_allclose(res["x_image"] - base[:, 0], res["x_image"][0] - base[0, 0])
    assert (res["n_iter"] == res["n_iter"][0]).all()


def test_noise_scatter_at_snr_100_matches_linear_prediction() -> None:
    """Poisson + read noise at weighted-flux S/N 100: R2 scatter ~2.8%, as predicted."""
    rng = np.random.default_rng(2024)
    p = render(gaussian(np.eye(2) * 0.9), 0.0, 0.0)
    p /= p.sum()
    sky, rn = 300.0, 4.4
    g = np.arange(-HALF, HALF + 1)
    rsq = g[None, :] ** 2 + g[:, None] ** 2
    w = np.exp(-0.5 * rsq / SIGMA_W**2)
    # Flux giving S/N 100 on the weighted flux sum(w I).
    a, b = (w * p).sum(), (w * w * p).sum()
    c = (w * w).sum() * (sky + rn * rn)
    flux = (100**2 * b + np.sqrt(100**4 * b * b + 4 * a * a * 100**2 * c)) / (2 * a * a)
    truth = measure_moments(p * flux)
    s0 = (w * p * flux).sum()
    pred = np.sqrt((w * w * (rsq - truth.r2) ** 2 * (p * flux + sky + rn * rn)).sum()) / s0

    n = 1500
    grid = np.arange(n)
    pos = np.column_stack([120 + 40 * (grid % 50), 120 + 40 * (grid // 50)]).astype(float)
    img = np.zeros((120 * 2 + 40 * 30, 120 * 2 + 40 * 50))
    for x, y in pos.astype(int):
        img[y - HALF : y + HALF + 1, x - HALF : x + HALF + 1] = p * flux
    noisy = rng.poisson(img + sky).astype(float) + rng.normal(0.0, rn, img.shape)
    res = measure_stars(noisy, pos[:, 0], pos[:, 1], background=sky)
    assert res["converged"].all() and (res["flag"] == 0).all()
    scatter = res["r2"].std()
    assert scatter / truth.r2 < 0.035
    assert scatter == pytest.approx(pred, rel=0.1)
    assert abs(res["r2"].mean() - truth.r2) < 3 * scatter / np.sqrt(n)
    assert res["e1"].std() < 0.03 and res["e2"].std() < 0.03


def test_vectorised_equals_scalar_star_by_star() -> None:
    rng = np.random.default_rng(7)
    gx, gy = np.meshgrid(np.arange(130, 560, 45), np.arange(130, 480, 45))
    pos = np.column_stack([gx.ravel(), gy.ravel()]) + rng.uniform(-0.5, 0.5, (gx.size, 2))
    img = _image_with_stars(pos, moffat(1.5, 2.6, -0.02, 0.04), 3e4, sky=50.0)
    img += rng.normal(0.0, 3.0, img.shape)
    res = measure_stars(img, pos[:, 0], pos[:, 1], background=50.0)
    ix = np.floor(pos[:, 0] + 0.5).astype(int)
    iy = np.floor(pos[:, 1] + 0.5).astype(int)
    stamps = cut_stamps(img, ix, iy, HALF) - 50.0
    for i in range(len(pos)):
        one = measure_moments(stamps[i], x0=pos[i, 0] - ix[i], y0=pos[i, 1] - iy[i])
        for key in ("xc", "yc", "wtflux", "r2", "e1", "e2", "t1", "t2", "c1", "c2"):
            assert res[key][i] == pytest.approx(getattr(one, key), rel=1e-12, abs=1e-14)
        assert res["converged"][i] == one.converged
        assert res["n_iter"][i] == one.n_iter
        assert res["flag"][i] == one.flag
        assert res["x_image"][i] == pytest.approx(ix[i] + one.xc, abs=1e-12)


def test_edge_stars_are_skipped_and_backgrounds_agree() -> None:
    pos = np.array([[150.3, 200.1], [50.0, 300.0], [650.0, 300.0], [300.0, 520.0], [np.nan, 3]])
    img = _image_with_stars(pos[:1], moffat(1.5, 2.5), 1e4, sky=80.0)
    res = measure_stars(img, pos[:, 0], pos[:, 1], background=80.0)
    assert set(res) == set(STAR_MOMENT_COLUMNS)
    assert res["skipped"].tolist() == [False, True, True, True, True]
    assert (res["flag"][1:] == MomentFlag.EDGE).all()
    assert np.isnan(res["r2"][1:]).all() and not res["converged"][1:].any()
    # A smaller margin measures star 2 (an empty patch: no flux).
    res_small = measure_stars(img, pos[:, 0], pos[:, 1], background=80.0, edge_margin=20)
    assert res_small["skipped"].tolist() == [False, False, False, False, True]
    per_star = measure_stars(img, pos[:, 0], pos[:, 1], background=np.full(5, 80.0))
    as_image = measure_stars(img, pos[:, 0], pos[:, 1], background=np.full(img.shape, 80.0))
    for key in ("r2", "e1", "xc"):
        np.testing.assert_array_equal(per_star[key], res[key])
        np.testing.assert_array_equal(as_image[key], res[key])
    with pytest.raises(ValueError, match="background"):
        measure_stars(img, pos[:, 0], pos[:, 1], background=np.zeros(3))


def test_raw_integer_image_is_accepted() -> None:
    img = _image_with_stars(np.array([[200.2, 210.4]]), moffat(1.5, 2.5), 2e4, sky=2700.0)
    raw = np.round(img).astype(np.uint16)
    res = measure_stars(raw, np.array([200.2]), np.array([210.4]), background=2700.0)
    assert res["converged"][0] and res["r2"][0] == pytest.approx(
        measure_stars(img, np.array([200.2]), np.array([210.4]), background=2700.0)["r2"][0],
        rel=1e-3,
    )


def test_thousand_stars_are_fast() -> None:
    rng = np.random.default_rng(1)
    n = 1000
    gx, gy = np.meshgrid(np.arange(40), np.arange(25))
    ipos = np.column_stack([130 + 45 * gx.ravel(), 130 + 45 * gy.ravel()])
    star = 2e4 * render(moffat(1.5, 2.5), 0.3, -0.2)
    img = rng.normal(10.0, 2.0, (1400, 2100))
    for x, y in ipos:
        img[y - HALF : y + HALF + 1, x - HALF : x + HALF + 1] += star
    pos = ipos + np.array([0.3, -0.2])
    measure_stars(img, pos[:n, 0], pos[:n, 1], background=10.0)  # warm-up
    t0 = time.perf_counter()
    res = measure_stars(img, pos[:n, 0], pos[:n, 1], background=10.0)
    elapsed = time.perf_counter() - t0
    assert len(res["r2"]) == n
    assert elapsed < 0.5, f"{elapsed:.3f} s for {n} stars"
