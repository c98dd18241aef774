"""The package's stellar FWHM against the one it replaced (issue 14), on known truth.

* ``package``: `shiftstack_ccd.stars.stellar_fwhm` (what `detect_stars` also uses): photutils
  ``find_peaks`` above 20 sigma of a Background2D-subtracted image, peaks touching saturated
  pixels left out, the 40 brightest fitted by ``fit_fwhm`` in 7x7 boxes, median;
* ``former``: the former ``photometry.stellar_fwhm``, reproduced here: DAOStarFinder above
  20 sigma of one sigma-clipped level with a 3-pixel guess, stars with a neighbour within
  10 px skipped, up to 20 fitted by ``measure_fwhm`` in 9x9 boxes, median.

Simulated frames (Moffat beta=3 stars of known FWHM, the package's simulator) give the error
against the truth; the ten raw Lowell 42-inch frames give the frame-to-frame scatter (the
seeing changes little over 50 minutes) and the time. ``measure_fwhm`` on single unsaturated
Lowell stars gives 1.5-1.9 px.

Run:  SHIFTSTACK_CCD_DATA=/work/shared/data python benchmarks/bench_stellar_fwhm.py
"""

import sys
import time
from pathlib import Path

import numpy as np
from astropy.stats import sigma_clipped_stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shiftstack_ccd import stars  # noqa: E402
from shiftstack_ccd.datasets import get_data_path, simulate_observation  # noqa: E402
from shiftstack_ccd.frames import read_frames  # noqa: E402


def former_estimator(ccd, n_stars=20, nsigma=20.0):
    """The former photometry.stellar_fwhm."""
    from photutils.detection import DAOStarFinder
    data = np.asarray(ccd.data, dtype=float)
    mask = ~np.isfinite(data) | (np.asarray(ccd.mask, bool) if ccd.mask is not None else False)
    _, median, std = sigma_clipped_stats(data[~mask], sigma=3)
    found = DAOStarFinder(fwhm=3.0, threshold=nsigma * std, exclude_border=True)(
        np.where(mask, median, data) - median, mask=mask)
    if found is None or len(found) == 0:
        return np.nan
    found.sort("flux", reverse=True)
    xy = np.column_stack([found["x_centroid"], found["y_centroid"]])
    widths = []
    for i, (x, y) in enumerate(xy):
        distance = np.hypot(*(xy - (x, y)).T)
        distance[i] = np.inf
        if distance.min() < 10:
            continue
        try:
            width = stars.measure_fwhm(ccd, (x, y))
        except Exception:  # noqa: BLE001 - as the former code did
            continue
        if np.isfinite(width) and 0.5 < width < 50:
            widths.append(width)
        if len(widths) >= n_stars:
            break
    return float(np.median(widths)) if widths else np.nan


def package_estimator(ccd):
    value = stars.stellar_fwhm(ccd)
    return np.nan if value is None else value


ESTIMATORS = {"package": package_estimator, "former": former_estimator}


def timed(function, ccd):
    t0 = time.perf_counter()
    value = function(ccd)
    return value, time.perf_counter() - t0


def simulated():
    print("Simulated 512x512 frames, Moffat beta=3, 150 stars (FWHM in pixels; error in %)")
    columns = " ".join(f"{n:>9} {'err%':>6} {'s':>5}" for n in ESTIMATORS)
    print(f"{'true':>6} {'seed':>4} {columns}")
    errors = {n: [] for n in ESTIMATORS}
    for fwhm in (1.5, 2.0, 3.0, 4.5, 6.0):
        for seed in (1, 2, 3):
            sim = simulate_observation(n_frames=1, shape=(512, 512), fwhm=fwhm, n_stars=150,
                                       seed=seed)
            ccd = sim.frames[0]
            row = f"{fwhm:6.2f} {seed:4d} "
            for name, function in ESTIMATORS.items():
                value, seconds = timed(function, ccd)
                err = 100 * (value - fwhm) / fwhm
                errors[name].append(err)
                row += f"{value:9.3f} {err:6.1f} {seconds:5.2f} "
            print(row)
    for name, errs in errors.items():
        errs = np.asarray(errs)
        print(f"{name:>8}: mean error {np.nanmean(errs):+.1f} %, "
              f"rms {np.sqrt(np.nanmean(errs**2)):.1f} %, worst {np.nanmax(np.abs(errs)):.1f} %, "
              f"failures {np.count_nonzero(np.isnan(errs))}")


def lowell():
    folder = get_data_path("lowell42-5945/5945")
    frames = read_frames(sorted(str(p) for p in Path(folder).glob("*.fits")))
    print(f"\nLowell 42-inch, {len(frames)} raw 1432x1370 frames")
    results = {n: [] for n in ESTIMATORS}
    seconds = {n: 0.0 for n in ESTIMATORS}
    for ccd in frames:
        for name, function in ESTIMATORS.items():
            value, dt = timed(function, ccd)
            results[name].append(value)
            seconds[name] += dt
    for name, values in results.items():
        values = np.asarray(values)
        print(f"{name:>8}: " + " ".join(f"{v:.2f}" for v in values)
              + f"  median {np.median(values):.3f}, frame-to-frame rms "
              f"{np.std(values):.3f} px, {seconds[name] / len(frames):.2f} s a frame")


if __name__ == "__main__":
    simulated()
    lowell()
