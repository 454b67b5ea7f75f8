"""Benchmark: sep vs photutils for VIS quadrant catalogues (the choice of default engine).

Usage: python benchmarks/bench_catalogue_engines.py FRAME [--quadrants 6]

Runs both libraries with VISQL's SExtractor settings (background mesh 64, filter 3,
1.5 sigma over 5 pixels, 3x3 filter, 32 deblending levels at 0.005) on the same
bias-subtracted full-size quadrants and prints wall time per quadrant, the ratio, and
the number of sources each finds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def photutils_catalogue(image: np.ndarray) -> int:
    from astropy.convolution import convolve
    from photutils.background import Background2D, MedianBackground
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources

    bkg = Background2D(image, (64, 64), filter_size=(3, 3), bkg_estimator=MedianBackground())
    data = image - bkg.background
    kernel = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], float) / 16.0
    conv = convolve(data, kernel)
    thresh = 1.5 * bkg.background_rms_median
    segm = detect_sources(conv, thresh, n_pixels=5)
    if segm is None:
        return 0
    segm = deblend_sources(conv, segm, n_pixels=5, n_levels=32, contrast=0.005, progress_bar=False)
    cat = SourceCatalog(data, segm, convolved_data=conv)
    _ = cat.kron_flux, cat.fluxfrac_radius(0.5), cat.semimajor_axis, cat.semiminor_axis
    return len(cat)


def main() -> None:
    from viskom.le1.frame import Le1Frame
    from viskom.measure.catalogue import extract_sources
    from viskom.measure.robust import clipped_stats

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("frame")
    ap.add_argument("--quadrants", type=int, default=6)
    args = ap.parse_args()
    t_sep, t_pu, n_sep, n_pu = [], [], [], []
    with Le1Frame(args.frame) as frame:
        for name in frame.quadrant_extnames[: args.quadrants]:
            q = frame.quadrant(name)
            bias = clipped_stats(q.data[q.geometry.serial_overscan.slices]).mean
            image = q.data[q.geometry.image.slices].astype(np.float32) - np.float32(bias)
            t0 = time.perf_counter()
            n_sep.append(len(extract_sources(image, gain_e_per_adu=3.4)["number"]))
            t_sep.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            n_pu.append(photutils_catalogue(image))
            t_pu.append(time.perf_counter() - t0)
            print(
                f"{name}: sep {t_sep[-1]:.2f} s ({n_sep[-1]} sources), "
                f"photutils {t_pu[-1]:.2f} s ({n_pu[-1]} sources)",
                flush=True,
            )
    print(
        f"median per quadrant: sep {np.median(t_sep):.2f} s, photutils {np.median(t_pu):.2f} s, "
        f"photutils/sep = {np.median(t_pu) / np.median(t_sep):.1f}"
    )


if __name__ == "__main__":
    main()
