# Licensed under a 3-clause BSD style license - see LICENSE
"""Times, ranges and table values as the ephemeris code needs them (private helpers)."""

import numpy as np
from astropy.time import Time

from ..exceptions import EphemerisError

# Slack allowed at the edges of a table (1 ms): Horizons prints epochs to 1e-9 day.
EDGE_TOL_DAYS = 1e-3 / 86400.0


def as_time(times, what="times"):
    """Return (Time, is_scalar); strings and datetimes are read as UTC."""
    if not isinstance(times, Time):
        try:
            times = Time(times, scale="utc")
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise EphemerisError(
                f"{what} must be an astropy Time (any scale) or ISO strings read as UTC; "
                f"could not read {times!r}: {exc}") from exc
    return times, times.isscalar


def tt_days(times, t0):
    """Days (TT) from ``t0`` to ``times``, with full two-part precision."""
    a = times.tt
    b = t0.tt
    return (a.jd1 - b.jd1) + (a.jd2 - b.jd2)


def iso(t):
    return t.utc.isot if t.isscalar else [s for s in t.utc.isot]


def fmt_range(t0, t1):
    return f"{Time(t0).utc.iso[:23]} to {Time(t1).utc.iso[:23]} UTC"


def float_array(col):
    """A (possibly masked) column as a float ndarray with NaN for masked values."""
    data = getattr(col, "value", col)
    if hasattr(data, "filled"):
        data = np.ma.asarray(data, dtype=float).filled(np.nan)
    return np.asarray(data, dtype=float)


def short(value, n=68):
    s = str(value)
    return s if len(s) <= n else s[: n - 3] + "..."
