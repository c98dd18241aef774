# Licensed under a 3-clause BSD style license - see LICENSE
"""Static-sky subtraction: remove the stars before stacking on the target.

The frames are stacked on the stars (the fixed plane of the `TargetFrame`) with the
target's track masked in each of them; the median of that stack is the *static sky*: the
stars, galaxies and sky structure, without the target. The template is warped back onto
each frame's own pixels and subtracted there, before the frame is resampled onto the target,
so each frame's data is still interpolated only once. What the template cannot remove
(residuals beyond ``k`` sigma away from the target, e.g. saturated or mismatched star cores)
is masked. The target stack then holds the target and noise, not star trails.

The template's own noise is added to each subtracted frame's variance. Where the target
never leaves its own footprint (a slow mover), the template has no data: it is set to the
sky level there, so the target is kept rather than subtracted (and a star that the target
never moves off is not subtracted either).
"""

import logging
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
from astropy.nddata import CCDData, StdDevUncertainty, VarianceUncertainty
from astropy.stats import sigma_clipped_stats

from ._utils import frame_label
from .combine import combine_frames
from .resample import resample_to_target
from .steps import log_to_header, provenance_header

__all__ = ["static_sky_template", "static_sky_variance_factor", "subtract_static_sky"]

log = logging.getLogger(__name__)


def _track_mask(shape, centre, radius):
    yy, xx = np.indices(shape)
    return np.hypot(xx - centre[0], yy - centre[1]) <= radius


@log_to_header
def static_sky_template(sky_frames: Sequence[CCDData | str | os.PathLike],
                        target_pixels: Sequence[tuple[float, float]],
                        track_radius: float = 5.0,
                        method: Literal["median", "mean"] = "median", min_frames: int = 3,
                        workdir: str | os.PathLike | None = None,
                        mem_limit: float | None = None) -> CCDData:
    """The static sky: frames aligned on the stars, the target masked, combined.

    Parameters
    ----------
    sky_frames : list of `~astropy.nddata.CCDData` or paths
        The frames resampled onto one fixed grid (e.g. ``TargetFrame.wcs``); paths are
        FITS files as `~astropy.nddata.CCDData.write` writes them.
    target_pixels : list of (float, float)
        The target's 0-based ``(x, y)`` on that grid in each frame (at its mid-exposure).
    track_radius : float
        Radius, in grid pixels, masked around the target in each frame.
    method : {'median', 'mean'}
        How the template is combined (the median also ignores the target's faint wings and
        any cosmic ray left in one frame).
    min_frames : int
        Template pixels that fewer frames cover (once the track is masked) are holes.
    workdir : str or path, optional
        Write the masked frames there and combine them from disk, one block of rows at a
        time (`combine_frames` with ``mem_limit``), so that memory does not grow with the
        number of frames. Without it they are held in memory.
    mem_limit : int, optional
        Memory budget of that combine, bytes.

    Returns
    -------
    template : `~astropy.nddata.CCDData`
        On the same grid, with a `~astropy.nddata.StdDevUncertainty`. Pixels inside the
        frames' footprint that fewer than ``min_frames`` frames cover once the track is masked
        are set to the template's sky level (``template.meta['SSHOLES']`` counts them): no
        static source is subtracted there. Pixels outside every frame are masked.
    """
    masked, covered_by_any = [], None
    for i, (frame, position) in enumerate(zip(sky_frames, target_pixels)):
        frame = frame if isinstance(frame, CCDData) else \
            CCDData.read(frame, hdu_mask="MASK", hdu_uncertainty="UNCERT")
        valid = np.ones(frame.shape, bool) if frame.mask is None else ~frame.mask
        covered_by_any = valid if covered_by_any is None else (covered_by_any | valid)
        copy = frame.copy()
        track = _track_mask(frame.shape, position, track_radius)
        copy.mask = track if frame.mask is None else (frame.mask | track)
        if workdir is not None:
            path = f"{workdir}/static{i:04d}.fits"
            copy.write(path, hdu_mask="MASK", hdu_uncertainty="UNCERT", overwrite=True)
            copy = path
        masked.append(copy)
    result = combine_frames(masked, method=method, mem_limit=mem_limit)
    combined = result.image
    holes = combined.mask | (result.coverage < min(min_frames, len(sky_frames)))
    # Holes inside the footprint (the target never left them) are filled with the local sky;
    # outside every frame the template stays undefined.
    inner = holes & covered_by_any
    data = combined.data.copy()
    variance = combined.uncertainty.array.astype(float) ** 2
    if inner.any():
        # The sky level, not the neighbours: a star at the edge of a hole would otherwise be
        # smeared into it, and subtracting that smear would dig a hole beside the target.
        _, sky_level, sky_sigma = sigma_clipped_stats(
            combined.data[~holes & np.isfinite(combined.data)])
        data = np.where(inner, sky_level, data)
        variance = np.where(inner, sky_sigma ** 2, variance)
        log.info("static sky: %d pixels along the track are covered by fewer than %d frames "
                 "once the target is masked (a slow mover); set to the sky level there, so "
                 "the static sky is not subtracted near the target", int(inner.sum()),
                 min_frames)
    mask = holes & ~covered_by_any
    data = np.where(mask, np.nan, data).astype(combined.data.dtype)
    meta = provenance_header(combined.meta, [
        ("SSHOLES", int(inner.sum()), "template pixels filled (never off the target)"),
        ("SSTRACKR", float(track_radius), "[pix] radius masked around the target")])
    return CCDData(data, unit=combined.unit, wcs=combined.wcs, mask=mask,
                   uncertainty=StdDevUncertainty(np.sqrt(variance).astype(data.dtype)),
                   meta=meta)


@log_to_header
def subtract_static_sky(ccd: CCDData, template: CCDData, target_pixel: tuple[float, float],
                        track_radius: float = 5.0, k: float = 5.0,
                        interpolation: Literal["bicubic", "bilinear"] = "bicubic") -> CCDData:
    """Subtract the static-sky template from one frame, in the frame's own pixels.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame, with WCS and uncertainty.
    template : `~astropy.nddata.CCDData`
        From `static_sky_template`.
    target_pixel : (float, float)
        The target's 0-based ``(x, y)`` in this frame; residuals within ``track_radius``
        (scaled to the frame's pixels) of it are never masked: they are the target.
    track_radius : float
        In template pixels.
    k : float
        Residuals beyond ``k`` sigma (frame and template noise together) elsewhere are
        masked, grown by one pixel.
    interpolation : {'bicubic', 'bilinear'}
        Kernel used to warp the template onto the frame.

    Returns
    -------
    subtracted : `~astropy.nddata.CCDData`
        A new frame: data minus template minus the median difference (the frames' sky
        levels differ), variance plus the template's, mask plus the unsubtractable pixels
        and the pixels the template does not cover. Header: ``SSSTATIC`` (True),
        ``SSSKYOFF`` (the sky offset removed), ``SSNSTMSK`` (pixels masked as residuals).
    """
    from scipy.ndimage import binary_dilation
    label = frame_label(ccd)
    warped = resample_to_target(template, ccd.wcs, ccd.shape, interpolation=interpolation)
    variance = ccd.uncertainty.represent_as(VarianceUncertainty).array
    t_variance = warped.uncertainty.array.astype(float) ** 2
    difference = np.asarray(ccd.data, dtype=float) - warped.data
    bad = warped.mask.copy()
    if ccd.mask is not None:
        bad |= ccd.mask
    bad |= ~np.isfinite(difference)
    offset = float(sigma_clipped_stats(difference[~bad], sigma=3)[1])
    difference -= offset
    sigma = np.sqrt(variance + t_variance)
    scale = np.sqrt(abs(np.linalg.det(ccd.wcs.celestial.pixel_scale_matrix))
                    / abs(np.linalg.det(template.wcs.celestial.pixel_scale_matrix)))
    target = _track_mask(ccd.shape, target_pixel, track_radius / scale)
    with np.errstate(invalid="ignore"):
        residual = (np.abs(difference) > k * sigma) & ~bad & ~target
    residual = binary_dilation(residual) & ~target
    mask = bad | residual
    meta = provenance_header(ccd.meta, [
        ("SSSTATIC", True, "static-sky template subtracted"),
        ("SSSKYOFF", offset, "sky level difference removed with the template"),
        ("SSNSTMSK", int(residual.sum()), "pixels masked as unsubtractable residuals")])
    log.debug("%s: static sky subtracted, %d residual pixels masked", label,
              int(residual.sum()))
    dtype = ccd.data.dtype if ccd.data.dtype.kind == "f" else np.float32
    return CCDData(np.where(mask, np.nan, difference).astype(dtype), unit=ccd.unit,
                   wcs=ccd.wcs, mask=mask, meta=meta,
                   uncertainty=StdDevUncertainty(np.sqrt(variance + t_variance).astype(dtype)))


def _disc_overlap(distance, radius):
    """Shared fraction of two discs of ``radius`` whose centres are ``distance`` apart."""
    d = np.minimum(np.asarray(distance, dtype=float), 2 * radius)
    return (2 * radius ** 2 * np.arccos(d / (2 * radius))
            - d / 2 * np.sqrt(4 * radius ** 2 - d ** 2)) / (np.pi * radius ** 2)


def static_sky_variance_factor(offsets, radius, interpolation="bicubic"):
    """What the variance of a stack of static-sky-subtracted frames really is, over what the
    frames' variances say.

    `subtract_static_sky` adds the template's variance to each frame's, as if the template
    were independent of the frame. It is not: the template is the median of the same frames,
    so each frame's noise is partly subtracted with it, and a slow target's stack meets the
    same template pixels in every frame. For aperture sums of radius ``radius`` and ``n``
    frames of equal noise ``v`` combined by a mean, with the median's variance ``F kappa v / n``
    (`~shiftstack_ccd.combine`) and ``Cov(x_i, median) = v / n``, the stack's variance is
    ``v / n (1 + (F kappa - 2) A)``, where ``A`` is the mean over pairs of frames of the
    overlap of the aperture with itself shifted by the two frames' offset difference (1 for a
    target that does not move, ``1 / n`` for one that moves by more than an aperture between
    frames). The frames' variances say ``v / n (1 + F kappa / n)``; this returns the ratio.

    On the ten raw Lowell frames (0.7 pixel a frame, r = 3 px apertures) the factor is about
    0.5: without it the reported aperture uncertainty of a mean stack was 1.5 times the
    measured scatter of empty-sky apertures.

    Parameters
    ----------
    offsets : (array, array)
        The target's offsets ``dx``, ``dy`` of each frame on the grid, pixels.
    radius : float
        Aperture radius, pixels, for which the factor is exact.
    interpolation : str
        The resampling kernel (for ``kappa``).

    Returns
    -------
    factor : float

    Examples
    --------
    >>> still = static_sky_variance_factor(([0.0] * 9, [0.0] * 9), 3.0)
    >>> fast = static_sky_variance_factor((list(range(0, 90, 10)), [0.0] * 9), 3.0)
    >>> round(still, 3), round(fast, 3)
    (0.32, 0.807)
    """
    from ._median import median_correlation_factor, median_variance_factor
    dx, dy = (np.asarray(o, dtype=float) for o in offsets)
    n = len(dx)
    f_kappa = median_variance_factor(n) * median_correlation_factor(interpolation)
    overlap = _disc_overlap(np.hypot(dx[:, None] - dx[None], dy[:, None] - dy[None]), radius)
    return float((1 + (f_kappa - 2) * overlap.mean()) / (1 + f_kappa / n))
