# Licensed under a 3-clause BSD style license - see LICENSE
"""Rows and columns whose sky the background model misses, for the motion search.

A raw frame's edges fall off steeply (the readout ramp of its first rows, vignetting), and
a box background cannot follow a drop of hundreds of sigma over ten rows. Where the frames
share one pointing the static sky takes the residual away; where they are dithered, each
frame's residual line lies elsewhere on the grid, and a line matches every motion along it:
one such row made 19 false candidates above 7 sigma over a dithered field. Bad columns and
rows of a detector do the same. So the lines the model misses are masked: on segments of
rows and of columns, the median of the residual in units of the pixel noise is compared
with that of all segments; a segment off by more than ``threshold`` (and by more than
``k`` times the segments' own robust scatter, so that a crowded or nebulous field is not
masked whole) is masked.

A residual ``a`` (in pixel sigmas) along a line gives a PSF fit about
``a * sqrt(4 pi) * sigma_psf`` sigma in each frame (1.3 sigma at ``a = 0.3`` for a 3-pixel
FWHM), and up to ``sqrt(n_frames)`` times that where a trajectory runs along it: hence the
default threshold of 0.3.

Only when the frames are dithered (`frames_dithered`): where they share one pointing to
within a pixel or two, as guided frames of one field do, a detector's lines fall on the same
grid pixels in every frame and the static sky cancels them; masking them there would only
lose sky (a sixth of a raw Lowell frame, whose edges are vignetted).
"""

import numpy as np

from .._combine_block import median_of_valid
from ._kernel import sigma_g

__all__ = []


def _segment_medians(z, segment):
    """Median of ``z`` (NaN = bad) over segments of ``segment`` pixels of each row; NaN
    where fewer than a quarter of a segment's pixels are good."""
    ny, nx = z.shape
    nseg = -(-nx // segment)
    padded = np.full((ny, nseg * segment), np.nan, np.float32)
    padded[:, :nx] = z
    blocks = np.moveaxis(padded.reshape(ny, nseg, segment), 2, 0)
    count = np.sum(np.isfinite(blocks), axis=0)
    return np.where(count >= segment // 4, median_of_valid(blocks, count), np.nan)


def bad_lines(residual, std, bad, segment=256, threshold=0.3, k=5.0):
    """Mask of the row and column segments whose median residual is off the sky.

    Parameters
    ----------
    residual : ndarray
        The frame minus its background model, in its own pixels.
    std : ndarray
        The pixel noise (same shape).
    bad : ndarray of bool
        Pixels already masked (left out of the medians).
    segment : int
        Length of a segment of a row or column, pixels (the whole line if shorter).
    threshold : float
        Smallest offset of a segment's median, in pixel sigmas, that is masked.
    k : float
        ... and in units of the segments' robust scatter.

    Returns
    -------
    ndarray of bool
        True on the pixels of the segments masked.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(bad | ~(std > 0), np.nan, residual / std).astype(np.float32)
    out = np.zeros(z.shape, bool)
    for plane, target in ((z, out), (z.T, out.T)):
        n = plane.shape[1]
        length = int(min(segment, n))
        medians = _segment_medians(plane, length)
        finite = np.isfinite(medians)
        if np.count_nonzero(finite) < 8:
            continue
        values = medians[finite]
        limit = max(threshold, k * sigma_g(values))
        flagged = finite & (np.abs(medians - np.median(values)) > limit)
        target |= np.repeat(flagged, length, axis=1)[:, :n]
    return out


def frames_dithered(wcses, shapes, limit=2.0):
    """Whether a frame's pixels fall more than ``limit`` pixels from the first frame's.

    The corners of each frame, in the first frame's pixels, against their own: a dither,
    a drift over the night, a rotation or another detector all move them.
    """
    reference = wcses[0]
    for wcs, (ny, nx) in zip(wcses[1:], shapes[1:]):
        x = np.array([0.0, nx - 1, 0.0, nx - 1])
        y = np.array([0.0, 0.0, ny - 1, ny - 1])
        rx, ry = reference.world_to_pixel(wcs.pixel_to_world(x, y))
        moved = np.hypot(np.asarray(rx) - x, np.asarray(ry) - y)
        if not np.all(np.isfinite(moved)) or moved.max() > limit:
            return True
    return False
