# Licensed under a 3-clause BSD style license - see LICENSE
"""Resampling a frame onto an output grid: data, variance and mask together.

On the interpolating paths every output pixel is interpolated at its position in the
input frame. Two paths find those positions and give the same answer:

* **shift**, when the frame's WCS equals the output grid up to a translation (checked
  numerically over the whole frame, to 1e-3 pixel): the positions are the output pixels
  minus one constant offset, with no coordinate transform at all;
* **warp** otherwise (rotation, scale, distortion): the positions go through the sky with
  both WCS (distortion included), computed exactly on a coarse grid and interpolated between
  (`pixel_map`, checked to 1e-4 pixel). For a surface brightness the result equals
  `reproject.reproject_interp`'s with the same kernel, which the tests check; it is computed
  here because reproject transforms every output pixel exactly on every call, which
  dominates its run time on large frames.

The data are interpolated with a cubic spline by default (``bicubic``, reproject's kernel of
that name), which keeps an undersampled PSF sharp; ``bilinear`` is available. A spline
cannot take NaN, so bad input pixels (masked or non-finite) are first filled from their
neighbours; every output pixel that a bad pixel touches (bilinear weight above zero), and
every pixel outside the frame, is then masked and set to NaN: never zero, never a made-up
number.

A third path, **drizzle**, hands the work to STScI's `drizzle` package (the resampler of the
HST and JWST pipelines): each input pixel, shrunk by ``pixfrac``, is dropped onto the output
grid and its value averaged in by overlap area; bad pixels get weight zero, and output pixels
that no good input pixel reaches are masked. It is the right tool when the output pixels are
larger than the input ones, where interpolation samples some input pixels and skips others.

**Flux.** Interpolation and drizzle both carry a surface brightness: an output pixel gets the
value of the sky under it, whatever its size. Data in counts per pixel (ADU, electron, count,
photon, and per second; `flux_convention`) are then multiplied by the ratio of output to
input pixel area, the Jacobian of the pixel map (`pixel_area_ratio`, distortion included), so
that a star's counts are the same on any grid; data per solid angle (MJy/sr) are left as they
are. A unit that says neither is treated as counts per pixel, with a warning. The header's
``SSFLUXC`` and ``SSPIXAR`` say what was done.

**Variance.** It is carried so that the variance of a sum over an aperture larger than the
kernel is right, although neighbouring output pixels are correlated (their pixel-to-pixel
scatter is smaller than the carried uncertainty, as it should be). For output ``o`` drawn
from inputs ``i`` with bilinear weights ``w_oi`` the aperture sum's variance is
``K**2 sum_i v_i (sum_o w_oi)**2`` (``K`` the area ratio for counts, else 1), so each output
pixel carries ``K**2 sum_i w_oi c_i v_i`` with ``c_i = sum_o w_oi``, how much of input pixel
``i`` the output uses in all (`_bilinear_adjoint`): 1 for a translation (and taken as 1
whenever the pixels keep their size, where it ripples by a few per cent), 1/ratio for smaller
output pixels (so counts carry ``ratio * v``, not ``ratio**2 * v``, which would make aperture
errors too small by the square root of the ratio), a sampling pattern for larger ones. Drizzle
spreads each input pixel over the output in full, so there ``c_i`` is 1/ratio exactly and its
area-weighted mean of the variance is used the same way. A cubic spline onto pixels more
than 1.5 times larger than the input's is noisier than its bilinear weights say (uncertainty
about 15% low at twice the size): warned about.
"""

import logging
import warnings

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData, StdDevUncertainty, VarianceUncertainty
from astropy.utils.exceptions import AstropyUserWarning

from ._utils import frame_label, pixel_to_pixel, require_celestial_wcs
from .exceptions import FrameError
from .steps import history_line, log_to_header, provenance_header

__all__ = ["find_translation", "flux_convention", "pixel_area_ratio", "pixel_map",
           "resample_to_grids", "resample_to_target"]

log = logging.getLogger(__name__)

_SPLINE_ORDER = {"bilinear": 1, "bicubic": 3}
#: The kernels of `drizzle.resample.Drizzle`.
DRIZZLE_KERNELS = ("square", "gaussian", "point", "turbo", "lanczos2", "lanczos3")
#: Units of counts in a pixel (also per second): their flux scales with the pixel area.
_PER_PIXEL_UNITS = (u.adu, u.electron, u.count, u.photon)
#: Output/input pixel-area ratio above which a cubic spline's noise is warned about
#: (measured: uncertainties right to 5% at 1.5x the pixel size, 15% low at 2x).
_SPLINE_NOISE_RATIO = 1.5 ** 2
#: Departure of the pixel-area ratio from 1 beyond which the variance is carried with the
#: interpolation's adjoint (`_bilinear_adjoint`; see the module notes). Below it the pixels
#: keep their size, the adjoint is 1 within a few per cent (phase ripples of a rotation) and
#: not worth its cost (4 times a bilinear interpolation).
_ADJOINT_THRESHOLD = 0.01
#: Units already warned about as neither counts nor surface brightness (warned once each).
_WARNED_UNITS = set()

#: Largest departure from a pure translation (pixels) that still takes the shift path.
TRANSLATION_TOLERANCE = 1e-3


def find_translation(wcs_in, wcs_out, shape_in, tolerance=TRANSLATION_TOLERANCE):
    """Return ``(tx, ty)`` if ``wcs_out`` pixels = ``wcs_in`` pixels + (tx, ty), else None.

    The mapping is sampled on a 7 x 7 grid spanning the input frame (distortion included),
    so SIP or TPV terms, rotation or scale differences all rule the translation out.

    Parameters
    ----------
    wcs_in, wcs_out : `~astropy.wcs.WCS`
        Celestial WCS of the input frame and of the output grid.
    shape_in : tuple
        ``(ny, nx)`` of the input frame.
    tolerance : float
        Largest residual, in pixels, accepted as a translation.
    """
    ny, nx = shape_in
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 7), np.linspace(0, ny - 1, 7))
    ox, oy = pixel_to_pixel(wcs_in, wcs_out, gx.ravel(), gy.ravel())
    dx, dy = np.asarray(ox) - gx.ravel(), np.asarray(oy) - gy.ravel()
    if not (np.all(np.isfinite(dx)) and np.all(np.isfinite(dy))):
        return None
    tx, ty = np.median(dx), np.median(dy)
    if max(np.max(np.abs(dx - tx)), np.max(np.abs(dy - ty))) > tolerance:
        return None
    # Round off the WCS round-trip noise (~1e-12 px) so whole and half-pixel shifts stay exact.
    return round(float(tx), 8), round(float(ty), 8)


def _prepare_coordinates(ys, xs, shape_in):
    """Clip sampling positions with `reproject`'s edge rule; return them and the outside mask.

    Points in the outer half of a border pixel are moved to its centre; points beyond the
    frame (or without a position) are flagged, to become NaN.
    """
    ny, nx = shape_in
    outside = (ys < -0.5) | (ys > ny - 0.5) | (xs < -0.5) | (xs > nx - 0.5)
    finite = np.isfinite(ys) & np.isfinite(xs)
    if not finite.all():
        outside |= ~finite
        ys, xs = np.where(finite, ys, 0), np.where(finite, xs, 0)
    coords = np.empty((2,) + ys.shape)
    np.clip(ys, 0, ny - 1, out=coords[0])
    np.clip(xs, 0, nx - 1, out=coords[1])
    return coords, outside


def _sample(array, coords, outside, order, dtype=None):
    """Interpolate ``array`` at prepared coordinates (`scipy.ndimage.map_coordinates`).

    The array must be finite: a spline's prefilter would spread a NaN along whole rows and
    columns. With ``dtype`` (the output's), ``array`` holds the spline coefficients already
    (`_spline_coefficients`), and is not prefiltered again.
    """
    from scipy.ndimage import map_coordinates
    out = map_coordinates(array, coords, order=order, mode="constant", cval=np.nan,
                          output=array.dtype if dtype is None else dtype,
                          prefilter=dtype is None)
    out[outside] = np.nan
    return out


def _translation_coordinates(shape_out, tx, ty):
    """Input pixel coordinates ``(y, x)`` of every output pixel for a pure translation."""
    ys = np.arange(shape_out[0], dtype=float)[:, None] - ty
    xs = np.arange(shape_out[1], dtype=float)[None, :] - tx
    return np.broadcast_to(ys, shape_out), np.broadcast_to(xs, shape_out)


def pixel_map(wcs_in, wcs_out, shape_out, step=32, tolerance=1e-4):
    """Input pixel coordinates ``(y, x)`` of every output pixel, through the sky.

    The transform (distortion included) is computed exactly on a grid of every ``step``-th
    output pixel and interpolated with a bicubic spline in between; the interpolation is then
    checked against the exact transform at 200 random pixels, and if it is off by more than
    ``tolerance`` pixel anywhere (or the coarse grid is not finite, e.g. beyond a
    projection's horizon), the exact transform is computed at every pixel instead.

    Parameters
    ----------
    wcs_in, wcs_out : `~astropy.wcs.WCS`
        Celestial WCS of the input frame and of the output grid.
    shape_out : tuple
        ``(ny, nx)`` of the output grid.
    step : int
        Spacing of the exactly transformed grid, in output pixels.
    tolerance : float
        Largest accepted interpolation error, in input pixels.

    Returns
    -------
    y, x : `~numpy.ndarray`
        Arrays of shape ``shape_out``; NaN where an output pixel has no input position.
    """
    ys, xs, _ = _pixel_map(wcs_in, wcs_out, shape_out, step, tolerance, area=False)
    return ys, xs


def pixel_area_ratio(wcs_in, wcs_out, shape_out, step=32, tolerance=1e-4):
    """Area of each output pixel in input pixels (the Jacobian of the pixel map).

    Counts per input pixel times this ratio are counts per output pixel. It is the absolute
    determinant of the derivatives of `pixel_map` (input coordinates with respect to output
    coordinates), distortion included: from the derivatives of the same coarse-grid splines
    where `pixel_map` uses them, else from central differences of the exact transform.

    Parameters
    ----------
    wcs_in, wcs_out : `~astropy.wcs.WCS`
        Celestial WCS of the input frame and of the output grid.
    shape_out : tuple
        ``(ny, nx)`` of the output grid.
    step, tolerance : int, float
        As for `pixel_map`.

    Returns
    -------
    ratio : `~numpy.ndarray`
        Shape ``shape_out``; NaN where an output pixel has no input position.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> def grid(arcsec):
    ...     wcs = WCS(naxis=2)
    ...     wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    ...     wcs.wcs.crval = [150, 2]; wcs.wcs.crpix = [50, 50]
    ...     wcs.wcs.cdelt = [-arcsec / 3600, arcsec / 3600]
    ...     return wcs
    >>> ratio = pixel_area_ratio(grid(0.4), grid(0.8), (100, 100))  # pixels twice as large
    >>> round(float(ratio[50, 50]), 6)
    4.0
    """
    return _pixel_map(wcs_in, wcs_out, shape_out, step, tolerance, area=True)[2]


def _pixel_map(wcs_in, wcs_out, shape_out, step, tolerance, area):
    """`pixel_map`, and with ``area`` also `pixel_area_ratio` (else None)."""
    from scipy.interpolate import RectBivariateSpline
    ny, nx = shape_out

    def exact(y, x):
        px, py = pixel_to_pixel(wcs_out, wcs_in, x, y)
        return np.asarray(py, dtype=float), np.asarray(px, dtype=float)

    gy = np.unique(np.r_[np.arange(0, ny, step), ny - 1]).astype(float)
    gx = np.unique(np.r_[np.arange(0, nx, step), nx - 1]).astype(float)
    if len(gy) >= 4 and len(gx) >= 4:
        cy, cx = exact(*np.meshgrid(gy, gx, indexing="ij"))
        if np.all(np.isfinite(cy)) and np.all(np.isfinite(cx)):
            spline_y = RectBivariateSpline(gy, gx, cy, kx=3, ky=3)
            spline_x = RectBivariateSpline(gy, gx, cx, kx=3, ky=3)
            rng = np.random.default_rng(0)
            ty, tx = rng.uniform(0, ny - 1, 200), rng.uniform(0, nx - 1, 200)
            ey, ex = exact(ty, tx)
            error = max(np.max(np.abs(spline_y.ev(ty, tx) - ey)),
                        np.max(np.abs(spline_x.ev(ty, tx) - ex)))
            if error <= tolerance:
                splines = [spline_y, spline_x]
                if area:
                    # The determinant on the coarse nodes, then a spline of it: it is as
                    # smooth as the map, and one evaluation costs less than four.
                    def d(spline, dy, dx):
                        return spline(gy, gx, dx=dy, dy=dx)  # scipy's dx is the first axis
                    det = np.abs(d(spline_y, 1, 0) * d(spline_x, 0, 1)
                                 - d(spline_y, 0, 1) * d(spline_x, 1, 0))
                    splines.append(RectBivariateSpline(gy, gx, det, kx=3, ky=3))
                values = _on_every_pixel(splines, ny, nx)
                return values[0], values[1], values[2] if area else None
            log.debug("coarse pixel map off by %.2g px; transforming every pixel", error)
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    ys, xs = exact(y, x)
    ratio = None
    if area:  # central differences of the exact transform, half a pixel each way
        y_right, x_right = exact(y, x + 0.5)
        y_left, x_left = exact(y, x - 0.5)
        y_up, x_up = exact(y + 0.5, x)
        y_down, x_down = exact(y - 0.5, x)
        ratio = np.abs((x_right - x_left) * (y_up - y_down) - (y_right - y_left) * (x_up - x_down))
    return ys, xs, ratio


def _on_every_pixel(splines, ny, nx):
    """Bicubic splines of the same nodes evaluated at every pixel of an ``(ny, nx)`` grid.

    A tensor-product spline on a grid is ``By @ C @ Bx.T`` with the B-spline basis
    matrices ``By``, ``Bx`` of the rows and columns (four non-zeros a row): splines through
    the same nodes share their knots and so the matrices, and the sparse products cost a
    fifth of fitpack's evaluation of each (0.4 ms for three splines on 301 x 301 against
    2.7 ms). Sparse, not dense: a dense product goes to the BLAS, whose threads wait for
    each other on a busy machine (10 ms for one product on two loaded cores). Same values
    (to ~1e-15); fitpack's own evaluation when the knots differ.
    """
    from scipy.interpolate import BSpline
    rows, cols = np.arange(ny, dtype=float), np.arange(nx, dtype=float)
    ty, tx, _ = splines[0].tck
    (ky, kx) = splines[0].degrees
    if not all(np.array_equal(s.tck[0], ty) and np.array_equal(s.tck[1], tx)
               and tuple(s.degrees) == (ky, kx) for s in splines):
        return [spline(rows, cols) for spline in splines]
    by = BSpline.design_matrix(rows, ty, ky)
    bx = BSpline.design_matrix(cols, tx, kx)
    shape = (len(ty) - ky - 1, len(tx) - kx - 1)
    return [np.asarray(by @ np.asarray(bx @ spline.tck[2].reshape(shape).T).T)
            for spline in splines]


def _fill_bad_pixels(data, bad):
    """Bad pixels replaced by the mean of their good neighbours (growing until all are).

    A spline's prefilter spreads a NaN along the whole row and column, so masked pixels
    need a plausible value before a spline sees them; the output pixels they touch are
    masked anyway (from the bilinear bad-pixel plane).

    The filling reaches two pixels a round, so groups of bad pixels three or more pixels
    apart never see each other: each group is filled in its own box (plus the two pixels),
    with the same numbers as over the whole frame, at the cost of the boxes rather than of
    ten rounds over the frame (a raw frame's masked overscan strip: 0.4 s a frame at full
    field). Many small groups (a cosmic-ray mask) are done over the frame at once.
    """
    from scipy.ndimage import binary_dilation, find_objects, label
    if not bad.any():
        return data
    filled = np.where(bad, 0, data).astype(float)
    groups, n_groups = label(binary_dilation(bad, np.ones((3, 3), bool)), np.ones((3, 3)))
    boxes = find_objects(groups)
    area = sum((b[0].stop - b[0].start + 4) * (b[1].stop - b[1].start + 4) for b in boxes)
    if n_groups > 200 or area > bad.size / 4:
        windows = [((slice(None), slice(None)), bad)]
    else:
        windows = []
        for number, box in enumerate(boxes, start=1):
            window = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box)
            windows.append((window, bad[window] & (groups[window] == number)))
    left = [_fill_window(filled[window], bad[window], todo) for window, todo in windows]
    if any(todo.any() for todo in left):
        value = np.median(filled[~bad]) if (~bad).any() else 0.0
        for (window, _), todo in zip(windows, left):
            filled[window][todo] = value
    return filled.astype(data.dtype)


def _fill_window(filled, bad, todo):
    """Ten rounds of `_fill_bad_pixels` on one box (``filled`` a view, changed in place):
    the pixels of ``todo`` get the mean of their good (or already filled) neighbours within
    two pixels. Returns those still unfilled."""
    from scipy.ndimage import uniform_filter
    todo = todo.copy()
    weight = (~bad).astype(float)
    for _ in range(10):
        if not todo.any():
            break
        total = uniform_filter(filled * weight, size=5, mode="nearest")
        count = uniform_filter(weight, size=5, mode="nearest")
        reached = todo & (count > 1e-6)
        filled[reached] = total[reached] / count[reached]
        weight[reached] = 1.0
        todo &= ~reached
    return todo


def flux_convention(unit):
    """What resampling conserves for data in ``unit``.

    Parameters
    ----------
    unit : `~astropy.units.Unit`, str or None

    Returns
    -------
    convention : {'per-pixel', 'surface'} or None
        ``'per-pixel'`` for counts in a pixel (ADU, electron, count, photon, and the same per
        second): resampling conserves their flux, so they are multiplied by the ratio of
        output to input pixel area. ``'surface'`` for anything per solid angle (MJy/sr,
        counts/arcsec**2...): a surface brightness, which interpolation conserves as it is.
        None when the unit does not say (dimensionless, or a unit of neither kind).

    Examples
    --------
    >>> from astropy import units as u
    >>> flux_convention("adu"), flux_convention(u.electron / u.s), flux_convention("MJy/sr")
    ('per-pixel', 'per-pixel', 'surface')
    >>> print(flux_convention(u.dimensionless_unscaled))
    None
    """
    if unit is None:
        return None
    unit = u.Unit(unit)
    decomposed = unit.decompose()
    if any(base == u.rad and power < 0
           for base, power in zip(decomposed.bases, decomposed.powers)):
        return "surface"  # per steradian, per square arcsecond...
    for base in _PER_PIXEL_UNITS:
        if unit.is_equivalent(base) or unit.is_equivalent(base / u.s):
            return "per-pixel"
    return None


def _resolve_convention(unit, conserve, label):
    """The convention to apply: the one asked for, else the unit's, else per pixel (warned
    about once per unit)."""
    if conserve not in ("auto", "per-pixel", "surface"):
        raise ValueError(f"conserve must be 'auto', 'per-pixel' or 'surface', not {conserve!r}")
    if conserve != "auto":
        return conserve, "given"
    convention = flux_convention(unit)
    if convention is not None:
        return convention, "unit"
    key = str(unit)
    if key not in _WARNED_UNITS:
        _WARNED_UNITS.add(key)
        warnings.warn(f"{label}: the unit {key or 'dimensionless'!r} does not say whether the "
                      "data are counts per pixel or a surface brightness; treating them as "
                      "counts per pixel (scaled by the pixel-area ratio when pixels change "
                      "size), as for a CCD frame. Give the frames a unit (e.g. 'adu', "
                      "'electron/s' or 'MJy/sr') to say otherwise.", AstropyUserWarning)
    return "per-pixel", "assumed"


def _bilinear_adjoint(coords, outside, shape_in):
    """How much of each input pixel bilinear sampling at ``coords`` uses, summed over the
    output: the adjoint of the interpolation applied to ones.

    About 1 when the pixels keep their size, 1/ratio when the output pixels are smaller
    (each input pixel feeds several), between 0 and 1 when they are larger (interpolation
    samples some input pixels and skips others). The variance is carried with it (see the
    module notes).
    """
    ny, nx = shape_in
    if ny < 2 or nx < 2:
        return np.ones(shape_in)
    total = np.zeros(ny * nx)
    # in blocks of about 2**18 output pixels: a full-field grid's temporaries would be ten
    # arrays of its size, and a block costs one bincount
    rows = max(1, 2 ** 18 // coords.shape[2])
    for first in range(0, coords.shape[1], rows):
        keep = ~outside[first:first + rows].ravel()
        # the coordinates are clipped to the frame (_prepare_coordinates): with the corner
        # at most (ny - 2, nx - 2), the fractions are in [0, 1] and all four corners exist
        y = coords[0, first:first + rows].ravel()[keep]
        x = coords[1, first:first + rows].ravel()[keep]
        y0 = np.minimum(y.astype(np.int32), ny - 2)
        x0 = np.minimum(x.astype(np.int32), nx - 2)
        fy, fx = (y - y0).astype(np.float32), (x - x0).astype(np.float32)
        corner = y0 * nx + x0
        index = np.concatenate([corner, corner + 1, corner + nx, corner + nx + 1])
        gy, gx = 1 - fy, 1 - fx
        weights = np.concatenate([gy * gx, gy * fx, fy * gx, fy * fx])
        total += np.bincount(index, weights=weights, minlength=ny * nx)
    return total.reshape(ny, nx)


def _drizzle(data, variance, bad, wcs_in, wcs_out, shape_out, pixfrac, kernel, label):
    """Drizzle data and variance with STScI's `drizzle`; the mean of the input values over
    each output pixel (a surface brightness), the variance likewise, and the weight."""
    try:
        from drizzle.resample import Drizzle
    except ImportError:
        raise ImportError("resample='drizzle' needs STScI's drizzle package "
                          "(pip install drizzle).") from None
    # where each input pixel lands on the output grid (the same coarse-grid map, reversed)
    ys, xs = pixel_map(wcs_out, wcs_in, data.shape)
    weight = (~bad).astype(np.float32)
    lost = ~(np.isfinite(ys) & np.isfinite(xs))
    if lost.any():
        weight[lost] = 0
        ys, xs = np.where(lost, -1e6, ys), np.where(lost, -1e6, xs)
    pixmap = np.dstack([xs, ys])
    ratio = pixel_area_ratio(wcs_in, wcs_out, shape_out)
    scale = float(np.sqrt(np.nanmedian(ratio)))
    results = []
    for values in (data, variance):
        driz = Drizzle(kernel=kernel, out_shape=tuple(shape_out), disable_ctx=True,
                       fillval=0.0)
        driz.add_image(np.asarray(values, dtype=np.float32), exptime=1.0, pixmap=pixmap,
                       weight_map=weight, pixfrac=pixfrac, in_units="cps",
                       pixel_scale_ratio=scale)
        results.append((driz.out_img, driz.out_wht))
    (out_data, wht), (out_var, _) = results
    log.debug("%s: drizzled (kernel %s, pixfrac %g)", label, kernel, pixfrac)
    return out_data, out_var, wht, ratio


@log_to_header
def resample_to_target(ccd, wcs_out, shape_out, method="auto", interpolation="bicubic",
                       conserve="auto", pixfrac=1.0, kernel="square"):
    """Resample a frame onto an output grid, carrying data, variance and mask together.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame; it needs a celestial WCS and an uncertainty (any
        `~astropy.nddata.NDUncertainty` that converts to a variance).
    wcs_out : `~astropy.wcs.WCS`
        The output grid, e.g. `TargetFrame.wcs_at` for a target-centred grid.
    shape_out : tuple
        ``(ny, nx)`` of the output.
    method : {'auto', 'shift', 'warp', 'drizzle'}
        ``'auto'`` takes the shift path when the frame's WCS equals the output grid up to
        a translation, and the warp path otherwise (see the module notes). ``'shift'``
        insists on the shift path and raises if it does not apply. ``'drizzle'`` uses STScI's
        `drizzle` package (``pixfrac``, ``kernel``).
    interpolation : {'bicubic', 'bilinear'}
        Kernel for the data on the shift and warp paths. ``'bicubic'`` (a cubic spline, as
        `reproject`'s ``bicubic``) keeps an undersampled PSF sharp: bilinear interpolation
        widens a 2-pixel FWHM by about 10% on average. ``'bilinear'`` has no negative
        lobes. The variance and the mask always go bilinear.
    conserve : {'auto', 'per-pixel', 'surface'}
        What the resampling conserves (see `flux_convention`): ``'per-pixel'`` data (counts
        in a pixel) are multiplied by the ratio of output to input pixel area
        (`pixel_area_ratio`, distortion included) so that fluxes are kept; ``'surface'``
        data are left as they are. ``'auto'`` decides from the unit; a unit that does not
        say (dimensionless...) is treated as counts per pixel, with a warning.
    pixfrac : float
        Drizzle only: linear size of the drop, as a fraction of an input pixel (0 < pixfrac
        <= 1).
    kernel : str
        Drizzle only: ``'square'``, ``'gaussian'``, ``'point'``, ``'turbo'``,
        ``'lanczos2'`` or ``'lanczos3'`` (see `drizzle.resample.Drizzle`).

    Returns
    -------
    resampled : `~astropy.nddata.CCDData`
        On ``wcs_out``: float32 data (float64 if the input is float64), a
        `~astropy.nddata.StdDevUncertainty`, and a mask that is True wherever no valid input
        pixel contributes. The header gains ``SSRESAMP`` (the path taken), ``SSFLUXC`` (the
        flux convention applied), ``SSPIXAR`` (median output/input pixel-area ratio) and, on
        the shift path, ``SSSHIFTX``/``SSSHIFTY``; on the drizzle path ``SSPIXFRC`` and
        ``SSDRZKER`` (written with `~shiftstack_ccd.steps.provenance_header`), and a
        ``HISTORY`` line with the call (`~shiftstack_ccd.steps.log_to_header`).

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData, StdDevUncertainty, VarianceUncertainty
    >>> from astropy.wcs import WCS
    >>> wcs = WCS(naxis=2)
    >>> wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> wcs.wcs.crval = [150, 2]; wcs.wcs.crpix = [16, 16]
    >>> wcs.wcs.cdelt = [-1 / 3600, 1 / 3600]
    >>> data = np.zeros((31, 31), dtype=np.float32); data[15, 15] = 100
    >>> ccd = CCDData(data, unit="electron", wcs=wcs,
    ...               uncertainty=StdDevUncertainty(np.ones_like(data)))
    >>> out_wcs = wcs.deepcopy(); out_wcs.wcs.crpix = [16.25, 16.5]
    >>> out = resample_to_target(ccd, out_wcs, (31, 31))
    >>> out.meta["SSRESAMP"], round(float(np.nansum(out.data)), 3)
    ('shift', 100.0)

    Output pixels twice as large hold four times the counts each; the flux is kept:

    >>> coarse = WCS(naxis=2)
    >>> coarse.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> coarse.wcs.crval = [150, 2]; coarse.wcs.crpix = [8, 8]
    >>> coarse.wcs.cdelt = [-2 / 3600, 2 / 3600]
    >>> out = resample_to_target(ccd, coarse, (15, 15), method="drizzle")
    >>> out.meta["SSFLUXC"], out.meta["SSPIXAR"], round(float(np.nansum(out.data)), 3)
    ('per-pixel', 4.0, 100.0)
    """
    label, convention, why = _check(ccd, method, interpolation, conserve, pixfrac, kernel)
    return _resample(_Frame(ccd, label), wcs_out, shape_out, method, interpolation,
                     (convention, why), pixfrac, kernel)


def resample_to_grids(ccd, wcses, shape_out, **options):
    """Resample one frame onto several grids of the same shape (e.g. the stars' fixed grid
    and the target's grid at the frame's epoch).

    The same products as `resample_to_target` on each grid in turn, ``HISTORY`` line
    included, but what depends on the frame alone (its variance and bad pixels, their
    filling, the cubic spline's coefficients) is computed once.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame, as for `resample_to_target`.
    wcses : list of `~astropy.wcs.WCS`
        The output grids.
    shape_out : tuple
        ``(ny, nx)`` of every output.
    **options
        ``method``, ``interpolation``, ``conserve``, ``pixfrac``, ``kernel``: as for
        `resample_to_target`.

    Returns
    -------
    resampled : list of `~astropy.nddata.CCDData`
        One per grid, in order.

    Examples
    --------
    A simulated frame on its own grid (unchanged) and on one moved by a quarter and a half
    pixel:

    >>> import numpy as np
    >>> import shiftstack_ccd as ss
    >>> ccd = ss.simulate_observation(n_frames=1, shape=(31, 31), n_stars=0, noise=False,
    ...                               seed=0).frames[0]
    >>> moved = ccd.wcs.deepcopy(); moved.wcs.crpix = moved.wcs.crpix + [0.25, 0.5]
    >>> fixed, on_target = resample_to_grids(ccd, [ccd.wcs, moved], (31, 31))
    >>> shift = on_target.meta["SSSHIFTX"], on_target.meta["SSSHIFTY"]
    >>> bool(np.allclose(fixed.data, ccd.data)), shift
    (True, (0.25, 0.5))
    """
    unknown = sorted(set(options) - {"method", "interpolation", "conserve", "pixfrac",
                                     "kernel"})
    if unknown:
        raise TypeError(f"resample_to_grids() got unexpected options {unknown}")
    given = dict(method="auto", interpolation="bicubic", conserve="auto", pixfrac=1.0,
                 kernel="square")
    given.update(options)
    label, convention, why = _check(ccd, given["method"], given["interpolation"],
                                    given["conserve"], given["pixfrac"], given["kernel"])
    frame = _Frame(ccd, label)
    products = []
    for wcs_out in wcses:
        out = _resample(frame, wcs_out, shape_out, given["method"], given["interpolation"],
                        (convention, why), given["pixfrac"], given["kernel"])
        # the line resample_to_target writes (log_to_header): the two are interchangeable
        out.meta.add_history(history_line(resample_to_target, ccd, wcs_out, shape_out,
                                          **options))
        products.append(out)
    return products


def _check(ccd, method, interpolation, conserve, pixfrac, kernel):
    """The options checked against the frame: its label and flux convention (and why)."""
    label = frame_label(ccd)
    require_celestial_wcs(ccd, "resample_to_target")
    if interpolation not in _SPLINE_ORDER:
        raise ValueError(f"interpolation must be one of {sorted(_SPLINE_ORDER)}, "
                         f"not {interpolation!r}")
    if method not in ("auto", "shift", "warp", "drizzle"):
        raise ValueError(f"method must be 'auto', 'shift', 'warp' or 'drizzle', not {method!r}")
    if method == "drizzle":
        if not 0 < pixfrac <= 1:
            raise ValueError(f"pixfrac must be in (0, 1], not {pixfrac!r}")
        if kernel not in DRIZZLE_KERNELS:
            raise ValueError(f"kernel must be one of {list(DRIZZLE_KERNELS)}, not {kernel!r}")
    convention, why = _resolve_convention(ccd.unit, conserve, label)
    if ccd.uncertainty is None:
        raise FrameError(f"{label}: has no uncertainty; resampling carries the variance "
                         "with the data (give it one, e.g. ccdproc.create_deviation).")
    return label, convention, why


class _Frame:
    """What resampling needs of a frame, whatever the grid: computed once for all grids.

    ``variance_filled`` is the variance with 0 at ``bad`` pixels (masked or not finite);
    `data` the data with the bad pixels filled, or its spline coefficients.
    """

    def __init__(self, ccd, label):
        self.ccd, self.label = ccd, label
        self.wcs = ccd.wcs
        self.dtype = np.float64 if ccd.data.dtype == np.float64 else np.float32
        try:
            variance = ccd.uncertainty.represent_as(VarianceUncertainty).array
        except Exception as exc:  # astropy raises several types for unconvertible ones
            raise FrameError(f"{label}: its uncertainty cannot be converted to a variance: "
                             f"{exc}") from None
        bad = ~np.isfinite(ccd.data) | ~np.isfinite(variance)
        if ccd.mask is not None:
            bad |= np.asarray(ccd.mask, dtype=bool)
        if bad.all():
            raise FrameError(f"{label}: every pixel is masked or not finite.")
        self.bad = bad
        # variance and the bad-pixel indicator always go bilinear (see the module notes)
        self.variance_filled = np.where(bad, 0, variance).astype(self.dtype)
        self._data = {}

    def data(self, order):
        """The filled data (order 1), or its spline coefficients (`_spline_coefficients`)."""
        if 1 not in self._data:
            self._data[1] = _fill_bad_pixels(np.asarray(self.ccd.data, dtype=self.dtype),
                                             self.bad)
        if order not in self._data:
            self._data[order] = _spline_coefficients(self._data[1], order)
        return self._data[order]


def _spline_coefficients(data, order):
    """`scipy.ndimage.map_coordinates`' own prefilter (the same call, the same numbers), kept
    so that a frame resampled onto two grids is filtered once."""
    from scipy.ndimage import spline_filter
    return spline_filter(data, order, output=np.float64, mode="constant")


def _resample(frame, wcs_out, shape_out, method, interpolation, convention, pixfrac, kernel):
    """`resample_to_target` on one grid, from the frame's `_Frame` (no HISTORY line)."""
    ccd, label, dtype, bad = frame.ccd, frame.label, frame.dtype, frame.bad
    convention, why = convention
    cards = {}  # key: (value, comment), written at the end (`provenance_header`)

    if method == "drizzle":
        out_data, out_var, wht, ratio = _drizzle(
            np.where(bad, 0, ccd.data), frame.variance_filled, bad, frame.wcs, wcs_out,
            shape_out, pixfrac, kernel, label)
        # no weight, or the round-off slivers (~1e-10) of pixels that only touch an edge
        mask = ~(wht > 1e-6 * np.max(wht))
        # drizzle's value is a mean over the output pixel, and so is the variance: c = 1/ratio
        # for every input pixel (see the module notes)
        out_var = out_var / ratio
        typical_ratio = float(np.nanmedian(ratio))
        cards["SSRESAMP"] = ("drizzle", "resampling path (STScI drizzle)")
        cards["SSPIXFRC"] = (float(pixfrac), "drizzle pixfrac")
        cards["SSDRZKER"] = (kernel, "drizzle kernel")
    else:
        out_data, out_var, mask, ratio, typical_ratio = _interpolate(
            frame, wcs_out, shape_out, method, interpolation, cards)
    if (ratio is not None and cards.get("SSINTERP", (None,))[0] == "bicubic"
            and typical_ratio > _SPLINE_NOISE_RATIO):
        # (no frame name: the default filter then says it once for frames alike)
        warnings.warn(f"output pixels {typical_ratio:.2g} times larger than the "
                      "input's, by a cubic spline: its samples alias the noise, and the "
                      "carried uncertainty is low (by about 15% at twice the pixel size); "
                      "resample='drizzle' (or interpolation='bilinear') is right for this.",
                      AstropyUserWarning)
    if ratio is not None and convention == "per-pixel":
        out_data *= ratio
        out_var *= ratio
        out_var *= ratio
    if ratio is None or mask.all():
        pixar = 1.0
    elif not mask.any():  # every pixel counts: the median already taken (a millisecond)
        pixar = typical_ratio
    else:
        pixar = float(np.nanmedian(ratio[~mask]))
    mask |= ~np.isfinite(out_data)
    mask |= ~np.isfinite(out_var)
    if mask.all():
        raise FrameError(f"{label}: no part of the frame falls on the output grid.")
    cards["SSFLUXC"] = (convention, f"flux convention ({why}): per-pixel or surface")
    cards["SSPIXAR"] = (round(pixar, 8), "median output/input pixel area ratio")
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s: resampled by %s, %.1f%% of the output covered", label,
                  cards["SSRESAMP"][0], 100 * (1 - mask.mean()))
    # Masked pixels hold NaN: a masked value is never silently a number.
    out_data = out_data.astype(dtype, copy=False)
    out_data[mask] = np.nan
    std = np.sqrt(np.clip(out_var, 0, None, out=out_var), out=out_var).astype(dtype, copy=False)
    std[mask] = np.nan
    meta = provenance_header(ccd.meta, [(key, value, comment)
                                        for key, (value, comment) in cards.items()])
    return CCDData(out_data, unit=ccd.unit, wcs=wcs_out.deepcopy(), mask=mask,
                   uncertainty=StdDevUncertainty(std), meta=meta)


def _interpolate(frame, wcs_out, shape_out, method, interpolation, cards):
    """The shift and warp paths: data, variance (before the area ratio), mask and the
    pixel-area ratio (None on the shift path, where it is exactly 1) and its median; the
    header cards go into ``cards``."""
    ccd, bad, dtype, label = frame.ccd, frame.bad, frame.dtype, frame.label
    wcs_in, variance_filled = frame.wcs, frame.variance_filled
    translation = None
    if method in ("auto", "shift"):
        translation = find_translation(wcs_in, wcs_out, ccd.shape)
        if translation is None and method == "shift":
            raise FrameError(f"{label}: its WCS is not the output grid up to a translation "
                             "(rotation, scale or distortion differ); use method='warp' "
                             "or 'auto'.")
    ratio = None
    if translation is not None:
        tx, ty = translation
        ys, xs = _translation_coordinates(shape_out, tx, ty)
        cards["SSRESAMP"] = ("shift", "resampling path (translation only)")
        cards["SSSHIFTX"] = (tx, "[pix] x shift applied onto the output grid")
        cards["SSSHIFTY"] = (ty, "[pix] y shift applied onto the output grid")
    else:
        ys, xs, ratio = _pixel_map(wcs_in, wcs_out, shape_out, 32, 1e-4, area=True)
        cards["SSRESAMP"] = ("warp", "resampling path (through the sky, both WCS)")
    coords, outside = _prepare_coordinates(ys, xs, ccd.shape)
    del ys, xs  # full-field grids: every array of output size counts
    if ratio is not None:
        ratio = ratio.astype(dtype)
    typical_ratio = None if ratio is None else float(np.nanmedian(ratio))
    if ratio is not None and abs(typical_ratio - 1) > _ADJOINT_THRESHOLD:
        variance_filled = variance_filled * _bilinear_adjoint(coords, outside, ccd.shape)
    out_var = _sample(variance_filled, coords, outside, 1)
    # where no input pixel is bad, the bad-pixel plane would resample to zero: skip it
    out_bad = _sample(bad.astype(dtype), coords, outside, 1) if bad.any() else None
    order = _SPLINE_ORDER[interpolation]
    out_data = _sample(frame.data(order), coords, outside, order,
                       dtype=dtype if order > 1 else None)
    cards["SSINTERP"] = (interpolation, "resampling interpolation of the data")
    # Masked: outside the frame, or touched (bilinear weight > 0) by a bad input pixel.
    mask = ~np.isfinite(out_data) | ~np.isfinite(out_var)
    if out_bad is not None:
        mask |= ~(out_bad < 1e-6)
    return out_data, out_var, mask, ratio, typical_ratio
