"""A small stack of real raw frames: shift_and_stack against the naive script, one process.

The ten raw Lowell 42-inch frames of (5945) Roachapproach (1432 x 1370, ADU, no uncertainty),
a ``size`` x ``size`` median on the target, three ways in the same process:

* ``api``        ``shift_and_stack(paths, eph, method="median", size=size)``: uncertainty,
                 mask, coverage, sky stack and provenance included;
* ``api-nosky``  the same with ``sky_stack=False``;
* ``naive``      what one would write by hand: read each frame, ``reproject_interp`` it onto
                 its target-centred grid (`TargetFrame.wcs_at`), then
                 ``ccdproc.Combiner(...).median_combine()``: no uncertainty, no provenance.

Each is run ``--repeat`` times after one warm-up (imports, caches); the best wall time and
the best CPU time are given with the ratio naive / case (above 1: faster than the naive
script). On a shared machine compare CPU times. ``--size 1517`` is the full field.
``--profile``: a cProfile summary (the top entries by cumulative time). ``--write FILE`` /
``--compare FILE``: write this version's stack, or compare it with one another version
wrote (per pixel, in units of that stack's uncertainty), instead of timing.

Measured (2 cores shared with other jobs: CPU times; the previous version in the same
conditions, just before, in brackets)::

    size 301, best of 5, load 3:
               naive 0.91 s   api 0.60 s (1.52x)   api-nosky 0.50 s (1.82x)
              [naive 0.91 s   api 0.75 s (1.21x)   api-nosky 0.59 s (1.54x)]
    size 1517, best of 1, load 3:
               naive 33.6 s   api 14.9 s (2.25x; wall 2.68x)   api-nosky 8.1 s (4.18x)
              [naive 33.6 s   api 15.8 s (2.12x; wall 2.17x)   api-nosky 10.6 s (3.18x)]

Where the api's time goes at size 301, per frame (process CPU, load 2.5, 62 ms a frame
with the combines and the plan): reading 11 ms (the header and WCS for the plan 5, then
the pixels 6, 16-bit pixels read by astropy as float32 at once); noise and sky model of
the 331 x 332 cutout 18 ms (Background2D 7, the biweight pixel noise 3 + 1, the source
mask 4 of which 2.5 the box medians, the model's median 1); the two resamplings, sky and
target grids in one call, 25 ms (``map_coordinates`` 15: cubic data and bilinear variance
on each grid; the pixel maps 3; the spline coefficients 1.3, once for both grids; the
headers 2); target check, crop, trimsec and the detector model 3 ms. Then the two
combines 27 ms in all (a sorting network for the median of few frames) and the plan, the
per-frame table and the header about 35 ms. Against ~90 ms a frame for the naive script.
Most of what is left is the output's own work (interpolation, the noise and the sky of each
frame); the rest is astropy's header and WCS parsing, paid by the naive script too. A BLAS
call in the per-frame path costs more than it says: OpenBLAS's threads spin on after it,
in the process's CPU time (a ``numpy.dot`` in the pixel noise doubled the whole stack's
CPU time). Before/after: ``--compare`` on the
previous version's stack: target and sky stacks identical (max difference 0.000 sigma,
uncertainty ratio 1.0000), mask and coverage identical.

Run::

    SHIFTSTACK_CCD_DATA=/path/to/data python benchmarks/bench_small_stack.py
    python benchmarks/bench_small_stack.py --size 301 --repeat 3 --profile
"""

import argparse
import cProfile
import glob
import os
import pstats
import time


def _setup():
    from astropy import units as u

    import shiftstack_ccd as ss
    paths = sorted(glob.glob(str(ss.get_data_path("lowell42-5945/5945") / "*.fits")))
    footprint = ss.read_footprint(paths[0])
    # A linear motion through the frame centre at the asteroid's rate (~0.7 px per frame):
    # only where the grid lies matters for the timing.
    centre = footprint.wcs.pixel_to_world(700, 685)
    eph = ss.Ephemeris.linear(centre, ss.mid_exposure_time(footprint.header),
                              -20 * u.arcsec / u.hour, 8 * u.arcsec / u.hour)
    return paths, eph


def api(paths, eph, size, sky_stack=True):
    import shiftstack_ccd as ss
    return ss.shift_and_stack(paths, eph, method="median", size=size, sky_stack=sky_stack).stack


def naive(paths, eph, size):
    import numpy as np
    from astropy.nddata import CCDData
    from astropy.time import Time
    from ccdproc import Combiner
    from reproject import reproject_interp

    import shiftstack_ccd as ss
    frames = [ss.read_frame(p) for p in paths]
    times = Time([ss.mid_exposure_time(f) for f in frames])
    grid = ss.TargetFrame(eph, Time(np.mean(times.mjd), format="mjd"), (size, size),
                          frames[0].wcs.proj_plane_pixel_scales()[0])
    out = []
    for frame, t in zip(frames, times):
        wcs = grid.wcs_at(t)
        data, footprint = reproject_interp((frame.data, frame.wcs), wcs, (size, size))
        out.append(CCDData(data, unit=frame.unit, wcs=wcs, mask=footprint == 0))
    return Combiner(out).median_combine()


def _write_or_compare(paths, eph, size, write, compare):
    """Write this version's stack, or compare it with another's: per pixel in units of the
    other's uncertainty (target and sky stacks), the uncertainties, mask and coverage."""
    import numpy as np

    import shiftstack_ccd as ss
    result = ss.shift_and_stack(paths, eph, method="median", size=size)
    if write:
        result.write(write, overwrite=True)
    if compare:
        other = ss.StackResult.read(compare)
        for name, new, old in (("target", result.stack, other.stack),
                               ("sky", result.sky_stack, other.sky_stack)):
            ok = np.isfinite(new.data) & np.isfinite(old.data)
            z = (new.data - old.data)[ok] / old.uncertainty.array[ok]
            ratio = (new.uncertainty.array / old.uncertainty.array)[ok]
            print(f"{name} stack - {compare}: max |difference| {np.abs(z).max():.3f} sigma, "
                  f"rms {np.sqrt(np.mean(z ** 2)):.3f}, mean {np.mean(z):+.3f}; uncertainty "
                  f"ratio median {np.median(ratio):.4f} ({ratio.min():.4f}-{ratio.max():.4f})")
        print(f"mask equal: {np.array_equal(result.stack.mask, other.stack.mask)}, coverage "
              f"equal: {np.array_equal(result.coverage, other.coverage)}")


def _best(function, repeat, *args, **kwargs):
    """Best wall time and best CPU time (user + system) of ``repeat`` calls.

    CPU time is what to compare on a shared machine: other processes stretch the wall time.
    """
    walls, cpus = [], []
    for _ in range(repeat):
        cpu, start = os.times(), time.perf_counter()
        function(*args, **kwargs)
        walls.append(time.perf_counter() - start)
        after = os.times()
        cpus.append(after.user - cpu.user + after.system - cpu.system)
    return min(walls), min(cpus)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=301)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--write", metavar="FILE",
                        help="only write the api case's StackResult there (no timing)")
    parser.add_argument("--compare", metavar="FILE",
                        help="only compare the api case's stack with one written by --write")
    args = parser.parse_args()
    paths, eph = _setup()
    if args.write or args.compare:
        _write_or_compare(paths, eph, args.size, args.write, args.compare)
        return
    api(paths[:2], eph, args.size)  # warm-up: imports and caches
    naive(paths[:2], eph, args.size)
    t_naive = _best(naive, args.repeat, paths, eph, args.size)
    t_api = _best(api, args.repeat, paths, eph, args.size)
    t_nosky = _best(api, args.repeat, paths, eph, args.size, sky_stack=False)
    print(f"{len(paths)} raw Lowell frames, median, size {args.size}, best of {args.repeat}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'case':<12}{'wall (s)':>10}{'naive/case':>12}{'cpu (s)':>10}{'naive/case':>12}")
    for name, (wall, cpu) in (("naive", t_naive), ("api", t_api), ("api-nosky", t_nosky)):
        print(f"{name:<12}{wall:>10.3f}{t_naive[0] / wall:>12.2f}{cpu:>10.3f}"
              f"{t_naive[1] / cpu:>12.2f}")
    print(f"the sky stack costs {100 * (t_api[1] / t_nosky[1] - 1):.0f}% (cpu)")
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        api(paths, eph, args.size)
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
