# Licensed under a 3-clause BSD style license - see LICENSE
"""Injection of fake moving sources into real frames, with their truth.

`inject_moving_source` adds PSF-matched, trailed fakes to frames so that the whole chain
(stacking, detection, measurement) can be checked against a known answer on real data:
completeness, astrometric and photometric honesty.
"""

import logging

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.table import QTable, Table
from astropy.time import Time

from .._utils import as_header, frame_label, require_celestial_wcs
from ..exceptions import FrameError
from .._psf import stamp_half_size
from ._render import TRAIL_STEP, add_stamps, model_trail_profile, trail_profile

__all__ = ["inject_moving_source"]

log = logging.getLogger(__name__)

RATE_UNIT = u.arcsec / u.hour


def _fakes_table(position, epoch, ra_rate, dec_rate, flux, mag, zero_point):
    """One row per fake: ra, dec (deg), epoch, ra_rate, dec_rate, and flux or mag."""
    if isinstance(position, Table):
        table = position
        missing = [c for c in ("ra", "dec", "ra_rate", "dec_rate") if c not in table.colnames]
        if missing or not {"flux", "mag"} & set(table.colnames):
            raise ValueError(f"the fakes table needs columns ra, dec, ra_rate, dec_rate and flux "
                             f"or mag; it lacks {missing or ['flux/mag']}")
        coords = SkyCoord(u.Quantity(table["ra"], u.deg), u.Quantity(table["dec"], u.deg))
        epoch = table["epoch"] if "epoch" in table.colnames else epoch
        ra_rate, dec_rate = table["ra_rate"], table["dec_rate"]
        flux = table["flux"] if "flux" in table.colnames else None
        mag = table["mag"] if "mag" in table.colnames and flux is None else None
    else:
        if not isinstance(position, SkyCoord):
            raise ValueError(f"position must be a SkyCoord or a table of fakes; got "
                             f"{type(position).__name__}")
        coords = position.icrs
    coords = SkyCoord(np.atleast_1d(coords.icrs.ra), np.atleast_1d(coords.icrs.dec),
                      frame="icrs")
    n = len(coords)
    if epoch is None:
        raise ValueError("epoch (the time of position) is required")
    epoch = Time(epoch)
    epochs = Time(np.broadcast_to(epoch.utc.jd1, (n,)), np.broadcast_to(epoch.utc.jd2, (n,)),
                  format="jd", scale="utc")
    epochs.format = "isot"
    rates = []
    for name, rate in (("ra_rate", ra_rate), ("dec_rate", dec_rate)):
        if rate is None:
            raise ValueError(f"{name} is required")
        try:
            rate = u.Quantity(rate).to(RATE_UNIT)
        except u.UnitsError:
            raise ValueError(f"{name} must be an angular rate such as arcsec/hour; "
                             f"got {rate!r}") from None
        rates.append(np.broadcast_to(rate.value, (n,)).copy() * RATE_UNIT)
    if (flux is None) == (mag is None):
        raise ValueError("give exactly one of flux and mag")
    if mag is not None:
        if zero_point is None:
            raise ValueError("mag needs zero_point: the magnitude of one unit of the frames' "
                             "data (a flux of 1 in their unit)")
        mags = np.broadcast_to(np.asarray(u.Quantity(mag).value, dtype=float), (n,))
        fluxes = 10 ** (-0.4 * (mags - float(u.Quantity(zero_point).value)))
        flux_unit = None
    else:
        flux = u.Quantity(flux)
        flux_unit = None if flux.unit == u.dimensionless_unscaled else flux.unit
        fluxes = np.broadcast_to(flux.value.astype(float), (n,))
        mags = np.full(n, np.nan)
    if not np.all(np.isfinite(fluxes)) or np.any(fluxes < 0):
        raise ValueError(f"fake fluxes must be finite and >= 0; got {fluxes}")
    fakes = QTable()
    fakes["ra"] = coords.ra.to(u.deg)
    fakes["dec"] = coords.dec.to(u.deg)
    fakes["epoch"] = epochs
    fakes["ra_rate"], fakes["dec_rate"] = rates
    fakes["flux"] = fluxes
    fakes["mag"] = mags
    return fakes, flux_unit


def _electrons_per_unit(frame, gain, label):
    """Electrons per unit of the frame's data, for Poisson noise."""
    if gain is not None:
        return float(gain)
    unit, meta = frame.unit, frame.meta
    exptime = meta.get("EXPTIME")
    for base, needs in ((u.electron, ()), (u.adu, ("GAIN",)), (u.electron / u.s, ("EXPTIME",)),
                        (u.adu / u.s, ("GAIN", "EXPTIME"))):
        if unit.is_equivalent(base):
            missing = [key for key in needs if meta.get(key) is None]
            if missing:
                break
            factor = unit.to(base)
            if "GAIN" in needs:
                factor *= float(meta["GAIN"])
            if "EXPTIME" in needs:
                factor *= float(exptime)
            return factor
    raise FrameError(f"{label}: cannot tell how many electrons one {unit} is (no GAIN or "
                     "EXPTIME card for it); give gain= (electrons per unit of the data) for "
                     "Poisson noise")


def inject_moving_source(frames, position, epoch=None, ra_rate=None, dec_rate=None, flux=None,
                         *, mag=None, zero_point=None, fwhm=None, psf_beta=None,
                         psf="moffat", poisson=False, gain=None, seed=None):
    """Add fake moving sources, PSF-matched and trailed, to frames; return them and the truth.

    Each fake moves uniformly in the tangent plane at its position, as
    `~shiftstack_ccd.ephemeris.Ephemeris.linear` does: at time ``t`` it is at
    ``position.spherical_offsets_by(ra_rate * (t - epoch), dec_rate * (t - epoch))``. In
    each frame it is rendered as the mean of PSFs at equally spaced sub-exposure times
    (at most 0.2 pixel apart) over the exposure (mid-exposure time from
    `~shiftstack_ccd.frames.mid_exposure_time`, length ``EXPTIME``), each placed through the
    frame's own WCS (distortions included), so a fake is trailed as a real mover would be.

    The PSF is by default a pixel-integrated Moffat: with ``fwhm`` (pixels) and ``psf_beta``
    given it is that one; otherwise FWHM and beta are fitted, frame by frame, to the frame's
    bright isolated stars (the same pixel-integrated model), so the fakes look like the
    stars. With ``psf='empirical'`` it is each frame's effective PSF, built from the same
    stars by photutils' `~photutils.psf.EPSFBuilder` (the stars' own halo, asymmetries and
    all); a photutils PSF model given as ``psf`` is used as it is in every frame.

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData` or paths
        The frames (read with `~shiftstack_ccd.frames.read_frames` if paths); each needs a
        celestial WCS and a mid-exposure time. They are not modified.
    position : `~astropy.coordinates.SkyCoord` or `~astropy.table.Table`
        Position(s) of the fake(s) at ``epoch``. A table holds several fakes, one a row,
        with columns ``ra``, ``dec`` (deg), ``ra_rate``, ``dec_rate`` (angular rates) and
        ``flux`` or ``mag``, and optionally ``epoch``; the other arguments then default to
        those columns.
    epoch : `~astropy.time.Time`
        Time of ``position``.
    ra_rate, dec_rate : `~astropy.units.Quantity`
        ``dRA*cos(Dec)/dt`` and ``dDec/dt`` (one value, or one per fake).
    flux : float or `~astropy.units.Quantity`, optional
        Total flux of each fake in one frame, in the frames' unit (counts, or counts per
        second for rate images). A quantity must be in that unit.
    mag : float, optional
        Instead of ``flux``: a magnitude, with ``zero_point`` the magnitude of a flux of 1 in
        the frames' unit (``flux = 10**(-0.4 * (mag - zero_point))``).
    zero_point : float, optional
        See ``mag``.
    fwhm : float, optional
        PSF FWHM in pixels (default: fitted to each frame's stars).
    psf_beta : float, optional
        Moffat power index (default: fitted with the FWHM, or 3 when ``fwhm`` is given).
    psf : {'moffat', 'empirical'} or a photutils PSF model
        The fakes' PSF (see above). A model (e.g. `~photutils.psf.ImagePSF`) is evaluated
        at pixel centres, ``model.evaluate(x, y, flux, x_0, y_0)``, so it must be
        pixel-integrated already, as an effective PSF is; it needs ``data`` and
        ``oversampling`` (its footprint) like `~photutils.psf.ImagePSF`.
    poisson : bool
        Add the fakes' photon noise (Poisson in electrons; the gain comes from ``gain``, the
        ``GAIN`` card for ADU, ``EXPTIME`` for rates) and add its variance to the frames'
        uncertainty. Without it the fakes are noiseless and the uncertainty is unchanged.
    gain : float, optional
        Electrons per unit of the data, overriding the header.
    seed : int or `numpy.random.Generator`, optional
        Seed of the Poisson noise.

    Returns
    -------
    frames : list of `~astropy.nddata.CCDData`
        New frames with the fakes added, each recording them in ``HISTORY`` and ``SSNFAKE``.
    truth : `~astropy.table.QTable`
        One row per fake and frame: ``fake``, ``frame``, ``file``, ``time`` (UTC
        mid-exposure), ``ra``, ``dec`` (the fake at mid-exposure, deg), ``x``, ``y`` (its
        0-based pixel in the frame, also the centroid of its trail), ``flux`` (in the frame,
        frames' unit), ``mag``, ``trail`` (trail length, pixels), ``fwhm``, ``beta`` (the
        Moffat used, or fitted to the stars beside an empirical PSF; NaN for a model given)
        and ``on_frame``. ``truth.meta['fakes']`` is the table of fakes,
        ``truth.meta['psf']`` the kind of PSF.

    Raises
    ------
    FrameError
        A frame without WCS or time, or whose PSF cannot be measured (give ``fwhm``).
    ValueError
        Inconsistent parameters (both or neither of flux and mag, mag without zero point,
        a flux quantity in another unit than the frames').

    Examples
    --------
    >>> import astropy.units as u
    >>> from shiftstack_ccd.datasets import inject_moving_source, simulate_observation
    >>> sim = simulate_observation(n_frames=3, shape=(64, 64), n_stars=0, target_flux=0,
    ...                            noise=False, cosmic_rays=False, seed=1)
    >>> frames, truth = inject_moving_source(sim.frames, sim.target_position, sim.epoch,
    ...                                      36 * u.arcsec / u.hour, 0 * u.arcsec / u.hour,
    ...                                      flux=1000.0, fwhm=3.0)
    >>> round(float(frames[1].data.sum() - sim.frames[1].data.sum()))
    1000
    >>> [round(float(t), 1) for t in truth["trail"]]
    [2.4, 2.4, 2.4]
    """
    from ..frames import mid_exposure_time, read_frames

    fakes, flux_unit = _fakes_table(position, epoch, ra_rate, dec_rate, flux, mag, zero_point)
    if isinstance(frames, (str, CCDData)) or not hasattr(frames, "__iter__"):
        frames = [frames]
    frames = list(frames)
    if not all(isinstance(f, CCDData) for f in frames):
        frames = read_frames(frames)
    if psf_beta is not None and float(psf_beta) <= 1:
        raise ValueError(f"psf_beta must be > 1; got {psf_beta}")
    if fwhm is not None and float(fwhm) <= 0:
        raise ValueError(f"fwhm must be > 0 pixels; got {fwhm}")
    kind = psf if isinstance(psf, str) else "model"
    usable = all(hasattr(psf, a) for a in ("evaluate", "data", "oversampling"))
    if kind not in ("moffat", "empirical", "model") or (kind == "model" and not usable):
        raise ValueError(f"psf must be 'moffat', 'empirical' or a photutils PSF model such as "
                         f"ImagePSF; got {psf!r}")
    rng = np.random.default_rng(seed)
    out, rows = [], []
    for index, frame in enumerate(frames):
        label = frame_label(frame, index)
        wcs = require_celestial_wcs(frame, "inject_moving_source", index)
        if flux_unit is not None and flux_unit != frame.unit:
            raise ValueError(f"{label}: flux is in {flux_unit} but the frame is in "
                             f"{frame.unit}; give it in the frame's unit")
        t_mid = mid_exposure_time(frame)
        exptime = float(frame.meta.get("EXPTIME", 0.0) or 0.0)
        model_psf = psf if kind == "model" else None
        if kind == "empirical":
            from .._psf import empirical_psf
            model_psf, fitted = empirical_psf(frame)
            frame_fwhm, beta = fitted["fwhm"], fitted["beta"]
            description = f"empirical (ePSF of {len(fitted['stars']['x'])} stars)"
        elif kind == "model":
            frame_fwhm, beta = (float(fwhm) if fwhm is not None else np.nan), np.nan
            description = f"model {type(psf).__name__}"
        elif fwhm is None:
            from .._psf import fit_psf
            fitted = fit_psf(frame)
            frame_fwhm, beta = fitted["fwhm"], fitted["beta"]
        else:
            frame_fwhm, beta = float(fwhm), float(psf_beta) if psf_beta is not None else 3.0
        if model_psf is None:
            half = stamp_half_size(frame_fwhm, beta, 0.0)
            description = f"Moffat FWHM {frame_fwhm:.3f} px beta {beta:.2f}"
        else:
            half = int(np.ceil(max(np.shape(model_psf.data)) / min(model_psf.oversampling) / 2))
        model = np.zeros(frame.shape)
        for k, fake in enumerate(fakes):
            origin = SkyCoord(fake["ra"], fake["dec"], frame="icrs")
            mid_dt = (t_mid - fake["epoch"]).to(u.hour)
            rate = np.hypot(fake["ra_rate"], fake["dec_rate"])
            scale = _pixel_scale(wcs, origin)
            trail_px = float((rate * exptime * u.s / scale).decompose())
            n_sub = max(1, int(np.ceil(trail_px / TRAIL_STEP)))
            sub = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * exptime * u.s
            dt = np.concatenate([(mid_dt + sub).to(u.hour), [mid_dt]])
            track = origin.spherical_offsets_by(fake["ra_rate"] * dt, fake["dec_rate"] * dt)
            xs, ys = wcs.world_to_pixel(track)
            xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
            x, y = float(xs[-1]), float(ys[-1])
            ny, nx = frame.shape
            on_frame = bool(-0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5)
            if np.all(np.isfinite(xs)) and (-half - trail_px < x < nx + half + trail_px) \
                    and (-half - trail_px < y < ny + half + trail_px):
                profile, x0, y0 = trail_profile(xs[:-1], ys[:-1], half, frame_fwhm, beta) \
                    if model_psf is None else model_trail_profile(model_psf, xs[:-1], ys[:-1])
                add_stamps(model, profile[None], [x0], [y0], [fake["flux"]])
            rows.append((k, index, label, t_mid, track[-1].ra.deg, track[-1].dec.deg, x, y,
                         float(fake["flux"]), float(fake["mag"]), trail_px, frame_fwhm, beta,
                         on_frame))
        out.append(_add_model(frame, model, poisson, gain, rng, label, fakes, description))
    names = ("fake", "frame", "file", "time", "ra", "dec", "x", "y", "flux", "mag", "trail",
             "fwhm", "beta", "on_frame")
    columns = list(zip(*rows))
    truth = QTable()
    for name, column in zip(names, columns):
        truth[name] = Time(list(column)) if name == "time" else np.array(column)
    truth["ra"].unit = truth["dec"].unit = u.deg
    truth.meta["fakes"] = fakes
    truth.meta["psf"] = kind
    truth.meta["comments"] = ["x, y: 0-based pixel of the fake at mid-exposure in the frame; "
                              "flux in the frames' unit; trail, fwhm in pixels"]
    log.info("injected %d fake(s) into %d frame(s)", len(fakes), len(frames))
    return out, truth


def _pixel_scale(wcs, position):
    """Local pixel scale (angle per pixel, geometric mean) at a sky position."""
    x, y = wcs.world_to_pixel(position)
    corners = wcs.pixel_to_world([x, x + 1, x], [y, y, y + 1])
    dx = corners[0].separation(corners[1])
    dy = corners[0].separation(corners[2])
    return np.sqrt(dx * dy).to(u.arcsec)


def _add_model(frame, model, poisson, gain, rng, label, fakes, description):
    """A new frame: data + model (with Poisson noise if asked), uncertainty and header."""
    data = np.asarray(frame.data, dtype=float) + model
    uncertainty = frame.uncertainty
    if poisson and np.any(model > 0):
        per_unit = _electrons_per_unit(frame, gain, label)
        electrons = model * per_unit
        data += (rng.poisson(electrons) - electrons) / per_unit
        if uncertainty is not None:
            variance = uncertainty.represent_as(StdDevUncertainty).array.astype(float) ** 2
            uncertainty = StdDevUncertainty(
                np.sqrt(variance + model / per_unit).astype(frame.data.dtype))
    elif uncertainty is not None:
        uncertainty = uncertainty.__class__(np.array(uncertainty.array, copy=True))
    dtype = frame.data.dtype if np.issubdtype(frame.data.dtype, np.floating) else np.float32
    header = as_header(frame.meta)
    header["SSNFAKE"] = (int(header.get("SSNFAKE", 0)) + len(fakes), "fake sources injected")
    for fake in fakes:
        header.add_history(
            f"shiftstack_ccd: fake injected at RA {fake['ra'].to_value(u.deg):.7f} Dec "
            f"{fake['dec'].to_value(u.deg):+.7f} at {fake['epoch'].utc.isot} UTC, rates "
            f"{fake['ra_rate'].to_value(RATE_UNIT):.4f} {fake['dec_rate'].to_value(RATE_UNIT):.4f}"
            f" arcsec/h, flux {float(fake['flux']):.6g} {frame.unit}")
    header.add_history(f"shiftstack_ccd: fakes' PSF {description}"
                       f"{', Poisson noise' if poisson else ', noiseless'}")
    mask = None if frame.mask is None else np.array(frame.mask, copy=True)
    return CCDData(data.astype(dtype), unit=frame.unit, wcs=frame.wcs.deepcopy(),
                   uncertainty=uncertainty, mask=mask, meta=header)
