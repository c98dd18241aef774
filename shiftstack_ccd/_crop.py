# Licensed under a 3-clause BSD style license - see LICENSE
"""Cutting a frame to what the output grids can show (for `shift_and_stack`)."""

import numpy as np

from ._utils import pixel_to_pixel

__all__ = []


def crop_to_grids(frame, position, wcses, shape, margin=8):
    """The frame cut to the box that the output grids can draw on, and the target in it.

    Saves resampling (and static-sky subtraction) of pixels that fall off the output, which
    for a small ``size`` is most of the frame. The margin covers the interpolation kernel.
    CCDData slicing keeps the WCS consistent.
    """
    ny, nx = shape
    edge = np.linspace(-0.5, 1, 9)
    border = np.concatenate([np.column_stack([edge * nx, np.full(9, -0.5)]),
                             np.column_stack([edge * nx, np.full(9, ny - 0.5)]),
                             np.column_stack([np.full(9, -0.5), edge * ny]),
                             np.column_stack([np.full(9, nx - 0.5), edge * ny])])
    xs, ys = [], []
    for wcs in wcses:
        x, y = pixel_to_pixel(wcs, frame.wcs, border[:, 0], border[:, 1])
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        return frame, position
    fy, fx = frame.shape
    x0 = max(0, int(np.floor(xs.min())) - margin)
    x1 = min(fx, int(np.ceil(xs.max())) + margin + 1)
    y0 = max(0, int(np.floor(ys.min())) - margin)
    y1 = min(fy, int(np.ceil(ys.max())) + margin + 1)
    if (x0, y0, x1, y1) == (0, 0, fx, fy) or x1 - x0 < 2 * margin or y1 - y0 < 2 * margin:
        return frame, position
    # A copy: a CCDData slice is a view that would keep the whole frame alive for as long
    # as the crop is kept (until the combine, for every frame).
    cropped = frame[y0:y1, x0:x1].copy()
    return cropped, (position[0] - x0, position[1] - y0)
