"""Writers of NOAA's GOES netCDF layouts (NCEI XRS L2 and SGPS L2 avg5m), for the simulator.

The files have the variables, dimensions and attributes of the real ones, written with h5py
(netCDF-4/HDF5 with dimension scales) and atomically, so `viskom.sources.goes_netcdf` reads them
back exactly as it reads NOAA's files, and a simulated day can stand in a GOES cache for a
downloaded one (`spaceweather.write_goes_cache`). Test data, not NOAA data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from viskom.sources.goes_files import ncei_product, satellite_name
from viskom.sources.goes_netcdf import SGPS_THRESHOLD_KEV
from viskom.store.atomic import atomic_path

J2000_UNITS = "seconds since 2000-01-01T12:00:00"
_J2000 = np.datetime64("2000-01-01T12:00:00", "ms")
GOESR_XRS_FLAG_MEANINGS = (
    "good_data eclipse bad_data e_contam_significant e_correction_valid "
    "e_correction_invalid e_correction_interp e_correction_decay"
)
GOESR_XRS_FLAG_MASKS = (3, 1, 2, 4, 8, 8, 48, 48)
GOESR_XRS_FLAG_VALUES = (0, 1, 2, 4, 0, 8, 16, 32)
_XRS_VALID = {"xrsa": (1e-9, 0.003), "xrsb": (1e-9, 0.2)}  # as in the real GOES-16 file
_XRS_LONG_NAME = {"xrsa": "XRS-A primary average flux.", "xrsb": "XRS-B primary average flux."}
# Nominal SGPS proton channels (lower, upper) in keV, from public descriptions of the v3 files;
# real files carry their own per-unit bounds and read_sgps always uses the file's.
SGPS_CHANNELS_KEV = (
    (1020, 1860),  # P1
    (1900, 2300),  # P2A
    (2310, 3340),  # P2B
    (3400, 6480),  # P3
    (5840, 11000),  # P4, contains 10 MeV
    (11640, 23270),  # P5
    (25900, 38100),  # P6
    (40300, 73400),  # P7
    (83700, 98500),  # P8A
    (99900, 118000),  # P8B
    (115000, 143000),  # P8C
    (160000, 242000),  # P9
    (276000, 404000),  # P10; P11 (AvgIntProtonFlux) is > 500 MeV
)
SGPS_FILL = np.float32(-1e31)
_SGPS_P11_SHARE = 0.01  # share of the written >= 10 MeV flux put in the >500 MeV channel


@contextmanager
def _h5_atomic(path: Path) -> Iterator[Any]:
    """An HDF5 file open for writing under a temporary name; it replaces `path` when complete."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        yield fh


def _seconds_j2000(time: np.ndarray) -> np.ndarray:
    t = np.asarray(time).astype("datetime64[ms]")
    return (t - _J2000).astype(np.int64) / 1000.0


def _nc_dimension(fh, name: str, size: int):
    """A netCDF-4 dimension that is not a variable (as netCDF-C writes it)."""
    dim = fh.create_dataset(name, shape=(size,), dtype="f4")
    dim.make_scale(f"This is a netCDF dimension but not a netCDF variable.{size:>10}")
    return dim


def _nc_time(fh, seconds: np.ndarray, long_name: str):
    t = fh.create_dataset("time", data=np.asarray(seconds, dtype=np.float64))
    t.make_scale("time")
    t.attrs["_FillValue"] = np.float64(-9999.0)
    t.attrs["units"] = J2000_UNITS
    t.attrs["calendar"] = "proleptic_gregorian"
    t.attrs["long_name"] = long_name
    return t


def _nc_variable(fh, name: str, data: np.ndarray, dims: Sequence, fill, **attrs):
    data = np.asarray(data)
    kwargs = {"compression": "gzip", "compression_opts": 4} if data.size > 256 else {}
    var = fh.create_dataset(name, data=data, fillvalue=fill, **kwargs)
    var.attrs["_FillValue"] = np.asarray(fill, dtype=data.dtype)
    for key, value in attrs.items():
        var.attrs[key] = value
    for i, dim in enumerate(dims):
        var.dims[i].attach_scale(dim)
    return var


def _global_attrs(fh, path: Path, satellite: str, title: str, seconds: np.ndarray, res: str):
    fh.attrs["Conventions"] = "ACDD-1.3, Spase v2.2.6"
    fh.attrs["title"] = title
    fh.attrs["id"] = path.name
    fh.attrs["platform"] = satellite
    fh.attrs["processing_level"] = "Level 2"
    fh.attrs["institution"] = "DOC/NOAA/NESDIS"
    fh.attrs["history"] = "synthetic file written by viskom.sources.goes (not NOAA data)"
    fh.attrs["time_coverage_resolution"] = res
    finite = seconds[np.isfinite(seconds)]
    if finite.size:
        for key, value in (("start", finite.min()), ("end", finite.max())):
            stamp = _J2000 + np.timedelta64(round(float(value) * 1000), "ms")
            fh.attrs[f"time_coverage_{key}"] = f"{np.datetime_as_string(stamp, unit='ms')}Z"


def write_xrs_netcdf(
    path: str | Path,
    time: np.ndarray,
    xrsa: np.ndarray,
    xrsb: np.ndarray,
    satellite: str | int = "g18",
    flags: np.ndarray | Mapping[str, np.ndarray] | None = None,
    *,
    product: str = "avg1m",
) -> Path:
    """Write an XRS file in the NCEI L2 layout (names, attributes as the real files), atomically.

    `time` is datetime64 (UTC); NaN fluxes are written as the fill value -9999. `flags` is one
    uint8 array for both bands or {"xrsa": ..., "xrsb": ...} in the GOES-R meanings (0 = good);
    default all good. `product` "flx1s" only changes the title and resolution attributes.
    """
    path = Path(path)
    seconds = _seconds_j2000(time)
    n = seconds.shape[0]
    sat = satellite_name(satellite)
    one_second = ncei_product(product).name == "xrsf-l2-flx1s"
    if flags is None or not isinstance(flags, Mapping):
        flags = {"xrsa": flags, "xrsb": flags}
    with _h5_atomic(path) as fh:
        title = "L2 XRS 1 second flux" if one_second else "L2 XRS 1 minute average"
        _global_attrs(fh, path, sat, title, seconds, "PT1S" if one_second else "PT1M")
        t = _nc_time(fh, seconds, "Record start time, neglecting leap seconds.")
        for band, values in (("xrsa", xrsa), ("xrsb", xrsb)):
            flux = np.asarray(values, dtype=np.float64)
            if flux.shape != (n,):
                raise ValueError(f"{band} has shape {flux.shape}, time has ({n},)")
            lo, hi = _XRS_VALID[band]
            _nc_variable(
                fh,
                f"{band}_flux",
                np.where(np.isfinite(flux), flux, -9999.0).astype(np.float32),
                [t],
                np.float32(-9999.0),
                units="W/m2",
                long_name=_XRS_LONG_NAME[band],
                valid_min=np.float32(lo),
                valid_max=np.float32(hi),
                ancillary_variables=f"{band}_flag",
            )
            flag = flags.get(band)
            flag = np.zeros(n, np.uint8) if flag is None else np.asarray(flag, dtype=np.uint8)
            if flag.shape != (n,):
                raise ValueError(f"{band} flags have shape {flag.shape}, time has ({n},)")
            _nc_variable(
                fh,
                f"{band}_flag",
                flag,
                [t],
                np.uint8(255),
                long_name=f"Flags for {band}_flux.",
                flag_masks=np.asarray(GOESR_XRS_FLAG_MASKS, dtype=np.uint8),
                flag_meanings=GOESR_XRS_FLAG_MEANINGS,
                flag_values=np.asarray(GOESR_XRS_FLAG_VALUES, dtype=np.uint8),
            )
    return path


def write_sgps_netcdf(
    path: str | Path, time: np.ndarray, flux_ge10mev: np.ndarray, satellite: str | int = "g18"
) -> Path:
    """Write (atomically) an SGPS L2 avg5m-layout file whose read_sgps result is `flux_ge10mev`.

    Same variables and dimensions as the real files (time, sensor_units=2, diff_channels=13;
    the alpha variables are left out). Both sensor units get the same values: a power-law
    spectrum (E^-2) over the nominal channels, scaled so that the channels above 10 MeV (the
    one containing 10 MeV pro rata) hold 99 % of the flux and the >500 MeV channel 1 %. NaN
    writes fill values with zero valid samples.
    """
    path = Path(path)
    seconds = _seconds_j2000(time)
    flux = np.asarray(flux_ge10mev, dtype=np.float64)
    n = seconds.shape[0]
    if flux.shape != (n,):
        raise ValueError(f"flux_ge10mev has shape {flux.shape}, time has ({n},)")
    lower, upper = np.asarray(SGPS_CHANNELS_KEV, dtype=np.float64).T
    n_units, n_channels = 2, lower.size
    shape = (n, n_units, n_channels)
    weight = 1.0 / (lower * upper)  # E_eff^-2 with E_eff = sqrt(lower * upper)
    above = np.clip(upper - np.maximum(lower, SGPS_THRESHOLD_KEV), 0.0, None)
    good = np.isfinite(flux) & (flux >= 0)
    scale = np.where(good, flux * (1 - _SGPS_P11_SHARE), 0.0) / np.sum(weight * above)
    diff = np.broadcast_to((scale[:, None] * weight[None, :])[:, None, :], shape)
    diff = np.where(good[:, None, None], diff, SGPS_FILL).astype(np.float32)
    p11 = np.where(good, flux * _SGPS_P11_SHARE, SGPS_FILL).astype(np.float32)
    p11 = np.repeat(p11[:, None], n_units, axis=1)
    valid = np.where(good, 300, 0).astype(np.uint32)
    u32_fill = np.uint32(4294967295)
    with _h5_atomic(path) as fh:
        _global_attrs(
            fh, path, satellite_name(satellite), "L2 SGPS 5 minute average", seconds, "PT5M"
        )
        t = _nc_time(fh, seconds, "Time stamp at the start of the averaging period")
        units = _nc_dimension(fh, "sensor_units", n_units)
        chans = _nc_dimension(fh, "diff_channels", n_channels)
        tuc, tu, uc, u = [t, units, chans], [t, units], [units, chans], [units]
        _nc_variable(
            fh,
            "L1bRecordsInAvg",
            valid[:].copy(),
            [t],
            u32_fill,
            long_name="Number of L1b records in the average",
        )
        _nc_variable(
            fh,
            "yaw_flip_flag",
            np.zeros(n, np.uint8),
            [t],
            np.uint8(255),
            long_name="Spacecraft yaw flip flag (0 upright)",
        )
        _nc_variable(
            fh,
            "AvgDiffProtonFlux",
            diff,
            tuc,
            SGPS_FILL,
            units="protons/(cm^2 sr keV s)",
            long_name="Time-averaged proton fluxes in differential channels between 1 and 500 MeV",
        )
        counts = np.repeat(np.repeat(valid[:, None, None], n_units, 1), n_channels, 2)
        _nc_variable(
            fh,
            "DiffValidL1bSamplesInAvg",
            counts,
            tuc,
            u32_fill,
            long_name="Number of valid L1b samples in each differential flux average",
        )
        for name in ("DiffDQFdtcSum", "DiffDQFoobSum", "DiffDQFerrSum"):
            _nc_variable(fh, name, np.zeros(shape, np.uint32), tuc, u32_fill)
        _nc_variable(
            fh,
            "AvgIntProtonFlux",
            p11,
            tu,
            SGPS_FILL,
            units="protons/(cm^2 sr s)",
            long_name="Time-averaged proton fluxes in the P11 >500 MeV integral channel",
        )
        _nc_variable(fh, "IntValidL1bSamplesInAvg", counts[:, :, 0].copy(), tu, u32_fill)
        for name in ("IntDQFdtcSum", "IntDQFoobSum", "IntDQFerrSum"):
            _nc_variable(fh, name, np.zeros((n, n_units), np.uint32), tu, u32_fill)
        for name, values, what in (
            ("DiffProtonLowerEnergy", lower, "Lower"),
            ("DiffProtonUpperEnergy", upper, "Upper"),
            ("DiffProtonEffectiveEnergy", np.sqrt(lower * upper), "Effective"),
        ):
            _nc_variable(
                fh,
                name,
                np.repeat(values[None, :], n_units, 0).astype(np.float32),
                uc,
                np.float32(-9999.0),
                units="keV",
                long_name=f"{what} band energies for the SGPS proton differential channels",
            )
        _nc_variable(
            fh,
            "IntegralProtonEffectiveEnergy",
            np.full(n_units, 5e5, np.float32),
            u,
            np.float32(-9999.0),
            units="keV",
        )
    return path
