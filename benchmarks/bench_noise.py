"""Real nights: honest uncertainties on raw frames, background, scaling, weights and cost.

Four measurements, each its own subcommand:

* ``lowell``  the ten shared raw Lowell 42-inch frames of (5945) Roachapproach, default options
              plus ``subtract_static=True, size=301``: the robust scatter of 400 random r = 3 px
              aperture sums over their reported uncertainty (1 is honest), mean and median;
              and the per-frame noise model (measured / model pixel noise).
* ``night``   the same on simulated raw frames of a whole night (sky x4 at dusk, x3 at dawn,
              seeing 2.5-4 px, transparency 0.7-1, bias and overscan, no uncertainty), and the
              stacked target flux against the truth with and without ``scale='stars'``.
* ``weights`` stack S/N of the target (aperture photometry, noise measured on empty sky) on
              that night with equal, inverse-variance and S/N weights, for a bright and a
              faint target.
* ``speed``   a 301-pixel median stack of 67 frames (the ten Lowell frames copied with their
              times shifted by 50 minutes per copy, so the target keeps moving), timed for
              this tree and for another source tree given with ``--against`` (e.g. ``git
              archive main | tar -x -C /tmp/main``), each in its own process, alternately.

Run (``SHIFTSTACK_CCD_DATA`` set)::

    python benchmarks/bench_noise.py lowell
    python benchmarks/bench_noise.py night
    python benchmarks/bench_noise.py weights
    python benchmarks/bench_noise.py speed --against /tmp/main --repeat 2
"""

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EPHEMERIS = REPO / "tests" / "data" / "ephemerides" / "lowell5945_linear.ecsv"


def _helpers():
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO))
    import nights_helpers
    return nights_helpers


def run_lowell(args):
    import shiftstack_ccd as ss
    ratio = _helpers().aperture_ratio
    paths = sorted(glob.glob(str(ss.get_data_path("lowell42-5945/5945") / "*.fits")))
    eph = ss.Ephemeris.from_table(EPHEMERIS)
    print("ten raw Lowell frames, size=301, subtract_static=True; scatter / reported "
          "uncertainty of r-pixel aperture sums")
    print(f"{'method':>8} {'r=2':>6} {'r=3':>6} {'r=4':>6} {'seconds':>8}")
    for method in ("mean", "median"):
        start = time.perf_counter()
        result = ss.shift_and_stack(paths, eph, method=method, size=301, subtract_static=True)
        seconds = time.perf_counter() - start
        print(f"{method:>8} " + " ".join(f"{ratio(result, radius=r):6.3f}" for r in (2, 3, 4))
              + f" {seconds:8.1f}")
    print(f"static-sky variance factor {result.stack.meta['SSSTVARF']} "
          f"(aperture {result.stack.meta['SSSTAPR']} px)")
    table = result.table
    table["file"] = [Path(f).name for f in table["file"]]
    table["file", "noise_model", "gain", "read_noise", "bias", "pixel_noise", "model_noise",
          "noise_ratio", "sky_level"].pprint(max_width=200)


def run_night(args):
    import numpy as np

    import shiftstack_ccd as ss
    from shiftstack_ccd.photometry import aperture_flux
    helpers = _helpers()
    sim = helpers.simulated_night()
    truth = sim.truth
    print("simulated night: sky e-/px", np.round(np.asarray(truth["sky"]), 0).tolist())
    print("  fwhm px", np.round(np.asarray(truth["fwhm"]), 2).tolist())
    print("  transparency", np.round(np.asarray(truth["transparency"]), 3).tolist())
    expected = float(np.median(truth["flux"].value)) / sim.gain  # the median frame's, ADU
    print(f"{'method':>7} {'scale':>6} {'static':>6} {'ratio r=3':>10} {'flux/median frame':>18}")
    for method in ("mean", "median"):
        for scale in (None, "stars"):
            result = ss.shift_and_stack(sim.frames, sim.ephemeris, method=method, scale=scale,
                                        subtract_static=True)
            flux, _ = aperture_flux(result.stack, result.target_pixel, 4 * 3.5)
            print(f"{method:>7} {str(scale):>6} {'yes':>6} "
                  f"{helpers.aperture_ratio(result):10.3f} {flux / expected:18.4f}")


def run_weights(args):
    import shiftstack_ccd as ss
    from shiftstack_ccd.photometry import aperture_snr
    helpers = _helpers()
    print("stack S/N of the target on a simulated night (12 frames, sky x4/x3 twilight, "
          "seeing 2.5-4 px, transparency 0.7-1), mean with scale='stars' and static sky; "
          "aperture radii 2, 3, 4 px")
    print(f"{'target':>7} {'weights':>17} {'S/N r=2':>8} {'r=3':>8} {'r=4':>8} {'flux r=3':>9}")
    for label, flux in (("bright", 2e4), ("faint", 1.5e3)):
        sim = helpers.simulated_night(n_frames=12, seed=7, target_flux=flux)
        snrs = {}
        for weights in (None, "inverse-variance", "snr"):
            result = ss.shift_and_stack(sim.frames, sim.ephemeris, method="mean",
                                        scale="stars", subtract_static=True, weights=weights,
                                        size=151)
            region = result.coverage == result.coverage.max()
            m = [aperture_snr(result.stack, result.target_pixel, r, region=region)
                 for r in (2.0, 3.0, 4.0)]
            snrs[weights] = m[1]["snr"]
            print(f"{label:>7} {str(weights):>17} " + " ".join(f"{x['snr']:8.1f}" for x in m)
                  + f" {m[1]['flux']:9.1f}")
        print(f"{'':>7} S/N r=3 relative to equal weights: inverse-variance "
              f"{snrs['inverse-variance'] / snrs[None]:.3f}, snr {snrs['snr'] / snrs[None]:.3f}")


def _make_frames(folder, n):
    """The ten Lowell frames copied to ``n`` files, each copy 50 minutes later."""
    from astropy import units as u
    from astropy.io import fits
    from astropy.time import Time

    import shiftstack_ccd as ss
    sources = sorted(glob.glob(str(ss.get_data_path("lowell42-5945/5945") / "*.fits")))
    paths = []
    for i in range(n):
        copy, j = divmod(i, len(sources))
        path = Path(folder) / f"f{i:03d}.fits"
        paths.append(str(path))
        with fits.open(sources[j]) as hdul:
            header = hdul[0].header
            start = Time(f"{header['DATE-OBS']}T{header['UTCSTART']}", scale="utc") \
                + copy * 3000 * u.s
            for key in ("UTCSTART", "UTC-OBS", "UTCEND"):
                del header[key]
            header["DATE-OBS"] = start.isot
            header["MIDTIMJD"] = (start + header["EXPTIME"] / 2 * u.s).jd
            hdul.writeto(path)
    return paths


def _time_one(folder, n):
    import shiftstack_ccd as ss
    eph = ss.Ephemeris.from_table(EPHEMERIS)
    paths = sorted(glob.glob(f"{folder}/f*.fits"))[:n]
    start = time.perf_counter()
    ss.shift_and_stack(paths, eph, method="median", size=301)
    print(json.dumps({"seconds": time.perf_counter() - start,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "module": ss.__file__}))


def run_speed(args):
    with tempfile.TemporaryDirectory() as folder:
        sys.path.insert(0, str(REPO))
        _make_frames(folder, args.frames)
        trees = [("this tree", str(REPO))]
        if args.against:
            trees.append(("against", str(Path(args.against).resolve())))
        results = {name: [] for name, _ in trees}
        for _ in range(args.repeat):
            for name, tree in trees:
                env = dict(os.environ, PYTHONPATH=tree)
                out = subprocess.run([sys.executable, __file__, "_time", folder,
                                      str(args.frames)], env=env, capture_output=True,
                                     text=True, cwd=tempfile.gettempdir(), check=True)
                results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{args.frames} frames, median, size=301 (best of {args.repeat})")
        for name, runs in results.items():
            best = min(runs, key=lambda r: r["seconds"])
            print(f"{name:>10}: {best['seconds']:6.1f} s, peak {best['peak_mib']:6.0f} MiB "
                  f"({Path(best['module']).parent})")
        if args.against:
            ours = min(r["seconds"] for r in results["this tree"])
            theirs = min(r["seconds"] for r in results["against"])
            print(f"time ratio this / against: {ours / theirs:.2f}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_time":
        _time_one(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("lowell")
    sub.add_parser("night")
    sub.add_parser("weights")
    speed = sub.add_parser("speed")
    speed.add_argument("--frames", type=int, default=67)
    speed.add_argument("--against", help="another source tree to time the same way")
    speed.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    {"lowell": run_lowell, "night": run_night, "weights": run_weights,
     "speed": run_speed}[args.what](args)


if __name__ == "__main__":
    main()
