# Licensed under a 3-clause BSD style license - see LICENSE
"""The ``shiftstack-ccd`` command line.

``shiftstack-ccd stack FILES... --ephemeris eph.ecsv -o stack.fits``
    Stack frames on a target's motion.
``shiftstack-ccd demo --output-dir DIR``
    Simulate a set of frames with a faint moving target, stack them, write FITS and PNG and
    print the target's S/N in one frame and in the stack. Offline.
``shiftstack-ccd ephemeris FILES... --target T --location L -o eph.ecsv``
    Query JPL Horizons once for the frames' mid-exposure times and save the table.
``shiftstack-ccd measure stack.fits [--catalog TABLE] [--ades obs.psv ...]``
    Detect and measure the target on a stack: one summary line, a table, ADES/MPC reports.
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
    steps = [clean_cosmic_rays] if args.clean_cosmic_rays else None
    result = shift_and_stack(frames, eph, method=args.method, size=args.size,
                             resample=args.resample, sigma_clip=args.sigma_clip,
                             sky_stack=not args.no_sky, weights=args.weights,
                             subtract_static=args.subtract_static, refine=args.refine,
                             refine_max_shift=args.refine_max_shift, per_frame_steps=steps,
                             scheduler=args.scheduler, workdir=args.workdir)
    result.write(output, overwrite=args.overwrite)
    print(f"wrote {output}: {len(frames)} frames, {args.method}, target at pixel "
          f"({result.target_pixel[0]:.1f}, {result.target_pixel[1]:.1f})")
    _print_summary(result)
    if args.preview:
        images = [result.stack] + ([result.sky_stack] if result.sky_stack is not None else [])
        titles = ["stacked on the target", "stacked on the stars"][:len(images)]
        write_preview(args.preview, images, titles=titles,
                      marks=[result.target_pixel] + [None] * (len(images) - 1),
                      overwrite=args.overwrite)
        print(f"wrote {args.preview}")
    return 0


def _print_summary(result):
    """The stack's one-line verdict: detected or not, S/N, position, limit."""
    from .measure import measure_target, summary_line
    try:
        table = measure_target(result)
    except ShiftStackError as exc:
        print(f"target not measured: {exc}")
        return
    print(f"target: {summary_line(table[0], table.meta)}")


def _cmd_measure(args):
    from astropy.coordinates import SkyCoord

    from .measure import measure_target, summary_line
    from .report import write_ades, write_mpc80
    from .stack import StackResult

    outputs = [p for p in (args.output, args.ades, args.mpc80) if p]
    for path in outputs:
        if Path(path).exists() and not args.overwrite:
            raise ShiftStackError(f"{path}: exists; pass --overwrite to replace it")
    if args.ades and not (args.stn and args.object and args.ast_cat and args.submitter
                          and args.telescope):
        raise ShiftStackError("--ades needs --stn, --object, --ast-cat and --submitter (and "
                              "--telescope DESIGN APERTURE_M DETECTOR)")
    if not Path(args.stack).is_file():
        raise ShiftStackError(f"{args.stack}: no such file")
    result = StackResult.read(args.stack)
    position = SkyCoord(*args.position, unit="deg") if args.position else None
    radius = args.search_radius * u.arcsec if args.search_radius else None
    table = measure_target(result, position=position, catalog=args.catalog, band=args.band,
                           zero_point=args.zero_point, search_radius=radius,
                           snr_threshold=args.snr_threshold)
    for row in table:
        print(summary_line(row, table.meta))
    if args.output:
        from ._utils import atomic_output
        with atomic_output(args.output, overwrite=args.overwrite) as tmp:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
        print(f"wrote {args.output}")
    if args.ades:
        design, aperture, detector = args.telescope
        write_ades(table, args.ades, stn=args.stn, submitter=args.submitter,
                   observers=args.observer or [args.submitter],
                   measurers=args.measurer or [args.submitter],
                   telescope={"design": design, "aperture": float(aperture),
                              "detector": detector},
                   obj=args.object, ast_cat=args.ast_cat, phot_cat=args.phot_cat,
                   overwrite=args.overwrite)
        print(f"wrote {args.ades}")
    if args.mpc80:
        write_mpc80(table, args.mpc80, stn=args.stn, obj=args.object, overwrite=args.overwrite)
        print(f"wrote {args.mpc80}")
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
    stack.add_argument("--weights", choices=("inverse-variance", "exptime"), default=None,
                       help="weights of the mean and sum (default: equal)")
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

    measure = sub.add_parser("measure", help="detect and measure the target on a stack")
    measure.add_argument("stack", help="a stack written by 'shiftstack-ccd stack'")
    measure.add_argument("--catalog", metavar="TABLE",
                         help="reference stars (ra, dec [deg], a magnitude column) for the "
                              "zero point, or 'gaia' (needs the network once; cached)")
    measure.add_argument("--band", help="band of the magnitudes (the catalogue's column)")
    measure.add_argument("--zero-point", type=float, help="magnitude of a flux of 1 (needs "
                                                          "--band)")
    measure.add_argument("--position", nargs=2, type=float, metavar=("RA", "DEC"),
                         help="where to look (ICRS deg at the stack's epoch; default: the "
                              "predicted target)")
    measure.add_argument("--search-radius", type=float, metavar="ARCSEC",
                         help="search radius (default: the ephemeris' 3 sigma, else 1 FWHM)")
    measure.add_argument("--snr-threshold", type=float, default=5.0)
    measure.add_argument("-o", "--output", metavar="ECSV", help="write the measurement table")
    measure.add_argument("--ades", metavar="FILE", help="write an ADES report (.psv or .xml)")
    measure.add_argument("--mpc80", metavar="FILE", help="write MPC 80-column lines")
    measure.add_argument("--stn", help="MPC observatory code")
    measure.add_argument("--object", help="number, provisional designation or trkSub")
    measure.add_argument("--ast-cat", help="catalogue of the WCS (ADES astCat, e.g. Gaia2)")
    measure.add_argument("--phot-cat", help="catalogue of the zero point (ADES photCat)")
    measure.add_argument("--submitter", help="submitter's name")
    measure.add_argument("--observer", action="append", help="observer (repeat)")
    measure.add_argument("--measurer", action="append", help="measurer (repeat)")
    measure.add_argument("--telescope", nargs=3, metavar=("DESIGN", "APERTURE_M", "DETECTOR"),
                         help="telescope for ADES, e.g. Reflector 1.1 CCD")
    measure.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    measure.set_defaults(func=_cmd_measure)

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
