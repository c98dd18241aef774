# Licensed under a 3-clause BSD style license - see LICENSE
"""Photometric scales and S/N weights of the frames, as `shift_and_stack` uses them."""

import logging
import warnings

import numpy as np
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.utils.exceptions import AstropyUserWarning

from ._utils import as_header
from .combine import combine_frames
from .fluxscale import photometric_scales

log = logging.getLogger(__name__)

#: Radius (grid pixels) around the target's positions where no scaling star is taken.
TRACK_RADIUS = 15.0


def divided(frame, factor):
    """``frame`` (CCDData or a FITS path in the work folder) divided by ``factor``.

    A path is rewritten in place: it is an intermediate product of this stack.
    """
    if factor == 1:
        return frame
    path = frame if isinstance(frame, str) else None
    if path is not None:
        frame = CCDData.read(path, hdu_mask="MASK", hdu_uncertainty="UNCERT")
    sigma = frame.uncertainty.represent_as(StdDevUncertainty).array
    meta = as_header(frame.meta)
    meta["SSFSCALE"] = (float(factor), "data divided by this photometric scale")
    out = CCDData(np.asarray(frame.data) / np.float32(factor), unit=frame.unit, wcs=frame.wcs,
                  mask=frame.mask, meta=meta,
                  uncertainty=StdDevUncertainty(np.asarray(sigma) / np.float32(factor)))
    if path is None:
        return out
    out.write(path, hdu_mask="MASK", hdu_uncertainty="UNCERT", overwrite=True)
    return path


def star_photometry(sky_frames, track, shape, mem_limit):
    """`~shiftstack_ccd.fluxscale.photometric_scales` of the frames on the sky grid, with the
    stars found on their median and none taken near the target's track."""
    reference = combine_frames(sky_frames, method="median", mem_limit=mem_limit).image
    yy, xx = np.indices(shape, sparse=True)
    exclude = np.zeros(shape, dtype=bool)
    for x, y in track:
        exclude |= np.hypot(xx - x, yy - y) <= TRACK_RADIUS
    return photometric_scales(sky_frames, reference, exclude=exclude)


def frame_scales(scale, photometry, n_frames):
    """Per-frame divisors from ``scale``: None, 'stars' (measured) or one number per frame."""
    if scale is None:
        return None
    if isinstance(scale, str):
        if scale != "stars":
            raise ValueError(f"scale must be None, 'stars' or {n_frames} positive numbers, "
                             f"not {scale!r}")
        return np.asarray(photometry["flux_scale"], dtype=float)
    values = np.asarray(scale, dtype=float)
    if values.shape != (n_frames,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"scale must be None, 'stars' or {n_frames} positive finite numbers "
                         f"(one per frame), not {scale!r}")
    return values


def snr_factors(photometry, scales):
    """Per-frame factors of the S/N weights (``weights='snr'``), times ``1 / variance``.

    A frame puts a fraction ``f`` (``aperture_fraction``, its seeing) of a point source's
    light in an aperture of 1.5 FWHM, with transparency ``t`` (``flux_scale``) and variance
    ``v`` per pixel (divided by ``t**2`` when the frame is divided by ``t``; static-sky
    template noise included). Frames divided by their scale all carry the source's flux ``F``,
    so the weighted mean of their aperture sums (signal ``F f``, variance ``v N``) has the
    highest S/N for weights ``f / v``; frames not divided carry ``t F``: ``f t / v``. The
    variance is taken per pixel (as ``weights='inverse-variance'`` does, with its caveat for
    bright targets, see `~shiftstack_ccd.combine.combine_frames`): on simulated nights that
    gave a 6% higher stack S/N than one variance per frame, and weighting by the inverse PSF
    area instead (the optimum for PSF fitting of single frames) a lower one (see
    ``benchmarks/bench_noise.py weights``).
    """
    t = np.asarray(photometry["flux_scale"], dtype=float)
    fraction = np.asarray(photometry["aperture_fraction"], dtype=float)
    good = np.isfinite(fraction) & (fraction > 0)
    if not good.all():
        warnings.warn("weights='snr': the aperture fraction could not be measured on some "
                      "frames; the median fraction is used for them.", AstropyUserWarning)
        fraction = np.where(good, fraction, np.median(fraction[good]) if good.any() else 1.0)
    factors = fraction if scales is not None else fraction * t
    factors = factors / factors.max()
    log.info("S/N weights: 1 / variance times %s", ", ".join(f"{w:.3f}" for w in factors))
    return factors
