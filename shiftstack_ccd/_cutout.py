# Licensed under a 3-clause BSD style license - see LICENSE
"""A square cut of an image around a position (the previews' zoom panel)."""

import numpy as np

__all__ = []


def zoom_cut(image, mark, half):
    """The square of ``image`` within ``half`` pixels of ``mark``, and the mark in it.

    ``mark`` is 0-based ``(x, y)``; the square is centred on its nearest pixel and clipped
    at the image's edges. Masked pixels (``image.mask``) become NaN. Returns
    ``(None, None)`` when the mark is off the image by more than ``half``.
    """
    data = np.asarray(getattr(image, "data", image))
    x, y = mark
    x0, y0 = max(int(round(x)) - half, 0), max(int(round(y)) - half, 0)
    x1, y1 = min(int(round(x)) + half + 1, data.shape[1]), \
        min(int(round(y)) + half + 1, data.shape[0])
    if x1 <= x0 or y1 <= y0:
        return None, None
    cut = np.array(data[y0:y1, x0:x1], dtype=float)
    mask = getattr(image, "mask", None)
    if mask is not None:
        cut[np.asarray(mask, dtype=bool)[y0:y1, x0:x1]] = np.nan
    return cut, (x - x0, y - y0)
