# Licensed under a 3-clause BSD style license - see LICENSE
"""Linear motion: a position, an epoch and two rates (see `Ephemeris.linear`)."""

import numpy as np
import astropy.units as u
from astropy.coordinates import SkyCoord

from ..exceptions import EphemerisError
from ._sphere import RATE_UNIT, unit_vectors
from ._values import as_time
from .core import Ephemeris

__all__ = ["LinearEphemeris"]


class LinearEphemeris(Ephemeris, kind="linear"):
    """Uniform motion in the tangent plane at ``position``; valid at any time.

    Build it with `Ephemeris.linear` (same parameters); ``eph.at(t)`` is
    ``position.spherical_offsets_by(ra_rate*(t-epoch), dec_rate*(t-epoch))``, exactly what
    the simulator assumes.
    """

    _rates_are_derivatives = False  # the defining rates, not derivatives of a track

    def __init__(self, position, epoch, ra_rate, dec_rate, meta=None):
        if not isinstance(position, SkyCoord):
            raise EphemerisError("position must be a SkyCoord")
        if not position.isscalar:
            raise EphemerisError("position must be a single SkyCoord, not an array")
        epoch, scalar = as_time(epoch, "epoch")
        if not scalar:
            raise EphemerisError("epoch must be a single Time")
        rates = []
        for name, rate in (("ra_rate", ra_rate), ("dec_rate", dec_rate)):
            try:
                rates.append(u.Quantity(rate).to(RATE_UNIT))
            except u.UnitsError as exc:
                raise EphemerisError(
                    f"{name} must be an angular rate such as arcsec/hour, got {rate!r}") from exc
            if not rates[-1].isscalar or not np.isfinite(rates[-1]):
                raise EphemerisError(f"{name} must be one finite value, got {rate!r}")
        icrs = position.icrs
        self._meta = {"kind": "linear", **dict(meta or {})}
        self._position = SkyCoord(icrs.ra, icrs.dec, frame="icrs")
        self._epoch = epoch
        self._ra_rate, self._dec_rate = rates

    def _vectors(self, t):
        dt = (t - self._epoch).to(u.hour)
        pos = self._position.spherical_offsets_by(self._ra_rate * dt, self._dec_rate * dt)
        return unit_vectors(pos.ra.deg, pos.dec.deg), None

    def rates_at(self, times):
        t, scalar = as_time(times)
        ones = np.ones(() if scalar else t.shape)
        return ones * self._ra_rate, ones * self._dec_rate

    rates_at.__doc__ = Ephemeris.rates_at.__doc__

    def _default_times(self):
        return self._epoch  # one row, which from_table turns back into this linear motion

    def _kind_cards(self, add):
        add("EPHEPOCH", self._epoch.utc.isot[:23], "epoch of the linear model (UTC)")
        add("EPHRA", round(float(self._position.ra.deg), 9), "[deg] RA at EPHEPOCH")
        add("EPHDEC", round(float(self._position.dec.deg), 9), "[deg] Dec at EPHEPOCH")
        add("EPHRATE1", float(self._ra_rate.to_value(RATE_UNIT)), "[arcsec/h] dRA*cos(Dec)/dt")
        add("EPHRATE2", float(self._dec_rate.to_value(RATE_UNIT)), "[arcsec/h] dDec/dt")
