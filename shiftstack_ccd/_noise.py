# Licensed under a 3-clause BSD style license - see LICENSE
"""The noise of linear measurements on a stack, correlations included (private).

A stack's pixels are correlated (resampling spreads each input pixel over a few output
pixels) and its reported uncertainty may be off by a factor (a frame whose uncertainty was
estimated badly). Both are measured on the stack's own empty sky: the autocovariance
``C(lag)`` of the normalised residual ``z = (data - background) / sigma``. The variance of
any linear measurement ``sum_a w_a d_a`` is then ``sum_ab w_a w_b sigma_a sigma_b
C(a - b)``: exact for correlated noise, and right whatever the scale of ``sigma``, as long
as the empty sky and the target share the noise's structure (they were resampled and
combined the same way).
"""

import numpy as np

__all__ = []


def autocovariance(values, good, max_lag):
    """Autocovariance of ``values`` over the ``good`` pixels, lags up to ``max_lag``.

    Returns a ``(2 max_lag + 1)`` square array, zero lag at the centre. Sums over pixel pairs
    and the pair counts are both computed by FFT on a zero-padded grid, so gaps are handled.
    """
    x = np.where(good, values - np.mean(values[good]), 0.0)
    g = good.astype(float)
    shape = [n + max_lag + 1 for n in values.shape]
    fx, fg = np.fft.rfft2(x, shape), np.fft.rfft2(g, shape)
    sums = np.fft.irfft2(fx * np.conj(fx), shape)
    pairs = np.fft.irfft2(fg * np.conj(fg), shape)
    lags = np.r_[0:max_lag + 1, -max_lag:0]
    sums, pairs = sums[np.ix_(lags, lags)], pairs[np.ix_(lags, lags)]
    cov = np.where(pairs > 0.5, sums / np.maximum(pairs, 1), 0.0)
    return np.fft.fftshift(cov)


def normalised_residual_covariance(data, sigma, usable, max_lag, box=32, clip=6.0):
    """``C(lag)`` of ``(data - background) / sigma`` on the usable pixels (see the module).

    The background is `photutils.background.Background2D` (median in ``box`` pixels);
    pixels beyond ``clip`` robust standard deviations (faint sources, hot pixels) are left
    out of the sums.

    Returns
    -------
    cov : ndarray
        The autocovariance, zero lag at the centre.
    n_pixels : int
        The number of pixels it was measured on.
    """
    from astropy.stats import mad_std
    from photutils.background import Background2D, MedianBackground

    good = usable & np.isfinite(data) & np.isfinite(sigma) & (sigma > 0)
    ny, nx = data.shape
    box = int(max(8, min(box, ny // 2, nx // 2)))
    filled = np.where(good, data, np.nan)
    try:
        background = Background2D(filled, box, mask=~good, bkg_estimator=MedianBackground(),
                                  exclude_percentile=50).background
    except ValueError:  # too few good boxes: a constant background
        background = np.full(data.shape, np.median(data[good]))
    z = np.where(good, (data - background) / np.where(good, sigma, 1.0), 0.0)
    scale = mad_std(z[good])
    good &= np.abs(z - np.median(z[good])) < clip * scale
    return autocovariance(z, good, max_lag), int(good.sum())


def measurement_covariance(weights, sigma, cov):
    """Covariance matrix of the linear measurements ``sum_a weights[i, a] * data_a``.

    Parameters
    ----------
    weights : ndarray, shape (p, h, w)
        One weight image per measurement, on a patch of the stack.
    sigma : ndarray, shape (h, w)
        The stack's uncertainty on the patch (zero where the weights are zero).
    cov : ndarray
        Normalised-residual autocovariance (`normalised_residual_covariance`), odd square.
    """
    from scipy.signal import fftconvolve
    scaled = weights * sigma[None]
    smoothed = np.array([fftconvolve(u, cov, mode="same") for u in scaled])
    return np.einsum("iab,jab->ij", scaled, smoothed)
