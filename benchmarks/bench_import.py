"""Time of ``import shiftstack_ccd`` in a fresh interpreter, against astropy alone.

Run:  python benchmarks/bench_import.py [repeats]

Prints the median over ``repeats`` fresh processes of the package import, of the astropy
modules it cannot do without (``astropy.nddata``, ``astropy.coordinates``, ``astropy.table``,
``astropy.time``), and of the heavy libraries that ``import shiftstack_ccd`` leaves to the
functions that use them (photutils, matplotlib, scipy.interpolate, scipy.ndimage).
"""

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "import shiftstack_ccd": "import shiftstack_ccd",
    "astropy it needs": "import astropy.nddata, astropy.coordinates, astropy.table, "
                        "astropy.time, astropy.wcs",
    "heavy ones it defers": "import photutils.aperture, photutils.centroids, "
                            "astropy.visualization, scipy.interpolate, scipy.ndimage",
}


def seconds(statement):
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    return float(done.stdout.split()[-1])


def main(repeats=7):
    for name, statement in CASES.items():
        times = [seconds(statement) for _ in range(repeats)]
        print(f"{name:24s} median {statistics.median(times):.2f} s "
              f"(min {min(times):.2f}, max {max(times):.2f}, {repeats} runs)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
