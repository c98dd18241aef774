# Licensed under a 3-clause BSD style license - see LICENSE
"""Combining resampled frames: mean, median or sum, with clipping, weights and coverage."""

import contextlib
import logging
import warnings

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.nddata import CCDData, StdDevUncertainty, VarianceUncertainty
from ccdproc import Combiner

from .exceptions import FrameError

__all__ = ["CombineResult", "combine_frames"]

log = logging.getLogger(__name__)

#: Variance of the median of n Gaussian values relative to their mean, for large n.
MEDIAN_VARIANCE_FACTOR = np.pi / 2


@contextlib.contextmanager
def _all_nan_is_expected():
    """Pixels that no frame covers are all-NaN columns: expected, not worth a warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        warnings.filterwarnings("ignore", "Input data contains invalid values",
                                AstropyUserWarning)
        yield


class CombineResult:
    """What `combine_frames` returns: the image, its coverage, and per-frame rejection.

    Attributes
    ----------
    image : `~astropy.nddata.CCDData`
        The combined image.
    coverage : `~numpy.ndarray` of int
        Number of frames that contribute to each pixel (after clipping).
    rejected_fraction : `~numpy.ndarray`
        For each input frame, the fraction of its valid pixels that clipping rejected.
    """

    def __init__(self, image, coverage, rejected_fraction):
        self.image = image
        self.coverage = coverage
        self.rejected_fraction = rejected_fraction


def combine_frames(frames, method="mean", sigma_clip=False, sigma_low=3.0, sigma_high=3.0,
                   weights=None):
    """Combine frames that share one grid (e.g. the output of `resample_to_target`).

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData`
        Same shape, same unit, each with an uncertainty; masked pixels do not contribute.
    method : {'mean', 'median', 'sum'}
        ``'sum'`` is the total of all frames: ``N`` times the (weighted) mean, so a pixel
        where some frames are masked is not biased low (a plain sum would be).
    sigma_clip : bool
        Reject pixels beyond ``sigma_low``/``sigma_high`` times the robust scatter about the
        median of the frames at that pixel (``ccdproc.Combiner.sigma_clipping`` with median
        and ``mad_std``), before combining.
    sigma_low, sigma_high : float
        Clipping thresholds.
    weights : array-like, optional
        One weight per frame for the mean and sum (default: equal).

    Returns
    -------
    result : `CombineResult`
        ``result.image`` carries a `~astropy.nddata.StdDevUncertainty` propagated from the
        inputs' variances (mean: ``sum(w_i^2 var_i) / sum(w_i)^2`` over the frames that
        contribute; median: pi/2 times the equal-weight mean's variance, its large-N
        Gaussian value), a mask where no frame contributes (those pixels are NaN), the grid's
        WCS, and ``NCOMBINE``/``SSCOMB``/``SSCLIP`` in its header.

    Notes
    -----
    Masks and clipping come from `ccdproc.Combiner`, and so does the median. The mean is
    computed here with `numpy.ma.average`, because ccdproc 2.5.1's weighted average
    mishandles masked pixels (its weights are not renormalised over the unmasked frames).

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData, StdDevUncertainty
    >>> frames = [CCDData(np.full((3, 3), v, dtype=np.float32), unit="electron",
    ...                   uncertainty=StdDevUncertainty(np.full((3, 3), 2.0, dtype=np.float32)))
    ...           for v in (1.0, 2.0, 3.0, 4.0)]
    >>> result = combine_frames(frames, method="mean")
    >>> float(result.image.data[1, 1]), float(result.image.uncertainty.array[1, 1])
    (2.5, 1.0)
    """
    if method not in ("mean", "median", "sum"):
        raise ValueError(f"method must be 'mean', 'median' or 'sum', not {method!r}")
    frames = list(frames)
    if not frames:
        raise FrameError("no frames to combine.")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise FrameError(f"frames to combine must share one grid; shapes differ: {shapes}")
    n = len(frames)
    dtype = np.float64 if any(f.data.dtype == np.float64 for f in frames) else np.float32
    variances = np.empty((n,) + frames[0].shape, dtype=dtype)
    for i, frame in enumerate(frames):
        if frame.uncertainty is None:
            raise FrameError(f"frame #{i} has no uncertainty; cannot propagate the variance.")
        variances[i] = frame.uncertainty.represent_as(VarianceUncertainty).array

    combiner = Combiner(frames, dtype=dtype)
    # ccdproc only masks what the inputs mask; a NaN left unmasked would poison the result.
    combiner.data_arr.mask |= ~np.isfinite(combiner.data_arr.data) | ~np.isfinite(variances)
    valid_before = (~combiner.data_arr.mask).reshape(n, -1).sum(axis=1)
    if sigma_clip:
        with _all_nan_is_expected():
            combiner.sigma_clipping(low_thresh=sigma_low, high_thresh=sigma_high,
                                    func="median", dev_func="mad_std")
    good = ~combiner.data_arr.mask
    coverage = good.sum(axis=0).astype(np.int16)
    rejected = 1 - good.reshape(n, -1).sum(axis=1) / np.maximum(valid_before, 1)

    if weights is None:
        w = np.ones(n, dtype=dtype)
    else:
        w = np.asarray(weights, dtype=dtype)
        if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
            raise ValueError(f"weights must be {n} finite non-negative numbers, not {weights!r}")
    wcube = good * w[:, None, None]
    wsum = wcube.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        filled = np.where(good, combiner.data_arr.data, 0)
        mean = (wcube * filled).sum(axis=0) / wsum
        var_mean = (wcube ** 2 * np.where(good, variances, 0)).sum(axis=0) / wsum ** 2
        if method == "mean":
            data, var = mean, var_mean
        elif method == "sum":
            data, var = mean * w.sum(), var_mean * w.sum() ** 2
        else:
            with _all_nan_is_expected():
                data = np.ma.getdata(combiner.median_combine().data)
            var_equal = np.where(good, variances, 0).sum(axis=0) / np.maximum(coverage, 1) ** 2
            var = MEDIAN_VARIANCE_FACTOR * var_equal
    mask = coverage == 0
    data = np.where(mask, np.nan, data).astype(dtype)
    std = np.sqrt(np.where(mask, np.nan, var)).astype(dtype)
    meta = fits.Header()
    meta["NCOMBINE"] = (n, "number of frames combined")
    meta["SSCOMB"] = (method, "combine method")
    meta["SSCLIP"] = (bool(sigma_clip), "sigma clipping applied")
    if sigma_clip:
        meta["SSCLIPLO"] = (float(sigma_low), "low clipping threshold (sigma)")
        meta["SSCLIPHI"] = (float(sigma_high), "high clipping threshold (sigma)")
    image = CCDData(data, unit=frames[0].unit, wcs=frames[0].wcs, mask=mask,
                    uncertainty=StdDevUncertainty(std), meta=meta)
    log.info("combined %d frames by %s%s; %.1f%% of pixels covered", n, method,
             " with sigma clipping" if sigma_clip else "", 100 * (1 - mask.mean()))
    return CombineResult(image, coverage, rejected)
