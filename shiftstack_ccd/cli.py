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
``shiftstack-ccd search FILES... --ra-rate LO HI --dec-rate LO HI -o candidates.ecsv``
    Find moving sources by stacking along a grid of trial motions (``--around EPHEMERIS``
    to search about a known body, ``--stamps stamps.png`` for postage stamps).
``shiftstack-ccd steps``
    List the installed steps (this package's and other distributions'), one line each.
``shiftstack-ccd run pipeline.toml``
    Validate a pipeline file, then run it (``--check``: validate only).
"""

import argparse
import contextlib
import logging
import signal
import sys
import time
import warnings
from pathlib import Path

from ._auto_size import RULE as AUTO_SIZE_RULE
from ._cli_output import installed
from .exceptions import OutputExistsError, ShiftStackError

__all__ = ["main"]

log = logging.getLogger("shiftstack_ccd")


class UsageError(ShiftStackError):
    """Options that do not go together or cannot be read (exit status 2)."""


def _position(tokens):
    """ICRS position from ``RA DEC`` in degrees or sexagesimal (``08:18:30.7 +25:20:25``)."""
    from astropy.coordinates import SkyCoord
    text = " ".join(tokens)
    if len(tokens) not in (1, 2) or (len(tokens) == 1 and len(text.split()) != 2):
        raise UsageError(f"--position {text!r}: give RA and Dec, in degrees (124.63 25.34) or "
                         "sexagesimal (08:18:30.7 +25:20:25, RA in hours).")
    ra, dec = text.split()
    sexagesimal = any(c in ra for c in ":hms ")
    try:
        return SkyCoord(ra, dec, unit=("hourangle" if sexagesimal else "deg", "deg"),
                        frame="icrs")
    except (ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"--position {text!r}: not a position ({reason}); give RA and Dec in "
                         "degrees (124.63 25.34) or sexagesimal (08:18:30.7 +25:20:25, RA in "
                         "hours).") from None


def _epoch(text):
    """A UTC time from ISO text, or an MJD number."""
    from astropy.time import Time
    try:
        value = float(text)
    except ValueError:
        value = None
    try:
        if value is not None:
            return Time(value, format="jd" if value > 2_400_000 else "mjd", scale="utc")
        return Time(text, scale="utc")
    except ValueError:
        raise UsageError(f"--epoch {text!r}: not a time; give ISO UTC (2024-03-01T03:00:00) "
                         "or an MJD.") from None


def _size_option(text):
    """``--size``: a positive number of pixels or ``full``."""
    if text.strip().lower() == "full":
        return "full"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of pixels (> 0) or 'full'")
    return value


def _size_text(size):
    """A size as shift_and_stack takes it, in words."""
    if isinstance(size, int):
        return f"{size} x {size} px"
    if isinstance(size, tuple):
        return f"{size[1]} x {size[0]} px"
    return str(size)


def _add_motion_options(parser):
    group = parser.add_argument_group("motion model (one of)")
    group.add_argument("--ephemeris", metavar="TABLE",
                       help="ephemeris table (ECSV/CSV: time, RA, Dec [deg], optional rates)")
    group.add_argument("--rates", nargs=2, type=float, metavar=("DRA", "DDEC"),
                       help="linear motion in arcsec/hour: dRA*cos(Dec)/dt and dDec/dt; needs "
                            "--position and --epoch")
    group.add_argument("--position", nargs="+", metavar="RA DEC",
                       help="target position at --epoch, for --rates: ICRS degrees "
                            "(124.63 25.34) or sexagesimal (08:18:30.7 +25:20:25, RA in hours)")
    group.add_argument("--epoch", help="epoch of --position: ISO UTC (2024-03-01T03:00:00) or "
                                       "an MJD")
    group.add_argument("--target", help="JPL Horizons target (name, designation, number or "
                                        "record number); needs the network")
    group.add_argument("--location", default="500",
                       help="observer for Horizons: MPC code, '@hst', '500@-170', ... "
                            "(default 500, geocentre)")
    group.add_argument("--id-type", default=None,
                       help="Horizons id_type, e.g. smallbody (default: Horizons decides)")
    group.add_argument("--no-cache", action="store_true",
                       help="ask Horizons again even if the answer is cached")


def _motion_model(args, frames):
    from astropy import units as u
    from astropy.time import Time

    from .ephemeris import Ephemeris
    _check_motion_options(args)
    if args.ephemeris:
        return Ephemeris.from_table(args.ephemeris)
    if args.rates:
        return Ephemeris.linear(_position(args.position), _epoch(args.epoch),
                                args.rates[0] * u.arcsec / u.hour,
                                args.rates[1] * u.arcsec / u.hour)
    from .ephemeris import ephemeris_for_times
    from .frames import mid_exposure_time, read_frame
    times = Time([mid_exposure_time(read_frame(f) if isinstance(f, str) else f)
                  for f in frames])
    return ephemeris_for_times(times, args.target, args.location, id_type=args.id_type,
                               cache=not args.no_cache)


def _byte_size(text):
    """A size in bytes from '64MB', '1.5GB', '512MiB' or a plain number (as pipeline files)."""
    from ._validate import byte_size
    try:
        return byte_size(text, "--mem-limit")
    except ShiftStackError as error:
        raise argparse.ArgumentTypeError(str(error).split(": ", 1)[1]) from None


def _check_motion_options(args):
    """What can be checked of the motion options before any frame is read."""
    chosen = [name for name in ("ephemeris", "rates", "target") if getattr(args, name)]
    if len(chosen) != 1:
        raise UsageError("give exactly one motion model: --ephemeris TABLE, --rates "
                         "DRA DDEC with --position and --epoch, or --target T")
    if args.rates and not (args.position and args.epoch):
        raise UsageError("--rates needs --position RA DEC and --epoch TIME")
    if args.position and not args.rates:
        raise UsageError("--position is only used with --rates")
    if args.rates:
        if not all(map(lambda v: abs(v) < float("inf"), args.rates)):
            raise UsageError(f"--rates {args.rates[0]} {args.rates[1]}: must be finite numbers")
        _position(args.position)
        _epoch(args.epoch)


def _cmd_stack(args):
    from ._cli_output import run_summary
    from ._utils import check_output_path
    from ._validate import stack_parameters
    from .cosmicray import clean_cosmic_rays
    from .frames import expand_files
    from .stack import shift_and_stack
    from .visualization import TARGET_ZOOM, write_preview

    start = time.perf_counter()
    _check_motion_options(args)
    if args.ephemeris and not Path(args.ephemeris).is_file():
        raise ShiftStackError(f"--ephemeris {args.ephemeris}: no such file")
    # everything that can be refused is refused before the first frame is read
    size = args.size if isinstance(args.size, int) else None
    stack_parameters(method=args.method, size=size, resample=args.resample,
                     refine_max_shift=args.refine_max_shift, scheduler=args.scheduler,
                     workdir=args.workdir)
    files = expand_files(args.files if len(args.files) > 1 else args.files[0])
    masters = [*args.bias, *args.dark, *args.flat]
    inputs = files + masters + ([args.ephemeris] if args.ephemeris else [])
    output = check_output_path(args.output, args.overwrite, inputs, "output (-o)", create=False)
    if args.preview:
        check_output_path(args.preview, args.overwrite, inputs, "preview", create=False)
        if Path(args.preview).resolve() == output.resolve():
            raise UsageError(f"--preview {args.preview}: the same file as --output")
    # Paths, not frames: shift_and_stack reads (and checks) one frame at a time.
    frames = files
    eph = _motion_model(args, frames)
    if args.size is None:
        from ._auto_size import default_size
        size, why = default_size(frames, eph)
        print(f"output size: {'the whole field' if size is None else _size_text(size)} "
              f"({why}; --size N or --size full to choose)")
    steps = [clean_cosmic_rays] if args.clean_cosmic_rays else []
    if args.bias or args.dark or args.flat:  # the pipeline files' calibration functions
        from .calibration import calibrate_from_header, read_masters
        masters = read_masters(bias=args.bias, dark=args.dark, flat=args.flat)
        steps.insert(0, (calibrate_from_header, masters))
    result = shift_and_stack(frames, eph, method=args.method, size=size,
                             resample=args.resample, sigma_clip=args.sigma_clip,
                             sky_stack=not args.no_sky, weights=args.weights,
                             subtract_static=args.subtract_static, refine=args.refine,
                             refine_max_shift=args.refine_max_shift,
                             per_frame_steps=steps or None, scheduler=args.scheduler,
                             workdir=args.workdir, gain=args.gain, read_noise=args.read_noise,
                             background=None if args.background == "none" else "model",
                             scale=args.scale, mem_limit=args.mem_limit,
                             pixfrac=args.pixfrac)
    result.write(output, overwrite=args.overwrite)
    x, y = result.target_pixel
    print(f"wrote {output}: {len(frames)} frames, {args.method}, target at pixel "
          f"({x:.1f}, {y:.1f}) (0-based; ({x + 1:.1f}, {y + 1:.1f}) in FITS/ds9 1-based)")
    if args.preview:
        images = [result.stack] + ([result.sky_stack] if result.sky_stack is not None else [])
        titles = ["stacked on the target", "stacked on the stars"][:len(images)]
        write_preview(args.preview, images, titles=titles,
                      marks=[result.target_pixel] + [None] * (len(images) - 1),
                      overwrite=args.overwrite, zoom=TARGET_ZOOM)
        print(f"wrote {args.preview}")
    _print_summary(result)  # the target's verdict
    print(run_summary(result, len(frames), time.perf_counter() - start,
                      [output] + ([args.preview] if args.preview else [])))
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
    from astropy import units as u
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


def _cmd_search(args):
    from astropy import units as u
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
    from astropy import units as u
    from astropy.time import Time

    from ._utils import check_output_path
    from ._validate import number
    from .ephemeris import ephemeris_for_times
    from .frames import expand_files, mid_exposure_time, read_frames
    step = None if args.step is None else number(args.step, "step", 0) * u.min
    files = expand_files(args.files if len(args.files) > 1 else args.files[0])
    check_output_path(args.output, args.overwrite, files, "output (-o)", create=False)
    frames = read_frames(files)
    times = Time([mid_exposure_time(f) for f in frames])
    eph = ephemeris_for_times(times, args.target, args.location, id_type=args.id_type,
                              cache=not args.no_cache, epochs=args.epochs, step=step,
                              output=args.output, overwrite=args.overwrite)
    print(f"wrote {args.output}: {args.target} ({eph.meta.get('resolved_name', '?')}) seen "
          f"from {args.location}, covering the {len(times)} frames' mid-exposure times; "
          f"{eph.meta.get('n_requests', 0)} Horizons request(s)")
    return 0


def _cmd_steps(args):
    from .steps import describe_steps
    steps = describe_steps(kind=args.kind)
    width = max((len(name) for name in steps), default=0)
    for name, (kind, summary, distribution) in steps.items():
        origin = "" if distribution == "shiftstack_ccd" else f" [{distribution}]"
        print(f"{name:<{width}}  {kind:<8}  {summary}{origin}")
    return 0


def _cmd_run(args):
    from ._cli_output import run_summary
    from .pipeline import load_pipeline
    start = time.perf_counter()
    pipeline = load_pipeline(args.pipeline, overwrite=True if args.overwrite else None,
                             allow_scheduler=args.allow_scheduler)
    if args.check:
        print(f"{args.pipeline}: valid")
        for line in pipeline.describe():
            print(f"  {line}")
        return 0
    size, why = pipeline.output_size()
    print(f"output size: {'the whole field' if size is None else _size_text(size)} ({why})")
    run = pipeline.run()
    result = run.result
    x, y = result.target_pixel
    print(f"{args.pipeline}: {len(result.table)} frames stacked, target at pixel "
          f"({x:.1f}, {y:.1f}) (0-based; ({x + 1:.1f}, {y + 1:.1f}) in FITS/ds9 1-based)")
    for path in run.outputs.values():
        print(f"wrote {path}")
    _print_summary(result)  # the target's verdict, as stack gives it
    print(run_summary(result, len(pipeline.files), time.perf_counter() - start,
                      list(run.outputs.values())))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_global_options(parser, default):
    """-v/-q, on the main parser (with defaults) and on every subcommand (``default`` is
    SUPPRESS there, so that an option given before the subcommand is not reset after it)."""
    group = parser.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="count", default=default,
                       help="more messages (-vv for debugging, and tracebacks of errors)")
    group.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="only errors: no progress, no warnings")


def build_parser():
    """The argument parser of ``shiftstack-ccd``."""
    from . import __version__
    parser = _Parser(
        prog="shiftstack-ccd",
        description="Shift-and-stack CCD frames on the motion of a solar-system body. "
                    "Pixel coordinates printed are 0-based (numpy); add 1 for FITS/ds9.",
        epilog="New here? 'shiftstack-ccd demo' runs the whole chain offline on simulated "
               "frames; 'shiftstack-ccd COMMAND --help' lists a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stack = sub.add_parser("stack", help="stack frames on a moving target")
    stack.add_argument("files", nargs="+", help="FITS files, a folder or a glob pattern")
    _add_motion_options(stack)
    stack.add_argument("--method", choices=("mean", "median", "sum"), default="mean",
                       help="how to combine the frames (default mean)")
    stack.add_argument("--size", type=_size_option, default=None, metavar="PIX|full",
                       help="output size in pixels (square, centred on the target), or 'full' "
                            f"for every pixel of every frame; default: {AUTO_SIZE_RULE}")
    stack.add_argument("--resample", choices=("auto", "shift", "warp", "drizzle"),
                       default="auto",
                       help="resampling: shift (pure translation, when the frames allow it), "
                            "warp (full WCS), auto (shift where exact; default), or drizzle "
                            "(STScI's drizzle: for output pixels larger than the frames')")
    stack.add_argument("--pixfrac", type=float, default=1.0,
                       help="drizzle's drop size, a fraction of an input pixel (default 1)")
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
                       help="keep intermediate frames in a temporary folder under DIR (which "
                            "must exist), so that memory stays bounded however many frames")
    stack.add_argument("--mem-limit", type=_byte_size, default=None, metavar="SIZE",
                       help="memory budget of the combine and of the intermediate products "
                            "kept in memory, e.g. 64MB or 2GB (default 64MB; products over "
                            "it go to a temporary folder)")
    stack.add_argument("-o", "--output", default="stack.fits",
                       help="output FITS file (default stack.fits); never one of the inputs")
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
    search.add_argument("--snr-threshold", type=float, default=5.0,
                        help="report candidates at this robust S/N or more (default 5)")
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
    demo.add_argument("--output-dir", default="shiftstack-demo",
                      help="where to write (default shiftstack-demo)")
    demo.add_argument("--n-frames", type=int, default=9,
                      help="number of simulated frames (default 9, at least 2)")
    demo.add_argument("--snr", type=float, default=3.0,
                      help="target S/N in one frame (default 3)")
    demo.add_argument("--seed", type=int, default=3,
                      help="random seed of the simulation (default 3)")
    demo.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    demo.set_defaults(func=_cmd_demo)

    ephem = sub.add_parser("ephemeris", help="query JPL Horizons once for the frames' times")
    ephem.add_argument("files", nargs="+", help="FITS files, a folder or a glob pattern")
    ephem.add_argument("--target", required=True, help="target name, designation or record")
    ephem.add_argument("--location", default="500",
                       help="observer (MPC code, @hst, ...; default 500, geocentre)")
    ephem.add_argument("--id-type", default=None,
                       help="Horizons id_type, e.g. smallbody (default: Horizons decides)")
    ephem.add_argument("--epochs", choices=("auto", "range", "tlist"), default="auto",
                       help="query a start/stop/step range, the exact epochs, or whichever "
                            "needs fewer requests (default)")
    ephem.add_argument("--step", type=float, default=None,
                       help="range step in minutes, > 0 (default: chosen for < 1 mas "
                            "interpolation error)")
    ephem.add_argument("--no-cache", action="store_true",
                       help="ask Horizons again even if the answer is cached")
    ephem.add_argument("-o", "--output", default="ephemeris.ecsv",
                       help="the table to write (ECSV; default ephemeris.ecsv)")
    ephem.add_argument("--overwrite", action="store_true", help="replace an existing table")
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
    measure.add_argument("--snr-threshold", type=float, default=5.0,
                         help="S/N below which the target is not detected (default 5)")
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

    run = sub.add_parser("run", help="run a TOML pipeline file (validated first)",
                         description="Run a TOML pipeline file (docs: 'Steps and pipeline "
                                     "files'), validated completely first. Without [stack] "
                                     f"size the output is {AUTO_SIZE_RULE}; size = \"full\" "
                                     "for every pixel of every frame.")
    run.add_argument("pipeline", help="the pipeline file (.toml)")
    run.add_argument("--check", action="store_true",
                     help="only validate the file and say what it would do")
    run.add_argument("--overwrite", action="store_true",
                     help="replace existing outputs (overrides [output] overwrite)")
    run.add_argument("--allow-scheduler", action="store_true",
                     help="let the file's [stack] scheduler name a dask.distributed address "
                          "(frames and pickled tasks are sent there)")
    run.set_defaults(func=_cmd_run)

    for subparser in sub.choices.values():  # every subcommand, those added later too
        _add_global_options(subparser, argparse.SUPPRESS)
    return parser


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that it unwinds (and cleans up) like Ctrl-C."""


@contextlib.contextmanager
def _signals_and_warnings(quiet, out):
    """SIGTERM handled like SIGINT; warnings on one line each, each text once, none with -q;
    the progress bar ended before anything else is printed."""
    def on_term(signum, frame):
        raise _Terminated()

    shown = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        if text not in shown:  # e.g. the median's note on weights, for both stacks: once
            shown.add(text)
            out.write_line(f"shiftstack-ccd: warning: {text}")

    # astropy replaces warnings.showwarning with its logger's when it is first imported:
    # imported first, so that ours (below) is the one in force
    import astropy  # noqa: F401

    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (main() called from a thread): leave it
        pass
    try:
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            else:
                warnings.showwarning = show
            yield
    finally:
        out.close_bar()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _one_line(text):
    return " ".join(str(text).split())


def _option_names(parser, args):
    """Map parameter names to the subcommand's option strings ('size' -> '--size')."""
    sub = parser._subparsers._group_actions[0].choices[args.command]
    return {action.dest: action.option_strings[-1] if action.option_strings else action.dest
            for action in sub._actions}


def _error_message(exc, options):
    """One line for a user's error: the exception's own message, in command-line words."""
    if isinstance(exc, OSError) and not isinstance(exc, ShiftStackError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    text = str(exc) if getattr(exc, "problems", None) else _one_line(exc)  # pipeline: a list
    parameter = getattr(exc, "parameter", None)
    if parameter in options and text.startswith(f"{parameter}:"):
        text = options[parameter] + text[len(parameter):]
    if isinstance(exc, OutputExistsError):
        text = text.replace("overwrite=True (or --overwrite)", "--overwrite")
        text = text.replace("overwrite=True", "--overwrite")
    return text


def main(argv=None):
    """Run ``shiftstack-ccd``; returns the exit status.

    0 on success, 1 for an error (one line on stderr naming the file or option and what to
    do), 2 for a command line that cannot be read, 130 on Ctrl-C and 143 on SIGTERM (the
    work folder and partial outputs removed in both cases).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.verbose = args.verbose or 0
        if args.quiet and args.verbose:
            parser.error("-q and -v together")
    except SystemExit as exc:  # --help, --version, usage errors: a status, not an exit
        return exc.code
    level = logging.ERROR if args.quiet else (
        logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    with installed(level, logging.ERROR if args.quiet else min(level, logging.INFO)) as out:
        return _run(parser, args, out)


def _run(parser, args, out):
    """``args.func(args)``, its errors turned into one line and an exit status."""
    try:
        with _signals_and_warnings(args.quiet, out):
            return args.func(args)
    except UsageError as exc:
        print(f"shiftstack-ccd {args.command}: error: {_one_line(exc)} (see shiftstack-ccd "
              f"{args.command} --help)", file=sys.stderr)
        return 2
    except (ShiftStackError, OSError) as exc:
        if args.verbose:
            log.exception("traceback:")
        print(f"shiftstack-ccd: error: {_error_message(exc, _option_names(parser, args))}",
              file=sys.stderr)
        return 1
    except MemoryError:
        print("shiftstack-ccd: error: out of memory; give a smaller --size or a --workdir",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("shiftstack-ccd: interrupted; no partial output was left", file=sys.stderr)
        return 130
    except _Terminated:
        print("shiftstack-ccd: terminated; no partial output was left", file=sys.stderr)
        return 143
    except Exception as exc:  # a bug: one line, the traceback with -v
        if args.verbose:
            log.exception("traceback:")
        print(f"shiftstack-ccd: error: unexpected {type(exc).__name__}: {_one_line(exc)}; "
              "run with -v for the traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
