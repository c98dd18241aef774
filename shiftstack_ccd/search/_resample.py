# Licensed under a 3-clause BSD style license - see LICENSE
"""Resampling a frame onto the search grid by block translations.

`resample_to_target`'s warp path evaluates a cubic spline at a full array of arbitrary
coordinates (`scipy.ndimage.map_coordinates`: 16 taps and their weights per pixel, about
0.4 s for a 2-megapixel frame), which is most of the motion search's preparation. The
search's grid keeps the frames' orientation, and frames taken at one position angle differ
from it by a translation plus what their plate solutions and distortion add (a few
hundredths of a pixel over a field). On blocks of ``block`` output pixels that mapping is a
translation to within ``tolerance`` (checked on a grid of nodes through both WCS, the
distortion included); each block is then a separable cubic-spline interpolation, eight
slice operations on the spline coefficients (`scipy.ndimage.spline_filter`), ten to twenty
times faster. The data are interpolated by the same cubic B-spline as ``bicubic`` in
`resample_to_target`, the variance bilinearly, and an output pixel is masked when a bad input
pixel is one of its bilinear neighbours or when it falls outside the frame (reproject's
half-pixel rule), as there. When some block departs from a translation by more than the
tolerance (a rotated frame, strong distortion), `translations` says so and the caller takes
`resample_to_target`.
"""

import numpy as np

from .._utils import pixel_to_pixel

__all__ = []


def frame_grid(frames, reference, wcses=None):
    """The search grid: the reference frame's own pixels, extended over every frame.

    Its WCS is the reference frame's celestial WCS (distortion included) with ``CRPIX``
    moved, so that the other frames, taken at the same position angle, map onto it by
    near-translations (see `translations`); it covers the union of the frames' footprints.
    Returns ``wcs, (ny, nx)``.
    """
    wcses = wcses or [f.wcs.celestial for f in frames]
    ref = wcses[reference]
    xs, ys = [], []
    for w, frame in zip(wcses, frames):
        ny, nx = frame.shape
        edge_x, edge_y = np.linspace(-0.5, nx - 0.5, 9), np.linspace(-0.5, ny - 0.5, 9)
        bx = np.concatenate([edge_x, edge_x, np.full(9, -0.5), np.full(9, nx - 0.5)])
        by = np.concatenate([np.full(9, -0.5), np.full(9, ny - 0.5), edge_y, edge_y])
        px, py = pixel_to_pixel(w, ref, bx, by)
        xs.append(np.asarray(px, float))
        ys.append(np.asarray(py, float))
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    x0, x1 = int(np.floor(np.min(xs) + 0.5)), int(np.ceil(np.max(xs) - 0.5))
    y0, y1 = int(np.floor(np.min(ys) + 0.5)), int(np.ceil(np.max(ys) - 0.5))
    return shifted_wcs(ref, x0, y0, (y1 - y0 + 1, x1 - x0 + 1))


def shifted_wcs(wcs, x0, y0, shape):
    """A copy of ``wcs`` whose pixel (0, 0) is its pixel ``(x0, y0)``; ``wcs, shape``."""
    out = wcs.deepcopy()
    out.wcs.crpix = out.wcs.crpix - np.array([x0, y0], float)
    if out.sip is not None:
        out.sip = type(out.sip)(out.sip.a, out.sip.b, out.sip.ap, out.sip.bp,
                                out.wcs.crpix)
    out.wcs.set()
    out.pixel_shape = (int(shape[1]), int(shape[0]))
    return out, (int(shape[0]), int(shape[1]))


#: Padding (pixels) of the coefficient, variance and bad-pixel planes: the cubic taps reach
#: one pixel before and two after the interpolated position.
_PAD = 3


def translations(wcs_in, wcs_out, shape_in, shape_out, block=128, tolerance=0.01):
    """Per block of output pixels, the translation to the input, or None.

    Returns a list of ``(y0, x0, h, w, dy, dx)``: output block ``[y0:y0 + h, x0:x0 + w]``
    whose input positions are ``(y + dy, x + dx)`` to within ``tolerance`` pixels (blocks
    that cannot reach the frame are left out), and the median pixel-area ratio (output over
    input); or ``None`` when some block departs from a translation by more than that.
    """
    ny, nx = shape_out
    fy, fx = shape_in
    ys = np.unique(np.r_[np.arange(0, ny, block / 2), ny - 1]).astype(float)
    xs = np.unique(np.r_[np.arange(0, nx, block / 2), nx - 1]).astype(float)
    gx, gy = np.meshgrid(xs, ys)
    px, py = pixel_to_pixel(wcs_out, wcs_in, gx.ravel(), gy.ravel())
    dx = np.asarray(px, float).reshape(gx.shape) - gx
    dy = np.asarray(py, float).reshape(gy.shape) - gy
    if not (np.all(np.isfinite(dx)) and np.all(np.isfinite(dy))):
        return None
    # pixel-area ratio: the Jacobian of output -> input from neighbouring nodes
    jxx = np.diff(dx, axis=1) / np.diff(xs)[None, :] + 1
    jyy = np.diff(dy, axis=0) / np.diff(ys)[:, None] + 1
    jxy = np.diff(dx, axis=0) / np.diff(ys)[:, None]
    jyx = np.diff(dy, axis=1) / np.diff(xs)[None, :]
    det = jxx[:-1, :] * jyy[:, :-1] - jxy[:, :-1] * jyx[:-1, :]
    ratio = float(np.median(np.abs(det)))
    origins = [(y0, x0) for y0 in range(0, ny, block) for x0 in range(0, nx, block)]
    sizes = [(min(block, ny - y0), min(block, nx - x0)) for y0, x0 in origins]
    # every block's centre and corners through both WCS at once (one call, not two a block)
    px_all, py_all = [], []
    for (y0, x0), (h, w) in zip(origins, sizes):
        px_all += [x0 + (w - 1) / 2, x0, x0 + w - 1, x0, x0 + w - 1]
        py_all += [y0 + (h - 1) / 2, y0, y0, y0 + h - 1, y0 + h - 1]
    px_all, py_all = np.array(px_all), np.array(py_all)
    qx_all, qy_all = pixel_to_pixel(wcs_out, wcs_in, px_all, py_all)
    shift_x = (np.asarray(qx_all, float) - px_all).reshape(-1, 5)
    shift_y = (np.asarray(qy_all, float) - py_all).reshape(-1, 5)
    out = []
    for j, ((y0, x0), (h, w)) in enumerate(zip(origins, sizes)):
        inside = ((ys >= y0) & (ys <= y0 + h - 1))[:, None] \
            & ((xs >= x0) & (xs <= x0 + w - 1))[None, :]
        ddx, ddy = float(shift_x[j, 0]), float(shift_y[j, 0])
        # the block's input footprint, with the taps' reach: skip it if off the frame
        if (x0 + ddx > fx + 2 or x0 + w - 1 + ddx < -3
                or y0 + ddy > fy + 2 or y0 + h - 1 + ddy < -3):
            continue
        # corners: the nodes inside and the block's own corners
        dev = max(np.max(np.abs(shift_x[j, 1:] - ddx)), np.max(np.abs(shift_y[j, 1:] - ddy)),
                  np.max(np.abs(dx[inside] - ddx), initial=0.0),
                  np.max(np.abs(dy[inside] - ddy), initial=0.0))
        if not dev <= tolerance:
            return None
        out.append((y0, x0, h, w, ddy, ddx))
    return out, ratio


def _bspline_weights(t):
    """The four cubic B-spline weights at taps -1, 0, 1, 2 for a fraction ``t`` in [0, 1)."""
    s = 1 - t
    return (np.float32(s ** 3 / 6), np.float32((3 * t ** 3 - 6 * t ** 2 + 4) / 6),
            np.float32((-3 * t ** 3 + 3 * t ** 2 + 3 * t + 1) / 6), np.float32(t ** 3 / 6))


def resample_blocks(data, variance, bad, blocks, shape_out):
    """Data (cubic spline), variance (bilinear) and mask on the output grid.

    ``data`` and ``variance`` must be finite (bad pixels hold any finite value; they are
    masked through ``bad``). Returns float32 ``data, variance, mask``; masked pixels hold NaN.
    """
    from scipy.ndimage import spline_filter
    ny, nx = shape_out
    fy, fx = data.shape
    # padded planes made once and filled in place (np.pad would copy each a second time)
    inner = (slice(_PAD, _PAD + fy), slice(_PAD, _PAD + fx))
    coefficients = np.zeros((fy + 2 * _PAD, fx + 2 * _PAD), np.float32)
    spline_filter(np.asarray(data, np.float32), order=3, output=coefficients[inner],
                  mode="mirror")
    var = np.zeros(coefficients.shape, np.float32)
    var[inner] = variance
    badp = np.ones(coefficients.shape, bool)
    badp[inner] = bad
    out = np.full((ny, nx), np.nan, np.float32)
    out_var = np.full((ny, nx), np.nan, np.float32)
    mask = np.ones((ny, nx), bool)
    for y0, x0, h, w, dy, dx in blocks:
        # output pixels whose input position lies on the frame (reproject's edge rule) and
        # whose taps stay within the padding
        xa = max(x0, int(np.ceil(-0.5 - dx)))
        xb = min(x0 + w, int(np.floor(fx - 0.5 - dx)) + 1)
        ya = max(y0, int(np.ceil(-0.5 - dy)))
        yb = min(y0 + h, int(np.floor(fy - 0.5 - dy)) + 1)
        if xa >= xb or ya >= yb:
            continue
        W, H = xb - xa, yb - ya
        sx, sy = xa + dx, ya + dy
        ix, iy = int(np.floor(sx)), int(np.floor(sy))
        tx, ty = sx - ix, sy - iy
        c0, r0 = ix + _PAD, iy + _PAD  # padded index of the tap at offset 0
        wx, wy = _bspline_weights(tx), _bspline_weights(ty)
        rows = coefficients[r0 - 1:r0 + H + 2]
        tmp = wx[0] * rows[:, c0 - 1:c0 - 1 + W]
        for k in (1, 2, 3):
            tmp += wx[k] * rows[:, c0 - 1 + k:c0 - 1 + k + W]
        block_out = wy[0] * tmp[0:H]
        for k in (1, 2, 3):
            block_out += wy[k] * tmp[k:k + H]
        out[ya:yb, xa:xb] = block_out
        # variance bilinear; masked if a bad pixel is a bilinear neighbour with weight > 0
        vrows = var[r0:r0 + H + 1]
        brows = badp[r0:r0 + H + 1]
        vt = np.float32(1 - tx) * vrows[:, c0:c0 + W]
        bt = brows[:, c0:c0 + W].copy()
        if tx > 0:
            vt += np.float32(tx) * vrows[:, c0 + 1:c0 + 1 + W]
            bt |= brows[:, c0 + 1:c0 + 1 + W]
        v = np.float32(1 - ty) * vt[0:H]
        b = bt[0:H].copy()
        if ty > 0:
            v += np.float32(ty) * vt[1:H + 1]
            b |= bt[1:H + 1]
        out_var[ya:yb, xa:xb] = v
        mask[ya:yb, xa:xb] = b
    out[mask] = np.nan
    out_var[mask] = np.nan
    return out, out_var, mask
