"""Tests of the LE1 VIS frame simulator (small geometry only; a few seconds in total)."""

from __future__ import annotations

import json
import re
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from viskom.le1.geometry import all_extnames, quadrant_geometry
from viskom.sources.simulator import (
    DEFECTS,
    FRAME_KINDS,
    SimConfig,
    gaia_like_catalogue,
    read_gaia_catalogue,
    simulate_frame,
    simulate_set,
    write_gaia_catalogue,
)
from viskom.sources.simulator.catalogue import cone_area_deg2
from viskom.sources.simulator.events import mean_rate_multiplier
from viskom.sources.simulator.psf import PsfModel, render_psf, weighted_moments

T0 = datetime(2024, 7, 13, 3, 28, 40, tzinfo=UTC)
ARCHIVE_RE = re.compile(
    r"^EUC_LE1_VIS-\d{5}-\d-W_\d{8}T\d{6}\.\d{6}Z_\d{2}_01_01\.00\.fits(\.gz)?$"
)
IWS_RE = re.compile(r"^C_\d{8}_\d{6}_W_[0-9A-F]{8}\.VIS\.bin_\d{2}_01\.fits(\.gz)?$")
PRIMARY_KEYS = (
    "DATE-OBS", "MJD-OBS", "DATE-END", "EXPTIME", "OBS_ID", "DITHOBS", "PTGID", "EXPNUM",
    "FIELDID", "PLAN_ID", "OBSMODE", "IMG_CAT", "IMG_T1", "IMG_T2", "CI_STAT", "TP_STAT",
    "CUSTATUS", "CALBLKID", "CALBLKVR", "RA", "DEC", "PA", "SAA", "ALPHA", "TELESCOP",
    "INSTRUME", "ORIGIN", "SIMULATE", "SIMSEED",
)  # fmt: skip
EXT_KEYS = (
    "EXTNAME", "CCDID", "QUADID", "DETID", "ROEID", "PRESCANX", "OVRSCANX", "OVRSCANY", "GAIN",
    "RDNOISE", "SATURATE", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1",
    "CD2_2", "CTYPE1", "CTYPE2",
)  # fmt: skip
TRUTH_QUADRANT_KEYS = (
    "gain_e_per_adu", "relative_gain", "read_noise_e", "read_noise_adu",
    "read_noise_digitised_adu", "bias_prescan_adu", "bias_overscan_adu",
    "bias_parallel_overscan_adu", "bias_image_adu", "dark_current_e_per_s", "sky_e_per_s",
    "flat_level_e", "flat_nonuniformity", "ci_level_adu", "n_hot_pixels", "n_cosmic_rays",
    "cosmic_pixel_fraction", "n_xray_events", "n_proton_events", "n_stars", "n_galaxies",
    "n_saturated_pixels",
)  # fmt: skip
VISQL_TYPE_SUBSTRINGS = ("DARK", "FLAT", "BIAS", "CHARGE", "TRAP", "SURV", "SELF_CAL", "STD")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """One frame of each kind (small geometry), made once for the module."""
    out = tmp_path_factory.mktemp("sim")
    made = {}
    for i, kind in enumerate(FRAME_KINDS):
        made[kind] = simulate_frame(
            out, kind, seed=100 + i, date_obs=T0 + timedelta(hours=i), exposure_index=1
        )
    return made


def _truth(frame) -> dict:
    return json.loads(Path(frame.truth_path).read_text())


def _objects(frame) -> dict:
    return pq.read_table(frame.objects_path).to_pydict()


# ---------------------------------------------------------------------------------------------
def test_config_defaults():
    cfg = SimConfig()
    assert cfg.geometry == "small" and cfg.naming == "archive" and cfg.gzip is False
    assert cfg.effective_star_density_factor == 20.0
    assert SimConfig(geometry="full").effective_star_density_factor == 1.0
    assert set(FRAME_KINDS) == {"science", "dark", "bias", "flat", "charge"}
    assert set(DEFECTS) == {
        "truncated", "missing-extensions", "unknown-type", "flipped-geometry", "not-fits",
    }  # fmt: skip
    with pytest.raises(ValueError):
        SimConfig(geometry="huge").validate()


@pytest.mark.parametrize("kind", FRAME_KINDS)
def test_file_structure_and_headers(frames, kind):
    frame = frames[kind]
    assert ARCHIVE_RE.match(frame.path.name), frame.path.name
    assert frame.name == frame.path.name[: -len(".fits")]
    assert frame.truth_path.name == frame.name + ".truth.json"
    truth = _truth(frame)
    with fits.open(frame.path) as hdul:
        hdul.verify("exception")
        assert len(hdul) == 145
        primary = hdul[0].header
        for key in PRIMARY_KEYS:
            assert key in primary, key
        assert primary["SIMULATE"] is True
        assert primary["TELESCOP"] == "EUCLID" and primary["INSTRUME"] == "VIS"
        assert primary["EXPTIME"] == pytest.approx(truth["exptime"])
        expected = {
            "science": ("SCIENCE", "SURVEY", "WIDE", 560.52),
            "dark": ("CALIB", "DARK", "OTHER", 560.52),
            "bias": ("CALIB", "BIAS", "OTHER", 0.0),
            "flat": ("CALIB", "FLAT", "LAMP", 5.0),
            "charge": ("CALIB", "CHARGE_INJECTION", "OTHER", 0.0),
        }[kind]
        assert (primary["IMG_CAT"], primary["IMG_T1"], primary["IMG_T2"]) == expected[:3]
        assert primary["EXPTIME"] == pytest.approx(expected[3])
        assert primary["CI_STAT"] == ("ON" if kind == "charge" else "OFF")
        if kind == "flat":
            assert primary["CUSTATUS"].startswith("LED")
        names = [h.header["EXTNAME"] for h in hdul[1:]]
        assert sorted(names) == sorted(all_extnames())
        assert names != all_extnames()  # shuffled order
        assert names == truth["extension_order"]
        for hdu in hdul[1:4]:
            h = hdu.header
            for key in EXT_KEYS:
                assert key in h, key
            assert h["BITPIX"] == 16 and h["BZERO"] == 32768 and h["BSCALE"] == 1
            assert (h["NAXIS1"], h["NAXIS2"]) == (336, 276)
            assert (h["PRESCANX"], h["OVRSCANX"], h["OVRSCANY"]) == (51, 29, 20)
            assert hdu.data.dtype == np.uint16
            tq = truth["quadrants"][h["EXTNAME"]]
            assert h["GAIN"] == pytest.approx(tq["gain_e_per_adu"], rel=1e-4)
            assert h["CCDID"] == h["EXTNAME"].split(".")[0]
            assert 0 <= h["DETID"] <= 35
            rot = np.degrees(np.arctan2(h["CD2_1"], h["CD1_1"]))
            assert abs(rot) < 0.02
    for key in (
        "name", "kind", "geometry", "seed", "exptime", "date_obs", "defect", "missing_extensions",
        "flipped_quadrants", "pointing", "pointing_error_pix", "photometry", "psf",
        "gaia_catalogue", "quadrants",
    ):  # fmt: skip
        assert key in truth, key
    assert set(truth["quadrants"]) == set(all_extnames())
    for tq in truth["quadrants"].values():
        for key in TRUTH_QUADRANT_KEYS:
            assert key in tq, key
        assert tq["read_noise_digitised_adu"] == pytest.approx(
            np.sqrt(tq["read_noise_adu"] ** 2 + 1 / 12)
        )
        assert 3.2 <= tq["gain_e_per_adu"] <= 3.6 and 3.9 <= tq["read_noise_e"] <= 4.4
        assert 2600 <= tq["bias_prescan_adu"] <= 2800


@pytest.mark.parametrize("kind", ["science", "bias", "flat"])
def test_bias_regions_match_truth(frames, kind):
    """Prescan/overscan means within 0.2 ADU of the truth, noise within 3 %."""
    frame = frames[kind]
    truth = _truth(frame)
    par_ratios = []
    with fits.open(frame.path) as hdul:
        for hdu in hdul[1:]:
            h = hdu.header
            tq = truth["quadrants"][h["EXTNAME"]]
            geom = quadrant_geometry(
                h["EXTNAME"], h["NAXIS1"], h["NAXIS2"], h["PRESCANX"], h["OVRSCANX"],
                h["OVRSCANY"],
            )  # fmt: skip
            data = hdu.data.astype(np.float64)
            noise = tq["read_noise_digitised_adu"]
            for region, key in (
                (geom.serial_prescan, "bias_prescan_adu"),
                (geom.serial_overscan, "bias_overscan_adu"),
                (geom.parallel_overscan, "bias_parallel_overscan_adu"),
            ):
                values = data[region.slices]
                assert abs(values.mean() - tq[key]) < 0.2, (h["EXTNAME"], key)
                # Only bias and read noise: nothing beyond 7 sigma (no photons, no cosmics).
                assert np.abs(values - tq[key]).max() < 7 * noise + 2.5, (h["EXTNAME"], key)
            for region in (geom.serial_prescan, geom.serial_overscan):
                assert data[region.slices].std() == pytest.approx(noise, rel=0.03)
            # The parallel overscan spans the serial gradient: remove column means first.
            par = data[geom.parallel_overscan.slices]
            n = par.shape[0]
            resid = par - par.mean(axis=0, keepdims=True)
            par_ratios.append(np.sqrt(resid.var() * n / (n - 1)) / noise)
    assert np.median(par_ratios) == pytest.approx(1.0, abs=0.03)


def test_science_stars_visible_at_truth_positions(frames):
    frame = frames["science"]
    truth = _truth(frame)
    obj = _objects(frame)
    kinds = np.array(obj["kind"])
    stars = np.flatnonzero(kinds == "star")
    assert sum(q["n_stars"] for q in truth["quadrants"].values()) == stars.size
    assert stars.size > 300
    assert truth["star_density_factor"] == 20.0
    assert (Path(frame.path).parent / truth["gaia_catalogue"]).exists()
    checked = found = 0
    with fits.open(frame.path) as hdul:
        for i in stars:
            if obj["flux_adu"][i] < 3000:
                continue
            ext = obj["extname"][i]
            data = hdul[ext].data.astype(np.float64)
            tq = truth["quadrants"][ext]
            x, y = obj["x"][i], obj["y"][i]
            ix, iy = round(x), round(y)
            geom = quadrant_geometry(ext, 336, 276)
            img = geom.image
            if not (img.col0 + 3 <= ix < img.col1 - 3 and img.row0 + 3 <= iy < img.row1 - 3):
                continue
            background = tq["bias_image_adu"] + tq["sky_e_per_s"] * 560.52 / tq["gain_e_per_adu"]
            sigma = np.sqrt(tq["read_noise_adu"] ** 2 + 80.0 / tq["gain_e_per_adu"])
            checked += 1
            found += data[iy - 1 : iy + 2, ix - 1 : ix + 2].max() > background + 10 * sigma
    assert checked > 100
    assert found / checked > 0.97
    # PSF truth: VISQL-like R2 and small ellipticities.
    r2 = np.array(obj["true_r2"], dtype=float)[stars]
    e1 = np.array(obj["true_e1"], dtype=float)[stars]
    e2 = np.array(obj["true_e2"], dtype=float)[stars]
    assert np.median(r2) == pytest.approx(1.95, abs=0.04)
    assert r2.min() > 1.85 and r2.max() < 2.1
    assert np.hypot(e1, e2).max() < 0.07
    assert -0.035 < np.median(e1) < -0.005


def test_sky_level_and_star_moments_match_truth(frames):
    """Bright isolated stars measured with VISQL's moments agree with the truth."""
    frame = frames["science"]
    truth = _truth(frame)
    obj = _objects(frame)
    kinds = np.array(obj["kind"])
    stars = np.flatnonzero(kinds == "star")
    dr2, de1 = [], []
    sky_ratio = []
    with fits.open(frame.path) as hdul:
        for hdu in hdul[1:]:
            ext = hdu.header["EXTNAME"]
            tq = truth["quadrants"][ext]
            geom = quadrant_geometry(ext, 336, 276)
            img = hdu.data[geom.image.slices].astype(np.float64) - tq["bias_image_adu"]
            sky_adu = tq["sky_e_per_s"] * 560.52 / tq["gain_e_per_adu"]
            sky_ratio.append(np.median(img) / sky_adu)
        for i in stars:
            if not 3e4 < obj["flux_adu"][i] < 1.5e5:
                continue
            ext = obj["extname"][i]
            data = hdul[ext].data.astype(np.float64)
            ix, iy = round(obj["x"][i]), round(obj["y"][i])
            geom = quadrant_geometry(ext, 336, 276)
            img = geom.image
            if not (img.col0 + 14 <= ix < img.col1 - 15 and img.row0 + 14 <= iy < img.row1 - 15):
                continue
            stamp = data[iy - 14 : iy + 15, ix - 14 : ix + 15] - np.median(data[img.slices])
            r2, e1, _, _, _ = weighted_moments(stamp[None])
            dr2.append(r2[0] - obj["true_r2"][i])
            de1.append(e1[0] - obj["true_e1"][i])
    assert np.median(sky_ratio) == pytest.approx(1.0, abs=0.05)
    assert len(dr2) > 20
    assert abs(np.median(dr2)) < 0.03
    assert abs(np.median(de1)) < 0.005


def test_psf_truth_is_the_visql_moment_of_the_model():
    cfg = SimConfig()
    psf = PsfModel.from_config(cfg)
    alpha, g1, g2 = psf.params_at(np.array([0.0, 0.3]), np.array([0.0, -0.2]))
    stamps = render_psf(np.array([0.1, -0.3]), np.array([0.2, 0.4]), alpha, g1, g2, psf.beta, 15)
    assert stamps.sum(axis=(1, 2)) == pytest.approx(1.0, abs=0.003)
    r2, e1, _, xc, yc = weighted_moments(stamps)
    assert r2[0] == pytest.approx(1.95, abs=0.01)
    assert xc == pytest.approx([0.1, -0.3], abs=0.02) and yc == pytest.approx([0.2, 0.4], abs=0.02)
    assert e1[1] != pytest.approx(e1[0], abs=1e-4)  # the pattern varies across the field


@pytest.mark.parametrize("kind", ["science", "dark"])
def test_cosmic_rays(frames, kind):
    frame = frames[kind]
    truth = _truth(frame)
    quads = truth["quadrants"].values()
    fractions = [q["cosmic_pixel_fraction"] for q in quads]
    assert 0.005 < np.mean(fractions) < 0.04
    obj = _objects(frame)
    kinds = np.array(obj["kind"])
    cosmic = kinds == "cosmic"
    assert cosmic.sum() == sum(q["n_cosmic_rays"] for q in quads)
    assert (kinds == "xray").sum() == sum(q["n_xray_events"] for q in quads)
    assert (kinds == "proton").sum() == sum(q["n_proton_events"] for q in quads)
    assert (kinds == "hot").sum() == sum(q["n_hot_pixels"] for q in quads)
    length = np.array(obj["length_px"], dtype=float)[cosmic]
    npix = np.array(obj["npix"], dtype=float)[cosmic]
    charge = np.array(obj["charge_adu"], dtype=float)[cosmic]
    assert 1.0 < np.median(length) < 10.0 and np.percentile(length, 99) > 15
    assert 2 <= np.median(npix) <= 15
    assert 400 < np.median(charge) < 3000
    # Bright hits are visible in the data at their centroid.
    with fits.open(frame.path) as hdul:
        idx = np.flatnonzero(cosmic & (np.array(obj["charge_adu"], dtype=float) > 1000))[:50]
        for i in idx:
            ext = obj["extname"][i]
            tq = truth["quadrants"][ext]
            data = hdul[ext].data.astype(np.float64)
            ix, iy = round(obj["x"][i]), round(obj["y"][i])
            patch = data[max(iy - 2, 0) : iy + 3, max(ix - 2, 0) : ix + 3]
            assert patch.max() > tq["bias_image_adu"] + 50


def test_flat_and_charge_injection_levels(frames):
    flat_truth = _truth(frames["flat"])
    with fits.open(frames["flat"].path) as hdul:
        for ext in ("1-1.E", "3-4.G", "6-6.H"):
            tq = flat_truth["quadrants"][ext]
            geom = quadrant_geometry(ext, 336, 276)
            img = hdul[ext].data[geom.image.slices].astype(np.float64) - tq["bias_image_adu"]
            level_e = np.median(img) * tq["gain_e_per_adu"]
            assert level_e == pytest.approx(tq["flat_level_e"], rel=0.01)
            assert 15_000 < tq["flat_level_e"] < 45_000
            assert 0.005 < tq["flat_nonuniformity"] < 0.02
    ci_truth = _truth(frames["charge"])
    with fits.open(frames["charge"].path) as hdul:
        for ext in ("1-1.E", "4-5.G"):
            tq = ci_truth["quadrants"][ext]
            geom = quadrant_geometry(ext, 336, 276)
            img = hdul[ext].data[geom.image.slices].astype(np.float64) - tq["bias_image_adu"]
            rows = np.median(img, axis=1)
            injected = rows > 0.5 * tq["ci_level_adu"]
            assert 4 <= injected.sum() <= 20
            assert np.median(rows[injected]) == pytest.approx(tq["ci_level_adu"], rel=0.01)
            assert 5000 <= tq["ci_level_adu"] <= 15500
            assert np.median(rows[~injected]) < 50


def test_determinism(frames, tmp_path):
    ref = frames["science"]
    again = simulate_frame(tmp_path, "science", seed=100, date_obs=T0, exposure_index=1)
    assert again.path.name == ref.path.name
    assert again.path.read_bytes() == ref.path.read_bytes()
    assert again.truth_path.read_bytes() == ref.truth_path.read_bytes()
    assert again.objects_path.read_bytes() == ref.objects_path.read_bytes()
    other = simulate_frame(tmp_path / "b", "science", seed=101, date_obs=T0)
    assert other.path.read_bytes() != ref.path.read_bytes()


def test_gzip_and_iws_naming(tmp_path):
    cfg = SimConfig(gzip=True, naming="iws")
    a = simulate_frame(tmp_path / "a", "bias", seed=7, date_obs=T0, config=cfg)
    b = simulate_frame(tmp_path / "b", "bias", seed=7, date_obs=T0, config=cfg)
    assert IWS_RE.match(a.path.name), a.path.name
    assert a.truth_path.name == a.path.name[: -len(".fits.gz")] + ".truth.json"
    assert a.path.read_bytes() == b.path.read_bytes()
    with fits.open(a.path) as hdul:
        hdul.verify("exception")
        assert len(hdul) == 145
        assert hdul["2-3.F"].data.dtype == np.uint16
        assert hdul[0].header["IMG_T1"] == "BIAS"


def test_defects(tmp_path):
    made = {
        d: simulate_frame(
            tmp_path, "flat", seed=40 + i, date_obs=T0 + timedelta(minutes=10 * i), defect=d
        )
        for i, d in enumerate(DEFECTS)
    }
    # truncated: cut in the data of a late extension.
    frame = made["truncated"]
    truth = _truth(frame)
    size = frame.path.stat().st_size
    assert size % 2880 != 0 and size == truth["truncated_at_byte"]
    assert truth["truncated_extension"] in truth["extension_order"][-4:]
    with pytest.raises(Exception), warnings.catch_warnings():  # noqa: B017
        warnings.simplefilter("ignore")
        with fits.open(frame.path) as hdul:
            for hdu in hdul:
                _ = hdu.data
            hdul.verify("exception")
            assert len(hdul) == 145
    # missing-extensions
    frame = made["missing-extensions"]
    truth = _truth(frame)
    assert len(truth["missing_extensions"]) == 3
    with fits.open(frame.path) as hdul:
        names = {h.header["EXTNAME"] for h in hdul[1:]}
    assert len(names) == 141
    assert names | set(truth["missing_extensions"]) == set(all_extnames())
    assert set(truth["quadrants"]) == names
    # unknown-type: no VISQL classification rule can match.
    frame = made["unknown-type"]
    header = fits.getheader(frame.path)
    assert (header["IMG_CAT"], header["IMG_T1"], header["IMG_T2"]) == (
        "TECHNICAL", "MYSTERY_MODE", "TEST",
    )  # fmt: skip
    assert not any(s in header["IMG_T1"] + header["IMG_T2"] for s in VISQL_TYPE_SUBSTRINGS)
    # flipped-geometry: illuminated columns where the header puts the prescan.
    frame = made["flipped-geometry"]
    truth = _truth(frame)
    flipped = set(truth["flipped_quadrants"])
    assert len(flipped) == 3
    with fits.open(frame.path) as hdul:
        for hdu in hdul[1:]:
            ext = hdu.header["EXTNAME"]
            geom = quadrant_geometry(ext, hdu.header["NAXIS1"], hdu.header["NAXIS2"])
            columns = np.median(hdu.data[geom.serial_prescan.slices], axis=0)
            lit = columns.max() > truth["quadrants"][ext]["bias_image_adu"] + 1000
            assert lit == (ext in flipped), ext
    # not-fits
    frame = made["not-fits"]
    assert frame.path.suffix == ".fits" and frame.objects_path is None
    with pytest.raises(OSError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits.open(frame.path)
    assert _truth(frame)["defect"] == "not-fits"


def test_simulate_set_cadence_and_seeds(tmp_path):
    frames = simulate_set(tmp_path, "dark", 2, seed=5, start=T0)
    assert len(frames) == 2 and len({f.name for f in frames}) == 2
    t = [json.loads(f.truth_path.read_text()) for f in frames]
    d0, d1 = (datetime.fromisoformat(x["date_obs"]) for x in t)
    assert (d1 - d0).total_seconds() == pytest.approx(560.52 + 72.0)
    assert t[0]["seed"] != t[1]["seed"]
    with fits.open(frames[0].path) as a, fits.open(frames[1].path) as b:
        assert not np.array_equal(a["1-1.E"].data, b["1-1.E"].data)
        # Detector properties persist from frame to frame.
        assert a["1-1.E"].header["GAIN"] == b["1-1.E"].header["GAIN"]
    hot0 = t[0]["quadrants"]["1-1.E"]["n_hot_pixels"]
    assert hot0 == t[1]["quadrants"]["1-1.E"]["n_hot_pixels"] > 0


def test_xray_flare_multiplier(tmp_path):
    start = T0
    assert mean_rate_multiplier(3.0, start, 100.0) == 3.0
    assert mean_rate_multiplier(lambda t: 2.0, start, 100.0) == pytest.approx(2.0)
    table = ([start, start + timedelta(seconds=100)], [0.0, 10.0])
    assert mean_rate_multiplier(table, start, 100.0) == pytest.approx(5.0)
    quiet = simulate_frame(tmp_path / "q", "dark", seed=3, date_obs=start)
    flare = simulate_frame(
        tmp_path / "f", "dark", seed=3, date_obs=start,
        config=SimConfig(xray_rate_multiplier=lambda t: 300.0),
    )  # fmt: skip
    n_quiet = sum(q["n_xray_events"] for q in _truth(quiet)["quadrants"].values())
    n_flare = sum(q["n_xray_events"] for q in _truth(flare)["quadrants"].values())
    expected = 0.002 * 300.0 * 144 * (256 * 256 * 0.0012**2) * (560.52 + 36.0)
    assert n_flare == pytest.approx(expected, rel=0.15)
    assert n_quiet < n_flare / 20
    xray = [i for i, k in enumerate(_objects(flare)["kind"]) if k == "xray"]
    charge = np.array(_objects(flare)["charge_adu"], dtype=float)[xray]
    # Landed charge: events at the image edge lose part of theirs.
    assert np.percentile(charge, 2) > 390 and charge.max() <= 1200.5


def test_gaia_like_catalogue(tmp_path):
    table = gaia_like_catalogue(56.25, -55.7, 0.6, seed=1)
    for col in (
        "Source", "RA_ICRS", "DE_ICRS", "pmRA", "pmDE", "Plx", "Gmag", "e_Gmag", "FG", "e_FG",
        "BPmag", "RPmag", "BP-RP", "RUWE",
    ):  # fmt: skip
        assert col in table.colnames, col
    assert 3000 <= len(table) <= 6000
    assert table["Source"].dtype == np.int64 and len(set(table["Source"])) == len(table)
    g = np.asarray(table["Gmag"])
    assert g.max() < 21.0 and np.sum(g < 18) < np.sum(g > 18)
    assert 0.9 < np.median(table["BP-RP"]) < 1.8
    sep = np.degrees(
        np.arccos(
            np.sin(np.radians(-55.7)) * np.sin(np.radians(table["DE_ICRS"]))
            + np.cos(np.radians(-55.7)) * np.cos(np.radians(table["DE_ICRS"]))
            * np.cos(np.radians(np.asarray(table["RA_ICRS"]) - 56.25))
        )
    )  # fmt: skip
    assert sep.max() <= 0.6 + 1e-9
    assert len(gaia_like_catalogue(56.25, -55.7, 0.6, seed=1, density_factor=3.0)) > 2.5 * len(
        table
    )
    assert len(table) / cone_area_deg2(0.6) == pytest.approx(4300, rel=0.15)
    path = write_gaia_catalogue(table, tmp_path / "g.parquet")
    back = read_gaia_catalogue(path)
    assert back.colnames == table.colnames and len(back) == len(table)
    assert back.meta["ra0"] == 56.25
    assert np.array_equal(np.asarray(back["Source"]), np.asarray(table["Source"]))
