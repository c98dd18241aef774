"""FFT subpixel registration (shiftstack_ccd.register) against the seed's direct correlation.

Four measures, printed as tables:

1. **Speed.** The seed notebook's ``find_image_shift`` (``scipy.signal.correlate2d`` on
   whole frames, O(N^4)) against ``measure_offset`` (FFT + 1/100 pixel upsampled peak) on
   whole N x N frames. The direct one is timed at 128 and 256, its scaling exponent fitted
   from those two, and it is extrapolated to 1024 (about three quarters of an hour) unless
   ``--direct-1024`` asks to run it. Peak Python memory (tracemalloc) per call.
2. **The seed's off-by-one.** Both on a star field shifted by a known whole-pixel amount,
   even and odd sizes: the seed reads its zero lag one pixel off for even sizes.
3. **Accuracy vs S/N**, plain cross-correlation (our default) against phase correlation:
   ``refine_offsets`` on sequences of 10 cutouts of 48 x 48 (Gaussian FWHM 3 px, sky 200 e-,
   read noise 5 e-, offsets uniform in +/-1.5 px), S/N 50, 20, 10 in a radius-FWHM aperture.
4. **refine_offsets run time** for 10 and 30 cutouts.

Run::

    python benchmarks/bench_register.py              # about a minute on one core
    python benchmarks/bench_register.py --direct-1024  # also time the seed on 1024 (~30 min)
"""

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def find_image_shift(image1, image2):
    """The seed notebook's function, verbatim in substance: the baseline, not for use."""
    from scipy import signal
    correlation = signal.correlate2d(image1, image2, boundary="symm", mode="same")
    y_max, x_max = np.unravel_index(np.argmax(correlation), correlation.shape)
    center_y, center_x = np.array(image1.shape) // 2
    dy = y_max - center_y
    dx = x_max - center_x
    return dx, dy


def star_field(size, seed=0):
    """A noiseless star field (sky-subtracted) from the package simulator, ``size`` square."""
    from astropy import units as u

    from shiftstack_ccd.datasets import simulate_observation
    sim = simulate_observation(n_frames=1, shape=(size, size), n_stars=max(20, size ** 2 // 800),
                               noise=False, cosmic_rays=False, max_rotation=0 * u.deg,
                               unit="electron", seed=seed)
    return np.asarray(sim.frames[0].data, dtype=float) - sim.sky


def shifted_pair(field, n, dx, dy):
    """(image, reference), n x n, the features of image at reference + (dx, dy)."""
    y0 = x0 = (field.shape[0] - n) // 2
    reference = field[y0:y0 + n, x0:x0 + n]
    image = field[y0 - dy:y0 - dy + n, x0 - dx:x0 - dx + n]
    return image, reference


def timed(function, *args, repeat=1, **kwargs):
    """Best wall time of ``repeat`` calls and the peak traced memory (MB) of one."""
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    function(*args, **kwargs)
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    return result, best, peak


def bench_speed(field, run_direct_1024):
    from shiftstack_ccd.register import measure_offset
    print("\n1. Whole-frame registration, seed's direct correlate2d vs FFT (measure_offset)")
    print(f"{'N':>6} {'direct (s)':>14} {'MB':>7} {'FFT (s)':>10} {'MB':>7} {'ratio':>10}")
    direct = {}
    for n in (128, 256, 1024):
        image, reference = shifted_pair(field, n, 3, -2)
        _, t_fft, m_fft = timed(measure_offset, image, reference, repeat=3)
        if n < 1024 or run_direct_1024:
            _, t_dir, m_dir = timed(find_image_shift, image, reference,
                                    repeat={128: 3, 256: 2}.get(n, 1))
            direct[n] = t_dir
            label, mem = f"{t_dir:.3f}", f"{m_dir:.1f}"
        else:
            exponent = np.log(direct[256] / direct[128]) / np.log(2)
            t_dir = direct[256] * (n / 256) ** 4
            label, mem = f"~{t_dir:.0f} (extr.)", "-"
            print(f"       (direct at 1024 extrapolated from 256 as N^4; the exponent fitted "
                  f"on 128 and 256 is {exponent:.2f}, which would give "
                  f"{direct[256] * (n / 256) ** exponent:.0f} s)")
        print(f"{n:>6} {label:>14} {mem:>7} {t_fft:>10.4f} {m_fft:>7.1f} {t_dir / t_fft:>10.0f}")


def bench_off_by_one(field):
    from shiftstack_ccd.register import measure_offset
    print("\n2. Known whole-pixel shift (features of image at reference + (dx, dy))")
    print(f"{'N':>6} {'true':>10} {'seed':>10} {'ours':>16}")
    for n in (128, 127, 64, 65):
        for true in ((3, -2), (0, 5)):
            image, reference = shifted_pair(field, n, *true)
            seed = find_image_shift(image, reference)
            ours = measure_offset(image, reference)
            print(f"{n:>6} {str(true):>10} {str(tuple(int(v) for v in seed)):>10} "
                  f"({ours.dx:+.2f}, {ours.dy:+.2f})")


def gaussian(shape, x0, y0, fwhm):
    from scipy.special import erf
    sigma = fwhm / np.sqrt(8 * np.log(2))

    def profile(n, c):
        edges = np.arange(n + 1) - 0.5
        return np.diff(0.5 * erf((edges - c) / (np.sqrt(2) * sigma)))
    return np.outer(profile(shape[0], y0), profile(shape[1], x0))


def noisy_sequence(rng, n_frames, snr, size=48, fwhm=3.0, sky=200.0, read_noise=5.0):
    """Cutouts with uniform +/-1.5 px offsets; S/N in a radius-FWHM aperture of pixel centres."""
    c = (size - 1) / 2
    psf = gaussian((size, size), c, c, fwhm)
    yy, xx = np.mgrid[0:size, 0:size]
    aperture = np.hypot(xx - c, yy - c) <= fwhm
    f, background = psf[aperture].sum(), aperture.sum() * (sky + read_noise ** 2)
    flux = (snr ** 2 * f + np.sqrt(snr ** 4 * f ** 2 + 4 * f ** 2 * snr ** 2 * background)) \
        / (2 * f ** 2)
    true = rng.uniform(-1.5, 1.5, (n_frames, 2))
    cuts = [rng.poisson(sky + flux * gaussian((size, size), c + dx, c + dy, fwhm))
            + rng.normal(0, read_noise, (size, size)) for dx, dy in true]
    return cuts, true


def bench_accuracy(sequences):
    import warnings

    from shiftstack_ccd.register import refine_offsets
    print(f"\n3. refine_offsets accuracy, {sequences} sequences of 10 cutouts 48 x 48, "
          "per-axis errors of the relative offsets (px)")
    print(f"{'S/N':>5} {'normalization':>14} {'rms':>8} {'max':>8} {'rms*S/N':>8} "
          f"{'refused':>8} {'passes':>7} {'unsettled':>10}")
    for snr in (50, 20, 10):
        for norm in (None, "phase"):
            rng = np.random.default_rng(snr)
            errors, refused, passes, unsettled = [], 0, [], 0
            for _ in range(sequences):
                cuts, true = noisy_sequence(rng, 10, snr)
                with warnings.catch_warnings():  # counted in 'unsettled' instead
                    warnings.simplefilter("ignore")
                    dx, dy, ok, table = refine_offsets(cuts, normalization=norm)
                unsettled += not table.meta["converged"]
                tx, ty = true[:, 0] - true[ok, 0].mean(), true[:, 1] - true[ok, 1].mean()
                errors += list((dx - tx)[ok]) + list((dy - ty)[ok])
                refused += int((~ok).sum())
                passes.append(table.meta["iterations"])
            errors = np.array(errors)
            rms = np.sqrt(np.mean(errors ** 2))
            print(f"{snr:>5} {str(norm):>14} {rms:>8.4f} {np.max(np.abs(errors)):>8.3f} "
                  f"{rms * snr:>8.2f} {refused:>8d} {np.mean(passes):>7.1f} "
                  f"{unsettled:>10d}")


def bench_refine_time():
    from shiftstack_ccd.register import refine_offsets
    print("\n4. refine_offsets run time (S/N 20, 48 x 48 cutouts)")
    rng = np.random.default_rng(0)
    for n in (10, 30):
        cuts, _ = noisy_sequence(rng, n, 20)
        (_, _, _, table), t, peak = timed(refine_offsets, cuts, repeat=3)
        print(f"{n:>4} frames: {t:.3f} s for {table.meta['iterations']} passes, "
              f"peak {peak:.1f} MB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direct-1024", action="store_true",
                        help="time the seed's direct correlation on 1024 x 1024 (~30 min)")
    parser.add_argument("--sequences", type=int, default=10,
                        help="simulated sequences per S/N in the accuracy table")
    args = parser.parse_args()
    import scipy
    import skimage
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, scikit-image "
          f"{skimage.__version__}")
    field = star_field(1100)
    bench_speed(field, args.direct_1024)
    bench_off_by_one(field)
    bench_accuracy(args.sequences)
    bench_refine_time()


if __name__ == "__main__":
    main()
