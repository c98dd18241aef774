"""Peak memory and time of the Lowell example pipeline (docs/examples/lowell.toml), and of
the CLI ``stack`` command on the same ten raw frames, each in a fresh process.

Run:  SHIFTSTACK_CCD_DATA=/work/shared/data python benchmarks/bench_pipeline_memory.py [out]

Each run is a child process (``python -c``) that reports its own peak resident memory
(``ru_maxrss``), imports included. With ``out`` the pipeline's stack is also kept
there (``out/pipeline.fits``) to compare two versions of the package bit for bit.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "lowell.toml"

PEAK = """
import resource
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
PIPELINE = """
import sys
from shiftstack_ccd.pipeline import run_pipeline
run_pipeline(sys.argv[1])
""" + PEAK

CLI = """
import sys
from shiftstack_ccd.cli import main
if main(sys.argv[1:]):
    sys.exit(1)
""" + PEAK


def child(code, *args, cwd):
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, check=True,
                          stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    peak_kb = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("PEAK_KB")]
    return seconds, float(peak_kb[-1]) / 1024


def main(out=None):
    data = os.environ.get("SHIFTSTACK_CCD_DATA")
    if not data:
        sys.exit("set SHIFTSTACK_CCD_DATA to the shared data folder")
    frames = sorted(str(p) for p in (Path(data) / "lowell42-5945" / "5945").glob("*.fits"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["stack", *frames, "--rates", "3.7678", "-8.2601",
               "--position", "124.6279549", "25.3402805", "--epoch", "2019-03-26T03:40:00",
               "--size", "201", "-o", str(Path(tmp) / "cli.fits")]
        try:
            results["cli stack (10 raw frames, size 201)"] = child(CLI, *cmd, cwd=tmp)
        except subprocess.CalledProcessError as exc:
            results["cli stack (10 raw frames, size 201)"] = (float("nan"), float("nan"))
            print(f"cli stack failed ({exc}); its options may differ in this version")
        shutil.copy(EXAMPLE, Path(tmp) / "lowell.toml")
        results["pipeline docs/examples/lowell.toml"] = child(
            PIPELINE, str(Path(tmp) / "lowell.toml"), cwd=tmp)
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(tmp) / "out" / "roachapproach.fits", Path(out) / "pipeline.fits")
    for name, (seconds, peak) in results.items():
        print(f"{name:45s} {seconds:6.1f} s   peak RSS {peak:7.0f} MB")
    print(json.dumps({k: {"s": round(v[0], 2), "peak_mb": round(v[1])}
                      for k, v in results.items()}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
