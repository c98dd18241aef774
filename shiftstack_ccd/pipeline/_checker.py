# Licensed under a 3-clause BSD style license - see LICENSE
"""Collecting the problems of a pipeline file, with their lines (private)."""

import datetime
import difflib
import glob
import os
import re
from pathlib import Path

from astropy import units as u
from astropy.io import fits
from astropy.time import Time

from ._params import param_specs
from ._toml import KeyLines, toml_type


HEADER_PREFIX = "header:"
SECTION_RE = re.compile(r"^\[\s*\d+\s*:\s*\d+\s*,\s*\d+\s*:\s*\d+\s*\]$")
ENV_RE = re.compile(r"\$(\w+|\{[^}]*\})")


def as_time(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return Time(value, scale="utc")
    if isinstance(value, str):
        return Time(value, scale="utc")
    raise TypeError


class Checker:
    """Collects the problems of one pipeline file, with their lines."""

    def __init__(self, path, text):
        self.path = Path(path)
        self.folder = self.path.resolve().parent
        self.line = KeyLines(text)
        self.problems = []

    def error(self, where, message):
        self.problems.append((self.line(where) if where else None, message))

    def unknown_keys(self, section, table, known, what=None):
        what = what or f"[{section[0]}]"
        for key in table:
            if key not in known:
                close = did_you_mean(key, known)
                self.error(section + (key,), f"unknown key {key!r} in {what}{close} "
                           f"Known keys: {', '.join(known)}.")

    def expand(self, text, where):
        """Environment variables and ``~`` expanded, relative to the pipeline's folder."""
        expanded = os.path.expanduser(os.path.expandvars(str(text)))
        unset = ENV_RE.findall(expanded)
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
                       f"them, not {toml_type(value)}.")
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
        bad = f"{owner}: {spec.name} must be {spec.expectation()}, not {toml_type(value)}."
        if "any" in kinds:
            if isinstance(value, datetime.datetime):
                return as_time(value)
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
            if value == "none" and spec.takes_none:  # TOML has no null
                return None
            if choices and not kinds & {"path", "quantity", "time"}:
                words = choices + (("none",) if spec.takes_none else ())
                close = did_you_mean(value, words)
                raise Invalid(f"{owner}: {spec.name} must be one of "
                              f"{', '.join(repr(c) for c in words)}, not {value!r}{close}")
            if "path" in kinds:
                path = self.existing_file(value, where, what=f"{owner}: {spec.name}:")
                if path is None:
                    raise Reported()
                return str(path)
            if "quantity" in kinds:
                try:
                    return u.Quantity(value)
                except (TypeError, ValueError):
                    raise Invalid(f"{owner}: {spec.name} = {value!r} is not a quantity "
                                  "(write a number and a unit, e.g. '1.5 arcsec').") from None
            if "time" in kinds:
                try:
                    return as_time(value)
                except ValueError:
                    raise Invalid(f"{owner}: {spec.name} = {value!r} is not a time (write "
                                  "ISO UTC, e.g. '2019-03-26T03:40:00').") from None
            if "str" in kinds:
                return value
        elif isinstance(value, datetime.datetime):
            if "time" in kinds:
                return as_time(value)
        elif isinstance(value, list):
            if "tuple" in kinds:
                return tuple(value)
            if "list" in kinds:
                return value
        elif isinstance(value, dict):
            if "dict" in kinds:
                return value
        raise Invalid(bad)

    def params(self, function, params, where, owner, skip=0, reserved=()):
        """Validate keyword arguments of ``function``; return them converted."""
        specs, var_keyword = param_specs(function, skip=skip)
        out = {}
        for key, value in params.items():
            if key in reserved:
                continue
            spec = specs.get(key)
            if spec is None:
                if var_keyword:
                    out[key] = value
                    continue
                close = did_you_mean(key, list(specs))
                self.error(where + (key,), f"{owner} has no parameter {key!r}{close} Its "
                           f"parameters: {', '.join(specs)}.")
                continue
            try:
                out[key] = self.convert(value, spec, where + (key,), owner)
            except Invalid as exc:
                self.error(where + (key,), str(exc))
            except Reported:
                pass
        missing = [name for name, spec in specs.items()
                   if spec.required and name not in params and name not in reserved]
        if missing:
            self.error(where, f"{owner}: missing required parameter(s) {', '.join(missing)}.")
        return out


class Invalid(Exception):
    pass


class Reported(Exception):
    pass


def did_you_mean(word, candidates):
    close = difflib.get_close_matches(str(word), list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else "."


def is_header_ref(value):
    return isinstance(value, str) and value.startswith(HEADER_PREFIX)


def header_key(value):
    return value[len(HEADER_PREFIX):].strip().upper()


class HeaderCache:
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
