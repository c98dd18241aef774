# Licensed under a 3-clause BSD style license - see LICENSE
"""Subpixel refinement of the target's position by FFT cross-correlation.

When the target is visible in single frames (comets, moons, bright asteroids), the residual
error of the ephemeris (and of each frame's WCS) can be measured frame by frame: each frame's
cutout around the target, on the target-centred grid, is cross-correlated with the stack of
the other frames, and the stack is rebuilt with the measured offsets until they settle.

**Sign convention.** Everything here uses one convention, proven by the tests on known shifts
(integer and subpixel, odd and even sizes, each axis separately): an offset ``(dx, dy)``
means that the feature in ``image`` sits at its position in ``reference`` **plus**
``(dx, dy)`` pixels (``x`` along columns, the second array axis; ``y`` along rows), so that
``image`` shifted by ``(-dx, -dy)`` lines up with ``reference``. For a cutout on a frame's
target-centred grid (`TargetFrame.wcs_at`) the target truly is at the centre pixel plus
``(dx, dy)``: its offset in the target plane is ``grid.offset(t) + (dx, dy)``, and the
corrected grid is ``wcs_at(t)`` with ``CRPIX`` minus ``(dx, dy)`` (`shifted_wcs`).

**Why this route.** The seed notebook cross-correlated whole frames directly
(``scipy.signal.correlate2d``, O(N^4): hours at 1000 x 1000) and read its zero lag one pixel
off for even sizes. Here the correlation is computed by FFT on a cutout and its peak is
refined to ``1/upsample`` pixel by `skimage.registration.phase_cross_correlation` (the
matrix-multiply upsampled DFT of Guizar-Sicairos et al. 2008), which is the band-limited
interpolation of the correlation peak, not a parabola fit. Plain cross-correlation
(``normalization=None``) is used by default rather than phase correlation: phase
correlation whitens the spectrum, giving the noise-dominated high spatial frequencies the
same weight as the target's: on simulated sequences (10 cutouts, FWHM 3 pixels) its
errors are 6, 4 and 2.6 times larger at S/N 50, 20 and 10, and its iterations do not
settle (``benchmarks/bench_register.py``). Plain cross-correlation is the matched filter
for a known shape in white noise.

**Preparing a cutout.** Before the FFT, pixels that are masked or not finite are replaced
by the cutout's median, the median (the background) is subtracted, and the cutout is
apodized with a Tukey window (flat over the central half, cosine taper to zero at the
edges), so that the periodic FFT sees no edge step. One window common to both cutouts
would pull the peak towards zero whenever features lie in its taper (a star field, a
target near the edge: 0.26 pixel on a 64 x 64 star field shifted by 5 pixels), so the peak
is measured twice, the second time with the image's window moved by the first estimate,
which weights every feature alike in both cutouts. Keep the target well inside the cutout
all the same, at least about 4 x (target radius + largest offset) wide: the FFT only sees
offsets up to half the cutout, and the taper lowers the signal there.
"""

import logging
import warnings
from typing import NamedTuple

import numpy as np
from astropy import units as u
from astropy.stats import mad_std
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

__all__ = ["Offset", "center_cutout", "measure_offset", "refine_offsets", "refinement_shift",
           "refinement_cards", "shift_bound", "shifted_wcs"]

log = logging.getLogger(__name__)

#: Fraction of the cutout, per axis, over which the Tukey window tapers (0.5: flat centre half).
WINDOW_TAPER = 0.5

#: Smallest fraction of usable pixels for a cutout to be measured.
MIN_GOOD_FRACTION = 0.5

#: Detection threshold (sigma of the smoothed template) of the template's soft footprint.
FOOTPRINT_NSIGMA = 3.0


class Offset(NamedTuple):
    """The result of `measure_offset`.

    Attributes
    ----------
    dx, dy : float
        Measured offset in pixels: the feature in ``image`` sits at its ``reference``
        position plus ``(dx, dy)`` (``x`` along the second array axis). Set (NaN when nothing
        could be measured) even when the offset is refused, so that it can be reported.
    significance : float
        Height of the cross-correlation peak over its expected noise (a matched-filter S/N,
        see `measure_offset`); NaN when not computed.
    accepted : bool
        False when the peak lies beyond ``max_shift``, is not significant, is an
        anti-correlation, or the cutouts have too few usable pixels.
    reason : str
        Why the offset was refused; empty when accepted.
    """

    dx: float
    dy: float
    significance: float
    accepted: bool
    reason: str


def _tukey_window(shape, shift=(0.0, 0.0), taper=WINDOW_TAPER):
    """A 2-D Tukey window whose centre is moved by ``shift = (dy, dx)`` pixels.

    Written here rather than taken from `scipy.signal.windows.tukey` because that one is
    sampled at whole pixels only, and the second pass of `measure_offset` needs it moved by
    a fraction of a pixel. Unshifted, it equals scipy's (flat centre, cosine tapers over
    ``taper / 2`` of the length at each end, zero on the first and last pixels).
    """
    def one(n, s):
        pos = np.arange(n) - s
        length = taper * (n - 1) / 2
        w = ((pos > 0) & (pos < n - 1)).astype(float)
        if length > 0:
            edge = np.minimum(pos, n - 1 - pos)
            ramp = (edge > 0) & (edge < length)
            w[ramp] = 0.5 * (1 - np.cos(np.pi * edge[ramp] / length))
        return w
    return np.outer(one(shape[0], shift[0]), one(shape[1], shift[1]))


def _prepare(data, mask):
    """Fill bad pixels with the median and subtract it; also return the noise (mad_std)
    and the fraction of usable pixels. The window is applied by the caller."""
    data = np.asarray(data, dtype=float)
    bad = ~np.isfinite(data)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    good_fraction = 1.0 - bad.mean()
    if good_fraction == 0:
        return None, np.nan, 0.0
    values = data[~bad]
    median = np.median(values)
    sigma = float(mad_std(values))
    return np.where(bad, 0.0, data - median), sigma, good_fraction


def _check_bound(dx, dy, max_shift):
    """Return a refusal message if ``(dx, dy)`` lies beyond ``max_shift``, else ''."""
    if max_shift is None:
        return ""
    bound = np.asarray(max_shift, dtype=float)
    if bound.ndim == 0:
        if np.hypot(dx, dy) > bound:
            return (f"peak at ({dx:+.2f}, {dy:+.2f}) px is {np.hypot(dx, dy):.2f} px away, "
                    f"beyond max_shift {float(bound):.2f} px")
        return ""
    if bound.shape != (2,):
        raise ValueError(f"max_shift must be a number or a pair (max_dx, max_dy), "
                         f"not {max_shift!r}")
    if np.any(bound <= 0):
        raise ValueError(f"max_shift must be positive, not {max_shift!r}")
    if (dx / bound[0]) ** 2 + (dy / bound[1]) ** 2 > 1:
        return (f"peak at ({dx:+.2f}, {dy:+.2f}) px lies outside the max_shift ellipse "
                f"({bound[0]:.2f}, {bound[1]:.2f}) px")
    return ""


def measure_offset(image, reference, upsample=100, max_shift=None, mask=None, ref_mask=None,
                   min_significance=5.0, normalization=None):
    """Measure the subpixel offset of ``image`` relative to ``reference`` by FFT.

    Parameters
    ----------
    image, reference : array-like
        Two 2-D cutouts of the same shape (e.g. a frame's and a template's, around the
        target on the same grid). NaN and infinite pixels are treated as masked.
    upsample : int
        The peak is located to ``1 / upsample`` pixel
        (`skimage.registration.phase_cross_correlation`'s ``upsample_factor``).
    max_shift : float or (float, float), optional
        Largest accepted offset in pixels: a radius, or the semi-axes ``(max_dx, max_dy)``
        of an ellipse. A peak beyond it is refused (``accepted=False``), not clipped.
        Default: no bound (the FFT still cannot see beyond half the cutout).
    mask, ref_mask : array-like of bool, optional
        True for pixels of ``image`` / ``reference`` to ignore (filled with the median).
    min_significance : float
        A peak whose significance is below this is refused.
    normalization : {None, 'phase'}
        None (default) for plain cross-correlation, ``'phase'`` for phase correlation; see
        the module notes for why plain is the default.

    Returns
    -------
    offset : `Offset`
        ``dx, dy, significance, accepted, reason``; the feature in ``image`` sits at its
        ``reference`` position plus ``(dx, dy)``.

    Notes
    -----
    The cutouts are prepared as the module notes say (bad pixels filled, median
    subtracted, Tukey window), and the peak is measured twice, the second time with the
    image's window moved by the first estimate (skipped when that is beyond a quarter of
    the cutout).

    The significance is the plain cross-correlation of the prepared cutouts at the peak's
    nearest whole-pixel lag, divided by its expected noise for independent
    background-limited noise, ``sqrt(s_i**2 * sum(R**2) + s_r**2 * sum(I**2))``, where
    ``s_i``, ``s_r`` are the robust pixel scatters (`~astropy.stats.mad_std`) of the cutouts
    and ``I``, ``R`` the prepared cutouts. For a point source against a noiseless template
    it is the background-limited matched-filter S/N, ``F sqrt(sum(P**2)) / s_i`` (checked by
    the tests to 5%); it ignores the source's own photon noise, so it exceeds the full S/N
    of bright sources (84 where the full matched-filter S/N is 53, for a 3-pixel FWHM
    source at aperture S/N 50 on a 225 e- background). On pure noise it stays below 5 in
    100 trials of 48 x 48. Resampled noise is correlated, which lowers ``mad_std`` and
    raises the significance somewhat.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[0:32, 0:32]
    >>> blob = lambda x0, y0: np.exp(-((x - x0)**2 + (y - y0)**2) / 4.5)
    >>> off = measure_offset(blob(16.3, 14.0), blob(15.5, 15.5))
    >>> print(f"{off.dx:.2f} {off.dy:.2f} {off.accepted}")
    0.80 -1.50 True
    >>> off = measure_offset(blob(15.5, 20.5), blob(15.5, 15.5), max_shift=3)
    >>> off.accepted, off.reason
    (False, 'peak at (+0.00, +5.00) px is 5.00 px away, beyond max_shift 3.00 px')
    """
    from skimage.registration import phase_cross_correlation

    image = np.asarray(image)
    reference = np.asarray(reference)
    if image.ndim != 2 or image.shape != reference.shape:
        raise ValueError(f"image and reference must be 2-D arrays of one shape, not "
                         f"{image.shape} and {reference.shape}")
    if normalization not in (None, "phase"):
        raise ValueError(f"normalization must be None or 'phase', not {normalization!r}")
    upsample = int(upsample)
    if upsample < 1:
        raise ValueError(f"upsample must be a positive integer, not {upsample}")
    img0, s_img, f_img = _prepare(image, mask)
    ref0, s_ref, f_ref = _prepare(reference, ref_mask)
    if min(f_img, f_ref) < MIN_GOOD_FRACTION:
        return Offset(np.nan, np.nan, np.nan, False,
                      f"too few usable pixels (image {100 * f_img:.0f}%, reference "
                      f"{100 * f_ref:.0f}%; need {100 * MIN_GOOD_FRACTION:.0f}%)")
    if not (np.any(img0) and np.any(ref0)):
        return Offset(np.nan, np.nan, np.nan, False, "a cutout is constant (no signal)")

    ny, nx = image.shape
    ref = ref0 * _tukey_window(image.shape)
    f_ref_hat = np.fft.fft2(ref)
    dx = dy = 0.0
    # Pass 1 with the same window on both; pass 2 with the image's window moved by the first
    # estimate, so that every feature is weighted alike in both cutouts (a common fixed
    # window pulls the peak towards zero when features lie in its taper, e.g. stars all
    # over a frame). Pass 2 is skipped for a first peak beyond a quarter of the cutout.
    for move in (False, True):
        if move and (abs(dx) > nx / 4 or abs(dy) > ny / 4):
            break
        img = img0 * _tukey_window(image.shape, (dy, dx) if move else (0.0, 0.0))
        f_img_hat = np.fft.fft2(img)
        # skimage returns the shift that registers `image` onto `reference`: minus ours.
        shift, _, _ = phase_cross_correlation(f_ref_hat, f_img_hat, space="fourier",
                                              upsample_factor=upsample,
                                              normalization=normalization)
        dy, dx = 0.0 - float(shift[0]), 0.0 - float(shift[1])  # no "-0.0"

    # Plain correlation at the nearest whole-pixel lag, for the sign and the significance
    # (skimage locates the peak of |correlation|, which may be an anti-correlation).
    cc = np.fft.ifft2(f_ref_hat * np.conj(f_img_hat)).real
    peak = cc[int(round(-dy)) % ny, int(round(-dx)) % nx]
    noise = np.sqrt(s_img ** 2 * np.sum(ref ** 2) + s_ref ** 2 * np.sum(img ** 2))
    significance = float(peak / noise) if noise > 0 else np.inf

    reason = _check_bound(dx, dy, max_shift)
    if not reason and peak <= 0:
        reason = (f"the strongest correlation, at ({dx:+.2f}, {dy:+.2f}) px, is negative "
                  "(an anti-correlation: an over-subtracted source?)")
    if not reason and not significance >= min_significance:
        reason = (f"peak not significant: {significance:.1f} sigma < {min_significance:g}")
    return Offset(dx, dy, significance, not reason, reason)


def center_cutout(image, size):
    """The central ``size`` (int or ``(ny, nx)``) part of a 2-D array (a view).

    The cutout keeps the array's centre ``((n - 1) / 2)`` exactly at its own centre when
    ``n - size`` is even on each axis (an odd grid and an odd size); otherwise it is off by
    half a pixel, the same for every frame, which relative offsets do not see.

    Examples
    --------
    >>> import numpy as np
    >>> center_cutout(np.arange(49).reshape(7, 7), 3)
    array([[16, 17, 18],
           [23, 24, 25],
           [30, 31, 32]])
    """
    image = np.asarray(image)
    sy, sx = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    ny, nx = image.shape
    if not (0 < sy <= ny and 0 < sx <= nx):
        raise ValueError(f"cutout size {(sy, sx)} does not fit in an image of {image.shape}")
    y0, x0 = (ny - sy) // 2, (nx - sx) // 2
    return image[y0:y0 + sy, x0:x0 + sx]


def shift_bound(ra_sigma, dec_sigma, pixel_scale, nsigma=3.0, minimum=1.0):
    """Per-frame ``max_shift`` (pixels) from the ephemeris' 1-sigma position uncertainty.

    The bound is the radius of the circle around the ``nsigma`` uncertainty ellipse,
    ``nsigma * max(ra_sigma, dec_sigma)``, so it holds for any orientation of the grid,
    and never less than ``minimum`` pixels: the refinement also absorbs each frame's WCS
    error, which the ephemeris' uncertainty does not count.

    Parameters
    ----------
    ra_sigma, dec_sigma : `~astropy.units.Quantity`
        1-sigma uncertainties (angles, on the sky), scalars or one per frame, e.g. from
        ``Ephemeris.uncertainty_at(times)``.
    pixel_scale : `~astropy.units.Quantity`
        Angle per pixel of the grid (an angle, or an angle per ``u.pix``).
    nsigma : float
        Number of sigmas allowed.
    minimum : float
        Smallest bound, pixels.

    Returns
    -------
    max_shift : `~numpy.ndarray`
        In pixels, the shape of the broadcast inputs.

    Examples
    --------
    >>> from astropy import units as u
    >>> shift_bound([0.1, 2.0] * u.arcsec, [0.05, 0.5] * u.arcsec, 0.5 * u.arcsec)
    array([ 1., 12.])
    """
    scale = u.Quantity(pixel_scale)
    if scale.unit.is_equivalent(u.arcsec / u.pix):
        scale = scale * u.pix
    scale = scale.to_value(u.arcsec)
    ra = u.Quantity(ra_sigma, u.arcsec).value
    dec = u.Quantity(dec_sigma, u.arcsec).value
    return np.maximum(nsigma * np.maximum(ra, dec) / scale, float(minimum))


def shifted_wcs(wcs, dx, dy):
    """A copy of a target-centred grid's WCS corrected by a measured offset ``(dx, dy)``.

    The target, found at the centre pixel plus ``(dx, dy)`` on ``wcs``, is on the centre
    pixel of the returned WCS (``CRPIX`` minus ``(dx, dy)``).

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.crpix = [51, 51]
    >>> shifted_wcs(w, 0.25, -1.5).wcs.crpix
    array([50.75, 52.5 ])
    """
    out = wcs.deepcopy()
    out.wcs.crpix = out.wcs.crpix - np.array([float(dx), float(dy)])
    out.wcs.set()
    return out


def _as_cutouts(cutouts, masks, size):
    """Arrays (float64) and bad-pixel masks from arrays or CCDData, cropped if asked."""
    datas, bads = [], []
    if masks is not None and len(masks) != len(cutouts):
        raise ValueError(f"masks must be one per cutout ({len(cutouts)}), not {len(masks)}")
    for i, cut in enumerate(cutouts):
        data = np.asarray(getattr(cut, "data", cut), dtype=float)
        if data.ndim != 2:
            raise ValueError(f"cutout #{i} is not 2-D (shape {data.shape})")
        bad = ~np.isfinite(data)
        own = getattr(cut, "mask", None)
        if own is not None:
            bad |= np.asarray(own, dtype=bool)
        if masks is not None and masks[i] is not None:
            bad |= np.asarray(masks[i], dtype=bool)
        if size is not None:
            data, bad = center_cutout(data, size), center_cutout(bad, size)
        datas.append(data)
        bads.append(bad)
    if len({d.shape for d in datas}) != 1:
        raise ValueError(f"cutouts must share one shape, not {sorted({d.shape for d in datas})}")
    return datas, bads


def _per_frame_bound(max_shift, n):
    """max_shift as a list of n per-frame bounds (None, a radius, or a (dx, dy) pair)."""
    if max_shift is None:
        return [None] * n
    bound = np.asarray(max_shift, dtype=float)
    if bound.ndim == 0 or bound.shape == (2,) and n != 2:
        return [bound] * n
    if bound.shape in ((n,), (n, 2)):
        return list(bound)
    raise ValueError(f"max_shift must be a number, a (max_dx, max_dy) pair, or one of those "
                     f"per frame ({n} or {n} x 2 values), not shape {bound.shape}")


def _footprint_template(template, bad, nsigma=FOOTPRINT_NSIGMA):
    """The template, background-subtracted, weighted down to zero outside the target.

    The weight rises from 0 to 1 as the template smoothed by a 1-pixel Gaussian goes from
    0.5 to 1.5 times ``nsigma`` times its own noise (`~astropy.stats.mad_std`): a soft
    footprint of whatever the template shows, a point source or a coma. Without it the
    noise of every template pixel times the image's noise adds a white noise field to the
    whole correlation surface, which halves the accuracy at S/N 10 on a 48 x 48 cutout.
    """
    from scipy.ndimage import gaussian_filter
    if bad.all():
        return template
    background = np.median(template[~bad])
    data = np.where(bad, 0.0, template - background)
    smooth = gaussian_filter(data, 1.0, mode="constant")
    noise = mad_std(smooth[~bad])
    if not noise > 0:
        return data
    weight = np.clip(smooth / (nsigma * noise) - 0.5, 0.0, 1.0)
    # Keep only the footprint of the target, which the cutouts centre: whatever else the
    # template shows (residuals of subtracted stars, a neighbour) is static on the sky and
    # moves against the target from frame to frame, so it would pull the peak along.
    from scipy.ndimage import label
    labels, _ = label(weight > 0)
    cy, cx = (n // 2 for n in weight.shape)
    central = np.unique(labels[cy - 1:cy + 2, cx - 1:cx + 2])
    central = central[central > 0]
    if central.size:
        weight = np.where(np.isin(labels, central), weight, 0.0)
    return data * weight


def refine_offsets(cutouts, masks=None, max_shift=None, iterations=10, tol=0.01, upsample=100,
                   min_significance=5.0, weights=None, template="mean", size=None,
                   normalization=None, footprint=True, footprint_nsigma=FOOTPRINT_NSIGMA):
    """Measure each frame's residual offset of the target against the stack of the others.

    Parameters
    ----------
    cutouts : list of 2-D arrays or `~astropy.nddata.CCDData`
        One per frame, all on the same target-centred grid (e.g. each frame resampled onto
        ``grid.wcs_at(t)``), ideally after static-sky subtraction. A CCDData's mask is used.
    masks : list of array-like of bool, optional
        True for pixels to ignore (added to non-finite pixels and the CCDData masks).
    max_shift : float, (float, float), or one of those per frame, optional
        Largest accepted correction, pixels (a radius or ``(max_dx, max_dy)`` semi-axes;
        see `shift_bound` to derive it from the ephemeris uncertainty). A frame whose peak
        lies beyond is refused: its correction is 0, and the table says why. With exactly
        two frames a length-2 ``max_shift`` is read as one radius per frame; give
        ``[(max_dx, max_dy)] * 2`` for an ellipse.
    iterations : int
        Largest number of measure-and-restack passes (on simulated 10-frame sequences they
        settle in 3 passes at S/N 20-50 and 4-5 at S/N 10).
    tol : float
        Stop when no correction changes by more than this (pixels) in a pass.
    upsample : int
        Subpixel resolution of the peak, ``1 / upsample`` pixel.
    min_significance : float
        Frames whose correlation peak is less significant are refused.
    weights : array-like, optional
        Per-frame weights of the gauge condition (below) and of the template mean: give the
        combine's weights at the target (`~shiftstack_ccd.shift_and_stack` passes them, the
        inverse variance of each frame there for an inverse-variance combine), so that
        frames the stack weighs down weigh as little in the template and the gauge.
    template : {'mean', 'median'}
        How the other frames are combined into the template ('median' resists stars and
        cosmic rays left in the cutouts, at ~25% more noise).
    size : int or (int, int), optional
        Crop every cutout to its central ``size`` first (`center_cutout`).
    normalization : {None, 'phase'}
        Passed to `measure_offset`.
    footprint : bool
        Weight the template down to zero away from the target (a soft footprint at
        ``footprint_nsigma`` times the smoothed template's noise, see the notes). On by
        default: it nearly halves the error at S/N 10.
    footprint_nsigma : float
        Threshold of the footprint.

    Returns
    -------
    dx, dy : `~numpy.ndarray`
        The correction of each frame, pixels: its target sits at the grid's centre plus
        ``(dx, dy)``; apply it with `shifted_wcs` (``CRPIX`` minus ``(dx, dy)``). 0 for
        refused frames.

    Warns
    -----
    astropy.utils.exceptions.AstropyUserWarning
        When the corrections have not settled within ``iterations`` passes.
    accepted : `~numpy.ndarray` of bool
    table : `~astropy.table.Table`
        One row per frame: ``frame`` (index), ``refine_dx``, ``refine_dy`` (the corrections),
        ``measured_dx``, ``measured_dy`` (the last raw measurement against the others'
        template, also for refused frames),
        ``refine_snr`` (peak significance), ``refine_ok``, ``refine_note`` (the reason a frame
        was refused), ``max_shift`` (the radius or larger semi-axis, NaN if none),
        ``refine_weight`` (``weights``, sum 1) and ``refine_noise`` (each cutout's robust
        standard deviation: a measured correction's error scales with it). Its
        ``meta`` holds ``iterations``, ``converged`` and ``last_update``.

    Notes
    -----
    Each pass shifts every accepted frame by its current correction (cubic spline,
    `scipy.ndimage.shift`, the kernel with which the frames are resampled onto the grid; its
    edges do not matter, the window removes them), then for each frame ``i`` cross-correlates
    its *unshifted* cutout with the mean of the *other* shifted frames (so that frame ``i``'s
    noise does not correlate with itself, and is interpolated only once, when the correction
    is applied). A Fourier shift was not used because the cutouts are not periodic.

    The template of the others sits at minus frame ``i``'s share of the weighted mean
    position, ``-w_i d_i / W_i`` (``W_i`` the others' total weight); the measurement ``m_i``
    is corrected for it, ``d_i = (W_i m_i + w_i d_i') / (W_i + w_i)`` with ``d_i'`` the
    previous estimate. Without this each pass would only shrink the error by ``1 / (n - 1)``
    (slow for a few frames); with it the offsets settle in two or three passes.

    The template's pixels away from the target carry only noise, which, multiplied by the
    frame's noise, spreads a white noise field over the whole correlation surface (its
    variance grows with the cutout's area, unlike the matched-filter term); the soft
    footprint removes them. With a 3-pixel FWHM target on 48 x 48 cutouts and a perfectly
    aligned 9-frame template, the error per axis at S/N 10 drops from 0.35 to 0.18 pixel
    (0.15 against a noiseless template), at S/N 20 from 0.095 to 0.080, unchanged (0.035)
    at S/N 50. The footprint is symmetric about the aligned target, so it does not bias the
    offsets.

    Only relative offsets are measurable this way (the template moves with the frames), so
    the gauge is fixed by making the weighted mean correction of the accepted frames zero:
    the ephemeris is assumed right on average and wrong only from frame to frame. A common
    error of the ephemeris over the whole sequence is thus not corrected (nor is it seen:
    the stack just sits off-centre by it).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> y, x = np.mgrid[0:48, 0:48]
    >>> true = [(0.3, -0.2), (-0.4, 0.5), (0.1, -0.3)]
    >>> cuts = [500 * np.exp(-((x - 23.5 - a)**2 + (y - 23.5 - b)**2) / 4.5)
    ...         + rng.normal(0, 1, x.shape) for a, b in true]
    >>> dx, dy, ok, table = refine_offsets(cuts)
    >>> np.round(dx, 2), np.round(dy, 2)   # true x minus its mean: 0.300, -0.400, 0.100
    (array([ 0.3, -0.4,  0.1]), array([-0.2,  0.5, -0.3]))
    """
    from astropy.stats import mad_std
    from scipy.ndimage import shift as ndi_shift

    if template not in ("mean", "median"):
        raise ValueError(f"template must be 'mean' or 'median', not {template!r}")
    datas, bads = _as_cutouts(list(cutouts), masks, size)
    n = len(datas)
    if n < 2:
        raise ValueError(f"refining offsets needs at least 2 cutouts, not {n}")
    bounds = _per_frame_bound(max_shift, n)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be {n} finite non-negative numbers, not {weights!r}")
    # bad pixels get the cutout's median, so that the spline of a shift can take them
    filled = []
    for data, bad in zip(datas, bads):
        fill = np.median(data[~bad]) if (~bad).any() else 0.0
        filled.append(np.where(bad, fill, data))

    dx, dy = np.zeros(n), np.zeros(n)
    accepted = np.ones(n, dtype=bool)
    results = [None] * n
    converged, update, passes = False, np.inf, 0
    for passes in range(1, int(iterations) + 1):
        in_template = accepted & (w > 0)
        stack = np.empty((n,) + datas[0].shape)
        good = np.empty((n,) + datas[0].shape)
        for j in range(n):
            shift = (-dy[j], -dx[j])
            stack[j] = ndi_shift(filled[j], shift, order=3, mode="nearest")
            # a pixel of the shifted frame is bad if a bad pixel weighs on it (bilinear)
            spread = ndi_shift(bads[j].astype(float), shift, order=1, mode="constant",
                               cval=1.0) if bads[j].any() or shift != (0.0, 0.0) else 0.0
            good[j] = (np.asarray(spread) < 1e-6) * (w[j] if in_template[j] else 0.0)
        new_dx, new_dy = np.zeros(n), np.zeros(n)
        new_ok = np.zeros(n, dtype=bool)
        for i in range(n):
            others = np.arange(n) != i
            if not np.any(good[others]):  # no other accepted frame: fall back to all others
                g = np.broadcast_to((np.arange(n) != i)[:, None, None], good.shape).astype(float)
            else:
                g = good * others[:, None, None]
            with np.errstate(invalid="ignore", divide="ignore"):
                if template == "mean":
                    ref = (g * stack).sum(axis=0) / g.sum(axis=0)
                else:
                    with warnings.catch_warnings():  # uncovered pixels: NaN, masked below
                        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
                        ref = np.nanmedian(np.where(g > 0, stack, np.nan), axis=0)
            ref_bad = ~np.isfinite(ref)
            if footprint:
                ref = _footprint_template(ref, ref_bad, footprint_nsigma)
            res = measure_offset(datas[i], ref, upsample=upsample, max_shift=bounds[i],
                                 mask=bads[i], ref_mask=ref_bad,
                                 min_significance=min_significance,
                                 normalization=normalization)
            results[i] = res
            if res.accepted:
                new_dx[i], new_dy[i], new_ok[i] = res.dx, res.dy, True
                w_others = w[in_template & others].sum()
                if in_template[i] and w_others > 0:
                    # The template (the others' mean) sits at minus this frame's share of
                    # the weighted mean: remove that bias (see the notes).
                    total = w_others + w[i]
                    new_dx[i] = (w_others * res.dx + w[i] * dx[i]) / total
                    new_dy[i] = (w_others * res.dy + w[i] * dy[i]) / total
        if new_ok.any() and w[new_ok].sum() > 0:
            # gauge: the weighted mean correction of the accepted frames is zero
            new_dx[new_ok] -= np.average(new_dx[new_ok], weights=w[new_ok])
            new_dy[new_ok] -= np.average(new_dy[new_ok], weights=w[new_ok])
        update = float(max(np.max(np.abs(new_dx - dx)), np.max(np.abs(new_dy - dy))))
        changed = np.any(new_ok != accepted)
        dx, dy, accepted = new_dx, new_dy, new_ok
        log.debug("refine pass %d: largest update %.4f px, %d of %d frames accepted",
                  passes, update, accepted.sum(), n)
        if update < tol and not changed:
            converged = True
            break
    if not converged:
        warnings.warn(f"refine_offsets: not converged after {passes} passes (the last one "
                      f"changed a correction by {update:.3f} px > tol {tol:g} px); the "
                      "corrections of the last pass are returned. Raise 'iterations', or "
                      "check the refused frames and the S/N.", AstropyUserWarning)
    for i, res in enumerate(results):
        if not res.accepted:
            log.info("frame #%d: offset refused: %s", i, res.reason)

    table = Table()
    table["frame"] = np.arange(n)
    table["refine_dx"] = dx * u.pix
    table["refine_dy"] = dy * u.pix
    table["measured_dx"] = np.array([r.dx for r in results]) * u.pix
    table["measured_dy"] = np.array([r.dy for r in results]) * u.pix
    table["refine_snr"] = np.array([r.significance for r in results])
    table["refine_ok"] = accepted
    table["refine_note"] = [r.reason for r in results]
    table["max_shift"] = np.array([np.nan if b is None else float(np.max(b))
                                   for b in bounds]) * u.pix
    table["refine_weight"] = w / w.sum() if w.sum() > 0 else np.full(n, 1.0 / n)
    table["refine_noise"] = [float(mad_std(d[~b])) if (~b).any() else np.nan
                             for d, b in zip(datas, bads)]
    table.meta.update(iterations=passes, converged=converged, last_update=update,
                      upsample=upsample, template=template,
                      gauge="weighted mean correction of accepted frames is zero")
    return dx, dy, accepted, table


def refinement_shift(table, reference_time, weights=None):
    """What the refinement does to the stacked target's position at the reference epoch.

    The corrections of `refine_offsets` are relative (their weighted mean over the accepted
    frames is zero: the gauge), so the refinement adds no common shift of its own, but the
    stacked target then sits where it was, on average, over the accepted frames, which is
    its position at the reference epoch only if the ephemeris' error does not change over
    the sequence or the reference epoch is the accepted frames' mean time. This gives the
    shift from the stacked target to its position at the reference epoch (from the slope of
    the corrections in time) and the 1-sigma error that the refinement adds there.

    Parameters
    ----------
    table : `~astropy.table.Table`
        The stack's per-frame table: ``mjd_mid``, ``refine_dx``, ``refine_dy`` (pixels),
        ``refine_ok``, and as `refine_offsets` gives them ``refine_weight`` (the gauge's
        weights; equal without) and ``refine_noise`` (the frames' relative noise; equal
        without).
    reference_time : `~astropy.time.Time` or float
        The stack's reference epoch (a Time, or an MJD in UTC).
    weights : array-like, optional
        Per-frame weights of the combine at the target. Default: the table's
        ``refine_weight`` (`~shiftstack_ccd.shift_and_stack` refines with the combine's
        weights at the target), else its ``weight``, else uniform.

    Returns
    -------
    info : dict
        ``shift`` (dx, dy) pixels to add to the position measured on the stack to have the
        target's position at the reference epoch; ``shift_err`` (per axis, pixels, 1
        sigma): the error the refinement adds; ``scatter`` (per axis, pixels): the
        corrections' scatter about a straight line in time, the per-frame error of one
        correction (of a frame of the accepted frames' mean noise); ``rate`` (pixels per
        day, per axis): that line's slope; ``n_accepted``; ``epoch_mjd``: the gauge's
        (weighted) mean time of the accepted frames.

    Notes
    -----
    Let ``A(t)`` be the target's true offset from the ephemeris on the target plane
    (pixels). Accepted frames (set ``a``, ``n_a`` of them, gauge weights ``u_i``, sum 1 over
    them) are corrected by ``d_i = A(t_i) - sum_a u_j A(t_j) + e_i - sum_a u_j e_j``,
    ``e_i`` the error of each measurement (variance ``k n_i**2``, ``n_i`` the frame's
    noise); refused frames (set ``r``) are not corrected. With the combine's per-frame
    weights ``v_i`` (sum 1, ``V_a`` over the accepted frames) the stacked target sits at::

        P = V_a sum_a u_i (A(t_i) + e_i) - sum_a v_i e_i + sum_r v_i A(t_i)

    For a track error linear over the sequence, ``A(t) = A(t_a) + b (t - t_a)`` (``t_a =
    sum_a u_i t_i``), the target at the reference epoch ``t_ref`` is at::

        A(t_ref) - P = b tau - sum_a (V_a u_i - v_i) e_i,
        tau = (t_ref - t_a) - sum_r v_i (t_i - t_a)

    ``b`` is estimated by the straight line through the corrections in time, weighted by
    ``p_i = 1 / n_i**2`` (``t_p`` their weighted mean time, ``S = sum_a p_i (t_i -
    t_p)**2``), so ``shift = b_hat tau``, whose error relative to the truth is ``sum_a c_i
    e_i`` with ``c_i = tau p_i (t_i - t_p) / S + (V_a u_i - v_i)``: ``shift_err =
    sqrt(k sum c_i**2 n_i**2)``, ``k`` from the weighted residuals about the line
    (``n_a - 2`` degrees of freedom; with fewer than 3 accepted frames the slope is taken
    as 0 and ``k`` comes from the corrections themselves). ``k`` also contains any real
    per-frame jitter (a frame's WCS), which makes it conservative.

    So it is a common-mode error of the stacked position, zero when the combine weighs the
    frames as the gauge does (`~shiftstack_ccd.shift_and_stack` gives the refinement the
    combine's weights), every frame is accepted and the reference epoch is the frames' mean
    time (the defaults). The per-frame errors also blur the stacked target by about
    ``scatter`` per axis (the PSF model does not include it: a small loss of flux, ``s**2 /
    (2 sigma_psf**2)`` for a Gaussian PSF of width ``sigma_psf``; not corrected). The part
    of ``e_i`` that is the target's own noise is also in the fit's error of the stacked
    position; adding ``shift_err`` in quadrature is exact for inverse-variance weights
    ``v`` and equal weights, close otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.table import Table
    >>> t = Table({"mjd_mid": 60000 + np.arange(5) / 96, "refine_dx": [-0.4, -0.2, 0, 0.2, 0.4],
    ...            "refine_dy": np.zeros(5), "refine_ok": [True] * 5})
    >>> info = refinement_shift(t, 60000.0)   # the reference epoch is the first frame's
    >>> print(np.round(info["shift"], 3), np.round(info["rate"], 2))
    [-0.4  0. ] [19.2  0. ]
    """
    from astropy.time import Time

    mjd = np.asarray(table["mjd_mid"], dtype=float)
    n = len(mjd)
    t_ref = float(reference_time) if isinstance(reference_time, (int, float, np.floating)) \
        else float(Time(reference_time).utc.mjd)
    ok = np.asarray(table["refine_ok"], dtype=bool)
    # plain numbers (pixels) from a Column with a unit or a Quantity alike
    d = np.array([np.asarray(table[c], dtype=float) for c in ("refine_dx", "refine_dy")])
    names = table.colnames
    if weights is None:
        weights = next((table[c] for c in ("refine_weight", "weight") if c in names),
                       np.ones(n))
    v = _unit_sum(weights, n)
    u_gauge = _unit_sum(table["refine_weight"] if "refine_weight" in names else np.ones(n), n)
    noise = np.asarray(table["refine_noise"], dtype=float) if "refine_noise" in names \
        else np.ones(n)
    info = {"shift": np.zeros(2), "shift_err": np.zeros(2), "scatter": np.zeros(2),
            "rate": np.zeros(2), "n_accepted": int(ok.sum()), "epoch_mjd": np.nan}
    n_a = int(ok.sum())
    if n_a == 0:  # nothing was corrected: the stack is the unrefined one
        return info
    t, u_a, noise_a = mjd[ok], u_gauge[ok] / u_gauge[ok].sum(), noise[ok]
    if not np.all(np.isfinite(noise_a) & (noise_a > 0)):
        noise_a = np.ones(n_a)
    noise_a = noise_a / noise_a.mean()  # the scatter is that of a frame of mean noise
    p = 1.0 / noise_a ** 2
    t_a = float(np.sum(u_a * t))
    info["epoch_mjd"] = t_a
    refused = ~ok
    tau = (t_ref - t_a) - float(np.sum(v[refused] * (mjd[refused] - t_a)))
    mismatch = v[ok].sum() * u_a - v[ok]  # V_a u_i - v_i
    dt = t - float(np.sum(p * t) / p.sum())
    s_tt = float(np.sum(p * dt ** 2))
    if n_a >= 3 and s_tt > 0:
        rate = d[:, ok] @ (p * dt) / s_tt
        line = np.sum(p * d[:, ok], axis=1) / p.sum()
        residual = d[:, ok] - line[:, None] - rate[:, None] * dt
        scatter = np.sqrt(np.sum(p * residual ** 2, axis=1) / (n_a - 2))
        c = tau * p * dt / s_tt + mismatch
    else:
        rate = np.zeros(2)
        scatter = np.sqrt(np.sum(p * d[:, ok] ** 2, axis=1) / n_a)
        c = mismatch
    info.update(shift=rate * tau + 0.0, rate=rate, scatter=scatter,
                shift_err=scatter * float(np.sqrt(np.sum((c * noise_a) ** 2))))
    return info


def _unit_sum(weights, n):
    """Per-frame weights as floats summing to 1 (uniform if they sum to 0)."""
    w = np.asarray(weights, dtype=float)
    return w / w.sum() if w.sum() > 0 else np.full(n, 1.0 / n)


def refinement_cards(table, reference_time, weights=None):
    """The stack's header cards of `refinement_shift` (``SSRFDX``, ``SSRFDY``, ``SSRFEX``,
    ``SSRFEY``, ``SSRFSX``, ``SSRFSY``, ``SSRFNOK``), so that a stack read back from its
    file keeps them.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.table import Table
    >>> t = Table({"mjd_mid": 60000 + np.arange(4) / 96, "refine_dx": [0.1, -0.1, 0.1, -0.1],
    ...            "refine_dy": np.zeros(4), "refine_ok": [True] * 4})
    >>> [card[0] for card in refinement_cards(t, 60000.0156)]
    ['SSRFDX', 'SSRFDY', 'SSRFEX', 'SSRFEY', 'SSRFSX', 'SSRFSY', 'SSRFNOK']
    """
    info = refinement_shift(table, reference_time, weights)
    (dx, dy), (ex, ey), (sx, sy) = info["shift"], info["shift_err"], info["scatter"]
    return [("SSRFDX", round(float(dx), 5), "[pix] refined track: target to ref. epoch, x"),
            ("SSRFDY", round(float(dy), 5), "[pix] refined track: target to ref. epoch, y"),
            ("SSRFEX", round(float(ex), 5), "[pix] 1-sigma error refinement adds, x"),
            ("SSRFEY", round(float(ey), 5), "[pix] 1-sigma error refinement adds, y"),
            ("SSRFSX", round(float(sx), 5), "[pix] per-frame refinement scatter, x"),
            ("SSRFSY", round(float(sy), 5), "[pix] per-frame refinement scatter, y"),
            ("SSRFNOK", info["n_accepted"], "frames whose offset refinement was accepted")]
