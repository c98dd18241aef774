# Licensed under a 3-clause BSD style license - see LICENSE
"""Measuring a target's motion from the frames themselves.

When no ephemeris is at hand (an unknown or poorly known object) but the target is visible
in single frames, its positions can be measured frame by frame and a linear motion fitted;
the result is an ordinary `~shiftstack_ccd.ephemeris.Ephemeris` for `shift_and_stack`.
"""

import logging

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time

from .._utils import frame_label, require_celestial_wcs
from ..exceptions import FrameError
from ..frames import mid_exposure_time
from ..photometry import centroid_target
from .core import Ephemeris

__all__ = ["fit_linear_motion", "track_target"]

log = logging.getLogger(__name__)


def fit_linear_motion(times, positions, epoch=None):
    """Fit a linear motion to measured positions; return it as an ephemeris.

    A straight line in time is fitted by least squares to each axis of the positions'
    offsets in the tangent plane at the fitted position at ``epoch``: the plane in which
    `Ephemeris.linear` moves.

    Parameters
    ----------
    times : `~astropy.time.Time`
        Epochs of the positions (at least two distinct ones).
    positions : `~astropy.coordinates.SkyCoord`
        Measured positions.
    epoch : `~astropy.time.Time`, optional
        Epoch of the returned ephemeris's reference position (default: mean of ``times``).

    Returns
    -------
    ephemeris : `~shiftstack_ccd.ephemeris.Ephemeris`
        `Ephemeris.linear`, with ``meta['fit_rms']`` the rms residual (arcsec) and
        ``meta['n_points']``.

    Examples
    --------
    >>> from astropy import units as u
    >>> from astropy.coordinates import SkyCoord
    >>> from astropy.time import Time
    >>> t = Time("2024-01-01T00:00:00", scale="utc") + [0, 1, 2] * u.hour
    >>> start = SkyCoord(10, 20, unit="deg")
    >>> pos = start.spherical_offsets_by([0, 30, 60] * u.arcsec, [0, -10, -20] * u.arcsec)
    >>> eph = fit_linear_motion(t, pos, epoch=t[0])
    >>> ra_rate, dec_rate = eph.rates_at(t[0])
    >>> rates = [r.to_value(u.arcsec / u.hour) for r in (ra_rate, dec_rate)]
    >>> print(f"{rates[0]:.3f} {rates[1]:.3f}")
    30.000 -10.000
    """
    times = Time(times).utc
    positions = SkyCoord(positions).icrs
    if len(times) != len(positions) or len(np.unique(times.mjd)) < 2:
        raise ValueError("need positions at two or more distinct times, one per time")
    if epoch is None:
        epoch = Time(np.mean(times.mjd), format="mjd", scale="utc")
    hours = (times - epoch).to_value(u.hour)
    design = np.column_stack([np.ones_like(hours), hours])
    # Ephemeris.linear moves along straight lines of the tangent plane at its own position
    # at the epoch; fit in the plane at the mean position, then again in that plane.
    center = SkyCoord(*_mean_direction(positions), unit="deg")
    for _ in range(2):
        dra, ddec = [d.to_value(u.arcsec) for d in center.spherical_offsets_to(positions)]
        (x0, vx), *_ = np.linalg.lstsq(design, dra, rcond=None)
        (y0, vy), *_ = np.linalg.lstsq(design, ddec, rcond=None)
        start = center.spherical_offsets_by(x0 * u.arcsec, y0 * u.arcsec)
        center = start
    dra, ddec = [d.to_value(u.arcsec) for d in start.spherical_offsets_to(positions)]
    rms = float(np.sqrt(np.mean((dra - vx * hours) ** 2 + (ddec - vy * hours) ** 2)))
    # The line was fitted in the plane at `center`; a linear ephemeris moves in the plane at
    # its own position. Over a night the two differ by far less than a milliarcsecond.
    eph = Ephemeris.linear(start, epoch, vx * u.arcsec / u.hour, vy * u.arcsec / u.hour,
                           meta={"source": "fit to measured positions",
                                 "fit_rms": rms, "n_points": len(times)})
    log.info("linear motion fitted to %d positions: %.3f, %.3f arcsec/h, rms %.3f arcsec",
             len(times), vx, vy, rms)
    return eph


def _mean_direction(positions):
    vec = positions.cartesian.xyz.value.mean(axis=1)
    ra = np.degrees(np.arctan2(vec[1], vec[0])) % 360
    dec = np.degrees(np.arctan2(vec[2], np.hypot(vec[0], vec[1])))
    return ra, dec


def track_target(frames, first, last=None, box_size=11):
    """Measure a moving target's position in every frame, starting from rough positions.

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData`
        Frames with celestial WCS, in any order.
    first : `~astropy.coordinates.SkyCoord`
        Rough position of the target in the earliest frame (within a few pixels).
    last : `~astropy.coordinates.SkyCoord`, optional
        Rough position in the latest frame; the positions in between are predicted linearly.
        Without it the target is followed from frame to frame.
    box_size : int
        Centroid box, pixels.

    Returns
    -------
    table : `~astropy.table.Table`
        ``file``, ``time`` (UTC), ``x``, ``y`` (0-based frame pixels), ``ra``, ``dec`` (deg),
        sorted by time.
    """
    times = Time([mid_exposure_time(f) for f in frames])
    order = np.argsort(times.mjd)
    span = (times[order[-1]] - times[order[0]]).to_value(u.s)
    rows = []
    guess = SkyCoord(first).icrs
    previous = None
    for index in order:
        frame, t = frames[index], times[index]
        wcs = require_celestial_wcs(frame, "track_target", index)
        if last is not None and span > 0:
            fraction = (t - times[order[0]]).to_value(u.s) / span
            dra, ddec = SkyCoord(first).spherical_offsets_to(SkyCoord(last))
            guess = SkyCoord(first).spherical_offsets_by(dra * fraction, ddec * fraction)
        elif previous is not None:
            guess = previous
        x, y = wcs.world_to_pixel(guess)
        if not (0 <= x < frame.shape[1] and 0 <= y < frame.shape[0]):
            raise FrameError(f"{frame_label(frame, index)}: the target's predicted position "
                             f"({float(x):.1f}, {float(y):.1f}) is off the frame.")
        cx, cy = centroid_target(frame, (float(x), float(y)), box_size=box_size)
        position = wcs.pixel_to_world(cx, cy)
        previous = position
        rows.append((frame_label(frame, index), t.isot, cx, cy, position.ra.deg,
                     position.dec.deg))
    table = Table(rows=rows, names=("file", "time", "x", "y", "ra", "dec"))
    table["time"] = Time(table["time"], scale="utc")
    return table
