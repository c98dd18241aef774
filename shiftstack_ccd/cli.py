# Licensed under a 3-clause BSD style license - see LICENSE
"""The ``shiftstack-ccd`` command line.

``shiftstack-ccd stack FILES... --ephemeris eph.ecsv -o stack.fits``
    Stack frames on a target's motion.
``shiftstack-ccd demo --output-dir DIR``
    Simulate a set of frames with a faint moving target, stack them, write FITS and PNG and
    print the target's S/N in one frame and in the stack. Offline.
``shiftstack-ccd ephemeris FILES... --target T --location L -o eph.ecsv``
    Query JPL Horizons once for the frames' mid-exposure times and save the table.
``shiftstack-ccd search FILES... --ra-rate LO HI --dec-rate LO HI -o candidates.ecsv``
    Find moving sources by stacking along a grid of trial motions (``--around EPHEMERIS``
    to search about a known body, ``--stamps stamps.png`` for postage stamps).
``shiftstack-ccd steps``
    List the installed steps (this package's and other distributions'), one line each.
``shiftstack-ccd run pipeline.toml``
    Validate a pipeline file, then run it (``--check``: validate only).
"""

import argparse
import logging
import sys
from pathlib import Path

from astropy import units as u

from .exceptions import ShiftStackError

__all__ = ["main"]

log = logging.getLogger("shiftstack_ccd")


def _add_motion_options(parser):
    group = parser.add_argument_group("motion model (one of)")
    group.add_argument("--ephemeris", metavar="TABLE",
                       help="ephemeris table (ECSV/CSV: time, RA, Dec [deg], optional rates)")
    group.add_argument("--rates", nargs=2, type=float, metavar=("DRA", "DDEC"),
                       help="linear motion in arcsec/hour: dRA*cos(Dec)/dt and dDec/dt; needs "
                            "--position and --epoch")
    group.add_argument("--position", nargs=2, type=float, metavar=("RA", "DEC"),
                       help="target position (ICRS degrees) at --epoch, for --rates")
    group.add_argument("--epoch", help="epoch of --position (ISO, UTC)")
    group.add_argument("--target", help="JPL Horizons target (name, designation, number or "
                                        "record number)")
    group.add_argument("--location", default="500",
                       help="observer for Horizons: MPC code, '@hst', '500@-170', ... "
                            "(default 500, geocentre)")
    group.add_argument("--id-type", default=None, help="Horizons id_type, e.g. smallbody")
    group.add_argument("--no-cache", action="store_true",
                       help="ask Horizons again even if the answer is cached")


def _motion_model(args, frames):
    from astropy.coordinates import SkyCoord
    from astropy.time import Time

    from .ephemeris import Ephemeris
    chosen = [name for name in ("ephemeris", "rates", "target") if getattr(args, name)]
    if len(chosen) != 1:
        raise ShiftStackError("give exactly one motion model: --ephemeris TABLE, --rates "
                              "DRA DDEC with --position and --epoch, or --target T")
    if args.ephemeris:
        return Ephemeris.from_table(args.ephemeris)
    if args.rates:
        if not (args.position and args.epoch):
            raise ShiftStackError("--rates needs --position RA DEC and --epoch TIME")
        return Ephemeris.linear(SkyCoord(*args.position, unit="deg"),
                                Time(args.epoch, scale="utc"),
                                args.rates[0] * u.arcsec / u.hour,
                                args.rates[1] * u.arcsec / u.hour)
    from .ephemeris import ephemeris_for_times
    from .frames import mid_exposure_time, read_frame
    times = Time([mid_exposure_time(read_frame(f) if isinstance(f, str) else f)
                  for f in frames])
    return ephemeris_for_times(times, args.target, args.location, id_type=args.id_type,
                               cache=not args.no_cache)


def _cmd_stack(args):
    from .cosmicray import clean_cosmic_rays
    from .frames import expand_files
    from .stack import shift_and_stack
    from .visualization import write_preview

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise ShiftStackError(f"{output}: exists; pass --overwrite to replace it")
    if args.preview and Path(args.preview).exists() and not args.overwrite:
        raise ShiftStackError(f"{args.preview}: exists; pass --overwrite to replace it")
    files = args.files if len(args.files) > 1 else args.files[0]
    # Paths, not frames: shift_and_stack reads (and checks) one frame at a time.
    frames = [str(p) for p in expand_files(files)]
    eph = _motion_model(args, frames)
    steps = [clean_cosmic_rays] if args.clean_cosmic_rays else []
    if args.bias or args.dark or args.flat:  # the pipeline files' calibration functions
        from .calibration import calibrate_from_header, read_masters
        masters = read_masters(bias=args.bias, dark=args.dark, flat=args.flat)
        steps.insert(0, (calibrate_from_header, masters))
    result = shift_and_stack(frames, eph, method=args.method, size=args.size,
                             resample=args.resample, sigma_clip=args.sigma_clip,
                             sky_stack=not args.no_sky, weights=args.weights,
                             subtract_static=args.subtract_static, refine=args.refine,
                             refine_max_shift=args.refine_max_shift,
                             per_frame_steps=steps or None, scheduler=args.scheduler,
                             workdir=args.workdir, gain=args.gain, read_noise=args.read_noise,
                             background=None if args.background == "none" else "model",
                             scale=args.scale)
    result.write(output, overwrite=args.overwrite)
    print(f"wrote {output}: {len(frames)} frames, {args.method}, target at pixel "
          f"({result.target_pixel[0]:.1f}, {result.target_pixel[1]:.1f})")
    if args.preview:
        images = [result.stack] + ([result.sky_stack] if result.sky_stack is not None else [])
        titles = ["stacked on the target", "stacked on the stars"][:len(images)]
        write_preview(args.preview, images, titles=titles,
                      marks=[result.target_pixel] + [None] * (len(images) - 1),
                      overwrite=args.overwrite)
        print(f"wrote {args.preview}")
    return 0


def _cmd_search(args):
    from astropy.table import QTable

    from ._utils import atomic_output
    from .ephemeris import Ephemeris
    from .frames import read_frames
    from .search import search_motion, write_candidate_stamps

    output = Path(args.output)
    for path in (output, Path(args.stamps) if args.stamps else None):
        if path is not None and path.exists() and not args.overwrite:
            raise ShiftStackError(f"{path}: exists; pass --overwrite to replace it")
    rate = u.arcsec / u.hour
    frames = read_frames(args.files if len(args.files) > 1 else args.files[0])
    around = Ephemeris.from_table(args.around) if args.around else None
    found = search_motion(
        frames, ra_rate=tuple(args.ra_rate) * rate if args.ra_rate else None,
        dec_rate=tuple(args.dec_rate) * rate if args.dec_rate else None, around=around,
        around_radius=args.around_radius * u.arcsec if args.around_radius else None,
        snr_threshold=args.snr_threshold, fwhm=args.fwhm, scheduler=args.scheduler,
        max_time=args.max_time * u.s)
    table = QTable(found, copy=True)
    meta = found.meta
    table.meta = {"reference_time": meta["reference_time"].isot,
                  "n_trajectories": meta["n_trajectories"], "n_motions": meta["n_motions"],
                  "rate_step_arcsec_per_hour": float(meta["rate_step"].value),
                  "fwhm_pix": meta["fwhm"], "snr_threshold": meta["snr_threshold"],
                  "snr_scatter": meta["snr_scatter"],
                  "flux_correction": meta["flux_correction"],
                  "files": [str(f.meta.get("SSFILE", "")) for f in frames]}
    with atomic_output(output, overwrite=args.overwrite) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    print(f"wrote {output}: {len(found)} candidates at S/N >= {args.snr_threshold:g} from "
          f"{meta['n_trajectories']:,} trajectories ({meta['n_motions']} motions) in "
          f"{meta['seconds']:.1f} s; empty-sky S/N scatter {meta['snr_scatter']:.2f}")
    for k, row in enumerate(found[:10], start=1):
        print(f"  #{k}: RA {row['ra'].value:.6f} Dec {row['dec'].value:+.6f} "
              f"rates {row['ra_rate'].value:+.2f} {row['dec_rate'].value:+.2f} arcsec/h "
              f"S/N {row['snr']:.1f}")
    if args.stamps:
        n = write_candidate_stamps(frames, found, args.stamps, overwrite=args.overwrite)
        print(f"wrote {args.stamps}: stamps of {n} candidates")
    return 0


def _cmd_demo(args):
    from .demo import run_demo
    report = run_demo(args.output_dir, n_frames=args.n_frames, snr=args.snr, seed=args.seed,
                      overwrite=args.overwrite)
    for line in report.lines():
        print(line)
    return 0


def _cmd_ephemeris(args):
    from astropy.time import Time

    from .ephemeris import ephemeris_for_times
    from .frames import mid_exposure_time, read_frames
    frames = read_frames(args.files if len(args.files) > 1 else args.files[0])
    times = Time([mid_exposure_time(f) for f in frames])
    step = args.step * u.min if args.step else None
    eph = ephemeris_for_times(times, args.target, args.location, id_type=args.id_type,
                              cache=not args.no_cache, epochs=args.epochs, step=step,
                              output=args.output, overwrite=args.overwrite)
    print(f"wrote {args.output}: {args.target} ({eph.meta.get('resolved_name', '?')}) seen "
          f"from {args.location}, covering the {len(times)} frames' mid-exposure times; "
          f"{eph.meta.get('n_requests', 0)} Horizons request(s)")
    return 0


def _cmd_steps(args):
    from .steps import available_steps
    steps = available_steps(kind=args.kind)
    width = max((len(name) for name in steps), default=0)
    for name, info in steps.items():
        origin = "" if info.distribution == "shiftstack_ccd" else f" [{info.distribution}]"
        print(f"{name:<{width}}  {info.kind:<8}  {info.summary}{origin}")
    return 0


def _cmd_run(args):
    from .pipeline import load_pipeline
    pipeline = load_pipeline(args.pipeline, overwrite=True if args.overwrite else None)
    if args.check:
        print(f"{args.pipeline}: valid")
        for line in pipeline.describe():
            print(f"  {line}")
        return 0
    run = pipeline.run()
    result = run.result
    print(f"{args.pipeline}: {len(result.table)} frames stacked, target at pixel "
          f"({result.target_pixel[0]:.1f}, {result.target_pixel[1]:.1f})")
    for path in run.outputs.values():
        print(f"wrote {path}")
    return 0


def build_parser():
    """The argument parser of ``shiftstack-ccd``."""
    from . import __version__
    parser = argparse.ArgumentParser(
        prog="shiftstack-ccd",
        description="Shift-and-stack CCD frames on the motion of a solar-system body.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=0,
                           help="more messages (-vv for debugging)")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="stack frames on a moving target")
    stack.add_argument("files", nargs="+", help="FITS files, a folder or a glob pattern")
    _add_motion_options(stack)
    stack.add_argument("--method", choices=("mean", "median", "sum"), default="mean")
    stack.add_argument("--size", type=int, default=None,
                       help="output size in pixels (square; default: large enough for all "
                            "frames)")
    stack.add_argument("--resample", choices=("auto", "shift", "warp"), default="auto")
    stack.add_argument("--sigma-clip", action="store_true", help="reject outliers per pixel")
    stack.add_argument("--no-sky", action="store_true", help="skip the stack on the stars")
    stack.add_argument("--weights", choices=("inverse-variance", "exptime", "snr"),
                       default=None, help="weights of the mean and sum (default: equal; "
                                          "snr: best for point sources)")
    calib = stack.add_argument_group("calibration and noise (raw frames)")
    calib.add_argument("--bias", nargs="+", default=(), metavar="FILE",
                       help="bias frames (combined by median); overscan and trim from "
                            "BIASSEC/TRIMSEC when the frames have them")
    calib.add_argument("--dark", nargs="+", default=(), metavar="FILE",
                       help="dark frames (scaled by EXPTIME)")
    calib.add_argument("--flat", nargs="+", default=(), metavar="FILE", help="flat frames")
    calib.add_argument("--gain", type=float, default=None, metavar="E_PER_ADU",
                       help="gain for the noise model (default: the header's)")
    calib.add_argument("--read-noise", type=float, default=None, metavar="E",
                       help="read noise in electrons (default: the header's)")
    calib.add_argument("--background", choices=("model", "none"), default="model",
                       help="subtract each frame's modelled sky before combining (default)")
    calib.add_argument("--scale", choices=("stars",), default=None,
                       help="divide each frame by its photometric scale from common stars")
    stack.add_argument("--clean-cosmic-rays", action="store_true",
                       help="clean cosmic rays in every frame first (median method)")
    stack.add_argument("--subtract-static", action="store_true",
                       help="subtract the static sky (the stars) before stacking on the target")
    stack.add_argument("--refine", action="store_true",
                       help="refine per-frame offsets on the target by cross-correlation")
    stack.add_argument("--refine-max-shift", type=float, default=None, metavar="PIX",
                       help="largest refinement accepted (default: the ephemeris' 3 sigma)")
    stack.add_argument("--scheduler", default=None,
                       help="run per-frame work through dask: 'threads', 'processes' or a "
                            "dask.distributed address such as tcp://127.0.0.1:8786")
    stack.add_argument("--workdir", default=None, metavar="DIR",
                       help="keep intermediate frames in a temporary folder under DIR, so that "
                            "memory stays bounded however many frames there are")
    stack.add_argument("-o", "--output", default="stack.fits", help="output FITS file")
    stack.add_argument("--preview", metavar="PNG", help="also write a PNG preview")
    stack.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    stack.set_defaults(func=_cmd_stack)

    search = sub.add_parser("search", help="find moving sources by stacking along a grid of "
                                           "trial motions")
    search.add_argument("files", nargs="+", help="FITS files, a folder or a glob pattern")
    search.add_argument("--ra-rate", nargs=2, type=float, metavar=("LO", "HI"),
                        help="range of dRA*cos(Dec)/dt, arcsec/hour")
    search.add_argument("--dec-rate", nargs=2, type=float, metavar=("LO", "HI"),
                        help="range of dDec/dt, arcsec/hour")
    search.add_argument("--around", metavar="EPHEMERIS",
                        help="ephemeris table: search its 3-sigma ellipse (or --around-radius) "
                             "instead of the whole field")
    search.add_argument("--around-radius", type=float, metavar="ARCSEC",
                        help="search radius about --around's position")
    search.add_argument("--snr-threshold", type=float, default=5.0)
    search.add_argument("--fwhm", type=float, default=None,
                        help="PSF FWHM in pixels (default: measured on the stars)")
    search.add_argument("--scheduler", default=None,
                        help="'threads', 'processes' or a dask.distributed address")
    search.add_argument("--max-time", type=float, default=3600.0, metavar="S",
                        help="refuse a search estimated to take longer (default 3600 s)")
    search.add_argument("-o", "--output", default="candidates.ecsv",
                        help="candidate table (ECSV)")
    search.add_argument("--stamps", metavar="PNG",
                        help="also write postage stamps of the best candidates")
    search.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    search.set_defaults(func=_cmd_search)

    demo = sub.add_parser("demo", help="simulate, stack and measure a faint moving target "
                                       "(offline)")
    demo.add_argument("--output-dir", default="shiftstack-demo", help="where to write")
    demo.add_argument("--n-frames", type=int, default=9)
    demo.add_argument("--snr", type=float, default=3.0, help="target S/N in one frame")
    demo.add_argument("--seed", type=int, default=3)
    demo.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    demo.set_defaults(func=_cmd_demo)

    ephem = sub.add_parser("ephemeris", help="query JPL Horizons once for the frames' times")
    ephem.add_argument("files", nargs="+", help="FITS files, a folder or a glob pattern")
    ephem.add_argument("--target", required=True, help="target name, designation or record")
    ephem.add_argument("--location", default="500", help="observer (MPC code, @hst, ...)")
    ephem.add_argument("--id-type", default=None, help="Horizons id_type")
    ephem.add_argument("--epochs", choices=("auto", "range", "tlist"), default="auto",
                       help="query a start/stop/step range, the exact epochs, or whichever "
                            "needs fewer requests (default)")
    ephem.add_argument("--step", type=float, default=None,
                       help="range step in minutes (default: chosen for < 1 mas "
                            "interpolation error)")
    ephem.add_argument("--no-cache", action="store_true",
                       help="ask Horizons again even if the answer is cached")
    ephem.add_argument("-o", "--output", default="ephemeris.ecsv")
    ephem.add_argument("--overwrite", action="store_true")
    ephem.set_defaults(func=_cmd_ephemeris)

    steps = sub.add_parser("steps", help="list the installed steps, one line each")
    steps.add_argument("--kind", choices=("frame", "stack", "input", "grid"),
                       default=None, help="only steps of this kind")
    steps.set_defaults(func=_cmd_steps)

    run = sub.add_parser("run", help="run a TOML pipeline file (validated first)")
    run.add_argument("pipeline", help="the pipeline file (.toml)")
    run.add_argument("--check", action="store_true",
                     help="only validate the file and say what it would do")
    run.add_argument("--overwrite", action="store_true",
                     help="replace existing outputs (overrides [output] overwrite)")
    run.set_defaults(func=_cmd_run)
    return parser


class _CLIHandler(logging.StreamHandler):
    """The command line's own log handler (one at a time, on the package's logger)."""


def _log_to_stderr(level, progress_level):
    """Messages of shiftstack_ccd to stderr at ``level``; progress lines (per frame, per
    tile) at ``progress_level``, i.e. shown unless -q."""
    package = logging.getLogger("shiftstack_ccd")
    for handler in [h for h in package.handlers if isinstance(h, _CLIHandler)]:
        package.removeHandler(handler)
    handler = _CLIHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("shiftstack-ccd: %(message)s"))
    package.addHandler(handler)
    package.setLevel(min(level, progress_level))
    handler.addFilter(lambda record: record.levelno >= (
        progress_level if record.name == "shiftstack_ccd.progress" else level))


def main(argv=None):
    """Run ``shiftstack-ccd``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.ERROR if args.quiet else (
        logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    _log_to_stderr(level, logging.ERROR if args.quiet else min(level, logging.INFO))
    try:
        return args.func(args)
    except (ShiftStackError, FileNotFoundError) as exc:
        print(f"shiftstack-ccd: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("shiftstack-ccd: interrupted; no partial output was left", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
