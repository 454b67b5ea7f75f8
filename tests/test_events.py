"""Particle hits against the simulator's truth: completeness, false hits, stars, hot pixels,
and cosmic-ray, X-ray and proton counts over a grid of cosmic-ray angle distributions, energy
spectra, sensor thicknesses and X-ray rates (quiet Sun to a flare)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow.parquet as pq
import pytest

from viskom.le1.frame import Le1Frame
from viskom.measure.catalogue import ExtractionParams
from viskom.measure.cosmics import (
    HitParams,
    catalogue_classes,
    classify_hits,
    detect_hits,
    diffusion_variance,
    hot_pixel_indices,
    particles_from_hits,
    point_variance_limit,
    rate_per_cm2_s,
    top10count,
    xray_baseline,
    xray_net,
)
from viskom.measure.detector import quadrant_bias
from viskom.measure.hit_counts import frame_locus, frame_psf_limits, star_guards
from viskom.sources.simulator import SimConfig, simulate_frame
from viskom.sources.simulator.psf import gaussian_r2
from viskom.stages.catalogue import quadrant_catalogue

T0 = datetime(2024, 7, 13, 3, 0, tzinfo=UTC)
PARTICLES = ("cosmic", "xray", "proton")


def _image(quad) -> np.ndarray:
    g = quad.geometry
    return quad.data[g.image.slices].astype(np.float32) - np.float32(quadrant_bias(quad.data, g)[2])


def _hits_of_frame(path, hot: dict[str, np.ndarray] | None = None, names=None) -> dict:
    """detect_hits on every quadrant the way the events stage does: the whole frame's
    catalogue gives the stellar locus, whose stars give the guards and the PSF limits."""
    out = {}
    with Le1Frame(path) as frame:
        cats = [
            quadrant_catalogue(frame.quadrant(n), ExtractionParams())
            for n in frame.quadrant_extnames
        ]
        cat = {k: np.concatenate([c[k] for c in cats]) for k in cats[0]}
        locus, stars = frame_locus(cat)
        single, pair, _ = frame_psf_limits(cat, HitParams(), stars)
        params = HitParams(psf_single_ratio=single, psf_pair_ratio=pair)
        guards = star_guards(cat, locus)
        for name in names or frame.quadrant_extnames:
            quad = frame.quadrant(name)
            g = quad.geometry
            x, y, r = guards.get(name, (np.zeros(0),) * 3)
            bias = quadrant_bias(quad.data, g)[2]
            out[name] = (
                detect_hits(
                    _image(quad),
                    gain_e_per_adu=quad.header.gain_e_per_adu,
                    saturation_adu=quad.header.saturate_adu - bias,
                    objects=(x - 1 - g.image.col0, y - 1 - g.image.row0, r),
                    hot_pixels=None if hot is None else hot.get(name),
                    params=params,
                    return_labels=True,
                ),
                g.image.col0,
                g.image.row0,
            )
    return out


def _score(hits: dict, objects_path) -> dict[str, int]:
    """Truth matching: a particle hit is found when a hit pixel lies within 1 px of its
    centroid; a detected hit is true when it has a pixel within 1 px of a truth track."""
    t = pq.read_table(objects_path).to_pydict()
    kind, ext = np.array(t["kind"]), np.array(t["extname"])
    X, Y = np.array(t["x"], float), np.array(t["y"], float)
    Q = np.array(t["charge_adu"], float)
    L = np.nan_to_num(np.array(t["length_px"], float))
    TH = np.radians(np.nan_to_num(np.array(t["theta_deg"], float)))
    tot = dict(truth=0, found=0, detected=0, false=0, near_star=0, near_hot=0)
    for name, (h, col0, row0) in hits.items():
        lab, masked = h["labels"], h["masked"]
        H, W = lab.shape
        part = (ext == name) & np.isin(kind, PARTICLES)
        px, py = X[part] - col0, Y[part] - row0
        ix = np.clip(np.rint(px).astype(int), 0, W - 1)
        iy = np.clip(np.rint(py).astype(int), 0, H - 1)
        found = np.zeros(ix.size, bool)
        true_labels: set[int] = set()
        for k in range(ix.size):
            n = max(2, int(L[part][k] * 2) + 2)
            s = np.linspace(-0.5, 0.5, n) * L[part][k]
            sx = np.rint(px[k] + s * np.cos(TH[part][k])).astype(int)
            sy = np.rint(py[k] + s * np.sin(TH[part][k])).astype(int)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    v = lab[np.clip(sy + dy, 0, H - 1), np.clip(sx + dx, 0, W - 1)]
                    true_labels.update(v[v > 0].tolist())
                    if dx in (-1, 0, 1) and abs(dy) <= 1:
                        found[k] |= (
                            lab[np.clip(iy[k] + dy, 0, H - 1), np.clip(ix[k] + dx, 0, W - 1)] > 0
                        )
        detectable = (Q[part] > 40) & ~masked[iy, ix]
        tot["truth"] += int(detectable.sum())
        tot["found"] += int((found & detectable).sum())
        n_det = int(lab.max())
        false = np.array(sorted(set(range(1, n_det + 1)) - true_labels), int)
        tot["detected"] += n_det
        tot["false"] += false.size
        for what, radius in (("star", 3.0), ("hot", 1.5)):
            sel = (ext == name) & (kind == what)
            if false.size and sel.any():
                d = np.hypot(
                    h["x"][false - 1][:, None] - (X[sel] - col0)[None, :],
                    h["y"][false - 1][:, None] - (Y[sel] - row0)[None, :],
                )
                tot[f"near_{what}"] += int((d.min(axis=1) < radius).sum())
    return tot


@pytest.fixture(scope="module")
def quiet(tmp_path_factory) -> dict:
    """A small science frame and three darks (for the hot-pixel map), quiet Sun."""
    out = tmp_path_factory.mktemp("events")
    cfg = SimConfig(geometry="small")
    sci = simulate_frame(out / "s", "science", seed=31, date_obs=T0, config=cfg)
    darks = [
        simulate_frame(
            out / f"d{i}", "dark", seed=40 + i, date_obs=T0.replace(hour=4 + i), config=cfg
        )
        for i in range(3)
    ]
    names = None
    with Le1Frame(sci.path) as frame:
        names = frame.quadrant_extnames[::3]  # 48 quadrants, every CCD row and column
    hot = {}
    opened = [Le1Frame(d.path) for d in darks]
    for name in names:
        hot[name] = hot_pixel_indices([_image(f.quadrant(name)) for f in opened])
    for f in opened:
        f.close()
    return {"sci": sci, "darks": darks, "names": names, "hot": hot}


def test_hot_pixel_map_finds_the_hot_pixels(quiet) -> None:
    t = pq.read_table(quiet["darks"][0].objects_path).to_pydict()
    kind, ext = np.array(t["kind"]), np.array(t["extname"])
    with Le1Frame(quiet["darks"][0].path) as frame:
        found = truth_bright = false = 0
        for name in quiet["names"]:
            g = frame.quadrant(name).geometry
            sel = (ext == name) & (kind == "hot")
            flux = np.array(t["flux_adu"], float)[sel]
            idx = (np.rint(np.array(t["y"])[sel] - g.image.row0) * g.image.shape[1]).astype(int) + (
                np.rint(np.array(t["x"])[sel] - g.image.col0).astype(int)
            )
            bright = flux > 15.0  # >= 12 sigma of a dark's read noise
            got = np.isin(idx, quiet["hot"][name])
            truth_bright += int(bright.sum())
            found += int((got & bright).sum())
            false += int(np.setdiff1d(quiet["hot"][name], idx).size)
    assert found / truth_bright > 0.97, (found, truth_bright)
    # cosmic-ray halos at the same pixel of two of the darks with a similar level mask a few
    # dozen extra pixels per quadrant (< 0.1 %): harmless, hits grow over them
    assert false / len(quiet["names"]) < 0.001 * 256 * 256


def test_pixel_detector_completeness_and_false_hits(quiet) -> None:
    hits = _hits_of_frame(quiet["sci"].path, quiet["hot"], quiet["names"])
    tot = _score(hits, quiet["sci"].objects_path)
    completeness = tot["found"] / tot["truth"]
    false_fraction = tot["false"] / tot["detected"]
    assert tot["truth"] > 2000
    assert completeness >= 0.95, tot
    assert false_fraction <= 0.05, tot
    # stars are never counted (a few "false" hits near stars are cosmic rays on stars
    # whose truth track was merged into the star's pixels); hot pixels are masked
    assert tot["near_star"] <= 0.002 * tot["detected"], tot
    assert tot["near_hot"] <= 0.005 * tot["detected"], tot


@pytest.mark.parametrize(
    "psf",
    [
        {"psf_beta": np.inf, "psf_r2_px2": gaussian_r2(0.7)},  # as sharp as a hit's core
        {"psf_beta": np.inf, "psf_r2_px2": gaussian_r2(1.6)},
        {"psf_beta": np.inf, "psf_r2_px2": gaussian_r2(0.7), "star_density_factor": 70.0},
    ],
    ids=["gauss-0.7", "gauss-1.6", "gauss-0.7-dense"],
)
def test_hits_on_science_frames_of_other_psfs(tmp_path, psf) -> None:
    """The PSF limits come from the frame's own stars: with a PSF as sharp as sigma 0.7 px,
    stars are still not counted as hits, and hits are still found."""
    cfg = SimConfig(geometry="small", hot_pixels_per_quadrant=0, **psf)
    sim = simulate_frame(tmp_path, "science", seed=31, date_obs=T0, config=cfg)
    with Le1Frame(sim.path) as frame:
        names = frame.quadrant_extnames[::3]
    tot = _score(_hits_of_frame(sim.path, None, names), sim.objects_path)
    assert tot["found"] / tot["truth"] >= 0.95, tot
    assert tot["false"] / tot["detected"] <= 0.03, tot
    assert tot["near_star"] <= 0.01 * tot["detected"], tot


def test_without_guards_or_hot_map_the_detector_is_worse(quiet) -> None:
    """The hot-pixel map matters: without it, hot pixels are counted as hits."""
    hits = _hits_of_frame(quiet["sci"].path, None, quiet["names"][:12])
    tot = _score(hits, quiet["sci"].objects_path)
    assert tot["near_hot"] > 5 * 12


def _frame_counts(sim, every: int = 3) -> dict[str, float]:
    """What the events stage counts on a frame (every `every`-th quadrant): hits classified
    with the frame's own diffusion, confusion weighted by measured area; and the truth."""
    cols = {k: [] for k in ("charge_adu", "var_major_px2", "var_minor_px2", "length_px")}
    confusion = measured = particles = 0.0
    with Le1Frame(sim.path) as frame:
        names = frame.quadrant_extnames[::every]
        for name in names:
            quad = frame.quadrant(name)
            h = detect_hits(_image(quad), gain_e_per_adu=quad.header.gain_e_per_adu)
            for k in cols:
                cols[k].append(h[k])
            area = float(h["image_pixels"] - h["masked_pixels"])
            confusion += h["confusion_fraction"] * area
            measured += area
            particles += particles_from_hits(h["npix"].size, h["touch_probability"])
    c = {k: np.concatenate(v) for k, v in cols.items()}
    diffusion, _ = diffusion_variance(c["var_minor_px2"], c["length_px"])
    kind = classify_hits(
        c["charge_adu"], c["var_major_px2"], c["length_px"], point_variance_limit(diffusion)
    )
    t = pq.read_table(sim.objects_path, columns=["kind", "extname", "charge_adu"]).to_pydict()
    tk, te = np.array(t["kind"]), np.array(t["extname"])
    q = np.array(t["charge_adu"], float)
    here = np.isin(te, names)
    return {
        "candidates": float(np.count_nonzero(kind == "xray")),
        "tracks": float(np.count_nonzero(kind == "cosmic")),
        "protons": float(np.count_nonzero(kind == "proton")),
        "hits": float(kind.size),
        "particles": particles,
        "confusion": confusion / measured,
        "diffusion": diffusion,
        "true_xray": float(np.count_nonzero(here & (tk == "xray"))),
        "true_cosmic": float(np.count_nonzero(here & (tk == "cosmic"))),
        # protons whose deposit lies in VISQL's window (the simulator's +-20 % spread per
        # point puts ~3 % outside it)
        "true_proton": float(np.count_nonzero(here & (tk == "proton") & (q > 1e4) & (q < 4e4))),
    }


#: Cosmic rays of other angle distributions (dN/dOmega ~ cos^n zenith: n = 1 is isotropic
#: radiance, larger n a shielded, more vertical flux), energy spectra (Landau width, alpha
#: share) and sensor thickness than the simulator's default.
EVENT_GRID = {
    "isotropic": {},
    "n2": {"cosmic_zenith_power": 2.0},
    "vertical-n3-broad-landau": {"cosmic_zenith_power": 3.0, "cosmic_landau_width": 0.4},
    "thick-60um-alphas": {"depletion_um": 60.0, "cosmic_alpha_fraction": 0.05},
    "faint-mips": {"cosmic_e_per_um": 40.0, "cosmic_rate_per_cm2_s": 4.0},
}


@pytest.mark.parametrize("label", list(EVENT_GRID))
def test_xray_proton_and_cosmic_counts_over_the_grid(tmp_path, label) -> None:
    """Three quiet darks give the baseline of near-vertical cosmic rays that pass as X-ray
    events; on a fourth quiet dark the net X-ray count is 0 within 3 sigma, on a flare dark
    (X-ray rate x300, protons x150) it is within 15 % of the injected events, and so are the
    protons; the cosmic-ray particles (hits corrected for touching deposits) are within 10 % of
    the injected particles."""
    kw = {**EVENT_GRID[label], "geometry": "small", "hot_pixels_per_quadrant": 0}
    quiet = [
        _frame_counts(
            simulate_frame(tmp_path / f"q{i}", "dark", seed=100 + i, date_obs=T0,
                           config=SimConfig(**kw))
        )
        for i in range(4)
    ]  # fmt: skip
    flare = _frame_counts(
        simulate_frame(
            tmp_path / "f",
            "dark",
            seed=200,
            date_obs=T0,
            config=SimConfig(**kw, xray_rate_multiplier=300.0, proton_rate_multiplier=150.0),
        )
    )
    base = xray_baseline(
        np.array([q["candidates"] for q in quiet[:3]]), np.array([q["tracks"] for q in quiet[:3]])
    )
    assert base is not None and base.n_frames == 3
    q4 = quiet[3]
    net, err, _ = xray_net(q4["candidates"], q4["tracks"], base, q4["confusion"])
    assert net >= 0.0
    assert abs(net - q4["true_xray"]) <= 3.0 * err, (net, err, q4["true_xray"])
    net, err, contamination = xray_net(
        flare["candidates"], flare["tracks"], base, flare["confusion"]
    )
    assert flare["true_xray"] > 1000
    assert net == pytest.approx(flare["true_xray"], rel=0.15), (net, contamination)
    assert flare["protons"] == pytest.approx(flare["true_proton"], rel=0.15)
    for counts in (q4, flare):
        # X-ray events and protons are hits too
        injected = counts["true_cosmic"] + counts["true_xray"]
        assert counts["particles"] == pytest.approx(injected, rel=0.10)
        assert counts["hits"] <= counts["particles"]


def test_no_baseline_no_negative_counts() -> None:
    """Without quiet frames there is no baseline; with one, counts are never negative."""
    assert xray_baseline(np.array([]), np.array([])) is None
    assert xray_baseline(np.array([10.0]), np.array([0.0])) is None
    base = xray_baseline(np.array([100.0, 120.0, 90.0, 5000.0]), np.array([1000.0] * 4))
    assert base.ratio == pytest.approx(0.11)  # the median: a flaring frame does not pull it
    net, err, contamination = xray_net(50.0, 1000.0, base)
    assert net == 0.0 and contamination == pytest.approx(110.0) and err > 0


def test_rates_and_classes() -> None:
    # 1000 hits on 1e6 pixels (1.44 cm2) in 560.52 + 36 s
    assert rate_per_cm2_s(1000, 1e6, 560.52) == pytest.approx(1000 / 1.44 / 596.52)
    c = catalogue_classes(
        np.array([500.0, 2000, 2e4, 500, np.nan]), np.array([0.5, 0.5, 0.5, 1.2, 0.5])
    )
    assert c["xray"].tolist() == [True, False, False, False, False]
    assert c["cosmics"].tolist() == [True, True, False, False, False]
    assert c["protons"].tolist() == [False, False, True, False, False]
    # 10 events in one bin and none elsewhere: the 10th highest bin is 0
    assert top10count(np.zeros(10), np.zeros(10)) == 0.0
    x = np.repeat(np.linspace(-0.3, 0.3, 12), 5)
    assert top10count(x, np.zeros_like(x)) == 5.0
