# Licensed under a 3-clause BSD style license - see LICENSE
"""Simulated observations: frames of a star field with a moving target and known truth.

`simulate_observation` makes a sequence of calibrated CCD frames of a star field
with a moving target whose position, flux and signal-to-noise ratio are known
exactly; tests, the demo and the documentation use it.
"""

import logging
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.table import Table
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS

from .._psf import stamp_half_size
from .._utils import atomic_output
from ..exceptions import OutputExistsError
from ._cosmic_rays import DEFAULT_CR_RATE, draw_cosmic_rays
from ._render import (TRAIL_STEP, add_stamps, aperture_weights, as_quantity, psf_stamps,
                      trail_profile)

__all__ = ["OVERSCAN_COLUMNS", "SimulatedObservation", "night_sky", "simulate_observation"]

log = logging.getLogger(__name__)

#: Width of the overscan strip of simulated raw frames (``bias_level``), columns.
OVERSCAN_COLUMNS = 16


def _per_frame(value, n_frames, name):
    """One float per frame from a float or a sequence of ``n_frames`` floats."""
    array = np.asarray(value, dtype=float)
    if array.ndim == 0:
        return np.full(n_frames, float(array))
    if array.shape != (n_frames,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be one number or {n_frames} finite numbers (one per "
                         f"frame); got {value!r}")
    return array.copy()


def night_sky(n_frames, dark=200.0, dusk=4.0, dawn=3.0, scale=0.1):
    """Sky levels through a night: twilight at both ends, dark in the middle.

    ``sky = dark * (1 + (dusk - 1) exp(-f / scale) + (dawn - 1) exp(-(1 - f) / scale))``
    with ``f`` from 0 (first frame) to 1 (last): the first frame's sky is about ``dusk``
    times the dark sky, the last one's about ``dawn`` times (the Lowell night of the
    shared frames went from 8700 ADU to 2700 and back to 5700: ``dusk=3.2, dawn=2.1``).

    Parameters
    ----------
    n_frames : int
        Number of frames.
    dark : float
        Dark-sky level (electrons per pixel per frame).
    dusk, dawn : float
        Sky of the first and last frame, in units of ``dark``.
    scale : float
        E-folding of the twilight, as a fraction of the night.

    Returns
    -------
    sky : ndarray
        One level per frame, for `simulate_observation`'s ``sky``.

    Examples
    --------
    >>> sky = night_sky(11, dark=100.0)
    >>> [round(float(v)) for v in (sky[0], sky.min(), sky[-1])]
    [400, 103, 300]
    """
    f = np.linspace(0.0, 1.0, int(n_frames)) if n_frames > 1 else np.zeros(1)
    return dark * (1 + (dusk - 1) * np.exp(-f / scale) + (dawn - 1) * np.exp(-(1 - f) / scale))


class SimulatedObservation:
    """A simulated sequence of frames with a moving target, and its truth.

    Made by `simulate_observation`; see there for the model.

    Attributes
    ----------
    frames : list of `~astropy.nddata.CCDData`
        The frames (float32 data, unit, `~astropy.nddata.StdDevUncertainty`, TAN WCS,
        header with ``DATE-OBS``, ``EXPTIME``, ``GAIN``, ``RDNOISE``...;
        ``meta['SSFILE']`` is ``sim_000.fits``, ``sim_001.fits``...).
    truth : `~astropy.table.Table`
        One row per frame: ``frame``, ``file``, ``time`` (UTC mid-exposure `~astropy.time.Time`),
        ``ra``, ``dec`` (target at mid-exposure, deg), ``x``, ``y`` (target in that frame's
        pixels, 0-based), ``flux`` (target electrons in the frame), ``snr`` (target S/N in the
        frame, see `simulate_observation`), ``sky`` (e-/pixel), ``dither_ra``, ``dither_dec``
        (pointing offsets, arcsec, east and north), ``rotation`` (deg, east of north of the
        +y axis), ``n_cosmic_rays`` (events) and ``n_cr_pixels``.
    stars : `~astropy.table.Table`
        The star catalogue: ``ra``, ``dec`` (deg), ``flux`` (electrons per frame).
    cosmic_ray_masks : list of ndarray of bool
        Per frame, True where a cosmic ray deposited charge.
    cosmic_rays : `~astropy.table.Table`
        Every cosmic-ray pixel: ``frame``, ``x``, ``y``, ``electrons``.
    target_position : `~astropy.coordinates.SkyCoord`
        Target position at ``epoch``.
    epoch : `~astropy.time.Time`
        Mid-exposure time of the middle frame (index ``n_frames // 2``).
    ra_rate, dec_rate : `~astropy.units.Quantity`
        Target motion, dRA*cos(Dec)/dt and dDec/dt.
    psf_fwhm, psf_beta : float
        Moffat PSF FWHM (pixels) and power index.
    aperture_radius : float
        Radius (pixels) of the aperture in which ``snr`` is defined (one FWHM).
    sky : float or ndarray
        Sky level, electrons per pixel per frame (as given).
    read_noise, gain : float
        Electrons; electrons per ADU.
    pixel_scale : `~astropy.units.Quantity`
        Angle per pixel.
    exptime : `~astropy.units.Quantity`
        Exposure time.
    unit : `~astropy.units.Unit`
        Unit of the frames' data.
    """

    def __init__(self, **attributes):
        for key, value in attributes.items():
            setattr(self, key, value)

    def __len__(self):
        return len(self.frames)

    def __repr__(self):
        ny, nx = self.frames[0].shape if self.frames else (0, 0)
        return (f"<SimulatedObservation: {len(self.frames)} frames of {nx}x{ny} pixels, "
                f"target at {self.ra_rate.to_value(u.arcsec / u.hour):.3g}, "
                f"{self.dec_rate.to_value(u.arcsec / u.hour):.3g} arcsec/h, "
                f"S/N {np.median(self.truth['snr']):.3g} per frame>")

    @cached_property
    def ephemeris(self):
        """The target's motion as `shiftstack_ccd.ephemeris.Ephemeris.linear`.

        Its positions equal the ``ra``/``dec`` columns of ``truth`` at the ``time`` column.
        """
        from ..ephemeris import Ephemeris  # imported here: ephemeris is a higher concern

        return Ephemeris.linear(self.target_position, self.epoch, self.ra_rate, self.dec_rate)

    def target_at(self, times):
        """Return the target's sky position at ``times`` (the model the frames were made with).

        Parameters
        ----------
        times : `~astropy.time.Time`

        Returns
        -------
        position : `~astropy.coordinates.SkyCoord`
        """
        dt = (Time(times) - self.epoch).to(u.hour)
        return self.target_position.spherical_offsets_by(self.ra_rate * dt, self.dec_rate * dt)

    def write(self, directory, overwrite=False):
        """Write each frame to ``directory/<meta['SSFILE']>`` as FITS.

        Each file is written atomically (a temporary file renamed on success). If any
        target file exists and ``overwrite`` is False, nothing is written.

        Parameters
        ----------
        directory : str or `~pathlib.Path`
            Created if needed.
        overwrite : bool
            Replace existing files.

        Returns
        -------
        paths : list of `~pathlib.Path`

        Raises
        ------
        shiftstack_ccd.exceptions.OutputExistsError
            If a file exists and ``overwrite`` is False.
        """
        directory = Path(directory)
        paths = [directory / frame.meta["SSFILE"] for frame in self.frames]
        if not overwrite:
            existing = [str(path) for path in paths if path.exists()]
            if existing:
                raise OutputExistsError(
                    f"{existing[0]}: exists ({len(existing)} of the {len(paths)} files do); "
                    "pass overwrite=True to replace them or choose another directory.")
        for frame, path in zip(self.frames, paths):
            with atomic_output(path, overwrite=overwrite) as tmp:
                frame.write(tmp, format="fits", overwrite=True)
        return paths


def simulate_observation(n_frames=9, shape=(256, 256), pixel_scale=0.5 * u.arcsec,
                         center=None, start=None, exptime=120 * u.s, cadence=150 * u.s,
                         target_rate=(3.0, -1.5) * u.arcsec / u.hour, target_snr=3.0,
                         target_flux=None, target_position=None, fwhm=3.0, psf_beta=3.0,
                         sky=200.0, read_noise=5.0, gain=1.0, n_stars=60,
                         star_flux_range=(2e3, 2e5), dither=5.0, max_rotation=1.0 * u.deg,
                         cosmic_rays=True, unit="adu", with_uncertainty=True, noise=True,
                         object_name="SIMULATED TARGET", seed=0, transparency=1.0,
                         bias_level=None):
    """Simulate calibrated CCD frames of a star field with a moving target, with the truth.

    The frames are what a reduced (bias-, dark- and flat-corrected) sequence looks like:
    a flat sky, stars with a Moffat PSF, a target moving along a linear ephemeris, Poisson
    and read noise, cosmic rays, and a per-frame TAN WCS with random pointing offsets and
    small rotations.

    The model, frame by frame:

    * **Times.** Frame ``i`` starts at ``start + i * cadence`` and lasts ``exptime``; its
      mid-exposure time is the truth ``time``. The reference epoch is the mid-exposure time
      of the middle frame, ``n_frames // 2``.
    * **WCS.** TAN projection, ``CRPIX`` at the array centre, ``CRVAL`` at ``center`` offset
      by a random pointing dither (normal, ``dither`` pixels standard deviation in each of
      the east and north directions) and the CD matrix rotated by a random angle uniform in
      ``+/- max_rotation`` (the +y axis points ``rotation`` east of north; east is to the
      left).
    * **Stars.** ``n_stars`` is the expected number within the nominal field; the catalogue
      covers a margin around it at the same density so that dithered and rotated frames are
      uniformly filled. Fluxes follow N(>F) proportional to 1/F between ``star_flux_range``.
      Each star is placed through each frame's WCS.
    * **PSF.** A circular Moffat profile, ``(1 + r^2/alpha^2)^-beta`` with ``beta = psf_beta``
      and FWHM ``fwhm`` pixels, integrated over each pixel (3x3 Gauss-Legendre quadrature,
      accurate to ~1e-5 of the peak at FWHM 3, so centroids carry no pixel-phase bias),
      truncated to a square stamp outside which it holds < 0.1 % of its light and
      normalised so that the stamp holds the whole flux.
    * **Target.** At time ``t`` it is at
      ``target_position.spherical_offsets_by(ra_rate * (t - epoch), dec_rate * (t - epoch))``
      with ``(ra_rate, dec_rate) = target_rate`` (``ra_rate`` is dRA*cos(Dec)/dt), the
      convention of ``Ephemeris.linear``. Its trail during the exposure is the mean of PSFs at
      equally spaced times, at most 0.2 pixel apart (one PSF when the trail is shorter);
      slow targets are thus compact, fast ones trailed. The truth ``x``, ``y`` is the
      mid-exposure position, which is also the trail's centroid.
    * **Night.** ``sky``, ``fwhm`` and ``transparency`` may each be one value per frame
      (`night_sky` makes a sky with twilight at both ends); the transparency multiplies the
      light of the stars and the target (not the sky), as clouds and airmass do.
    * **Raw frames.** With ``bias_level`` (ADU) every pixel gets that bias and the frame
      gets an overscan strip of `OVERSCAN_COLUMNS` columns on the right (bias plus read
      noise), described by ``BIASSEC`` and ``TRIMSEC`` as on real raw frames; the WCS
      still describes the data pixels, which keep their positions.
    * **Noise.** The noiseless image in electrons (sky + stars + target) is replaced by a
      Poisson draw, Gaussian read noise is added, then cosmic rays, and the result is
      divided by ``gain`` when ``unit='adu'``. The uncertainty is
      ``sqrt(model + read_noise**2)`` (divided by the gain in ADU): exact for the sky, star
      and target light, blind to cosmic rays.
    * **Cosmic rays.** Per frame, a Poisson number of events (``cosmic_rays`` per 10^4
      pixels per 100 s of exposure; ``True`` means 2, about what HST's CCDs see; ground-based
      CCDs see less), half single pixels and half straight tracks of 2-6 pixels, with
      amplitudes between 5 and 100 times the sky-plus-read noise of a pixel.

    **Signal-to-noise.** The S/N of the target in a frame is that of the sum over a circular
    aperture of radius one FWHM centred on the target's mid-exposure position, with exact
    pixel-overlap weights ``w`` (photutils ``method='exact'``): ``sum(w * target) /
    sqrt(sum(w**2 * (model + read_noise**2)))`` in electrons, i.e. the signal over the
    standard deviation of that sum over noise realisations. The target's flux is the same in
    every frame; with ``target_snr`` it is solved so that the S/N in the middle frame, with
    sky and read noise only (no star in the aperture), is exactly ``target_snr``. The truth
    ``snr`` of each frame is computed from its full noiseless model (so it also counts any
    star in the aperture); with no star there it differs from ``target_snr`` by about 1 %
    at most, through the pixel phase of the aperture (which changes ``sum(w**2)`` and the
    enclosed fraction) and any change of the sky level.

    Parameters
    ----------
    n_frames : int
        Number of frames.
    shape : tuple of int
        ``(ny, nx)`` of each frame.
    pixel_scale : `~astropy.units.Quantity`
        Angle per pixel (``u.arcsec`` or ``u.arcsec / u.pix``).
    center : `~astropy.coordinates.SkyCoord`, optional
        Nominal pointing; default RA 150 deg, Dec 2 deg (ICRS).
    start : `~astropy.time.Time` or str, optional
        Start of the first exposure (UTC); default 2024-03-01T03:00:00.
    exptime, cadence : `~astropy.units.Quantity` or float
        Exposure time and time between frame starts (seconds if floats);
        ``cadence >= exptime``.
    target_rate : `~astropy.units.Quantity`
        ``(dRA*cos(Dec)/dt, dDec/dt)``, angular velocity.
    target_snr : float
        Target S/N per frame (defined above). Ignored when ``target_flux`` is given.
    target_flux : float or `~astropy.units.Quantity`, optional
        Target flux in electrons per frame, instead of ``target_snr``.
    target_position : `~astropy.coordinates.SkyCoord`, optional
        Target position at the epoch. Default: ``center`` offset by a random amount up to 5 %
        of the frame size in each direction (so it does not sit on a pixel centre).
    fwhm : float or sequence of float
        PSF FWHM in pixels; a sequence gives one value per frame (seeing).
    psf_beta : float
        Moffat power index (> 1; 3 is typical of ground-based seeing).
    sky : float or sequence of float
        Sky in electrons per pixel per frame; a sequence gives one value per frame.
    read_noise : float
        Read noise in electrons.
    gain : float
        Electrons per ADU.
    n_stars : int
        Expected number of stars in the nominal field.
    star_flux_range : tuple of float
        Smallest and largest star flux, electrons per frame.
    dither : float
        Standard deviation of the pointing offsets, pixels, per axis.
    max_rotation : `~astropy.units.Quantity` or float
        Largest rotation of a frame's WCS (degrees if a float).
    cosmic_rays : bool or float
        Add cosmic rays; a number sets their rate (events per 10^4 pixels per 100 s).
    unit : {'adu', 'electron'}
        Unit of the data.
    with_uncertainty : bool
        Attach a `~astropy.nddata.StdDevUncertainty`.
    noise : bool
        Draw Poisson and read noise. If False the frames are the noiseless model (cosmic rays
        are still added if asked); with the same seed, everything else is identical.
    object_name : str
        ``OBJECT`` header card.
    seed : int, `numpy.random.Generator` or None
        Seed of `numpy.random.default_rng`. The geometry, the noise and the cosmic rays use
        independent streams spawned from it.
    transparency : float or sequence of float
        Fraction of the stars' and target's light that reaches the detector, one value or
        one per frame (> 0).
    bias_level : float, optional
        Make raw frames: add this bias (ADU) and an overscan strip (see **Raw frames**).
        Needs ``unit='adu'``.

    Returns
    -------
    sim : `SimulatedObservation`
        ``sim.frames``, ``sim.truth``, ``sim.stars``, ``sim.cosmic_ray_masks``,
        ``sim.ephemeris`` and the parameters.

    Warns
    -----
    astropy.utils.exceptions.AstropyUserWarning
        If the target is outside a frame at mid-exposure.

    Examples
    --------
    >>> from shiftstack_ccd.datasets import simulate_observation
    >>> sim = simulate_observation(n_frames=3, shape=(64, 64), n_stars=5, target_snr=5.0,
    ...                            seed=1)
    >>> len(sim.frames), sim.frames[0].shape, sim.frames[0].unit
    (3, (64, 64), Unit("adu"))
    >>> sim.frames[1].header['DATE-OBS'], sim.frames[1].header['EXPTIME']
    ('2024-03-01T03:02:30.000000', 120.0)
    >>> print(sim.truth['time'][1].isot)
    2024-03-01T03:03:30.000
    >>> round(float(sim.truth['snr'][1]), 3)
    5.0
    """
    # ---- parameters -------------------------------------------------------------------
    n_frames = int(n_frames)
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1; got {n_frames}")
    if len(shape) != 2 or min(shape) < 8:
        raise ValueError(f"shape must be (ny, nx), each at least 8 pixels; got {shape!r}")
    ny, nx = int(shape[0]), int(shape[1])
    scale = u.Quantity(pixel_scale)
    if scale.unit.is_equivalent(u.arcsec / u.pix):
        scale = scale * u.pix
    scale = as_quantity(scale, u.arcsec, "pixel_scale")
    if scale <= 0:
        raise ValueError(f"pixel_scale must be positive; got {pixel_scale!r}")
    center = SkyCoord(150.0, 2.0, unit="deg") if center is None else SkyCoord(center)
    center = SkyCoord(center.icrs.ra, center.icrs.dec, frame="icrs")
    start = Time("2024-03-01T03:00:00", scale="utc") if start is None else Time(start)
    start = start.utc
    exptime = as_quantity(exptime, u.s, "exptime", u.s)
    cadence = as_quantity(cadence, u.s, "cadence", u.s)
    if exptime <= 0 or cadence < exptime:
        raise ValueError(f"need 0 < exptime <= cadence; got exptime={exptime}, "
                         f"cadence={cadence}")
    rate = as_quantity(target_rate, u.arcsec / u.hour, "target_rate")
    if rate.shape != (2,):
        raise ValueError(f"target_rate must be two rates (dRA*cos(Dec)/dt, dDec/dt); "
                         f"got {target_rate!r}")
    ra_rate, dec_rate = rate[0], rate[1]
    fwhm_given = fwhm
    fwhm = _per_frame(fwhm, n_frames, "fwhm")
    psf_beta = float(psf_beta)
    if np.any(fwhm <= 0) or psf_beta <= 1:
        raise ValueError(f"need fwhm > 0 and psf_beta > 1; got {fwhm_given}, {psf_beta}")
    transparency_given = transparency
    transparency = _per_frame(transparency, n_frames, "transparency")
    if np.any(transparency <= 0):
        raise ValueError(f"transparency must be > 0; got {transparency_given!r}")
    sky_given = sky
    sky = np.broadcast_to(np.asarray(sky, dtype=float), (n_frames,)).copy() \
        if np.ndim(sky) == 0 or len(sky) == n_frames else None
    if sky is None or np.any(sky < 0):
        raise ValueError(f"sky must be >= 0, one number or one per frame; got {sky_given!r}")
    read_noise, gain = float(read_noise), float(gain)
    if read_noise < 0 or gain <= 0:
        raise ValueError(f"need read_noise >= 0 and gain > 0; got {read_noise}, {gain}")
    flux_min, flux_max = (float(f) for f in star_flux_range)
    if not 0 < flux_min <= flux_max:
        raise ValueError(f"star_flux_range must be (min, max) with 0 < min <= max; "
                         f"got {star_flux_range!r}")
    n_stars, dither = int(n_stars), float(dither)
    if n_stars < 0 or dither < 0:
        raise ValueError(f"n_stars and dither must be >= 0; got {n_stars}, {dither}")
    max_rotation = as_quantity(max_rotation, u.deg, "max_rotation", u.deg)
    unit = u.Unit(unit)
    if unit not in (u.adu, u.electron):
        raise ValueError(f"unit must be 'adu' or 'electron'; got {unit!r}")
    if bias_level is not None and (unit != u.adu or not np.isfinite(float(bias_level))):
        raise ValueError(f"bias_level needs unit='adu' and a finite number; got {bias_level!r}")
    cr_rate = DEFAULT_CR_RATE if cosmic_rays is True else float(cosmic_rays or 0.0)
    if cr_rate < 0:
        raise ValueError(f"cosmic_rays must be a bool or a rate >= 0; got {cosmic_rays!r}")
    if target_flux is not None:
        target_flux = float(u.Quantity(target_flux, u.electron).value)
        if target_flux < 0:
            raise ValueError(f"target_flux must be >= 0; got {target_flux}")
    elif target_snr is None or target_snr < 0:
        raise ValueError(f"target_snr must be >= 0 (or give target_flux); got {target_snr!r}")

    rng_geometry, rng_noise, rng_cr = np.random.default_rng(seed).spawn(3)
    scale_deg = scale.to_value(u.deg)
    exptime_s, cadence_s = float(exptime.to_value(u.s)), float(cadence.to_value(u.s))
    aperture_radius = float(fwhm[n_frames // 2])
    half = stamp_half_size(float(fwhm.max()), psf_beta, float(fwhm.max()))
    ref = 0.5 * np.array([nx - 1, ny - 1])  # array centre, 0-based (x, y)

    # ---- times ------------------------------------------------------------------------
    offsets_s = np.arange(n_frames) * cadence_s
    starts = start + offsets_s * u.s
    mid_times = start + (offsets_s + exptime_s / 2) * u.s
    epoch = mid_times[n_frames // 2]

    # ---- geometry: pointings, rotations, target, stars ---------------------------------
    dithers = rng_geometry.normal(0.0, dither, (n_frames, 2)) * scale  # east, north
    rotations = rng_geometry.uniform(-1.0, 1.0, n_frames) * max_rotation
    if target_position is None:
        jitter = rng_geometry.uniform(-0.05, 0.05, 2) * np.array([nx, ny]) * scale
        target_position = center.spherical_offsets_by(jitter[0], jitter[1])
    target_position = SkyCoord(target_position)
    target_position = SkyCoord(target_position.icrs.ra, target_position.icrs.dec, frame="icrs")

    pointings = center.spherical_offsets_by(dithers[:, 0], dithers[:, 1])
    wcs_list = []
    for i in range(n_frames):
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.cunit = ["deg", "deg"]
        wcs.wcs.radesys = "ICRS"
        wcs.wcs.crval = [pointings[i].ra.deg, pointings[i].dec.deg]
        wcs.wcs.crpix = ref + 1.0
        cos, sin = np.cos(rotations[i]).value, np.sin(rotations[i]).value
        wcs.wcs.cd = scale_deg * np.array([[-cos, sin], [sin, cos]])
        wcs.pixel_shape = (nx, ny)
        wcs.wcs.set()
        wcs_list.append(wcs)

    # Star catalogue over a box that holds every dithered, rotated frame plus a stamp.
    margin = np.hypot(nx, ny) / 2 + 4 * dither + half
    box = 2 * margin
    n_catalogue = int(np.rint(n_stars * box * box / (nx * ny)))
    nominal = wcs_list[0].deepcopy()
    nominal.wcs.crval = [center.ra.deg, center.dec.deg]
    nominal.wcs.cd = scale_deg * np.array([[-1.0, 0.0], [0.0, 1.0]])
    nominal.wcs.set()
    star_px = ref + rng_geometry.uniform(-margin, margin, (n_catalogue, 2))
    star_ra, star_dec = nominal.wcs_pix2world(star_px[:, 0], star_px[:, 1], 0)
    # N(>F) ~ 1/F: 1/F is uniform between 1/max and 1/min.
    star_flux = 1.0 / rng_geometry.uniform(1.0 / flux_max, 1.0 / flux_min, n_catalogue)
    stars = Table([star_ra * u.deg, star_dec * u.deg, star_flux * u.electron],
                  names=("ra", "dec", "flux"))

    # Target positions: at mid-exposure, and at the sub-exposure times of the trail.
    trail_px = float(np.hypot(*rate.to_value(u.arcsec / u.s))) * exptime_s / scale.value
    n_sub = max(1, int(np.ceil(trail_px / TRAIL_STEP)))
    sub_s = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * exptime_s
    mid_s = (mid_times - epoch).to_value(u.s)
    dt = np.column_stack([mid_s[:, None] + sub_s[None, :], mid_s]) * u.s  # last: mid-time
    track = target_position.spherical_offsets_by(ra_rate * dt, dec_rate * dt)
    mid_positions = track[:, -1]
    target_xy = np.empty((n_frames, 2))
    profiles = []
    for i, wcs in enumerate(wcs_list):
        xs, ys = wcs.wcs_world2pix(track.ra.deg[i], track.dec.deg[i], 0)
        target_xy[i] = xs[-1], ys[-1]
        profiles.append(trail_profile(xs[:-1], ys[:-1], half, fwhm[i], psf_beta))
    outside = [i for i, (x, y) in enumerate(target_xy)
               if not (-0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5)]
    if outside:
        warnings.warn(f"the target is outside frames {outside} at mid-exposure; choose a "
                      "smaller target_rate, fewer frames or a larger shape", AstropyUserWarning)

    # Target flux: solve S/N = F a / sqrt(F b + c) = target_snr in the middle frame.
    if target_flux is None:
        profile, x0, y0 = profiles[n_frames // 2]
        xm, ym = target_xy[n_frames // 2]
        slices, weights = aperture_weights(xm - x0, ym - y0, aperture_radius, profile.shape)
        part = profile[slices] * transparency[n_frames // 2]
        a = np.sum(weights * part)
        b = np.sum(weights ** 2 * part)
        c = np.sum(weights ** 2) * (sky[n_frames // 2] + read_noise ** 2)
        s2 = float(target_snr) ** 2
        target_flux = (s2 * b + np.sqrt(s2 * s2 * b * b + 4 * a * a * s2 * c)) / (2 * a * a)

    # ---- frames -----------------------------------------------------------------------
    frames, masks, cr_rows, rows = [], [], [], []
    expected_cr = cr_rate * (nx * ny / 1e4) * (exptime_s / 100.0)
    for i, wcs in enumerate(wcs_list):
        model = np.full((ny, nx), sky[i])
        sx, sy = wcs.wcs_world2pix(star_ra, star_dec, 0)
        near = (sx > -half - 1) & (sx < nx + half) & (sy > -half - 1) & (sy < ny + half)
        if near.any():
            stamps, ix0, iy0 = psf_stamps(sx[near], sy[near], half, fwhm[i], psf_beta)
            add_stamps(model, stamps, ix0, iy0, star_flux[near] * transparency[i])

        profile, x0, y0 = profiles[i]
        slices, weights = aperture_weights(*target_xy[i], fwhm[i], (ny, nx))
        before = model[slices].copy() if slices is not None else None
        add_stamps(model, profile[None], [x0], [y0], [target_flux * transparency[i]])
        if slices is None:
            snr = 0.0
        else:
            signal = np.sum(weights * (model[slices] - before))
            snr = signal / np.sqrt(np.sum(weights ** 2 * (model[slices] + read_noise ** 2)))

        if noise:
            electrons = rng_noise.poisson(model).astype(float)
            electrons += rng_noise.normal(0.0, read_noise, model.shape)
        else:
            electrons = model.copy()
        mask = np.zeros((ny, nx), dtype=bool)
        n_events = 0
        if expected_cr > 0:
            index, charge, n_events = draw_cosmic_rays(rng_cr, (ny, nx), expected_cr,
                                                       np.sqrt(sky[i] + read_noise ** 2))
            electrons.flat[index] += charge
            mask.flat[index] = True
            cr_rows.append((np.full(index.size, i), index % nx, index // nx, charge))
        masks.append(mask)

        to_unit = 1.0 / gain if unit == u.adu else 1.0
        electrons *= to_unit
        if bias_level is not None:
            overscan = rng_noise.normal(0.0, read_noise, (ny, OVERSCAN_COLUMNS)) * to_unit
            electrons = np.hstack([electrons, overscan]) + float(bias_level)
        data = electrons.astype(np.float32)
        del electrons
        uncertainty = None
        if with_uncertainty:
            model += read_noise ** 2  # the model is not needed after this: work in place
            np.sqrt(model, out=model)
            model *= to_unit
            uncertainty = StdDevUncertainty(model.astype(np.float32))
        del model
        name = f"sim_{i:03d}.fits"
        header = fits.Header()
        header["OBJECT"] = object_name
        header["IMAGETYP"] = "object"
        header["TELESCOP"] = "shiftstack_ccd simulation"
        header["INSTRUME"] = "shiftstack_ccd simulation"
        header["DATE-OBS"] = (Time(starts[i], precision=6).isot, "UTC start of exposure")
        header["TIMESYS"] = "UTC"
        header["EXPTIME"] = (exptime_s, "[s] exposure time")
        header["GAIN"] = (gain if unit == u.adu else 1.0, "[e-/ADU] gain of the data")
        header["RDNOISE"] = (read_noise, "[e-] read noise")
        header["SIMFRAME"] = (i, "frame index in the simulation")
        if bias_level is not None:
            header["BIASSEC"] = (f"[{nx + 1}:{nx + OVERSCAN_COLUMNS},1:{ny}]", "overscan")
            header["TRIMSEC"] = (f"[1:{nx},1:{ny}]", "data")
        if isinstance(seed, (int, np.integer)):
            header["SIMSEED"] = (int(seed), "seed of simulate_observation")
        header["SSFILE"] = name
        header["HISTORY"] = "Simulated by shiftstack_ccd.datasets.simulate_observation"
        frames.append(CCDData(data, unit=unit, uncertainty=uncertainty, wcs=wcs, meta=header))
        rows.append((i, name, target_flux * transparency[i], snr, int(n_events),
                     int(mask.sum())))

    # ---- truth ------------------------------------------------------------------------
    index, names, fluxes, snrs, n_events, n_pixels = zip(*rows)
    truth = Table()
    truth["frame"] = np.array(index)
    truth["file"] = list(names)
    truth["time"] = mid_times
    truth["ra"] = mid_positions.ra.to(u.deg)
    truth["dec"] = mid_positions.dec.to(u.deg)
    truth["x"] = target_xy[:, 0]
    truth["y"] = target_xy[:, 1]
    truth["flux"] = np.array(fluxes) * u.electron
    truth["snr"] = np.array(snrs)
    truth["sky"] = sky * u.electron
    truth["fwhm"] = fwhm
    truth["transparency"] = transparency
    truth["dither_ra"] = dithers[:, 0].to(u.arcsec)
    truth["dither_dec"] = dithers[:, 1].to(u.arcsec)
    truth["rotation"] = rotations.to(u.deg)
    truth["n_cosmic_rays"] = np.array(n_events)
    truth["n_cr_pixels"] = np.array(n_pixels)
    truth.meta["epoch"] = epoch.isot
    truth.meta["comments"] = [
        "time: UTC mid-exposure; ra, dec, x, y: target at mid-exposure (x, y 0-based)",
        "snr: target S/N in a circular aperture of radius one FWHM (the frame's)",
        "flux: target electrons reaching the detector (times the frame's transparency)"]

    if cr_rows:
        cr = [np.concatenate(column) for column in zip(*cr_rows)]
    else:
        cr = [np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), np.zeros(0)]
    cosmic_rays = Table([cr[0].astype(int), cr[1].astype(int), cr[2].astype(int),
                         cr[3] * u.electron], names=("frame", "x", "y", "electrons"))

    log.debug("simulated %d frames of %dx%d, target flux %.4g e-", n_frames, nx, ny,
              target_flux)
    return SimulatedObservation(
        frames=frames, truth=truth, stars=stars, cosmic_ray_masks=masks,
        cosmic_rays=cosmic_rays, target_position=target_position, epoch=epoch,
        ra_rate=ra_rate, dec_rate=dec_rate,
        psf_fwhm=float(fwhm[0]) if np.ndim(fwhm_given) == 0 else fwhm, psf_beta=psf_beta,
        aperture_radius=aperture_radius,
        sky=float(sky[0]) if np.ndim(sky_given) == 0 else sky,
        read_noise=read_noise, gain=gain, pixel_scale=scale, exptime=exptime,
        cadence=cadence, unit=unit, seed=seed)
