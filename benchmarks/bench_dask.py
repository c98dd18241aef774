"""Why two dask workers give what they give: the stack's time split into its phases.

The ten raw Lowell frames (1432 x 1370), median, stacked serially, with dask's thread
scheduler and with its process scheduler (``num_workers=2``), each case in its own process.
The stack's time is split by timing the pieces `shift_and_stack` composes:

* ``frames``    the per-frame tasks (`map_frames`: read, crop, noise, resample): the part
                dask runs in parallel;
* ``combine``   `combine_frames` (serial here; numpy's median is single-threaded);
* ``other``     the rest: reading the headers and building the grids (serial by nature),
                the table and the header.

Amdahl's law with the serial run's fractions gives the best speedup two workers could
reach, ``1 / (1 - p + p / 2)`` with ``p`` the ``frames`` fraction; the measured speedup of the
``frames`` phase alone says how much of that the scheduler delivers (threads: the GIL is
held by astropy's header parsing and by scipy.ndimage; processes: frames and products are
pickled to and from the workers). The load average before each case says how many cores
were free: on a shared machine two workers cannot use two busy cores.

Run::

    SHIFTSTACK_CCD_DATA=/path/to/data python benchmarks/bench_dask.py
    python benchmarks/bench_dask.py --size 301 --repeat 2
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time


def run_case(scheduler, size, workdir):
    import dask
    from astropy import units as u

    import shiftstack_ccd as ss
    import shiftstack_ccd.stack as stack_module
    paths = sorted(glob.glob(str(ss.get_data_path("lowell42-5945/5945") / "*.fits")))
    footprint = ss.read_footprint(paths[0])
    eph = ss.Ephemeris.linear(footprint.wcs.pixel_to_world(700, 685),
                              ss.mid_exposure_time(footprint.header),
                              -20 * u.arcsec / u.hour, 8 * u.arcsec / u.hour)
    phases = {"frames": 0.0, "combine": 0.0}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                phases[name] += time.perf_counter() - start
        return wrapper

    stack_module.map_frames = timed("frames", stack_module.map_frames)
    stack_module.combine_frames = timed("combine", stack_module.combine_frames)
    scheduler = None if scheduler == "serial" else scheduler
    dask.config.set(num_workers=2)
    if scheduler == "processes":  # start the pool outside the timing, as a session would
        dask.compute(dask.delayed(sum)([1]), scheduler="processes")
    start = time.perf_counter()
    cpu = os.times()
    result = ss.shift_and_stack(paths, eph, method="median",
                                size=None if size == 0 else size, scheduler=scheduler,
                                workdir=workdir)
    total = time.perf_counter() - start
    cpu_after = os.times()
    assert result.stack.shape[0] > 0
    phases["total"] = total
    phases["cpu_self"] = (cpu_after.user - cpu.user) + (cpu_after.system - cpu.system)
    print(json.dumps(phases))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=0, help="output size (0: full field)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_case(args.child[0], int(args.child[1]), args.workdir)
        return
    rows = {}
    for scheduler in ("serial", "threads", "processes"):
        for _ in range(args.repeat):
            load = os.getloadavg()[0]
            command = [sys.executable, __file__, "--child", scheduler, str(args.size)]
            if args.workdir:
                command += ["--workdir", args.workdir]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["load"] = load
            if scheduler not in rows or row["total"] < rows[scheduler]["total"]:
                rows[scheduler] = row
    serial = rows["serial"]
    p = serial["frames"] / serial["total"]
    print(f"10 raw Lowell frames, median, size {args.size or 'full field'}; "
          f"{os.cpu_count()} cores; best of {args.repeat}")
    print(f"{'scheduler':<11}{'load':>6}{'total':>8}{'frames':>8}{'combine':>9}{'other':>7}"
          f"{'speedup':>9}{'frames x':>10}{'driver cpu':>12}")
    for name, row in rows.items():
        other = row["total"] - row["frames"] - row["combine"]
        print(f"{name:<11}{row['load']:>6.1f}{row['total']:>8.2f}{row['frames']:>8.2f}"
              f"{row['combine']:>9.2f}{other:>7.2f}{serial['total'] / row['total']:>9.2f}"
              f"{serial['frames'] / row['frames']:>10.2f}{row['cpu_self']:>12.2f}")
    print(f"per-frame work is {100 * p:.0f}% of the serial run: two workers can give at most "
          f"{1 / (1 - p + p / 2):.2f}x (Amdahl), if two cores are free")


if __name__ == "__main__":
    main()
