# Licensed under a 3-clause BSD style license - see LICENSE
"""Exceptions raised by shiftstack_ccd.

Every error a user can act on is one of these, and its message names the file
(or frame) and the problem. They derive from `ValueError` where the cause is a
bad input, so code written against plain Python exceptions still works.
"""

__all__ = ["ShiftStackError", "FrameError", "EphemerisError", "HorizonsError",
           "MeasurementError", "OutputExistsError"]


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
