"""Peak memory of shift_and_stack against the number of frames.

Frames: the ten raw Lowell 42-inch frames (1432 x 1370, uint16 ADU), written ``N / 10`` times
over into a temporary folder with new times (one frame every 330 s: ``DATE-OBS`` with the
time, ``MIDTIMJD`` and ``UTCSTART``/``UTC-OBS``/``UTCEND`` removed), so that N = 10, 20, 40
and 67 frames make one long night. The target is a linear motion through the frame centre.

Cases, each N in its own process (peak RSS from ``resource.getrusage``, the process's own):

* ``small``     ``shift_and_stack(paths, eph, method="median", size=301)``: the default, no
                work folder; memory should not grow with N;
* ``full``      the same at full field (``size=None``) with ``workdir``: intermediate
                products on disk, the combine in blocks within ``mem_limit``;
* ``full-mem``  (``--all``) full field without a work folder, for comparison: everything in
                memory, so it grows with N.

The last column is the peak over that of N = 10.

Run::

    SHIFTSTACK_CCD_DATA=/path/to/data python benchmarks/bench_memory.py
    python benchmarks/bench_memory.py --frames 10 67 --cases small
"""

import argparse
import glob
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("small", "full")


def make_frames(folder, n_frames, cadence=330.0):
    """``n_frames`` copies of the ten Lowell frames with times a cadence apart."""
    from astropy.io import fits
    from astropy.time import Time, TimeDelta

    from shiftstack_ccd import get_data_path
    sources = sorted(glob.glob(str(get_data_path("lowell42-5945/5945") / "*.fits")))
    start = Time("2019-03-26T03:13:52.56", scale="utc")
    paths = []
    for i in range(n_frames):
        with fits.open(sources[i % len(sources)]) as hdul:
            header = hdul[0].header
            for key in ("MIDTIMJD", "UTCSTART", "UTC-OBS", "UTCEND"):
                header.remove(key, ignore_missing=True)
            header["DATE-OBS"] = (start + TimeDelta(i * cadence, format="sec")).isot
            path = Path(folder) / f"frame{i:03d}.fits"
            hdul.writeto(path)
        paths.append(str(path))
    return paths


def run_case(case, folder, n_frames, mem_limit=None):
    """In a child process: stack the first ``n_frames`` and report time and peak RSS."""
    from astropy import units as u

    import shiftstack_ccd as ss
    paths = sorted(glob.glob(str(Path(folder) / "frame*.fits")))[:n_frames]
    footprint = ss.read_footprint(paths[0])
    eph = ss.Ephemeris.linear(footprint.wcs.pixel_to_world(700, 685),
                              ss.mid_exposure_time(footprint.header),
                              -20 * u.arcsec / u.hour, 8 * u.arcsec / u.hour)
    kwargs = {"small": dict(size=301),
              "full": dict(size=None, workdir=folder),
              "full-mem": dict(size=None)}[case]
    start = time.perf_counter()
    result = ss.shift_and_stack(paths, eph, method="median", mem_limit=mem_limit, **kwargs)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(json.dumps({"seconds": elapsed, "peak": peak, "shape": result.stack.shape}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[10, 20, 40, 67])
    parser.add_argument("--cases", nargs="+", default=list(CASES),
                        choices=list(CASES) + ["full-mem"])
    parser.add_argument("--all", action="store_true", help="also the full-mem case")
    parser.add_argument("--mem-limit", type=float, default=None,
                        help="mem_limit of shift_and_stack, bytes (default: its own)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        limit = None if args.child[3] == "None" else float(args.child[3])
        run_case(args.child[0], args.child[1], int(args.child[2]), limit)
        return
    cases = list(args.cases) + (["full-mem"] if args.all else [])
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
        make_frames(folder, max(args.frames))
        limit = "default" if args.mem_limit is None else f"{args.mem_limit / 1e6:.0f} MB"
        print(f"raw Lowell frames 1432 x 1370, median, mem_limit {limit}; peak RSS per process")
        print(f"{'case':<10}{'N':>5}{'output':>13}{'time (s)':>10}{'peak (MB)':>11}"
              f"{'/ first':>9}")
        for case in cases:
            first = None
            for n in args.frames:
                out = subprocess.run([sys.executable, __file__, "--child", case, folder,
                                      str(n), str(args.mem_limit)],
                                     capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                first = first or row["peak"]
                shape = "x".join(str(v) for v in row["shape"])
                print(f"{case:<10}{n:>5}{shape:>13}{row['seconds']:>10.1f}"
                      f"{row['peak'] / 1e6:>11.0f}{row['peak'] / first:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
