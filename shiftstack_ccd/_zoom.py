# Licensed under a 3-clause BSD style license - see LICENSE
"""Spline zoom of a coarse grid (a background mesh) to the full image, axis by axis.

`scipy.ndimage.zoom` of a 2-D grid evaluates its tensor-product spline at every output
pixel with the full 2-D kernel (16 taps for a cubic): 11 ms for a 6 x 6 mesh zoomed to a
331 x 331 cutout, 60 ms for a whole 1432 x 1370 frame, the largest single cost of a small
stack's background. The spline is separable (prefilter and kernel alike), so the zoom is
the product ``Wy @ grid @ Wx.T`` of two 1-D zoom operators, each found by zooming the unit
vectors with the same `~scipy.ndimage.zoom` and cached: the same numbers (to rounding,
~1e-13 of the grid's values) in 0.2 ms. The products are `numpy.einsum`'s, not the BLAS's:
the BLAS splits a product this size between threads that wait for each other on a busy
machine (1 to 30 ms instead of 0.04).
"""

import functools

import numpy as np

__all__ = []


@functools.lru_cache(maxsize=32)
def _operator(n, factor, size, order, mode, transposed=False):
    """The ``(size, n)`` matrix of the 1-D zoom of ``n`` samples by ``factor`` (grid mode),
    cropped to ``size`` outputs, or its transpose (C-contiguous). Read-only: it is shared
    through the cache."""
    from scipy.ndimage import zoom
    # column k: the zoom of the k-th unit vector (1-D zooms: a 2-D zoom with a factor of 1
    # along the other axis does not give the same numbers for small grids)
    matrix = np.column_stack([zoom(unit, factor, order=order, mode=mode, grid_mode=True)[:size]
                              for unit in np.eye(n)])
    if transposed:
        matrix = np.ascontiguousarray(matrix.T)
    matrix.flags.writeable = False
    return matrix


def zoom_grid(grid, factor, shape, order=3, mode="reflect"):
    """``scipy.ndimage.zoom(grid, factor, order=order, mode=mode, grid_mode=True)`` cropped
    to ``shape``, computed as two 1-D zooms.

    Parameters
    ----------
    grid : ndarray
        The coarse 2-D grid (finite values).
    factor : int or (int, int)
        Zoom factor along each axis (the box size of a mesh).
    shape : (int, int)
        The output's shape, at most the zoomed grid's.
    order, mode : int, str
        As for `scipy.ndimage.zoom`.

    Returns
    -------
    zoomed : ndarray of float64
    """
    fy, fx = (factor, factor) if np.isscalar(factor) else factor
    grid = np.asarray(grid, dtype=float)
    wy = _operator(grid.shape[0], int(fy), int(shape[0]), order, mode)
    wx_t = _operator(grid.shape[1], int(fx), int(shape[1]), order, mode, transposed=True)
    return np.einsum("ik,kj->ij", np.einsum("ik,kj->ij", wy, grid), wx_t)
