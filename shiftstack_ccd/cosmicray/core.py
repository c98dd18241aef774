# Licensed under a 3-clause BSD style license - see LICENSE
"""Cosmic-ray cleaning of single frames.

`clean_cosmic_rays` finds cosmic-ray hits in one `~astropy.nddata.CCDData`, repairs them
from their neighbours, adds them to the mask and returns a new frame. Two methods:

``"median"``
    A vectorised ring-median detector written for this package. A local maximum is a
    candidate when it stands above the median of its eight neighbours (the pixel itself
    left out) by more than ``threshold`` times the noise expected at that level; it is a
    hit when it is much sharper than its neighbourhood or when its 3x3 box is not the image
    of a star (no Gaussian at least ``min_fwhm`` wide fits it), which keeps the cores of
    even undersampled stars safe; hits grow into their wings. Written by hand because
    `ccdproc.cosmicray_median` compares each pixel with a box median that includes the
    pixel, uses one noise level for the whole frame and has no protection for stars, and
    L.A.Cosmic flags the cores of undersampled stars (thousands of pixels a frame on the
    Lowell 42-inch example frames, FWHM about 1.7 pixels).
``"lacosmic"``
    L.A.Cosmic (van Dokkum 2001) through `astroscrappy.detect_cosmics`, called directly
    rather than through `ccdproc.cosmicray_lacosmic`, whose ``gain`` handling (ccdproc 2.5.1)
    multiplies the data by the gain but leaves the uncertainty in the old unit.
"""

import logging
import warnings
from typing import Literal

import numpy as np
from astropy import units as u
from astropy.nddata import (CCDData, InverseVariance, StdDevUncertainty,
                            VarianceUncertainty)
from astropy.utils.exceptions import AstropyUserWarning

from .._utils import frame_label
from ..exceptions import FrameError
from ..steps import log_to_header, provenance_header
from ._lacosmic import lacosmic
from ._median import mad_std, median_method, sample_residuals, saturation_from_data
from ._noise import Noise, SATURATION_KEYS, header_number, noise_model
from ._psf import SHARP_MARGIN, star_sharpness
from ._ring import REPAIR_VAR, RESIDUAL_VAR, masked_median

__all__ = ["clean_cosmic_rays"]

log = logging.getLogger(__name__)

NOISE_TOLERANCE = 1.3
# A plateau of this many pixels within 0.5 % of the maximum means saturation.


# --------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------
@log_to_header
def clean_cosmic_rays(ccd: CCDData, method: Literal["median", "lacosmic"] = "median", *,
                      threshold: float = 5.0, sharpness: float | None = None,
                      grow_threshold: float = 3.0, iterations: int | None = None,
                      gain: float | u.Quantity | None = None,
                      read_noise: float | u.Quantity | None = None,
                      saturation: float | u.Quantity | None = None, min_fwhm: float = 1.5,
                      lacosmic_kwargs: dict | None = None) -> CCDData:
    r"""Find cosmic-ray hits, repair them from their neighbours and mask them.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame, bias-subtracted (the noise model needs the level above the bias). It is
        not modified.
    method : {"median", "lacosmic"}
        ``"median"``: this package's ring-median detector (see Notes). ``"lacosmic"``:
        L.A.Cosmic through `astroscrappy.detect_cosmics`.
    threshold : float
        Detection threshold in noise units (standard deviations). For ``"lacosmic"``,
        astroscrappy's ``sigclip``.
    sharpness : float, optional
        ``"median"``: a peak is a hit at once when its excess over the median of its 8
        neighbours exceeds ``sharpness`` times the excess of that median over the ring at
        distance 3 (plus half its noise); otherwise only when its 3x3 box fails the
        star-shape test (see Notes). By default 1.25 times the largest value a Gaussian star
        at least ``min_fwhm`` wide reaches: 8.37 for ``min_fwhm=1.5`` (the 5856 peaks of
        stars above 20 sigma in the Lowell example frames reach 6.2). ``"lacosmic"``:
        astroscrappy's ``objlim`` (default 5).
    grow_threshold : float
        Threshold, in noise units above the local background, for the pixels next to a hit
        (wings and interiors of tracks). For ``"lacosmic"`` it sets
        ``sigfrac = grow_threshold / threshold``.
    iterations : int, optional
        ``"median"``: the most passes of growing around the hits (default 50; growing stops
        as soon as a pass adds nothing, usually after a few). ``"lacosmic"``: astroscrappy's
        ``niter`` (default 4).
    gain : float or `~astropy.units.Quantity`, optional
        Electrons per data unit (a float is e-/ADU for data in ADU). By default from the
        header (``GAIN``, ``EGAIN``, ``CCDGAIN``, ``AGAIN_01``); data in electrons need none.
    read_noise : float or `~astropy.units.Quantity`, optional
        Read noise in electrons. By default from the header (``RDNOISE``, ``READNOIS``,
        ``RON``, ``ENOISE``, ``ARDNS_01``), else 0.
    saturation : float or `~astropy.units.Quantity`, optional
        Saturation level in data units. Pixels within two pixels of a saturated one are
        never flagged (``"median"``); astroscrappy masks saturated stars (``"lacosmic"``).
        By default ``SATURATE``/``SATLEVEL``/``SATURATN`` from the header, else, when at
        least ten pixels lie within 0.5 % of the maximum of the data (a plateau of
        saturated stars), 98 % of that maximum; else none.
    min_fwhm : float
        ``"median"``: the FWHM, in pixels, of the sharpest real source. Peaks that look like
        a Gaussian at least this wide are protected as stars. Lower it for undersampled data
        (a Gaussian star narrower than ``min_fwhm`` on a pixel corner can be flagged); the
        price is recall: on the Lowell frames, 96 % of the real cosmic rays above 10 sigma
        are recognised at 1.5, 88 % at 1.2 and 65 % at 1.0.
    lacosmic_kwargs : dict, optional
        More arguments for `astroscrappy.detect_cosmics` (``sepmed``, ``cleantype``,
        ``fsmode``, ``psffwhm``, ``inbkg`` ...).

    Returns
    -------
    cleaned : `~astropy.nddata.CCDData`
        A new frame: repaired data in the input unit (float32 unless the input is float64),
        the input mask or-ed with the hits, the input uncertainty (if any, same class) with
        repaired pixels given the error of their repair, WCS and meta carried over. The
        header records ``CRMETHOD``, ``CRTHRESH``, ``CRSHARP``, ``CRGROW``, ``CRNITER``,
        ``CRNFLAG`` (pixels flagged), ``CRNOISE`` (where the noise came from:
        ``model``, ``uncertainty`` or ``data``) and ``CRNSRAT`` (measured / predicted
        scatter), and a HISTORY line with every parameter.

    Raises
    ------
    FrameError
        If the frame is not a 2-D `~astropy.nddata.CCDData`, the method is unknown, the
        thresholds are inconsistent, or a gain is given for data in electrons.

    Warns
    -----
    AstropyUserWarning
        If the scatter of the data differs from what the noise model predicts by more than
        a factor 1.3 (a frame that still has its bias, or a wrong gain or read noise): the
        thresholds are then not in true noise units.

    Notes
    -----
    **Noise model.** Thresholds are in units of the noise expected at each pixel, taken
    from, in order: the ``gain``/``read_noise`` arguments; the frame's uncertainty; the
    header's gain and read noise (or the unit, for data in electrons); and, when none of
    these exists, a constant sigma measured from the data (1.4826 times the median absolute
    deviation of pixel minus neighbour median, on a sparse grid), which is logged. With a
    gain :math:`g` (e-/unit) and read noise :math:`r` (e-), the variance of a pixel at
    bias-subtracted level :math:`m` is :math:`\max(m, 0)/g + (r/g)^2`, where :math:`m` is
    the median of its neighbours, so that a hit does not raise its own noise; with an
    uncertainty, it is the median of the neighbours' variances, for the same reason.

    **Median method.** Let :math:`x` be a pixel, :math:`m_1` the median of its 8
    neighbours (the pixel left out), :math:`m_3` the median of the 24 pixels at distance 3
    and :math:`\sigma` the noise. A local maximum is a hit when

    1. :math:`x - m_1 > t\,\sigma\sqrt{1 + \pi/16}` (the square root is the noise of
       :math:`x - m_1`, the median of 8 values having variance about
       :math:`\pi\sigma^2/16`), and
    2. it is sharp, :math:`x - m_1 > s\,(m_1 - m_3 + \sigma_F/2)` -- a cosmic ray's
       neighbours sit on the background, a star's are themselves bright; :math:`\sigma_F =
       \sigma\sqrt{\pi/16 + \pi/48}` is the noise of :math:`m_1 - m_3`, so that a faint
       star's noisy neighbours do not make it look sharp -- or, failing that, its 3x3 box
       (minus :math:`m_3`) is not a star: no pixel-integrated Gaussian at least
       ``min_fwhm`` wide, centred anywhere in the pixel, fits it with a chi-square below
       40, each pixel's variance being the background's plus the star's Poisson noise plus
       (20 % of the star)^2 for the difference between a real PSF and a Gaussian. This
       catches the 2x2 hits and thick tracks that are not sharp in the first sense.

    Hits then grow: a neighbour joins when it stands ``grow_threshold`` sigma above
    :math:`m_3`, its brightest neighbour is a hit at least as bright as itself (so growth
    runs down the slopes of the hit and never up into a star next to it), and it stands
    above its unflagged neighbours by at least half its height. Hits are replaced by the
    median of the unflagged, unmasked pixels of their 5x5 box and get the uncertainty
    :math:`\sigma\sqrt{1 + \pi/48}` (a pixel's noise plus that of a 24-pixel median). A
    cheap full-frame bound (see ``prescreen``) limits the exact test to the few pixels
    that can pass it, so the result equals that of the full ring-median computation at a
    small fraction of its cost; nothing loops over pixels in Python.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from shiftstack_ccd.cosmicray import clean_cosmic_rays
    >>> rng = np.random.default_rng(0)
    >>> sky = rng.poisson(400.0, (64, 64)) + rng.normal(0.0, 5.0, (64, 64))
    >>> data = sky.astype(np.float32)
    >>> data[20, 30] += 800.0                        # a single-pixel hit
    >>> data[40, 10:13] += [300.0, 900.0, 250.0]     # a short track
    >>> ccd = CCDData(data, unit="electron")
    >>> clean = clean_cosmic_rays(ccd, read_noise=5.0)
    >>> bool(clean.mask[20, 30]), bool(clean.mask[40, 10:13].all())
    (True, True)
    >>> int(clean.meta["CRNFLAG"]), bool(abs(clean.data[20, 30] - 400) < 60)
    (4, True)
    >>> ccd.mask is None and float(ccd.data[20, 30]) > 1000  # the input is untouched
    True
    """
    label = frame_label(ccd)
    if not isinstance(ccd, CCDData):
        raise FrameError(f"{label}: clean_cosmic_rays needs a CCDData, got "
                         f"{type(ccd).__name__}.")
    if ccd.data.ndim != 2 or min(ccd.data.shape) < 3:
        raise FrameError(f"{label}: clean_cosmic_rays needs a 2-D image of at least 3 x 3 "
                         f"pixels, got shape {ccd.data.shape}.")
    if method not in ("median", "lacosmic"):
        raise FrameError(f"{label}: unknown cosmic-ray method {method!r}; use 'median' or "
                         "'lacosmic'.")
    if not threshold > 0 or not grow_threshold > 0:
        raise FrameError(f"{label}: threshold and grow_threshold must be positive.")
    if grow_threshold > threshold:
        raise FrameError(f"{label}: grow_threshold ({grow_threshold}) must not exceed "
                         f"threshold ({threshold}).")
    if not min_fwhm > 0:
        raise FrameError(f"{label}: min_fwhm must be positive, got {min_fwhm}.")
    if sharpness is None:
        sharpness = (round(SHARP_MARGIN * star_sharpness(float(min_fwhm)), 2)
                     if method == "median" else 5.0)
    if iterations is None:
        iterations = 50 if method == "median" else 4
    unit = ccd.unit if ccd.unit is not None else u.adu

    dtype = ccd.data.dtype if ccd.data.dtype in (np.float32, np.float64) else np.float32
    work = np.array(ccd.data, dtype=dtype, copy=True)   # becomes the output data
    bad = np.isfinite(work)
    np.logical_not(bad, out=bad)
    if ccd.mask is not None:
        bad |= np.asarray(ccd.mask, dtype=bool)
    if bad.all():
        raise FrameError(f"{label}: every pixel is masked or not finite; nothing to clean.")

    noise = noise_model(ccd, gain, read_noise, label, dtype)
    if isinstance(saturation, u.Quantity):
        saturation = saturation.to_value(unit)
    elif saturation is None:
        key, saturation = header_number(ccd.meta, SATURATION_KEYS)

    # Masked and non-finite pixels are filled from their neighbours so they cannot disturb
    # the medians; they stay masked and are never counted as hits.
    coarse = work[::16, ::16]
    coarse = coarse[~bad[::16, ::16]]
    sky = float(np.median(coarse)) if coarse.size else float(np.median(work[~bad]))
    if bad.any():
        ys_bad, xs_bad = np.nonzero(bad)
        work[ys_bad, xs_bad] = masked_median(work, bad, ys_bad, xs_bad, sky)
    else:
        ys_bad = xs_bad = np.array([], dtype=np.intp)
    if saturation is None:
        saturation = "auto" if method == "median" else saturation_from_data(work, label)

    # Measured scatter versus the model, on a sparse grid (also the fallback estimate).
    sy, sx, resid, level = sample_residuals(work, bad)
    if noise is None:
        sigma = mad_std(resid) / np.sqrt(RESIDUAL_VAR)
        noise = Noise("data", constant=sigma * sigma)
        log.info("%s: no gain, read noise or uncertainty: noise estimated from the data as a "
                 "constant sigma of %.4g %s", label, sigma, unit)
        ratio = 1.0
    else:
        predicted = np.sqrt(noise.local(level, sy, sx, work.shape) * RESIDUAL_VAR)
        ratio = float(mad_std(resid / predicted))
        log.info("%s: measured / predicted noise = %.3f (%s)", label, ratio, noise.describe())
        if not 1 / NOISE_TOLERANCE <= ratio <= NOISE_TOLERANCE:
            warnings.warn(
                f"{label}: the scatter of the data is {ratio:.2f} times what the noise model "
                f"({noise.describe()}) predicts, so thresholds are not in true noise units. "
                "Is the frame bias-subtracted, and are the gain and read noise right?",
                AstropyUserWarning)

    if method == "median":
        flagged, fy, fx, fvar, saturation = median_method(
            work, bad, noise, threshold, sharpness, grow_threshold, iterations, saturation,
            min_fwhm, sky, label)
        params = dict(threshold=threshold, sharpness=sharpness,
                      grow_threshold=grow_threshold, iterations=iterations,
                      saturation=saturation, min_fwhm=min_fwhm)
    else:
        flagged, extra = lacosmic(ccd, work, bad, noise, threshold, sharpness,
                                  grow_threshold, iterations, saturation, lacosmic_kwargs)
        fy, fx = np.nonzero(flagged)
        fvar = noise.local(work[fy, fx], fy, fx, work.shape)
        params = dict(threshold=threshold, objlim=sharpness,
                      sigfrac=grow_threshold / threshold, niter=iterations,
                      saturation=saturation, **extra)

    # Masked input pixels go back to their original values: only hits are repaired.
    if len(ys_bad):
        work[ys_bad, xs_bad] = np.asarray(ccd.data)[ys_bad, xs_bad]
    mask = flagged if ccd.mask is None else (np.asarray(ccd.mask, bool) | flagged)
    uncertainty = _repaired_uncertainty(ccd.uncertainty, fy, fx, fvar * REPAIR_VAR)
    meta = _record(ccd.meta, method, noise, ratio, params, len(fy))
    log.info("%s: %d cosmic-ray pixels flagged (%s)", label, len(fy), method)
    return CCDData(work, unit=unit, mask=mask, uncertainty=uncertainty, meta=meta,
                   wcs=ccd.wcs.deepcopy() if ccd.wcs is not None else None)


def _repaired_uncertainty(uncertainty, ys, xs, variance):
    if uncertainty is None or uncertainty.array is None:
        return None
    out = uncertainty.__class__(np.array(uncertainty.array, copy=True),
                                unit=uncertainty.unit)
    if len(ys):
        array = out.array
        if isinstance(out, StdDevUncertainty):
            array[ys, xs] = np.sqrt(variance)
        elif isinstance(out, VarianceUncertainty):
            array[ys, xs] = variance
        elif isinstance(out, InverseVariance):
            array[ys, xs] = 1.0 / variance
    return out


def _record(meta, method, noise, ratio, params, nflag):
    cards = [("CRMETHOD", method, "cosmic-ray method (shiftstack_ccd)"),
             ("CRTHRESH", float(params["threshold"]), "cosmic-ray threshold [sigma]"),
             ("CRSHARP", float(params.get("sharpness", params.get("objlim"))),
              "cosmic-ray sharpness / objlim"),
             ("CRGROW", float(params.get("grow_threshold",
                                         params.get("sigfrac", 0) * params["threshold"])),
              "cosmic-ray growing threshold [sigma]"),
             ("CRNITER", int(params.get("iterations", params.get("niter"))),
              "cosmic-ray iterations"),
             ("CRNFLAG", nflag, "pixels flagged as cosmic rays"),
             ("CRNOISE", noise.source, "cosmic-ray noise from: model/uncertainty/data"),
             ("CRNSRAT", round(float(ratio), 4), "measured / predicted noise")]
    text = ", ".join(f"{k}={v}" for k, v in params.items())
    history = (f"clean_cosmic_rays: method={method}, {text}; noise: {noise.describe()}; "
               f"{nflag} pixels flagged")
    return provenance_header(meta, cards, history)
