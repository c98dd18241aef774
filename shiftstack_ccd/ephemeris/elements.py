# Licensed under a 3-clause BSD style license - see LICENSE
"""Two-body propagation of osculating elements or a state vector (see
`Ephemeris.from_elements`): offline, light time included."""

import numpy as np
import astropy.units as u
from astropy.time import Time

from ._values import EDGE_TOL_DAYS, tt_days
from .core import Ephemeris
from .orbits import two_body_astrometric

__all__ = ["ElementsEphemeris"]

# Default tabulation step for `to_table` of an elements ephemeris.
_ELEMENTS_TABLE_STEP = 30 * u.min


class ElementsEphemeris(Ephemeris, kind="elements"):
    """A conic about the Sun (or the barycentre) seen from the observer; built by
    `Ephemeris.from_elements`, which reads the many forms of elements.

    Parameters
    ----------
    r0, v0 : array
        State vector (au, au/day) at ``epoch``, on the axes of ``frame``.
    epoch : `~astropy.time.Time`
        Epoch of the state vector.
    mu : float
        Gravitational parameter (au**3/day**2).
    center : {'sun', 'ssb'}
        Origin of the state vector.
    location : `~astropy.coordinates.EarthLocation` or None
        Observer (None: the geocentre).
    light_time : bool
        Astrometric (light-time corrected) positions; False gives geometric ones.
    frame : {'ecliptic', 'icrs'}
        Axes of the state vector.
    valid : tuple of `~astropy.time.Time`
        (start, stop) where `at` may be used.
    meta : dict
        Provenance.
    """

    def __init__(self, r0, v0, epoch, *, mu, center, location, light_time, frame, valid, meta):
        self._state = (r0, v0)
        self._epoch = epoch
        self._model_args = {"mu": mu, "center": center, "location": location,
                            "light_time": light_time, "frame": frame}
        self._valid = valid
        self._meta = dict(meta)

    def _vectors(self, t):
        self._check_range(t)
        unit, rate, _ = two_body_astrometric(*self._state, self._epoch, t, **self._model_args)
        return unit, rate

    @property
    def time_range(self):
        return self._valid

    def _default_times(self):
        t_lo, t_hi = self._valid
        n = int(np.floor((tt_days(t_hi, t_lo) * u.day / _ELEMENTS_TABLE_STEP)
                         .to_value(u.one) + 1e-9)) + 1
        times = t_lo + np.arange(n) * _ELEMENTS_TABLE_STEP
        if tt_days(t_hi, times[-1]) > EDGE_TOL_DAYS:
            times = Time([*times, t_hi])
        return times
