# Licensed under a 3-clause BSD style license - see LICENSE
"""Vectorised neighbourhood look-ups and medians at selected pixels (private): the rings
and boxes of the ring-median detector and of the repairs."""

import numpy as np


# The eight neighbours (Chebyshev distance 1) and the 24 pixels at distance 3.
RING1 = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)])
RING3 = np.array([(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                  if max(abs(dy), abs(dx)) == 3])
# The 3x3 box, centre included, for the star-shape test.
BOX3 = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
# The 5x5 box without its centre, and the 9x9 one, for repairs.
BOX5 = np.array([(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0)])
BOX9 = np.array([(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if (dy, dx) != (0, 0)])
# Variance of the median of n independent Gaussian values is about (pi / 2) sigma^2 / n;
# the residual (pixel - median of its 8 neighbours) therefore has variance
# sigma^2 (1 + pi / 16), as the two are independent.
RESIDUAL_VAR = 1.0 + np.pi / (2 * len(RING1))
REPAIR_VAR = 1.0 + np.pi / (2 * len(BOX5))
# and m1 - m3 (the medians of 8 and of 24 pixels) has variance sigma^2 pi (1/16 + 1/48).
BROAD_VAR = np.pi / (2 * len(RING1)) + np.pi / (2 * len(RING3))


def mirror(index, n):
    """Mirror indices that fall off [0, n) back in (``abc|cb``, the pixel itself excluded)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def gather(array, ys, xs, offsets, by_offset=False):
    """Values of ``array`` at ``(ys + dy, xs + dx)`` for each offset: shape (n, k), or
    (k, n) with ``by_offset``.

    Offsets that fall off the image are mirrored back in (only for the pixels near an
    edge, so the common case is a single flat ``take``).
    """
    ny, nx = array.shape
    reach = int(np.abs(offsets).max())
    yy = ys[:, None] + offsets[None, :, 0]
    xx = xs[:, None] + offsets[None, :, 1]
    edge = (ys < reach) | (ys >= ny - reach) | (xs < reach) | (xs >= nx - reach)
    if edge.any():
        yy[edge] = mirror(yy[edge], ny)
        xx[edge] = mirror(xx[edge], nx)
    flat = yy * nx + xx
    return np.take(array.reshape(-1), flat.T if by_offset else flat)


# Batcher's odd-even merge sort of 8 elements: 19 compare-exchanges.
SORT8 = ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (1, 2), (5, 6),
         (0, 4), (3, 7), (1, 5), (2, 6), (1, 4), (3, 6), (2, 4), (3, 5), (3, 4))


def median8(rows):
    """Median of 8 values for many pixels at once: ``rows`` has shape (8, n).

    A sorting network on whole rows (element-wise minimum and maximum) is several times
    faster than `numpy.median` along a short axis.
    """
    v = list(rows)
    for i, j in SORT8:
        v[i], v[j] = np.minimum(v[i], v[j]), np.maximum(v[i], v[j])
    return 0.5 * (v[3].astype(np.float64) + v[4])


def median24(values):
    """Median of each row of 24 values (the ring at distance 3), as float64."""
    part = np.partition(values, (11, 12), axis=1)
    return 0.5 * (part[:, 11].astype(np.float64) + part[:, 12])


def row_nanmedian(values):
    """Median of each row ignoring NaN (NaN where a row has none): sorting puts NaN last,
    which is much faster than `numpy.nanmedian` on many short rows."""
    values = np.sort(values, axis=1)
    count = np.count_nonzero(~np.isnan(values), axis=1)
    low = np.take_along_axis(values, np.maximum(count - 1, 0)[:, None] // 2, axis=1)[:, 0]
    high = np.take_along_axis(values, (count // 2)[:, None], axis=1)[:, 0]
    out = 0.5 * (low + high)
    out[count == 0] = np.nan
    return out


def masked_median(array, bad, ys, xs, fallback, flagged=None):
    """Median of the good pixels around each (ys, xs): the 5x5 box, else 9x9, else fallback.

    Pixels are bad where ``bad`` (or ``flagged``, if given) is True."""
    out = np.full(len(ys), fallback, dtype=np.float64)
    todo = np.arange(len(ys))
    for offsets in (BOX5, BOX9):
        if not len(todo):
            break
        values = gather(array, ys[todo], xs[todo], offsets).astype(np.float64)
        exclude = gather(bad, ys[todo], xs[todo], offsets)
        if flagged is not None:
            exclude |= gather(flagged, ys[todo], xs[todo], offsets)
        values[exclude] = np.nan
        median = row_nanmedian(values)
        ok = ~np.isnan(median)
        out[todo[ok]] = median[ok]
        todo = todo[~ok]
    return out
