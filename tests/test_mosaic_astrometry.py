"""Blind astrometry of the mosaic (VISQL's getastrom): `solve_image`, `solution_offsets` and
the `mosaic_astrometry` stage.

The pictures are synthetic mosaics: Gaia-like stars drawn at 2.5 arcsec per pixel through a
WCS made here with astropy (the truth), noise added. The solution is checked against that
WCS, and the stage's offsets against an error put into the picture's header on purpose.
The solving tests need Debian's astrometry.net (required in CI).
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from viskom.config import Settings
from viskom.le1.frame import Le1Frame
from viskom.measure.mosaic_astrometry import parity_of, solution_offsets
from viskom.pipeline.worker import run_one
from viskom.sources import astrometry_net as an
from viskom.sources.astrometry_net.image import solve_image
from viskom.sources.gaia_tiles import GaiaCache
from viskom.sources.simulator import SimConfig, gaia_like_catalogue, simulate_frame
from viskom.stages import ExposureInfo
from viskom.stages.mosaic_astrometry import MosaicAstrometry

TOOLS_MISSING = an.tools_available()
if TOOLS_MISSING and os.environ.get("VISKOM_REQUIRE_ASTROMETRY_NET"):
    raise RuntimeError(f"VISKOM_REQUIRE_ASTROMETRY_NET is set but {TOOLS_MISSING}")
needs_tools = pytest.mark.skipif(TOOLS_MISSING is not None, reason=str(TOOLS_MISSING))

SCALE = 2.5  # arcsec per mosaic pixel (25 VIS pixels of 0.1 arcsec)
SIZE = 1000
T0 = datetime(2024, 7, 13, 4, 0, 0, tzinfo=UTC)


def tan_wcs(ra: float, dec: float, rot_deg: float, *, flip: bool = False) -> WCS:
    """A TAN WCS of a SIZE x SIZE picture centred on (ra, dec), turned by rot_deg."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(SIZE + 1) / 2, (SIZE + 1) / 2]
    t, s = math.radians(rot_deg), SCALE / 3600.0
    cd = np.array([[-s * math.cos(t), s * math.sin(t)], [s * math.sin(t), s * math.cos(t)]])
    w.wcs.cd = cd @ np.diag([-1.0, 1.0]) if flip else cd
    return w


def draw(table, truth: WCS, *, seed: int) -> np.ndarray:
    """The Gaia stars as a binned mosaic sees them: a bin's mean, bilinear, with noise."""
    rng = np.random.default_rng(seed)
    x, y = truth.all_world2pix(table["RA_ICRS"], table["DE_ICRS"], 0)
    g = np.asarray(table["Gmag"], float)
    image = rng.normal(0.0, 2.0, (SIZE, SIZE)).astype(np.float32)
    ok = (x > 1) & (x < SIZE - 2) & (y > 1) & (y < SIZE - 2)
    flux = 10 ** (-0.4 * (g[ok] - 29.0)) / 625.0  # 625 VIS pixels per bin
    x0, y0 = np.floor(x[ok]).astype(int), np.floor(y[ok]).astype(int)
    fx, fy = x[ok] - x0, y[ok] - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                      (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):  # fmt: skip
        np.add.at(image, (y0 + dy, x0 + dx), (flux * w).astype(np.float32))
    return image


def picture(path, table, truth: WCS, header_wcs: WCS, *, seed: int = 1) -> None:
    header = header_wcs.to_header()
    header["COMPACT"] = False
    fits.PrimaryHDU(draw(table, truth, seed=seed), header=header).writeto(path)


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> dict:
    """A Gaia-like cone and its index files."""
    if TOOLS_MISSING is not None:
        pytest.skip(str(TOOLS_MISSING))
    ra, dec = 150.3, 2.1
    table = gaia_like_catalogue(ra, dec, 0.7, seed=5)
    folder = tmp_path_factory.mktemp("index")
    gaia = (np.asarray(table["RA_ICRS"]), np.asarray(table["DE_ICRS"]), np.asarray(table["Gmag"]))
    return {"table": table, "ra": ra, "dec": dec, "index": an.build_index(gaia, folder)}


def _grid_offsets_arcsec(a: WCS, b: WCS) -> np.ndarray:
    gx, gy = np.meshgrid(np.linspace(0, SIZE - 1, 7), np.linspace(0, SIZE - 1, 7))
    ra1, dec1 = a.all_pix2world(gx.ravel(), gy.ravel(), 0)
    ra2, dec2 = b.all_pix2world(gx.ravel(), gy.ravel(), 0)
    dra = (ra1 - ra2) * np.cos(np.radians(dec2)) * 3600.0
    return np.hypot(dra, (dec1 - dec2) * 3600.0)


@needs_tools
@pytest.mark.parametrize(("rot", "flip"), [(23.0, False), (200.0, False), (-70.0, True)])
def test_solve_image_recovers_the_drawn_wcs(field, tmp_path, rot, flip) -> None:
    truth = tan_wcs(field["ra"] + 0.03, field["dec"] - 0.02, rot, flip=flip)
    path = tmp_path / "mosaic.fits"
    picture(path, field["table"], truth, truth)
    solution = solve_image(
        path, field["index"], scale_arcsec=SCALE, parity=parity_of(truth.wcs.cd),
        ra_hint=field["ra"], dec_hint=field["dec"], radius_hint_deg=0.7, timeout_s=60,
    )  # fmt: skip
    assert solution is not None
    # stars are drawn bilinearly to 0.1 px: the solution is within half a pixel everywhere
    assert _grid_offsets_arcsec(solution.wcs(), truth).max() < 0.5 * SCALE
    assert solution.n_matched >= 30
    assert solution.rms_arcsec < 0.5 * SCALE
    assert (solution.width, solution.height) == (SIZE, SIZE)


@needs_tools
def test_the_header_wcs_is_not_taken_for_the_answer(field, tmp_path) -> None:
    """The picture's own (wrong) WCS must not be verified and returned (--no-verify)."""
    truth = tan_wcs(field["ra"], field["dec"], 10.0)
    wrong = tan_wcs(field["ra"], field["dec"] + 20 / 3600, 10.0)
    path = tmp_path / "mosaic.fits"
    picture(path, field["table"], truth, wrong)
    solution = solve_image(path, field["index"], scale_arcsec=SCALE, parity="pos",
                           ra_hint=field["ra"], dec_hint=field["dec"])  # fmt: skip
    assert solution is not None
    assert _grid_offsets_arcsec(solution.wcs(), truth).max() < 0.5 * SCALE


@needs_tools
def test_noise_only_is_not_solved(field, tmp_path, caplog) -> None:
    path = tmp_path / "noise.fits"
    noise = np.random.default_rng(3).normal(0, 2, (SIZE, SIZE)).astype(np.float32)
    fits.PrimaryHDU(noise).writeto(path)
    solution = solve_image(path, field["index"], scale_arcsec=SCALE, ra_hint=field["ra"],
                           dec_hint=field["dec"], timeout_s=20)  # fmt: skip
    assert solution is None
    assert "not solved" in caplog.text


def test_bad_input_is_refused(tmp_path) -> None:
    if TOOLS_MISSING is not None:
        pytest.skip(str(TOOLS_MISSING))
    with pytest.raises(ValueError, match="no picture"):
        solve_image(tmp_path / "none.fits", [tmp_path / "i.fits"], scale_arcsec=SCALE)
    path = tmp_path / "p.fits"
    fits.PrimaryHDU(np.zeros((10, 10), np.float32)).writeto(path)
    with pytest.raises(ValueError, match="index file"):
        solve_image(path, [tmp_path / "i.fits"], scale_arcsec=SCALE)
    with pytest.raises(ValueError, match="parity"):
        solve_image(path, [path], scale_arcsec=SCALE, parity="up")


@pytest.mark.parametrize("flip", [False, True])
def test_solution_offsets_of_known_differences(flip) -> None:
    """A shift of (+12, -7) arcsec, a 0.25 deg turn and a 1 % scale change come back."""
    ra, dec = 56.2, -55.7
    expected = tan_wcs(ra, dec, 30.0, flip=flip)
    shifted = tan_wcs(ra + 12 / 3600 / math.cos(math.radians(dec)), dec - 7 / 3600, 30.25,
                      flip=flip)  # fmt: skip
    shifted.wcs.cd = shifted.wcs.cd * 1.01
    got = solution_offsets(shifted, expected, SIZE, SIZE)
    assert got["dra_arcsec"] == pytest.approx(12.0, abs=0.05)
    assert got["ddec_arcsec"] == pytest.approx(-7.0, abs=0.05)
    assert abs(got["drot_deg"]) == pytest.approx(0.25, abs=1e-3)
    assert got["scale_ratio"] == pytest.approx(1.01, abs=1e-6)
    # corner: 707 px from the centre, 0.25 deg and 1 % add about 7.7" and 17.7" to the shift
    assert 14.0 < got["max_offset_arcsec"] < 14.0 + 7.8 + 17.7 + 1.0
    same = solution_offsets(expected, expected, SIZE, SIZE)
    assert max(abs(v) for k, v in same.items() if k != "scale_ratio") < 1e-6


# -- the stage -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> dict:
    """A small science frame (for its header), a Gaia cone around its pointing in the cache."""
    out = tmp_path_factory.mktemp("mosaic_astrometry")
    sim = simulate_frame(out, "science", seed=31, date_obs=T0, config=SimConfig(geometry="small"))
    with fits.open(sim.path) as hdul:
        ra, dec = float(hdul[0].header["RA"]), float(hdul[0].header["DEC"])
    settings = Settings(data_root=out / "data", gaia={"online": False, "cache_dir": out / "gaia"})
    table = gaia_like_catalogue(ra, dec, 0.8, seed=9)
    GaiaCache(settings.gaia_cache_path).seed_from_catalogue(table, ra, dec, 0.8)
    return {"sim": sim, "settings": settings, "table": table, "ra": ra, "dec": dec}


def _run_stage(staged, header_wcs: WCS | None, truth: WCS | None, **images):
    settings = staged["settings"]
    if images:
        settings = settings.model_copy(update={"images": settings.images.model_copy(update=images)})
    sim = staged["sim"]
    info = ExposureInfo(0, sim.name, str(sim.path), "SCIENCE", 560.52,
                        str(settings.products_path), date_obs=T0.isoformat())  # fmt: skip
    target = info.product("mosaic_image", "fits")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    if header_wcs is None:  # a compact mosaic: no sky WCS
        hdu = fits.PrimaryHDU(np.zeros((50, 50), np.float32))
        hdu.header["COMPACT"] = True
        hdu.writeto(target)
    else:
        picture(target, staged["table"], truth, header_wcs)
    with Le1Frame(sim.path) as frame:
        return run_one(MosaicAstrometry(), frame, info, settings), settings


@needs_tools
def test_stage_measures_the_header_pointing_error(staged) -> None:
    """The header puts the picture 15" north and turns it 0.3 deg: the stage says so."""
    ra, dec = staged["ra"], staged["dec"]
    truth = tan_wcs(ra, dec, 41.0)
    header = tan_wcs(ra, dec + 15 / 3600, 41.3)
    result, settings = _run_stage(staged, header, truth)
    m = {name: v for _, name, v in result.metrics}
    assert m["mosaic_wcs_ddec_arcsec"] == pytest.approx(-15.0, abs=1.0)
    assert m["mosaic_wcs_dra_arcsec"] == pytest.approx(0.0, abs=1.0)
    assert abs(m["mosaic_wcs_drot_deg"]) == pytest.approx(0.3, abs=0.03)
    assert m["mosaic_wcs_scale_ratio"] == pytest.approx(1.0, abs=0.002)
    assert m["mosaic_wcs_stars"] >= 30
    wcs_file = [w for w in result.written if w.kind == "mosaic_wcs"]
    assert len(wcs_file) == 1
    header_out = fits.getheader(settings.data_path / wcs_file[0].path)
    assert header_out["CTYPE1"].startswith("RA---TAN")
    assert header_out["NMATCH"] == m["mosaic_wcs_stars"]


def test_stage_says_why_it_measured_nothing(staged, monkeypatch) -> None:
    result, _ = _run_stage(staged, None, None)
    assert [o.code for o in result.outcomes] == ["no_sky_layout"]
    assert not result.metrics
    result, _ = _run_stage(staged, None, None, blind_solve=False)
    assert [o.code for o in result.outcomes] == ["blind_solve_off"]
    monkeypatch.setenv("PATH", "/nonexistent")
    truth = tan_wcs(staged["ra"], staged["dec"], 0.0)
    result, _ = _run_stage(staged, truth, truth)
    assert [o.code for o in result.outcomes] == ["no_solver"]
    assert "apt-get install astrometry.net" in result.outcomes[0].message
