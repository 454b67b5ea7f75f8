"""LE1 format: names, classification rules, quadrant geometry and the orientation check."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from viskom.le1.classify import classify, load_rules, parse_rules
from viskom.le1.focalplane import nominal_wcs_header, quadrant_image_origin_deg
from viskom.le1.geometry import (
    all_extnames,
    check_geometry,
    parse_extname,
    quadrant_geometry,
    readout_corner,
)
from viskom.le1.names import exposure_name, parse_file_name


def test_three_naming_conventions() -> None:
    a = parse_file_name("EUC_LE1_VIS-02370-1-W_20240701T001045.000000Z_01_01_01.00.fits.gz")
    assert a.convention == "archive"
    assert (a.obs_id, a.dither, a.exposure_index) == (2370, 1, 1)
    assert a.timestamp == datetime(2024, 7, 1, 0, 10, 45, tzinfo=UTC)
    assert a.name == "EUC_LE1_VIS-02370-1-W_20240701T001045.000000Z_01_01_01.00"
    short = parse_file_name("EUC_LE1_VIS-02370-3-W_20240701T003045.000000Z_02_01_01.00.fits")
    assert short.exposure_index == 2 and short.dither == 3
    w = parse_file_name("/data/C_20240713_032840_W_52167482.VIS.bin_01_01.fits")
    assert w.convention == "iws"
    assert w.timestamp == datetime(2024, 7, 13, 3, 28, 40, tzinfo=UTC)
    assert w.exposure_index == 1
    q = parse_file_name("EUC_LE1_VIS-2681-1-D_20240904T123456.123000Z_whatever.fits")
    assert q.convention == "q1" and q.obs_id == 2681
    assert q.timestamp == datetime(2024, 9, 4, 12, 34, 56, 123000, tzinfo=UTC)
    u = parse_file_name("random.fits")
    assert u.convention == "unknown" and u.timestamp is None
    assert exposure_name("x/y/frame.fits.gz") == "frame"
    assert exposure_name("frame.FITS") == "frame"


@pytest.mark.parametrize(
    ("t1", "t2", "exptime", "expected"),
    [
        ("DARK", "OTHER", 560.52, "DARK"),
        ("FLAT", "LAMP", 5.0, "FLAT"),
        ("BIAS", "OTHER", 0.0, "BIAS"),
        ("CHARGE_INJECTION", "OTHER", 0.0, "CHARGE"),
        ("TRAP_PUMPING", "OTHER", 0.0, "CHARGE"),
        ("SURVEY", "WIDE", 560.52, "SCIENCE"),
        ("SELF_CAL", "SKY", 560.52, "SCIENCE"),
        ("STD_STAR", "SKY", 89.52, "SCIENCE"),
        ("OTHER", "OTHER", 560.52, "SCIENCE"),
        ("OTHER", "OTHER", 5.0, "UNKNOWN"),
        ("LINEARITY", "LAMP", 5.0, "UNKNOWN"),
        (None, None, None, "UNKNOWN"),
    ],
)
def test_classification_rules(t1, t2, exptime, expected) -> None:
    header = {"IMG_CAT": "X", "IMG_T1": t1, "IMG_T2": t2, "EXPTIME": exptime}
    result = classify(header)
    assert result.frame_type == expected
    if expected == "UNKNOWN":
        assert "no frame-type rule matches" in result.reason
        assert repr(t1) in result.reason


def test_rules_are_data_and_validated(tmp_path) -> None:
    assert len(load_rules()) >= 6
    custom = tmp_path / "rules.toml"
    custom.write_text('[[rule]]\nframe_type = "FLAT"\ncontains_any = { IMG_T1 = ["LINEARITY"] }\n')
    rules = load_rules(str(custom))
    assert classify({"IMG_T1": "LINEARITY"}, rules).frame_type == "FLAT"
    with pytest.raises(ValueError, match="frame_type"):
        parse_rules({"rule": [{"frame_type": "MOON", "equals": {"A": "B"}}]})
    with pytest.raises(ValueError, match="no condition"):
        parse_rules({"rule": [{"frame_type": "DARK"}]})
    with pytest.raises(ValueError, match="unknown keys"):
        parse_rules({"rule": [{"frame_type": "DARK", "contain": {"A": "B"}}]})


def test_extnames_and_corners() -> None:
    names = all_extnames()
    assert len(names) == 144 and len(set(names)) == 144
    assert parse_extname("3-4.G").ccd == "3-4"
    with pytest.raises(ValueError):
        parse_extname("7-1.E")
    # Columns 1-3: E bottom-left, F bottom-right, G top-right, H top-left; 4-6 rotated 180.
    assert [readout_corner(f"1-2.{q}") for q in "EFGH"] == [
        "bottom-left",
        "bottom-right",
        "top-right",
        "top-left",
    ]
    assert [readout_corner(f"5-5.{q}") for q in "EFGH"] == [
        "top-right",
        "top-left",
        "bottom-left",
        "bottom-right",
    ]


def test_full_quadrant_regions() -> None:
    g = quadrant_geometry("1-1.E", 2128, 2086, 51, 29, 20)
    assert g.image.shape == (2066, 2048)
    assert g.serial_prescan.slices == (slice(0, 2066), slice(0, 51))
    assert g.serial_overscan.slices == (slice(0, 2066), slice(2099, 2128))
    assert g.parallel_overscan.slices == (slice(2066, 2086), slice(51, 2099))
    g = quadrant_geometry("2-5.E", 2128, 2086, 51, 29, 20)  # rotated: readout top-right
    assert g.serial_prescan.slices == (slice(20, 2086), slice(2077, 2128))
    assert g.serial_overscan.slices == (slice(20, 2086), slice(0, 29))
    assert g.parallel_overscan.slices == (slice(0, 20), slice(29, 2077))
    # Regions tile the array exactly, apart from the two corner blocks.
    for name in all_extnames():
        g = quadrant_geometry(name, 2128, 2086, None, None, None)
        covered = np.zeros((2086, 2128), dtype=np.int8)
        for region in g.regions().values():
            covered[region.slices] += 1
        assert covered.max() == 1
        assert covered.sum() == 2128 * 2086 - 20 * (51 + 29)
    with pytest.raises(ValueError, match="no image area"):
        quadrant_geometry("1-1.E", 60, 30, 51, 29, 20)


def test_focal_plane_layout_has_no_overlaps() -> None:
    boxes = []
    for name in all_extnames():
        g = quadrant_geometry(name, 2128, 2086)
        x0, y0 = quadrant_image_origin_deg(g)
        boxes.append((x0, y0, x0 + 2047 / 36000, y0 + 2065 / 36000))
    boxes = np.array(boxes)
    assert boxes[:, 0].min() > -0.36 and boxes[:, 2].max() < 0.36
    assert boxes[:, 1].min() > -0.40 and boxes[:, 3].max() < 0.40
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
            assert not overlap, (all_extnames()[i], all_extnames()[j])


def test_nominal_wcs_maps_image_origin() -> None:
    from astropy.wcs import WCS

    g = quadrant_geometry("4-5.H", 2128, 2086)
    hdr = nominal_wcs_header(g, rotation_deg=0.01)
    w = WCS(hdr)
    x, y = w.all_pix2world([[g.image.col0, g.image.row0]], 0)[0]
    x = (x + 180) % 360 - 180
    exp_x, exp_y = quadrant_image_origin_deg(g)
    # TAN projection at 0.4 deg differs from the plane by < 0.5 px here
    assert abs(x - exp_x) * 36000 < 0.5 and abs(y - exp_y) * 36000 < 0.5


def _synthetic_quadrant(extname: str, sky: float, flipped: bool = False) -> tuple:
    g = quadrant_geometry(extname, 336, 276)
    rng = np.random.default_rng(3)
    data = rng.normal(2700, 1.2, size=(276, 336))
    data[g.image.slices] += sky
    if flipped:
        data = data[:, ::-1]
    return np.round(data).astype(np.uint16), g


@pytest.mark.parametrize("extname", ["1-1.E", "1-1.F", "6-6.G", "3-4.H"])
def test_geometry_check(extname: str) -> None:
    data, g = _synthetic_quadrant(extname, sky=40.0)
    assert check_geometry(data, g).consistent is True
    data, g = _synthetic_quadrant(extname, sky=40.0, flipped=True)
    result = check_geometry(data, g)
    assert result.consistent is False and result.axis == "serial"
    assert result.excess_adu > 30
    data, g = _synthetic_quadrant(extname, sky=0.0, flipped=True)  # a bias: cannot tell
    assert check_geometry(data, g).consistent is None


def test_wcs_round_trip_and_locate() -> None:
    from viskom.le1.wcs import QuadrantWcs, locate

    wcs, geoms = {}, {}
    for name in ("1-1.E", "3-4.G", "6-6.H"):
        g = quadrant_geometry(name, 336, 276)
        wcs[name] = QuadrantWcs.from_header(nominal_wcs_header(g, rotation_deg=0.015), name)
        geoms[name] = g
    g = geoms["3-4.G"]
    x = np.array([g.image.col0 + 3.2, g.image.col1 - 7.7])
    y = np.array([g.image.row0 + 10.0, g.image.row1 - 1.0])
    X, Y = wcs["3-4.G"].pixel_to_instrument(x, y)
    assert np.all(np.abs(X) < 0.4) and np.all(np.abs(Y) < 0.4)
    x2, y2 = wcs["3-4.G"].instrument_to_pixel(X, Y)
    assert np.allclose(x2, x, atol=1e-6) and np.allclose(y2, y, atol=1e-6)
    ext, px, py = locate(np.append(X, 0.9), np.append(Y, 0.0), wcs, geoms)
    assert list(ext) == ["3-4.G", "3-4.G", ""]
    assert np.allclose(px[:2], x, atol=1e-6) and np.isnan(px[2])
    assert np.allclose(py[:2], y, atol=1e-6)
    corners = wcs["1-1.E"].image_footprint(geoms["1-1.E"])
    assert corners.shape == (4, 2) and corners[:, 0].max() < -0.3
    with pytest.raises(ValueError, match="no CRPIX"):
        QuadrantWcs.from_header({"EXTNAME": "1-1.E"})


def test_sky_to_instrument_against_astropy_offset_frame() -> None:
    """The simulator places stars and the gaia stage projects Gaia with the same
    `sky_to_instrument`, so a shared bug would cancel: check it against astropy's own offset
    frame (rotation PA + 90 deg; VISQL's X is minus its longitude, Y its latitude), over
    pointings near the poles, the RA wrap and the equator."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord, SkyOffsetFrame

    from viskom.le1.focalplane import sky_to_instrument

    rng = np.random.default_rng(5)
    for ra0, dec0, pa in ((56.25, -55.7, 46.2), (359.9, 0.3, 250.0), (120.0, 88.9, -30.0)):
        dx, dy = rng.uniform(-0.5, 0.5, (2, 200))
        pointing = SkyCoord(ra0 * u.deg, dec0 * u.deg)
        stars = pointing.directional_offset_by(np.arctan2(dx, dy) * u.rad, np.hypot(dx, dy) * u.deg)
        x, y = sky_to_instrument(stars.ra.deg, stars.dec.deg, ra0, dec0, pa, distortion=False)
        frame = SkyOffsetFrame(origin=pointing, rotation=(pa + 90.0) * u.deg)
        off = stars.transform_to(frame)
        np.testing.assert_allclose(x, -off.lon.wrap_at(180 * u.deg).deg, atol=1e-9)
        np.testing.assert_allclose(y, off.lat.deg, atol=1e-9)


def test_visql_distortion_is_the_spec_formula() -> None:
    """VISQL-SPEC 8.3's empirical distortion, transcribed here on its own (the second line
    uses the updated RAV)."""
    from viskom.le1.focalplane import apply_visql_distortion

    rav, decv = np.meshgrid(np.linspace(-0.4, 0.4, 9), np.linspace(-0.4, 0.4, 9))
    x, y = apply_visql_distortion(rav, decv)
    rav2 = rav + (rav - 0.05) ** 2 * 550 / 36000 + (decv + 0.05) ** 2 * 200 / 36000
    decv2 = decv - decv * 450 / 36000 + decv * rav2 * 350 / 36000
    np.testing.assert_allclose(x, rav2, atol=1e-12)
    np.testing.assert_allclose(y, decv2, atol=1e-12)
