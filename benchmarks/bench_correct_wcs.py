"""Accuracy and cost of `correct_wcs` on the real Lowell frames (SCAMP TPV WCS).

Each frame's WCS is perturbed by a CRVAL shift of (3, -4) arcsec and, for the rotation
fits, a 0.1 degree rotation of its CD matrix; it is then corrected against (a) the same
frame with its original WCS and (b) a different exposure of the night (dithered stars,
other epoch). Printed: the rms distance (pixels) between the positions the corrected and
the original WCS give for the frame's detected stars, before/after ratio, seconds per
frame, and the peak Python memory (tracemalloc) of one correction against a frame and of
one against pre-detected reference positions (SkyCoord, the cheap way to reuse a reference).

Run:  SHIFTSTACK_CCD_DATA=/work/shared/data python benchmarks/bench_correct_wcs.py [N]
(N = number of frames, default 10; the reference for (b) is the middle frame, or the
next one for the middle frame itself).
"""

import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shiftstack_ccd.astrometry import correct_wcs  # noqa: E402
from shiftstack_ccd.stars import detect_stars  # noqa: E402
from shiftstack_ccd.datasets import get_data_path  # noqa: E402
from shiftstack_ccd.frames import read_frames  # noqa: E402


def perturbed(ccd, east, north, rotation):
    out = ccd.copy()
    w = out.wcs
    lon, lat = w.wcs.crval
    w.wcs.crval = [lon + east / 3600 / np.cos(np.radians(lat)), lat + north / 3600]
    t = np.radians(rotation)
    w.wcs.cd = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ w.wcs.cd
    w.wcs.set()
    return out


def rms_pixels(wcs_a, wcs_b, xy):
    """Rms distance between the sky positions two WCS give for pixels xy, in the pixels of
    ``wcs_b`` there (its scale, 1.107"/pixel for the Lowell frames, and distortion)."""
    x, y = wcs_b.world_to_pixel(wcs_a.pixel_to_world(xy[:, 0], xy[:, 1]))
    return float(np.sqrt(np.mean((x - xy[:, 0]) ** 2 + (y - xy[:, 1]) ** 2)))


def main(n_frames=10):
    folder = get_data_path("lowell42-5945/5945")
    frames = read_frames(str(folder) + "/*.fits")[:n_frames]
    middle = len(frames) // 2
    print(f"{'frame':22s} {'fit':16s} {'ref':6s} {'before px':>9s} {'after px':>9s} "
          f"{'ratio':>7s} {'nstar':>5s} {'fit rms px':>10s} {'s':>5s}")
    worst = {}
    for i, frame in enumerate(frames):
        stars = detect_stars(frame)
        xy = np.column_stack([stars["x"], stars["y"]])
        other = frames[middle] if i != middle else frames[(middle + 1) % len(frames)]
        for fit, rotation in (("shift", 0.0), ("shift+rotation", 0.1)):
            bad = perturbed(frame, 3.0, -4.0, rotation)
            before = rms_pixels(bad.wcs, frame.wcs, xy)
            for name, ref in (("same", frame), ("other", other)):
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # a warning would be a failure here
                    out = correct_wcs(bad, reference=ref, fit=fit)
                seconds = time.perf_counter() - t0
                after = rms_pixels(out.wcs, frame.wcs, xy)
                worst[(fit, name)] = max(worst.get((fit, name), 0), after)
                print(f"{Path(frame.meta['SSFILE']).name:22s} {fit:16s} {name:6s} "
                      f"{before:9.3f} {after:9.4f} {before / max(after, 1e-6):7.0f} "
                      f"{out.meta['WCSNSTAR']:5d} {out.meta['WCSRMSPX']:10.4f} {seconds:5.2f}")
    print()
    for (fit, name), value in worst.items():
        print(f"worst rms after correction, fit={fit:15s} reference={name:5s}: {value:.4f} px "
              f"(goal <= 0.05 px)")

    frame, other = frames[0], frames[middle]
    bad = perturbed(frame, 3.0, -4.0, 0.1)
    positions = detect_stars(other)["sky"]  # detect the reference once, reuse for every frame
    for label, ref in (("reference frame", other), ("reference SkyCoord", positions)):
        t0 = time.perf_counter()
        correct_wcs(bad, reference=ref, fit="shift+rotation")
        seconds = time.perf_counter() - t0
        tracemalloc.start()
        correct_wcs(bad, reference=ref, fit="shift+rotation")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{label:20s}: {seconds:.2f} s per frame, peak traced memory "
              f"{peak / 2**20:.0f} MiB (frame data {frame.data.nbytes / 2**20:.0f} MiB, "
              f"ratio {peak / frame.data.nbytes:.1f})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
