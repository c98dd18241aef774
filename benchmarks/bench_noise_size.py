"""The asteroid's flux error against the stack's size (issue #10).

The Lowell frames of (5945) (``$SHIFTSTACK_CCD_DATA/lowell42-5945``), calibrated as the
tests do, stacked on the asteroid at several sizes and measured: the same central pixels,
so the noise part of ``flux_err`` must not depend on the size. Printed per size: the total
``flux_err``, its noise part, the aperture-correction part (from the sky stack's stars, as
many as the stack holds) and the S/N, then the ratio of the noise parts to the largest
stack's.

The whole field (``size=None``) and the command line's default size come first. Then, for
the aperture correction (issue #10's follow-up): its stars (those of the PSF fit without a
neighbour in the large aperture), the formal error their own errors give, whether they
disagree (the warning), and the flux's distance to the largest stack's in reported sigma.

Run: ``SHIFTSTACK_CCD_DATA=... python benchmarks/bench_noise_size.py [--sizes 119 201 301 601]``
"""

import argparse
import glob
import sys
import warnings
from pathlib import Path

import numpy as np

import shiftstack_ccd as ss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lowell_helpers import asteroid_motion, calibrated  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[119, 151, 161, 181, 201, 251, 301, 601])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    folder = ss.get_data_path("lowell42-5945")
    raw, frames = calibrated(folder)
    track, eph = asteroid_motion(raw, frames)
    print(f"{'size':>5} {'flux':>9} {'flux_err':>9} {'noise':>7} {'apcor':>7} {'S/N':>6} "
          f"{'PSF stars':>9} {'apcor stars':>11} {'crowded':>7} {'disagree':>8} "
          f"{'formal':>7}")
    noise, fluxes = {}, {}
    from shiftstack_ccd._auto_size import default_size
    # the command line's rule, on the raw files (the same pixels, the overscan aside)
    auto, _ = default_size(sorted(glob.glob(str(folder / "5945" / "*.fits"))), eph)
    labels = {None: "full", auto: f"{auto}*"}
    for size in [None, auto] + args.sizes:
        result = ss.shift_and_stack(frames, eph, size=size, sigma_clip=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = ss.measure_target(result)
        disagree = any("disagree" in str(w.message) for w in caught)
        flux, err = m["flux"][0].value, m["flux_err"][0].value
        meta = m.meta
        apcor = flux * meta["aperture_correction_err"] / meta["aperture_correction"]
        formal = flux * meta["aperture_correction_err_formal"] / meta["aperture_correction"]
        noise[size] = np.sqrt(max(err ** 2 - apcor ** 2, 0.0))
        fluxes[size] = (flux, err, np.hypot(noise[size], formal))
        label = labels.get(size, f"{size}")
        print(f"{label:>5} {flux:9.0f} {err:9.1f} {noise[size]:7.1f} {apcor:7.1f} "
              f"{m['snr'][0]:6.1f} {meta['psf_stars']:9d} {meta['aperture_stars']:11d} "
              f"{meta['aperture_stars_crowded']:7d} {'warns' if disagree else '-':>8} "
              f"{formal:7.1f}")
    largest = max(args.sizes)
    print("(full: the whole field, shift_and_stack's size=None; *: the command line's "
          "default size; apcor: the aperture correction's part of flux_err; formal: what "
          "the stars' own errors give; crowded: stars left out for a neighbour)")
    print("noise part / the largest stack's: "
          + ", ".join(f"{s}: {noise[s] / noise[largest]:.3f}" for s in args.sizes))
    ref = fluxes[largest][0]
    print(f"(flux - the {largest}-px stack's) / flux_err, and / the formal flux_err: "
          + ", ".join(f"{labels.get(s, s)}: {(f - ref) / e:+.2f} ({(f - ref) / fe:+.2f})"
                      for s, (f, e, fe) in fluxes.items() if s != largest))


if __name__ == "__main__":
    main()
