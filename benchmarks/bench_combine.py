"""Combining: memory flat in the number of frames, and honest aperture uncertainties.

Two measures, one per sub-command.

``memory`` (default): N resampled-like frames of 2048 x 2048 (float32 data, an ``UNCERT``
extension and a ``MASK`` extension, as `CCDData.write` writes them, about 38 MB each) are
written once to a temporary folder; the first N = 10, 20, 50 of them are median-combined
from their paths by `combine_frames`, in blocks of rows under ``mem_limit``, each N in its
own process so that its peak resident memory (``ru_maxrss``) is its own. Printed: time,
time per frame, peak RSS, and the peak RSS above the process's RSS after the imports.

``noise``: stacks of nine rotated simulated frames of empty sky (warp path; the sky level
is known, so aperture sums need no annulus), resampled onto the target plane as
`shift_and_stack` does and combined by `combine_frames`; aperture sums on a
grid of non-overlapping places where all nine frames overlap. Printed, per combine method
and aperture radius: the empirical standard deviation of the sums over the reported
uncertainty ``sqrt(sum of the stack variance over the aperture)``.

Run::

    python benchmarks/bench_combine.py                    # memory, N = 10 20 50
    python benchmarks/bench_combine.py memory --frames 10 20 --size 1024
    python benchmarks/bench_combine.py noise --seeds 4
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _write_frames(folder, n_frames, size):
    import numpy as np
    from astropy.nddata import CCDData, StdDevUncertainty
    from astropy.wcs import WCS
    rng = np.random.default_rng(1)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [size / 2, size / 2]
    wcs.wcs.cdelt = [-0.5 / 3600, 0.5 / 3600]
    paths = []
    for i in range(n_frames):
        data = (200 + 15 * rng.standard_normal((size, size), dtype=np.float32))
        mask = np.zeros((size, size), dtype=bool)
        mask[:, : 20 + i] = True  # the edge a resampled frame leaves uncovered
        data[mask] = np.nan
        sigma = np.full((size, size), 15.0, dtype=np.float32)
        ccd = CCDData(data, unit="electron", wcs=wcs, mask=mask,
                      uncertainty=StdDevUncertainty(sigma),
                      meta={"EXPTIME": 120.0, "DATE-OBS": f"2024-03-01T03:{i % 60:02d}:00"})
        path = Path(folder) / f"frame_{i:03d}.fits"
        ccd.write(path, hdu_mask="MASK", hdu_uncertainty="UNCERT")
        paths.append(str(path))
    return paths


def _memory_case(paths, method, mem_limit):
    sys.path.insert(0, str(REPO))
    from shiftstack_ccd.combine import combine_frames
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = combine_frames(paths, method=method, mem_limit=mem_limit)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": elapsed, "peak_mb": peak / 1024, "base_mb": base / 1024,
            "rows": result.rows_per_block,
            "covered": float((result.coverage > 0).mean())}


def run_memory(args):
    with tempfile.TemporaryDirectory(prefix="bench_combine_") as folder:
        start = time.perf_counter()
        paths = _write_frames(folder, max(args.frames), args.size)
        print(f"wrote {len(paths)} frames of {args.size} x {args.size} in "
              f"{time.perf_counter() - start:.0f} s to {folder}")
        print(f"method {args.method}, mem_limit {args.mem_limit / 1e6:.0f} MB per block")
        frame_mb = sum(p.stat().st_size for p in map(Path, paths)) / len(paths) / 1e6
        print(f"{'N':>4} {'rows/blk':>8} {'time s':>8} {'s/frame':>8} {'peak RSS MB':>12} "
              f"{'above base MB':>14} {'frames in RAM MB':>17}")
        for n in args.frames:
            job = json.dumps({"paths": paths[:n], "method": args.method,
                              "mem_limit": args.mem_limit})
            out = subprocess.run([sys.executable, __file__, "_case", job], check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{n:>4} {r['rows']:>8} {r['seconds']:>8.1f} {r['seconds'] / n:>8.3f} "
                  f"{r['peak_mb']:>12.0f} {r['peak_mb'] - r['base_mb']:>14.0f} "
                  f"{n * frame_mb:>17.0f}")
        print("(frames in RAM: what holding the N frames alone would take, for comparison)")


def _aperture_ratios(seed, method, n_frames, size, radii, combine_kwargs, interpolation,
                     skies):
    import numpy as np
    from photutils.aperture import CircularAperture, aperture_photometry
    sys.path.insert(0, str(REPO))
    import shiftstack_ccd as ss
    sky = [skies[i % len(skies)] for i in range(n_frames)]
    sim = ss.simulate_observation(n_frames=n_frames, shape=(size, size), n_stars=0,
                                  cosmic_rays=False, seed=seed, target_snr=3.0, sky=sky)
    # the steps of shift_and_stack, with combine_frames called directly
    from astropy.time import Time
    from shiftstack_ccd.combine import combine_frames
    times = Time([ss.mid_exposure_time(f) for f in sim.frames])
    grid = ss.TargetFrame.for_frames(sim.frames, sim.ephemeris, times=times)
    resampled = [ss.resample_to_target(f, grid.wcs_at(t), grid.shape,
                                       interpolation=interpolation)
                 for f, t in zip(sim.frames, times)]
    for frame, level in zip(resampled, sky):
        frame.data -= level  # the simulation's sky, known: aperture sums need no annulus
    combined = combine_frames(resampled, method=method, **combine_kwargs)
    stack, coverage = combined.image, combined.coverage
    data = np.nan_to_num(stack.data)
    var = np.nan_to_num(stack.uncertainty.array ** 2)
    full = coverage == n_frames
    cx, cy = grid.center_pixel
    ny, nx = data.shape
    out = {}
    for r in radii:
        step = int(2 * r + 3)
        ys, xs = np.mgrid[step:ny - step:step, step:nx - step:step]
        places = np.c_[xs.ravel() + 0.3, ys.ravel() + 0.2]
        keep = [full[int(y - r - 1):int(y + r + 2), int(x - r - 1):int(x + r + 2)].all()
                and np.hypot(x - cx, y - cy) > 6 * r + 10 for x, y in places]
        aperture = CircularAperture(places[np.array(keep)], r)
        sums = np.asarray(aperture_photometry(data, aperture, method="center")["aperture_sum"])
        reported = np.asarray(aperture_photometry(var, aperture, method="center")
                              ["aperture_sum"])
        out[r] = (float(np.var(sums)), float(np.mean(reported)), len(sums))
    return out


def run_noise(args):
    import numpy as np
    radii = (0.5, 1, 1.5, 2, 3, 4, 6)
    flat, varied = (200.0,), (100.0, 200.0, 400.0, 800.0)  # sky e-/pixel, per frame
    cases = [("mean", {}, "bicubic", flat), ("median", {}, "bicubic", flat),
             ("mean", {"sigma_clip": True}, "bicubic", flat),
             ("mean", {}, "bicubic", varied),
             ("mean", {"weights": "inverse-variance"}, "bicubic", varied),
             ("median", {}, "bilinear", flat), ("mean", {}, "bilinear", flat)]
    print(f"{args.frames} rotated frames of {args.size}^2, {args.seeds} seeds; "
          "empirical / reported standard deviation of aperture sums (center-method "
          "apertures; r=0.5 is one pixel)")
    print(f"{'case':<48}" + "".join(f"{'r=' + str(r):>7}" for r in radii))
    for method, kwargs, interpolation, skies in cases:
        sums = {r: [0.0, 0.0, 0] for r in radii}
        for seed in range(args.seeds):
            for r, (emp, rep, n) in _aperture_ratios(seed, method, args.frames, args.size,
                                                     radii, kwargs, interpolation,
                                                     skies).items():
                sums[r][0] += emp
                sums[r][1] += rep
                sums[r][2] += n
        label = (f"{method} {interpolation} " + " ".join(f"{k}={v}" for k, v in kwargs.items())
                 + (" sky varies" if len(skies) > 1 else ""))
        print(f"{label:<48}" + "".join(f"{np.sqrt(e / p):>7.3f}" for e, p, _ in sums.values())
              + f"   sigma(r=3) {np.sqrt(sums[3][0] / args.seeds):.1f} e-")
    n_small = sums[max(radii)][2]
    print(f"(statistical uncertainty of each ratio: about {1 / np.sqrt(2 * n_small):.3f} at "
          f"r={max(radii)}, less at smaller radii)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    memory = sub.add_parser("memory")
    noise = sub.add_parser("noise")
    for p in (parser, memory):
        p.add_argument("--frames", type=int, nargs="+", default=[10, 20, 50])
        p.add_argument("--size", type=int, default=2048)
        p.add_argument("--method", default="median")
        p.add_argument("--mem-limit", type=float, default=512e6)
    noise.add_argument("--seeds", type=int, default=4)
    noise.add_argument("--frames", type=int, default=9)
    noise.add_argument("--size", type=int, default=384)
    if len(sys.argv) > 2 and sys.argv[1] == "_case":
        job = json.loads(sys.argv[2])
        print(json.dumps(_memory_case(job["paths"], job["method"], job["mem_limit"])))
        return
    args = parser.parse_args(argv)
    if args.command == "noise":
        run_noise(args)
    else:
        run_memory(args)


if __name__ == "__main__":
    main()
