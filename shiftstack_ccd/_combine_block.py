# Licensed under a 3-clause BSD style license - see LICENSE
"""The combine's per-block arithmetic: clipping, the median of valid values, mean sums.

A block is a (frames, rows, columns) cube of data, variance and bad-pixel flags (see
`shiftstack_ccd.combine`, module notes, for the rules).
"""

import contextlib
import functools
import warnings

import numpy as np

from ._median import median_variance_factors


@contextlib.contextmanager
def quiet():
    """All-NaN columns (pixels no frame covers) are expected, not worth a warning."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        yield


#: Largest number of frames sorted by a network of minima and maxima (`sorted_planes`):
#: beyond it `numpy.sort` is faster (measured: 10 frames 1.2 ms against 4.8 for 301 x 301
#: pixels, 20 frames 4.1 against 6.4, 40 frames 12 against 10).
NETWORK_MAX = 24


@functools.lru_cache(maxsize=None)
def _batcher_pairs(n):
    """The comparators ``(i, j)``, ``i < j``, of Batcher's odd-even merge sort of ``n``
    values (the network of the next power of two, without the comparators that would touch
    the missing values: they would only move padding)."""
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return tuple(pairs)


def sorted_planes(cube):
    """The planes of ``cube`` (frames, rows, columns) sorted along the frames, for finite
    values only (NaN does not order): a sorting network of `numpy.minimum` and
    `numpy.maximum` over whole planes. `numpy.sort` along the first axis sorts every
    pixel's few values apart, and pays for each pixel more than for its values.
    """
    planes = [np.array(plane) for plane in cube]
    for a, b in _batcher_pairs(len(planes)):
        low = np.minimum(planes[a], planes[b])
        np.maximum(planes[a], planes[b], out=planes[b])
        planes[a] = low
    return planes


def median_of_valid(cube, count):
    """Median along axis 0 of a cube whose invalid values are NaN; ``count`` valid ones.

    `numpy.sort` puts NaN last, so the median of the ``count`` valid values sits at
    positions ``(count-1)//2`` and ``count//2``: one sort, no masked arrays
    (`numpy.nanmedian` on a short axis goes through `numpy.ma`, several times slower).
    When every value is valid and the frames are few, a sorting network does the sort
    (`sorted_planes`), the same numbers.
    """
    n = cube.shape[0]
    if 0 < n <= NETWORK_MAX and count.size and count.min() == n:
        planes = sorted_planes(cube)
        return 0.5 * (planes[(n - 1) // 2] + planes[n // 2])
    ordered = np.sort(cube, axis=0)
    lo = np.maximum((count - 1) // 2, 0)[None]
    hi = np.maximum(count // 2, 0)[None]
    low = np.take_along_axis(ordered, lo, axis=0)[0]
    high = np.take_along_axis(ordered, np.minimum(hi, cube.shape[0] - 1), axis=0)[0]
    del ordered
    median = 0.5 * (low + high)
    median[count == 0] = np.nan
    return median


def local_gradient(image):
    """Largest absolute difference between each pixel and its 8 neighbours (NaN ignored)."""
    padded = np.pad(image, 1, constant_values=np.nan)
    ny, nx = image.shape
    out = np.zeros(image.shape, dtype=image.dtype)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            diff = np.abs(padded[1 + dy:1 + dy + ny, 1 + dx:1 + dx + nx] - image)
            np.fmax(out, diff, out=out)
    return np.nan_to_num(out, nan=0.0)


def reject_outliers(data, var, bad, core, sigma_low, sigma_high, gradient):
    """Which values of the rows ``core`` of a block to reject (see the module notes).

    ``data`` has NaN where ``bad``; rows outside ``core`` are the halo used for the
    gradient of the median image. Returns the rejection mask of the core rows.
    """
    count = (~bad).sum(axis=0)
    median = median_of_valid(data, count)
    allowance = gradient * local_gradient(median)[core] if gradient else 0.0
    median, count = median[core], count[core]
    d, v = data[:, core], var[:, core]
    deviation = d - median
    spread = 1.482602218505602 * median_of_valid(np.abs(deviation), count)
    sigma = np.fmax(np.sqrt(np.clip(v, 0, None)), spread)
    reject = ((deviation > sigma_high * sigma + allowance)
              | (deviation < -(sigma_low * sigma + allowance)))
    reject &= (count >= 3)  # fewer values give no reference to clip against
    reject &= ~bad[:, core]
    return reject


def combine_block(data, var, bad, frame_w, method, inverse_variance, n_frames, kappa,
                  clip, core):
    """Combine one block: (value, variance, coverage, rejected mask, valid per frame).

    ``valid`` counts each frame's usable values in the core rows before clipping.
    """
    with quiet():
        for k in range(data.shape[0]):  # frame by frame: no cube-sized temporaries
            bad[k] |= ~np.isfinite(data[k]) | ~np.isfinite(var[k])
            bad[k] |= (var[k] <= 0) if inverse_variance else (var[k] < 0)
            if frame_w[k] == 0:
                bad[k] = True
            data[k][bad[k]] = np.nan
        if clip is not None:
            rejected = reject_outliers(data, var, bad, core, *clip)
        else:
            rejected = np.zeros((data.shape[0],) + data[0, core].shape, dtype=bool)
        data, var, bad = data[:, core], var[:, core], bad[:, core]
        if rejected.any():
            bad |= rejected
            data[rejected] = np.nan
        good = ~bad
        valid = good.reshape(good.shape[0], -1).sum(axis=1) \
            + rejected.reshape(good.shape[0], -1).sum(axis=1)
        coverage = good.sum(axis=0)
        if method == "median":
            value = median_of_valid(data, coverage)
            var_sum = np.zeros(coverage.shape)
            for k in range(data.shape[0]):
                var_sum += np.where(good[k], var[k], 0.0)
            factors = median_variance_factors(data.shape[0])[coverage]
            variance = kappa * factors * var_sum / np.maximum(coverage, 1) ** 2
        else:
            sw = np.zeros(coverage.shape)
            swx = np.zeros(coverage.shape)
            sw2v = np.zeros(coverage.shape)
            for k in range(data.shape[0]):
                w = np.where(good[k], frame_w[k], 0.0)
                if inverse_variance:
                    w = np.where(good[k], w / np.where(good[k], var[k], 1.0), 0.0)
                sw += w
                swx += w * np.where(good[k], data[k], 0.0)
                sw2v += w * w * np.where(good[k], var[k], 0.0)
            value, variance = mean_from_sums(swx, sw, sw2v)
            if method == "sum":
                value, variance = value * n_frames, variance * n_frames ** 2
    return value, variance, coverage, rejected, valid


def mean_from_sums(swx, sw, sw2v):
    with np.errstate(invalid="ignore", divide="ignore"):
        return swx / sw, sw2v / sw ** 2


def bytes_per_element(itemsize, method, clip):
    """Working bytes per (frame, pixel) of a block (checked with tracemalloc in the tests)."""
    per = 2 * itemsize + 2  # data, variance, bad, good
    if method == "median":
        per += itemsize  # the sorted copy
    if clip:
        per += 5 * itemsize + 3  # sorted, deviation, |deviation| and its sorted copy, sigma
    return per
