"""Time shift_and_stack against the naive ccdproc route, with peak memory.

Three ways to stack the same 10 simulated frames of 2048 x 2048 on a moving target:

* ``fast``      shift_and_stack on frames that share the grid's orientation and tangent
                point (pure translations: the shift path);
* ``warp``      shift_and_stack on frames rotated by up to 1 degree (warp path);
* ``naive``     what one would write with ccdproc alone: ``ccdproc.wcs_project`` of each
                frame onto its target-centred WCS, then ``ccdproc.combine``.

Each case runs in its own process so that its peak memory (ru_maxrss) is its own. The
frames are simulated once and written to a temporary folder; reading them is not timed.

Run::

    python benchmarks/bench_stack.py            # 10 frames of 2048 x 2048
    python benchmarks/bench_stack.py --size 1024 --frames 5
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _simulate(folder, size, n_frames, rotation, common_tangent_point=False):
    import numpy as np
    from astropy import units as u
    from astropy.time import Time

    import shiftstack_ccd as ss
    sim = ss.simulate_observation(n_frames=n_frames, shape=(size, size), n_stars=400,
                                  max_rotation=rotation * u.deg, dither=10.0, seed=3,
                                  target_snr=5.0)
    if common_tangent_point:
        # As drizzled products share one tangent point: re-express every frame's WCS on the
        # tangent point of the target plane (the target at the mean time), keeping the
        # frame's centre where it was. Only the timing matters here.
        times = Time([ss.mid_exposure_time(f) for f in sim.frames])
        centre = sim.ephemeris.at(times[0] + (times[-1] - times[0]) / 2)
        for frame in sim.frames:
            wcs = frame.wcs
            middle = wcs.pixel_to_world((size - 1) / 2, (size - 1) / 2)
            wcs.wcs.crval = [centre.ra.deg, centre.dec.deg]
            wcs.wcs.set()
            x, y = wcs.world_to_pixel(middle)
            wcs.wcs.crpix = wcs.wcs.crpix + np.array([(size - 1) / 2 - x, (size - 1) / 2 - y])
            wcs.wcs.set()
    sim.write(folder)
    sim.ephemeris.write(Path(folder) / "ephemeris.ecsv")


def _run_case(case, folder):
    from astropy.time import Time

    import shiftstack_ccd as ss
    frames = ss.read_frames(str(Path(folder) / "sim_*.fits"))
    eph = ss.Ephemeris.from_table(Path(folder) / "ephemeris.ecsv")
    size = frames[0].shape
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if case in ("fast", "warp"):
        result = ss.shift_and_stack(frames, eph, size=size, sky_stack=False,
                                    orientation="first" if case == "fast" else "north")
        paths = sorted(set(result.table["resample"]))
    else:
        import ccdproc
        times = Time([ss.mid_exposure_time(f) for f in frames])
        grid = ss.TargetFrame.for_frames(frames, eph, size=size, times=times)
        projected = [ccdproc.wcs_project(f, grid.wcs_at(t), target_shape=grid.shape)
                     for f, t in zip(frames, times)]
        ccdproc.combine(projected, method="average")
        paths = ["ccdproc.wcs_project"]
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    print(json.dumps({"case": case, "seconds": elapsed, "peak_mib": peak, "paths": paths,
                      "mib_before": before}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        _run_case(args.case, args.folder)
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rotation, cases in ((0.0, ("fast",)), (1.0, ("warp", "naive"))):
            folder = Path(tmp) / f"rot{rotation}"
            _simulate(folder, args.size, args.frames, rotation,
                      common_tangent_point=rotation == 0)
            for case in cases:
                out = subprocess.run([sys.executable, __file__, "--case", case, "--folder",
                                      str(folder)], capture_output=True, text=True, check=True)
                results[case] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"shift_and_stack, {args.frames} frames of {args.size} x {args.size} "
          "(peak memory includes the frames read)")
    print(f"{'case':<10} {'seconds':>8} {'peak MiB':>9} {'(frames read)':>14}  path")
    for case in ("fast", "warp", "naive"):
        r = results[case]
        print(f"{case:<10} {r['seconds']:8.2f} {r['peak_mib']:9.0f} {r['mib_before']:14.0f}  "
              f"{', '.join(r['paths'])}")
    naive = results["naive"]["seconds"]
    print(f"naive / fast      = {naive / results['fast']['seconds']:.1f}x")
    print(f"naive / warp      = {naive / results['warp']['seconds']:.1f}x")
    print(f"warp / fast       = {results['warp']['seconds'] / results['fast']['seconds']:.1f}x")


if __name__ == "__main__":
    main()
