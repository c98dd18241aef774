# Licensed under a 3-clause BSD style license - see LICENSE
"""Measuring the target on a stack: detection, PSF photometry, astrometry, honest errors.

`measure_target` turns a `~shiftstack_ccd.stack.StackResult` into a table of measurements,
one row per target: where it is (RA, Dec at the stack's reference time, with errors), how
bright (flux, magnitude with a zero point), how sure (S/N, detected or not, 5-sigma limit).

How, for each target:

1. **PSF.** A pixel-integrated Moffat is fitted to the bright isolated stars of the sky
   stack (where the stars are round); the target's model is that PSF trailed by the
   target's motion during one exposure (known from the stack's per-frame table).
2. **Noise.** The autocovariance of the stack's normalised empty-sky residual gives the
   variance of any linear measurement, correlations from resampling included, and whatever
   the scale of the stack's reported uncertainty (`shiftstack_ccd._noise`).
3. **Detection.** The PSF matched filter's S/N is searched within the ephemeris' 3-sigma
   ellipse around the prediction (``search_radius`` otherwise) for its peak.
4. **Fit.** `photutils.psf.PSFPhotometry` fits flux and position there, on the stack minus
   a local background (sigma-clipped annulus). Below ``snr_threshold`` the flux is
   measured at the predicted position instead (forced photometry) and the target is not
   detected. The errors are the exact covariance of the linearised least-squares estimate
   under the measured noise (a sandwich estimate), background estimate included.
5. **Flux scale.** The PSF flux is aperture-corrected to the light in a large aperture
   around the sky stack's stars (the whole PSF, whatever the model misses in the wings); an
   aperture flux beside it is corrected by the stars' curve of growth.
6. **Astrometry.** Pixel to sky through the stack's WCS; the position errors add the fit's,
   the WCS solution's (``wcs_error``, by default from the frames' astrometric residuals
   recorded in the stack header) in quadrature.
7. **Photometric calibration.** A zero point (given, or from a reference catalogue matched
   against the sky stack's stars, `zero_point_from_catalog`) gives magnitudes.
"""

import logging
import warnings

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import StdDevUncertainty
from astropy.stats import sigma_clip
from astropy.table import QTable
from astropy.time import Time

from ._noise import measurement_covariance, normalised_residual_covariance
from ._psf import fit_psf, moffat_integrated
from .exceptions import FrameError, MeasurementError

__all__ = ["measure_target", "summary_line"]

log = logging.getLogger(__name__)

#: Oversampling of the PSF image handed to photutils.
_OVERSAMPLING = 4
#: Largest step between the sub-exposure positions of a trailed model, pixels.
_TRAIL_STEP = 0.2


class _Image:
    """Data, standard deviation and bad-pixel mask of an image, as float arrays."""

    def __init__(self, ccd, coverage=None):
        self.data = np.asarray(ccd.data, dtype=float)
        if ccd.uncertainty is None:
            raise FrameError("stack: has no uncertainty; measure_target needs the stack's "
                             "noise (shift_and_stack always gives one).")
        self.sigma = np.asarray(ccd.uncertainty.represent_as(StdDevUncertainty).array,
                                dtype=float)
        bad = ~np.isfinite(self.data) | ~np.isfinite(self.sigma) | (self.sigma <= 0)
        if ccd.mask is not None:
            bad |= np.asarray(ccd.mask, dtype=bool)
        if coverage is not None:
            bad |= np.asarray(coverage) <= 0
        self.bad = bad


class _Stack(_Image):
    """The arrays and geometry of a stack that a measurement needs."""

    def __init__(self, result):
        stack = result.stack
        wcs = getattr(stack, "wcs", None)
        if wcs is None or not wcs.has_celestial:
            raise FrameError("stack: has no celestial WCS; cannot measure positions on it. "
                             "Stack frames that have a WCS (shift_and_stack gives its "
                             "output one).")
        self.wcs = wcs.celestial
        super().__init__(stack, result.coverage)
        self.meta = stack.meta
        self.unit = stack.unit
        self.coverage = np.asarray(result.coverage) if result.coverage is not None else None
        self.sky = result.sky_stack
        self.table = result.table
        self.time = _reference_time(result)
        self.n_frames = len(result.table) if result.table is not None else \
            int(self.meta.get("NCOMBINE", 1))

    def pixel_scale(self, x, y):
        """Local 2x2 Jacobian d(east, north)/d(x, y), arcsec per pixel, at a pixel."""
        centre = self.wcs.pixel_to_world(x, y)
        jac = np.empty((2, 2))
        for k, (dx, dy) in enumerate(((0.5, 0.0), (0.0, 0.5))):
            plus = self.wcs.pixel_to_world(x + dx, y + dy)
            minus = self.wcs.pixel_to_world(x - dx, y - dy)
            east_p, north_p = centre.spherical_offsets_to(plus)
            east_m, north_m = centre.spherical_offsets_to(minus)
            jac[0, k] = (east_p - east_m).to_value(u.arcsec)
            jac[1, k] = (north_p - north_m).to_value(u.arcsec)
        return jac


def _reference_time(result):
    frame = getattr(result, "target_frame", None)
    if frame is not None:
        return Time(frame.reference_time).utc
    meta = result.stack.meta
    if "SSREFT" in meta:
        return Time(meta["SSREFT"], scale="utc")
    if "DATE-AVG" in meta:
        return Time(meta["DATE-AVG"], scale="utc")
    raise FrameError("stack: its header says at what time the target is where it is "
                     "(no SSREFT or DATE-AVG card); cannot give an epoch.")


def _predicted_positions(result, stack, position):
    if position is not None:
        coords = SkyCoord(position)
        return SkyCoord(np.atleast_1d(coords.icrs.ra), np.atleast_1d(coords.icrs.dec),
                        frame="icrs")
    frame = getattr(result, "target_frame", None)
    if frame is not None:
        centre = frame.center
    elif "SSTRA" in stack.meta and "SSTDEC" in stack.meta:
        centre = SkyCoord(float(stack.meta["SSTRA"]) * u.deg,
                          float(stack.meta["SSTDEC"]) * u.deg)
    else:
        raise FrameError("stack: no predicted target position (no SSTRA/SSTDEC cards); give "
                         "position= to say where to look.")
    return SkyCoord([centre.icrs.ra], [centre.icrs.dec], frame="icrs")


def _trail_vector(stack):
    """The target's motion during one exposure, in stack pixels (dx, dy)."""
    table = stack.table
    exptotal = stack.meta.get("EXPTOTAL")
    if table is None or len(table) < 2 or exptotal is None or \
            not {"dx", "dy", "mjd_mid"} <= set(table.colnames):
        return 0.0, 0.0
    t = np.asarray(table["mjd_mid"], dtype=float) * 86400.0
    if np.ptp(t) <= 0:
        return 0.0, 0.0
    exptime = float(exptotal) / len(table)
    rate_x = np.polyfit(t - t.mean(), np.asarray(table["dx"], dtype=float), 1)[0]
    rate_y = np.polyfit(t - t.mean(), np.asarray(table["dy"], dtype=float), 1)[0]
    return rate_x * exptime, rate_y * exptime


class _Model:
    """The target's PSF (trailed), as a photutils `~photutils.psf.ImagePSF`."""

    def __init__(self, fwhm, beta, trail=(0.0, 0.0)):
        from photutils.psf import ImagePSF

        from .datasets._render import stamp_half_size
        self.fwhm, self.beta, self.trail = float(fwhm), float(beta), trail
        length = float(np.hypot(*trail))
        half = stamp_half_size(self.fwhm, self.beta, 0.0) + int(np.ceil(length / 2)) + 1
        grid = np.arange(-half * _OVERSAMPLING, half * _OVERSAMPLING + 1) / _OVERSAMPLING
        xx, yy = np.meshgrid(grid, grid)
        n_sub = max(1, int(np.ceil(length / _TRAIL_STEP)))
        steps = (np.arange(n_sub) + 0.5) / n_sub - 0.5
        image = np.zeros(xx.shape)
        for s in steps:
            image += moffat_integrated(xx, yy, s * trail[0], s * trail[1], self.fwhm, self.beta)
        image *= _OVERSAMPLING ** 2 / image.sum()  # unit flux within the model
        centre = (len(grid) - 1) / 2
        self.psf = ImagePSF(image, origin=(centre, centre), oversampling=_OVERSAMPLING)
        # fit box: the core and the trail; background annulus beyond the model's wings
        self.fit_half = int(np.ceil(1.5 * self.fwhm + length / 2)) + 1
        self.r_in = max(self.fit_half + 2.0, 3.0 * self.fwhm + length / 2)
        self.r_out = self.r_in + max(5.0, 2.0 * self.fwhm)
        self.aperture = max(1.5, self.fwhm) + length / 2

    def image(self, xx, yy, x, y, flux=1.0):
        return flux * self.psf.evaluate(xx, yy, 1.0, x, y)


def measure_target(result, position=None, *, catalog=None, band=None, zero_point=None,
                   zero_point_err=0.0, search_radius=None, snr_threshold=5.0, wcs_error=None,
                   fwhm=None, psf_beta=None):
    """Detect and measure the target (or targets) on a stack.

    Parameters
    ----------
    result : `~shiftstack_ccd.stack.StackResult` or str
        The stack (as `~shiftstack_ccd.stack.shift_and_stack` returns it, or a file written
        by ``result.write``).
    position : `~astropy.coordinates.SkyCoord`, optional
        Predicted position(s) at the stack's reference time; one row of output each.
        Default: the stack's target (its centre pixel).
    catalog : `~astropy.table.Table` or str, optional
        A reference catalogue of the field's stars (``ra``, ``dec`` in deg and a magnitude
        column named ``band`` or ``mag``), or ``'gaia'`` (Gaia DR3 G through astroquery,
        cached): gives the zero point (see `zero_point_from_catalog`).
    band : str, optional
        Photometric band of the magnitudes (the catalogue's column, and ADES ``band``).
        Required with ``zero_point``.
    zero_point, zero_point_err : float, optional
        Magnitude of a flux of 1 (the stack's unit) and its error, instead of a catalogue.
    search_radius : `~astropy.units.Quantity` or float, optional
        Radius around the prediction searched for the target (angle, or pixels if a float).
        Default: the ephemeris' 3-sigma ellipse when the stack's ephemeris has an
        uncertainty, else twice the PSF's FWHM; never less than one FWHM.
    snr_threshold : float
        S/N below which the target is reported as not detected.
    wcs_error : `~astropy.units.Quantity`, optional
        1-sigma error of the stack's WCS (per axis, on the sky). Default: the ``SSWCSRMS``
        card of the stack (the frames' astrometric residuals), else 0.
    fwhm, psf_beta : float, optional
        The PSF (pixels, Moffat index) if it cannot be fitted to the sky stack's stars.

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per target: ``time`` (UTC, the stack's reference time), ``ra``, ``dec``
        (deg), ``ra_err``, ``dec_err`` (arcsec, 1 sigma, ``ra_err`` on the sky), ``x``,
        ``y``, ``x_err``, ``y_err`` (stack pixels, fit only), ``flux``, ``flux_err`` (stack
        unit, whole PSF), ``snr``, ``detected``, ``offset`` (arcsec from the prediction),
        ``aperture_flux``, ``aperture_flux_err``, ``mag``, ``mag_err`` (NaN without zero
        point; for a non-detection ``mag`` is the 5-sigma limit and ``mag_err`` NaN),
        ``flux_limit`` (5 sigma, stack unit), ``mag_limit``, ``fwhm`` (arcsec),
        ``predicted_ra``, ``predicted_dec``. ``meta`` holds the band, the zero point, the
        PSF, the aperture correction, the noise calibration and the number of frames.

    Raises
    ------
    FrameError
        A stack without WCS, uncertainty or epoch; a target off the stack; a PSF that cannot
        be measured.
    MeasurementError
        A zero point without a band; a catalogue with no star in the field.
    """
    from .stack import StackResult

    if isinstance(result, (str, bytes)) or hasattr(result, "__fspath__"):
        result = StackResult.read(result)
    if zero_point is not None and not band:
        raise MeasurementError("a zero point needs its band (band='V', 'r', 'G', ...): a magnitude "
                               "without one cannot be reported")
    stack = _Stack(result)
    predicted = _predicted_positions(result, stack, position)
    px, py = (np.atleast_1d(np.asarray(v, dtype=float))
              for v in stack.wcs.world_to_pixel(predicted))
    ny, nx = stack.data.shape
    for x, y in zip(px, py):
        xi, yi = int(round(x)), int(round(y))
        if not (0 <= xi < nx and 0 <= yi < ny) or stack.bad[yi, xi]:
            raise FrameError(f"stack: the target is not on the stack (predicted pixel "
                             f"x={x:.1f}, y={y:.1f} of {nx} x {ny}"
                             f"{'' if not (0 <= xi < nx and 0 <= yi < ny) else ', no data there'}"
                             ").")

    psf = _stack_psf(stack, px, py, fwhm, psf_beta)
    model = _Model(psf["fwhm"], psf["beta"], _trail_vector(stack))
    star_model = _Model(psf["fwhm"], psf["beta"])
    cov, n_noise = _noise_model(stack, model, px, py)
    apcor = _aperture_corrections(stack, star_model, psf, model.aperture)

    zp, zp_err, zp_meta = None, 0.0, {}
    if catalog is not None:
        from .zeropoint import zero_point_from_catalog
        zp_meta = zero_point_from_catalog(result.sky_stack if result.sky_stack is not None
                                          else result.stack, catalog, band=band,
                                          fwhm=psf["fwhm"])
        zp, zp_err, band = zp_meta["zero_point"], zp_meta["zero_point_err"], zp_meta["band"]
    elif zero_point is not None:
        zp, zp_err = float(zero_point), float(zero_point_err)

    wcs_sigma = _wcs_error(stack, wcs_error)
    eph_sigma = _ephemeris_sigma(result, stack.time)
    rows = []
    for k, (x0, y0) in enumerate(zip(px, py)):
        jac = stack.pixel_scale(x0, y0)
        region = _search_region(jac, eph_sigma, search_radius, model.fwhm)
        row = _measure_one(stack, model, cov, x0, y0, region, snr_threshold, apcor)
        row["predicted"] = predicted[k]
        row["jac"] = stack.pixel_scale(row["x"], row["y"])
        rows.append(row)
    table = _output_table(stack, rows, zp, zp_err, band, wcs_sigma, model)
    table.meta.update({
        "band": band, "zero_point": zp, "zero_point_err": zp_err,
        "psf_fwhm_pix": model.fwhm, "psf_beta": model.beta, "psf_stars": psf.get("n_stars"),
        "trail_pix": float(np.hypot(*model.trail)),
        "aperture_correction": apcor["psf"], "aperture_correction_err": apcor["psf_err"],
        "noise_ratio": [r["noise_ratio"] for r in rows], "noise_pixels": n_noise,
        "n_frames": stack.n_frames, "wcs_error_arcsec": wcs_sigma,
        "exptime": float(stack.meta.get("EXPTOTAL", np.nan)) / max(stack.n_frames, 1),
        **{f"catalog_{k}": v for k, v in zp_meta.items() if k not in ("matches",)}})
    for row in table:
        log.info("%s", summary_line(row, table.meta))
    return table


def _stack_psf(stack, px, py, fwhm, beta):
    if fwhm is not None:
        return {"fwhm": float(fwhm), "beta": float(beta) if beta is not None else 3.0,
                "n_stars": 0, "stars": None}
    image = stack.sky
    if image is None:
        raise FrameError("stack: no sky stack to measure the stars' PSF on; give fwhm= (and "
                         "psf_beta=), or stack with sky_stack=True.")
    exclude = [(x, y, 10.0) for x, y in zip(px, py)]
    try:
        psf = fit_psf(image, exclude=exclude)
    except FrameError as exc:
        raise FrameError(f"sky stack: {exc}".replace("image: ", "")) from None
    if beta is not None:
        psf["beta"] = float(beta)
    return psf


def _noise_model(stack, model, px, py):
    """Normalised-residual autocovariance, measured away from the targets and sources."""
    from .photometry import source_mask

    usable = ~stack.bad
    if stack.coverage is not None:  # where as many frames overlap as at the targets
        at_targets = min(int(stack.coverage[int(round(y)), int(round(x))])
                         for x, y in zip(px, py))
        usable &= stack.coverage >= at_targets
    masked = np.where(stack.bad, np.nan, stack.data)
    from astropy.nddata import CCDData
    usable &= ~source_mask(CCDData(masked, unit=stack.unit, mask=stack.bad), dilate=3)
    yy, xx = np.indices(stack.data.shape)
    for x, y in zip(px, py):
        usable &= np.hypot(xx - x, yy - y) > model.r_out + 2
    if usable.sum() < 2000:
        raise FrameError(f"stack: only {int(usable.sum())} empty-sky pixels where the target "
                         "is; cannot measure the noise (make a larger stack, size=...).")
    # every pixel pair of a measurement (fit box and background annulus): the background
    # subtraction cancels the slow part of the noise only if its covariances are all counted
    max_lag = 2 * (int(np.ceil(model.r_out)) + 1)
    return normalised_residual_covariance(stack.data, stack.sigma, usable, max_lag,
                                          box=int(max(32, 10 * model.fwhm)))


def _ephemeris_sigma(result, time):
    frame = getattr(result, "target_frame", None)
    if frame is None:
        return None
    try:
        sigmas = frame.ephemeris.uncertainty_at(time)
    except Exception:  # an ephemeris that cannot tell is no reason to refuse the measurement
        return None
    if sigmas is None:
        return None
    return tuple(float(s.to_value(u.arcsec)) for s in sigmas)


def _search_region(jac, eph_sigma, search_radius, fwhm):
    """A function of pixel offsets (dx, dy) -> inside the search region."""
    scale = float(np.sqrt(abs(np.linalg.det(jac))))  # arcsec per pixel
    floor = max(fwhm, 1.0) * scale  # never less than one FWHM, arcsec
    if search_radius is not None:
        radius = u.Quantity(search_radius)
        radius = radius.value * scale if radius.unit == u.dimensionless_unscaled \
            else radius.to_value(u.arcsec)
        a = b = max(radius, floor)
    elif eph_sigma is not None:
        a, b = (max(3.0 * s, floor) for s in eph_sigma)
    else:
        a = b = floor

    def inside(dx, dy):
        east = jac[0, 0] * dx + jac[0, 1] * dy
        north = jac[1, 0] * dx + jac[1, 1] * dy
        return (east / a) ** 2 + (north / b) ** 2 <= 1.0
    return inside, max(a, b) / scale


def _cutout(stack, x, y, half):
    xi, yi = int(round(x)), int(round(y))
    ny, nx = stack.data.shape
    x0, x1 = max(0, xi - half), min(nx, xi + half + 1)
    y0, y1 = max(0, yi - half), min(ny, yi + half + 1)
    return slice(y0, y1), slice(x0, x1)


def _background(stack, model, x, y):
    """Sigma-clipped mean in the annulus and its weights (one over the pixels kept)."""
    half = int(np.ceil(model.r_out)) + 1
    sl = _cutout(stack, x, y, half)
    yy, xx = np.mgrid[sl]
    r = np.hypot(xx - x, yy - y)
    ring = (r >= model.r_in) & (r <= model.r_out) & ~stack.bad[sl]
    values = stack.data[sl][ring]
    if values.size < 10:
        raise FrameError(f"stack: fewer than 10 valid background pixels around ({x:.1f}, "
                         f"{y:.1f}); the target is too close to the edge or to masked pixels.")
    clipped = sigma_clip(values, sigma=3.0, maxiters=5)
    keep = np.zeros(ring.shape, dtype=bool)
    keep[ring] = ~np.ma.getmaskarray(clipped)
    level = float(np.median(stack.data[sl][keep]))
    return level, keep / keep.sum(), sl


def _matched_filter_peak(stack, model, cov, x0, y0, region, background):
    """The peak of the PSF matched filter's S/N within the search region."""
    from scipy.ndimage import correlate
    inside, reach = region
    half = int(np.ceil(reach)) + model.fit_half + 2
    sl = _cutout(stack, x0, y0, half)
    data = np.where(stack.bad[sl], 0.0, stack.data[sl] - background)
    k = model.fit_half
    ky, kx = np.mgrid[-k:k + 1, -k:k + 1]
    kernel = model.image(kx.astype(float), ky.astype(float), 0.0, 0.0)
    weights = kernel / np.sum(kernel ** 2)
    filtered = correlate(data, weights, mode="constant")
    sigma = float(np.median(stack.sigma[sl][~stack.bad[sl]]))
    noise = float(np.sqrt(measurement_covariance(weights[None], np.full(weights.shape, sigma),
                                                 cov)[0, 0]))
    yy, xx = np.mgrid[sl]
    allowed = inside(xx - x0, yy - y0) & ~stack.bad[sl]
    snr = np.where(allowed, filtered / noise, -np.inf)
    iy, ix = np.unravel_index(np.argmax(snr), snr.shape)
    return float(xx[iy, ix]), float(yy[iy, ix]), float(snr[iy, ix])


def _neighbours(stack, model, x, y, background):
    """Sources whose light reaches the fit box around (x, y), the target aside."""
    from photutils.detection import DAOStarFinder
    reach = 2 * model.fit_half + int(np.ceil(2 * model.fwhm))
    sl = _cutout(stack, x, y, reach)
    bad = stack.bad[sl]
    if bad.all():
        return []
    data = np.where(bad, 0.0, stack.data[sl] - background)
    sigma = float(np.median(stack.sigma[sl][~bad]))
    with warnings.catch_warnings():  # NoDetectionsWarning: none is an answer
        warnings.simplefilter("ignore")
        found = DAOStarFinder(fwhm=model.fwhm, threshold=5.0 * sigma)(data, mask=bad)
    if found is None:
        return []
    x0, y0 = sl[1].start, sl[0].start
    xy = [(float(a) + x0, float(b) + y0)
          for a, b in zip(found["x_centroid"], found["y_centroid"])]
    return [(a, b) for a, b in xy if np.hypot(a - x, b - y) > 1.5 * model.fwhm + 1]


def _psf_fit(stack, model, x, y, background, forced):
    """photutils PSF fit of flux (and position unless forced) on the stack minus background.

    Neighbours whose light reaches the fit box are fitted at the same time (photutils
    groups them with the target), so that they do not pull the target's fit.
    """
    from photutils.psf import PSFPhotometry, SourceGrouper
    half = model.fit_half
    shape = 2 * half + 1
    psf = model.psf.copy()
    psf.x_0.fixed = psf.y_0.fixed = bool(forced)
    # the position may move at most one FWHM from where the fit starts
    bound = max(model.fwhm, 1.0)
    others = _neighbours(stack, model, x, y, background)
    phot = PSFPhotometry(psf, fit_shape=(shape, shape), aperture_radius=model.aperture,
                         xy_bounds=None if forced else (bound, bound),
                         grouper=SourceGrouper(min_separation=4 * half) if others else None)
    init = QTable({"x": [x] + [a for a, _ in others], "y": [y] + [b for _, b in others]})
    with warnings.catch_warnings():  # photutils warns about fits it flags; the flags are read
        warnings.simplefilter("ignore")
        out = phot(stack.data - background, error=stack.sigma, mask=stack.bad,
                   init_params=init)
    fx = float(out["x_fit"][0]) if not forced else x
    fy = float(out["y_fit"][0]) if not forced else y
    return fx, fy, float(out["flux_fit"][0]), int(out["flags"][0])


def _linear_weights(stack, model, x, y, flux, forced, keep, sl_bg):
    """Weights of the linearised fit estimates (flux[, x, y]) on the background patch."""
    yy, xx = np.mgrid[sl_bg]
    xx, yy = xx.astype(float), yy.astype(float)
    in_box = (np.abs(xx - round(x)) <= model.fit_half) & (np.abs(yy - round(y)) <= model.fit_half)
    in_box &= ~stack.bad[sl_bg]
    sigma = np.where(stack.bad[sl_bg], 0.0, stack.sigma[sl_bg])
    columns = [model.image(xx, yy, x, y)]
    if not forced:
        step = 0.05
        for dx, dy in ((step, 0.0), (0.0, step)):
            plus = model.image(xx, yy, x + dx, y + dy, flux)
            minus = model.image(xx, yy, x - dx, y - dy, flux)
            columns.append((plus - minus) / (2 * step))
    jac = np.array([c[in_box] for c in columns]).T
    w = 1.0 / sigma[in_box] ** 2
    normal = jac.T @ (w[:, None] * jac)
    solve = np.linalg.solve(normal, (jac * w[:, None]).T)  # (p, n)
    weights = np.zeros((len(columns),) + in_box.shape)
    for i in range(len(columns)):
        weights[i][in_box] = solve[i]
        weights[i] -= solve[i].sum() * keep  # the background subtracted before the fit
    return weights, sigma


def _near(dx, dy, inside, margin):
    """Whether (dx, dy) is within ``margin`` pixels of the region ``inside``."""
    length = np.hypot(dx, dy)
    if length <= margin:
        return True
    shrink = (length - margin) / length
    return bool(inside(dx * shrink, dy * shrink))


def _measure_one(stack, model, cov, x0, y0, region, snr_threshold, apcor):
    background, keep, sl_bg = _background(stack, model, x0, y0)
    px, py, peak = _matched_filter_peak(stack, model, cov, x0, y0, region, background)
    log.debug("matched filter: peak S/N %.2f at (%.2f, %.2f), predicted (%.2f, %.2f)", peak, px,
              py, x0, y0)
    inside, reach = region
    forced = True
    if peak >= snr_threshold:
        # the fit starts at the filter's peak, then (if it ran off to a neighbour) at the
        # prediction; it must stay within the search region (plus half a FWHM)
        for sx, sy in ((px, py), (x0, y0)):
            background, keep, sl_bg = _background(stack, model, sx, sy)
            x, y, flux, flags = _psf_fit(stack, model, sx, sy, background, forced=False)
            if np.isfinite(x) and np.isfinite(y) and flux > 0 and (
                    inside(x - x0, y - y0) or _near(x - x0, y - y0, inside, 0.5 * model.fwhm)):
                forced = False
                break
    if forced:
        background, keep, sl_bg = _background(stack, model, x0, y0)
        x, y, flux, flags = _psf_fit(stack, model, x0, y0, background, forced=True)
    # errors: the linearised estimate's covariance under the measured noise
    weights, sigma = _linear_weights(stack, model, x, y, flux, forced, keep, sl_bg)
    yy, xx = np.mgrid[sl_bg]
    ap_weights = _aperture_image(x - xx[0, 0], y - yy[0, 0], model.aperture, keep.shape)
    ap_flux = float(np.sum(ap_weights * np.where(stack.bad[sl_bg], 0.0,
                                                 stack.data[sl_bg] - background)))
    ap_weights = ap_weights - ap_weights.sum() * keep
    covariance = measurement_covariance(np.concatenate([weights, ap_weights[None]]), sigma, cov)
    flux_var = covariance[0, 0]
    naive = float(np.sum((weights[0] * sigma) ** 2))  # independent pixels, sigma as reported
    # 5-sigma limit: the noise of a PSF flux there without the target's own photons
    sky_sigma = np.where(sigma > 0, float(np.median(sigma[keep > 0])), 0.0)
    limit_sigma = float(np.sqrt(measurement_covariance(weights[:1], sky_sigma, cov)[0, 0]))
    row = {"x": x, "y": y, "forced": forced, "flags": flags,
           "flux": flux * apcor["psf"],
           "flux_err": float(np.sqrt(flux_var * apcor["psf"] ** 2
                                     + (flux * apcor["psf_err"]) ** 2)),
           "aperture_flux": ap_flux * apcor["aperture"],
           "aperture_flux_err": float(np.sqrt(covariance[-1, -1] * apcor["aperture"] ** 2
                                              + (ap_flux * apcor["aperture_err"]) ** 2)),
           "flux_limit": 5.0 * limit_sigma * apcor["psf"],
           "x_err": np.nan, "y_err": np.nan, "xy_cov": np.zeros((2, 2)),
           "background": background,
           "noise_ratio": float(np.sqrt(flux_var / naive)) if naive > 0 else np.nan}
    row["snr"] = row["flux"] / row["flux_err"] if row["flux_err"] > 0 else np.inf
    row["detected"] = bool(not forced and row["snr"] >= snr_threshold)
    if not forced:
        row["xy_cov"] = covariance[1:3, 1:3]
        row["x_err"], row["y_err"] = np.sqrt(np.diag(row["xy_cov"]))
    return row


def _aperture_corrections(stack, model, psf, aperture):
    """PSF flux and small-aperture flux to the light in a large aperture, from the stars.

    Each star of the PSF fit gives the ratios (large aperture / PSF flux) and (large
    aperture / aperture of radius ``aperture``, the target's) with an error from the sky
    stack's uncertainty; stars more
    than 5 sigma from the median (a neighbour in the large aperture) are left out and the
    rest averaged with inverse-variance weights.
    """
    neutral = {"psf": 1.0, "psf_err": 0.0, "aperture": 1.0, "aperture_err": 0.0, "n_stars": 0,
               "radius": np.nan}
    stars = psf.get("stars")
    if stack.sky is None or stars is None:
        return neutral
    sky = _Image(stack.sky)
    radius = max(4.0 * model.fwhm, 6.0)
    big_model = _Model(model.fwhm, model.beta)
    big_model.aperture = radius
    big_model.r_in = radius + 2.0
    big_model.r_out = big_model.r_in + max(5.0, 2.0 * model.fwhm)
    ratios = []
    for x, y in zip(stars["x"], stars["y"]):
        try:
            background, keep, sl = _background(sky, big_model, x, y)
            flux = _psf_fit(sky, model, x, y, background, forced=False)[2]
        except FrameError:
            continue
        yy, xx = np.mgrid[sl]
        data = np.where(sky.bad[sl], 0.0, sky.data[sl] - background)
        sigma = np.where(sky.bad[sl], 0.0, sky.sigma[sl])
        sums, errors = [], []
        for r in (radius, aperture):
            weights = _aperture_image(x - xx[0, 0], y - yy[0, 0], r, keep.shape)
            sums.append(float(np.sum(weights * data)))
            weights = weights - weights.sum() * keep
            errors.append(float(np.sqrt(np.sum((weights * sigma) ** 2))))
        (big, small), (big_err, small_err) = sums, errors
        if big > 0 and small > 0 and flux > 0 and np.all(np.isfinite(sums)):
            ratios.append((big / flux, big_err / flux, big / small,
                           np.hypot(big_err / big, small_err / small) * big / small))
    if len(ratios) < 3:
        log.info("aperture corrections: fewer than 3 stars; none applied")
        return neutral
    ratios = np.array(ratios)
    out = {"n_stars": len(ratios), "radius": radius}
    for key, (value, error) in (("psf", ratios[:, :2].T), ("aperture", ratios[:, 2:].T)):
        error = np.maximum(error, 1e-3 * value)  # a floor: the PSF varies a little anyway
        keep = np.abs(value - np.median(value)) <= 5.0 * error
        if keep.sum() < 3:
            keep = np.ones(len(value), dtype=bool)
        weight = 1.0 / error[keep] ** 2
        mean = float(np.sum(weight * value[keep]) / weight.sum())
        # the scatter beyond the errors (PSF variations) enlarges the error of the mean
        chi2 = float(np.sum(weight * (value[keep] - mean) ** 2)) / max(keep.sum() - 1, 1)
        out[key] = mean
        out[f"{key}_err"] = float(np.sqrt(max(chi2, 1.0) / weight.sum()))
    log.info("aperture corrections from %d stars (radius %.1f px): PSF x%.4f +- %.4f, "
             "aperture x%.4f +- %.4f", out["n_stars"], radius, out["psf"], out["psf_err"],
             out["aperture"], out["aperture_err"])
    return out


def _aperture_image(x, y, radius, shape):
    from photutils.aperture import CircularAperture
    return CircularAperture((x, y), radius).to_mask(method="exact").to_image(shape)


def _wcs_error(stack, wcs_error):
    if wcs_error is not None:
        return float(u.Quantity(wcs_error, u.arcsec).to_value(u.arcsec))
    return float(stack.meta.get("SSWCSRMS", 0.0))


def _output_table(stack, rows, zp, zp_err, band, wcs_sigma, model):
    table = QTable()
    n = len(rows)
    table["time"] = Time([stack.time.isot] * n, scale="utc")
    positions = SkyCoord([stack.wcs.pixel_to_world(r["x"], r["y"]) for r in rows])
    table["ra"] = positions.ra.to(u.deg)
    table["dec"] = positions.dec.to(u.deg)
    ra_err, dec_err = [], []
    for r in rows:
        sky_cov = r["jac"] @ r["xy_cov"] @ r["jac"].T
        if r["forced"]:
            sky_cov = np.full((2, 2), np.nan)
        ra_err.append(np.sqrt(sky_cov[0, 0] + wcs_sigma ** 2))
        dec_err.append(np.sqrt(sky_cov[1, 1] + wcs_sigma ** 2))
    table["ra_err"] = np.array(ra_err) * u.arcsec
    table["dec_err"] = np.array(dec_err) * u.arcsec
    for name in ("x", "y", "x_err", "y_err"):
        table[name] = np.array([r[name] for r in rows]) * u.pix
    unit = stack.unit
    for name in ("flux", "flux_err", "aperture_flux", "aperture_flux_err", "flux_limit"):
        table[name] = np.array([r[name] for r in rows]) * unit
    table["snr"] = np.array([r["snr"] for r in rows])
    table["detected"] = np.array([r["detected"] for r in rows])
    predicted = SkyCoord([r["predicted"] for r in rows])
    table["offset"] = positions.separation(predicted).to(u.arcsec)
    flux = np.array([r["flux"] for r in rows])
    flux_err = np.array([r["flux_err"] for r in rows])
    limit = np.array([r["flux_limit"] for r in rows])
    detected = table["detected"]
    if zp is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            mag = zp - 2.5 * np.log10(flux)
            mag_err = np.hypot(2.5 / np.log(10) * flux_err / flux, zp_err)
            mag_limit = zp - 2.5 * np.log10(limit)
        table["mag"] = np.where(detected, mag, mag_limit) * u.mag
        table["mag_err"] = np.where(detected, mag_err, np.nan) * u.mag
        table["mag_limit"] = mag_limit * u.mag
    else:
        table["mag"] = table["mag_err"] = table["mag_limit"] = np.full(n, np.nan) * u.mag
    scale = np.array([np.sqrt(abs(np.linalg.det(r["jac"]))) for r in rows])
    table["fwhm"] = model.fwhm * scale * u.arcsec
    table["predicted_ra"] = predicted.ra.to(u.deg)
    table["predicted_dec"] = predicted.dec.to(u.deg)
    table["flags"] = np.array([r["flags"] for r in rows])
    return table


def summary_line(row, meta):
    """One line saying what was measured on a target (the command line prints it).

    Parameters
    ----------
    row : `~astropy.table.Row`
        A row of a `measure_target` table.
    meta : dict
        That table's ``meta`` (for the band).
    """
    if not row["detected"]:
        limit = f"{row['flux_limit'].value:.4g} {row['flux_limit'].unit}"
        if np.isfinite(row["mag_limit"].value):
            limit = f"{row['mag_limit'].value:.2f} mag ({meta.get('band')}), {limit}"
        return f"not detected (S/N {row['snr']:.1f}); 5-sigma limit {limit}"
    position = SkyCoord(row["ra"], row["dec"]).to_string("hmsdms", precision=3, sep=":")
    text = (f"detected at S/N {row['snr']:.1f}, {row['offset'].value:.2f}\" from the "
            f"prediction: {position} (+- {row['ra_err'].value:.2f}\", "
            f"{row['dec_err'].value:.2f}\") at {row['time'].isot} UTC")
    if np.isfinite(row["mag"].value):
        text += f"; {meta.get('band')} = {row['mag'].value:.2f} +- {row['mag_err'].value:.2f}"
    else:
        text += f"; flux {row['flux'].value:.4g} +- {row['flux_err'].value:.2g} " \
                f"{row['flux'].unit}"
    return text
