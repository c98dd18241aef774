# Licensed under a 3-clause BSD style license - see LICENSE
"""Measuring the target in a frame or a stack: centroid, flux and an honest S/N.

Resampled pixels are correlated, so the pixel-to-pixel scatter of a stack underestimates
the noise of an aperture sum. The S/N here uses the scatter of the same aperture placed on
empty sky, measured with the same local-background subtraction, which includes that
correlation by construction.
"""

import logging
import warnings

import numpy as np
from astropy.stats import mad_std, sigma_clipped_stats

from ._noise import autocovariance
from ._utils import data_and_mask
from .exceptions import FrameError

__all__ = ["aperture_flux", "aperture_snr", "centroid_target", "source_mask"]

log = logging.getLogger(__name__)


def _annulus_background(data, mask, positions, r_in, r_out):
    from photutils.aperture import CircularAnnulus

    annulus = CircularAnnulus(positions, r_in, r_out)
    values = []
    for ann in annulus.to_mask(method="center"):
        pix = ann.get_values(np.where(mask, np.nan, data))
        pix = pix[np.isfinite(pix)]
        values.append(sigma_clipped_stats(pix, sigma=3)[0] if pix.size > 5 else np.nan)
    return np.array(values)


def _background_subtracted_sums(data, mask, positions, radius, r_in, r_out):
    from photutils.aperture import CircularAperture, aperture_photometry

    aperture = CircularAperture(positions, radius)
    table = aperture_photometry(np.where(mask, 0, data), aperture, mask=mask)
    masked = aperture_photometry(mask.astype(float), aperture)["aperture_sum"]
    background = _annulus_background(data, mask, positions, r_in, r_out)
    sums = np.asarray(table["aperture_sum"]) - background * aperture.area
    sums[np.asarray(masked) > 0] = np.nan  # an aperture touching a masked pixel is not used
    return sums, background


def source_mask(ccd, nsigma=3.0, npixels=10, dilate=3, smooth=1.5):
    """Pixels covered by detected sources (stars, trails), grown by ``dilate`` pixels.

    Sources are connected groups of at least ``npixels`` pixels above ``nsigma`` times the
    sky noise of the image smoothed by a Gaussian of ``smooth`` pixels
    (`photutils.segmentation.detect_sources`). Smoothing first, and a 3-sigma, 10-pixel
    criterion, keep pure-noise peaks out of the mask: a mask that swallowed the positive
    noise fluctuations would bias any noise measured off it low.
    """
    from astropy.convolution import Gaussian2DKernel, convolve
    from photutils.segmentation import detect_sources
    from photutils.utils.exceptions import NoDetectionsWarning
    from scipy.ndimage import binary_dilation
    data, mask = data_and_mask(ccd)
    _, median, _ = sigma_clipped_stats(data[~mask], sigma=3)
    smoothed = convolve(np.where(mask, median, data) - median, Gaussian2DKernel(smooth),
                        boundary="extend")
    _, level, std = sigma_clipped_stats(smoothed[~mask], sigma=3)
    with warnings.catch_warnings():  # an empty field is an answer, not a problem
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segments = detect_sources(smoothed - level, nsigma * std, npixels)
    if segments is None:
        return np.zeros(data.shape, dtype=bool)
    footprint = np.hypot(*np.mgrid[-dilate:dilate + 1, -dilate:dilate + 1]) <= dilate
    return binary_dilation(segments.data > 0, structure=footprint)


def aperture_flux(ccd, position, radius, annulus=None):
    """Background-subtracted aperture flux of a source (no noise estimate).

    The same measurement as `aperture_snr`: the aperture sum minus the aperture's area
    times the sigma-clipped mean of an annulus (default ``(2 r + 2, 3 r + 4)``).

    Returns
    -------
    flux, background : float
        The flux and the background per pixel.
    """
    data, mask = data_and_mask(ccd)
    r_in, r_out = annulus if annulus is not None else (2 * radius + 2, 3 * radius + 4)
    flux, background = _background_subtracted_sums(data, mask, [position], radius, r_in, r_out)
    return float(flux[0]), float(background[0])


def _measurement_weights(radius, r_in, r_out):
    """Pixel weights of 'aperture sum minus area x annulus mean', on a centred stamp."""
    from photutils.aperture import CircularAnnulus, CircularAperture

    half = int(np.ceil(r_out)) + 1
    centre = (half, half)
    shape = (2 * half + 1, 2 * half + 1)
    aperture = CircularAperture(centre, radius).to_mask(method="exact").to_image(shape)
    annulus = CircularAnnulus(centre, r_in, r_out).to_mask(method="center").to_image(shape)
    return aperture - aperture.sum() / annulus.sum() * annulus


def aperture_snr(ccd, position, radius, annulus=None, noise_method="autocovariance",
                 region=None, avoid_sources=True, n_empty=300, seed=0):
    """Flux and S/N of a source, with the noise measured on empty sky.

    The flux is the aperture sum minus the aperture's area times the sigma-clipped mean of
    an annulus. Its noise is measured on the image itself, away from the source and from
    any detected source, in one of two ways:

    * ``'autocovariance'`` (default): the empty-sky pixels' autocovariance C, measured with
      FFTs over the whole usable image, gives the variance of the measurement as
      sum over pixel pairs of w_i w_j C(i - j), with w the measurement's pixel weights
      (aperture minus scaled annulus). Correlated noise, such as resampling makes, is
      included exactly, and every empty pixel is used, so the estimate is precise.
    * ``'apertures'``: the robust standard deviation of the same measurement made at
      ``n_empty`` random empty places. Model-free, but a 256-pixel image holds only a few
      dozen independent apertures, so expect ~10% scatter.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData` or array
        The image.
    position : (float, float)
        0-based pixel ``(x, y)`` of the source.
    radius : float
        Aperture radius in pixels.
    annulus : (float, float), optional
        Inner and outer radius of the background annulus (default ``(2 r + 2, 3 r + 4)``).
    noise_method : {'autocovariance', 'apertures'}
        How the noise is measured.
    region : boolean array, optional
        Where the noise may be measured, e.g. ``result.coverage == n_frames`` so that it is
        measured where as many frames overlap as at the target (the edges of a stack of
        dithered frames are noisier).
    avoid_sources : bool
        Keep the noise measurement off detected sources (`source_mask`): a star's light is
        signal, not noise, and would not average down in a stack.
    n_empty : int
        Number of random apertures (``'apertures'`` only).
    seed : int
        Seed of their placement.

    Returns
    -------
    result : dict
        ``flux``, ``noise`` (standard deviation of the flux measurement on empty sky),
        ``snr``, ``background`` (per pixel).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(0.0, 1.0, (200, 200))
    >>> image[100, 100] += 50.0
    >>> result = aperture_snr(image, (100, 100), radius=3)

    The noise of unit white noise in this measurement is the root of the sum of the squared
    pixel weights: 5.21 for a 3-pixel aperture and an 8 to 13 pixel annulus.

    >>> bool(40 < result["flux"] < 60), bool(0.95 < result["noise"] / 5.21 < 1.05)
    (True, True)
    """
    if noise_method not in ("autocovariance", "apertures"):
        raise ValueError(f"noise_method must be 'autocovariance' or 'apertures', "
                         f"not {noise_method!r}")
    data, mask = data_and_mask(ccd)
    r_in, r_out = annulus if annulus is not None else (2 * radius + 2, 3 * radius + 4)
    ny, nx = data.shape
    x0, y0 = position
    flux, background = _background_subtracted_sums(data, mask, [position], radius, r_in, r_out)
    usable = ~mask
    if region is not None:
        usable &= np.asarray(region, dtype=bool)
    if avoid_sources:
        usable &= ~source_mask(ccd, dilate=int(np.ceil(radius)) + 1)
    yy, xx = np.indices(data.shape)
    usable &= np.hypot(xx - x0, yy - y0) > 2 * r_out
    if noise_method == "autocovariance":
        if usable.sum() < 1000:
            raise FrameError(f"only {int(usable.sum())} empty-sky pixels are usable; cannot "
                             "measure the noise.")
        weights = _measurement_weights(radius, r_in, r_out)
        max_lag = weights.shape[0] - 1
        cov = autocovariance(data, usable, max_lag)
        pair_weights = _autocorrelate_small(weights)
        noise = float(np.sqrt(max((cov * pair_weights).sum(), 0.0)))
    else:
        noise = _noise_from_apertures(data, mask, usable, radius, r_in, r_out, n_empty, seed)
    snr = float(flux[0]) / noise if noise > 0 else np.inf  # a noiseless (simulated) image
    return {"flux": float(flux[0]), "noise": noise, "snr": snr,
            "background": float(background[0])}


def _autocorrelate_small(weights):
    """Full 2-D autocorrelation of a small stamp: sum_i w_i w_(i+lag), centred."""
    from scipy.signal import fftconvolve
    return fftconvolve(weights, weights[::-1, ::-1], mode="full")


def _noise_from_apertures(data, mask, usable, radius, r_in, r_out, n_empty, seed):
    rng = np.random.default_rng(seed)
    ny, nx = data.shape
    margin = r_out + 1
    if nx <= 2 * margin or ny <= 2 * margin:
        raise FrameError(f"image of {nx} x {ny} pixels is too small for empty-sky apertures of "
                         f"outer radius {r_out}.")
    candidates = np.column_stack([rng.uniform(margin, nx - margin, 8 * n_empty),
                                  rng.uniform(margin, ny - margin, 8 * n_empty)])
    ix, iy = np.round(candidates[:, 0]).astype(int), np.round(candidates[:, 1]).astype(int)
    candidates = candidates[usable[iy, ix]][:2 * n_empty]
    sums, _ = _background_subtracted_sums(data, mask, candidates, radius, r_in, r_out)
    sums = sums[np.isfinite(sums)][:n_empty]
    if sums.size < 20:
        raise FrameError(f"only {sums.size} unmasked empty-sky apertures fit on the image; "
                         "cannot measure the noise.")
    # Robust: apertures that still fall on faint sources or trails are outliers, not noise.
    return float(mad_std(sums))


def centroid_target(ccd, position, box_size=11, method="2dg"):
    """Refine a source's position with a centroid on a background-subtracted cutout.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData` or array
        The image.
    position : (float, float)
        0-based ``(x, y)`` first guess.
    box_size : int
        Side of the cutout (odd).
    method : {'2dg', 'com'}
        2-D Gaussian fit (`photutils.centroids.centroid_2dg`) or centre of mass.

    Returns
    -------
    x, y : float
        0-based centroid.
    """
    data, mask = data_and_mask(ccd)
    half = box_size // 2
    xi, yi = int(round(position[0])), int(round(position[1]))
    y0, y1 = max(0, yi - half), min(data.shape[0], yi + half + 1)
    x0, x1 = max(0, xi - half), min(data.shape[1], xi + half + 1)
    cut, cmask = data[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    if cut.size == 0 or cmask.all():
        raise FrameError(f"no valid pixels around ({position[0]:.1f}, {position[1]:.1f}).")
    background = np.median(np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]]))
    from photutils.centroids import centroid_2dg, centroid_com

    func = centroid_2dg if method == "2dg" else centroid_com
    cx, cy = func(np.where(cmask, 0, cut - background), mask=cmask)
    return float(cx + x0), float(cy + y0)
