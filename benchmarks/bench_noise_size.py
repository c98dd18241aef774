"""The asteroid's flux error against the stack's size (issue #10).

The Lowell frames of (5945) (``$SHIFTSTACK_CCD_DATA/lowell42-5945``), calibrated as the
tests do, stacked on the asteroid at several sizes and measured: the same central pixels,
so the noise part of ``flux_err`` must not depend on the size. Printed per size: the total
``flux_err``, its noise part, the aperture-correction part (from the sky stack's stars, as
many as the stack holds) and the S/N, then the ratio of the noise parts to the largest
stack's.

Run: ``SHIFTSTACK_CCD_DATA=... python benchmarks/bench_noise_size.py [--sizes 119 201 301 601]``
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

import shiftstack_ccd as ss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lowell_helpers import asteroid_motion, calibrated  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[119, 161, 201, 301, 601])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    raw, frames = calibrated(ss.get_data_path("lowell42-5945"))
    track, eph = asteroid_motion(raw, frames)
    print(f"{'size':>5} {'flux':>9} {'flux_err':>9} {'noise':>7} {'apcor':>7} {'S/N':>6} "
          f"{'PSF stars':>9}")
    noise = {}
    for size in args.sizes:
        m = ss.measure_target(ss.shift_and_stack(frames, eph, size=size, sigma_clip=True))
        flux, err = m["flux"][0].value, m["flux_err"][0].value
        apcor = flux * m.meta["aperture_correction_err"] / m.meta["aperture_correction"]
        noise[size] = np.sqrt(max(err ** 2 - apcor ** 2, 0.0))
        print(f"{size:5d} {flux:9.0f} {err:9.1f} {noise[size]:7.1f} {apcor:7.1f} "
              f"{m['snr'][0]:6.1f} {m.meta['psf_stars']:9d}")
    largest = max(args.sizes)
    print("noise part / the largest stack's: "
          + ", ".join(f"{s}: {noise[s] / noise[largest]:.3f}" for s in args.sizes))


if __name__ == "__main__":
    main()
