"""The hit detector's compiled loops against independent oracles: scipy.ndimage for labels
and dilations, and a whole-array numpy formulation of the PSF sharpness test; the events
stage's per-unit counts against counting each unit's rows by name."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from viskom.measure.hit_kernels import (
    busy_pixels,
    dilate,
    grow,
    label8,
    label8_sizes,
    label_boxes,
    label_max,
    labelled_pixels,
    labels_beside,
    saturated_area,
    significance_and_seeds_on_mesh,
)
from viskom.measure.sky import SkyMesh, sky_maps, spline_tables

BOX = np.ones((3, 3), dtype=bool)


def _masks():
    """Sparse, dense and edge-touching masks, and an empty one."""
    rng = np.random.default_rng(3)
    for fraction in (0.02, 0.3, 0.6):
        yield rng.random((61, 83)) < fraction
    edge = np.zeros((40, 50), dtype=bool)
    edge[0, :] = edge[:, -1] = True
    edge[20, 10:30] = True
    yield edge
    yield np.zeros((10, 12), dtype=bool)


@pytest.mark.parametrize("mask", list(_masks()))
def test_label8_is_scipy_label_with_a_3x3_structure(mask):
    labels, n = label8(mask)
    expected, n_expected = ndimage.label(mask, structure=BOX)
    assert n == n_expected
    np.testing.assert_array_equal(labels, expected)


def _isolated_pixels() -> np.ndarray:
    """2,500 single-pixel components: more than the kernels' first allocation (1,024)."""
    mask = np.zeros((100, 100), dtype=bool)
    mask[::2, ::2] = True
    return mask


@pytest.mark.parametrize("mask", [*_masks(), _isolated_pixels()])
def test_label8_sizes_are_the_pixel_counts_of_scipy_s_components(mask):
    expected, n = ndimage.label(mask, structure=np.ones((3, 3)))
    labels, m, sizes = label8_sizes(mask)
    assert m == n and np.array_equal(labels, expected)
    assert np.array_equal(
        sizes, np.bincount(expected.ravel(), minlength=n + 1) * (np.arange(n + 1) > 0)
    )


@pytest.mark.parametrize("mask", list(_masks()))
def test_labelled_pixels_are_flatnonzero_and_the_labels_there(mask):
    labels, _n, sizes = label8_sizes(mask)
    idx, lab = labelled_pixels(labels, int(sizes.sum()))
    expected = np.flatnonzero(labels)
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(lab, labels.ravel()[expected].astype(np.int64) - 1)


def test_hit_statistics_are_the_same_with_the_pixels_given():
    """hit_table and touch_probability from the caller's pixel list and footprint (as
    detect_hits gives them) equal those they find themselves."""
    from viskom.measure.cosmics import hit_table, touch_probability

    rng = np.random.default_rng(11)
    mask = rng.random((90, 70)) < 0.08
    labels, n, sizes = label8_sizes(mask)
    sig = rng.normal(50.0, 20.0, mask.shape).astype(np.float32)
    pixels = labelled_pixels(labels, int(sizes.sum()))
    alone, given = hit_table(labels, n, sig), hit_table(labels, n, sig, pixels)
    for column in alone:
        np.testing.assert_array_equal(alone[column], given[column], err_msg=column)
    assert touch_probability(labels, n) == touch_probability(
        labels, n, pixels=pixels, footprint=mask
    )


@pytest.mark.parametrize("min_px", [1, 3, 10])
def test_busy_pixels_are_scipy_s_components_gathers_and_union(min_px):
    rng = np.random.default_rng(min_px)
    hits, n = ndimage.label(rng.random((70, 90)) > 0.9, structure=np.ones((3, 3)))
    flagged = np.zeros(n + 1, dtype=bool)
    flagged[1:] = rng.random(n) > 0.5
    light = (rng.random((70, 90)) > 0.7) & (hits == 0)
    components, n_light = ndimage.label(light, structure=np.ones((3, 3)))
    big = np.bincount(components.ravel(), minlength=n_light + 1) >= min_px
    big[0] = False
    expected = flagged[hits] | big[components]
    assert np.array_equal(busy_pixels(hits.astype(np.int32), flagged, light, min_px), expected)
    assert expected.any() and not expected.all()


@pytest.mark.parametrize("mask", list(_masks()))
@pytest.mark.parametrize("radius", [1, 2, 3])
def test_dilate_is_iterated_binary_dilation(mask, radius):
    box = ndimage.binary_dilation(mask, structure=BOX, iterations=radius) if mask.any() else mask
    cross = ndimage.binary_dilation(mask, iterations=radius) if mask.any() else mask
    np.testing.assert_array_equal(dilate(mask, radius, True), box)
    np.testing.assert_array_equal(dilate(mask, radius, False), cross)


@pytest.mark.parametrize("mask", list(_masks()))
def test_labels_beside_are_the_labels_under_scipy_s_3x3_dilation(mask):
    # the labels of another random mask's components, some beside `mask`, some not
    rng = np.random.default_rng(11)
    labels, n = ndimage.label(rng.random(mask.shape) < 0.15, structure=BOX)
    near = ndimage.binary_dilation(mask, structure=BOX) if mask.any() else mask
    expected = np.zeros(n + 1, dtype=bool)
    expected[np.unique(labels[near])] = True
    got = labels_beside(labels.astype(np.int32), mask, n)
    np.testing.assert_array_equal(got, expected[1:])
    if mask.any() and n:
        assert got.any()


@pytest.mark.parametrize("radius", [1, 2, 4])
def test_saturated_area_is_the_cross_dilation_of_the_saturated_pixels(radius):
    rng = np.random.default_rng(5)
    image = rng.normal(100.0, 10.0, (70, 90)).astype(np.float32)
    image[0, 0] = image[69, 45] = image[30, 89] = 1e4  # corners and edges
    image[40:43, 20:60] = 1e4  # a bleed-like block
    image[10, 10] = np.nan  # never saturated
    level = np.float32(5e3)
    allowed = rng.random(image.shape) < 0.5
    expected_allowed = allowed.copy()
    masked, n = saturated_area(image, float(level), radius, allowed)
    expected = ndimage.binary_dilation(image >= level, iterations=radius)
    expected_allowed &= ~expected
    np.testing.assert_array_equal(masked, expected)
    assert n == int(expected.sum())
    np.testing.assert_array_equal(allowed, expected_allowed)
    # nothing saturated: no mask, nothing cleared
    before = allowed.copy()
    assert saturated_area(image, 1e9, radius, allowed) == (None, 0)
    np.testing.assert_array_equal(allowed, before)
    # a growth mask of another shape (the seeds-only kernel's empty one) is refused
    with pytest.raises(ValueError):
        saturated_area(image, float(level), radius, np.zeros((0, 0), dtype=bool))


def test_labels_beside_refuses_a_mask_of_another_shape():
    with pytest.raises(ValueError):
        labels_beside(np.zeros((5, 6), np.int32), np.zeros((6, 5), bool), 3)


@pytest.mark.parametrize("steps", [0, 1, 2, 4])
def test_grow_is_binary_dilation_within_the_allowed_pixels(steps):
    rng = np.random.default_rng(steps)
    allowed = rng.random((70, 90)) < 0.45
    seeds = np.unique(rng.integers(0, allowed.size, 40))
    seed_mask = np.zeros(allowed.size, dtype=bool)
    seed_mask[seeds] = True
    seed_mask = seed_mask.reshape(allowed.shape)
    expected = seed_mask
    if steps:
        expected = ndimage.binary_dilation(seed_mask, structure=BOX, iterations=steps, mask=allowed)
    np.testing.assert_array_equal(grow(seeds, allowed, steps), expected)


def _numpy_sharpness(sig, rms, seed_sigma, gain, single_ratio, pair_ratio):
    """The sharpness test on whole arrays (edge-padded by 2): the candidates above seed_sigma,
    whether one of the four directions has more charge than a PSF allows, and the largest
    excess over its noise."""
    width = sig.shape[1]
    cand = np.flatnonzero(sig > seed_sigma * rms)
    rows, cols = np.divmod(cand, width)
    pw = width + 4
    idx = (rows + 2) * pw + (cols + 2)
    pad = np.pad(sig, 2, mode="edge").ravel().astype(float)
    var_bg = rms.ravel()[cand].astype(float) ** 2
    p = pad[idx]
    var_p = var_bg + np.maximum(p, 0) / gain
    sharp = np.zeros(cand.size, dtype=bool)
    z = np.full(cand.size, -np.inf)
    for off in (1, pw, pw + 1, pw - 1):
        n_plus, n_minus = pad[idx + off], pad[idx - off]
        excess = p - (n_plus + n_minus) / single_ratio
        var_n = 2 * var_bg + (np.maximum(n_plus, 0) + np.maximum(n_minus, 0)) / gain
        sharp |= excess > 0
        z = np.maximum(z, excess / np.sqrt(var_p + var_n / single_ratio**2))
        plus = n_plus >= n_minus
        partner = np.where(plus, n_plus, n_minus)
        other = np.where(plus, n_minus, n_plus)
        beyond = np.where(plus, pad[idx + 2 * off], pad[idx - 2 * off])
        excess2 = (p + partner) - (beyond + other) / pair_ratio
        var_s = var_p + var_bg + np.maximum(partner, 0) / gain
        var_o = 2 * var_bg + (np.maximum(beyond, 0) + np.maximum(other, 0)) / gain
        sharp |= excess2 > 0
        z = np.maximum(z, excess2 / np.sqrt(var_s + var_o / pair_ratio**2))
    return cand, sharp, z


def test_significance_and_seeds_match_the_whole_array_sharpness_test():
    """The compiled seed test, its sky and noise evaluated from meshes row by row, against
    the whole-array numpy formulation on the same sky and noise as full maps (`sky_maps`)."""
    rng = np.random.default_rng(11)
    height, width = 80, 100
    mesh = SkyMesh(
        (20.0 + rng.uniform(-2, 2, (5, 7))).astype(np.float32),
        rng.uniform(3.0, 5.0, (5, 7)).astype(np.float32),  # noise varying between meshes
        16,
        (height, width),
        1,
    )
    sky, rms = sky_maps(mesh)
    image = (sky + rng.normal(0, 1, (height, width)) * rms).astype(np.float32)
    yy, xx = np.mgrid[:height, :width]
    for x0, y0 in ((30.3, 40.6), (0.2, 10.0), (99.0, 79.0)):  # stars, two on the edges
        image += (800 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 1.0**2))).astype(
            np.float32
        )
    image[10, 10] += 500  # a single-pixel hit
    image[60, 20:24] += 300  # a track
    image[0, 50] += 400  # a hit on the edge
    sig, low, cand, sharp, z = significance_and_seeds_on_mesh(
        image, *spline_tables(mesh), mesh.mesh_px, 5.0, 2.5, 3.5, 0.24, 0.055
    )
    np.testing.assert_allclose(sig, image - sky, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(low, (image - sky) > 2.5 * rms)
    ref_cand, ref_sharp, ref_z = _numpy_sharpness(image - sky, rms, 5.0, 3.5, 0.24, 0.055)
    np.testing.assert_array_equal(cand, ref_cand)
    np.testing.assert_array_equal(sharp, ref_sharp)
    np.testing.assert_allclose(z, ref_z, rtol=1e-4, atol=1e-4)
    flat_sharp = set(cand[sharp].tolist())
    assert {10 * width + 10, 0 * width + 50} <= flat_sharp  # the hits are sharp
    r, c = np.divmod(cand[sharp], width)
    assert not np.any(np.hypot(c - 30.3, r - 40.6) < 1.5)  # the core of the star is not
    # the seeds alone (the quick-look hit mask): the same image, candidates and seeds
    sig2, low2, cand2, sharp2, z2 = significance_and_seeds_on_mesh(
        image, *spline_tables(mesh), mesh.mesh_px, 5.0, 2.5, 3.5, 0.24, 0.055, False
    )
    np.testing.assert_array_equal(sig2, sig)
    np.testing.assert_array_equal(cand2, ref_cand)
    np.testing.assert_array_equal(sharp2, ref_sharp)
    assert low2.size == 0 and z2.size == 0


def test_unit_metric_rows_count_each_units_rows_in_any_order():
    """Per quadrant, CCD and FPA counts, against counting each unit's rows by name."""
    from viskom.measure.cosmics import XrayBaseline, catalogue_classes
    from viskom.measure.hit_counts import unit_metric_rows

    rng = np.random.default_rng(8)
    names = ["1-1.E", "1-1.F", "1-1.G", "1-1.H", "2-3.E", "2-3.F"]
    per_quadrant = {
        n: {"measured_pixels": 4e6, "hit_pixels": 1e4 * (i + 1), "confusion_fraction": 0.01,
            "cr_particles": 100.0 + i}
        for i, n in enumerate(names)
    }  # fmt: skip
    n_hits, n_cat = 5000, 3000
    hits = {
        "extname": np.array(rng.choice([*names, "6-6.E"], n_hits), dtype=object),  # + unmeasured
        "kind": rng.choice(["cosmic", "xray", "proton"], n_hits),
    }
    cat = {"extname": np.array(rng.choice(names, n_cat), dtype=object)}
    flux = rng.uniform(100, 5e4, n_cat)
    radius = rng.uniform(0.3, 3.0, n_cat)
    classes = catalogue_classes(flux, radius)
    baseline = XrayBaseline(0.1, 0.01, 5)
    rows = {(u, m): v for u, m, v in
            unit_metric_rows(per_quadrant, hits, cat, classes, 560.0, baseline)}  # fmt: skip
    units = {**{n: [n] for n in names}, "1-1": names[:4], "2-3": names[4:], "FPA": names}
    for unit, members in units.items():
        mine = np.isin(hits["extname"].astype(str), members)
        kinds = hits["kind"][mine]
        assert rows[(unit, "cr_hits")] == mine.sum()
        assert rows[(unit, "xray_candidates")] == np.count_nonzero(kinds == "xray")
        in_cat = np.isin(cat["extname"].astype(str), members)
        for cls in ("xray", "cosmics", "protons"):
            assert rows[(unit, f"cat_{cls}")] == np.count_nonzero(classes[cls] & in_cat)


@pytest.mark.parametrize("mask", list(_masks())[:4])
def test_label_boxes_and_maxima_are_numpy_s_reductions(mask):
    labels, n = label8(mask)
    idx = np.flatnonzero(labels)
    lab = labels.ravel()[idx].astype(np.int64) - 1
    y, x = np.divmod(idx, mask.shape[1])
    expected = [np.full(n, mask.shape[0]), np.full(n, mask.shape[1]),
                np.full(n, -1), np.full(n, -1)]  # fmt: skip
    reductions = (np.minimum, np.minimum, np.maximum, np.maximum)
    for ufunc, out, values in zip(reductions, expected, (y, x, y, x), strict=True):
        ufunc.at(out, lab, values)
    for got, want in zip(label_boxes(idx, lab, n, mask.shape[1]), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    values = np.random.default_rng(n).normal(size=idx.size)
    peak = np.full(n, -np.inf)
    np.maximum.at(peak, lab, values)
    np.testing.assert_array_equal(label_max(values, lab, n), peak)
