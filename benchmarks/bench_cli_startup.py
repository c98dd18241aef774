"""Wall time of ``shiftstack-ccd --help`` and ``shiftstack-ccd steps`` in fresh processes.

Run:  python benchmarks/bench_cli_startup.py [repeats]

Prints the median over ``repeats`` runs of: the interpreter alone; ``--help``; ``steps``; and,
for comparison, what every command paid before the package's names were loaded on first use
(``import shiftstack_ccd`` followed by ``shiftstack_ccd.__all__``, which imports every step
module), and ``steps`` the old way (`available_steps`, which imports every step's module).
The budget for ``--help`` and ``steps`` is 1 s.
"""

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "python -c pass": ["-c", "pass"],
    "shiftstack-ccd --help": ["-m", "shiftstack_ccd.cli", "--help"],
    "shiftstack-ccd steps": ["-m", "shiftstack_ccd.cli", "steps"],
    "eager import (before)": ["-c", "import shiftstack_ccd; shiftstack_ccd.__all__"],
    "steps, loading them": ["-c", "from shiftstack_ccd.steps import available_steps; "
                                  "available_steps()"],
}


def seconds(argv):
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, check=True)
    return time.perf_counter() - start


def main(repeats=7):
    for name, argv in CASES.items():
        times = [seconds(argv) for _ in range(repeats)]
        print(f"{name:24s} median {statistics.median(times):.2f} s "
              f"(min {min(times):.2f}, max {max(times):.2f}, {repeats} runs)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
