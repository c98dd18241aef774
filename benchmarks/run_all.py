"""Run the benchmarks and keep their output in ``benchmarks/results/<name>.txt``.

Each results file is the verbatim standard output of one or more runs of
``python benchmarks/<name>.py ARGS`` (or of a script of ``docs/scripts/``), every run headed
by one line that gives the command,
the date (UTC), the machine and its load average before and after (the figures of a shared
machine change with its load), and the wall time. The documentation's Performance page
includes these files as they are (``literalinclude``), so a figure in it is always one that
a benchmark printed.

Run from anywhere (the real-data benchmarks need ``SHIFTSTACK_CCD_DATA``)::

    python benchmarks/run_all.py                  # every benchmark of RUNS, in turn
    python benchmarks/run_all.py bench_search bench_measure
    python benchmarks/run_all.py --list           # the names and the commands

A benchmark that fails leaves its results file as it was; the script then exits with 1.
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# name -> the argument lists of its runs (one results file per name, one section per run).
# Arguments are chosen so that the whole set runs in well under an hour on two cores.
RUNS = {
    "bench_import": [["7"]],
    "bench_cli_startup": [["7"]],
    "bench_ephemeris_interpolation": [[]],
    "bench_register": [[]],
    "bench_refine_weights": [[]],
    "bench_cosmicray": [["3"]],
    "bench_correct_wcs": [[]],
    "bench_stellar_fwhm": [[]],
    "bench_small_stack": [["--size", "301", "--repeat", "3"]],
    "bench_stack": [["--size", "2048", "--frames", "10"]],
    "bench_combine": [["memory", "--frames", "10", "20", "--size", "1024"], ["noise"]],
    "bench_noise": [["lowell"], ["night"], ["weights"]],
    "bench_dask": [["--size", "301"]],
    "bench_memory": [["--frames", "10", "20", "40"]],
    "bench_pipeline_memory": [[]],
    "bench_scale": [["--frames", "12", "--size", "1024"]],
    "bench_search": [["--rate", "40"], ["--rate", "80"]],
    "bench_measure": [["--seeds", "2"]],
    "bench_noise_size": [[]],
    "search_recall": [[]],
}
# Scripts that are not benchmarks/<name>.py (they also make a figure of the docs).
SCRIPTS = {"search_recall": "docs/scripts/search_recall.py"}


def machine():
    """CPU model, cores and memory of this machine, in one phrase."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        memory = f", {memory:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        memory = ""
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores{memory}"


def script(name):
    """The script of a results file, relative to the repository's root."""
    return SCRIPTS.get(name, f"benchmarks/{name}.py")


def run(name, args):
    """Run one benchmark; return (header line, stdout) or raise CalledProcessError."""
    command = ["python", script(name), *args]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    env = dict(os.environ, MPLBACKEND="agg")
    done = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, check=True)
    seconds = time.perf_counter() - start
    header = (f"$ {' '.join(command)}    # {date}; {machine()}; "
              f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}; {seconds:.0f} s")
    return header, done.stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the runs and exit")
    options = parser.parse_args(argv)
    unknown = sorted(set(options.names) - set(RUNS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(RUNS)}")
    names = options.names or list(RUNS)
    if options.list:
        for name in names:
            for args in RUNS[name]:
                print(" ".join(["python", script(name), *args]))
        return 0
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for name in names:
        sections = []
        try:
            for args in RUNS[name]:
                print(f"running {name} {' '.join(args)}", file=sys.stderr, flush=True)
                header, output = run(name, args)
                sections.append(f"{header}\n{output.rstrip()}\n")
        except subprocess.CalledProcessError as exc:
            print(f"{name} failed (exit status {exc.returncode}); "
                  f"{RESULTS / (name + '.txt')} left as it was", file=sys.stderr)
            failed.append(name)
            continue
        (RESULTS / f"{name}.txt").write_text("\n".join(sections), encoding="utf-8")
        print(f"wrote {RESULTS / (name + '.txt')}", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
