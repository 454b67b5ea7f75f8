"""Every GOES XRS product read by one reader, checked against a plain xarray read of the file.

The files are written here with h5netcdf (as netCDF-C/NOAA write them: attributes as
one-element arrays) and, for the "scalar" style, their attributes rewritten with h5py as
scalars and fixed-length byte strings; never with viskom's own writer. The oracle is
`xarray.open_dataset` (CF decoding) plus, written out per product in this file, the valid
range and the product's documented good-flag rule.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5netcdf
import h5py
import numpy as np
import pytest
import xarray as xr

from viskom.sources.goes import (
    GoesFileError,
    good_samples,
    read_sgps,
    read_xrs,
)
from viskom.sources.simulator.goes_files import write_sgps_netcdf, write_xrs_netcdf

DATA = Path(__file__).parent / "data" / "goes"
N = 12
# sample roles, the same in every variant: which samples must come out NaN, and which dropped
# 0 good, 1 flux fill, 2 below valid_min, 3 above valid_max, 4 flag bad, 5 flag eclipse,
# 6 flag electron contamination (good), 7 flag fill, 8 time fill (dropped), 9 no measurement
# in the average (avg1m; others good), 10 flag out of its valid range (or good), 11 good
FILL_T = -9999.0

GOESR_AVG_MEANINGS = (
    "good_data eclipse bad_data e_contam_significant e_correction_valid "
    "e_correction_invalid e_correction_interp e_correction_decay"
)
GOESR_EXCLUDED_MEANINGS = (
    "eclipse particle_spike calibration off_point temperature_error data_quality_error "
    "pointing_error invalid_mode missing_data L0_error"
)
FLX1S_MEANINGS = (
    "good_data eclipse particle_spike calibration off_point temperature_error "
    "data_quality_error pointing_error invalid_mode missing_data L0_error"
)
G15_AVG_MEANINGS = (
    "good_data bad_data eclipsed_by_earth temperature_recovery electron_correction_valid "
    "electron_correction_invalid electron_correction_interp electron_correction_decay"
)
IRRAD_MEANINGS = (
    "good_data calibration off_pointed eclipsed_by_earth eclipsed_by_moon eclipsed_by_unknown "
    "temperature_recovery spike unknown_bad_data saturated gain_state_change"
)
BITS10 = [1 << i for i in range(10)]


def _a(values: Any, dtype: Any) -> np.ndarray:
    return np.asarray(values if np.ndim(values) else [values], dtype=dtype)


def _flux(valid: tuple[float, float], fill: float, level: float) -> np.ndarray:
    flux = level * (1.0 + 0.1 * np.arange(N))
    flux[1], flux[2], flux[3] = fill, valid[0] - max(abs(valid[0]), 1e-9), valid[1] * 2
    return flux


def _flux_attrs(fill: float, valid: tuple[float, float], ancillary: str) -> dict[str, Any]:
    return {
        "_FillValue": _a(fill, np.float32),
        "units": "W/m2",
        "valid_min": _a(valid[0], np.float32),
        "valid_max": _a(valid[1], np.float32),
        "ancillary_variables": ancillary,
    }


def _flag_attrs(dtype: Any, fill: int, masks, values, meanings: str, **extra) -> dict[str, Any]:
    return {
        "_FillValue": _a(fill, dtype),
        "flag_masks": _a(masks, dtype),
        "flag_values": _a(values, dtype),
        "flag_meanings": meanings,
        **{k: _a(v, dtype) for k, v in extra.items()},
    }


Variables = dict[str, tuple[tuple[str, ...], Any, np.ndarray, dict[str, Any]]]


def goesr_avg1m() -> tuple[dict[str, Any], Variables]:
    """GOES-R (16-19) L2 xrsf-l2-avg1m, as sci_xrsf-l2-avg1m_g16_d20210101_v2-1-0.nc."""
    t = 772_000_000.0 + 60.0 * np.arange(N)
    t[8] = FILL_T
    flag = np.array([0, 0, 0, 0, 2, 1, 12, 255, 0, 0, 4, 0])  # 12: e_contam + e_corr_invalid
    num = np.full(N, 60)
    num[9] = 0
    excluded = np.zeros(N)
    excluded[[0, 11]] = [2, 256]  # samples left out of a good average: the average stays
    variables: Variables = {
        "time": (
            ("time",),
            "f8",
            t,
            {
                "_FillValue": _a(FILL_T, np.float64),
                "units": "seconds since 2000-01-01 12:00:00",
                "calendar": "proleptic_gregorian",
            },
        ),
    }
    for band, valid in (("xrsa", (1e-9, 0.003)), ("xrsb", (1e-9, 0.2))):
        anc = f"{band}_flag {band}_num {band}_flag_excluded"
        variables |= {
            f"{band}_flux": (
                ("time",),
                "f4",
                _flux(valid, -9999.0, 1e-8),
                _flux_attrs(-9999.0, valid, anc),
            ),
            f"{band}_flux_observed": (
                ("time",),
                "f4",
                np.full(N, 2e-8),
                _flux_attrs(-9999.0, valid, anc),
            ),
            f"{band}_flux_electrons": (
                ("time",),
                "f4",
                np.full(N, 1e-9),
                _flux_attrs(-9999.0, (0.0, 1e-6), f"{band}_flag"),
            ),
            f"{band}_flag": (
                ("time",),
                "u1",
                flag,
                _flag_attrs(
                    np.uint8,
                    255,
                    [3, 1, 2, 4, 8, 8, 48, 48],
                    [0, 1, 2, 4, 0, 8, 16, 32],
                    GOESR_AVG_MEANINGS,
                ),
            ),
            f"{band}_num": (("time",), "u1", num, {"_FillValue": _a(255, np.uint8)}),
            f"{band}_flag_excluded": (
                ("time",),
                "u2",
                excluded,
                _flag_attrs(np.uint16, 65535, BITS10, BITS10, GOESR_EXCLUDED_MEANINGS),
            ),
        }
    variables["corrected_current_xrsb2"] = (
        ("time", "quad_diode"),
        "f4",
        np.full((N, 4), 1e-9),
        {"_FillValue": _a(-9999.0, np.float32), "units": "A"},
    )
    variables["au_factor"] = (("time",), "f4", np.ones(N), {"_FillValue": _a(-9999, np.float32)})
    attrs = {"platform": "g18", "id": "sci_xrsf-l2-avg1m_g18_d20240623_v2-2-0.nc"}
    return attrs, variables


def goesr_flx1s() -> tuple[dict[str, Any], Variables]:
    """GOES-R L2 xrsf-l2-flx1s, as sci_xrsf-l2-flx1s_g17_d20201016_v2-1-0.nc."""
    t = 656_035_200.0 + np.arange(N) + 0.476770944  # record start, not on the second
    t[8] = FILL_T
    flag = np.array([0, 0, 0, 0, 2, 1, 0, 65535, 0, 0, 4000, 0])  # 4000 > valid_max 2047
    chan = np.array([1, 1, 1, 2, 1, 1, 1, 255, 1, 2, 1, 1])
    variables: Variables = {
        "time": (
            ("time",),
            "f8",
            t,
            {
                "_FillValue": _a(FILL_T, np.float64),
                "units": "seconds since 2000-01-01 12:00:00",
                "long_name": "Record start time, neglecting leap seconds.",
            },
        ),
        "yaw_flip_flag": (
            ("time",),
            "u1",
            np.zeros(N),
            {
                "_FillValue": _a(255, np.uint8),
                "flag_values": _a([0, 1, 2], np.uint8),
                "flag_meanings": "upright neither inverted",
            },
        ),
    }
    flags = _flag_attrs(
        np.uint16,
        65535,
        [65535, *BITS10],
        [0, *BITS10],
        FLX1S_MEANINGS,
        valid_min=0,
        valid_max=2047,
    )
    for band in ("xrsa", "xrsb"):
        letter = band[-1].upper()
        for stem, valid in ((band, (-5e-7, 0.2)), (f"{band}1", (-1e-6, 0.003))):
            variables[f"{stem}_flux"] = (
                ("time",),
                "f4",
                _flux(valid, -9999.0, 3e-8),
                _flux_attrs(-9999.0, valid, f"{stem}_flags"),
            )
            variables[f"{stem}_flags"] = (("time",), "u2", flag, flags)
        variables[f"{band}_primary_chan"] = (
            ("time",),
            "u1",
            chan,
            {
                "_FillValue": _a(255, np.uint8),
                "valid_min": _a(1, np.uint8),
                "valid_max": _a(2, np.uint8),
                "flag_masks": _a([3, 3, 255], np.uint8),
                "flag_values": _a([1, 2, 255], np.uint8),
                "flag_meanings": f"XRS-{letter}1_is_primary XRS-{letter}2_is_primary unknown",
            },
        )
    attrs = {"platform": "g17", "title": "L2 XRS 1-s fluxes", "time_coverage_resolution": "PT1S"}
    return attrs, variables


def goes15_avg1m() -> tuple[dict[str, Any], Variables]:
    """GOES 13-15 reprocessed xrsf-l2-avg1m, as sci_xrsf-l2-avg1m_g15_d20190102_v1-0-0.nc."""
    t = 599_572_800.0 + 60.0 * np.arange(N)
    t[8] = FILL_T
    # 4 bad_data (1), 5 eclipsed_by_earth (2), 6 electron_correction_invalid (16): good,
    # 10 temperature_recovery (4): not good
    flag = np.array([0, 0, 0, 0, 1, 2, 16, 255, 0, 8, 4, 64])
    num = np.full(N, 30)
    num[9] = 0
    variables: Variables = {
        "time": (
            ("time",),
            "f8",
            t,
            {"_FillValue": _a(FILL_T, np.float64), "units": "seconds since 2000-01-01 12:00:00"},
        ),
    }
    for band, valid in (("xrsa", (1e-9, 0.003)), ("xrsb", (1e-9, 0.2))):
        anc = f"{band}_flag {band}_num {band}_flag_excluded"
        variables |= {
            f"{band}_flux": (
                ("time",),
                "f4",
                _flux(valid, -9999.0, 2e-8),
                _flux_attrs(-9999.0, valid, anc),
            ),
            f"{band}_flux_electrons": (
                ("time",),
                "f4",
                np.zeros(N),
                _flux_attrs(-9999.0, (0.0, 1e-6), f"{band}_flag"),
            ),
            f"{band}_flag": (
                ("time",),
                "u2",
                flag,
                _flag_attrs(
                    np.uint16,
                    255,
                    [7, 1, 2, 4, 120, 120, 120, 120],
                    [0, 1, 2, 4, 8, 16, 32, 64],
                    G15_AVG_MEANINGS,
                ),
            ),
            f"{band}_flag_excluded": (
                ("time",),
                "u2",
                np.full(N, 64),
                _flag_attrs(np.uint16, 65535, BITS10, BITS10, IRRAD_MEANINGS.split(" ", 1)[1]),
            ),
            f"{band}_num": (("time",), "u1", num, {"_FillValue": _a(255, np.uint8)}),
        }
    attrs = {"platform": "g15", "id": "sci_xrsf-l2-avg1m_g15_d20190102_v1-0-0.nc"}
    return attrs, variables


def goes15_irrad() -> tuple[dict[str, Any], Variables]:
    """GOES 13-15 reprocessed 2-s gxrs-l2-irrad, as sci_gxrs-l2-irrad_g15_d20131028_v0-0-0.nc."""
    t = 1_382_918_401.385 + 2.048 * np.arange(N)
    t[8] = FILL_T
    flag = np.array([0, 0, 0, 0, 256, 8, 0, 65535, 0, 0, 2000, 0])  # 256 unknown_bad_data
    variables: Variables = {
        "time": (
            ("time",),
            "f8",
            t,
            {
                "_FillValue": _a(FILL_T, np.float64),
                "units": "seconds since 1970-01-01 00:00:00.0 UTC",
            },
        ),
    }
    for band in ("a", "b"):
        variables |= {
            f"{band}_flux": (
                ("time",),
                "f4",
                _flux((-5e-7, 0.2), -99999.0, 4e-8),
                _flux_attrs(-99999.0, (-5e-7, 0.2), f"{band}_flags {band}_swpc_flags"),
            ),
            f"{band}_flags": (
                ("time",),
                "u2",
                flag,
                _flag_attrs(
                    np.uint16,
                    65535,
                    [1023, *BITS10],
                    [0, *BITS10],
                    IRRAD_MEANINGS,
                    valid_min=0,
                    valid_max=1023,
                ),
            ),
            f"{band}_swpc_flags": (
                ("time",),
                "u4",
                np.full(N, 1048576),
                {
                    "_FillValue": _a(4294967295, np.uint32),
                    "flag_meanings": "valid suppress",
                    "flag_masks": _a([2147483647, 1048576], np.uint32),
                    "flag_values": _a([0, 1048576], np.uint32),
                },
            ),
            f"{band}_counts": (
                ("time",),
                "i4",
                np.full(N, 1000),
                {"_FillValue": _a(-99999, np.int32)},
            ),
        }
    attrs = {"platform": " ", "id": " ", "title": "GOES 1-15 L2 XRS high-resolution Irradiances"}
    return attrs, variables


def goesr_avg1m_packed() -> tuple[dict[str, Any], Variables]:
    """GOES-R avg1m with fluxes packed in int32 (scale_factor), valid_range in the packed type."""
    attrs, variables = goesr_avg1m()
    scale = 1e-12
    for band in ("xrsa", "xrsb"):
        _dims, _dtype, flux, fattrs = variables[f"{band}_flux"]
        lo, hi = fattrs["valid_min"][0], fattrs["valid_max"][0]
        packed = np.where(flux == -9999.0, -2147483647, np.round(flux / scale))
        packed = np.clip(packed, -2147483647, 2147483647)
        variables[f"{band}_flux"] = (
            ("time",),
            "i4",
            packed,
            {
                "_FillValue": _a(-2147483647, np.int32),
                "scale_factor": _a(scale, np.float64),
                "add_offset": _a(0.0, np.float64),
                "valid_range": np.array(
                    [round(lo / scale), min(round(hi / scale), 2**31 - 2)], np.int32
                ),
                "units": "W/m2",
            },
        )
    return attrs, variables


# the product's documented good rule on the raw flag, written out here (not from attributes)
VARIANTS: dict[str, tuple[Callable[[], tuple[dict, Variables]], str, Callable, str, str]] = {
    # name: (builder, file name, good(flag), flux stem, expected satellite)
    "goesr-avg1m": (
        goesr_avg1m,
        "sci_xrsf-l2-avg1m_g18_d20240623_v2-2-0.nc",
        lambda f: (f & 3) == 0,
        "xrs",
        "g18",
    ),
    "goesr-flx1s": (
        goesr_flx1s,
        "sci_xrsf-l2-flx1s_g17_d20201016_v2-1-0.nc",
        lambda f: f == 0,
        "xrs",
        "g17",
    ),
    "goes15-avg1m": (
        goes15_avg1m,
        "sci_xrsf-l2-avg1m_g15_d20190102_v1-0-0.nc",
        lambda f: (f & 7) == 0,
        "xrs",
        "g15",
    ),
    "goes15-irrad": (
        goes15_irrad,
        "sci_gxrs-l2-irrad_g15_d20131028_v0-0-0.nc",
        lambda f: (f & 1023) == 0,
        "",
        "g15",
    ),
    "goesr-avg1m-packed": (
        goesr_avg1m_packed,
        "sci_xrsf-l2-avg1m_g16_d20240623_v2-2-0.nc",  # the platform attribute wins: g18
        lambda f: (f & 3) == 0,
        "xrs",
        "g18",
    ),
}
# which samples of the roles above are good in each variant (after dropping the time fill)
EXPECTED_FINITE = {
    "goesr-avg1m": [1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1],
    "goesr-flx1s": [1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1],
    "goes15-avg1m": [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
    "goes15-irrad": [1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1],
    "goesr-avg1m-packed": [1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1],
}


def write_variant(path: Path, attrs: dict[str, Any], variables: Variables, style: str) -> Path:
    """Write with h5netcdf; style "scalar" then turns 1-element attributes into scalars/bytes."""
    dims: dict[str, int] = {}
    for vdims, _dtype, data, _attrs in variables.values():
        dims.update(zip(vdims, np.shape(data), strict=True))
    with h5netcdf.File(path, "w") as f:
        f.dimensions = dims
        for key, value in attrs.items():
            f.attrs[key] = value
        for name, (vdims, dtype, data, vattrs) in variables.items():
            var = f.create_variable(name, vdims, dtype)
            var[...] = np.asarray(data).astype(dtype)
            for key, value in vattrs.items():
                var.attrs[key] = value
    if style == "scalar":
        with h5py.File(path, "r+") as fh:
            targets = [(fh, attrs)] + [(fh[name], v[3]) for name, v in variables.items()]
            for obj, given in targets:
                for key, value in given.items():
                    if isinstance(value, str):
                        scalar: Any = np.bytes_(value.encode())  # fixed-length, as netCDF-C
                    elif np.size(value) == 1:
                        scalar = np.asarray(value).ravel()[0]
                    else:
                        continue
                    del obj.attrs[key]
                    obj.attrs[key] = scalar
    return path


def _bounds(var: xr.DataArray) -> tuple[float, float]:
    a = var.attrs
    if "valid_range" in a:
        lo, hi = np.ravel(a["valid_range"]).astype(float)
        s = float(np.ravel(var.encoding.get("scale_factor", 1.0))[0])
        o = float(np.ravel(var.encoding.get("add_offset", 0.0))[0])
        return lo * s + o, hi * s + o
    lo = float(np.ravel(a["valid_min"])[0]) if "valid_min" in a else -np.inf
    hi = float(np.ravel(a["valid_max"])[0]) if "valid_max" in a else np.inf
    return lo, hi


def plain_xarray_expectation(path: Path, good: Callable, stem: str) -> dict[str, np.ndarray]:
    """Times and fluxes from xarray.open_dataset, masked by valid range, flag rule and count."""
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        t = ds["time"].values
        keep = ~np.isnat(t)
        ns = t[keep].astype("datetime64[ns]").astype(np.int64)
        out = {"time": np.round(ns / 1e6).astype("int64").astype("datetime64[ms]")}
        for band, letter in (("xrsa", "a"), ("xrsb", "b")):
            prefix = f"{stem}{letter}"
            var = ds[f"{prefix}_flux"]
            flux = var.values.astype(np.float64)
            lo, hi = _bounds(var)
            with np.errstate(invalid="ignore"):
                bad = np.isnan(flux) | (flux < lo) | (flux > hi)
            fname = next(n for n in (f"{prefix}_flag", f"{prefix}_flags") if n in ds)
            fvar = ds[fname]
            flag = fvar.values.astype(np.float64)
            flo, fhi = _bounds(fvar)
            with np.errstate(invalid="ignore"):
                missing = np.isnan(flag) | (flag < flo) | (flag > fhi)
            bad |= missing | ~good(np.where(missing, 0, flag).astype(np.int64))
            if f"{prefix}_num" in ds:
                bad |= ds[f"{prefix}_num"].values == 0
            flux[bad] = np.nan
            out[band] = flux[keep]
    return out


@pytest.mark.parametrize("style", ["array", "scalar"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_matches_a_plain_xarray_read(tmp_path, variant: str, style: str) -> None:
    builder, name, good, stem, satellite = VARIANTS[variant]
    path = write_variant(tmp_path / name, *builder(), style)
    if style == "scalar":  # the file really has the other attribute types
        with h5py.File(path) as fh:
            assert fh[f"{stem}a_flux"].attrs["_FillValue"].shape == ()
            assert isinstance(fh["time"].attrs["units"], bytes)
    else:
        with h5py.File(path) as fh:
            assert fh[f"{stem}a_flux"].attrs["_FillValue"].shape == (1,)
    s = read_xrs(path)
    want = plain_xarray_expectation(path, good, stem)
    np.testing.assert_array_equal(s.time, want["time"])
    np.testing.assert_array_equal(s.xrsa_flux, want["xrsa"])
    np.testing.assert_array_equal(s.xrsb_flux, want["xrsb"])
    assert np.isfinite(s.xrsb_flux).astype(int).tolist() == EXPECTED_FINITE[variant]
    assert s.satellite == satellite and s.source == name
    assert len(s.time) == N - 1  # the sample with a fill time is dropped


def test_real_one_second_times_and_values() -> None:
    s = read_xrs(DATA / "sci_xrsf-l2-flx1s_g17_d20201016_truncated.nc")
    assert str(s.time[0]) == "2020-10-16T00:00:00.477"  # record start, neglecting leap seconds
    assert s.satellite == "g17" and np.isfinite(s.xrsa_flux).all()


REAL = {
    "sci_xrsf-l2-avg1m_g16_d20210101_truncated.nc": (lambda f: (f & 3) == 0, "xrs", "g16"),
    "sci_xrsf-l2-avg1m_g15_d20190102_truncated.nc": (lambda f: (f & 7) == 0, "xrs", "g15"),
    "sci_xrsf-l2-flx1s_g17_d20201016_truncated.nc": (lambda f: f == 0, "xrs", "g17"),
    "sci_gxrs-l2-irrad_g15_d20131028_truncated.nc": (lambda f: (f & 1023) == 0, "", "g15"),
    "goes_13_leap_second.nc": (lambda f: (f & 1023) == 0, "", "g13"),
}


@pytest.mark.parametrize("name", list(REAL))
def test_real_files_match_a_plain_xarray_read(name: str) -> None:
    good, stem, satellite = REAL[name]
    s = read_xrs(DATA / name)
    want = plain_xarray_expectation(DATA / name, good, stem)
    np.testing.assert_array_equal(s.time, want["time"])
    np.testing.assert_array_equal(s.xrsa_flux, want["xrsa"])
    np.testing.assert_array_equal(s.xrsb_flux, want["xrsb"])
    assert s.satellite == satellite and len(s.time) > 40


def test_the_simulators_writer_is_read_like_a_plain_xarray_read(tmp_path) -> None:
    t = np.datetime64("2024-07-13T00:00", "ms") + np.arange(6) * np.timedelta64(60, "s")
    flags = np.array([0, 1, 2, 4, 0, 0], np.uint8)
    a = np.array([1e-8, 1e-8, 1e-8, 1e-8, np.nan, 5e-10])
    path = write_xrs_netcdf(tmp_path / "w.nc", t, a, np.full(6, 1e-7), "g16", flags)
    s = read_xrs(path)
    want = plain_xarray_expectation(path, lambda f: (f & 3) == 0, "xrs")
    np.testing.assert_array_equal(s.time, want["time"])
    np.testing.assert_array_equal(s.xrsa_flux, want["xrsa"])
    assert np.isfinite(s.xrsa_flux).tolist() == [True, False, False, True, False, False]
    np.testing.assert_array_equal(s.time, t)


def test_netcdf3_classic_file(tmp_path) -> None:
    from scipy.io import netcdf_file

    path = tmp_path / "sci_xrsf-l2-avg1m_g14_d20100101_v1-0-0.nc"
    with netcdf_file(path, "w") as f:
        f.platform = b"g14"
        f.createDimension("time", 3)
        t = f.createVariable("time", "d", ("time",))
        t[:] = [0.0, 60.0, 120.0]
        t.units = b"seconds since 2000-01-01 12:00:00"
        for band in ("xrsa", "xrsb"):
            v = f.createVariable(f"{band}_flux", "f", ("time",))
            v[:] = [1e-8, -9999.0, 2e-8]
            v._FillValue = np.float32(-9999.0)
    s = read_xrs(path)
    assert np.isfinite(s.xrsa_flux).tolist() == [True, False, True]
    assert s.satellite == "g14" and str(s.time[2]) == "2000-01-01T12:02:00.000"


# -- good_samples directly: attribute types and product conventions ------------------------


@pytest.mark.parametrize("as_array", [True, False])
def test_good_samples_with_scalar_or_array_attributes(as_array: bool) -> None:
    def attr(v, dtype=np.uint16):
        return np.asarray([v] if np.ndim(v) == 0 else v, dtype) if as_array else v

    flags = np.array([0, 1, 4, 8, 16, 255], np.uint16)
    goes15 = {
        "flag_masks": attr([7, 1, 2, 4, 120, 120, 120, 120]),
        "flag_values": attr([0, 1, 2, 4, 8, 16, 32, 64]),
        "flag_meanings": np.bytes_(G15_AVG_MEANINGS.encode()),
        "_FillValue": attr(255),
    }
    assert good_samples(flags, goes15).tolist() == [True, False, False, True, True, False]
    # a lone flag_values: equality; a lone mask: bit set means the meaning holds
    only_values = {"flag_values": attr(0, np.uint8), "flag_meanings": "good_data"}
    assert good_samples(np.array([0, 1, 2]), only_values).tolist() == [True, False, False]
    only_masks = {"flag_masks": attr([1, 2]), "flag_meanings": "bad_data eclipse"}
    assert good_samples(np.array([0, 1, 2, 3]), only_masks).tolist() == [True, False, True, False]
    # decoded flags (NaN where fill) and float flags without any _FillValue
    assert good_samples(np.array([0.0, np.nan, 4.0]), {}, "xrsa_flag").tolist() == [
        True,
        False,
        True,
    ]
    assert good_samples(np.array([0.0, 4.0]), {}, "xrsa_flags").tolist() == [True, False]


def test_inconsistent_flag_attributes_are_a_clear_error() -> None:
    attrs = {"flag_masks": [3, 1], "flag_values": [0, 1, 2], "flag_meanings": "good_data a b"}
    with pytest.raises(GoesFileError, match="2 flag_masks for 3 flag_meanings"):
        good_samples(np.zeros(3), attrs, "xrsa_flag")


# -- bad files: clear GoesFileErrors --------------------------------------------------------


def test_damaged_files_are_clear_errors(tmp_path) -> None:
    real = (DATA / "sci_xrsf-l2-flx1s_g17_d20201016_truncated.nc").read_bytes()
    cut = tmp_path / "cut.nc"
    cut.write_bytes(real[: len(real) // 2])
    with pytest.raises(GoesFileError, match=r"cut\.nc: not a netCDF-4/HDF5 file"):
        read_xrs(cut)
    empty = tmp_path / "empty.nc"
    empty.write_bytes(b"")
    with pytest.raises(GoesFileError, match="not a netCDF-4/HDF5 file"):
        read_xrs(empty)
    with pytest.raises(FileNotFoundError):
        read_xrs(tmp_path / "absent.nc")

    attrs, variables = goesr_avg1m()
    del variables["xrsb_flux"]
    with pytest.raises(GoesFileError, match="no variable 'xrsb_flux'"):
        read_xrs(write_variant(tmp_path / "nob.nc", attrs, variables, "array"))
    attrs, variables = goesr_avg1m()
    variables["time"][3]["units"] = "days after launch"
    with pytest.raises(GoesFileError, match="days after launch"):
        read_xrs(write_variant(tmp_path / "units.nc", attrs, variables, "array"))
    attrs, variables = goesr_avg1m()
    variables["xrsa_flag"][3]["flag_masks"] = _a([3, 1], np.uint8)
    with pytest.raises(GoesFileError, match="flag_masks"):
        read_xrs(write_variant(tmp_path / "masks.nc", attrs, variables, "scalar"))
    with pytest.raises(GoesFileError, match="not an SGPS product"):
        read_sgps(DATA / "sci_xrsf-l2-avg1m_g15_d20190102_truncated.nc")


# -- SGPS protons through the same reader machinery -----------------------------------------


def test_sgps_with_array_attributes_and_mev_energies(tmp_path) -> None:
    """netCDF-C style attributes (one-element arrays), energies in MeV, fill counts."""
    fill = np.float32(-1e31)
    diff = np.array(
        [
            [[9.0, 1.0, 0.5], [9.0, fill, 0.5]],  # unit 1 has a bad channel above 10 MeV
            [[fill, 2.0, 0.5], [9.0, 4.0, 1.0]],  # a bad channel below 10 MeV does not matter
            [[9.0, 2.0, -0.5], [9.0, 2.0, 0.5]],  # unit 0 negative; unit 1 fill count
        ],
        np.float32,
    )
    valid = np.full(diff.shape, 300, np.uint32)
    valid[2, 1, 1] = 4294967295
    path = tmp_path / "sci_sgps-l2-avg5m_g18_d20240713_v3-0-1.nc"
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"time": 3, "sensor_units": 2, "diff_channels": 3}
        f.attrs["platform"] = "g18"
        t = f.create_variable("time", ("time",), "f8")
        t[:] = [0.0, 300.0, 600.0]
        t.attrs["units"] = "seconds since 2000-01-01 12:00:00"
        t.attrs["_FillValue"] = np.array([-9999.0])
        v = f.create_variable("AvgDiffProtonFlux", ("time", "sensor_units", "diff_channels"), "f4")
        v[...] = diff
        v.attrs["_FillValue"] = np.array([fill])
        v.attrs["units"] = "protons/(cm^2 sr keV s)"
        c = f.create_variable(
            "DiffValidL1bSamplesInAvg", ("time", "sensor_units", "diff_channels"), "u4"
        )
        c[...] = valid
        c.attrs["_FillValue"] = np.array([4294967295], np.uint32)
        for name, mev in (("Lower", [5.0, 8.0, 12.0]), ("Upper", [8.0, 12.0, 20.0])):
            e = f.create_variable(
                f"DiffProton{name}Energy", ("sensor_units", "diff_channels"), "f4"
            )
            e[...] = np.array([mev, mev])
            e.attrs["units"] = "MeV"
            e.attrs["_FillValue"] = np.array([-9999.0], np.float32)
    s = read_sgps(path)
    # t0: unit 0 only: 1.0 * (12000 - 10000) + 0.5 * 8000
    # t1: mean of 2.0 * 2000 + 4000 and 4.0 * 2000 + 8000; t2: no good unit
    assert s.flux_ge10mev[:2].tolist() == pytest.approx([6000.0, (8000.0 + 16000.0) / 2])
    assert np.isnan(s.flux_ge10mev[2]) and s.satellite == "g18"
    assert str(s.time[1]) == "2000-01-01T12:05:00.000"


def test_sgps_writer_read_back_with_xarray(tmp_path) -> None:
    t = np.datetime64("2024-07-13T00:00", "ms") + np.arange(4) * np.timedelta64(300, "s")
    flux = np.array([0.3, np.nan, 12.0, 4e3])
    s = read_sgps(write_sgps_netcdf(tmp_path / "p.nc", t, flux, satellite=19))
    np.testing.assert_array_equal(s.time, t)
    assert s.satellite == "g19" and np.isnan(s.flux_ge10mev[1])
    assert s.flux_ge10mev[[0, 2, 3]] == pytest.approx(flux[[0, 2, 3]], rel=1e-5)
