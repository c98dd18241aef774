# Licensed under a 3-clause BSD style license - see LICENSE
"""Tabulated ephemerides, interpolated on unit vectors and never extrapolated.

`TableEphemeris` is any table (see `Ephemeris.from_table`); `HorizonsEphemeris` is one
fetched from (or saved from) JPL Horizons. The module notes of
`shiftstack_ccd.ephemeris.core` explain the choice between Hermite and spline interpolation.
"""

import numpy as np
import astropy.units as u
from astropy.table import Table
from astropy.time import Time

from ..exceptions import EphemerisError
from ._sphere import rates_to_vectors, unit_vectors
from ._tables import standardize_table
from ._values import EDGE_TOL_DAYS, as_time, float_array, iso, tt_days
from .core import Ephemeris

__all__ = ["TableEphemeris", "HorizonsEphemeris"]


class TableEphemeris(Ephemeris, kind="table"):
    """Tabulated positions (and rates), interpolated; refuses times outside the table.

    ``Ephemeris(table, meta=None, interpolation='auto')`` and `Ephemeris.from_table` build
    one (see there for the columns read).

    Parameters
    ----------
    table : `~astropy.table.Table`
        The tabulated ephemeris.
    meta : dict, optional
        Provenance (merged over ``table.meta``).
    interpolation : {'auto', 'hermite', 'spline'}
        How to interpolate (see the notes of `shiftstack_ccd.ephemeris.core`).
    """

    def __init__(self, table, meta=None, interpolation="auto"):
        if not isinstance(table, Table):
            raise EphemerisError("Ephemeris() takes an astropy Table; use Ephemeris.from_table "
                                 "for a file name")
        std, tmeta = standardize_table(table)
        self._meta = dict(tmeta)
        self._meta.update(dict(meta or {}))
        self._meta.setdefault("kind", "table")
        self._setup(std, interpolation)

    @classmethod
    def from_standard(cls, std, meta, interpolation="auto"):
        """Build from a table already in the standard columns (``time``, ``ra``, ``dec`` ...)
        and its provenance, without reading its columns again."""
        obj = cls.__new__(cls)
        obj._meta = dict(meta)
        obj._setup(std, interpolation)
        return obj

    def _setup(self, std, interpolation):
        from scipy.interpolate import CubicHermiteSpline, CubicSpline  # `import` stays light

        if interpolation not in ("auto", "hermite", "spline"):
            raise EphemerisError(
                f"interpolation must be 'auto', 'hermite' or 'spline', not {interpolation!r}")
        times = std["time"]
        order = np.argsort(tt_days(times, times[0]), kind="stable")
        std = std[order]
        times = std["time"]
        x = tt_days(times, times[0])
        dup = np.nonzero(np.diff(x) <= EDGE_TOL_DAYS)[0]
        if dup.size:
            same = (np.abs(std["ra"][dup] - std["ra"][dup + 1]) < 1e-9) & \
                   (np.abs(std["dec"][dup] - std["dec"][dup + 1]) < 1e-9)
            if not np.all(same):
                bad = iso(times[dup[~same][:3]])
                raise EphemerisError(f"the ephemeris table has repeated epochs with different "
                                     f"positions: {', '.join(bad)}; remove the duplicates")
            keep = np.ones(len(std), bool)
            keep[dup + 1] = False
            std = std[keep]
            times = std["time"]
            x = tt_days(times, times[0])
        ra = float_array(std["ra"])
        dec = float_array(std["dec"])
        if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
            raise EphemerisError("the ephemeris table has missing or non-finite RA/Dec values")
        has_rates = ("ra_rate" in std.colnames and "dec_rate" in std.colnames
                     and np.all(np.isfinite(float_array(std["ra_rate"])))
                     and np.all(np.isfinite(float_array(std["dec_rate"]))))
        method = interpolation
        if method == "auto":
            # Hermite when the rates are derivatives of the positions, when there are too
            # few rows for a spline, or when the rows are the exact frame epochs (a
            # Horizons TLIST): sparse nodes, where the tabulated rates beat any derivative
            # of the positions. A spline through dense apparent-rate (Horizons) tables.
            consistent = self._meta.get("rates", "derivative") == "derivative"
            sparse = len(std) < 4 or self._meta.get("epochs_mode") == "tlist"
            method = "hermite" if has_rates and (consistent or sparse) else "spline"
        if method == "hermite" and not has_rates:
            raise EphemerisError("interpolation='hermite' needs finite ra_rate and dec_rate "
                                 "columns; use 'spline' or 'auto'")
        self._table = std
        self._t0 = times[0].tt
        self._x = x
        self._nodes = unit_vectors(ra, dec)
        self._interpolation = method
        self._has_rates = has_rates
        if has_rates:
            self._dnodes = rates_to_vectors(ra, dec, float_array(std["ra_rate"]),
                                            float_array(std["dec_rate"]))
        if len(std) == 1:
            self._interp = None
        elif method == "hermite":
            self._interp = CubicHermiteSpline(x, self._nodes, self._dnodes, axis=0)
        elif has_rates:
            self._interp = CubicSpline(x, self._nodes, axis=0,
                                       bc_type=((1, self._dnodes[0]), (1, self._dnodes[-1])))
        else:
            self._interp = CubicSpline(x, self._nodes, axis=0)  # not-a-knot; 2 rows: linear
        self._dinterp = None if self._interp is None else self._interp.derivative()

    def _table_x(self, t):
        """TT days from the first node, after refusing times outside the table."""
        x = tt_days(t, self._t0)
        lo, hi = self._x[0], self._x[-1]
        bad = (x < lo - EDGE_TOL_DAYS) | (x > hi + EDGE_TOL_DAYS) | ~np.isfinite(x)
        if np.any(bad):
            self._refuse(t[bad], self._table["time"][0], self._table["time"][-1])
        return np.clip(x, lo, hi)

    def _vectors(self, t):
        x = self._table_x(t)
        if self._interp is None:
            vec = np.repeat(self._nodes[:1], len(x), axis=0)
            dvec = np.repeat(self._dnodes[:1], len(x), axis=0) if self._has_rates else None
            return vec, dvec
        return self._interp(x), self._dinterp(x)

    def uncertainty_at(self, times):
        if "ra_3sigma" not in self._table.colnames or "dec_3sigma" not in self._table.colnames:
            return None
        t, scalar = as_time(times)
        flat = t.reshape(-1) if not scalar else t.reshape(1)
        x = self._table_x(flat)
        shape = () if scalar else t.shape
        out = []
        for name in ("ra_3sigma", "dec_3sigma"):
            col = float_array(self._table[name])
            if not np.any(np.isfinite(col)):
                return None
            val = np.interp(x, self._x, col) if len(col) > 1 else np.full(x.shape, col[0])
            out.append((val / 3.0).reshape(shape) * u.arcsec)
        return tuple(out)

    uncertainty_at.__doc__ = Ephemeris.uncertainty_at.__doc__

    @property
    def time_range(self):
        times = self._table["time"]
        return (times[0].utc, times[-1].utc)

    def __len__(self):
        return len(self._table)

    def _repr_extra(self):
        return f", {len(self)} rows, {self._interpolation}"

    def _own_table(self):
        out = self._table.copy()
        out["time"] = Time(out["time"], precision=6).utc
        return out


class HorizonsEphemeris(TableEphemeris, kind="horizons"):
    """A table of astrometric positions from JPL Horizons (see `Ephemeris.from_horizons`).

    Its rates are Horizons' *apparent* rates (rotated to ICRS axes), which differ from the
    derivative of the astrometric positions by the change of aberration: dense range
    tables are interpolated by a spline through the positions, exact-epoch (TLIST) tables
    by Hermite through positions and rates (``interpolation='auto'``).
    """
