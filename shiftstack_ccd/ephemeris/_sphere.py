# Licensed under a 3-clause BSD style license - see LICENSE
"""Unit vectors, tangent-plane bases and rates on the celestial sphere (private helpers).

Tables are interpolated on unit vectors, not on raw RA/Dec, so that interpolation is
correct across RA = 0/360 and near the poles; these are the conversions both ways.
"""

import numpy as np
import astropy.units as u

#: Unit of the rate columns and of `Ephemeris.rates_at`.
RATE_UNIT = u.arcsec / u.hour
RADDAY_TO_RATE = (1 * u.rad / u.day).to_value(RATE_UNIT)


def unit_vectors(ra_deg, dec_deg):
    """(..., 3) unit vectors of RA/Dec in degrees."""
    ra = np.deg2rad(np.asarray(ra_deg, dtype=float))
    dec = np.deg2rad(np.asarray(dec_deg, dtype=float))
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def radec(vec):
    """RA in [0, 360) and Dec (deg) of (..., 3) vectors (not necessarily unit)."""
    x, y, z = vec[..., 0], vec[..., 1], vec[..., 2]
    ra = np.rad2deg(np.arctan2(y, x)) % 360.0
    dec = np.rad2deg(np.arctan2(z, np.hypot(x, y)))
    return ra, dec


def basis(ra_deg, dec_deg):
    """East (increasing RA) and north unit vectors of the tangent plane."""
    ra = np.deg2rad(np.asarray(ra_deg, dtype=float))
    dec = np.deg2rad(np.asarray(dec_deg, dtype=float))
    east = np.stack([-np.sin(ra), np.cos(ra), np.zeros_like(ra)], axis=-1)
    north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)],
                     axis=-1)
    return east, north


def rates_to_vectors(ra_deg, dec_deg, ra_rate, dec_rate):
    """Rates (arcsec/h) to derivative vectors of the unit vector (rad/day)."""
    east, north = basis(ra_deg, dec_deg)
    k = 1.0 / RADDAY_TO_RATE
    return (np.asarray(ra_rate, float)[..., None] * east
            + np.asarray(dec_rate, float)[..., None] * north) * k


def vectors_to_rates(vec, dvec):
    """Derivative of a (not necessarily unit) vector curve -> rates (arcsec/h)."""
    norm = np.linalg.norm(vec, axis=-1, keepdims=True)
    w = vec / norm
    dw = (dvec - np.sum(w * dvec, axis=-1, keepdims=True) * w) / norm
    ra, dec = radec(w)
    east, north = basis(ra, dec)
    return (np.sum(dw * east, axis=-1) * RADDAY_TO_RATE,
            np.sum(dw * north, axis=-1) * RADDAY_TO_RATE)
