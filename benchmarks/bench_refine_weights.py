"""The refinement with the combine's weights against equal weights, frames of unequal noise.

`refine_offsets` (the per-frame refinement of `shift_and_stack(refine=True)`) fixes its
corrections' zero point (the gauge) and builds each frame's template with per-frame
weights; `shift_and_stack` now gives it the combine's (one over each frame's variance at
the target for an inverse-variance stack). Here ten 48 x 48 cutouts of a Gaussian target
(FWHM 3 px, sky 200 e-, read noise 5 e-, S/N 20 in a radius-FWHM aperture), four of them
with three times the noise (frames 0, 3, 6, 9), offsets uniform in +/-1.5 px, refined with
equal weights (as before) and with the inverse-variance ones. Printed:

1. each frame's correction against the truth (rms per axis, after the gauge), quiet and
   noisy frames apart, and the blur the corrections' errors leave in the inverse-variance
   stack (the weighted rms of the corrected frames' target positions about their mean);
2. the stacked target's position at the first frame's time (`refinement_shift`, a track
   error of 24 px/day, one frame refused), simulated from corrections with the two gauges:
   the scatter of the error and the error `refinement_shift` reports (Monte Carlo).

Run: ``python benchmarks/bench_refine_weights.py [--sequences 20] [--trials 3000]``
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_register import refined_epoch_errors, noisy_cutouts, READ_NOISE, SKY  # noqa: E402

from shiftstack_ccd.register import refine_offsets  # noqa: E402


def cutouts(rng, n, noisy, snr):
    true = rng.uniform(-1.5, 1.5, (n, 2))
    cuts = noisy_cutouts(rng, true, snr)
    extra = np.sqrt(8.0 * (SKY + READ_NOISE ** 2))  # 3 x the noise: 8 x its variance more
    return true, [c + rng.normal(0.0, extra, c.shape) if k else c
                  for c, k in zip(cuts, noisy)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=20)
    parser.add_argument("--trials", type=int, default=3000)
    args = parser.parse_args()
    n, snr = 10, 20
    noisy = np.arange(n) % 3 == 0
    v = np.where(noisy, 1.0 / 9.0, 1.0)
    v /= v.sum()
    rng = np.random.default_rng(0)
    errors = {"equal": [], "1/variance": []}
    start = time.perf_counter()
    for _ in range(args.sequences):
        true, cuts = cutouts(rng, n, noisy, snr)
        for name, weights in (("equal", None), ("1/variance", v)):
            dx, dy, ok, _ = refine_offsets(cuts, weights=weights)
            placed = true - np.column_stack([dx, dy])  # each corrected frame's target
            centre = np.average(placed[ok], axis=0, weights=v[ok])
            errors[name].append((placed - centre, ok))
    loud = ", ".join(str(i) for i in np.where(noisy)[0])
    print(f"1. refine_offsets on {args.sequences} sequences of {n} cutouts at S/N {snr}, "
          f"frames {loud} three times as noisy "
          f"({time.perf_counter() - start:.0f} s):")
    print(f"{'weights':>11} {'quiet frames':>13} {'noisy frames':>13} {'stack blur':>11} "
          "(px, rms per axis)")
    for name, runs in errors.items():
        quiet = np.concatenate([e[ok & ~noisy] for e, ok in runs])
        loud = np.concatenate([e[ok & noisy] for e, ok in runs])
        blur = np.sqrt(np.mean([np.sum(v[ok, None] * e[ok] ** 2) / v[ok].sum() / 2
                                for e, ok in runs]))
        print(f"{name:>11} {np.sqrt(np.mean(quiet ** 2)):13.4f} "
              f"{np.sqrt(np.mean(loud ** 2)):13.4f} {blur:11.4f}")

    t = 60000.0 + np.arange(n) * 300.0 / 86400.0
    sigma = np.where(noisy, 0.3, 0.1)
    ok = np.ones(n, dtype=bool)
    ok[4] = False
    print(f"\n2. the stacked position at the first frame's time, {args.trials} trials "
          "(per-frame errors 0.1 px, 0.3 px on the noisy frames; inverse-variance combine):")
    print(f"{'gauge':>11} {'scatter':>8} {'reported':>9} {'bias/error':>11}")
    trng = np.random.default_rng(12)
    for name, gauge in (("equal", np.ones(n)), ("1/variance", 1.0 / sigma ** 2)):
        err, reported = refined_epoch_errors(trng, gauge, 1.0 / sigma ** 2 / np.sum(
            1.0 / sigma ** 2), sigma, ok, t, t[0], 24.0, args.trials)
        print(f"{name:>11} {np.std(err):8.4f} {np.sqrt(np.mean(reported ** 2)):9.4f} "
              f"{np.mean(err) / (np.std(err) / np.sqrt(len(err))):+11.2f}")


if __name__ == "__main__":
    main()
