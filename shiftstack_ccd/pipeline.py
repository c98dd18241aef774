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

import datetime
import difflib
import glob
import inspect
import logging
import os
import re
import warnings
from pathlib import Path

from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning

from ._utils import frame_label, set_card
from .exceptions import ShiftStackError
from .steps import _unknown_step_message, available_steps

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

__all__ = ["Pipeline", "PipelineError", "PipelineResult", "load_pipeline", "run_pipeline"]

log = logging.getLogger(__name__)

_HEADER_PREFIX = "header:"
_SECTION_RE = re.compile(r"^\[\s*\d+\s*:\s*\d+\s*,\s*\d+\s*:\s*\d+\s*\]$")
_ENV_RE = re.compile(r"\$(\w+|\{[^}]*\})")

#: Sections of a pipeline file and what each holds.
SECTIONS = {
    "inputs": "the frames: a glob or list of files, or a folder filtered on header keys",
    "calibration": "ccdproc calibration: overscan, trim, bias, flat, gain and read noise",
    "steps": "per-frame steps, in order ([[steps]] tables, each with step = NAME)",
    "motion": "the target's motion: ephemeris table, linear rates or a Horizons target",
    "stack": "options of shift_and_stack (method, size, sigma_clip, ...)",
    "output": "where to write the stack (FITS) and a preview (PNG)",
}
_REQUIRED_SECTIONS = ("inputs", "motion", "output")
_KEYS = {
    "inputs": ("files", "directory", "filters", "glob", "hdu", "unit"),
    "calibration": ("overscan", "overscan_median", "overscan_polynomial", "trim", "bias",
                    "flat", "flat_min", "gain", "read_noise"),
    "motion": ("ephemeris", "linear", "horizons"),
    "output": ("stack", "preview", "overwrite"),
}
_LINEAR_KEYS = ("ra", "dec", "epoch", "ra_rate", "dec_rate")
_HORIZONS_KEYS = ("target", "location", "id_type", "cache")
# shift_and_stack parameters that other sections set
_STACK_FROM_ELSEWHERE = {"frames": "[inputs]", "ephemeris": "[motion]",
                         "per_frame_steps": "[[steps]]"}


class PipelineError(ShiftStackError, ValueError):
    """A pipeline file is invalid; ``problems`` lists ``(line, message)`` pairs."""

    def __init__(self, path, problems):
        self.path = str(path)
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"line {line}: {msg}" if line else msg for line, msg in self.problems]
        if n == 1:
            text = f"{self.path}: {lines[0]} (nothing was run)"
        else:
            text = (f"{self.path}: {n} problems (nothing was run):\n  " + "\n  ".join(lines))
        super().__init__(text)


# --------------------------------------------------------------------------------------
# Line numbers
# --------------------------------------------------------------------------------------
class _KeyLines:
    """Line number of every table header and key of a TOML text.

    `tomllib` parses the file but keeps no line numbers, and no TOML parser in the
    scientific Python stack does; so the text is scanned here, line by line, tracking the
    current table (``[a.b]``, ``[[steps]]`` with its index), strings (one-line and
    multi-line), comments and bracket depth (multi-line arrays), and recording the line
    where each ``key =`` starts. Keys inside an inline table (``linear = {ra = 1, ...}``)
    get the line of the inline table, which TOML requires to fit on one line. The scan is
    used only for messages, after `tomllib` has accepted the file.
    """

    _BARE = r"[A-Za-z0-9_-]+"
    _KEY = rf'(?:{_BARE}|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
    _DOTTED = re.compile(rf"\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*=")
    _PART = re.compile(_KEY)

    def __init__(self, text):
        self.lines = {}
        arrays = {}
        table = ()
        depth = 0
        multiline = None  # the closing delimiter of an open multi-line string
        for number, line in enumerate(text.splitlines(), start=1):
            rest = line
            if multiline is not None:
                end = line.find(multiline)
                if end < 0:
                    continue
                rest, multiline = line[end + 3:], None
            elif depth == 0:
                stripped = line.strip()
                if stripped.startswith("[["):
                    name = self._split(stripped[2:stripped.index("]]")])
                    # the array itself is named by its unindexed path (its parents indexed)
                    name = self._indexed(name[:-1], arrays) + name[-1:]
                    arrays[name] = arrays.get(name, 0) + 1
                    table = name + (arrays[name] - 1,)
                    self.lines.setdefault(table, number)
                    continue
                if stripped.startswith("["):
                    table = self._indexed(self._split(stripped[1:stripped.index("]")]),
                                          arrays)
                    self.lines.setdefault(table, number)
                    continue
                match = self._DOTTED.match(line)
                if match:
                    key = table + self._split(match.group(1))
                    self.lines.setdefault(key, number)
                    rest = line[match.end():]
            depth, multiline = self._scan(rest, depth)

    def _split(self, dotted):
        return tuple(part.strip("\"'") for part in self._PART.findall(dotted.strip()))

    @staticmethod
    def _indexed(name, arrays):
        """``[steps.params]`` after ``[[steps]]`` belongs to the last ``steps`` element."""
        out = ()
        for part in name:
            out += (part,)
            if out in arrays:
                out += (arrays[out] - 1,)
        return out

    @staticmethod
    def _scan(text, depth):
        """Bracket depth after ``text``, and the delimiter of a multi-line string left open."""
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "#":
                break
            if text.startswith('"""', i) or text.startswith("'''", i):
                delim = text[i:i + 3]
                end = text.find(delim, i + 3)
                if end < 0:
                    return depth, delim
                i = end + 3
                continue
            if ch in "\"'":
                j = i + 1
                while j < len(text) and text[j] != ch:
                    j += 2 if (ch == '"' and text[j] == "\\") else 1
                i = j + 1
                continue
            if ch in "[{":
                depth += 1
            elif ch in "]}":
                depth = max(depth - 1, 0)
            i += 1
        return depth, None

    def __call__(self, path):
        """Line of ``path`` (a tuple of keys), else of its closest enclosing key or table."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


# --------------------------------------------------------------------------------------
# Parameter types, from signatures and numpydoc docstrings
# --------------------------------------------------------------------------------------
_KIND_WORDS = {
    "bool": "bool", "boolean": "bool", "int": "int", "integer": "int", "float": "float",
    "number": "float", "str": "str", "string": "str", "path": "path", "pathlike": "path",
    "quantity": "quantity", "time": "time", "list": "list", "sequence": "list",
    "array-like": "list", "array_like": "list", "ndarray": "list", "tuple": "tuple",
    "dict": "dict", "mapping": "dict",
}
_KIND_TEXT = {"bool": "a boolean", "int": "an integer", "float": "a number",
              "str": "a string", "path": "a file name", "quantity": "a quantity such as "
              "'1.5 arcsec'", "time": "a time (ISO string or TOML date-time)",
              "list": "an array", "tuple": "an array", "dict": "a table"}


class _ParamSpec:
    """What a parameter accepts: TOML-representable kinds and string choices."""

    def __init__(self, name, kinds=(), choices=None, required=False):
        self.name = name
        self.kinds = set(kinds)
        self.choices = choices
        self.required = required

    def expectation(self):
        parts = [f"one of {', '.join(repr(c) for c in self.choices)}"] if self.choices else []
        order = ("bool", "int", "float", "str", "path", "quantity", "time", "list", "tuple",
                 "dict")
        texts = []
        for kind in order:
            if kind in self.kinds and _KIND_TEXT[kind] not in texts:
                if kind == "str" and self.choices:
                    continue
                texts.append(_KIND_TEXT[kind])
        return " or ".join(parts + texts) or "any value"


def _split_top(text):
    """Split on commas and ' or ' outside braces, brackets and parentheses."""
    parts, depth, current = [], 0, []
    for token in re.split(r"(,|\bor\b|[{}()\[\]])", text):
        if not token:
            continue
        if token in ("{", "(", "["):
            depth += 1
        elif token in ("}", ")", "]"):
            depth -= 1
        if depth == 0 and token in (",", "or"):
            parts.append("".join(current))
            current = []
        else:
            current.append(token)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _kinds_from_text(text):
    """Kinds and choices from a numpydoc type line or an annotation's text."""
    choices = None
    match = re.search(r"\{([^}]*)\}", text)
    if match:
        choices = tuple(c.strip().strip("'\"") for c in match.group(1).split(",")
                        if c.strip())
        text = text.replace(match.group(0), " ")
    kinds = set()
    if "(" in text and "int" in text:  # "(int, int)"
        kinds.add("tuple")
    lowered = text.lower().replace("`", " ").replace("~", " ")
    for word in re.findall(r"[a-z][a-z_\-]*", lowered.replace(".", " ")):
        if word in _KIND_WORDS:
            kinds.add(_KIND_WORDS[word])
    if "tuple" in kinds:
        kinds.add("list")
    return kinds, choices


def _doc_types(function):
    """``{name: type line}`` from the numpydoc Parameters section of a docstring."""
    doc = inspect.getdoc(function) or ""
    lines = doc.splitlines()
    types = {}
    try:
        start = next(i for i, line in enumerate(lines[:-1])
                     if line.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"})
    except StopIteration:
        return types
    for i in range(start + 2, len(lines)):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"} \
                and not line.startswith(" "):
            break  # next section
        if not line or line.startswith(" "):
            continue
        names, _, type_text = line.partition(":")
        names = [n.strip() for n in names.split(",") if n.strip()]
        if len(names) > 1:
            type_parts = [p for p in _split_top(type_text) if p != "optional"]
            if len(type_parts) == len(names):
                types.update(zip(names, type_parts))
                continue
        for name in names:
            types[name] = type_text.strip()
    return types


def _param_specs(function, skip=0):
    """``({name: _ParamSpec}, accepts_any_keyword)`` for a step function."""
    signature = inspect.signature(function)
    doc = _doc_types(function)
    specs, var_keyword = {}, False
    parameters = list(signature.parameters.values())
    for parameter in parameters[skip:]:
        if parameter.kind == parameter.VAR_KEYWORD:
            var_keyword = True
            continue
        if parameter.kind == parameter.VAR_POSITIONAL:
            continue
        kinds, choices = set(), None
        if parameter.annotation is not parameter.empty:
            annotation = parameter.annotation
            text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
            kinds, choices = _kinds_from_text(text)
        if not kinds and not choices and parameter.name in doc:
            kinds, choices = _kinds_from_text(doc[parameter.name])
        default = parameter.default
        if not kinds and not choices and default is not parameter.empty and default is not None:
            for typ, kind in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"),
                              ((list, tuple), "list"), (dict, "dict")):
                if isinstance(default, typ):
                    kinds = {kind}
                    break
        if not kinds and not choices:
            kinds = {"any"}
        specs[parameter.name] = _ParamSpec(parameter.name, kinds, choices,
                                           required=default is parameter.empty)
    return specs, var_keyword


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------
def _toml_type(value):
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return f"the date-time {value.isoformat()}"
    return type(value).__name__


def _as_time(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return Time(value, scale="utc")
    if isinstance(value, str):
        return Time(value, scale="utc")
    raise TypeError


class _Checker:
    """Collects the problems of one pipeline file, with their lines."""

    def __init__(self, path, text):
        self.path = Path(path)
        self.folder = self.path.resolve().parent
        self.line = _KeyLines(text)
        self.problems = []

    def error(self, where, message):
        self.problems.append((self.line(where) if where else None, message))

    def unknown_keys(self, section, table, known, what=None):
        what = what or f"[{section[0]}]"
        for key in table:
            if key not in known:
                close = _did_you_mean(key, known)
                self.error(section + (key,), f"unknown key {key!r} in {what}{close} "
                           f"Known keys: {', '.join(known)}.")

    def expand(self, text, where):
        """Environment variables and ``~`` expanded, relative to the pipeline's folder."""
        expanded = os.path.expanduser(os.path.expandvars(str(text)))
        unset = _ENV_RE.findall(expanded)
        if unset:
            names = ", ".join(n.strip("{}") for n in unset)
            self.error(where, f"{text!r}: the environment variable {names} is not set.")
            return None
        path = Path(expanded)
        return path if path.is_absolute() else self.folder / path

    def existing_file(self, text, where, what="file"):
        path = self.expand(text, where)
        if path is None:
            return None
        if not path.is_file():
            self.error(where, f"{what} {text!r} does not exist ({path}).")
            return None
        return path

    def files(self, value, where, what):
        """Paths and glob patterns -> existing files (sorted within each pattern)."""
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) for v in items):
            self.error(where, f"{what} must be a file name, a glob pattern or an array of "
                       f"them, not {_toml_type(value)}.")
            return []
        found = []
        for item in items:
            path = self.expand(item, where)
            if path is None:
                continue
            if any(ch in str(path) for ch in "*?["):
                matches = sorted(glob.glob(str(path)))
                if not matches:
                    self.error(where, f"{what}: the pattern {item!r} matches no file "
                               f"({path}).")
                found += [Path(m) for m in matches]
            elif path.is_file():
                found.append(path)
            else:
                self.error(where, f"{what}: {item!r} does not exist ({path}).")
        return found

    def convert(self, value, spec, where, owner):
        """Check a value against a parameter spec; return the value to pass, or raise."""
        kinds, choices = spec.kinds, spec.choices
        bad = f"{owner}: {spec.name} must be {spec.expectation()}, not {_toml_type(value)}."
        if "any" in kinds:
            if isinstance(value, datetime.datetime):
                return _as_time(value)
            return value
        if isinstance(value, bool):
            if "bool" in kinds:
                return value
        elif isinstance(value, int):
            if "int" in kinds:
                return value
            if "float" in kinds:
                return float(value)
        elif isinstance(value, float):
            if "float" in kinds:
                return value
        elif isinstance(value, str):
            if choices and value in choices:
                return value
            if choices and not kinds & {"path", "quantity", "time"}:
                close = _did_you_mean(value, choices)
                raise _Invalid(f"{owner}: {spec.name} must be one of "
                               f"{', '.join(repr(c) for c in choices)}, not {value!r}{close}")
            if "path" in kinds:
                path = self.existing_file(value, where, what=f"{owner}: {spec.name}:")
                if path is None:
                    raise _Reported()
                return str(path)
            if "quantity" in kinds:
                try:
                    return u.Quantity(value)
                except (TypeError, ValueError):
                    raise _Invalid(f"{owner}: {spec.name} = {value!r} is not a quantity "
                                   "(write a number and a unit, e.g. '1.5 arcsec').") from None
            if "time" in kinds:
                try:
                    return _as_time(value)
                except ValueError:
                    raise _Invalid(f"{owner}: {spec.name} = {value!r} is not a time (write "
                                   "ISO UTC, e.g. '2019-03-26T03:40:00').") from None
            if "str" in kinds:
                return value
        elif isinstance(value, datetime.datetime):
            if "time" in kinds:
                return _as_time(value)
        elif isinstance(value, list):
            if "tuple" in kinds:
                return tuple(value)
            if "list" in kinds:
                return value
        elif isinstance(value, dict):
            if "dict" in kinds:
                return value
        raise _Invalid(bad)

    def params(self, function, params, where, owner, skip=0, reserved=()):
        """Validate keyword arguments of ``function``; return them converted."""
        specs, var_keyword = _param_specs(function, skip=skip)
        out = {}
        for key, value in params.items():
            if key in reserved:
                continue
            spec = specs.get(key)
            if spec is None:
                if var_keyword:
                    out[key] = value
                    continue
                close = _did_you_mean(key, list(specs))
                self.error(where + (key,), f"{owner} has no parameter {key!r}{close} Its "
                           f"parameters: {', '.join(specs)}.")
                continue
            try:
                out[key] = self.convert(value, spec, where + (key,), owner)
            except _Invalid as exc:
                self.error(where + (key,), str(exc))
            except _Reported:
                pass
        missing = [name for name, spec in specs.items()
                   if spec.required and name not in params and name not in reserved]
        if missing:
            self.error(where, f"{owner}: missing required parameter(s) {', '.join(missing)}.")
        return out


class _Invalid(Exception):
    pass


class _Reported(Exception):
    pass


def _did_you_mean(word, candidates):
    close = difflib.get_close_matches(str(word), list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else "."


def _is_header_ref(value):
    return isinstance(value, str) and value.startswith(_HEADER_PREFIX)


def _header_key(value):
    return value[len(_HEADER_PREFIX):].strip().upper()


class _HeaderCache:
    def __init__(self, hdu):
        self.hdu = hdu
        self.headers = {}

    def __call__(self, path):
        if path not in self.headers:
            with fits.open(path) as hdul:
                header = hdul[0].header.copy()
                if self.hdu is not None:
                    header.update(hdul[self.hdu].header)
                elif len(hdul) > 1 and hdul[0].data is None:
                    header.update(hdul[1].header)
            self.headers[path] = header
        return self.headers[path]


# --------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------
class Pipeline:
    """A validated pipeline file, ready to `run`. Made by `load_pipeline`.

    Attributes
    ----------
    path : `~pathlib.Path`
        The pipeline file.
    files : list of `~pathlib.Path`
        The input frames.
    calibration : dict
        The resolved ``[calibration]`` settings (``overscan``, ``trim``: a FITS section or
        ``"header:KEY"``; ``bias``, ``flat``: lists of paths; ``gain``, ``read_noise``:
        numbers or ``"header:KEY"``; ...).
    steps : list of (str, callable, dict)
        The per-frame steps: name, function, keyword arguments.
    motion : dict
        ``{"ephemeris": Ephemeris}`` or ``{"horizons": {...}}``.
    stack_options : dict
        Keyword arguments for `shift_and_stack`.
    outputs : dict
        ``stack`` and ``preview`` paths (or None) and ``overwrite``.
    """

    def __init__(self, path, files, hdu, unit, calibration, steps, motion, stack_options,
                 outputs):
        self.path = Path(path)
        self.files = files
        self.hdu = hdu
        self.unit = unit
        self.calibration = calibration
        self.steps = steps
        self.motion = motion
        self.stack_options = stack_options
        self.outputs = outputs

    def describe(self):
        """Lines summarising what `run` will do."""
        cal = self.calibration
        lines = [f"{len(self.files)} input frames, from {self.files[0]}"
                 + (f" to {self.files[-1]}" if len(self.files) > 1 else "")]
        done = [f"overscan {cal['overscan']}" if cal.get("overscan") else None,
                f"trim {cal['trim']}" if cal.get("trim") else None,
                "uncertainty from gain and read noise" if cal.get("gain") is not None
                else None,
                f"bias ({len(cal['bias'])} file(s))" if cal.get("bias") else None,
                f"flat ({len(cal['flat'])} file(s))" if cal.get("flat") else None]
        done = [d for d in done if d]
        lines.append("calibration: " + (", ".join(done) if done else "none"))
        for name, _, params in self.steps:
            args = ", ".join(f"{k}={v!r}" for k, v in params.items())
            lines.append(f"step: {name}({args})")
        if "ephemeris" in self.motion:
            lines.append(f"motion: {self.motion['ephemeris']!r}")
        else:
            lines.append(f"motion: JPL Horizons {self.motion['horizons']}")
        opts = ", ".join(f"{k}={v!r}" for k, v in self.stack_options.items())
        lines.append(f"stack: shift_and_stack({opts})")
        for key in ("stack", "preview"):
            if self.outputs.get(key):
                lines.append(f"output {key}: {self.outputs[key]}")
        return lines

    # ---------------------------------------------------------------------- running
    def run(self):
        """Run the pipeline; return a `PipelineResult`.

        The input files are only read. Outputs are written atomically, at the end; an
        existing output is replaced only when ``overwrite`` is set.
        """
        from .frames import read_frame
        from .stack import shift_and_stack
        from .visualization import write_preview

        masters = self._masters()
        frames, added = [], None
        for path in self.files:
            raw = read_frame(path, hdu=self.hdu, unit=self.unit)
            before = set(raw.meta.keys()) if hasattr(raw.meta, "keys") else set()
            if added is None:
                used = self._resolved(raw)
            frame = self._calibrate(raw, masters)
            if added is None:  # the cards ccdproc wrote, kept for the stack's header
                added = [card for card in frame.meta.cards if card.keyword not in before
                         and card.keyword not in ("HISTORY", "COMMENT", "")]
            for name, function, params in self.steps:
                frame = _run_step(name, function, frame, params)
            frames.append(frame)
            log.info("%s: calibrated%s", frame_label(frame),
                     f", then {', '.join(s[0] for s in self.steps)}" if self.steps else "")
        eph = self._ephemeris(frames)
        result = shift_and_stack(frames, eph, **self.stack_options)
        self._record(result, added or [], used)

        written = {}
        overwrite = self.outputs["overwrite"]
        if self.outputs.get("stack"):
            result.write(self.outputs["stack"], overwrite=overwrite)
            written["stack"] = self.outputs["stack"]
        if self.outputs.get("preview"):
            images = [result.stack] + ([result.sky_stack] if result.sky_stack is not None
                                       else [])
            titles = ["stacked on the target", "stacked on the stars"][:len(images)]
            write_preview(self.outputs["preview"], images, titles=titles,
                          marks=[result.target_pixel] + [None] * (len(images) - 1),
                          overwrite=overwrite)
            written["preview"] = self.outputs["preview"]
        return PipelineResult(self, result, frames, written)

    def _resolved(self, ccd):
        """The calibration values a frame gets: sections and numbers from its header."""
        cal = self.calibration
        used = {"overscan": self._section(ccd, cal.get("overscan"), "overscan"),
                "trim": self._section(ccd, cal.get("trim"), "trim section")}
        if cal.get("gain") is not None:
            used["gain"] = self._number(ccd, cal["gain"], "gain")
            used["read_noise"] = self._number(ccd, cal["read_noise"], "read noise")
        return used

    def _section(self, ccd, spec, what):
        if spec is None:
            return None
        if _is_header_ref(spec):
            key = _header_key(spec)
            if key not in ccd.meta:
                raise ShiftStackError(f"{frame_label(ccd)}: no {key} card for the {what}.")
            return str(ccd.meta[key]).strip()
        return spec

    def _number(self, ccd, spec, what):
        if _is_header_ref(spec):
            key = _header_key(spec)
            try:
                return float(ccd.meta[key])
            except (KeyError, TypeError, ValueError):
                raise ShiftStackError(f"{frame_label(ccd)}: {key} does not hold the {what} "
                                      f"as a number ({ccd.meta.get(key)!r}).") from None
        return float(spec)

    def _overscan_trim(self, ccd):
        import ccdproc
        from astropy.modeling.models import Polynomial1D
        cal = self.calibration
        section = self._section(ccd, cal.get("overscan"), "overscan")
        if section:
            degree = cal.get("overscan_polynomial")
            ccd = ccdproc.subtract_overscan(
                ccd, fits_section=section, median=cal.get("overscan_median", True),
                model=None if degree is None else Polynomial1D(degree))
        section = self._section(ccd, cal.get("trim"), "trim section")
        if section:
            ccd = ccdproc.trim_image(ccd, fits_section=section)
        return ccd

    def _read_calibration(self, path):
        """A calibration frame: `read_frame` when its header allows, else `CCDData.read`."""
        from astropy.nddata import CCDData

        from .exceptions import FrameError
        from .frames import read_frame
        try:
            return read_frame(path, hdu=self.hdu, unit=self.unit)
        except FrameError as exc:
            # A bias or flat needs neither a time nor a WCS; read the plain pixels.
            log.info("%s: %s; read as a plain calibration frame", path, exc)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyUserWarning)
                ccd = CCDData.read(path, hdu=self.hdu or 0, unit=self.unit or "adu")
            ccd.data = ccd.data.astype("float32")
            ccd.wcs = None
            ccd.meta["SSFILE"] = (str(path), "file this frame was read from")
            return ccd

    def _masters(self):
        import ccdproc
        import numpy as np
        cal = self.calibration
        masters = {}
        if cal.get("bias"):
            biases = [self._overscan_trim(self._read_calibration(p)) for p in cal["bias"]]
            masters["bias"] = biases[0] if len(biases) == 1 else ccdproc.combine(
                biases, method="median")
        if cal.get("flat"):
            flats = []
            for p in cal["flat"]:
                flat = self._overscan_trim(self._read_calibration(p))
                if "bias" in masters:
                    flat = ccdproc.subtract_bias(flat, masters["bias"])
                flats.append(flat)
            masters["flat"] = flats[0] if len(flats) == 1 else ccdproc.combine(
                flats, method="median", scale=lambda a: 1 / np.ma.median(a))
        return masters

    def _calibrate(self, ccd, masters):
        """ccdproc's order (as `ccdproc.ccd_process`): overscan, trim, error, bias, flat."""
        import ccdproc
        cal = self.calibration
        ccd = self._overscan_trim(ccd)
        if cal.get("gain") is not None:
            gain = self._number(ccd, cal["gain"], "gain") * u.electron / ccd.unit
            read_noise = self._number(ccd, cal["read_noise"], "read noise") * u.electron
            # Negative pixels get the read noise alone (disregard_nan), not a NaN error.
            ccd = ccdproc.create_deviation(ccd, gain=gain, readnoise=read_noise,
                                           disregard_nan=True)
        if "bias" in masters:
            ccd = ccdproc.subtract_bias(ccd, masters["bias"])
        if "flat" in masters:
            ccd = ccdproc.flat_correct(ccd, masters["flat"], min_value=cal.get("flat_min"))
        return ccd

    def _ephemeris(self, frames):
        if "ephemeris" in self.motion:
            return self.motion["ephemeris"]
        from .ephemeris import ephemeris_for_times
        from .frames import mid_exposure_time
        spec = self.motion["horizons"]
        times = Time([mid_exposure_time(f) for f in frames])
        return ephemeris_for_times(times, spec["target"], spec.get("location", "500"),
                                   id_type=spec.get("id_type"), cache=spec.get("cache", True))

    def _record(self, result, ccdproc_cards, used):
        """Calibration and steps into the stack's header (the sky stack's too)."""
        cal = self.calibration
        for image in (result.stack, result.sky_stack):
            if image is None:
                continue
            header = image.meta
            for card in ccdproc_cards:  # ccdproc's own keywords, from the first frame
                key = card.keyword if len(card.keyword) <= 8 else f"HIERARCH {card.keyword}"
                if card.keyword not in header:
                    header[key] = (card.value, card.comment)
            set_card(header, "SSPIPE", self.path.name, "pipeline file")
            for key, name, comment in (("SSOSCAN", "overscan", "overscan section"),
                                       ("SSTRIM", "trim", "trim section")):
                if used.get(name):
                    source = cal[name]
                    from_header = (f" ({_header_key(source)}, first frame)"
                                   if _is_header_ref(source) else "")
                    set_card(header, key, used[name], comment + from_header)
            for key, name in (("SSBIAS", "bias"), ("SSFLAT", "flat")):
                if cal.get(name):
                    set_card(header, key, ", ".join(p.name for p in cal[name]),
                             f"{name} frame(s)")
            if "gain" in used:
                set_card(header, "SSGAIN", used["gain"], "[e-/unit] gain, for the error")
                set_card(header, "SSRDNOIS", used["read_noise"], "[e-] read noise, for the "
                         "error")
            for name, _, params in self.steps:
                header.add_history(f"per-frame step {name}({_format_args(params)})")


class PipelineResult:
    """What `run_pipeline` returns.

    Attributes
    ----------
    pipeline : `Pipeline`
    result : `~shiftstack_ccd.stack.StackResult`
        The stack.
    frames : list of `~astropy.nddata.CCDData`
        The calibrated frames after the per-frame steps, as they were stacked.
    outputs : dict
        ``{"stack": path, "preview": path}`` of the files written.
    """

    def __init__(self, pipeline, result, frames, outputs):
        self.pipeline = pipeline
        self.result = result
        self.frames = frames
        self.outputs = outputs


def _run_step(name, function, frame, params):
    from astropy.nddata import CCDData
    out = function(frame, **params)
    if not isinstance(out, CCDData):
        raise ShiftStackError(f"{frame_label(frame)}: the step {name!r} returned "
                              f"{type(out).__name__}, not a CCDData (see the step contract in "
                              "shiftstack_ccd.steps).")
    return out


def _format_args(params):
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


# --------------------------------------------------------------------------------------
# Loading and validating
# --------------------------------------------------------------------------------------
def load_pipeline(path, overwrite=None):
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
    check = _Checker(path, text)

    for section in config:
        if section not in SECTIONS:
            check.error((section,), f"unknown section [{section}]"
                        f"{_did_you_mean(section, SECTIONS)} Sections: "
                        f"{', '.join(SECTIONS)}.")
    for section in _REQUIRED_SECTIONS:
        if section not in config:
            check.error(None, f"the section [{section}] is missing ({SECTIONS[section]}).")
    for section in ("inputs", "calibration", "motion", "output", "stack"):
        if section in config and not isinstance(config[section], dict):
            check.error((section,), f"{section} must be a table ([{section}]).")
            config.pop(section)

    files, hdu, unit = _check_inputs(check, config.get("inputs"))
    headers = _HeaderCache(hdu)
    calibration = _check_calibration(check, config.get("calibration", {}), files, headers)
    steps = _check_steps(check, config.get("steps", []))
    motion = _check_motion(check, config.get("motion"))
    stack_options = _check_stack(check, config.get("stack", {}))
    outputs = _check_output(check, config.get("output"), overwrite)
    if check.problems:
        raise PipelineError(path, sorted(check.problems, key=lambda p: (p[0] or 0)))
    return Pipeline(path, files, hdu, unit, calibration, steps, motion, stack_options,
                    outputs)


def run_pipeline(path, overwrite=None):
    """Validate a pipeline file, then run it. See `load_pipeline` and `Pipeline.run`.

    Returns
    -------
    result : `PipelineResult`
    """
    return load_pipeline(path, overwrite=overwrite).run()


def _check_inputs(check, inputs):
    if inputs is None:
        return [], None, None
    check.unknown_keys(("inputs",), inputs, _KEYS["inputs"])
    hdu = inputs.get("hdu")
    if hdu is not None and (isinstance(hdu, bool) or not isinstance(hdu, (int, str))):
        check.error(("inputs", "hdu"), f"hdu must be an integer or an extension name, not "
                    f"{_toml_type(hdu)}.")
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
        check.error(where, f"directory must be a string, not {_toml_type(directory)}.")
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
        check.error(("inputs", "glob"), f"glob must be a string, not {_toml_type(pattern)}.")
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
    for key in ("bias", "flat"):
        if key in cal:
            out[key] = check.files(cal[key], ("calibration", key), key)
    frames_and_masters = list(files) + out.get("bias", []) + out.get("flat", [])
    for key in ("overscan", "trim"):
        value = cal.get(key)
        if value is None or value is False:
            continue
        where = ("calibration", key)
        if not isinstance(value, str):
            check.error(where, f"{key} must be a FITS section such as '[1:100,1:200]' or "
                        f"'header:KEY', not {_toml_type(value)}.")
            continue
        if _is_header_ref(value):
            card = _header_key(value)
            lacking = [p for p in frames_and_masters if card not in headers(p)]
            badly = [p for p in frames_and_masters if p not in lacking
                     and not _SECTION_RE.match(str(headers(p)[card]).strip())]
            if lacking:
                check.error(where, f"{key} = {value!r}: {len(lacking)} file(s) have no "
                            f"{card} card, e.g. {lacking[0]}.")
            elif badly:
                check.error(where, f"{key} = {value!r}: {card} = "
                            f"{headers(badly[0])[card]!r} in {badly[0]} is not a FITS "
                            "section.")
        elif not _SECTION_RE.match(value.strip()):
            check.error(where, f"{key} = {value!r} is not a FITS section such as "
                        "'[1388:1432,1:1370]' (1-based, inclusive, x first) or 'header:KEY'.")
            continue
        out[key] = value
    if "overscan_median" in cal:
        if not isinstance(cal["overscan_median"], bool):
            check.error(("calibration", "overscan_median"), "overscan_median must be true "
                        f"or false, not {_toml_type(cal['overscan_median'])}.")
        out["overscan_median"] = cal["overscan_median"]
    if "overscan_polynomial" in cal:
        degree = cal["overscan_polynomial"]
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
            check.error(("calibration", "overscan_polynomial"), "overscan_polynomial must be "
                        f"a polynomial degree (0, 1, ...), not {_toml_type(degree)}.")
        out["overscan_polynomial"] = degree
    for key in ("overscan_median", "overscan_polynomial"):
        if key in cal and "overscan" not in cal:
            check.error(("calibration", key), f"{key} needs overscan = (a section).")
    if "flat_min" in cal:
        if isinstance(cal["flat_min"], bool) or not isinstance(cal["flat_min"], (int, float)):
            check.error(("calibration", "flat_min"), "flat_min must be a number, not "
                        f"{_toml_type(cal['flat_min'])}.")
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
        if _is_header_ref(value):
            card = _header_key(value)
            lacking = [p for p in files if card not in headers(p)]
            if lacking:
                check.error(where, f"{key} = {value!r}: {len(lacking)} frame(s) have no "
                            f"{card} card, e.g. {lacking[0]}.")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            check.error(where, f"{key} must be a positive number (gain in electrons per data "
                        f"unit, read noise in electrons) or 'header:KEY', not "
                        f"{_toml_type(value)}.")
        out[key] = value
    return out


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
            check.error(where + ("step",), _unknown_step_message(name, registry))
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
                    f"{_toml_type(value)}." if key in table else f"{what}: {key} is missing.")
        return None
    return float(value)


def _check_motion(check, motion):
    from .ephemeris import Ephemeris
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
            check.error(where, f"ephemeris must be a file name, not {_toml_type(value)}.")
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
                    f"{_toml_type(value)}.")
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
                epoch = _as_time(value["epoch"])
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
                    "number" + (f", not {_toml_type(target)}." if "target" in value
                                else "; it is missing."))
        return {}
    spec = {"target": str(target)}
    for key, typ, text in (("location", str, "a string"), ("id_type", str, "a string"),
                           ("cache", bool, "true or false")):
        if key in value:
            if not isinstance(value[key], typ):
                check.error(where + (key,), f"horizons: {key} must be {text}, not "
                            f"{_toml_type(value[key])}.")
            spec[key] = value[key]
    return {"horizons": spec}


def _check_stack(check, stack):
    from .stack import shift_and_stack
    for key, elsewhere in _STACK_FROM_ELSEWHERE.items():
        if key in stack:
            check.error(("stack", key), f"{key} is set by {elsewhere}, not in [stack].")
    return check.params(shift_and_stack, stack, ("stack",), "[stack]", skip=0,
                        reserved=tuple(_STACK_FROM_ELSEWHERE))


def _check_output(check, output, overwrite):
    if output is None:
        return {"stack": None, "preview": None, "overwrite": bool(overwrite)}
    check.unknown_keys(("output",), output, _KEYS["output"])
    out = {"stack": None, "preview": None}
    file_overwrite = output.get("overwrite", False)
    if not isinstance(file_overwrite, bool):
        check.error(("output", "overwrite"), "overwrite must be true or false, not "
                    f"{_toml_type(file_overwrite)}.")
        file_overwrite = False
    out["overwrite"] = file_overwrite if overwrite is None else bool(overwrite)
    if "stack" not in output:
        check.error(("output",), "[output] needs stack = \"file.fits\".")
    for key, suffixes in (("stack", (".fits", ".fit", ".fts")), ("preview", (".png",))):
        if key not in output:
            continue
        value, where = output[key], ("output", key)
        if not isinstance(value, str):
            check.error(where, f"{key} must be a file name, not {_toml_type(value)}.")
            continue
        path = check.expand(value, where)
        if path is None:
            continue
        if path.suffix.lower() not in suffixes:
            check.error(where, f"{key} = {value!r} should end in {' or '.join(suffixes)}.")
        elif path.exists() and not out["overwrite"]:
            check.error(where, f"{key} = {value!r} exists ({path}); set overwrite = true in "
                        "[output] or pass --overwrite to replace it.")
        out[key] = path
    return out
