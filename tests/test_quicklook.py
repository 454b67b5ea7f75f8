"""The quick-look catalogue (`catalogue_depth = "quicklook"`) keeps FLUX_AUTO's meaning, and the
aperture correction finds the faint neighbours the quick catalogue does not hold. The oracle
is VISQL's 1.5 sigma catalogue of the same pixels (the full depth)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.spatial import cKDTree

from viskom.config import Settings
from viskom.le1.frame import Le1Frame
from viskom.measure.catalogue import (
    QUICKLOOK_PARAMS,
    ExtractionParams,
    extract_sources,
    sharp_hit_mask,
)
from viskom.measure.detector import quadrant_bias
from viskom.measure.photometry import cutout_neighbour_flux, neighbour_flux
from viskom.measure.sky import SkyMesh
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.stages.gaia import GaiaPhotometry


@pytest.fixture(scope="module")
def quadrants(tmp_path_factory):
    """Bias-subtracted image areas of a dense small simulated science frame."""
    out = tmp_path_factory.mktemp("quick")
    sim = simulate_frame(
        out, "science", seed=811, date_obs=datetime(2024, 7, 13, 6, tzinfo=UTC),
        exptime=560.52, config=SimConfig(geometry="small", star_density_factor=60.0),
    )  # fmt: skip
    images = []
    with Le1Frame(sim.path) as frame:
        for name in frame.quadrant_extnames:
            quad = frame.quadrant(name)
            g = quad.geometry
            bias = quadrant_bias(quad.data, g)[2]
            images.append(quad.data[g.image.slices].astype(np.float32) - np.float32(bias))
    return images


def _bright_flux_ratios(images, params):
    """FLUX_AUTO at `params` over the full depth's, for the full catalogue's bright, unflagged,
    resolved sources (stars and galaxies, S/N > 100: the PSF stars) found again within 0.5 px."""
    ratios = []
    for image in images:
        full = extract_sources(image, gain_e_per_adu=3.5)
        other = extract_sources(image, gain_e_per_adu=3.5, params=params)
        snr = full["flux_auto"] / full["fluxerr_auto"]
        bright = (snr > 100) & (full["flags"] == 0) & (full["b_image"] >= 1.0)
        tree = cKDTree(np.column_stack([other["x_image"], other["y_image"]]))
        d, i = tree.query(np.column_stack([full["x_image"][bright], full["y_image"][bright]]))
        ok = d < 0.5
        ratios.append(other["flux_auto"][i[ok]] / full["flux_auto"][bright][ok])
    return np.concatenate(ratios)


def test_quicklook_flux_auto_means_the_full_catalogues(quadrants):
    ratios = _bright_flux_ratios(quadrants, QUICKLOOK_PARAMS)
    assert ratios.size >= 50
    assert np.median(ratios) == pytest.approx(1.0, abs=0.001)
    assert np.mean(np.abs(ratios - 1.0) < 0.01) > 0.95  # 99.6 % measured


def test_the_detection_isophote_alone_would_bias_flux_auto(quadrants):
    """Without measuring the ellipses again at 1.5 sigma, the 20 sigma isophote's smaller
    Kron apertures lose flux: the test above can fail."""
    ratios = _bright_flux_ratios(quadrants, replace(QUICKLOOK_PARAMS, shape_thresh=None))
    assert np.median(ratios) < 0.995  # 0.987 measured


def test_extract_sources_leaves_its_input_alone(quadrants):
    image = quadrants[0].copy()
    extract_sources(image, params=QUICKLOOK_PARAMS)
    np.testing.assert_array_equal(image, quadrants[0])


@pytest.mark.parametrize("params", [QUICKLOOK_PARAMS, ExtractionParams()])
def test_overwrite_measures_the_same_without_a_copy(quadrants, params):
    """`overwrite=True` subtracts the sky in the caller's array (the catalogue stage's own
    copy) at VISQL's depth; at the quick look's, the hit test makes the subtracted image and
    the array is left alone. The same catalogue, column for column, either way."""
    kept = extract_sources(quadrants[0], gain_e_per_adu=3.5, params=params)
    given = quadrants[0].copy()
    reused = extract_sources(given, gain_e_per_adu=3.5, params=params, overwrite=True)
    assert set(kept) == set(reused)
    for column in kept:
        np.testing.assert_array_equal(kept[column], reused[column], err_msg=column)
    changed = not np.array_equal(given, quadrants[0])  # the sky went from the array itself
    assert changed == (params.hit_mask_fraction is None)


@pytest.mark.parametrize("params", [QUICKLOOK_PARAMS, ExtractionParams()])
def test_without_radii_the_same_sources_positions_and_flux_auto(quadrants, params):
    """`radii=False` (the aperture correction's neighbours) leaves out the half-light radii,
    and the sharpness ratios where the quick-look shapes do not need them, as NaN, and
    changes nothing else it measures but the radii's truncation flag."""
    every = extract_sources(quadrants[1], gain_e_per_adu=3.5, params=params)
    lean = extract_sources(quadrants[1], gain_e_per_adu=3.5, params=params, radii=False)
    assert len(every["number"]) > 20
    kept = ["x_image", "y_image", "flux_auto", "fluxerr_auto", "a_image", "b_image"]
    # FLAGS lack only the truncation of the half-light radii's apertures
    np.testing.assert_array_equal(lean["flags"] | (every["flags"] & 8), every["flags"])
    left_out = ["flux_radius"]
    reshaped = params.shape_thresh is not None and params.shape_thresh < params.detect_thresh
    (kept if reshaped else left_out).extend(["sharp_single", "sharp_pair"])
    for column in kept:
        np.testing.assert_array_equal(lean[column], every[column], err_msg=column)
    for column in left_out:
        assert np.isnan(lean[column]).all() and np.isfinite(every[column]).any()


def _gauss(shape, x0, y0, flux, sigma=0.8):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    g = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    return (flux * g / g.sum()).astype(np.float32)


def test_cutout_neighbour_flux_finds_the_faint_neighbours():
    """A bright star with three faint neighbours inside its 20 px aperture, one straddling the
    edge: the inside flux is theirs (FLUX_AUTO misses ~2 % of a Gaussian's wings), the
    straddling one is reported, and a shallow catalogue (the star alone) knows of none."""
    rng = np.random.default_rng(5)
    shape = (160, 160)
    image = rng.normal(0.0, 3.0, shape).astype(np.float32)
    image += _gauss(shape, 80.3, 79.6, 4.0e5)
    faint = [(90.0, 72.0, 900.0), (70.0, 85.0, 700.0), (78.0, 68.0, 1100.0)]  # 12 px away
    for x0, y0, f in faint:
        image += _gauss(shape, x0, y0, f)
    image += _gauss(shape, 80.0, 100.5, 2000.0)  # 20.9 px away: on the aperture's edge
    x, y, flux = np.array([80.3]), np.array([79.6]), np.array([4.0e5])
    inside, straddle = cutout_neighbour_flux(image, x, y, flux, 20.0, edge=5.0)
    assert inside[0] == pytest.approx(sum(f for *_, f in faint), rel=0.08)
    assert straddle[0] == pytest.approx(2000.0 / 4.0e5, rel=0.1)
    shallow_inside, _ = neighbour_flux(x, y, flux, x, y, flux, 20.0)
    assert shallow_inside[0] == 0.0
    # too close to the image's edge for a cutout: not measured
    edge_inside, _ = cutout_neighbour_flux(image, np.array([10.0]), np.array([80.0]), flux, 20.0)
    assert np.isnan(edge_inside[0])


def test_gaia_provenance_names_the_quicklook_depth_only_when_used():
    full = GaiaPhotometry.config_of(Settings(catalogue_depth="full"))
    quick = GaiaPhotometry.config_of(Settings(catalogue_depth="quicklook"))
    assert "catalogue_depth" not in full
    assert quick == {**full, "catalogue_depth": "quicklook"}
    assert ExtractionParams().shape_thresh is None  # the full depth is VISQL's, untouched


def test_the_catalogue_config_at_visqls_depth_has_no_quicklook_keys():
    """A store measured before the quick-look settings existed is not measured again: at
    VISQL's depth the catalogue's configuration (its provenance) is what it was, and both
    depths' configurations give back their extraction settings."""
    from viskom.stages.catalogue import Catalogue

    full = Catalogue.config_of(Settings(catalogue_depth="full"))
    quick = Catalogue.config_of(Settings(catalogue_depth="quicklook"))
    quick_only = {"shape_thresh", "shape_box_px", "shape_sharp_min", "thin_rmax_a",
                  "hit_mask_fraction"}  # fmt: skip
    assert not quick_only & set(full)
    for config, params in ((full, ExtractionParams()), (quick, QUICKLOOK_PARAMS)):
        settings = {k: v for k, v in config.items() if k != "engine"}
        assert ExtractionParams(**settings) == params


def test_events_provenance_names_the_quicklook_depth_only_when_used():
    """The events stage and its plots know the catalogue's depth (VISQL's classes need the
    1.5 sigma one); a store measured at VISQL's depth keeps its provenance."""
    from viskom.stages.event_plots import EventPlots
    from viskom.stages.events import Events

    for stage in (Events, EventPlots):
        full = stage.config_of(Settings(catalogue_depth="full"))
        quick = stage.config_of(Settings(catalogue_depth="quicklook"))
        assert "catalogue_depth" not in full
        assert quick == {**full, "catalogue_depth": "quicklook"}


@pytest.mark.filterwarnings("ignore")
def test_a_quicklook_catalogue_gives_no_visql_classes_and_says_so(tmp_path):
    """VISQL's catalogue classes count small faint sources: from a 20 sigma catalogue they
    would be a fraction of the truth reported as a measurement. At the quick-look depth the
    events stage leaves them out with the outcome `shallow_catalogue`, keeps its own hit
    counts (the same as at VISQL's depth within the guards' few per cent), and the event maps
    say why they are empty; at VISQL's depth the classes are there."""
    from viskom.pipeline.work import ExposureInfo
    from viskom.pipeline.worker import run_one
    from viskom.stages.catalogue import Catalogue
    from viskom.stages.event_plots import EventPlots
    from viskom.stages.events import Events

    when = datetime(2024, 7, 13, 3, 0, tzinfo=UTC)
    sim = simulate_frame(tmp_path, "science", seed=31, date_obs=when, exptime=560.0,
                         config=SimConfig(geometry="small"), obs_id=2601)  # fmt: skip
    fpa, outcomes = {}, {}
    for depth in ("full", "quicklook"):
        info = ExposureInfo(0, sim.name, str(sim.path), "SCIENCE", 560.0,
                            str(tmp_path / depth), date_obs=when.isoformat())  # fmt: skip
        settings = Settings(catalogue_depth=depth)
        with Le1Frame(sim.path) as frame:
            run_one(Catalogue(), frame, info, settings)
            result = run_one(Events(), frame, info, settings)
            plots = run_one(EventPlots(), frame, info, settings)
        assert result.status == "ok" and plots.status == "ok"
        fpa[depth] = {m: v for u, m, v in result.metrics if u == "FPA"}
        outcomes[depth] = {o.code for o in result.outcomes}
        assert info.product("cosmiX", "png").stat().st_size > 0
    visql = {"cat_xray", "cat_cosmics", "cat_protons", "xray_top10count", "proton_top10count"}
    assert visql <= set(fpa["full"]) and fpa["full"]["cat_cosmics"] > 0
    assert not visql & set(fpa["quicklook"])
    assert "shallow_catalogue" in outcomes["quicklook"]
    assert "shallow_catalogue" not in outcomes["full"]
    for metric in ("cr_hits", "xray_candidates"):
        assert fpa["quicklook"][metric] == pytest.approx(fpa["full"][metric], rel=0.05, abs=3)


def test_an_unmeasured_event_map_says_why_and_counts_nothing():
    """The quick-look depth's VISQL maps: the reason in the plot, no counts or top-10 figure
    that would read as a measurement (the events given are ignored)."""
    from viskom.present.event_maps import plot_event_map

    x = np.array([0.01, 0.02, 0.1])
    counted = plot_event_map(x, x, "xray", 560.0, "t")
    empty = plot_event_map(x, x, "xray", 560.0, "t", unmeasured="not measured: too shallow")

    def texts(fig):
        return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)

    assert "3 events" in texts(counted) and "top10count" in texts(counted)
    assert "not measured" in texts(empty) and "shallow" in texts(empty)
    assert "3 events" not in texts(empty) and "0 events" not in texts(empty)
    assert "top10count" not in texts(empty)


def _stars_found_and_strays(sim_path, objects_path, params):
    """(bright stars injected, found within 1 px, detections > 2 px from every injected star
    and galaxy): the simulator's object list is the oracle."""
    t = pq.read_table(objects_path).to_pydict()
    kind, ext = np.array(t["kind"]), np.array(t["extname"])
    x, y, flux = np.array(t["x"], float), np.array(t["y"], float), np.array(t["flux_adu"], float)
    injected = found = strays = 0
    with Le1Frame(sim_path) as frame:
        for name in frame.quadrant_extnames:
            quad = frame.quadrant(name)
            g = quad.geometry
            image = quad.data[g.image.slices].astype(np.float32)
            image -= np.float32(quadrant_bias(quad.data, g)[2])
            cat = extract_sources(image, gain_e_per_adu=3.5, params=params)
            cx = cat["x_image"] - 1.0 + g.image.col0
            cy = cat["y_image"] - 1.0 + g.image.row0
            bright = (ext == name) & (kind == "star") & (flux > 3000.0)
            light = (ext == name) & np.isin(kind, ["star", "galaxy"])
            d, _ = cKDTree(np.column_stack([cx, cy])).query(np.column_stack([x, y])[bright])
            away, _ = cKDTree(np.column_stack([x, y])[light]).query(np.column_stack([cx, cy]))
            injected += int(bright.sum())
            found += int((d < 1.0).sum())
            strays += int((away > 2.0).sum())
    return injected, found, strays


@pytest.mark.parametrize(
    ("psf_beta", "psf_r2_px2"),
    [(2.5, 1.95), (np.inf, 1.2)],  # the VIS PSF; a Gaussian sharper than it
)
def test_masking_sharp_hits_keeps_the_stars_and_drops_the_hits(tmp_path, psf_beta, psf_r2_px2):
    """The quick-look detection masks the hit detector's seeds (`sharp_hit_mask`): at least
    98 % as many of the injected bright stars are found as without the mask (2-3 % more,
    measured: hits no longer blend with them), even with a PSF sharper than VIS's, while the
    detections that are no injected star or galaxy (particle hits) fall below 15 % (3-6 %
    measured)."""
    sim = simulate_frame(
        tmp_path, "science", seed=811, date_obs=datetime(2024, 7, 13, 6, tzinfo=UTC),
        exptime=560.52, config=SimConfig(geometry="small", star_density_factor=60.0,
                                         psf_beta=psf_beta, psf_r2_px2=psf_r2_px2),
    )  # fmt: skip
    unmasked = replace(QUICKLOOK_PARAMS, hit_mask_fraction=None)
    n, found, strays = _stars_found_and_strays(sim.path, sim.objects_path, QUICKLOOK_PARAMS)
    n0, found0, strays0 = _stars_found_and_strays(sim.path, sim.objects_path, unmasked)
    assert n == n0 > 1000
    assert found0 > 0.85 * n  # the quick catalogue finds the bright stars at all
    assert found >= 0.98 * found0
    assert strays0 > 2000 and strays < 0.15 * strays0


def test_the_hit_mask_takes_a_spike_and_no_star():
    """A one-pixel spike is masked; no pixel of a star that the 20 sigma detection sees is
    (a noise-sharp pixel of its faint wing may be, unseen by the detection)."""
    rng = np.random.default_rng(3)
    image = rng.normal(100.0, 3.0, (64, 64)).astype(np.float32)
    image[20, 20] += 500.0  # a hit: all its charge in one pixel
    image += _gauss(image.shape, 44.2, 40.7, 3.0e4)  # a star
    sky, rms = 100.0, 3.0
    flat = SkyMesh(np.full((1, 1), sky, np.float32), np.full((1, 1), rms, np.float32), 64,
                   image.shape)  # fmt: skip
    mask, subtracted = sharp_hit_mask(image, flat, QUICKLOOK_PARAMS)
    np.testing.assert_allclose(subtracted, image - sky, atol=1e-4)
    assert mask[20, 20]
    star = np.zeros(image.shape, bool)
    star[30:52, 34:56] = True
    assert not (mask & star & (image - sky > QUICKLOOK_PARAMS.detect_thresh * rms)).any()
    assert mask.sum() < 5  # noise peaks above 5 sigma are rare: 4096 pixels


def test_what_touches_a_masked_hit_is_flagged():
    """A star with a one-pixel hit beside its core is still detected, flagged
    `FLAG_HIT_MASKED` (its flux holds the hit's charge, and the hit finder's PSF limits leave
    it out); an untouched star is not flagged; at VISQL's depth nothing is."""
    from viskom.measure.catalogue import FLAG_HIT_MASKED

    rng = np.random.default_rng(8)
    image = rng.normal(0.0, 3.0, (96, 96)).astype(np.float32)
    image += _gauss(image.shape, 30.3, 30.6, 3.0e4) + _gauss(image.shape, 66.4, 64.2, 3.0e4)
    image[31, 32] += 3000.0  # a hit on the first star's wing, 1.8 px from its centre
    cat = extract_sources(image, gain_e_per_adu=3.5, params=QUICKLOOK_PARAMS)
    hit = np.hypot(cat["x_image"] - 31.3, cat["y_image"] - 31.6) < 1.5
    clean = np.hypot(cat["x_image"] - 67.4, cat["y_image"] - 65.2) < 1.5
    assert hit.sum() == 1 and clean.sum() == 1
    assert cat["flags"][hit][0] & FLAG_HIT_MASKED
    assert not cat["flags"][clean][0] & FLAG_HIT_MASKED
    full = extract_sources(image, gain_e_per_adu=3.5)
    assert not np.any(full["flags"] & FLAG_HIT_MASKED)


def test_the_hit_finders_psf_limits_leave_out_stars_beside_a_masked_hit():
    """Stars flagged `FLAG_HIT_MASKED` look sharper than the PSF (a hit beside the core): the
    PSF limits are half the 1st percentile of the other stars' ratios, as if they were not
    there; unflagged, the same stars would drag the limits to a tenth."""
    from viskom.measure.catalogue import FLAG_HIT_MASKED
    from viskom.measure.cosmics import HitParams
    from viskom.measure.hit_counts import frame_psf_limits

    rng = np.random.default_rng(4)
    single = np.r_[rng.normal(0.5, 0.01, 300), np.full(10, 0.02)]
    pair = np.r_[rng.normal(0.11, 0.003, 300), np.full(10, 0.004)]
    flags = np.r_[np.zeros(300, int), np.full(10, FLAG_HIT_MASKED)]
    cat = {"sharp_single": single, "sharp_pair": pair, "flags": flags,
           "flux_radius": np.ones(310)}  # fmt: skip
    stars = np.ones(310, dtype=bool)
    limit_single, limit_pair, n = frame_psf_limits(cat, HitParams(), stars)
    assert n == 300
    assert limit_single == pytest.approx(0.5 * np.percentile(single[:300], 1))
    assert limit_pair == pytest.approx(0.5 * np.percentile(pair[:300], 1))
    unflagged = frame_psf_limits({**cat, "flags": np.zeros(310, int)}, HitParams(), stars)
    assert unflagged[0] < 0.1 * limit_single and unflagged[2] == 310
