"""Benchmark: viskom's particle-hit detector vs astroscrappy (L.A.Cosmic) on full-size quadrants.

Usage: python benchmarks/bench_cosmics.py [--quadrants 4] [--repeat 2] [--objlim 5 15]

One full-size science frame (seed 7, shared with the other benchmarks) and two full-size darks
(for the hot-pixel map) are simulated once into benchmarks/.cache/ (never committed) and
reused. On N quadrants spread over the focal plane, bias removed (float32 image areas), both
methods run in this process with one thread each, timed with perf_counter:

* viskom: `detect_hits` with the catalogue's star guards (`extract_sources`, the guard
  selection of the events stage) and the hot pixels of the two darks; the catalogue is made
  by the pipeline anyway, so its time is reported separately.
* astroscrappy.detect_cosmics with the header gain and read noise, saturation above bias (e-),
  the sep sky as `inbkg` (its time counted), the hot pixels as `inmask`, sigclip 4.5,
  sigfrac 0.3, niter 4, meanmask cleaning, median fine structure and each `--objlim`; its
  mask is grouped into hits with 8-connectivity.

Both are scored against the simulator's truth: completeness over particle hits above 40 ADU
whose centroid pixel is outside viskom's masked (saturated) area, found when a detected pixel
lies in the 3 x 3 pixels around the centroid; false hits are detected components (with at
least one unmasked pixel) with no pixel within 1 px of a truth track, and among them those
within 3 px of a truth star or galaxy centre and within 1.5 px of a truth hot pixel. The
truth hits missed are listed with what is near them (stars, galaxies, star guards and what
each guard sits on).
"""

from __future__ import annotations

import os

# one thread for numpy, sep and astroscrappy's OpenMP loops: set before they are imported
os.environ.update(
    dict.fromkeys(
        ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"),
        "1",
    )
)

import argparse
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import sep
from scipy import ndimage
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).parent))
from bench_detector_health import CACHE, full_frame

PARTICLES = ("cosmic", "xray", "proton")
MIN_CHARGE_ADU = 40.0
TRACK_STEP_PX = 0.5
STAR_RADIUS_PX = 3.0
DARK_SEEDS = (101, 102)
DARK_DATES = (
    datetime(2024, 7, 13, 1, 10, 0, tzinfo=UTC),
    datetime(2024, 7, 13, 2, 20, 0, tzinfo=UTC),
)
BOX3 = np.ones((3, 3), dtype=bool)


def dark_frames() -> list[Path]:
    """The two full-size darks of the hot-pixel map (simulated once into the cache)."""
    from viskom.sources.simulator import SimConfig, frame_name, simulate_frame

    outdir = CACHE / "darks"
    paths = []
    for seed, date in zip(DARK_SEEDS, DARK_DATES, strict=True):
        name = frame_name(
            date, naming="archive", seed=seed, obs_id=2370, dither=1, exposure_index=1
        )
        path = outdir / f"{name}.fits"
        if not path.exists():
            print(f"simulating a full-size dark (once): seed {seed} ...", flush=True)
            t0 = time.perf_counter()
            simulate_frame(
                outdir, "dark", seed=seed, date_obs=date, config=SimConfig(geometry="full")
            )
            print(f"  simulated in {time.perf_counter() - t0:.1f} s: {path}", flush=True)
        paths.append(path)
    return paths


def image_area(quad: Any) -> tuple[np.ndarray, float]:
    """The bias-subtracted image area (float32, ADU) and the bias removed."""
    from viskom.measure.detector import quadrant_bias

    g = quad.geometry
    bias = quadrant_bias(quad.data, g)[2]
    image = quad.data[g.image.slices].astype(np.float32)
    image -= np.float32(bias)
    return image, bias


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), MB."""
    with open("/proc/self/status") as fh:
        line = next(ln for ln in fh if ln.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


@dataclass
class Truth:
    """Truth objects of one quadrant in image-area pixels (0-based)."""

    particles: dict[str, np.ndarray]
    stars: np.ndarray  # (n, 2) x, y
    star_flux: np.ndarray
    galaxies: np.ndarray  # (n, 2) x, y
    hot: np.ndarray  # (n, 2) x, y
    track_points: np.ndarray = field(repr=False)  # (n, 2) points along every truth track
    track: np.ndarray = field(repr=False)  # pixels within 1 px of any truth track
    near_star: np.ndarray = field(repr=False)  # pixels within 3 px of a truth star
    near_galaxy: np.ndarray = field(repr=False)  # pixels within 3 px of a truth galaxy centre
    near_hot: np.ndarray = field(repr=False)  # pixels within 1.5 px of a truth hot pixel


def _raster(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean image with the pixels nearest to the points (x, y) set."""
    out = np.zeros(shape, dtype=bool)
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    ok = (ix >= 0) & (ix < shape[1]) & (iy >= 0) & (iy < shape[0])
    out[iy[ok], ix[ok]] = True
    return out


def _track_points(x, y, length, theta_deg) -> tuple[np.ndarray, np.ndarray]:
    """Points every 0.5 px along each track, centre +- length / 2 along theta (and the ends)."""
    length = np.nan_to_num(np.asarray(length, dtype=float), nan=0.0)
    n = np.floor(length / TRACK_STEP_PX).astype(np.int64) + 2
    hit = np.repeat(np.arange(length.size), n)
    k = np.arange(hit.size) - np.repeat(np.cumsum(n) - n, n)
    pos = np.minimum(-0.5 * length[hit] + k * TRACK_STEP_PX, 0.5 * length[hit])
    th = np.radians(np.nan_to_num(np.asarray(theta_deg, dtype=float))[hit])
    return x[hit] + pos * np.cos(th), y[hit] + pos * np.sin(th)


def read_objects(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The simulator's truth objects of these quadrants (nulls as NaN, npix -1)."""
    table = pq.read_table(
        path,
        columns=["kind", "extname", "x", "y", "flux_adu", "charge_adu", "length_px",
                 "theta_deg", "npix"],
        filters=[("extname", "in", names)],
    )  # fmt: skip
    out = {c: table.column(c).to_numpy() for c in table.column_names if c != "npix"}
    out["npix"] = table.column("npix").fill_null(-1).to_numpy()
    out["kind"] = out["kind"].astype(str)
    out["extname"] = out["extname"].astype(str)
    return out


def quadrant_truth(objects: dict[str, np.ndarray], name: str, col0: int, row0: int, shape) -> Truth:
    """Particles, stars and hot pixels of one quadrant and their proximity images."""
    sel = objects["extname"] == name
    kind = objects["kind"][sel]
    x = objects["x"][sel] - col0
    y = objects["y"][sel] - row0
    is_p = np.isin(kind, PARTICLES)
    parts = {
        "kind": kind[is_p],
        "x": x[is_p],
        "y": y[is_p],
        "charge_adu": objects["charge_adu"][sel][is_p],
        "length_px": objects["length_px"][sel][is_p],
        "theta_deg": objects["theta_deg"][sel][is_p],
        "npix": objects["npix"][sel][is_p],
    }
    tx, ty = _track_points(parts["x"], parts["y"], parts["length_px"], parts["theta_deg"])
    track = ndimage.binary_dilation(_raster(tx, ty, shape), structure=BOX3)
    star = kind == "star"
    r = int(STAR_RADIUS_PX)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = xx**2 + yy**2 <= STAR_RADIUS_PX**2
    near_star = ndimage.binary_dilation(_raster(x[star], y[star], shape), structure=disk)
    gal = kind == "galaxy"
    near_gal = ndimage.binary_dilation(_raster(x[gal], y[gal], shape), structure=disk)
    hot = kind == "hot"
    near_hot = ndimage.binary_dilation(_raster(x[hot], y[hot], shape), structure=BOX3)
    return Truth(
        parts,
        np.column_stack([x[star], y[star]]),
        objects["flux_adu"][sel][star],
        np.column_stack([x[gal], y[gal]]),
        np.column_stack([x[hot], y[hot]]),
        np.column_stack([tx, ty]),
        track,
        near_star,
        near_gal,
        near_hot,
    )


def score(labels: np.ndarray, n: int, masked: np.ndarray, truth: Truth) -> dict[str, Any]:
    """Completeness, false components and where the false ones are, of one label image."""
    shape = labels.shape
    p = truth.particles
    cx, cy = np.rint(p["x"]).astype(np.int64), np.rint(p["y"]).astype(np.int64)
    inside = (cx >= 0) & (cx < shape[1]) & (cy >= 0) & (cy < shape[0])
    eligible = inside & (p["charge_adu"] > MIN_CHARGE_ADU)
    eligible[eligible] &= ~masked[cy[eligible], cx[eligible]]
    near_det = ndimage.binary_dilation(labels > 0, structure=BOX3)
    found = np.zeros(cx.size, dtype=bool)
    found[eligible] = near_det[cy[eligible], cx[eligible]]
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx]

    def any_of(image: np.ndarray) -> np.ndarray:
        return np.bincount(lab, weights=image.ravel()[idx], minlength=n + 1)[1:] > 0

    counted = any_of(~masked)
    real = any_of(truth.track)
    false = counted & ~real
    return {
        "eligible": int(eligible.sum()),
        "found": int(found.sum()),
        "missed": np.flatnonzero(eligible & ~found),
        "components": int(counted.sum()),
        "false": int(false.sum()),
        "false_star": int((false & any_of(truth.near_star)).sum()),
        "false_galaxy": int((false & any_of(truth.near_galaxy)).sum()),
        "false_hot": int((false & any_of(truth.near_hot)).sum()),
    }


def _nearest(points: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to and index of the nearest of `points` for each of `where` (inf if none)."""
    if not len(points):
        return np.full(len(where), np.inf), np.zeros(len(where), dtype=np.int64)
    return cKDTree(points).query(where)


def guard_origins(guards: tuple | None, truth: Truth, within_px: float = 2.0) -> np.ndarray:
    """What each star guard sits on: a truth 'star', else a 'galaxy', else a 'particle' hit,
    else 'other' (nothing within `within_px` of its centre)."""
    if guards is None:
        return np.zeros(0, dtype="<U8")
    pts = np.column_stack([guards[0], guards[1]])
    out = np.full(len(pts), "other", dtype="<U8")
    for label, ref in (
        ("particle", truth.track_points),
        ("galaxy", truth.galaxies),
        ("star", truth.stars),
    ):
        out[_nearest(ref, pts)[0] <= within_px] = label
    return out


def missed_hits(
    miss: np.ndarray, truth: Truth, guards: tuple | None, origins: np.ndarray
) -> list[tuple]:
    """Per missed truth hit: kind, x, y, charge, length, npix, distance to and flux of the
    nearest truth star, distance to the nearest truth galaxy, and what the catalogue star
    guard it lies in sits on ('' if in none)."""
    if not miss.size:
        return []
    p = truth.particles
    pts = np.column_stack([p["x"][miss], p["y"][miss]])
    d_star, i_star = _nearest(truth.stars, pts)
    flux = truth.star_flux[i_star] if len(truth.stars) else np.full(miss.size, np.nan)
    d_gal = _nearest(truth.galaxies, pts)[0]
    rows = []
    for j, m in enumerate(miss):
        guard = ""
        if guards is not None:
            d = np.hypot(guards[0] - p["x"][m], guards[1] - p["y"][m])
            inside = np.flatnonzero(d <= guards[2])
            if inside.size:
                guard = str(origins[inside[np.argmin(d[inside])]])
        rows.append(
            (p["kind"][m], p["x"][m], p["y"][m], p["charge_adu"][m], p["length_px"][m],
             int(p["npix"][m]), d_star[j], flux[j], d_gal[j], guard)
        )  # fmt: skip
    return rows


def run_astroscrappy(image, gain, read_noise_e, sat_e, hot_mask, objlim) -> tuple[float, Any]:
    """One astroscrappy run (with the sep sky it is given): (seconds, crmask)."""
    import astroscrappy

    t0 = time.perf_counter()
    sky = sep.Background(image, bw=64, bh=64, fw=3, fh=3).back()
    crmask, _ = astroscrappy.detect_cosmics(
        image,
        inmask=hot_mask,
        inbkg=sky,
        sigclip=4.5,
        sigfrac=0.3,
        objlim=objlim,
        gain=gain,
        readnoise=read_noise_e,
        satlevel=sat_e,
        niter=4,
        sepmed=True,
        cleantype="meanmask",
        fsmode="median",
    )
    return time.perf_counter() - t0, crmask


def pick_quadrants(names: list[str], n: int) -> list[str]:
    """N quadrants spread evenly over the file order."""
    n = max(1, min(n, len(names)))
    return [names[i] for i in np.unique(np.linspace(0, len(names) - 1, n).round().astype(int))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quadrants", type=int, default=4, help="full-size quadrants to measure")
    ap.add_argument("--repeat", type=int, default=2, help="viskom timing: best of this many")
    ap.add_argument("--objlim", type=float, nargs="+", default=[5.0, 15.0])
    ap.add_argument("--show", type=int, default=25, help="missed viskom hits to list")
    args = ap.parse_args()

    from viskom.le1.frame import Le1Frame
    from viskom.measure.catalogue import ExtractionParams, extract_sources
    from viskom.measure.cosmics import HitParams, detect_hits, hot_pixel_indices
    from viskom.measure.hit_counts import star_guards

    sci_path = full_frame()
    objects_path = sci_path.with_name(sci_path.name.removesuffix(".fits") + ".objects.parquet")
    dark_paths = dark_frames()
    frame = Le1Frame(sci_path)
    darks = [Le1Frame(p) for p in dark_paths]
    names = pick_quadrants(frame.quadrant_extnames, args.quadrants)
    objects = read_objects(objects_path, names)
    print(f"frame: {sci_path.name}; darks: {', '.join(p.name for p in dark_paths)}")
    print(
        "astroscrappy: gain = GAIN (e-/ADU), readnoise = RDNOISE (e-), satlevel = "
        "(SATURATE - bias) x gain (e-), inbkg = sep sky (mesh 64, filter 3), inmask = hot "
        "pixels,\n  sigclip 4.5, sigfrac 0.3, niter 4, sepmed, cleantype meanmask, fsmode median, "
        f"objlim {' / '.join(f'{o:g}' for o in args.objlim)}; one thread"
    )
    params = HitParams()
    timing: dict[str, dict[str, float]] = {}
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    methods = ["viskom", *(f"astro o{o:g}" for o in args.objlim)]
    missed: dict[str, list[tuple]] = {m: [] for m in methods}
    for name in names:
        quad = frame.quadrant(name)
        g = quad.geometry
        image, bias = image_area(quad)
        height, width = image.shape
        hot = hot_pixel_indices([image_area(d.quadrant(name))[0] for d in darks])
        hot_mask = np.zeros(image.size, dtype=bool)
        hot_mask[hot] = True
        hot_mask = hot_mask.reshape(image.shape)
        gain = quad.header.gain_e_per_adu or 3.4
        read_noise = quad.header.read_noise_e or 4.2
        sat = None if quad.header.saturate_adu is None else quad.header.saturate_adu - bias
        # catalogue (extract_sources sky-subtracts a float32 image in place: give it a copy)
        work = image.copy()
        t0 = time.perf_counter()
        cat = extract_sources(
            work, gain_e_per_adu=gain, saturation_adu=sat, params=ExtractionParams()
        )
        t_cat = time.perf_counter() - t0
        del work
        cat["extname"] = np.full(len(cat["number"]), name)
        guard = star_guards(cat).get(name)
        obj = None if guard is None else (guard[0] - 1.0, guard[1] - 1.0, guard[2])
        t_hits = np.inf
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            hits = detect_hits(
                image,
                gain_e_per_adu=gain,
                saturation_adu=sat,
                objects=obj,
                hot_pixels=hot,
                params=params,
                return_labels=True,
            )
            t_hits = min(t_hits, time.perf_counter() - t0)
        masked = hits["masked"]
        truth = quadrant_truth(objects, name, g.image.col0, g.image.row0, image.shape)
        timing[name] = {"viskom": t_hits, "catalogue": t_cat}
        scores[name] = {"viskom": score(hits["labels"], hits["x"].size, masked, truth)}
        del hits
        sat_e = np.inf if sat is None else sat * gain
        for objlim, method in zip(args.objlim, methods[1:], strict=True):
            t_as, crmask = run_astroscrappy(image, gain, read_noise, sat_e, hot_mask, objlim)
            labels, n = ndimage.label(crmask, structure=BOX3)
            timing[name][method] = t_as
            scores[name][method] = score(labels, n, masked, truth)
            del crmask, labels
        origins = guard_origins(obj, truth)
        for m in methods:
            rows = missed_hits(scores[name][m]["missed"], truth, obj, origins)
            missed[m] += [(name, *r) for r in rows]
        true_hot = np.rint(truth.hot).astype(np.int64) @ np.array([1, width])
        on = {k: int(np.sum(origins == k)) for k in ("star", "galaxy", "particle", "other")}
        print(
            f"  {name}: {width} x {height}, {len(cat['number'])} catalogue sources, "
            f"{origins.size} star guards (on a truth star {on['star']}, galaxy {on['galaxy']}, "
            f"particle hit only {on['particle']}, nothing {on['other']}), hot-pixel map "
            f"{hot.size} pixels ({int(np.isin(true_hot, hot).sum())} of the "
            f"{true_hot.size} truth hot pixels), {int(masked.sum())} masked pixels",
            flush=True,
        )
    for d in darks:
        d.close()
    frame.close()

    # --- timing table ----------------------------------------------------------------------
    astro = methods[1:]
    print(
        f"\nTime per quadrant (s): viskom detect_hits best of {args.repeat}, catalogue "
        "(extract_sources) 1 run, astroscrappy 1 run; ratio = astroscrappy / detect_hits"
    )
    head = f"{'quadrant':<10}{'detect_hits':>12}{'catalogue':>11}"
    head += "".join(f"{m:>12}" for m in astro) + "".join(f"{'ratio ' + m[6:]:>11}" for m in astro)
    print(head)
    tot = {k: sum(timing[q][k] for q in names) for k in ["viskom", "catalogue", *astro]}
    for q in [*names, "mean"]:
        t = {k: v / len(names) for k, v in tot.items()} if q == "mean" else timing[q]
        row = f"{q:<10}{t['viskom']:>12.2f}{t['catalogue']:>11.2f}"
        row += "".join(f"{t[m]:>12.2f}" for m in astro)
        row += "".join(f"{t[m] / t['viskom']:>11.1f}" for m in astro)
        print(row)
    for m in astro:
        print(
            f"{m}: {tot[m] / tot['viskom']:.1f} x detect_hits, "
            f"{tot[m] / (tot['viskom'] + tot['catalogue']):.1f} x (detect_hits + catalogue)"
        )

    # --- quality table ---------------------------------------------------------------------
    print(
        f"\nAgainst the truth: particle hits > {MIN_CHARGE_ADU:g} ADU outside masked areas; "
        "false = components with no pixel within 1 px of a truth track"
    )
    print(
        f"{'quadrant':<10}{'method':<13}{'truth':>7}{'found':>7}{'complete':>10}"
        f"{'comps':>7}{'false':>7}{'false %':>9}{'stars':>7}{'gal':>5}{'hot':>5}"
    )
    keys = ("eligible", "found", "components", "false", "false_star", "false_galaxy", "false_hot")
    for q in [*names, "total"]:
        for i, m in enumerate(methods):
            s = (
                {k: sum(scores[n][m][k] for n in names) for k in keys}
                if q == "total"
                else scores[q][m]
            )
            comp = 100.0 * s["found"] / s["eligible"] if s["eligible"] else float("nan")
            frac = 100.0 * s["false"] / s["components"] if s["components"] else float("nan")
            print(
                f"{q if i == 0 else '':<10}{m:<13}{s['eligible']:>7}{s['found']:>7}"
                f"{comp:>9.2f}%{s['components']:>7}{s['false']:>7}{frac:>8.2f}%"
                f"{s['false_star']:>7}{s['false_galaxy']:>5}{s['false_hot']:>5}"
            )
    print(
        "(stars, gal: false components within 3 px of a truth star, galaxy centre; hot: within "
        "1.5 px of a truth hot pixel)"
    )

    print()
    for m in methods:
        rows = missed[m]
        if not rows:
            print(f"{m}: no truth hit missed")
            continue
        q = np.array([r[4] for r in rows])
        d = np.array([r[7] for r in rows])
        dg = np.array([r[9] for r in rows])
        guard = np.array([r[10] for r in rows])
        print(
            f"{m}: {len(rows)} missed, median charge {np.median(q):.0f} ADU, "
            f"{np.sum(q < 100)} below 100 ADU; within 3 px of a truth star {np.sum(d <= 3)}, "
            f"of a galaxy centre {np.sum(dg <= 3)}; "
            f"inside a viskom star guard {np.sum(guard != '')}"
            f" (on a star {np.sum(guard == 'star')}, galaxy {np.sum(guard == 'galaxy')}, "
            f"particle hit only {np.sum(guard == 'particle')})"
        )
    rows = missed["viskom"]
    if rows:
        print(f"\nTruth hits viskom missed ({len(rows)}; first {args.show}):")
        print(
            f"{'quadrant':<10}{'kind':<8}{'x':>7}{'y':>7}{'charge':>9}{'length':>8}{'npix':>6}"
            f"{'d_star':>8}{'star ADU':>10}{'d_gal':>7}  in guard on"
        )
        for r in rows[: args.show]:
            print(
                f"{r[0]:<10}{r[1]:<8}{r[2]:>7.1f}{r[3]:>7.1f}{r[4]:>9.1f}{r[5]:>8.2f}{r[6]:>6}"
                f"{r[7]:>8.1f}{r[8]:>10.0f}{r[9]:>7.1f}  {r[10] or '-'}"
            )
    print(f"\npeak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
