# Licensed under a 3-clause BSD style license - see LICENSE
"""Cutting a frame to what the output grids can show (for `shift_and_stack`)."""

import numpy as np

from ._utils import pixel_to_pixel

__all__ = []


def crop_box(frame_shape, frame_wcs, wcses, shape, margin=8, min_size=0):
    """``(x0, y0, x1, y1)``: the box of a frame that the output grids can draw on, or None.

    The grids' outlines (``wcses``, each of ``shape``) mapped onto the frame, grown by
    ``margin`` pixels (the interpolation kernel) and, where smaller, to ``min_size`` pixels
    a side about its centre, within the frame. None when the outlines do not map (e.g.
    beyond a projection's horizon) or the box is the whole frame.
    """
    ny, nx = shape
    # the grid's outline, pixel edges included: from -0.5 to n - 0.5 along each side
    edge = np.linspace(0, 1, 9)
    xe, ye = edge * nx - 0.5, edge * ny - 0.5
    border = np.concatenate([np.column_stack([xe, np.full(9, -0.5)]),
                             np.column_stack([xe, np.full(9, ny - 0.5)]),
                             np.column_stack([np.full(9, -0.5), ye]),
                             np.column_stack([np.full(9, nx - 0.5), ye])])
    xs, ys = [], []
    for wcs in wcses:
        x, y = pixel_to_pixel(wcs, frame_wcs, border[:, 0], border[:, 1])
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        return None
    fy, fx = frame_shape
    box = []
    for low, high, length in ((xs.min(), xs.max(), fx), (ys.min(), ys.max(), fy)):
        start, stop = int(np.floor(low)) - margin, int(np.ceil(high)) + margin + 1
        grow = max(0, min_size - (stop - start))
        if grow:  # grown about the centre, then moved inside the frame if it can be
            start, stop = start - grow // 2, stop + grow - grow // 2
            start, stop = start - max(0, stop - length), stop - min(0, start)
        box += [max(0, start), min(length, stop)]
    x0, x1, y0, y1 = box
    if (x0, y0, x1, y1) == (0, 0, fx, fy) or x1 - x0 < 2 * margin or y1 - y0 < 2 * margin:
        return None
    return x0, y0, x1, y1


def crop_to_grids(frame, position, wcses, shape, margin=8, min_size=0):
    """The frame cut to the box that the output grids can draw on (`crop_box`), and the
    target in it.

    Saves resampling (and static-sky subtraction) of pixels that fall off the output, which
    for a small ``size`` is most of the frame. CCDData slicing keeps the WCS consistent.
    """
    box = crop_box(frame.shape, frame.wcs, wcses, shape, margin, min_size)
    if box is None:
        return frame, position
    x0, y0, x1, y1 = box
    part = frame[y0:y1, x0:x1]  # views of the arrays, and the WCS of the cutout
    # The arrays are copied: a CCDData slice is a view that would keep the whole frame alive
    # for as long as the crop is kept (until the combine, for every frame). The header is
    # shared, not copied (a raw frame's copy costs a millisecond): nothing here changes it,
    # and every step after makes its own.
    uncertainty = part.uncertainty
    if uncertainty is not None:
        uncertainty = type(uncertainty)(np.array(uncertainty.array), unit=uncertainty.unit)
    cropped = type(frame)(np.array(part.data), unit=frame.unit, wcs=part.wcs, meta=frame.meta,
                          mask=None if part.mask is None else np.array(part.mask),
                          uncertainty=uncertainty)
    return cropped, (position[0] - x0, position[1] - y0)
