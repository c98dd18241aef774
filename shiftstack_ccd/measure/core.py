# Licensed under a 3-clause BSD style license - see LICENSE
"""Measuring the target on a stack: detection, PSF photometry, astrometry, honest errors.

`measure_target` turns a `~shiftstack_ccd.stack.StackResult` into a table of measurements,
one row per target: where it is (RA, Dec at the stack's reference time, with errors), how
bright (flux, magnitude with a zero point), how sure (S/N, detected or not, 5-sigma limit).

How, for each target:

1. **PSF.** A pixel-integrated Moffat is fitted to the bright isolated stars of the sky
   stack (where the stars are round) nearest the target(s); the target's model is that PSF
   trailed by the target's motion during one exposure (known from the stack's per-frame
   table).
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
   around the sky stack's stars (the whole PSF, whatever the model misses in the wings),
   stars with a neighbour in that aperture left out; an aperture flux beside it is
   corrected by the stars' curve of growth. The correction's error includes the stars'
   disagreement (their robust scatter), which small stacks' few stars show.
6. **Astrometry.** Pixel to sky through the stack's WCS; the position errors add the fit's,
   the WCS solution's (``wcs_error``, by default from the frames' astrometric residuals
   recorded in the stack header) and, on a stack refined on the target (``refine=True``),
   the refinement's in quadrature. The refinement's corrections have zero mean (their
   gauge), so they add no shift of their own; but the stacked target then sits where it
   was on average over the accepted frames, so its position is moved to the reference
   epoch along the refined track (the slope of the corrections in time), and the error of
   that and of any mismatch between the combine's weights and the gauge's is added
   (`shiftstack_ccd.register.refinement_shift` derives both; cards ``SSRFDX``/``SSRFDY``
   and ``SSRFEX``/``SSRFEY`` of the stack). The refinement weighs the frames as the
   combine does at the target, so the mismatch is zero; with every frame accepted and the
   reference epoch the frames' (weighted) mean time, the shift is zero too.
7. **Photometric calibration.** A zero point (given, or from a reference catalogue matched
   against the sky stack's stars, `zero_point_from_catalog`) gives magnitudes.
8. **Shape.** A wrong motion stacks the target into a trail, which the round PSF still
   "detects". The target's second moments beyond the model are compared with the sky
   stack's stars' (``shiftstack_ccd.measure._shape``); an elongated target is flagged,
   warned about, and the rate error the trail implies is fitted.
"""

import logging
import os
import warnings

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import QTable
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning

from .._noise import normalised_residual_covariance
from .._psf import fit_psf
from ..exceptions import FrameError, MeasurementError
from ..register import refinement_shift
from ._fit import (DISAGREE_FACTOR, DISAGREE_FLOOR, _aperture_corrections, _Image,
                   _measure_one, _Model, _search_region)
from ._shape import shape_test, stars_anisotropy

__all__ = ["measure_target", "summary_line"]

log = logging.getLogger(__name__)

#: Half-size (pixels) of the box around each target where its noise is measured.
_NOISE_REACH = 60


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
        ``predicted_ra``, ``predicted_dec``, ``flags`` (photutils'), and the shape test:
        ``elongation`` (the axis ratio that the target's second moments beyond the stars'
        give a Gaussian of the PSF's FWHM, NaN if not detected), ``shape_chi2`` (its
        significance, two degrees of freedom), ``elongated`` and, for an elongated target,
        ``rate_error_ra``, ``rate_error_dec`` (arcsec/h, dRA*cos(Dec)/dt and dDec/dt: the
        motion error a trail of that shape implies over the stack's time span, up to its
        sign, given with ``rate_error_ra >= 0``; NaN otherwise). ``meta`` holds the band,
        the zero point, the PSF, the aperture correction (``aperture_correction``, its
        error and the formal error the stars' own errors give, the stars used and those
        left out for a neighbour), the noise calibration, the number of frames and their
        time span (``time_span_h``).

    Warns
    -----
    astropy.utils.exceptions.AstropyUserWarning
        When a target is elongated (``elongated``): a target at S/N 10 or more whose
        second moments beyond the stars' have a chi-square above 18.4 (a false-alarm
        probability of 0.01 % for two degrees of freedom; none of 123 fakes on the right
        motion in the Lowell frames). It names the stack and the likely rate error: a
        wrong motion stacks the target into a trail, and the round PSF then measures part
        of it. Targets fainter than S/N 10 are not tested (their shape is noise), nor are
        stacks refined on the target (``refine=True`` follows it frame by frame).
        And when the aperture correction's stars disagree beyond their errors (their
        scatter at least doubles the correction's error, and makes it over 2 %): the flux
        errors then include that scatter, and a larger stack would do better.

    Raises
    ------
    FrameError
        A stack without WCS, uncertainty or epoch; a target off the stack; a PSF that cannot
        be measured.
    MeasurementError
        A zero point without a band; a catalogue with no star in the field.
    """
    from ..stack import StackResult

    label = "stack"
    if isinstance(result, (str, bytes)) or hasattr(result, "__fspath__"):
        label = os.fsdecode(result)
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
    apcor = _aperture_corrections(stack, star_model, psf, model.aperture)
    _warn_disagreeing_stars(apcor, label)

    zp, zp_err, zp_meta = None, 0.0, {}
    if catalog is not None:
        from ..zeropoint import zero_point_from_catalog
        zp_meta = zero_point_from_catalog(result.sky_stack if result.sky_stack is not None
                                          else result.stack, catalog, band=band,
                                          fwhm=psf["fwhm"])
        zp, zp_err, band = zp_meta["zero_point"], zp_meta["zero_point_err"], zp_meta["band"]
    elif zero_point is not None:
        zp, zp_err = float(zero_point), float(zero_point_err)

    wcs_sigma = _wcs_error(stack, wcs_error)
    eph_sigma = _ephemeris_sigma(result, stack.time)
    refine_shift, refine_err = _refinement(stack)
    stars = stars_anisotropy(result.sky_stack, star_model, psf) if psf.get("stars") \
        else None
    rows = []
    for k, (x0, y0) in enumerate(zip(px, py)):
        jac = stack.pixel_scale(x0, y0)
        region = _search_region(jac, eph_sigma, search_radius, model.fwhm)
        cov, row_noise = _noise_model(stack, model, x0, y0, px, py)
        row = _measure_one(stack, model, cov, x0, y0, region, snr_threshold, apcor)
        row["predicted"] = predicted[k]
        row["noise_pixels"] = row_noise
        row["refine_cov"] = np.zeros((2, 2))
        if not row["forced"]:  # the refined track's position at the reference epoch
            row["x"] += refine_shift[0]
            row["y"] += refine_shift[1]
            row["refine_cov"] = np.diag(refine_err ** 2)
        row["jac"] = stack.pixel_scale(row["x"], row["y"])
        row["shape"] = shape_test(stack, model, cov, row, stars, row["snr"],
                                  refined=bool(stack.meta.get("SSREFINE", False)))
        rows.append(row)
    table = _output_table(stack, rows, zp, zp_err, band, wcs_sigma, model)
    table.meta.update({
        "band": band, "zero_point": zp, "zero_point_err": zp_err,
        "psf_fwhm_pix": model.fwhm, "psf_beta": model.beta, "psf_stars": psf.get("n_stars"),
        "trail_pix": float(np.hypot(*model.trail)),
        "aperture_correction": apcor["psf"], "aperture_correction_err": apcor["psf_err"],
        "aperture_correction_err_formal": apcor["psf_err_formal"],
        "aperture_stars": apcor["n_stars"], "aperture_stars_crowded": apcor["n_crowded"],
        "noise_ratio": [r["noise_ratio"] for r in rows],
        "noise_pixels": [r["noise_pixels"] for r in rows],
        "n_frames": stack.n_frames, "wcs_error_arcsec": wcs_sigma,
        "refine_shift_pix": [float(v) for v in refine_shift],
        "refine_error_pix": [float(v) for v in refine_err],
        "exptime": float(stack.meta.get("EXPTOTAL", np.nan)) / max(stack.n_frames, 1),
        "time_span_h": _time_span(stack),
        "shape_stars": stars["n_stars"] if stars else 0,
        **{f"catalog_{k}": v for k, v in zp_meta.items() if k not in ("matches",)}})
    _warn_elongated(table, label)
    for row in table:
        log.info("%s", summary_line(row, table.meta))
    return table


def _warn_disagreeing_stars(apcor, label):
    """A warning when the stars' aperture corrections disagree beyond their errors."""
    boot, formal, value = apcor["psf_err"], apcor["psf_err_formal"], apcor["psf"]
    if boot > DISAGREE_FACTOR * formal and boot > DISAGREE_FLOOR * value:
        warnings.warn(
            f"{label}: the {apcor['n_stars']} stars of the aperture correction disagree "
            f"beyond their errors: their scatter makes its error {100 * boot / value:.1f}%, "
            f"{boot / formal:.1f} times what their own errors give. The flux errors include "
            "that; a larger stack (size=) holds more and brighter stars.", AstropyUserWarning)


def _warn_elongated(table, label):
    """One warning per target whose shape says that the stack's motion is wrong."""
    span = table.meta["time_span_h"]
    for k, row in enumerate(table):
        if not row["elongated"]:
            continue
        dra, ddec = row["rate_error_ra"].value, row["rate_error_dec"].value
        target = f"target {k}" if len(table) > 1 else "the target"
        text = (f"{label}: {target} is elongated beyond the stars' PSF (elongation "
                f"{row['elongation']:.2f}, chi2 {row['shape_chi2']:.0f} for 2 degrees of "
                "freedom)")
        if np.isfinite(dra):
            text += (f": the motion it was stacked on is likely wrong by +-({dra:.2f}, "
                     f"{ddec:.2f}) arcsec/h in (dRA cos(Dec)/dt, dDec/dt) over the stack's "
                     f"{span:.2f} h (a stack cannot tell the sign). Its flux and position "
                     "describe a trail, not the target: stack again with the corrected rates "
                     "(try both signs) or search the motions (search_motion).")
        else:
            text += (", but not as a straight trail would be: a blend with a neighbour, or a "
                     "motion that is not linear over the stack's "
                     f"{span:.2f} h; its flux and position may be off.")
        warnings.warn(text, AstropyUserWarning)


def _time_span(stack):
    """Hours from the first frame's mid-exposure to the last's (NaN without the table)."""
    table = stack.table
    if table is None or "mjd_mid" not in table.colnames or len(table) == 0:
        return np.nan
    return float(np.ptp(np.asarray(table["mjd_mid"], dtype=float)) * 24.0)


def _stack_psf(stack, px, py, fwhm, beta):
    if fwhm is not None:
        return {"fwhm": float(fwhm), "beta": float(beta) if beta is not None else 3.0,
                "n_stars": 0, "stars": None}
    image = stack.sky
    if image is None:
        raise FrameError("stack: no sky stack to measure the stars' PSF on; give fwhm= (and "
                         "psf_beta=), or stack with sky_stack=True.")
    exclude = [(x, y, 10.0) for x, y in zip(px, py)]
    try:  # the stars nearest the targets: the PSF varies over a field
        psf = fit_psf(image, exclude=exclude, near=(float(np.mean(px)), float(np.mean(py))))
    except FrameError as exc:
        raise FrameError(f"sky stack: {exc}".replace("image: ", "")) from None
    if beta is not None:
        psf["beta"] = float(beta)
    return psf


def _noise_model(stack, model, x, y, px, py):
    """Normalised-residual autocovariance near the target at (x, y), away from sources.

    Measured on the box within ``_NOISE_REACH`` pixels of the target (all targets ``px``,
    ``py`` left out of it), source mask and background included, so that the same pixels
    give the same noise whatever the stack's size and the other targets: on the Lowell
    frames the normalised residual is 30% wider (robust std 1.39 against 1.06) within 60 px
    of the asteroid than over a 601 px stack, and a stack-wide source mask and background
    change with the stack's size (issue #10).
    """
    from astropy.nddata import CCDData

    from ..photometry import source_mask

    ny, nx = stack.data.shape
    x0, x1 = max(0, int(round(x)) - _NOISE_REACH), min(nx, int(round(x)) + _NOISE_REACH + 1)
    y0, y1 = max(0, int(round(y)) - _NOISE_REACH), min(ny, int(round(y)) + _NOISE_REACH + 1)
    box = (slice(y0, y1), slice(x0, x1))
    data, sigma, bad = stack.data[box], stack.sigma[box], stack.bad[box]
    usable = ~bad
    if stack.coverage is not None:  # where as many frames overlap as at the target
        usable &= stack.coverage[box] >= int(stack.coverage[int(round(y)), int(round(x))])
    masked = np.where(bad, np.nan, data)
    usable &= ~source_mask(CCDData(masked, unit=stack.unit, mask=bad), dilate=3)
    yy, xx = np.indices(data.shape)
    for a, b in zip(px, py):
        usable &= np.hypot(xx + x0 - a, yy + y0 - b) > model.r_out + 2
    if usable.sum() < 2000:
        raise FrameError(f"stack: only {int(usable.sum())} empty-sky pixels where the target "
                         "is; cannot measure the noise (make a larger stack, size=...).")
    # every pixel pair of a measurement (fit box and background annulus): the background
    # subtraction cancels the slow part of the noise only if its covariances are all counted
    max_lag = 2 * (int(np.ceil(model.r_out)) + 1)
    return normalised_residual_covariance(data, sigma, usable, max_lag,
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


def _refinement(stack):
    """Shift to the reference epoch and error (x, y pixels) of a stack refined on the target.

    From the stack's cards (written by `~shiftstack_ccd.shift_and_stack`), else from its
    per-frame table; zero for a stack that was not refined.
    """
    meta = stack.meta
    zero = np.zeros(2)
    if not meta.get("SSREFINE", False):
        return zero, zero
    if all(k in meta for k in ("SSRFDX", "SSRFDY", "SSRFEX", "SSRFEY")):
        return (np.array([float(meta["SSRFDX"]), float(meta["SSRFDY"])]),
                np.array([float(meta["SSRFEX"]), float(meta["SSRFEY"])]))
    table = stack.table
    if table is None or not {"mjd_mid", "refine_dx", "refine_dy", "refine_ok"} <= \
            set(table.colnames):
        raise FrameError("stack: refined on the target (SSREFINE) but neither its SSRF* cards "
                         "nor its per-frame refinement table are there; cannot give the "
                         "refinement's error.")
    info = refinement_shift(table, stack.time)
    return info["shift"], info["shift_err"]


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
        sky_cov = r["jac"] @ (r["xy_cov"] + r["refine_cov"]) @ r["jac"].T
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
    table["elongation"] = np.array([r["shape"]["elongation"] for r in rows])
    table["shape_chi2"] = np.array([r["shape"]["shape_chi2"] for r in rows])
    table["elongated"] = np.array([r["shape"]["elongated"] for r in rows], dtype=bool)
    rates = np.array([_rate_error(r) for r in rows]).reshape(n, 2)
    table["rate_error_ra"] = rates[:, 0] * u.arcsec / u.hour
    table["rate_error_dec"] = rates[:, 1] * u.arcsec / u.hour
    return table


def _rate_error(row):
    """The motion error a trailed target implies, (dRA cos(Dec)/dt, dDec/dt) arcsec/h, the
    sign chosen with dRA cos(Dec)/dt >= 0 (a stack cannot tell it); NaN if not elongated."""
    delta = row["shape"]["delta"]
    if delta is None:
        return np.nan, np.nan
    east, north = row["jac"] @ np.asarray(delta) / 24.0  # pixels/day -> arcsec/h
    sign = -1.0 if east < 0 or (east == 0 and north < 0) else 1.0
    return sign * east, sign * north


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
    if "elongated" in row.colnames and row["elongated"]:
        text += f"; ELONGATED (x{row['elongation']:.2f})"
        if np.isfinite(row["rate_error_ra"].value):
            text += (f": the motion is likely off by +-({row['rate_error_ra'].value:.1f}, "
                     f"{row['rate_error_dec'].value:.1f}) arcsec/h")
    return text
