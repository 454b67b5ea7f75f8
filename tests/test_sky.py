"""viskom's SExtractor background (`measure.sky`) against sep's `Background`, an independent
implementation of the same algorithm: on images with a sky gradient, stars, particle hits and
meshes that do not divide the image, the sky and noise agree to float rounding (measured:
<= 1e-5 ADU on full-size simulated VIS quadrants, noise 3.2 ADU); the tolerances below
(1e-3 ADU, 1e-4 relative) are two orders above that and two below anything a detection
threshold could feel. The hit kernel's row-by-row sky is checked against the full maps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import sep

from viskom.measure.cosmics import detect_hits
from viskom.measure.hit_kernels import significance_and_seeds_on_mesh
from viskom.measure.sky import (
    SkyMesh,
    skies_from_product,
    sky_at,
    sky_maps,
    sky_mesh,
    sky_product,
    spline_tables,
    subtract_sky,
)


def _scene(height: int, width: int, seed: int) -> np.ndarray:
    """Sky gradient + noise + stars + particle hits (ADU, float32)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    sky = 25.0 + 6.0 * xx / width - 4.0 * (yy / height) ** 2
    image = sky + rng.normal(0.0, 3.2, (height, width))
    for _ in range(height * width // 4000):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        image += 10 ** rng.uniform(2, 4.5) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / 2.0)
    hits = rng.integers(0, height * width, height * width // 300)
    image.ravel()[hits] += rng.uniform(100, 3000, hits.size)
    return image.astype(np.float32)


@pytest.mark.parametrize(
    ("shape", "mesh_px", "filter_size"),
    [
        ((300, 260), 64, 3),  # partial meshes on both axes
        ((256, 256), 64, 3),
        ((210, 190), 50, 5),
        ((150, 400), 32, 1),
        ((60, 300), 64, 3),  # one row of meshes
        ((300, 60), 64, 3),  # one column
        ((200, 230), 33, 3),  # an odd mesh
        ((40, 50), 64, 3),  # smaller than one mesh
        ((150, 100), 64, 3),  # two columns of meshes
    ],
)
def test_sky_and_noise_are_seps(shape, mesh_px, filter_size):
    image = _scene(*shape, seed=sum(shape) + mesh_px)
    ref = sep.Background(image, bw=mesh_px, bh=mesh_px, fw=filter_size, fh=filter_size)
    mesh = sky_mesh(image, mesh_px, filter_size)
    back, rms = sky_maps(mesh)
    np.testing.assert_allclose(back, ref.back(), rtol=0, atol=1e-3)
    np.testing.assert_allclose(rms, ref.rms(), rtol=1e-4, atol=1e-4)
    assert mesh.global_back == pytest.approx(ref.globalback, abs=1e-3)
    assert mesh.global_rms == pytest.approx(ref.globalrms, rel=1e-4)


def test_a_mesh_with_a_nan_takes_its_neighbours_mean():
    image = _scene(256, 256, seed=5)
    clean = sky_mesh(image, filter_size=1)  # unfiltered: the fill itself is compared
    image[70, 80] = np.nan  # mesh (1, 1); its nearest meshes are its four sides
    mesh = sky_mesh(image, filter_size=1)
    sides = [(0, 1), (2, 1), (1, 0), (1, 2)]
    assert mesh.back[1, 1] == pytest.approx(np.mean([clean.back[j, i] for j, i in sides]))
    assert mesh.rms[1, 1] == pytest.approx(np.mean([clean.rms[j, i] for j, i in sides]))
    others = np.ones(mesh.back.shape, bool)
    others[1, 1] = False
    np.testing.assert_array_equal(mesh.back[others], clean.back[others])


def test_meshes_that_do_not_fit_their_image_are_refused():
    with pytest.raises(ValueError, match="expected"):
        SkyMesh(np.zeros((2, 2), np.float32), np.zeros((2, 3), np.float32), 64, (100, 100))
    with pytest.raises(ValueError, match="expected"):
        SkyMesh(np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), 64, (100, 100))


def test_the_global_noise_of_a_flat_quadrant_is_seps():
    flat = np.full((128, 192), 1000.0, np.float32)  # no noise: every mesh's rms is 0
    ref = sep.Background(flat, bw=64, bh=64, fw=3, fh=3)
    assert sky_mesh(flat).global_rms == pytest.approx(ref.globalrms) == 1.0
    half = flat.copy()
    half[:, 96:] += np.random.default_rng(1).normal(0, 3, (128, 96)).astype(np.float32)
    ref = sep.Background(half, bw=64, bh=64, fw=1, fh=1)
    assert sky_mesh(half, filter_size=1).global_rms == pytest.approx(ref.globalrms, rel=1e-4)


def _numpy_significance(image, mesh, seed_sigma, grow_sigma):
    """sig, low and the candidates on whole arrays, the sky and noise as full maps."""
    back, rms = sky_maps(mesh)
    sig = image - back
    return sig, sig > grow_sigma * rms, np.flatnonzero(sig > seed_sigma * rms)


def test_the_hit_kernel_evaluates_the_same_sky_row_by_row():
    image = _scene(300, 260, seed=2)
    mesh = sky_mesh(image)
    sig, low, cand, _sharp, _z = significance_and_seeds_on_mesh(
        image, *spline_tables(mesh), mesh.mesh_px, 5.0, 2.5, 3.5, 0.24, 0.055
    )
    ref_sig, ref_low, ref_cand = _numpy_significance(image, mesh, 5.0, 2.5)
    assert ref_cand.size > 100  # candidates: the stars and the hits
    np.testing.assert_array_equal(sig, ref_sig)
    np.testing.assert_array_equal(low, ref_low)
    np.testing.assert_array_equal(cand, ref_cand)


def test_the_sky_product_round_trips(tmp_path):
    meshes = {"1-1.E": sky_mesh(_scene(300, 260, 1)), "6-6.H": sky_mesh(_scene(256, 256, 2), 32, 5)}
    path = tmp_path / "sky.npz"
    np.savez(path, **sky_product(meshes))
    with np.load(path) as npz:
        back = skies_from_product({k: npz[k] for k in npz.files})
    assert set(back) == set(meshes)
    for ext, mesh in meshes.items():
        np.testing.assert_array_equal(back[ext].back, mesh.back)
        np.testing.assert_array_equal(back[ext].rms, mesh.rms)
        assert (back[ext].shape, back[ext].mesh_px, back[ext].filter_size) == (
            mesh.shape,
            mesh.mesh_px,
            mesh.filter_size,
        )
    assert skies_from_product(None) == {}


def test_the_hit_detector_uses_the_catalogues_meshes_only_where_they_fit():
    image = _scene(300, 260, seed=4)
    own = detect_hits(image, gain_e_per_adu=3.5)
    given = detect_hits(image, gain_e_per_adu=3.5, sky=sky_mesh(image))
    np.testing.assert_array_equal(own["x"], given["x"])
    # a noisier sky than the image's own is used when it fits (fewer hits)...
    mesh = sky_mesh(image)
    noisier = replace(mesh, rms=mesh.rms * np.float32(3.0))
    assert len(detect_hits(image, gain_e_per_adu=3.5, sky=noisier)["x"]) < len(own["x"])
    # ... and ignored when it was made with other settings or for another image
    finer = sky_mesh(image, 32)
    taller = sky_mesh(_scene(301, 260, seed=4))
    for other in (replace(finer, rms=finer.rms * np.float32(3.0)),
                  replace(noisier, filter_size=5),
                  replace(taller, rms=taller.rms * np.float32(3.0))):  # fmt: skip
        np.testing.assert_array_equal(
            detect_hits(image, gain_e_per_adu=3.5, sky=other)["x"], own["x"]
        )


def test_the_sky_subtracted_in_place_and_at_points_is_the_maps():
    image = _scene(300, 260, seed=6)
    mesh = sky_mesh(image)
    back, _ = sky_maps(mesh, noise=False)
    data = image.copy()
    subtract_sky(data, mesh)
    np.testing.assert_array_equal(data, image - back)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 260, 500), rng.integers(0, 300, 500)
    np.testing.assert_array_equal(sky_at(mesh, x, y), back[y, x])


def test_the_mesh_kernel_keeps_every_candidate_beyond_its_first_allocation():
    """More candidates than the kernel first makes room for (1 pixel in 64): all kept, in
    raster order, as numpy finds them on the full maps."""
    image = _scene(300, 260, seed=9)
    spikes = np.random.default_rng(9).choice(image.size, image.size // 20, replace=False)
    image.ravel()[spikes] += 400.0
    mesh = sky_mesh(image)
    sig, low, cand, sharp, z = significance_and_seeds_on_mesh(
        image, *spline_tables(mesh), mesh.mesh_px, 5.0, 2.5, 3.5, 0.24, 0.055
    )
    ref_sig, ref_low, ref_cand = _numpy_significance(image, mesh, 5.0, 2.5)
    assert ref_cand.size > 2 * max(image.size // 64, 1024)
    np.testing.assert_array_equal(cand, ref_cand)
    np.testing.assert_array_equal(sig, ref_sig)
    np.testing.assert_array_equal(low, ref_low)
    assert sharp.size == z.size == cand.size and sharp.any()


def test_the_sky_product_round_trips_through_the_pipelines_files(tmp_path):
    from viskom.pipeline.stage_io import read_product
    from viskom.store.products import write_arrays

    meshes = {"1-1.E": sky_mesh(_scene(300, 260, 1)), "6-6.H": sky_mesh(_scene(256, 256, 2))}
    path = write_arrays(sky_product(meshes), tmp_path / "x_sky.npz")
    back = skies_from_product(read_product(path, "npz"))
    assert set(back) == set(meshes)
    for ext, mesh in meshes.items():
        np.testing.assert_array_equal(back[ext].back, mesh.back)
        assert back[ext].fits(mesh.shape, 64, 3)
