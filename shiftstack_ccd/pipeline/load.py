# Licensed under a 3-clause BSD style license - see LICENSE
"""Pipeline files: a whole reduction described in one TOML file, checked before it runs.

A pipeline file names the inputs, the calibration (ccdproc's own overscan, trim, bias and
flat), the per-frame steps in order with their parameters, the motion model, the stacking
options and the outputs; ``shiftstack-ccd run pipeline.toml`` (or `run_pipeline`) runs it.
The format is described in :doc:`/pipelines`; ``docs/examples/lowell.toml`` is a complete
example.

The whole file is validated by `load_pipeline` before any frame is read: every unknown
section, key or step, every parameter of the wrong name or type, every missing file and
every header card that is named but absent is collected, and all of them are reported
together in one `PipelineError`, each with the line of the file it comes from.
"""

import warnings
from pathlib import Path

from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.utils.exceptions import AstropyUserWarning

from .._utils import check_output_path
from ..exceptions import OutputError, PipelineError, ShiftStackError
from ..steps import available_steps, unknown_step_message
from ._checker import (SECTION_RE, Checker, HeaderCache, as_time, did_you_mean, header_key,
                       is_header_ref)
from ._toml import toml_type
from .core import Pipeline

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

__all__ = ["load_pipeline", "run_pipeline"]

#: Sections of a pipeline file and what each holds.
SECTIONS = {
    "inputs": "the frames: a glob or list of files, or a folder filtered on header keys",
    "calibration": "ccdproc calibration: overscan, trim, bias, dark, flat, gain and read "
                   "noise",
    "steps": "per-frame steps, in order ([[steps]] tables, each with step = NAME)",
    "motion": "the target's motion: ephemeris table, linear rates or a Horizons target",
    "stack": "options of shift_and_stack (method, size, sigma_clip, ...)",
    "output": "where to write the stack (FITS) and a preview (PNG)",
}
_REQUIRED_SECTIONS = ("inputs", "motion", "output")
_KEYS = {
    "inputs": ("files", "directory", "filters", "glob", "hdu", "unit"),
    "calibration": ("overscan", "overscan_median", "overscan_polynomial", "trim", "bias",
                    "dark", "flat", "flat_min", "gain", "read_noise"),
    "motion": ("ephemeris", "linear", "horizons"),
    "output": ("stack", "preview", "overwrite"),
}
_LINEAR_KEYS = ("ra", "dec", "epoch", "ra_rate", "dec_rate")
_HORIZONS_KEYS = ("target", "location", "id_type", "cache")
# shift_and_stack parameters that other sections set
_STACK_FROM_ELSEWHERE = {"frames": "[inputs]", "ephemeris": "[motion]",
                         "per_frame_steps": "[[steps]]", "hdu": "[inputs]", "unit": "[inputs]"}


# --------------------------------------------------------------------------------------
# Loading and validating
# --------------------------------------------------------------------------------------


def load_pipeline(path, overwrite=None, allow_scheduler=False):
    """Read and validate a pipeline file.

    Everything is checked before any frame is read: unknown sections, keys and steps,
    parameters of the wrong name or type (against each step's signature and docstring),
    input patterns that match nothing, calibration and ephemeris files that do not exist,
    header cards named as ``"header:KEY"`` that the frames lack, a motion model that is
    not exactly one of the three kinds, outputs that exist when ``overwrite`` is not set.

    Parameters
    ----------
    path : str or path
        The TOML file. Relative paths inside it are relative to its folder;
        ``$VARIABLES`` and ``~`` are expanded.
    overwrite : bool, optional
        Overrides ``[output] overwrite``.
    allow_scheduler : bool
        Let ``[stack] scheduler`` name a dask.distributed address (frames and pickled
        tasks are sent there, so a file must not choose one on its own); the local
        schedulers (``'threads'``, ``'processes'``) are always allowed.

    Returns
    -------
    pipeline : `Pipeline`

    Raises
    ------
    PipelineError
        Listing every problem found, each with its line in the file.
    FileNotFoundError
        The file itself does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise PipelineError(path, [(None, "is a folder; give the pipeline file (.toml)")])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PipelineError(path, [(None, "is not a text file; a pipeline file is TOML "
                                          "text")]) from None
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message names the line and column
        raise PipelineError(path, [(None, f"not valid TOML: {exc}")]) from None
    check = Checker(path, text)

    for section in config:
        if section not in SECTIONS:
            check.error((section,), f"unknown section [{section}]"
                        f"{did_you_mean(section, SECTIONS)} Sections: "
                        f"{', '.join(SECTIONS)}.")
    for section in _REQUIRED_SECTIONS:
        if section not in config:
            check.error(None, f"the section [{section}] is missing ({SECTIONS[section]}).")
    for section in ("inputs", "calibration", "motion", "output", "stack"):
        if section in config and not isinstance(config[section], dict):
            check.error((section,), f"{section} must be a table ([{section}]).")
            config.pop(section)

    files, hdu, unit = _check_inputs(check, config.get("inputs"))
    headers = HeaderCache(hdu)
    calibration = _check_calibration(check, config.get("calibration", {}), files, headers)
    steps = _check_steps(check, config.get("steps", []))
    motion = _check_motion(check, config.get("motion"))
    stack_options = _check_stack(check, config.get("stack", {}), len(files or []),
                                 allow_scheduler)
    inputs = list(files or []) + [p for key in ("bias", "dark", "flat")
                                  for p in calibration.get(key) or []]
    source = getattr(motion.get("ephemeris"), "meta", {}).get("source_file")
    if source:
        inputs.append(source)
    outputs = _check_output(check, config.get("output"), overwrite, inputs)
    if check.problems:
        raise PipelineError(path, sorted(check.problems, key=lambda p: (p[0] or 0)))
    return Pipeline(path, files, hdu, unit, calibration, steps, motion, stack_options,
                    outputs)


def run_pipeline(path, overwrite=None, allow_scheduler=False):
    """Validate a pipeline file, then run it. See `load_pipeline` and `Pipeline.run`.

    Returns
    -------
    result : `PipelineResult`
    """
    return load_pipeline(path, overwrite=overwrite, allow_scheduler=allow_scheduler).run()


def _check_inputs(check, inputs):
    if inputs is None:
        return [], None, None
    check.unknown_keys(("inputs",), inputs, _KEYS["inputs"])
    hdu = inputs.get("hdu")
    if hdu is not None and (isinstance(hdu, bool) or not isinstance(hdu, (int, str))):
        check.error(("inputs", "hdu"), f"hdu must be an integer or an extension name, not "
                    f"{toml_type(hdu)}.")
        hdu = None
    unit = inputs.get("unit")
    if unit is not None:
        try:
            u.Unit(unit)
        except (TypeError, ValueError):
            check.error(("inputs", "unit"), f"unit {unit!r} is not a unit astropy can read.")
            unit = None
    has_files, has_dir = "files" in inputs, "directory" in inputs
    if has_files == has_dir:
        check.error(("inputs",), "[inputs] needs exactly one of files = (paths or glob "
                    "patterns) or directory = (a folder, with filters = {KEY = value}).")
        return [], hdu, unit
    if has_files:
        for key in ("filters", "glob"):
            if key in inputs:
                check.error(("inputs", key), f"{key} goes with directory =, not files =.")
        files = check.files(inputs["files"], ("inputs", "files"), "files")
        return list(dict.fromkeys(files)), hdu, unit
    return _collection_files(check, inputs), hdu, unit


def _collection_files(check, inputs):
    from ccdproc import ImageFileCollection
    where = ("inputs", "directory")
    directory = inputs["directory"]
    if not isinstance(directory, str):
        check.error(where, f"directory must be a string, not {toml_type(directory)}.")
        return []
    folder = check.expand(directory, where)
    if folder is None:
        return []
    if not folder.is_dir():
        check.error(where, f"directory {directory!r} is not a folder ({folder}).")
        return []
    filters = inputs.get("filters", {})
    if not isinstance(filters, dict) or not all(
            isinstance(v, (str, int, float, bool)) for v in filters.values()):
        check.error(("inputs", "filters"), "filters must be a table of header keys and "
                    "values, e.g. { imagetyp = \"OBJECT\", filters = \"VR\" }.")
        return []
    pattern = inputs.get("glob")
    if pattern is not None and not isinstance(pattern, str):
        check.error(("inputs", "glob"), f"glob must be a string, not {toml_type(pattern)}.")
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        collection = ImageFileCollection(str(folder), glob_include=pattern)
        if len(collection.files) == 0:
            check.error(where, f"directory {directory!r} holds no FITS file"
                        + (f" matching {pattern!r}." if pattern else "."))
            return []
        try:
            files = collection.files_filtered(include_path=True, **filters) \
                if filters else collection.files_filtered(include_path=True)
        except (KeyError, ValueError) as exc:
            check.error(("inputs", "filters"), f"filters: {exc}")
            return []
    if len(files) == 0:
        text = ", ".join(f"{k} = {v!r}" for k, v in filters.items())
        check.error(("inputs", "filters"), f"no file in {directory!r} has {text}.")
        return []
    return sorted(Path(f) for f in files)


def _check_calibration(check, cal, files, headers):
    check.unknown_keys(("calibration",), cal, _KEYS["calibration"])
    out = {}
    for key in ("bias", "dark", "flat"):
        if key in cal:
            out[key] = check.files(cal[key], ("calibration", key), key)
            for master in out[key] or []:
                naxis = headers(master).get("NAXIS", 2)
                if naxis != 2:
                    check.error(("calibration", key), f"{key} {master} is not a 2-D image "
                                f"(NAXIS = {naxis}).")
    if out.get("dark"):
        _check_dark_exposures(check, out["dark"], files, headers)
    frames_and_masters = list(files) + [p for key in ("bias", "dark", "flat")
                                        for p in out.get(key, [])]
    for key in ("overscan", "trim"):
        value = cal.get(key)
        if value is None or value is False:
            continue
        where = ("calibration", key)
        if not isinstance(value, str):
            check.error(where, f"{key} must be a FITS section such as '[1:100,1:200]' or "
                        f"'header:KEY', not {toml_type(value)}.")
            continue
        if is_header_ref(value):
            card = header_key(value)
            lacking = [p for p in frames_and_masters if card not in headers(p)]
            badly = [p for p in frames_and_masters if p not in lacking
                     and not SECTION_RE.match(str(headers(p)[card]).strip())]
            if lacking:
                check.error(where, f"{key} = {value!r}: {len(lacking)} file(s) have no "
                            f"{card} card, e.g. {lacking[0]}.")
            elif badly:
                check.error(where, f"{key} = {value!r}: {card} = "
                            f"{headers(badly[0])[card]!r} in {badly[0]} is not a FITS "
                            "section.")
        elif not SECTION_RE.match(value.strip()):
            check.error(where, f"{key} = {value!r} is not a FITS section such as "
                        "'[1388:1432,1:1370]' (1-based, inclusive, x first) or 'header:KEY'.")
            continue
        out[key] = value
    if "overscan_median" in cal:
        if not isinstance(cal["overscan_median"], bool):
            check.error(("calibration", "overscan_median"), "overscan_median must be true "
                        f"or false, not {toml_type(cal['overscan_median'])}.")
        out["overscan_median"] = cal["overscan_median"]
    if "overscan_polynomial" in cal:
        degree = cal["overscan_polynomial"]
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
            check.error(("calibration", "overscan_polynomial"), "overscan_polynomial must be "
                        f"a polynomial degree (0, 1, ...), not {toml_type(degree)}.")
        out["overscan_polynomial"] = degree
    for key in ("overscan_median", "overscan_polynomial"):
        if key in cal and "overscan" not in cal:
            check.error(("calibration", key), f"{key} needs overscan = (a section).")
    if "flat_min" in cal:
        if isinstance(cal["flat_min"], bool) or not isinstance(cal["flat_min"], (int, float)):
            check.error(("calibration", "flat_min"), "flat_min must be a number, not "
                        f"{toml_type(cal['flat_min'])}.")
        if "flat" not in cal:
            check.error(("calibration", "flat_min"), "flat_min needs flat = (a file).")
        out["flat_min"] = cal["flat_min"]
    if ("gain" in cal) != ("read_noise" in cal):
        given, other = ("gain", "read_noise") if "gain" in cal else ("read_noise", "gain")
        check.error(("calibration", given), f"{given} needs {other} too (both go to "
                    "ccdproc.create_deviation).")
    for key in ("gain", "read_noise"):
        if key not in cal:
            continue
        value, where = cal[key], ("calibration", key)
        if is_header_ref(value):
            card = header_key(value)
            lacking = [p for p in files if card not in headers(p)]
            if lacking:
                check.error(where, f"{key} = {value!r}: {len(lacking)} frame(s) have no "
                            f"{card} card, e.g. {lacking[0]}.")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            check.error(where, f"{key} must be a positive number (gain in electrons per data "
                        f"unit, read noise in electrons) or 'header:KEY', not "
                        f"{toml_type(value)}.")
        out[key] = value
    return out


def _check_dark_exposures(check, darks, files, headers):
    """A dark is scaled by EXPTIME (frame's over the dark's): every dark and frame needs
    the card, and the darks one value (`~shiftstack_ccd.calibration.combine_dark`)."""
    where = ("calibration", "dark")
    exptimes = {}
    for path in list(darks) + list(files):
        value = headers(path).get("EXPTIME")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            what = "dark" if path in darks else "frame"
            check.error(where, f"dark: the {what} {path} has no EXPTIME card (a number of "
                        f"seconds; found {value!r}): a dark is scaled by the exposure times.")
            return
        if path in darks:
            exptimes[path] = float(value)
    if len(set(exptimes.values())) > 1:
        check.error(where, f"dark: the darks have different EXPTIME "
                    f"({sorted(set(exptimes.values()))} s); combine darks of one exposure "
                    "time.")
    elif min(exptimes.values()) == 0:
        check.error(where, "dark: EXPTIME = 0 in the dark (a bias?); a dark is scaled by "
                    "its exposure time.")


def _check_steps(check, steps):
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        check.error(("steps",), "steps must be an array of tables: [[steps]] with "
                    "step = NAME and the step's parameters.")
        return []
    if not steps:
        return []
    registry = available_steps()
    out = []
    for index, table in enumerate(steps):
        where = ("steps", index)
        name = table.get("step")
        if not isinstance(name, str):
            check.error(where, "each [[steps]] needs step = \"NAME\" (see 'shiftstack-ccd "
                        "steps').")
            continue
        if name not in registry:
            check.error(where + ("step",), unknown_step_message(name, registry))
            continue
        info = registry[name]
        if info.kind != "frame":
            check.error(where + ("step",), f"{name} is a{'n' if info.kind[0] in 'aeiou' else ''}"
                        f" {info.kind} step, not a per-frame step; only per-frame steps go in "
                        "[[steps]] (the stack is set in [stack]).")
            continue
        params = check.params(info.function, table, where, name, skip=1, reserved=("step",))
        out.append((name, info.function, params))
    return out


def _number(check, table, key, where, what):
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        check.error(where + (key,), f"{what}: {key} must be a number, not "
                    f"{toml_type(value)}." if key in table else f"{what}: {key} is missing.")
        return None
    return float(value)


def _check_motion(check, motion):
    from ..ephemeris import Ephemeris
    if motion is None:
        return {}
    check.unknown_keys(("motion",), motion, _KEYS["motion"])
    given = [k for k in _KEYS["motion"] if k in motion]
    if len(given) != 1:
        check.error(("motion",), "[motion] needs exactly one of ephemeris = \"table.ecsv\", "
                    "linear = {ra, dec, epoch, ra_rate, dec_rate} or horizons = {target, "
                    f"location}}; it has {len(given) or 'none'}"
                    + (f" ({', '.join(given)})." if given else "."))
        return {}
    kind = given[0]
    where = ("motion", kind)
    value = motion[kind]
    if kind == "ephemeris":
        if not isinstance(value, str):
            check.error(where, f"ephemeris must be a file name, not {toml_type(value)}.")
            return {}
        table = check.existing_file(value, where, what="ephemeris table")
        if table is None:
            return {}
        try:
            return {"ephemeris": Ephemeris.from_table(table)}
        except (ShiftStackError, ValueError, OSError) as exc:
            check.error(where, f"ephemeris table {value!r} cannot be used: {exc}")
            return {}
    if not isinstance(value, dict):
        check.error(where, f"{kind} must be a table ({kind} = {{ ... }}), not "
                    f"{toml_type(value)}.")
        return {}
    if kind == "linear":
        check.unknown_keys(where, value, _LINEAR_KEYS, what="linear")
        numbers = {key: _number(check, value, key, where, "linear")
                   for key in ("ra", "dec", "ra_rate", "dec_rate")}
        epoch = None
        if "epoch" not in value:
            check.error(where, "linear: epoch is missing (ISO UTC, e.g. "
                        "'2019-03-26T03:40:00').")
        else:
            try:
                epoch = as_time(value["epoch"])
            except (TypeError, ValueError):
                check.error(where + ("epoch",), f"linear: epoch = {value['epoch']!r} is not a "
                            "time (ISO UTC, e.g. '2019-03-26T03:40:00').")
        if epoch is None or any(v is None for v in numbers.values()):
            return {}
        if not -90 <= numbers["dec"] <= 90:
            check.error(where + ("dec",), f"linear: dec = {numbers['dec']} is not a "
                        "declination in degrees.")
            return {}
        eph = Ephemeris.linear(SkyCoord(numbers["ra"], numbers["dec"], unit="deg"), epoch,
                               numbers["ra_rate"] * u.arcsec / u.hour,
                               numbers["dec_rate"] * u.arcsec / u.hour,
                               meta={"source": f"linear motion from {check.path.name}"})
        return {"ephemeris": eph}
    check.unknown_keys(where, value, _HORIZONS_KEYS, what="horizons")
    target = value.get("target")
    if isinstance(target, bool) or not isinstance(target, (str, int)):
        check.error(where + ("target",), "horizons: target must be a name, designation or "
                    "number" + (f", not {toml_type(target)}." if "target" in value
                                else "; it is missing."))
        return {}
    spec = {"target": str(target)}
    for key, typ, text in (("location", str, "a string"), ("id_type", str, "a string"),
                           ("cache", bool, "true or false")):
        if key in value:
            if not isinstance(value[key], typ):
                check.error(where + (key,), f"horizons: {key} must be {text}, not "
                            f"{toml_type(value[key])}.")
            spec[key] = value[key]
    return {"horizons": spec}


def _check_stack(check, stack, n_frames, allow_scheduler):
    from .._validate import LOCAL_SCHEDULERS, per_frame_weights, stack_parameters
    from ..exceptions import ParameterError
    from ..stack import shift_and_stack
    for key, elsewhere in _STACK_FROM_ELSEWHERE.items():
        if key in stack:
            check.error(("stack", key), f"{key} is set by {elsewhere}, not in [stack].")
    options = check.params(shift_and_stack,
                           {key: value for key, value in stack.items() if key != "size"},
                           ("stack",), "[stack]", skip=0, reserved=tuple(_STACK_FROM_ELSEWHERE))
    # the values, with the checks shift_and_stack makes on entry: one key at a time, so
    # that every problem is listed
    refused = set()
    for key, value in options.items():
        try:
            stack_parameters(**{key: value})
            if key in ("weights", "frame_weights") and n_frames:
                per_frame_weights(value, key, n_frames)
        except ParameterError as exc:
            check.error(("stack", key), f"[stack] {exc}")
            refused.add(key)
        except TypeError:  # not a parameter stack_parameters knows: check.params said so
            pass
    scheduler = options.get("scheduler")
    if isinstance(scheduler, str) and scheduler not in LOCAL_SCHEDULERS and \
            not allow_scheduler and "scheduler" not in refused:
        check.error(("stack", "scheduler"), f"[stack] scheduler = {scheduler!r}: frames and "
                    "pickled tasks would be sent there; a pipeline file may name a "
                    "dask.distributed address only when the command line allows it "
                    "(shiftstack-ccd run --allow-scheduler, or allow_scheduler=True).")
    if "size" in stack:
        size = _check_size(check, stack["size"])
        if size is not None:
            options["size"] = size
    return options


def _check_size(check, value):
    """``[stack] size``: "full" or "none" (every pixel of every frame: shift_and_stack's
    size=None), or what shift_and_stack takes; None when refused. Without a size,
    Pipeline.output_size gives the command line's default (the target's path plus a margin
    of PSFs)."""
    from .._validate import output_size
    from ..exceptions import ParameterError
    if isinstance(value, str) and value.strip().lower() in ("full", "none"):
        return "full"  # "none": shift_and_stack's size=None, as for any parameter
    try:
        return output_size(value)
    except ParameterError as exc:
        check.error(("stack", "size"), f"[stack] {exc} Or size = \"full\" for every pixel "
                    "of every frame; without a size, the target's path and a margin.")
        return None


def _check_output(check, output, overwrite, inputs=()):
    if output is None:
        return {"stack": None, "preview": None, "overwrite": bool(overwrite)}
    check.unknown_keys(("output",), output, _KEYS["output"])
    out = {"stack": None, "preview": None}
    file_overwrite = output.get("overwrite", False)
    if not isinstance(file_overwrite, bool):
        check.error(("output", "overwrite"), "overwrite must be true or false, not "
                    f"{toml_type(file_overwrite)}.")
        file_overwrite = False
    out["overwrite"] = file_overwrite if overwrite is None else bool(overwrite)
    if "stack" not in output:
        check.error(("output",), "[output] needs stack = \"file.fits\".")
    for key, suffixes in (("stack", (".fits", ".fit", ".fts")), ("preview", (".png",))):
        if key not in output:
            continue
        value, where = output[key], ("output", key)
        if not isinstance(value, str):
            check.error(where, f"{key} must be a file name, not {toml_type(value)}.")
            continue
        path = check.expand(value, where)
        if path is None:
            continue
        if path.suffix.lower() not in suffixes:
            check.error(where, f"{key} = {value!r} should end in {' or '.join(suffixes)}.")
        elif path.exists() and not out["overwrite"]:
            check.error(where, f"{key} = {value!r} exists ({path}); set overwrite = true in "
                        "[output] or pass --overwrite to replace it.")
        else:
            try:  # an input, a folder, under a file, not writable: refused now
                check_output_path(path, overwrite=True, inputs=inputs, what=f"[output] {key}",
                                  create=False)
            except OutputError as exc:
                check.error(where, str(exc))
        out[key] = path
    return out
