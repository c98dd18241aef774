# Licensed under a 3-clause BSD style license - see LICENSE
"""Combining resampled frames: mean, median or sum, with weights, clipping and coverage.

The combine is done here rather than with `ccdproc.Combiner`, which this module started
from, for four reasons found in ccdproc 2.5.1 (``ccdproc/combiner.py``):

* its weighted ``average_combine`` divides the weighted sum over the unmasked frames by the
  sum of the weights over *all* frames, masked ones included, so a pixel masked in one frame
  is biased towards zero (``tests/test_combine.py`` shows it);
* its clipping measures the scatter from the few values at each pixel only, so with five
  frames a bright target whose core differs between frames by more than the noise (seeing,
  sub-pixel registration) loses its core;
* it reports the scatter of the inputs as the uncertainty, not the inputs' variance;
* `ccdproc.combine` tiles, but re-reads every whole file for every tile.

Uncertainty
-----------
Each frame's variance has been resampled with the data weights (see `resample`), so the
sum of a frame's variance over an aperture of a few pixels or more is the variance of the
aperture sum, even though neighbouring resampled pixels are correlated. The combined
variance keeps that property:

* **mean**: ``sum(w_i**2 var_i) / sum(w_i)**2`` over the frames that contribute to the
  pixel, with ``w_i`` the frame weight (times ``1 / var_i`` for inverse-variance weights);
* **sum**: ``n_frames`` times the mean (so masked frames do not bias it low), variance
  ``n_frames**2`` times the mean's;
* **median**: ``F(n) * kappa`` times the equal-weight mean's variance, with ``n`` the
  frames contributing to the pixel. ``F(n)`` is the exact variance of the median of ``n``
  Gaussian values in units of the variance of their mean (computed from the order-statistic
  densities: 1.346 for n=3, 1.434 for 5, 1.495 for 9, 1.383 for 10, pi/2 for large n).
  ``kappa`` corrects for the resampling correlation: the median is not linear, and in the
  large-n limit (Bahadur's representation, median ~ centre + sigma sqrt(pi/2) mean of the
  signs) the covariance of the medians of two pixels whose noise has correlation rho is
  ``arcsin(rho)`` rather than ``rho`` (times sigma**2 / n), which is smaller for
  0 < rho < 1. For an aperture sum the median's variance is therefore
  ``(2/pi) sum arcsin(rho) / sum rho`` times ``pi/2`` times the mean's, not ``pi/2`` times
  it. That ratio, ``kappa``, follows from the resampling kernel (the noise correlation of
  a resampled frame is the kernel's autocorrelation), averaged over sub-pixel phases: 0.916
  for the bicubic spline, 0.805 for bilinear interpolation, 1 for frames that were not
  interpolated (``median_correlation_factor`` computes it). It is read from each frame's
  ``SSINTERP``/``SSRESAMP`` cards, or given as ``median_correlation``.

Measured on stacks of nine rotated simulated frames of empty sky (warp path, bicubic),
aperture sums with the known sky subtracted (``python benchmarks/bench_combine.py noise``,
4 x 384^2 stacks): the empirical scatter of the sums over the reported uncertainty
``sqrt(sum of the stack variance over the aperture)`` is, for radii 1, 1.5, 2, 3, 4 and 6
pixels, 0.94, 0.97, 0.99, 0.97, 0.99, 1.00 for the mean (the same with inverse-variance
weights and a sky that differs fourfold between frames, and with clipping) and 0.95, 0.98,
0.99, 0.98, 0.99, 0.99 for the median (with ``pi/2`` alone it was 0.89-0.93). So no
correction is needed down to a radius of one pixel. A single pixel's scatter is below its
reported uncertainty (0.88 mean, 0.92 median): its neighbours share its noise. Bilinear
resampling spreads more of a pixel's noise across an aperture's edge, which the carried
variance does not see: small apertures are then overestimated (mean 0.78 at radius 1,
0.87 at 1.5, 0.91 at 2, 0.98 at 6).

Rejection
---------
With ``sigma_clip=True`` a value ``x_i`` is rejected where it departs from the median of
the frames at that pixel by more than ``k * s_i + g * D`` (``k = sigma_high`` above,
``sigma_low`` below). ``s_i`` is the larger of the frame's propagated standard deviation
and the robust scatter (``mad_std``) of the values at the pixel, which guards against
underestimated uncertainties. ``D`` is the local gradient of the median image, the largest
absolute difference between a pixel of the median image and its eight neighbours, and
``g = clip_gradient``: the allowance, as in drizzle's ``driz_cr`` (``driz_cr_scale``), for
what a steep core does when frames differ in seeing or in sub-pixel registration. A cosmic
ray (hundreds of sigma in one frame, on a flat sky where ``D`` is small) is rejected; the
core of a bright target whose peak changes by tens of per cent between frames is kept.
Pixels with fewer than three valid values are not clipped (a median of two is no
reference). One pass, around the median of all values.

Memory
------
Frames may be `~astropy.nddata.CCDData` in memory or paths of FITS files laid out as
`~astropy.nddata.CCDData.write` writes them (data, ``UNCERT``, ``MASK``). The output is
computed in blocks of rows, as many as keep the working arrays of a block (the
(frames, rows, columns) cubes and their temporaries) within ``mem_limit`` bytes (default
``conf.mem_limit``, 64 MB; the tests check the traced peak against it). Files are
read block by block with ``HDU.section`` from files opened without memory-mapping, which
reads those rows from disk and nothing else. Slicing memory-mapped data would leave every
page it touched resident, and counted in the process's memory, for as long as the file is
open: reading 20 frames of 2048 x 2048 (data and uncertainty) by blocks raised the peak
resident memory by 650 MB through memory maps, 9 MB through sections.

Intermediate stacks
-------------------
`RunningStack` accumulates ``sum(w x)``, ``sum(w)``, ``sum(w**2 var)``, the coverage and
the exposure frame by frame, so the mean (or sum) of the first k frames is available after
each frame at a cost that does not grow with k. The median and clipping need all frames at
once and are not incremental.

Exposure
--------
The combined image's header has ``EXPTOTAL`` (total exposure time of the frames, s) and
the exposure-weighted mid-time ``MJD-AVG``/``DATE-AVG`` (`exposure_weighted_mid_time`)
when every frame has an exposure time and a mid-exposure time.
"""

import logging
import os
import warnings

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import (CCDData, InverseVariance, StdDevUncertainty,
                            VarianceUncertainty)
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning

from ._combine_block import bytes_per_element, combine_block, mean_from_sums, quiet
from ._median import frame_correlation_factor
from ._utils import as_header, frame_label
from .config import conf
from .exceptions import FrameError
from .frames import exposure_time, mid_exposure_time
from .steps import provenance_header

__all__ = ["CombineResult", "RunningStack", "combine_frames", "exposure_header_cards",
           "exposure_weighted_mid_time"]

log = logging.getLogger(__name__)
progress = logging.getLogger("shiftstack_ccd.progress")


# ------------------------------------------------------------------------------------------
# Frames as sources of row blocks
# ------------------------------------------------------------------------------------------
def _variance_from(uncertainty):
    """Variance array of an uncertainty (or of a slice of one)."""
    array = np.asarray(uncertainty.array)
    if isinstance(uncertainty, StdDevUncertainty):
        return array.astype(float, copy=False) ** 2
    if isinstance(uncertainty, VarianceUncertainty):
        return array
    if isinstance(uncertainty, InverseVariance):
        with np.errstate(divide="ignore"):
            return 1.0 / array
    return uncertainty.represent_as(VarianceUncertainty).array


class _MemorySource:
    """A `CCDData` in memory, read by blocks of rows."""

    def __init__(self, ccd, index):
        self.label = frame_label(ccd, index)
        if ccd.uncertainty is None:
            raise FrameError(f"{self.label}: has no uncertainty; cannot propagate the "
                             "variance (give it one, e.g. ccdproc.create_deviation).")
        self.ccd = ccd
        self.shape = ccd.shape
        self.unit = ccd.unit
        self.meta = ccd.meta
        self.float64 = ccd.data.dtype == np.float64

    @property
    def wcs(self):
        return self.ccd.wcs

    def rows(self, r0, r1, out_data, out_var, out_bad):
        out_data[...] = self.ccd.data[r0:r1]
        out_var[...] = _variance_from(self.ccd.uncertainty[r0:r1])
        if self.ccd.mask is not None:
            out_bad[...] = np.asarray(self.ccd.mask[r0:r1], dtype=bool)
        else:
            out_bad[...] = False

    def close(self):
        pass


class _FileSource:
    """A FITS file written by `CCDData.write` (data, ``UNCERT``, ``MASK``), read by rows.

    Rows are read with ``HDU.section`` from a file opened without memory-mapping, so only
    the rows asked for are ever in memory; the file is opened for each block of rows and
    closed again, so that a combine of many frames holds neither one open file nor one
    parsed set of headers per frame (only the data header's copy, ``meta``): hundreds of
    spilled frames would otherwise run into the limit of open files and grow the memory by
    a fraction of a megabyte each.
    """

    _UNCERTAINTY_TYPES = {"StdDevUncertainty": "std", "VarianceUncertainty": "var",
                          "InverseVariance": "ivar"}

    def __init__(self, path, index):
        self.label = str(path)
        self.path = path
        try:
            hdul = fits.open(path, memmap=False, lazy_load_hdus=True)
        except OSError as exc:
            raise FrameError(f"{path}: cannot be opened as FITS: {exc}") from None
        with hdul:
            try:
                self.sci = next(i for i, h in enumerate(hdul)
                                if h.is_image and h.header.get("NAXIS") == 2)
            except StopIteration:
                raise FrameError(f"{path}: has no 2-D image HDU to combine.") from None
            names = [h.name for h in hdul]
            if "UNCERT" not in names:
                raise FrameError(f"{path}: has no UNCERT extension; cannot propagate the "
                                 "variance (write the frames with CCDData.write and an "
                                 "uncertainty).")
            utype = hdul["UNCERT"].header.get("UTYPE", "StdDevUncertainty")
            if utype not in self._UNCERTAINTY_TYPES:
                raise FrameError(f"{path}: UNCERT has UTYPE = {utype!r}; expected one of "
                                 f"{sorted(self._UNCERTAINTY_TYPES)}.")
            self.utype = self._UNCERTAINTY_TYPES[utype]
            self.has_mask = "MASK" in names
            header = hdul[self.sci].header
            self.shape = (header["NAXIS2"], header["NAXIS1"])
            self.unit = u.Unit(header.get("BUNIT", ""), parse_strict="silent")
            self.meta = header.copy()
        self.meta.setdefault("SSFILE", os.fspath(path))
        self.float64 = self.meta["BITPIX"] == -64

    @property
    def wcs(self):
        with warnings.catch_warnings():
            # 'datfix' and the like: the frame's WCS was checked when it was made
            warnings.simplefilter("ignore", FITSFixedWarning)
            return WCS(self.meta)

    def rows(self, r0, r1, out_data, out_var, out_bad):
        with fits.open(self.path, memmap=False, lazy_load_hdus=True) as hdul:
            out_data[...] = hdul[self.sci].section[r0:r1]
            unc = hdul["UNCERT"].section[r0:r1]
            with np.errstate(divide="ignore"):
                out_var[...] = {"std": lambda a: np.square(a, dtype=float),
                                "var": lambda a: a, "ivar": lambda a: 1.0 / a}[self.utype](unc)
            if self.has_mask:
                out_bad[...] = hdul["MASK"].section[r0:r1] != 0
            else:
                out_bad[...] = False

    def close(self):
        pass


def _as_source(frame, index):
    if isinstance(frame, CCDData):
        return _MemorySource(frame, index)
    if isinstance(frame, (str, os.PathLike)):
        return _FileSource(frame, index)
    raise TypeError(f"frame #{index}: expected a CCDData or a FITS file path, "
                    f"not {type(frame).__name__}")


# ------------------------------------------------------------------------------------------
# Weights and exposure
# ------------------------------------------------------------------------------------------
def _exptime_of(meta, label):
    key, value = exposure_time(meta)
    if value is None:
        raise FrameError(f"{label}: has no exposure time (EXPTIME) in its header; "
                         "exposure-time weights and totals need one.")
    return value


def _frame_weights(spec, metas, labels, what="weights"):
    """Per-frame weight factors from None, 'exptime' or an array."""
    n = len(metas)
    if spec is None:
        return np.ones(n)
    if isinstance(spec, str):
        if spec != "exptime":
            raise ValueError(f"{what} must be None, 'exptime', 'inverse-variance' or one "
                             f"number per frame, not {spec!r}")
        return np.array([_exptime_of(m, label) for m, label in zip(metas, labels)], float)
    w = np.asarray(spec, dtype=float)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"{what} must be {n} finite non-negative numbers, not {spec!r}")
    return w


def frame_factors(weights, frame_weights, metas, labels):
    """The per-frame part of ``weights`` times ``frame_weights`` (per-pixel weights aside)."""
    inverse_variance = isinstance(weights, str) and weights == "inverse-variance"
    factors = _frame_weights(None if inverse_variance else weights, metas, labels)
    if frame_weights is not None:
        factors = factors * _frame_weights(frame_weights, metas, labels, "frame_weights")
    return factors


def exposure_weighted_mid_time(frames, weights=None):
    """Mid-time of a stack: the frames' mid-exposure times weighted by exposure time.

    Each frame contributes its mid-exposure time (`mid_exposure_time`) with the weight
    ``EXPTIME`` (times ``weights``, if given): the mean time of the collected light when
    frames of different exposure times are summed or averaged as counts.

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData` or `~astropy.io.fits.Header`
        Frames (or their headers) with an exposure time and a mid-exposure time.
    weights : array-like, optional
        Extra per-frame factors, e.g. the combination weights.

    Returns
    -------
    time : `~astropy.time.Time`
        UTC.

    Raises
    ------
    FrameError
        A frame without an exposure time or mid-exposure time; the message names it.

    Examples
    --------
    >>> from astropy.io import fits
    >>> headers = [fits.Header({"DATE-OBS": "2024-03-01T03:00:00", "EXPTIME": 100.0}),
    ...            fits.Header({"DATE-OBS": "2024-03-01T03:10:00", "EXPTIME": 300.0})]
    >>> exposure_weighted_mid_time(headers).isot
    '2024-03-01T03:09:35.000'
    """
    metas = [getattr(f, "meta", f) for f in frames]
    if not metas:
        raise FrameError("no frames: a mid-time needs at least one.")
    labels = [frame_label(f, i) if hasattr(f, "meta") else f"frame #{i}"
              for i, f in enumerate(frames)]
    exptimes = _frame_weights("exptime", metas, labels)
    w = exptimes * (_frame_weights(weights, metas, labels) if weights is not None else 1.0)
    if not np.any(w > 0):
        raise FrameError("every frame has zero exposure time (or weight): no mid-time.")
    times = Time([mid_exposure_time(m) for m in metas])
    offsets = (times - times[0]).to_value(u.s)
    return times[0] + float(np.sum(w * offsets) / np.sum(w)) * u.s


def exposure_header_cards(frames, weights=None):
    """Header cards of a stack's exposure: ``EXPTOTAL``, ``MJD-AVG``, ``DATE-AVG``, ``TIMESYS``.

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData` or `~astropy.io.fits.Header`
        The frames combined.
    weights : array-like, optional
        Extra per-frame factors for the mid-time (see `exposure_weighted_mid_time`).

    Returns
    -------
    cards : list of (key, value, comment)

    Examples
    --------
    >>> from astropy.io import fits
    >>> headers = [fits.Header({"DATE-OBS": "2024-03-01T03:00:00", "EXPTIME": 120.0}),
    ...            fits.Header({"DATE-OBS": "2024-03-01T03:02:30", "EXPTIME": 120.0})]
    >>> for key, value, comment in exposure_header_cards(headers):
    ...     print(key, value)
    EXPTOTAL 240.0
    MJD-AVG 60370.1265625
    DATE-AVG 2024-03-01T03:02:15.000
    TIMESYS UTC
    """
    metas = [getattr(f, "meta", f) for f in frames]
    labels = [frame_label(f, i) if hasattr(f, "meta") else f"frame #{i}"
              for i, f in enumerate(frames)]
    total = float(sum(_exptime_of(m, label) for m, label in zip(metas, labels)))
    mid = exposure_weighted_mid_time(frames, weights=weights).utc
    return [("EXPTOTAL", total, "[s] total exposure time of the frames combined"),
            ("MJD-AVG", float(mid.mjd), "[d] exposure-weighted mid-time (UTC)"),
            ("DATE-AVG", mid.isot, "exposure-weighted mid-time (UTC)"),
            ("TIMESYS", "UTC", "time scale of the time cards")]


# ------------------------------------------------------------------------------------------
# The public functions
# ------------------------------------------------------------------------------------------
class CombineResult:
    """What `combine_frames` returns: the image, its coverage, and per-frame rejection.

    Attributes
    ----------
    image : `~astropy.nddata.CCDData`
        The combined image.
    coverage : `~numpy.ndarray` of int
        Number of frames that contribute to each pixel (after clipping).
    rejected_fraction : `~numpy.ndarray`
        For each input frame, the fraction of its valid pixels that clipping rejected.
    rows_per_block : int or None
        Rows combined at a time under the memory limit (None from `RunningStack`).
    """

    def __init__(self, image, coverage, rejected_fraction, rows_per_block=None):
        self.image = image
        self.coverage = coverage
        self.rejected_fraction = rejected_fraction
        self.rows_per_block = rows_per_block


def _combine_header(n, method, sigma_clip, sigma_low, sigma_high, clip_gradient, weighting,
                    metas, labels):
    """The combined image's header: its cards written the steps' one way
    (`~shiftstack_ccd.steps.provenance_header`)."""
    cards = [("NCOMBINE", n, "number of frames combined"),
             ("SSCOMB", method, "combine method"),
             ("SSWEIGHT", weighting, "combine weights"),
             ("SSCLIP", bool(sigma_clip), "sigma clipping applied")]
    if sigma_clip:
        cards += [("SSCLIPLO", float(sigma_low), "low clipping threshold (sigma)"),
                  ("SSCLIPHI", float(sigma_high), "high clipping threshold (sigma)"),
                  ("SSCLIPG", float(clip_gradient), "clipping allowance x median gradient")]
    try:
        cards += exposure_header_cards(metas)
    except FrameError as exc:
        log.debug("no exposure cards in the combined header: %s", exc)
    return provenance_header(fits.Header(), cards)


def _weighting_label(weights, frame_weights):
    """``SSWEIGHT``: 'equal', 'inverse-variance', 'exptime' or 'frame', '*'-combined."""
    if isinstance(weights, str):
        label = weights
    else:
        label = "equal" if weights is None else "frame"
    if frame_weights is not None:
        extra = frame_weights if isinstance(frame_weights, str) else "frame"
        label = extra if label == "equal" else f"{label}*{extra}"
    return label


def combine_frames(frames, method="mean", sigma_clip=False, sigma_low=3.0, sigma_high=3.0,
                   weights=None, frame_weights=None, clip_gradient=1.0, mem_limit=None,
                   median_correlation=None):
    """Combine frames that share one grid (e.g. the output of `resample_to_target`).

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData` or of FITS file paths
        Same shape, same unit, each with an uncertainty; masked pixels (and NaN) do not
        contribute. Paths are FITS files as `~astropy.nddata.CCDData.write` writes them
        (data, ``UNCERT`` with ``UTYPE``, ``MASK``); they are read block by block, so the
        frames are never all in memory.
    method : {'mean', 'median', 'sum'}
        ``'sum'`` is ``n_frames`` times the (weighted) mean, so a pixel where some frames
        are masked is not biased low (a plain sum would be).
    sigma_clip : bool
        Reject values that depart from the median of the frames at the pixel by more than
        ``sigma_low``/``sigma_high`` times their uncertainty plus ``clip_gradient`` times
        the local gradient of the median image (see the module notes): cosmic rays go, the
        core of a bright target stays.
    sigma_low, sigma_high : float
        Clipping thresholds, in units of the larger of the frame's propagated standard
        deviation and the robust scatter of the values at the pixel.
    weights : None, 'inverse-variance', 'exptime' or array-like
        Weights of the mean and sum (the median ignores them, but leaves out frames of
        weight zero). ``None``: equal.
        ``'inverse-variance'``: per pixel, ``1 / var_i`` of each frame, renormalised over
        the frames that contribute to the pixel. ``'exptime'``: each frame's ``EXPTIME``.
        An array: one weight per frame.
    frame_weights : None, 'exptime' or array-like
        Per-frame factors multiplied into ``weights``, e.g.
        ``weights='inverse-variance', frame_weights='exptime'``.
    clip_gradient : float
        Allowance for the gradient of the median image in the clipping (0: none).
    mem_limit : float, optional
        Largest size in bytes of the working arrays of one block of rows (default
        ``conf.mem_limit``, 64 MB).
    median_correlation : float, optional
        ``kappa`` of the median's variance (see the module notes); default from the frames'
        ``SSINTERP``/``SSRESAMP`` cards (1 for frames that were not interpolated).

    Returns
    -------
    result : `CombineResult`
        ``result.image`` carries a `~astropy.nddata.StdDevUncertainty` propagated from the
        inputs' variances (module notes), a mask where no frame contributes (those pixels
        are NaN), the first frame's WCS, and ``NCOMBINE``, ``SSCOMB``, ``SSWEIGHT``,
        ``SSCLIP`` (and thresholds), plus ``EXPTOTAL``, ``MJD-AVG``, ``DATE-AVG`` and
        ``TIMESYS`` when every frame has an exposure time and a mid-exposure time.

    Notes
    -----
    Inverse-variance weights computed from a variance that includes a source's own photon
    noise weight each frame down where the source is bright in it; for the photometry of a
    bright target, per-frame weights (``'exptime'`` or an array) keep every pixel of the
    target on the same weights.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData, StdDevUncertainty
    >>> frames = [CCDData(np.full((3, 3), v, dtype=np.float32), unit="electron",
    ...                   uncertainty=StdDevUncertainty(np.full((3, 3), 2.0, dtype=np.float32)))
    ...           for v in (1.0, 2.0, 3.0, 4.0)]
    >>> result = combine_frames(frames, method="mean")
    >>> float(result.image.data[1, 1]), float(result.image.uncertainty.array[1, 1])
    (2.5, 1.0)
    """
    if method not in ("mean", "median", "sum"):
        raise ValueError(f"method must be 'mean', 'median' or 'sum', not {method!r}")
    frames = list(frames)
    if not frames:
        raise FrameError("no frames to combine.")
    sources = []
    try:
        for i, frame in enumerate(frames):
            sources.append(_as_source(frame, i))
        return _combine_sources(sources, method, sigma_clip, sigma_low, sigma_high, weights,
                                frame_weights, clip_gradient, mem_limit, median_correlation)
    finally:
        for source in sources:
            source.close()


def _combine_sources(sources, method, sigma_clip, sigma_low, sigma_high, weights,
                     frame_weights, clip_gradient, mem_limit, median_correlation):
    n = len(sources)
    labels = [s.label for s in sources]
    metas = [s.meta for s in sources]
    shapes = {s.shape for s in sources}
    if len(shapes) != 1:
        raise FrameError(f"frames to combine must share one grid; shapes differ: {shapes}")
    for s in sources[1:]:
        if s.unit != sources[0].unit:
            raise FrameError(f"{s.label}: its unit ({s.unit}) differs from the first "
                             f"frame's ({sources[0].unit}); convert the frames first.")
    inverse_variance = isinstance(weights, str) and weights == "inverse-variance"
    frame_w = frame_factors(weights, frame_weights, metas, labels)
    if method == "median" and (weights is not None or frame_weights is not None):
        warnings.warn("the median ignores weights; use method='mean' for weighted "
                      "combining.", AstropyUserWarning)
    if median_correlation is None:
        kappa = float(np.mean([frame_correlation_factor(m) for m in metas]))
    else:
        kappa = float(median_correlation)
    ny, nx = sources[0].shape
    dtype = np.float64 if any(s.float64 for s in sources) else np.float32
    itemsize = np.dtype(dtype).itemsize
    limit = float(conf.mem_limit if mem_limit is None else mem_limit)
    halo = 1 if (sigma_clip and clip_gradient) else 0
    # the cube, plus about sixteen float64 planes of the block (sums, temporaries, results)
    per_row = n * nx * bytes_per_element(itemsize, method, sigma_clip) + 16 * 8 * nx
    rows = int(max(1, min(ny, limit // per_row - 2 * halo)))
    clip = (float(sigma_low), float(sigma_high), float(clip_gradient)) if sigma_clip else None

    out = np.full((ny, nx), np.nan, dtype=dtype)
    out_std = np.full((ny, nx), np.nan, dtype=dtype)
    coverage = np.zeros((ny, nx), dtype=np.int16)
    valid_before = np.zeros(n, dtype=np.int64)
    n_rejected = np.zeros(n, dtype=np.int64)
    n_blocks = -(-ny // rows)
    for block, r0 in enumerate(range(0, ny, rows), start=1):
        r1 = min(ny, r0 + rows)
        h0, h1 = max(0, r0 - halo), min(ny, r1 + halo)
        data = np.empty((n, h1 - h0, nx), dtype=dtype)
        var = np.empty((n, h1 - h0, nx), dtype=dtype)
        bad = np.empty((n, h1 - h0, nx), dtype=bool)
        for k, source in enumerate(sources):
            source.rows(h0, h1, data[k], var[k], bad[k])
        core = slice(r0 - h0, r0 - h0 + (r1 - r0))
        value, variance, cov, rejected, valid = combine_block(
            data, var, bad, frame_w, method, inverse_variance, n, kappa, clip, core)
        valid_before += valid
        n_rejected += rejected.reshape(n, -1).sum(axis=1)
        del data, var, bad
        covered = cov > 0
        out[r0:r1] = np.where(covered, value, np.nan)
        out_std[r0:r1] = np.where(covered, np.sqrt(np.clip(variance, 0, None)), np.nan)
        coverage[r0:r1] = cov
        if n_blocks > 1:
            progress.info("combining %d frames: block %d/%d", n, block, n_blocks,
                          extra={"progress": (f"combining {n} frames (blocks)", block,
                                              n_blocks)})
    rejected_fraction = n_rejected / np.maximum(valid_before, 1)
    mask = coverage == 0
    weighting = _weighting_label(weights, frame_weights)
    meta = _combine_header(n, method, sigma_clip, sigma_low, sigma_high, clip_gradient,
                           weighting, metas, labels)
    image = CCDData(out, unit=sources[0].unit, wcs=sources[0].wcs, mask=mask,
                    uncertainty=StdDevUncertainty(out_std), meta=meta)
    log.info("combined %d frames by %s (%s weights)%s in blocks of %d rows; %.1f%% of pixels "
             "covered", n, method, weighting, " with sigma clipping" if sigma_clip else "",
             rows, 100 * (1 - mask.mean()))
    return CombineResult(image, coverage, rejected_fraction, rows_per_block=rows)


class RunningStack:
    """The mean (or sum) of frames added one at a time, available after every frame.

    Accumulates ``sum(w x)``, ``sum(w)``, ``sum(w**2 var)`` and the coverage, so adding a
    frame and reading the stack so far cost the same whatever the number of frames already
    added. The result after k frames equals ``combine_frames(first_k_frames, method,
    weights=...)`` without clipping. The median and clipping need every frame at once
    and are not incremental.

    Parameters
    ----------
    method : {'mean', 'sum'}
        As in `combine_frames`.
    weights : None or 'inverse-variance'
        Per-pixel ``1 / var`` weights (times each frame's ``weight``), or the frames'
        weights alone.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData, StdDevUncertainty
    >>> running = RunningStack()
    >>> for value in (1.0, 2.0, 6.0):
    ...     frame = CCDData(np.full((2, 2), value), unit="adu",
    ...                     uncertainty=StdDevUncertainty(np.ones((2, 2))))
    ...     image = running.add(frame).image
    ...     print(running.n_frames, float(image.data[0, 0]))
    1 1.0
    2 1.5
    3 3.0
    """

    def __init__(self, method="mean", weights=None):
        if method not in ("mean", "sum"):
            raise ValueError(f"a running stack is a 'mean' or a 'sum', not {method!r} (the "
                             "median is not incremental)")
        if weights not in (None, "inverse-variance"):
            raise ValueError(f"weights must be None or 'inverse-variance', not {weights!r}; "
                             "give per-frame weights to add()")
        self.method = method
        self.weights = weights
        self.n_frames = 0
        self._sums = None
        self._metas = []
        self._frame_weights = []

    def add(self, frame, weight=1.0):
        """Add one frame (`~astropy.nddata.CCDData` or FITS path); returns ``self``.

        Parameters
        ----------
        frame : `~astropy.nddata.CCDData` or path
            On the same grid and in the same unit as the first frame, with an uncertainty.
        weight : float or 'exptime'
            The frame's weight (times ``1 / var`` for inverse-variance weights).
        """
        source = _as_source(frame, self.n_frames)
        try:
            if self._sums is None:
                self._unit, self._wcs, self.shape = source.unit, source.wcs, source.shape
                self._dtype = np.float64 if source.float64 else np.float32
                self._sums = [np.zeros(source.shape) for _ in range(3)]
                self._coverage = np.zeros(source.shape, dtype=np.int16)
            elif source.shape != self.shape:
                raise FrameError(f"{source.label}: shape {source.shape} differs from the "
                                 f"stack's {self.shape}.")
            elif source.unit != self._unit:
                raise FrameError(f"{source.label}: its unit ({source.unit}) differs from the "
                                 f"stack's ({self._unit}).")
            w = _frame_weights(weight if isinstance(weight, str) else [weight],
                               [source.meta], [source.label], "weight")[0]
            ny, nx = self.shape
            data = np.empty((1, ny, nx), dtype=self._dtype)
            var = np.empty((1, ny, nx), dtype=self._dtype)
            bad = np.empty((1, ny, nx), dtype=bool)
            source.rows(0, ny, data[0], var[0], bad[0])
        finally:
            source.close()
        with quiet():
            bad |= ~np.isfinite(data) | ~np.isfinite(var) | (var < 0)
            if self.weights == "inverse-variance":
                bad |= var <= 0
            good = ~bad[0]
            wmap = np.where(good, w, 0.0)
            if self.weights == "inverse-variance":
                wmap = np.where(good, wmap / np.where(good, var[0], 1.0), 0.0)
            sw, swx, sw2v = self._sums
            sw += wmap
            swx += wmap * np.where(good, data[0], 0.0)
            sw2v += wmap * wmap * np.where(good, var[0], 0.0)
        self._coverage += (good & (w > 0)).astype(np.int16)
        self._metas.append(as_header(source.meta))
        self._frame_weights.append(w)
        self.n_frames += 1
        return self

    @property
    def coverage(self):
        """Number of frames contributing to each pixel so far."""
        return self._coverage.copy()

    @property
    def image(self):
        """The stack so far, a `~astropy.nddata.CCDData` as `combine_frames` makes it."""
        return self.result().image

    def result(self):
        """The stack so far as a `CombineResult`."""
        if self.n_frames == 0:
            raise FrameError("no frames added yet.")
        sw, swx, sw2v = self._sums
        value, variance = mean_from_sums(swx, sw, sw2v)
        if self.method == "sum":
            value, variance = value * self.n_frames, variance * self.n_frames ** 2
        mask = self._coverage == 0
        data = np.where(mask, np.nan, value).astype(self._dtype)
        std = np.where(mask, np.nan, np.sqrt(np.clip(variance, 0, None))).astype(self._dtype)
        frame_weights = None if np.all(np.array(self._frame_weights) == 1) else "frame"
        weighting = _weighting_label(self.weights, frame_weights)
        meta = _combine_header(self.n_frames, self.method, False, 0, 0, 0, weighting,
                               self._metas, None)
        image = CCDData(data, unit=self._unit, wcs=self._wcs, mask=mask,
                        uncertainty=StdDevUncertainty(std), meta=meta)
        return CombineResult(image, self._coverage.copy(), np.zeros(self.n_frames))
