"""The simulated VIS PSF and the VISQL moment definitions used for its truth.

Model: an elliptical Moffat profile (core plus power-law wings; `beta = inf` gives a Gaussian),

    I(x) = (beta - 1) / (pi alpha^2) * (1 + |A x|^2 / alpha^2)^(-beta),

with A the area-preserving shear matrix of reduced shear (g1, g2), so the profile integrates to
one. It is integrated over pixels (5 x 5 sub-samples per pixel within 5 px of the centre, pixel
centres further out, where the profile is smooth). alpha is chosen so that a round PSF gives
VISQL's R2 = `psf_r2_px2` (about 1.95 px^2, FWHM ~0.163"), averaged over sub-pixel positions.
Across the focal plane (instrument X, Y in degrees, u = X/0.4, v = Y/0.4):

    alpha = alpha0 (1 + jitter) (1 + size_variation (u^2 + v^2))
    g1 = g1_0 + dg1 + astigmatism (u^2 - v^2) + tilt u
    g2 = g2_0 + dg2 + astigmatism (2 u v)     + tilt v

with per-frame jitter (size) and dg1, dg2 (shear) drawn from the frame seed.

Truth moments (VISQL-SPEC 5.5): on the noiseless pixelated PSF of a star, rendered at the star's
own sub-pixel position, Gaussian weight w = exp(-r^2 / (2 * 2.5^2)) about the weighted centroid
(iterated to convergence), q_ij = sum(w I dx^i dy^j) / sum(w I); R2 = q20 + q02,
e1 = (q20 - q02) / R2, e2 = 2 q11 / R2. These are what an ideal (noise-free, unsaturated,
unblended) measurement with VISQL's algorithm returns for that star.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.optimize import brentq

MOMENT_WEIGHT_SIGMA_PX = 2.5
MOMENT_HALF_WIDTH = 14  # VISQL's 29 x 29 stamp
FIELD_RADIUS_DEG = 0.4
_CORE = 5  # half-width (px) of the super-sampled core
_SUB = 5  # sub-samples per pixel and axis in the core


def _profile(x, y, alpha, g1, g2, beta):
    norm = 1.0 / np.sqrt(1.0 - g1 * g1 - g2 * g2)
    u = norm * ((1.0 - g1) * x - g2 * y)
    v = norm * (-g2 * x + (1.0 + g1) * y)
    if np.isinf(beta):  # the Gaussian limit: exp(-r^2 / alpha^2), sigma = alpha / sqrt(2)
        return np.exp(-(u * u + v * v) / (alpha * alpha)) / (np.pi * alpha * alpha)
    return (
        (beta - 1.0)
        / (np.pi * alpha * alpha)
        * (1.0 + (u * u + v * v) / (alpha * alpha)) ** (-beta)
    )


def render_psf(
    dx: np.ndarray,
    dy: np.ndarray,
    alpha: np.ndarray,
    g1: np.ndarray,
    g2: np.ndarray,
    beta: float,
    radius: int,
) -> np.ndarray:
    """Pixelated PSF stamps (n, 2R+1, 2R+1), centre at (R + dx, R + dy); total flux 1 (analytic).

    dx, dy: sub-pixel offsets of the PSF centre from the stamp's central pixel (|d| <= 0.5).
    """
    dx = np.asarray(dx, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    n = dx.size
    a = np.asarray(alpha, dtype=np.float64).reshape(n, 1, 1)
    G1 = np.asarray(g1, dtype=np.float64).reshape(n, 1, 1)
    G2 = np.asarray(g2, dtype=np.float64).reshape(n, 1, 1)
    i = np.arange(-radius, radius + 1, dtype=np.float64)
    X = i[None, None, :] - dx[:, None, None]
    Y = i[None, :, None] - dy[:, None, None]
    stamps = _profile(X, Y, a, G1, G2, beta)
    core = min(_CORE, radius)
    c = np.arange(-core, core + 1, dtype=np.float64)
    off = (np.arange(_SUB) + 0.5) / _SUB - 0.5
    s = (c[:, None] + off[None, :]).ravel()
    Xs = s[None, None, :] - dx[:, None, None]
    Ys = s[None, :, None] - dy[:, None, None]
    m = 2 * core + 1
    sub = _profile(Xs, Ys, a, G1, G2, beta).reshape(n, m, _SUB, m, _SUB).mean(axis=(2, 4))
    stamps[:, radius - core : radius + core + 1, radius - core : radius + core + 1] = sub
    return stamps


def weighted_moments(
    stamps: np.ndarray,
    sigma: float = MOMENT_WEIGHT_SIGMA_PX,
    iterations: int = 40,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """VISQL Gaussian-weighted moments of (n, S, S) stamps about the converged weighted centroid.

    Returns R2, e1, e2 and the centroid offsets (xc, yc) from the central pixel. Only the
    central 29 x 29 pixels are used, as VISQL does.
    """
    stamps = np.asarray(stamps, dtype=np.float64)
    half = stamps.shape[-1] // 2
    h = min(half, MOMENT_HALF_WIDTH)
    st = stamps[:, half - h : half + h + 1, half - h : half + h + 1]
    n = st.shape[0]
    grid = np.arange(-h, h + 1, dtype=np.float64)
    X = grid[None, None, :]
    Y = grid[None, :, None]
    xc = np.zeros(n)
    yc = np.zeros(n)
    inv = -0.5 / sigma**2
    for _ in range(iterations):
        ddx = X - xc[:, None, None]
        ddy = Y - yc[:, None, None]
        w = np.exp(inv * (ddx * ddx + ddy * ddy)) * st
        sw = w.sum(axis=(1, 2))
        stepx = (w * ddx).sum(axis=(1, 2)) / sw
        stepy = (w * ddy).sum(axis=(1, 2)) / sw
        xc += stepx
        yc += stepy
        if np.max(np.abs(stepx) + np.abs(stepy)) < 1e-9:
            break
    ddx = X - xc[:, None, None]
    ddy = Y - yc[:, None, None]
    w = np.exp(inv * (ddx * ddx + ddy * ddy)) * st
    sw = w.sum(axis=(1, 2))
    q20 = (w * ddx * ddx).sum(axis=(1, 2)) / sw
    q02 = (w * ddy * ddy).sum(axis=(1, 2)) / sw
    q11 = (w * ddx * ddy).sum(axis=(1, 2)) / sw
    r2 = q20 + q02
    return r2, (q20 - q02) / r2, 2.0 * q11 / r2, xc, yc


@lru_cache(maxsize=32)
def alpha_for_r2(beta: float, r2_target: float) -> float:
    """Moffat scale alpha (px) giving a round PSF the VISQL R2 `r2_target` (sub-pixel average)."""
    off = (np.arange(4) + 0.5) / 4 - 0.5
    dx, dy = (a.ravel() for a in np.meshgrid(off, off))
    zeros = np.zeros(dx.size)

    def excess(alpha: float) -> float:
        st = render_psf(dx, dy, np.full(dx.size, alpha), zeros, zeros, beta, 16)
        return float(weighted_moments(st)[0].mean()) - r2_target

    return float(brentq(excess, 0.3, 6.0, xtol=1e-6))


def moffat_fwhm(alpha: float, beta: float) -> float:
    """FWHM (px) of the Moffat profile (the Gaussian limit for beta = inf)."""
    if np.isinf(beta):
        return 2.0 * alpha * np.sqrt(np.log(2.0))
    return 2.0 * alpha * np.sqrt(2.0 ** (1.0 / beta) - 1.0)


def gaussian_r2(sigma_px: float) -> float:
    """VISQL R2 (Gaussian weight 2.5 px, sub-pixel average) of a round pixelated Gaussian PSF
    of this sigma: the `psf_r2_px2` that, with `psf_beta = inf`, simulates that Gaussian."""
    off = (np.arange(4) + 0.5) / 4 - 0.5
    dx, dy = (a.ravel() for a in np.meshgrid(off, off))
    zeros = np.zeros(dx.size)
    alpha = np.full(dx.size, float(sigma_px) * np.sqrt(2.0))
    st = render_psf(dx, dy, alpha, zeros, zeros, np.inf, 16)
    return float(weighted_moments(st)[0].mean())


@dataclass(frozen=True)
class PsfModel:
    """The PSF of one exposure as a function of instrument-frame position."""

    beta: float
    alpha0: float
    size_variation: float
    g1: float
    g2: float
    astigmatism: float
    tilt: float
    frame_size_factor: float = 1.0
    frame_dg1: float = 0.0
    frame_dg2: float = 0.0

    @classmethod
    def from_config(cls, config: Any, rng: np.random.Generator | None = None) -> PsfModel:
        """The PSF of a SimConfig, with this frame's jitter drawn from `rng` (none without)."""
        alpha0 = alpha_for_r2(float(config.psf_beta), float(config.psf_r2_px2))
        if rng is None:
            size, dg1, dg2 = 1.0, 0.0, 0.0
        else:
            j = float(config.psf_frame_jitter)
            size = float(1.0 + rng.normal(0.0, j))
            dg1, dg2 = (float(v) for v in rng.normal(0.0, 0.3 * j, 2))
        return cls(
            beta=float(config.psf_beta),
            alpha0=alpha0,
            size_variation=float(config.psf_size_variation),
            g1=float(config.psf_g1),
            g2=float(config.psf_g2),
            astigmatism=float(config.psf_astigmatism),
            tilt=float(config.psf_tilt),
            frame_size_factor=size,
            frame_dg1=dg1,
            frame_dg2=dg2,
        )

    def params_at(
        self, x_deg: np.ndarray | float, y_deg: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(alpha, g1, g2) at instrument-frame positions (degrees)."""
        u = np.asarray(x_deg, dtype=np.float64) / FIELD_RADIUS_DEG
        v = np.asarray(y_deg, dtype=np.float64) / FIELD_RADIUS_DEG
        alpha = self.alpha0 * self.frame_size_factor * (1.0 + self.size_variation * (u * u + v * v))
        g1 = self.g1 + self.frame_dg1 + self.astigmatism * (u * u - v * v) + self.tilt * u
        g2 = self.g2 + self.frame_dg2 + self.astigmatism * (2.0 * u * v) + self.tilt * v
        return alpha, g1, g2

    def describe(self) -> dict:
        """The PSF model and its parameters, for the truth file."""
        return {
            "model": "elliptical Moffat, pixel-integrated (5x5 sub-samples within 5 px)",
            "beta": self.beta,
            "alpha0_px": self.alpha0,
            "fwhm0_px": moffat_fwhm(self.alpha0, self.beta),
            "size_variation": self.size_variation,
            "g1": self.g1,
            "g2": self.g2,
            "astigmatism": self.astigmatism,
            "tilt": self.tilt,
            "field_radius_deg": FIELD_RADIUS_DEG,
            "frame_size_factor": self.frame_size_factor,
            "frame_dg1": self.frame_dg1,
            "frame_dg2": self.frame_dg2,
            "pattern": (
                "u=X/0.4, v=Y/0.4 (instrument deg); alpha=alpha0*frame_size_factor*"
                "(1+size_variation*(u^2+v^2)); g1=g1+frame_dg1+astigmatism*(u^2-v^2)+tilt*u; "
                "g2=g2+frame_dg2+astigmatism*2uv+tilt*v; shear A=[[1-g1,-g2],[-g2,1+g1]]/"
                "sqrt(1-g^2) applied to pixel offsets"
            ),
            "truth_moments": (
                "true_r2/e1/e2: VISQL moments (Gaussian weight sigma 2.5 px, 29x29 stamp, "
                "weighted centroid iterated to convergence; R2=q20+q02, e1=(q20-q02)/R2, "
                "e2=2q11/R2) of the noiseless pixelated PSF rendered at the star's own "
                "sub-pixel position"
            ),
        }
