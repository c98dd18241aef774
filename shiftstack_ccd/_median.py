# Licensed under a 3-clause BSD style license - see LICENSE
"""The variance of a median of resampled frames (see `shiftstack_ccd.combine`, module notes).

``F(n)``, the exact variance of the median of ``n`` Gaussian values in units of the variance
of their mean, and ``kappa``, the correction for the noise correlation that resampling leaves
between neighbouring pixels.
"""

import functools

import numpy as np

#: Variance of the median of n Gaussian values relative to their mean, for large n.
MEDIAN_VARIANCE_FACTOR = np.pi / 2

#: Beyond this many values the median's variance factor is taken as pi/2 (within 0.5%).
MEDIAN_EXACT_UP_TO = 200


# ------------------------------------------------------------------------------------------
# The median's variance
# ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def median_variance_factor(n):
    """Var(median of n unit Gaussians) * n: exact from the order-statistic densities.

    Odd n: the variance of the middle order statistic. Even n: of the mean of the two
    middle ones, whose cross moment is a 1-D integral of a cumulative integral. 1 for n <= 2.
    """
    if n <= 2:
        return 1.0
    if n > MEDIAN_EXACT_UP_TO:
        return MEDIAN_VARIANCE_FACTOR
    from scipy.integrate import cumulative_trapezoid, trapezoid
    from scipy.special import gammaln, log_ndtr
    x = np.linspace(-10, 10, 20001)
    log_phi = -x * x / 2 - 0.5 * np.log(2 * np.pi)
    log_cdf, log_sf = log_ndtr(x), log_ndtr(-x)

    def density(k):  # of the k-th of n order statistics
        return np.exp(gammaln(n + 1) - gammaln(k) - gammaln(n - k + 1)
                      + (k - 1) * log_cdf + (n - k) * log_sf + log_phi)

    if n % 2:
        return float(n * trapezoid(x * x * density((n + 1) // 2), x))
    k = n // 2
    second = trapezoid(x * x * density(k), x) + trapezoid(x * x * density(k + 1), x)
    # E[X_k X_k+1] = c int x F^(k-1) f(x) int_x^inf y (1-F)^(n-k-1) f(y) dy dx
    half_log_c = (gammaln(n + 1) - gammaln(k) - gammaln(n - k)) / 2
    inner = x * np.exp(half_log_c + (n - k - 1) * log_sf + log_phi)
    tail = -cumulative_trapezoid(inner[::-1], x[::-1], initial=0)[::-1]
    cross = trapezoid(x * np.exp(half_log_c + (k - 1) * log_cdf + log_phi) * tail, x)
    return float(n * (second + 2 * cross) / 4)


def median_variance_factors(n_max):
    """``F(n)`` for n = 0 .. n_max, as an array indexed by n."""
    return np.array([median_variance_factor(n) for n in range(n_max + 1)])


@functools.lru_cache(maxsize=None)
def median_correlation_factor(interpolation):
    """``kappa`` for a resampling kernel: (2/pi) <s2 sum arcsin(rho)> / <s2 sum rho>.

    rho is the noise correlation of a frame resampled with the kernel at one sub-pixel
    phase (the normalised autocorrelation of the 2-D kernel), s2 its zero-lag value; the
    average is over 16 x 16 phases. ``interpolation``: 'bicubic' or 'bilinear' (the kernels
    of `resample_to_target`), or 'none'.
    """
    if interpolation == "none":
        return 1.0
    from scipy.ndimage import map_coordinates
    order = {"bilinear": 1, "bicubic": 3}[interpolation]
    size = 41
    phases = (np.arange(16) + 0.5) / 16
    impulses = np.eye(size)
    # 1-D kernel at each phase: the weights of every input sample in one output sample
    kernels = [np.array([map_coordinates(impulse, [[size // 2 + t]], order=order,
                                         mode="constant")[0] for impulse in impulses])
               for t in phases]
    # the 2-D kernel is separable, so is its autocorrelation
    acovs = [np.correlate(k, k, mode="full") for k in kernels]
    numerator = denominator = 0.0
    for ax in acovs:
        for ay in acovs:
            acov = np.outer(ay, ax)
            zero_lag = acov.max()
            rho = np.clip(acov / zero_lag, -1, 1)
            numerator += zero_lag * np.arcsin(rho).sum()
            denominator += zero_lag * rho.sum()
    return float(2 / np.pi * numerator / denominator)


def frame_correlation_factor(meta):
    """``kappa`` of one frame from what `resample_to_target` wrote in its header."""
    interpolation = meta.get("SSINTERP")
    if interpolation not in ("bicubic", "bilinear"):
        return 1.0  # not resampled here: no interpolation to correct for
    if meta.get("SSRESAMP") == "shift":
        shifts = [meta.get("SSSHIFTX"), meta.get("SSSHIFTY")]
        if all(s is not None and float(s) == round(float(s)) for s in shifts):
            return 1.0  # whole-pixel shift: no interpolation
    return median_correlation_factor(interpolation)
