# Licensed under a 3-clause BSD style license - see LICENSE
"""Measuring the target in a frame or a stack: centroid, FWHM, flux and an honest S/N.

Resampled pixels are correlated, so the pixel-to-pixel scatter of a stack underestimates
the noise of an aperture sum. The S/N here uses the scatter of the same aperture placed on
empty sky, measured with the same local-background subtraction, which includes that
correlation by construction.
"""

import logging
import warnings

import numpy as np
from astropy.stats import mad_std, sigma_clipped_stats
from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry
from photutils.centroids import centroid_2dg, centroid_com

from .exceptions import FrameError

__all__ = ["aperture_snr", "centroid_target", "measure_fwhm", "source_mask"]

log = logging.getLogger(__name__)


def _arrays(ccd):
    data = np.asarray(getattr(ccd, "data", ccd), dtype=float)
    mask = ~np.isfinite(data)
    if getattr(ccd, "mask", None) is not None:
        mask |= np.asarray(ccd.mask, dtype=bool)
    return data, mask


def _annulus_background(data, mask, positions, r_in, r_out):
    annulus = CircularAnnulus(positions, r_in, r_out)
    values = []
    for ann in annulus.to_mask(method="center"):
        pix = ann.get_values(np.where(mask, np.nan, data))
        pix = pix[np.isfinite(pix)]
        values.append(sigma_clipped_stats(pix, sigma=3)[1] if pix.size > 5 else np.nan)
    return np.array(values)


def _background_subtracted_sums(data, mask, positions, radius, r_in, r_out):
    aperture = CircularAperture(positions, radius)
    table = aperture_photometry(np.where(mask, 0, data), aperture, mask=mask)
    masked = aperture_photometry(mask.astype(float), aperture)["aperture_sum"]
    background = _annulus_background(data, mask, positions, r_in, r_out)
    sums = np.asarray(table["aperture_sum"]) - background * aperture.area
    sums[np.asarray(masked) > 0] = np.nan  # an aperture touching a masked pixel is not used
    return sums, background


def source_mask(ccd, nsigma=2.0, npixels=5, dilate=3):
    """Pixels covered by detected sources (stars, trails), grown by ``dilate`` pixels.

    Sources are the connected groups of at least ``npixels`` pixels above ``nsigma`` times
    the sigma-clipped sky noise (`photutils.segmentation.detect_sources`).
    """
    from photutils.segmentation import detect_sources
    from photutils.utils.exceptions import NoDetectionsWarning
    from scipy.ndimage import binary_dilation
    data, mask = _arrays(ccd)
    _, median, std = sigma_clipped_stats(data[~mask], sigma=3)
    with warnings.catch_warnings():  # an empty field is an answer, not a problem
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segments = detect_sources(np.where(mask, median, data) - median, nsigma * std, npixels)
    if segments is None:
        return np.zeros(data.shape, dtype=bool)
    footprint = np.hypot(*np.mgrid[-dilate:dilate + 1, -dilate:dilate + 1]) <= dilate
    return binary_dilation(segments.data > 0, structure=footprint)


def aperture_snr(ccd, position, radius, annulus=None, n_empty=300, seed=0, region=None,
                 avoid_sources=True):
    """Flux and S/N of a source, with the noise measured on empty sky.

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
    n_empty : int
        Number of apertures placed at random on the image, away from the source, to measure
        the noise of an aperture sum (their robust standard deviation).
    seed : int
        Seed of the random placement.
    region : boolean array, optional
        Where empty-sky apertures may be centred, e.g. ``result.coverage == n_frames`` so
        that the noise is measured where as many frames overlap as at the target (the
        edges of a stack of dithered frames are noisier).
    avoid_sources : bool
        Keep empty-sky apertures off detected sources (`source_mask`): a star's light is
        signal, not noise, and would not average down in a stack.

    Returns
    -------
    result : dict
        ``flux`` (background-subtracted aperture sum), ``noise`` (robust standard deviation
        of the same measurement on empty sky), ``snr``, ``background`` (per pixel) and
        ``n_empty`` (apertures used).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(0.0, 1.0, (200, 200))
    >>> image[100, 100] += 50.0
    >>> result = aperture_snr(image, (100, 100), radius=3)
    >>> bool(40 < result["flux"] < 60), bool(0.8 < result["noise"] / np.sqrt(np.pi * 9) < 1.2)
    (True, True)
    """
    data, mask = _arrays(ccd)
    r_in, r_out = annulus if annulus is not None else (2 * radius + 2, 3 * radius + 4)
    ny, nx = data.shape
    x0, y0 = position
    flux, background = _background_subtracted_sums(data, mask, [position], radius, r_in, r_out)
    rng = np.random.default_rng(seed)
    margin = r_out + 1
    if nx <= 2 * margin or ny <= 2 * margin:
        raise FrameError(f"image of {nx} x {ny} pixels is too small for empty-sky apertures of "
                         f"outer radius {r_out}.")
    candidates = np.column_stack([rng.uniform(margin, nx - margin, 8 * n_empty),
                                  rng.uniform(margin, ny - margin, 8 * n_empty)])
    keep = np.hypot(candidates[:, 0] - x0, candidates[:, 1] - y0) > 2 * r_out
    if region is not None:
        region = np.asarray(region, dtype=bool)
        ix, iy = np.round(candidates[:, 0]).astype(int), np.round(candidates[:, 1]).astype(int)
        keep &= region[iy, ix]
    if avoid_sources:
        occupied = source_mask(ccd, dilate=int(np.ceil(radius)) + 1)
        ix, iy = np.round(candidates[:, 0]).astype(int), np.round(candidates[:, 1]).astype(int)
        keep &= ~occupied[iy, ix]
    candidates = candidates[keep][:2 * n_empty]
    sums, _ = _background_subtracted_sums(data, mask, candidates, radius, r_in, r_out)
    sums = sums[np.isfinite(sums)][:n_empty]
    if sums.size < 20:
        raise FrameError(f"only {sums.size} unmasked empty-sky apertures fit on the image; "
                         "cannot measure the noise.")
    # Robust: apertures that fall on stars or trails are outliers, not noise.
    noise = float(mad_std(sums))
    return {"flux": float(flux[0]), "noise": noise, "snr": float(flux[0]) / noise,
            "background": float(background[0]), "n_empty": int(sums.size)}


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
    data, mask = _arrays(ccd)
    half = box_size // 2
    xi, yi = int(round(position[0])), int(round(position[1]))
    y0, y1 = max(0, yi - half), min(data.shape[0], yi + half + 1)
    x0, x1 = max(0, xi - half), min(data.shape[1], xi + half + 1)
    cut, cmask = data[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    if cut.size == 0 or cmask.all():
        raise FrameError(f"no valid pixels around ({position[0]:.1f}, {position[1]:.1f}).")
    background = np.median(np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]]))
    func = centroid_2dg if method == "2dg" else centroid_com
    cx, cy = func(np.where(cmask, 0, cut - background), mask=cmask)
    return float(cx + x0), float(cy + y0)


def measure_fwhm(ccd, position, fit_shape=9):
    """FWHM (pixels) of a source by a 2-D Gaussian fit (`photutils.psf.fit_fwhm`).

    The local background (median of the fit box's border) is subtracted first.
    """
    from photutils.psf import fit_fwhm
    data, mask = _arrays(ccd)
    half = fit_shape // 2 + 3
    xi, yi = int(round(position[0])), int(round(position[1]))
    box = data[max(0, yi - half):yi + half + 1, max(0, xi - half):xi + half + 1]
    background = np.median(np.concatenate([box[0], box[-1], box[:, 0], box[:, -1]]))
    return float(fit_fwhm(np.where(mask, 0, data - background), xypos=[position],
                          fit_shape=fit_shape, mask=mask)[0])
