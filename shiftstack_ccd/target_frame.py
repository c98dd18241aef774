# Licensed under a 3-clause BSD style license - see LICENSE
"""The co-moving target frame: one fixed tangent plane, one pixel offset per epoch.

Every frame is resampled onto a single gnomonic (TAN) plane whose tangent point is the
target's position at the reference time. The target's motion is then an exact offset in
that plane's pixels: the grid used for a frame taken at time *t* is the same plane with its
reference pixel moved so that the target at *t* falls on the centre pixel. Stars, fixed on
the sky, move across those grids and trail in the target stack; on the unshifted grid
(the *sky* grid) they stay put and the target trails instead.
"""

import copy
import logging

import numpy as np
from astropy import units as u
from astropy.time import Time
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from ._utils import require_celestial_wcs
from .exceptions import FrameError
from .frames import mid_exposure_time

__all__ = ["TargetFrame", "check_target_on_frame"]

log = logging.getLogger(__name__)


def _frame_orientation(wcs):
    """The linear part (pixel -> intermediate degrees) of a frame's WCS, as a 2x2 matrix."""
    return np.asarray(wcs.celestial.pixel_scale_matrix, dtype=float)


class TargetFrame:
    """A tangent plane that moves with the target.

    Parameters
    ----------
    ephemeris : `~shiftstack_ccd.ephemeris.Ephemeris`
        The motion model; ``ephemeris.at(times)`` gives the target's ICRS position.
    reference_time : `~astropy.time.Time`
        The epoch at which the tangent point is the target's position.
    shape : tuple of int
        ``(ny, nx)`` of the output grid. The target sits on the centre pixel,
        ``((nx - 1) / 2, (ny - 1) / 2)`` in 0-based pixels (a pixel centre for odd sizes).
    pixel_scale : `~astropy.units.Quantity`
        Angular size of a pixel.
    orientation : {'north', None} or `~astropy.wcs.WCS` or (2, 2) array
        ``'north'`` (default): north up, east to the left (``CD = [[-s, 0], [0, s]]``).
        A WCS: keep its rotation and handedness (use a frame's WCS so that frames taken at a
        fixed position angle are related to the grid by a pure translation, which enables the
        fast resampling path). A 2x2 array: the CD matrix itself, in degrees per pixel.

    Examples
    --------
    >>> from astropy import units as u
    >>> from astropy.coordinates import SkyCoord
    >>> from astropy.time import Time
    >>> from shiftstack_ccd import Ephemeris, TargetFrame
    >>> t0 = Time("2024-03-01T03:00:00", scale="utc")
    >>> eph = Ephemeris.linear(SkyCoord(150, 2, unit="deg"), t0,
    ...                        36 * u.arcsec / u.hour, 0 * u.arcsec / u.hour)
    >>> grid = TargetFrame(eph, t0, (101, 101), 1 * u.arcsec)
    >>> dx, dy = grid.offset(t0 + 1 * u.hour)   # 36 arcsec east = 36 pixels to the left
    >>> print(f"{float(dx):.3f} {float(dy):.3f}")
    -36.000 0.000
    """

    def __init__(self, ephemeris, reference_time, shape, pixel_scale, orientation="north"):
        self.ephemeris = ephemeris
        self.reference_time = Time(reference_time).utc
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"shape must be (ny, nx) with positive sizes, not {shape}")
        self.pixel_scale = u.Quantity(pixel_scale, u.arcsec)
        scale = self.pixel_scale.to_value(u.deg)
        if isinstance(orientation, str) and orientation == "north" or orientation is None:
            cd = np.array([[-scale, 0.0], [0.0, scale]])
        else:
            matrix = (_frame_orientation(orientation) if isinstance(orientation, WCS)
                      else np.asarray(orientation, dtype=float))
            # keep the rotation and handedness, impose the pixel scale
            cd = matrix / np.sqrt(abs(np.linalg.det(matrix))) * scale
        self.center = self.ephemeris.at(self.reference_time)
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.cunit = ["deg", "deg"]
        wcs.wcs.crval = [self.center.ra.deg, self.center.dec.deg]
        wcs.wcs.crpix = [(self.shape[1] + 1) / 2, (self.shape[0] + 1) / 2]
        wcs.wcs.cd = cd
        wcs.wcs.radesys = "ICRS"
        wcs.wcs.set()
        wcs.pixel_shape = (self.shape[1], self.shape[0])
        self.wcs = wcs

    @classmethod
    def for_frames(cls, frames, ephemeris, reference_time=None, size=None, pixel_scale=None,
                   orientation="north", times=None):
        """Build the target frame that suits a list of frames.

        Parameters
        ----------
        frames : list of `~astropy.nddata.CCDData`
            Frames with celestial WCS.
        ephemeris : `~shiftstack_ccd.ephemeris.Ephemeris`
            The target's motion.
        reference_time : `~astropy.time.Time`, optional
            Default: the mean of the frames' mid-exposure times.
        size : int, (int, int), or `~astropy.units.Quantity`, optional
            Output size in pixels (``ny, nx``) or as an angle. Default: just large enough,
            centred on the target, to hold every pixel of every frame (odd sizes).
        pixel_scale : `~astropy.units.Quantity`, optional
            Default: the median pixel scale of the inputs.
        orientation : {'north'} or 'first' or `~astropy.wcs.WCS`
            ``'first'`` keeps the first frame's orientation.
        times : `~astropy.time.Time`, optional
            The frames' mid-exposure times, when already known.
        """
        wcses = [require_celestial_wcs(f, "TargetFrame", i) for i, f in enumerate(frames)]
        if times is None:
            times = Time([mid_exposure_time(f) for f in frames])
        if reference_time is None:
            reference_time = Time(np.mean(times.utc.mjd), format="mjd", scale="utc")
        if pixel_scale is None:
            scales = [np.mean(proj_plane_pixel_scales(w)) for w in wcses]
            pixel_scale = float(np.median(scales)) * u.deg
        pixel_scale = u.Quantity(pixel_scale, u.arcsec)
        if isinstance(orientation, str) and orientation == "first":
            orientation = wcses[0]
        if size is None:
            provisional = cls(ephemeris, reference_time, (1, 1), pixel_scale, orientation)
            offsets = provisional.offset(times)
            half = 0.0
            for i, (w, frame) in enumerate(zip(wcses, frames)):
                ny, nx = frame.shape
                corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5],
                                    [-0.5, ny - 0.5], [nx - 0.5, ny - 0.5]])
                sky = w.pixel_to_world(corners[:, 0], corners[:, 1])
                x, y = provisional.wcs.world_to_pixel(sky)
                half = max(half, np.max(np.abs(x - offsets[0][i])),
                           np.max(np.abs(y - offsets[1][i])))
            n = 2 * int(np.ceil(half)) + 1
            shape = (n, n)
        elif isinstance(size, u.Quantity):
            n = 2 * int(np.ceil((size / pixel_scale).decompose().value / 2)) + 1
            shape = (n, n)
        else:
            shape = (int(size), int(size)) if np.isscalar(size) else tuple(size)
        return cls(ephemeris, reference_time, shape, pixel_scale, orientation)

    @property
    def center_pixel(self):
        """0-based pixel ``(x, y)`` of the target on every target-centred grid."""
        return (self.shape[1] - 1) / 2, (self.shape[0] - 1) / 2

    def offset(self, times):
        """The target's pixel offset ``(dx, dy)`` in this plane at the given times.

        It is measured from the tangent point (the target at the reference time), in pixels
        of the fixed plane; it is exact for any motion, not a linear approximation.
        """
        position = self.ephemeris.at(Time(times))
        x, y = self.wcs.world_to_pixel(position)
        cx, cy = self.center_pixel
        return np.asarray(x) - cx, np.asarray(y) - cy

    def wcs_at(self, time):
        """The WCS of the target-centred grid at one epoch.

        It is this plane with ``CRPIX`` moved by minus the target's offset, so that the target's
        position at ``time`` falls on `center_pixel`.
        """
        return self.wcs_at_offset(*self.offset(time))

    def wcs_at_offset(self, dx, dy):
        """The WCS of the target-centred grid for the target at offset ``(dx, dy)`` (pixels,
        as `offset` gives them): for many epochs, `offset` of all the times at once and
        this for each costs a tenth of `wcs_at` for each."""
        wcs = copy.deepcopy(self.wcs)
        wcs.wcs.crpix = wcs.wcs.crpix - np.array([float(dx), float(dy)])
        wcs.wcs.set()
        return wcs

    def target_pixel_in(self, frame, time=None):
        """The target's 0-based pixel position ``(x, y)`` in a frame's own pixels."""
        wcs = require_celestial_wcs(frame, "target_pixel_in")
        if time is None:
            time = mid_exposure_time(frame)
        x, y = wcs.world_to_pixel(self.ephemeris.at(time))
        return float(x), float(y)

    def check_on_frame(self, frame, time=None, label="frame"):
        """The target's pixel in the frame; `FrameError` if it is off the frame then."""
        return check_target_on_frame(frame, self.ephemeris.at(
            mid_exposure_time(frame) if time is None else time), label)

    def header_cards(self):
        """FITS cards that describe this target frame."""
        return [
            ("SSREFT", self.reference_time.isot, "reference time (UTC) of the target plane"),
            ("SSREFMJD", float(self.reference_time.mjd), "reference time, MJD (UTC)"),
            ("SSTRA", float(self.center.ra.deg), "[deg] target RA at reference time"),
            ("SSTDEC", float(self.center.dec.deg), "[deg] target Dec at reference time"),
            ("SSPIXSC", float(self.pixel_scale.to_value(u.arcsec)), "[arcsec] output pixel scale"),
        ]


def check_target_on_frame(frame, position, label="frame"):
    """The 0-based pixel ``(x, y)`` of a sky position in a frame, or a `FrameError`.

    Parameters
    ----------
    frame : `~astropy.nddata.CCDData`
        With a celestial WCS.
    position : `~astropy.coordinates.SkyCoord`
        The target at the frame's mid-exposure time.
    label : str
        The frame's name, for the message.
    """
    x, y = (float(v) for v in require_celestial_wcs(frame, "shift_and_stack")
            .world_to_pixel(position))
    ny, nx = frame.shape
    if not (-0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5):
        raise FrameError(f"{label}: the target is off the frame at its mid-exposure time "
                         f"(predicted pixel x={x:.1f}, y={y:.1f}; frame is {nx} x {ny}).")
    return x, y
