# Licensed under a 3-clause BSD style license - see LICENSE
"""Exceptions raised by shiftstack_ccd.

Every error a user can act on is one of these, and its message names the file
(or frame) and the problem. They derive from `ValueError` where the cause is a
bad input, so code written against plain Python exceptions still works.
"""

__all__ = ["ShiftStackError", "FrameError", "EphemerisError", "HorizonsError",
           "MeasurementError", "OutputExistsError", "OutputError", "ParameterError",
           "PipelineError", "DownloadError", "UnknownStepError", "SearchError"]


class ShiftStackError(Exception):
    """Base class of every error raised by shiftstack_ccd."""


class FrameError(ShiftStackError, ValueError):
    """A frame cannot be used: unreadable file, missing WCS or time, bad data."""


class EphemerisError(ShiftStackError, ValueError):
    """A motion model cannot give the position asked for."""


class HorizonsError(EphemerisError):
    """JPL Horizons refused or could not answer a query."""


class MeasurementError(ShiftStackError, ValueError):
    """A measurement or its report cannot be made as asked: a zero point without a band, a
    catalogue with no star in the field, a report field out of range."""


class OutputExistsError(ShiftStackError, FileExistsError):
    """An output file exists and overwriting was not asked for."""


class OutputError(ShiftStackError, OSError):
    """An output cannot be written where asked: an input file, a folder, an unwritable place."""


class ParameterError(ShiftStackError, ValueError):
    """A parameter's value is outside what it can mean (a negative size, a sigma below 0...).

    The message names the parameter, the value given and what is expected.
    """


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


class UnknownStepError(ShiftStackError, KeyError):
    """No step of that name is installed."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DownloadError(ShiftStackError, OSError):
    """Example data could not be downloaded (no network, or not the original file)."""


class SearchError(ShiftStackError, ValueError):
    """A motion search cannot be done as asked (empty rate range, too large a grid...)."""
