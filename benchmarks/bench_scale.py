"""shift_and_stack at scale: serial against two dask workers, with a work folder.

40 simulated frames of 2048 x 2048 are written to disk once. Each case runs in its own
process and stacks them from their paths with ``workdir=`` (frames are read by the task that
processes them, intermediate products go to a temporary folder, the combine reads them in
blocks of rows), so memory should not grow with the number of frames:

* serial, 10 frames and 40 frames (peak memory flat as N grows);
* two workers (dask's process scheduler), 40 frames.

Printed: time, time per frame, and peak resident memory of the driver process and of the
largest worker. Run::

    python benchmarks/bench_scale.py                 # about 5 minutes on 2 cores
    python benchmarks/bench_scale.py --frames 12 --size 1024
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _simulate(folder, size, n_frames):
    """Frames in batches of 10 (the simulation holds its frames), on one continuous track."""
    from astropy import units as u
    from astropy.time import Time

    import shiftstack_ccd as ss
    start, cadence, exptime = Time("2024-03-01T03:00:00", scale="utc"), 150 * u.s, 120 * u.s
    track = None
    for first in range(0, n_frames, 10):
        n = min(10, n_frames - first)
        batch_start = start + first * cadence
        kwargs = dict(n_frames=n, shape=(size, size), n_stars=400, max_rotation=1 * u.deg,
                      dither=10.0, seed=first, target_snr=5.0, cadence=cadence,
                      exptime=exptime, start=batch_start)
        if track is not None:  # the batch's epoch is its middle frame's mid-exposure
            epoch = batch_start + (n // 2) * cadence + exptime / 2
            kwargs["target_position"] = track.at(epoch)
        sim = ss.simulate_observation(**kwargs)
        if track is None:
            track = sim.ephemeris
            track.write(Path(folder) / "ephemeris.ecsv")
        for k, frame in enumerate(sim.frames):
            frame.meta["SSFILE"] = f"sim_{first + k:03d}.fits"
        sim.write(folder)


def _run_case(folder, n_frames, scheduler, workdir, size):
    import shiftstack_ccd as ss
    paths = sorted(str(p) for p in Path(folder).glob("sim_*.fits"))[:n_frames]
    eph = ss.Ephemeris.from_table(Path(folder) / "ephemeris.ecsv")
    start = time.perf_counter()
    result = ss.shift_and_stack(paths, eph, size=(size, size), sky_stack=False,
                                scheduler=scheduler, workdir=workdir)
    elapsed = time.perf_counter() - start
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "driver_mib": driver, "worker_mib": workers,
                      "n": len(result.table)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--case", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        folder, n, scheduler, size = args.case
        _run_case(folder, int(n), None if scheduler == "serial" else scheduler,
                  workdir=str(Path(folder).parent), size=int(size))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / f"frames{args.size}"
        folder.mkdir()
        t0 = time.perf_counter()
        _simulate(folder, args.size, args.frames)
        print(f"simulated {args.frames} frames of {args.size} x {args.size} in "
              f"{time.perf_counter() - t0:.0f} s")
        small = max(2, args.frames // 4)
        cases = [("serial", small), ("serial", args.frames), ("processes", args.frames)]
        rows = []
        for scheduler, n in cases:
            out = subprocess.run([sys.executable, __file__, "--case", str(folder), str(n),
                                  scheduler, str(args.size)], capture_output=True, text=True,
                                 check=True)
            rows.append((scheduler, n, json.loads(out.stdout.strip().splitlines()[-1])))
    print(f"{'case':<22} {'seconds':>8} {'s/frame':>8} {'driver MiB':>11} {'worker MiB':>11}")
    for scheduler, n, r in rows:
        name = f"{'2 workers' if scheduler == 'processes' else 'serial'}, {n} frames"
        print(f"{name:<22} {r['seconds']:8.1f} {r['seconds'] / n:8.2f} {r['driver_mib']:11.0f} "
              f"{r['worker_mib']:11.0f}")
    serial, parallel = rows[1][2]["seconds"], rows[2][2]["seconds"]
    print(f"speed-up with 2 workers: {serial / parallel:.2f}x")


if __name__ == "__main__":
    main()
