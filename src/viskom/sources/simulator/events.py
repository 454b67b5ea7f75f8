"""Particle events: galactic cosmic rays, solar X-ray photons and energetic protons.

Cosmic rays are minimum-ionising tracks through the sensitive layer (`depletion_um`, 40 um;
12 um pixels). The flux through the detector plane per solid angle goes as cos^n(theta)
(`cosmic_zenith_power` n; n = 1, isotropic radiance, gives cos^2(theta) uniform): the projected
length L = (depletion / 12 um) tan(theta) px is then mostly 0-10 px (median 3.3 px) with a
1/(1 + x^2) tail to tens and hundreds of px (capped at 500 px). Charge is deposited at points
every half pixel along the track, each with a Landau-like (Moyal) fluctuation of relative width
`cosmic_landau_width` around `cosmic_e_per_um` (most probable) per um of path; a share
`cosmic_alpha_fraction` (1 %) of hits are alpha particles (x4).
Charge made at the back surface diffuses most: sigma goes from `diffusion_sigma_px` at entry to
0.15 px at the front. A vertical hit thus deposits ~2800-4000 e- over a few pixels.

X-ray events are single point deposits (400-1200 ADU total, times the quadrant gain in e-), with
sigma 0.15-0.45 px (1-4 pixels above noise). Protons are short tracks (0-4 px) with a total of
1e4-4e4 ADU (log-uniform) and sigma 0.35-0.7 px.

Per hit the truth gives the charge-weighted centroid, the projected length, the number of pixels
whose charge from that hit alone exceeds 3 sigma of the background noise, and the charge that
landed in the image area (ADU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
from scipy.special import erf

KIND_COSMIC, KIND_XRAY, KIND_PROTON = 0, 1, 2
KIND_NAMES = ("cosmic", "xray", "proton")
PIXEL_UM = 12.0
MAX_TRACK_PX = 500.0


def mean_rate_multiplier(
    multiplier: float | Callable[[datetime], float] | tuple[Sequence[datetime], Sequence[float]],
    start: datetime,
    duration_s: float,
    samples: int = 16,
) -> float:
    """Mean of a rate multiplier over [start, start + duration]: number, f(t) or (times, values)."""
    if multiplier is None:
        return 1.0
    if isinstance(multiplier, (int, float, np.integer, np.floating)):
        return float(multiplier)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    duration_s = max(float(duration_s), 1e-3)
    times = [start + timedelta(seconds=duration_s * (k + 0.5) / samples) for k in range(samples)]
    if callable(multiplier):
        return float(np.mean([float(multiplier(t)) for t in times]))
    tt, vv = multiplier
    ref = [(t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp() for t in tt]
    order = np.argsort(ref)
    x = np.asarray(ref, dtype=float)[order]
    y = np.asarray(vv, dtype=float)[order]
    return float(np.mean(np.interp([t.timestamp() for t in times], x, y)))


class HitList:
    """Points of charge deposition, grouped by hit (points of a hit are contiguous)."""

    def __init__(self) -> None:
        self.px: list[np.ndarray] = []
        self.py: list[np.ndarray] = []
        self.q: list[np.ndarray] = []
        self.sigma: list[np.ndarray] = []
        self.npts: list[np.ndarray] = []
        self.kind: list[np.ndarray] = []
        self.length: list[np.ndarray] = []
        self.phi: list[np.ndarray] = []

    def add_tracks(
        self,
        kind: int,
        cx: np.ndarray,
        cy: np.ndarray,
        length: np.ndarray,
        phi: np.ndarray,
        point_charge_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
        sigma_back: float | np.ndarray,
        sigma_front: float = 0.15,
    ) -> None:
        """Straight tracks centred on (cx, cy), one point every half pixel of projected length.

        point_charge_fn(hit index per point, number of points of that hit) -> charge per point.
        """
        n = cx.size
        if n == 0:
            return
        npts = np.maximum(1, np.ceil(length * 2.0)).astype(np.int64)
        hit = np.repeat(np.arange(n), npts)
        first = np.cumsum(npts) - npts
        k = np.arange(hit.size) - first[hit]
        t = (k + 0.5) / npts[hit]
        pos = (t - 0.5) * length[hit]
        self.px.append(cx[hit] + pos * np.cos(phi[hit]))
        self.py.append(cy[hit] + pos * np.sin(phi[hit]))
        sb = np.broadcast_to(np.asarray(sigma_back, dtype=float), (n,))[hit]
        self.sigma.append(np.sqrt(sigma_front**2 + sb**2 * (1.0 - t)))
        self.q.append(point_charge_fn(hit, npts[hit]))
        self.npts.append(npts)
        self.kind.append(np.full(n, kind, dtype=np.int8))
        self.length.append(np.asarray(length, dtype=float))
        self.phi.append(np.broadcast_to(np.asarray(phi, dtype=float), (n,)).copy())

    @property
    def n_hits(self) -> int:
        """Number of hits in the list."""
        return int(sum(a.size for a in self.kind))


def generate_hits(
    rng: np.random.Generator,
    width: int,
    height: int,
    *,
    n_cosmic: int,
    n_xray: int,
    n_proton: int,
    gain: float,
    e_per_um: float,
    depletion_um: float,
    sigma_back: float,
    xray_adu: tuple[float, float],
    proton_adu: tuple[float, float],
    zenith_power: float = 1.0,
    landau_width: float = 0.2,
    alpha_fraction: float = 0.01,
) -> HitList:
    """Hits with centres uniform over a width x height image area (pixel centres at integers)."""
    hits = HitList()

    def centres(n):
        return rng.uniform(-0.5, width - 0.5, n), rng.uniform(-0.5, height - 0.5, n)

    # Cosmic rays.
    cx, cy = centres(n_cosmic)
    # dN/dcos(theta) ~ cos^n(theta): cos(theta) = u^(1 / (n + 1))
    cos_t = rng.uniform(1e-9, 1.0, n_cosmic) ** (1.0 / (float(zenith_power) + 1.0))
    tan_t = np.sqrt(1.0 - cos_t**2) / cos_t
    length = np.minimum(depletion_um / PIXEL_UM * tan_t, MAX_TRACK_PX)
    path_um = np.sqrt(depletion_um**2 + (length * PIXEL_UM) ** 2)
    phi = rng.uniform(0.0, 2.0 * np.pi, n_cosmic)
    ion = np.where(rng.random(n_cosmic) < alpha_fraction, 4.0, 1.0)

    def cosmic_charge(hit, npts):
        moyal = -np.log(np.maximum(rng.standard_normal(hit.size) ** 2, 1e-12))
        fluct = np.maximum(0.2, 1.0 + landau_width * moyal)
        return e_per_um * path_um[hit] / npts * fluct * ion[hit]

    hits.add_tracks(KIND_COSMIC, cx, cy, length, phi, cosmic_charge, sigma_back)

    # X-ray photons: one point each.
    xx, xy = centres(n_xray)
    xq = rng.uniform(*xray_adu, n_xray) * gain
    xs = rng.uniform(0.15, 0.45, n_xray)
    hits.add_tracks(
        KIND_XRAY,
        xx,
        xy,
        np.zeros(n_xray),
        np.zeros(n_xray),
        lambda hit, npts: xq[hit],
        sigma_back=np.sqrt(np.maximum(xs**2 - 0.15**2, 0.0) * 2.0),
    )

    # Protons: short, very bright tracks.
    px, py = centres(n_proton)
    plen = rng.uniform(0.0, 4.0, n_proton)
    pphi = rng.uniform(0.0, 2.0 * np.pi, n_proton)
    lo, hi = np.log(proton_adu[0]), np.log(proton_adu[1])
    ptot = np.exp(rng.uniform(lo, hi, n_proton)) * gain

    def proton_charge(hit, npts):
        return ptot[hit] / npts * rng.uniform(0.8, 1.2, hit.size)

    hits.add_tracks(
        KIND_PROTON, px, py, plen, pphi, proton_charge, sigma_back=rng.uniform(0.5, 1.0, n_proton)
    )
    return hits


def _stencil(px, py, q, sig, hid, half: int, width: int, height: int):
    """Flattened stencil entries (gx, gy, charge, hit) of points; charge renormalised.

    Entries outside the image area get zero charge and clamped coordinates.
    """
    m = 2 * half + 1
    edges = np.arange(-half - 0.5, half + 1.0)
    ix = np.rint(px).astype(np.int64)
    iy = np.rint(py).astype(np.int64)
    s2 = (np.sqrt(2.0) * sig)[:, None]
    wx = np.diff(erf((ix[:, None] + edges[None, :] - px[:, None]) / s2), axis=1)
    wy = np.diff(erf((iy[:, None] + edges[None, :] - py[:, None]) / s2), axis=1)
    gx = ix[:, None] + np.arange(-half, half + 1)[None, :]
    gy = iy[:, None] + np.arange(-half, half + 1)[None, :]
    okx = (gx >= 0) & (gx < width)
    oky = (gy >= 0) & (gy < height)
    norm = q / (wx.sum(axis=1) * wy.sum(axis=1))
    wx = wx * okx
    wy = wy * (oky * norm[:, None])
    w = (wy[:, :, None] * wx[:, None, :]).ravel()
    gxc = np.clip(gx, 0, width - 1)
    gyc = np.clip(gy, 0, height - 1)
    gxf = np.repeat(gxc[:, None, :], m, axis=1).ravel()
    gyf = np.repeat(gyc[:, :, None], m, axis=2).ravel()
    return gxf, gyf, w, np.repeat(hid, m * m)


def deposit(hits: HitList, width: int, height: int, threshold_e: float) -> dict[str, np.ndarray]:
    """Deposit all hits on a (height, width) map with Gaussian diffusion.

    Each point spreads over a 3 x 3 pixel stencil (5 x 5 when sigma > 0.45 px), renormalised
    so that charge is conserved (charge falling outside the image area is lost).
    Returns the charge map (float64, e-) and per hit: kind, length_px, phi_deg (track direction
    from +x towards +y), charge_e (landed),
    centroid x, y (image-area pixels), npix (pixels above threshold_e from that hit alone).
    """
    n = hits.n_hits
    if n == 0:
        empty = np.zeros(0)
        return {
            "image": np.zeros((height, width), dtype=np.float64),
            "kind": np.zeros(0, dtype=np.int8),
            "length_px": empty,
            "phi_deg": empty,
            "charge_e": empty,
            "x": empty,
            "y": empty,
            "npix": np.zeros(0, dtype=np.int64),
        }
    px = np.concatenate(hits.px)
    py = np.concatenate(hits.py)
    q = np.concatenate(hits.q)
    sig = np.concatenate(hits.sigma)
    npts = np.concatenate(hits.npts)
    hid = np.repeat(np.arange(n), npts)
    wide = sig > 0.45
    parts = [
        _stencil(px[sel], py[sel], q[sel], sig[sel], hid[sel], half, width, height)
        for sel, half in ((~wide, 1), (wide, 2))
        if sel.any()
    ]
    gxv = np.concatenate([p[0] for p in parts])
    gyv = np.concatenate([p[1] for p in parts])
    wv = np.concatenate([p[2] for p in parts])
    hv = np.concatenate([p[3] for p in parts])
    image = np.bincount(gyv * width + gxv, weights=wv, minlength=height * width)
    charge = np.bincount(hv, weights=wv, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        cxw = np.bincount(hv, weights=wv * gxv, minlength=n) / charge
        cyw = np.bincount(hv, weights=wv * gyv, minlength=n) / charge
    # Per-hit pixel sums inside each hit's bounding box (points +- 2 px contain its stencils).
    starts = np.cumsum(npts) - npts
    ix = np.rint(px).astype(np.int64)
    iy = np.rint(py).astype(np.int64)
    x0 = np.minimum.reduceat(ix, starts) - 2
    y0 = np.minimum.reduceat(iy, starts) - 2
    bw = np.maximum.reduceat(ix, starts) + 3 - x0
    bh = np.maximum.reduceat(iy, starts) + 3 - y0
    area = bw * bh
    offset = np.cumsum(area) - area
    local = offset[hv] + (gyv - y0[hv]) * bw[hv] + (gxv - x0[hv])
    per_pixel = np.bincount(local, weights=wv, minlength=int(area.sum()))
    above = np.concatenate([(per_pixel > threshold_e).astype(np.int64), [0]])
    cum = np.concatenate([[0], np.cumsum(above)])
    npix = cum[offset + area] - cum[offset]
    return {
        "image": image.reshape(height, width),
        "kind": np.concatenate(hits.kind),
        "length_px": np.concatenate(hits.length),
        "phi_deg": np.degrees(np.concatenate(hits.phi)),
        "charge_e": charge,
        "x": cxw,
        "y": cyw,
        "npix": npix,
    }
