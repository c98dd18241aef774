# Licensed under a 3-clause BSD style license - see LICENSE
"""The step registry: every public step, this package's and other distributions'.

A *step* is a plain function that a script, `shift_and_stack` or a pipeline file
(:doc:`/pipelines`) can call by name. Steps are registered under the entry-point group
``shiftstack_ccd.steps`` (``name = package.module:function``); `available_steps` lists
them and `get_step` returns one. Another distribution adds a step by declaring, in its own
``setup.cfg``::

    [options.entry_points]
    shiftstack_ccd.steps =
        subtract_sky = mypackage.sky:subtract_sky

**The step contract** (the one place it is written down):

*per-frame steps* (kind ``"frame"``)
    ``step(ccd: CCDData, **params) -> CCDData``. The first positional argument is the
    frame; every other parameter has a default or is passed by keyword. The step returns a
    **new** `~astropy.nddata.CCDData` and never modifies its input; it carries the data
    unit, the mask (or-ed with anything it flags), the uncertainty (propagated or, where it
    changes pixels, replaced for those pixels), the WCS and the meta through; it records
    what it did in the header: cards of at most 8 characters and/or ``HISTORY`` lines,
    written with `provenance_header`, and the call itself (a ``HISTORY`` line
    ``name(param=value, ...)``), written by the `log_to_header` decorator. It raises
    `~shiftstack_ccd.exceptions.FrameError` (naming the frame, ``meta['SSFILE']``) when
    the frame cannot be processed. Per-frame steps are what a pipeline file's
    ``[[steps]]`` and `shift_and_stack`'s ``per_frame_steps`` run, in order, on every frame,
    through one runner, `run_steps`, which refuses a step that returns anything but a new
    CCDData or that changes its input.
*stack steps* (kind ``"stack"``)
    ``step(frames: list of CCDData, ...) -> result``: a combination of many frames; the
    result records ``NCOMBINE`` and its own provenance cards.
*input* steps
    `read_frames`: files -> list of CCDData.
*grid* steps (kind ``"grid"``)
    ``step(ccd, <what the stack stage made>, **params) -> CCDData``: per-frame steps that
    need an output grid or a template made from all the frames (`resample_to_target`,
    `subtract_static_sky`); `shift_and_stack` runs them, a pipeline file's ``[[steps]]``
    cannot. They keep the per-frame contract otherwise.

A third-party function may say which kind it is with an attribute,
``function.step_kind = "stack"``; without one it is taken to be a per-frame step. Its
parameters are checked against its signature when a pipeline file names it: its
annotations are the types (``threshold: float = 3.0``, ``method: Literal["a", "b"] = "a"``,
``gain: float | Quantity | None = None``), else the type of the default. Its one-line
description is the first line of its docstring.

This package's steps, what each writes to the header:

=======================  ========  ========================================================
step                     kind      header
=======================  ========  ========================================================
``read_frames``          input     ``SSFILE`` (source path); WCS cards move to ``.wcs``
``clean_cosmic_rays``    frame     ``CRMETHOD``, ``CRTHRESH``, ``CRSHARP``, ``CRGROW``,
                                   ``CRNITER``, ``CRNFLAG``, ``CRNOISE``, ``CRNSRAT``,
                                   ``HISTORY``
``correct_wcs``          frame     ``WCSCORR``, ``WCSDX``/``WCSDY``, ``WCSDRA``/``WCSDDEC``,
                                   ``WCSROT``, ``WCSSCAL``, ``WCSFIT``, ``WCSNSTAR``,
                                   ``WCSRMS``, ``WCSRMSPX``, ``WCSERR``, ``HISTORY``
``resample_to_target``   grid      ``SSRESAMP``, ``SSSHIFTX``/``SSSHIFTY``, ``SSINTERP``,
                                   ``SSFLUXC``, ``SSPIXAR``, ``HISTORY``
``subtract_static_sky``  grid      ``SSSTATIC``, ``SSSKYOFF``, ``SSNSTMSK``
``combine_frames``       stack     ``NCOMBINE``, ``SSCOMB``, ``SSWEIGHT``, ``SSCLIP``,
                                   ``SSCLIPLO``/``HI``, ``EXPTOTAL``, ``MJD-AVG``
``static_sky_template``  stack     ``SSHOLES`` (template pixels filled from neighbours)
``shift_and_stack``      stack     the target plane, the ephemeris, one ``SSF``/``SST``/
                                   ``SSX``/``SSY`` card per frame, ``HISTORY``
=======================  ========  ========================================================

The built-in table (`BUILTIN_STEPS`) is the same list as the entry points in this package's
``setup.cfg`` (a test keeps them equal), so the steps are found from a source checkout that
is not installed, where no entry point exists.
"""

import difflib
import functools
import importlib
import importlib.metadata
import inspect
import logging
import re
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from astropy.utils.exceptions import AstropyUserWarning

from ._utils import frame_label
from .exceptions import ShiftStackError, UnknownStepError

__all__ = ["BUILTIN_STEPS", "ENTRY_POINT_GROUP", "STEP_KINDS", "StepInfo",
           "available_steps", "describe_steps", "get_step", "history_line", "log_to_header",
           "provenance_header", "run_step", "run_steps", "step_info"]

log = logging.getLogger(__name__)

#: The entry-point group steps are registered under.
ENTRY_POINT_GROUP = "shiftstack_ccd.steps"

#: The kinds of step (see the module docstring).
STEP_KINDS = ("input", "frame", "grid", "stack")

#: This package's public steps: name -> (``module:function``, kind). Mirrors the
#: ``shiftstack_ccd.steps`` entry points of ``setup.cfg``.
BUILTIN_STEPS = {
    "read_frames": ("shiftstack_ccd.frames:read_frames", "input"),
    "clean_cosmic_rays": ("shiftstack_ccd.cosmicray:clean_cosmic_rays", "frame"),
    "correct_wcs": ("shiftstack_ccd.astrometry:correct_wcs", "frame"),
    "resample_to_target": ("shiftstack_ccd.resample:resample_to_target", "grid"),
    "subtract_static_sky": ("shiftstack_ccd.static_sky:subtract_static_sky", "grid"),
    "combine_frames": ("shiftstack_ccd.combine:combine_frames", "stack"),
    "static_sky_template": ("shiftstack_ccd.static_sky:static_sky_template", "stack"),
    "shift_and_stack": ("shiftstack_ccd.stack:shift_and_stack", "stack"),
}

_OWN_DISTRIBUTION = "shiftstack_ccd"


@dataclass(frozen=True)
class StepInfo:
    """One registered step.

    Attributes
    ----------
    name : str
        The name it is registered under.
    function : callable
        The step itself.
    kind : str
        ``"frame"``, ``"stack"``, ``"input"`` or ``"grid"`` (see the module docstring).
    summary : str
        First line of the function's docstring.
    value : str
        ``module:function`` it was loaded from.
    distribution : str
        Name of the distribution that provides it.
    """

    name: str
    function: object
    kind: str
    summary: str
    value: str
    distribution: str


def _load(value):
    module_name, _, attr = value.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _summary(function):
    """First line of the docstring, with reST roles reduced to their text."""
    return _summary_line(inspect.getdoc(function))


def _summary_line(doc):
    doc = (doc or "").strip()
    if not doc:
        return "(no description)"
    line = doc.splitlines()[0].strip()
    line = re.sub(r":\w+:`([^`]*)`", r"`\1`", line)           # :func:`x` -> `x`
    return re.sub(r"`~?(?:[\w]+\.)*([^`]+)`", r"\1", line)   # `~a.b.CCDData` -> CCDData


def _kind(function):
    kind = getattr(function, "step_kind", "frame")
    if kind not in STEP_KINDS:
        raise ValueError(f"step_kind = {kind!r}, not one of {STEP_KINDS}")
    return kind


def _entry_points():
    """Every entry point of the group, from every installed distribution."""
    found = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "unknown distribution"
        found.append((ep.name, ep.value, dist_name))
    return found


def available_steps(kind=None):
    """List the installed steps: this package's and those of other distributions.

    Parameters
    ----------
    kind : str, optional
        Only steps of this kind (``"frame"``, ``"stack"``, ``"input"``, ``"grid"``).

    Returns
    -------
    steps : dict
        Step name -> `StepInfo`, sorted by name.

    Warns
    -----
    AstropyUserWarning
        For a third-party entry point that cannot be loaded (naming it, its distribution and
        the error), or that reuses the name of one of this package's steps (this package's
        step is kept). Neither stops the others from being listed.

    Examples
    --------
    >>> from shiftstack_ccd.steps import available_steps
    >>> steps = available_steps()
    >>> steps["clean_cosmic_rays"].kind
    'frame'
    >>> sorted(available_steps(kind="stack"))[:2]
    ['combine_frames', 'shift_and_stack']
    """
    if kind is not None and kind not in STEP_KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {STEP_KINDS}")
    steps = {}
    for name, (value, step_kind) in BUILTIN_STEPS.items():
        function = _load(value)
        steps[name] = StepInfo(name, function, step_kind, _summary(function), value,
                               _OWN_DISTRIBUTION)
    steps.update(_third_party_steps(steps))
    return {name: steps[name] for name in sorted(steps)
            if kind is None or steps[name].kind == kind}


def _third_party_steps(own):
    """StepInfo of the other distributions' entry points (warning for those left out)."""
    steps = {}
    for name, value, dist_name in _entry_points():
        if name in own or name in steps:
            if name in BUILTIN_STEPS and value != BUILTIN_STEPS[name][0]:
                warnings.warn(f"step {name!r} = {value} from the distribution {dist_name!r} "
                              f"is ignored: shiftstack_ccd has a step of that name.",
                              AstropyUserWarning)
            elif name not in BUILTIN_STEPS and value != steps[name].value:
                warnings.warn(f"step {name!r} = {value} from {dist_name!r} is ignored: "
                              f"{steps[name].distribution!r} registers that name too "
                              f"({steps[name].value}).", AstropyUserWarning)
            continue
        try:
            function = _load(value)
            if not callable(function):
                raise TypeError(f"{value} is not callable")
            step_kind = _kind(function)
        except Exception as exc:  # any error of a broken plug-in: report it, keep going
            warnings.warn(f"step {name!r} = {value} from the distribution {dist_name!r} "
                          f"cannot be loaded and is skipped: {type(exc).__name__}: {exc}",
                          AstropyUserWarning)
            continue
        steps[name] = StepInfo(name, function, step_kind, _summary(function), value,
                               dist_name)
    return steps


def _docstring_from_source(value):
    """The docstring of this package's ``module:function``, read from its source file.

    Nothing is imported (the step modules import astropy.nddata, scipy, ...). Follows
    ``from .x import *`` / ``from .x import name`` re-exports (``astrometry`` ->
    ``astrometry.core``). None when it cannot be found that way.
    """
    import ast
    from pathlib import Path

    root = Path(__file__).parent
    module_name, _, attr = value.partition(":")
    for _ in range(5):  # re-export chains are one or two deep
        parts = module_name.split(".")
        if parts[0] != __name__.partition(".")[0]:
            return None
        path = root.joinpath(*parts[1:])
        is_package = (path / "__init__.py").is_file()
        path = path / "__init__.py" if is_package else path.with_suffix(".py")
        if not path.is_file():
            return None
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nxt = None
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == attr:
                return ast.get_docstring(node)
            if isinstance(node, ast.ImportFrom) and node.level and nxt is None and any(
                    alias.name in ("*", attr) for alias in node.names):
                package = parts if is_package else parts[:-1]
                base = package[:len(package) - node.level + 1]
                nxt = ".".join(base + ([node.module] if node.module else []))
        if nxt is None:
            return None
        module_name = nxt
    return None


def describe_steps(kind=None):
    """What `available_steps` lists, without importing this package's step modules.

    Fast (no astropy.nddata, scipy, ... loaded for this package's steps): what ``shiftstack-ccd
    steps`` prints. Other distributions' steps are loaded (their kind is an attribute).

    Parameters
    ----------
    kind : str, optional
        Only steps of this kind.

    Returns
    -------
    steps : dict
        Step name -> ``(kind, summary, distribution)``, sorted by name.

    Examples
    --------
    >>> from shiftstack_ccd.steps import describe_steps
    >>> describe_steps()["shift_and_stack"][0]
    'stack'
    """
    if kind is not None and kind not in STEP_KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {STEP_KINDS}")
    steps = {}
    for name, (value, step_kind) in BUILTIN_STEPS.items():
        doc = _docstring_from_source(value)
        summary = _summary_line(doc) if doc is not None else _summary(_load(value))
        steps[name] = (step_kind, summary, _OWN_DISTRIBUTION)
    own = dict.fromkeys(steps)
    for name, info in _third_party_steps(own).items():
        steps[name] = (info.kind, info.summary, info.distribution)
    return {name: steps[name] for name in sorted(steps)
            if kind is None or steps[name][0] == kind}


def get_step(name):
    """Return the step registered under ``name``.

    Parameters
    ----------
    name : str
        A name listed by `available_steps` (or ``shiftstack-ccd steps``).

    Returns
    -------
    function : callable

    Raises
    ------
    UnknownStepError
        No such step; the message lists the available names and suggests the closest.

    Examples
    --------
    >>> from shiftstack_ccd.steps import get_step
    >>> get_step("clean_cosmic_rays").__name__
    'clean_cosmic_rays'
    >>> get_step("clean_cosmic_ray")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    UnknownStepError: no step named 'clean_cosmic_ray'; did you mean 'clean_cosmic_rays'? ...
    """
    return step_info(name).function


def step_info(name, steps=None):
    """Return the `StepInfo` of a step (see `get_step`)."""
    steps = available_steps() if steps is None else steps
    if name in steps:
        return steps[name]
    raise UnknownStepError(unknown_step_message(name, steps))


def unknown_step_message(name, names):
    """``no step named 'x'; did you mean 'y'? Available: ...`` for an unknown step name."""
    names = sorted(names)
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return (f"no step named {name!r}{hint} Available steps: {', '.join(names)} "
            f"(see 'shiftstack-ccd steps').")


# --------------------------------------------------------------------------------------
# Provenance: what a step writes in the header of its output
# --------------------------------------------------------------------------------------
def provenance_header(meta, cards=(), history=()):
    """A new header: ``meta`` with a step's cards and ``HISTORY`` lines added.

    The one way a step records what it did. A `~astropy.io.fits.Header` (or a dict that
    makes one) gives a new Header; a dict that cannot be a FITS header (e.g. lower-case or
    long keys) stays a dict, with the card values and a ``HISTORY`` list.

    Parameters
    ----------
    meta : `~astropy.io.fits.Header` or dict
        The input frame's meta (not modified).
    cards : iterable of (key, value, comment)
        Keys of at most 8 characters (no HIERARCH), values that FITS can hold.
    history : str or iterable of str
        ``HISTORY`` lines, in order.

    Returns
    -------
    header : `~astropy.io.fits.Header` or dict

    Examples
    --------
    >>> from astropy.io import fits
    >>> from shiftstack_ccd.steps import provenance_header
    >>> header = provenance_header(fits.Header({"EXPTIME": 300.0}),
    ...                            [("CRNFLAG", 12, "pixels flagged")], "my_step: done")
    >>> header["CRNFLAG"], header.comments["CRNFLAG"], str(header["HISTORY"])
    (12, 'pixels flagged', 'my_step: done')
    """
    from astropy.io import fits

    from ._utils import set_card

    cards = list(cards)
    history = [history] if isinstance(history, str) else list(history)
    for key, _, _ in cards:
        if len(key) > 8:
            raise ValueError(f"header key {key!r} is longer than 8 characters")
    if isinstance(meta, fits.Header):
        header = meta.copy()
    else:
        try:
            header = fits.Header(dict(meta or {}))
        except (ValueError, TypeError, KeyError):  # not FITS-able: keep the user's dict
            out = dict(meta or {})
            out.update({key: value for key, value, _ in cards})
            old = out.get("HISTORY", [])
            out["HISTORY"] = (list(old) if isinstance(old, (list, tuple)) else [old]) + history
            return out
    for key, value, comment in cards:
        set_card(header, key, value, comment)
    for line in history:
        header.add_history(line)
    return header


def _argument_text(value):
    """Short text of an argument for a HISTORY line (frames and arrays by their kind)."""
    if hasattr(value, "shape") and getattr(value, "size", 0) > 4:
        return f"<{type(value).__name__} {tuple(value.shape)}>"
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    wcsprm = getattr(value, "wcs", None)
    if hasattr(wcsprm, "ctype") and hasattr(wcsprm, "crval"):  # an astropy WCS: its repr
        # is a 20-line table (and costs a fifth of a millisecond); its axes and centre say it
        axes = ",".join(str(c) for c in wcsprm.ctype)
        centre = ", ".join(f"{float(v):.6f}" for v in wcsprm.crval)
        return f"<WCS {axes} at ({centre})>"
    # One line of printable ASCII: what a FITS HISTORY card can hold.
    text = " ".join(repr(value).split()).encode("ascii", "replace").decode("ascii")
    return text if len(text) <= 60 else text[:57] + "..."


def history_line(function, *args, **kwargs):
    """The ``HISTORY`` line `log_to_header` writes for ``function(*args, **kwargs)``:
    ``name(param=value, ...)``, the arguments as given, the first (the frame) left out.

    Examples
    --------
    >>> from shiftstack_ccd.steps import history_line
    >>> def scale(ccd, factor, offset=0.0):
    ...     return ccd
    >>> history_line(scale, None, 2.0, offset=1.5)
    'scale(factor=2.0, offset=1.5)'
    """
    given = list(_signature(function).bind(*args, **kwargs).arguments.items())[1:]
    text = ", ".join(f"{key}={_argument_text(value)}" for key, value in given)
    return f"{function.__name__}({text})"


@functools.lru_cache(maxsize=256)
def _signature(function):
    return inspect.signature(function)


def log_to_header(function):
    """Decorator: record each call of a step in the header of the CCDData it returns.

    ccdproc's ``log_to_metadata`` pattern: the output gets one ``HISTORY`` line
    ``name(param=value, ...)`` with the arguments given (the frame itself left out), after
    whatever cards the step wrote itself (`provenance_header`). Outputs that are not a
    `~astropy.nddata.CCDData` are returned untouched.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from shiftstack_ccd.steps import log_to_header
    >>> @log_to_header
    ... def add_constant(ccd, value=1.0):
    ...     return ccd.add(value * ccd.unit)
    >>> out = add_constant(CCDData(np.zeros((2, 2)), unit="adu"), value=2.5)
    >>> str(out.meta["HISTORY"][-1])
    'add_constant(value=2.5)'
    """
    @functools.wraps(function)
    def step(*args, **kwargs):
        from astropy.io import fits
        out = function(*args, **kwargs)
        if _is_ccddata(out):
            line = history_line(function, *args, **kwargs)
            if isinstance(out.meta, fits.Header) and all(
                    out.meta is not getattr(arg, "meta", None) for arg in args[:1]):
                # the step's own new header (a raw frame's copy costs a millisecond)
                out.meta.add_history(line)
            else:  # the input's header, or a dict: a new one
                out.meta = provenance_header(out.meta, history=line)
        return out

    return step


# --------------------------------------------------------------------------------------
# The step runner
# --------------------------------------------------------------------------------------
def _is_ccddata(value):
    from astropy.nddata import CCDData
    return isinstance(value, CCDData)


def _fingerprint(ccd):
    """Checksums of a frame's data, mask, uncertainty and header, to see it unchanged."""
    def crc(array):
        if array is None:
            return None
        array = np.ascontiguousarray(array)
        return array.shape, array.dtype.str, zlib.crc32(array.reshape(-1).view(np.uint8))

    uncertainty = getattr(ccd.uncertainty, "array", None)
    # the cards' parts, not Header.tostring: that formats every card (slower), warning on
    # each whose comment does not fit its 80 characters, before and after every step
    cards = getattr(ccd.meta, "cards", None)
    meta = repr([tuple(card) for card in cards] if cards is not None else ccd.meta)
    return crc(ccd.data), crc(ccd.mask), crc(uncertainty), zlib.crc32(meta.encode())


def run_step(function, frame, params=None, name=None):
    """Run one per-frame step and check the step contract on what it did.

    Parameters
    ----------
    function : callable
        ``function(frame, **params) -> CCDData``.
    frame : `~astropy.nddata.CCDData`
        The input frame.
    params : dict, optional
        Keyword arguments of the step.
    name : str, optional
        The step's name in messages (default: the function's name).

    Returns
    -------
    ccd : `~astropy.nddata.CCDData`
        What the step returned.

    Raises
    ------
    shiftstack_ccd.exceptions.ShiftStackError
        The step returned something that is not a CCDData, returned its input, or changed
        its input's data, mask, uncertainty or header (checksums before and after, a few
        milliseconds a frame).

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from shiftstack_ccd.steps import run_step
    >>> def in_place(ccd):
    ...     ccd.data += 1
    ...     return ccd.copy()
    >>> run_step(in_place, CCDData(np.zeros((2, 2)), unit="adu"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    shiftstack_ccd.exceptions.ShiftStackError: frame: the step 'in_place' changed its input...
    """
    name = name or getattr(function, "__name__", repr(function))
    before = _fingerprint(frame)
    out = function(frame, **(params or {}))
    contract = "(see the step contract in shiftstack_ccd.steps)"
    if not _is_ccddata(out):
        raise ShiftStackError(f"{frame_label(frame)}: the step {name!r} returned "
                              f"{type(out).__name__}, not a CCDData {contract}.")
    if out is frame or _fingerprint(frame) != before:
        raise ShiftStackError(f"{frame_label(frame)}: the step {name!r} changed its input "
                              "frame; a step returns a new CCDData and leaves its input as "
                              f"it was {contract}.")
    return out


def run_steps(frame, steps):
    """Run per-frame steps in order through `run_step`: the one runner of the package.

    Parameters
    ----------
    frame : `~astropy.nddata.CCDData`
        The input frame.
    steps : iterable
        Callables, ``(callable, kwargs)`` pairs or ``(name, callable, kwargs)`` triples.

    Returns
    -------
    ccd : `~astropy.nddata.CCDData`
        The frame after the last step (the input itself when there are no steps).
    """
    for step in steps or ():
        if not isinstance(step, tuple):
            name, function, params = None, step, {}
        elif len(step) == 2:
            name, (function, params) = None, step
        else:
            name, function, params = step
        frame = run_step(function, frame, params, name=name)
    return frame
