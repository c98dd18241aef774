# Licensed under a 3-clause BSD style license - see LICENSE
"""Cosmic-ray cleaning of single frames.

`clean_cosmic_rays` finds cosmic-ray hits in one `~astropy.nddata.CCDData`, repairs them
from their neighbours, adds them to the mask and returns a new frame. Two methods:

``"median"``
    A vectorised ring-median detector written for this package. A local maximum is a
    candidate when it stands above the median of its eight neighbours (the pixel itself
    left out) by more than ``threshold`` times the noise expected at that level; it is a
    hit when it is much sharper than its neighbourhood or when its 3x3 box is not the image
    of a star (no Gaussian at least ``min_fwhm`` wide fits it), which keeps the cores of
    even undersampled stars safe; hits grow into their wings. Written by hand because
    `ccdproc.cosmicray_median` compares each pixel with a box median that includes the
    pixel, uses one noise level for the whole frame and has no protection for stars, and
    L.A.Cosmic flags the cores of undersampled stars (thousands of pixels a frame on the
    Lowell 42-inch example frames, FWHM about 1.7 pixels).
``"lacosmic"``
    L.A.Cosmic (van Dokkum 2001) through `astroscrappy.detect_cosmics`, called directly
    rather than through `ccdproc.cosmicray_lacosmic`, whose ``gain`` handling (ccdproc 2.5.1)
    multiplies the data by the gain but leaves the uncertainty in the old unit.
"""

import functools
import logging
import warnings

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import (CCDData, InverseVariance, StdDevUncertainty,
                            VarianceUncertainty)
from astropy.utils.exceptions import AstropyUserWarning
from scipy.special import erf

from ._utils import frame_label
from .exceptions import FrameError

__all__ = ["clean_cosmic_rays"]

log = logging.getLogger(__name__)

#: Header cards holding the gain (electrons per data unit), in order of preference.
GAIN_KEYS = ("GAIN", "EGAIN", "CCDGAIN", "AGAIN_01")
#: Header cards holding the read noise (electrons), in order of preference.
READ_NOISE_KEYS = ("RDNOISE", "READNOIS", "RON", "ENOISE", "ARDNS_01")
#: Header cards holding the saturation level (data units).
SATURATION_KEYS = ("SATURATE", "SATLEVEL", "SATURATN")

# The eight neighbours (Chebyshev distance 1) and the 24 pixels at distance 3.
_RING1 = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)])
_RING3 = np.array([(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                   if max(abs(dy), abs(dx)) == 3])
# The 3x3 box, centre included, for the star-shape test.
_BOX3 = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
# The 5x5 box without its centre, and the 9x9 one, for repairs.
_BOX5 = np.array([(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0)])
_BOX9 = np.array([(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if (dy, dx) != (0, 0)])
# Variance of the median of n independent Gaussian values is about (pi / 2) sigma^2 / n;
# the residual (pixel - median of its 8 neighbours) therefore has variance
# sigma^2 (1 + pi / 16), as the two are independent.
_RESIDUAL_VAR = 1.0 + np.pi / (2 * len(_RING1))
_REPAIR_VAR = 1.0 + np.pi / (2 * len(_BOX5))
# and m1 - m3 (the medians of 8 and of 24 pixels) has variance sigma^2 pi (1/16 + 1/48).
_BROAD_VAR = np.pi / (2 * len(_RING1)) + np.pi / (2 * len(_RING3))
# The default sharpness is this margin times the largest value a Gaussian star at least
# min_fwhm wide can reach (_star_sharpness), with an allowance of _SHARP_NOISE sigma.
_SHARP_MARGIN = 1.25
_SHARP_NOISE = 0.5
# Star-shape test (see _psf_misfit): a Gaussian star may differ from a real PSF by this
# fraction of its value in each pixel; a 3x3 box whose best star fit has a chi-square above
# _PSF_CHI2 is not a star. Calibrated on the 5856 peaks of stars above 20 sigma (FWHM
# 1.5-3.5 px) in the ten Lowell 42-inch frames: with min_fwhm = 1.5 the largest chi-square
# of a star was 28.5 (99.9 % below 16) and none was sharper than the default sharpness;
# of 452 real cosmic rays above 10 sigma (found against the median of the other frames),
# 96 % fail the star fit or are sharp.
_PSF_TOLERANCE = 0.2
_PSF_CHI2 = 40.0
_PSF_STEPS = 9                                   # centres 1/16 pixel apart, 0 to 1/2
_PSF_WIDTHS = 22                                 # widths 2 ** (1/8) apart, 1 to 6.2
_PSF_COARSE_WIDTHS = (0, 3, 6, 9, 13, 17, 21)    # 1.0, 1.3, 1.7, 2.2, 3.1, 4.4, 6.2
# Growing: a wing pixel stands above its unflagged neighbours by this fraction of its height.
_GROW_CONTRAST = 0.5
# Growing candidates must stand this fraction of grow_threshold above the background of
# the hit they touch (a cheap preselection; the growing test then uses their own).
_GROW_PREFILTER = 0.6
# Measured / predicted scatter beyond this factor (either way) is warned about.
_NOISE_TOLERANCE = 1.3
# A plateau of this many pixels within 0.5 % of the maximum means saturation.
_SATURATION_COUNT = 10


# --------------------------------------------------------------------------------------
# Noise model
# --------------------------------------------------------------------------------------
class _Noise:
    """Variance of one pixel, in data units squared, as a function of its level.

    Either a detector model (``gain`` in electrons per data unit, ``read_noise`` in
    electrons): ``var = max(level, 0) / gain + (read_noise / gain) ** 2``; or a variance
    image (from the uncertainty), looked up where needed; or a constant.
    """

    def __init__(self, source, gain=None, read_noise=None, variance=None, constant=None):
        self.source = source
        self.gain = gain
        self.read_noise = read_noise
        self.variance = variance
        self.constant = constant

    def describe(self):
        if self.source == "model":
            return (f"gain {self.gain:.4g} e-/unit, read noise {self.read_noise:.4g} e-, "
                    "Poisson on the local level")
        if self.source == "uncertainty":
            return "the frame's uncertainty (median of the 8 neighbours' variances)"
        return f"constant sigma {np.sqrt(self.constant):.4g} estimated from the data"

    def background(self, level, ys, xs):
        """Variance of the background around (ys, xs), at level ``level``."""
        if self.source == "uncertainty":
            return _median24(_gather(self.variance, ys, xs, _RING3))
        return self.at_level(level)

    def at_level(self, level):
        """Variance at the given (bias-subtracted) level; model or constant only."""
        if self.source == "model":
            return np.maximum(level, 0) / self.gain + (self.read_noise / self.gain) ** 2
        return np.full(np.shape(level), self.constant)

    def local(self, level, ys, xs, work_shape):
        """Variance expected at pixels (ys, xs) whose neighbourhood level is ``level``."""
        if self.source == "uncertainty":
            # The median of the neighbours' variances: what the noise of the pixel would
            # be without the hit (a variance computed from the data includes the hit).
            return _median8(_gather(self.variance, ys, xs, _RING1, by_offset=True))
        return self.at_level(level)


def _as_gain(gain, unit, label):
    """Gain in electrons per data unit (float) from a float or a Quantity."""
    if isinstance(gain, u.Quantity):
        try:
            return float(gain.to_value(u.electron / unit))
        except u.UnitConversionError:
            # ADU and counts are the same thing for a CCD; astropy keeps them apart.
            if unit in (u.adu, u.count, u.dimensionless_unscaled) and \
                    gain.unit.is_equivalent(u.electron / u.adu):
                return float(gain.to_value(u.electron / u.adu))
            raise FrameError(f"{label}: gain {gain} cannot be expressed in electrons per "
                             f"{unit} (the unit of the data).") from None
    return float(gain)


def _header_number(meta, keys):
    for key in keys:
        if key in meta:
            try:
                value = float(meta[key])
            except (TypeError, ValueError):
                continue
            if np.isfinite(value) and value > 0:
                return key, value
    return None, None


def _variance_image(uncertainty, dtype):
    if uncertainty is None or uncertainty.array is None:
        return None
    array = np.asarray(uncertainty.array, dtype=dtype)
    if isinstance(uncertainty, StdDevUncertainty):
        return array * array
    if isinstance(uncertainty, VarianceUncertainty):
        return array.copy()
    if isinstance(uncertainty, InverseVariance):
        with np.errstate(divide="ignore"):
            return 1.0 / array
    return None


def _noise_model(ccd, gain, read_noise, label, dtype):
    """Choose the noise model: arguments, then uncertainty, then header, then the data.

    Returns None when nothing is known (the caller then measures a constant sigma).
    """
    unit = ccd.unit if ccd.unit is not None else u.adu
    in_electrons = unit.is_equivalent(u.electron)
    meta = ccd.meta or {}

    if gain is not None:
        gain = _as_gain(gain, unit, label)
        if not gain > 0:
            raise FrameError(f"{label}: gain must be positive, got {gain}.")
        if in_electrons and not np.isclose(gain, u.electron.to(unit)):
            raise FrameError(f"{label}: the data are in {unit}, yet a gain of {gain} e-/unit "
                             "was given; data in electrons need no gain (leave gain=None).")
    if read_noise is not None:
        read_noise = (read_noise.to_value(u.electron) if isinstance(read_noise, u.Quantity)
                      else float(read_noise))
        if not read_noise >= 0:
            raise FrameError(f"{label}: read noise must not be negative, got {read_noise}.")

    def header_gain():
        if in_electrons:
            return "unit", u.electron.to(unit)
        return _header_number(meta, GAIN_KEYS)

    def model(gain_key, gain, rn_key, rn):
        if rn is None:
            rn_key, rn = _header_number(meta, READ_NOISE_KEYS)
        if rn is None:
            rn_key, rn = "assumed", 0.0
            log.info("%s: no read noise given or in the header; assuming 0", label)
        log.info("%s: noise model: gain %.4g e-/unit (%s), read noise %.4g e- (%s)",
                 label, gain, gain_key, rn, rn_key)
        return _Noise("model", gain=gain, read_noise=rn)

    # 1. Arguments (a read noise alone takes the gain from the unit or the header).
    if gain is not None or read_noise is not None:
        gain_key, gain_value = ("argument", gain) if gain is not None else header_gain()
        if gain_value is not None:
            return model(gain_key, gain_value, "argument" if read_noise is not None else None,
                         read_noise)
        log.info("%s: read_noise given but no gain (argument, header or electron unit); "
                 "it is not used", label)

    # 2. The frame's own uncertainty.
    variance = _variance_image(ccd.uncertainty, dtype)
    if variance is not None:
        good = np.isfinite(variance) & (variance > 0)
        if good.any():
            if not good.all():
                variance = np.where(good, variance, np.median(variance[good]))
            log.info("%s: noise from the frame's uncertainty", label)
            return _Noise("uncertainty", variance=variance.astype(dtype, copy=False))

    # 3. Header cards (or the unit, for data in electrons).
    gain_key, gain_value = header_gain()
    if gain_value is not None:
        return model(gain_key, gain_value, None, None)
    return None


# --------------------------------------------------------------------------------------
# Vectorised neighbourhood look-ups at selected pixels
# --------------------------------------------------------------------------------------
def _mirror(index, n):
    """Mirror indices that fall off [0, n) back in (``abc|cb``, the pixel itself excluded)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def _gather(array, ys, xs, offsets, by_offset=False):
    """Values of ``array`` at ``(ys + dy, xs + dx)`` for each offset: shape (n, k), or
    (k, n) with ``by_offset``.

    Offsets that fall off the image are mirrored back in (only for the pixels near an
    edge, so the common case is a single flat ``take``).
    """
    ny, nx = array.shape
    reach = int(np.abs(offsets).max())
    yy = ys[:, None] + offsets[None, :, 0]
    xx = xs[:, None] + offsets[None, :, 1]
    edge = (ys < reach) | (ys >= ny - reach) | (xs < reach) | (xs >= nx - reach)
    if edge.any():
        yy[edge] = _mirror(yy[edge], ny)
        xx[edge] = _mirror(xx[edge], nx)
    flat = yy * nx + xx
    return np.take(array.reshape(-1), flat.T if by_offset else flat)


# Batcher's odd-even merge sort of 8 elements: 19 compare-exchanges.
_SORT8 = ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (1, 2), (5, 6),
          (0, 4), (3, 7), (1, 5), (2, 6), (1, 4), (3, 6), (2, 4), (3, 5), (3, 4))


def _median8(rows):
    """Median of 8 values for many pixels at once: ``rows`` has shape (8, n).

    A sorting network on whole rows (element-wise minimum and maximum) is several times
    faster than `numpy.median` along a short axis.
    """
    v = list(rows)
    for i, j in _SORT8:
        v[i], v[j] = np.minimum(v[i], v[j]), np.maximum(v[i], v[j])
    return 0.5 * (v[3].astype(np.float64) + v[4])


def _median24(values):
    """Median of each row of 24 values (the ring at distance 3), as float64."""
    part = np.partition(values, (11, 12), axis=1)
    return 0.5 * (part[:, 11].astype(np.float64) + part[:, 12])


def _row_nanmedian(values):
    """Median of each row ignoring NaN (NaN where a row has none): sorting puts NaN last,
    which is much faster than `numpy.nanmedian` on many short rows."""
    values = np.sort(values, axis=1)
    count = np.count_nonzero(~np.isnan(values), axis=1)
    low = np.take_along_axis(values, np.maximum(count - 1, 0)[:, None] // 2, axis=1)[:, 0]
    high = np.take_along_axis(values, (count // 2)[:, None], axis=1)[:, 0]
    out = 0.5 * (low + high)
    out[count == 0] = np.nan
    return out


def _masked_median(array, bad, ys, xs, fallback, flagged=None):
    """Median of the good pixels around each (ys, xs): the 5x5 box, else 9x9, else fallback.

    Pixels are bad where ``bad`` (or ``flagged``, if given) is True."""
    out = np.full(len(ys), fallback, dtype=np.float64)
    todo = np.arange(len(ys))
    for offsets in (_BOX5, _BOX9):
        if not len(todo):
            break
        values = _gather(array, ys[todo], xs[todo], offsets).astype(np.float64)
        exclude = _gather(bad, ys[todo], xs[todo], offsets)
        if flagged is not None:
            exclude |= _gather(flagged, ys[todo], xs[todo], offsets)
        values[exclude] = np.nan
        median = _row_nanmedian(values)
        ok = ~np.isnan(median)
        out[todo[ok]] = median[ok]
        todo = todo[~ok]
    return out


# --------------------------------------------------------------------------------------
# The median method
# --------------------------------------------------------------------------------------
def _min5(a, pair, out):
    """Smallest of five neighbours (up-left, up, up-right, left, right) of the interior of
    ``a`` (shape (m + 2, n + 2)), into ``out`` (m, n), with 3 array operations: the minimum
    of the left and right neighbours of each row (into ``pair``, (m + 1, n)) serves twice."""
    np.minimum(a[:-1, :-2], a[:-1, 2:], out=pair)               # rows 0 .. m
    np.minimum(pair[:-1], a[:-2, 1:-1], out=out)                # the row above, all three
    np.minimum(out, pair[1:], out=out)                          # and left and right


def _bound_test(a, var, slope, offset, out, buffers):
    """The prescreen's test on the interior of ``a`` (shape (m + 2, n + 2)): local maximum
    among the four edge neighbours, and pixel minus the smallest of five neighbours above
    the threshold, squared (``slope * level + offset``, or ``var`` times ``offset``).
    Writes the verdict, shape (m, n), into ``out``."""
    h, lo, ex, t, pair = buffers
    c = a[1:-1, 1:-1]
    up, down, left, right = a[:-2, 1:-1], a[2:, 1:-1], a[1:-1, :-2], a[1:-1, 2:]
    np.maximum(up, down, out=h)          # local maximum among the edge neighbours
    np.maximum(h, left, out=h)
    np.maximum(h, right, out=h)
    np.greater_equal(c, h, out=out)
    _min5(a, pair, lo)
    np.subtract(c, lo, out=ex)           # >= 0 wherever out is True
    if var is not None:                  # the variance of the same five neighbours
        _min5(var, pair, lo)
        lo *= offset
    else:
        # (a negative level only makes the bound looser, so it is not clipped at 0)
        lo *= slope
        lo += offset
    np.multiply(ex, ex, out=ex)
    np.greater(ex, lo, out=t)
    out &= t


def _prescreen(work, noise, threshold, rows=32):
    """Local maxima that can possibly pass the ring-median test: a cheap full-frame pass.

    The exact test needs the median of the eight neighbours, m. The smallest of any five of
    them is a lower bound of m (five values out of eight always include one of the four
    smallest), and the noise grows with the level, so ``x - min5 > threshold * sigma(min5)``
    keeps every pixel that ``x - m > threshold * sigma(m)`` would; a local maximum is also
    at least as bright as its four edge neighbours. This costs a dozen array operations
    instead of a median filter (done in blocks of rows that stay in the CPU cache); the
    exact test then runs only on the few pixels that survive. The border is tested on thin
    mirrored strips.

    Returns the candidates' coordinates and the maximum of each block of ``rows`` rows
    (their inner columns) followed by those of the first and last rows and columns.
    """
    ny, nx = work.shape
    scale = threshold * threshold * _RESIDUAL_VAR
    variance = noise.variance if noise.source == "uncertainty" else None
    if noise.source == "model":
        slope, offset = scale / noise.gain, scale * (noise.read_noise / noise.gain) ** 2
    elif noise.source == "data":
        slope, offset = 0.0, scale * noise.constant
    else:
        slope, offset = 0.0, scale

    def buffers(shape):
        dtype = np.result_type(work.dtype, np.float32 if variance is None else variance.dtype)
        return ([np.empty(shape, work.dtype) for _ in range(3)] + [np.empty(shape, bool)]
                + [np.empty((shape[0] + 1, shape[1]), dtype)])

    shape = (min(rows, ny), nx - 2)
    bufs, verdict = buffers(shape), np.empty(shape, bool)
    found, tops = [], []
    for y0 in range(1, ny - 1, rows):
        y1 = min(y0 + rows, ny - 1)
        n = y1 - y0
        block = work[y0 - 1:y1 + 1]
        tops.append(block[1:-1, 1:-1].max())
        _bound_test(block, None if variance is None else variance[y0 - 1:y1 + 1],
                    slope, offset, verdict[:n], [b[:n] for b in bufs[:4]] + [bufs[4][:n + 1]])
        flat = np.flatnonzero(verdict[:n])
        found.append((flat // (nx - 2) + y0, flat % (nx - 2) + 1))
    # The border: each edge with its mirrored neighbours, as a 3-row strip.
    for index, transpose in ((0, False), (ny - 1, False), (0, True), (nx - 1, True)):
        source = work.T if transpose else work
        inner = 1 if index == 0 else index - 1
        rows_ = [inner, index, inner]
        strips = [np.pad(arr[rows_], ((0, 0), (1, 1)), mode="reflect")
                  for arr in ((source,) if variance is None
                              else (source, variance.T if transpose else variance))]
        length = source.shape[1]
        out = np.empty((1, length), bool)
        _bound_test(strips[0], strips[1] if len(strips) > 1 else None, slope, offset, out,
                    buffers((1, length)))
        along = np.flatnonzero(out[0])
        if transpose:    # the corners are done with the first and last rows
            along = along[(along > 0) & (along < length - 1)]
            found.append((along, np.full(len(along), index)))
        else:
            found.append((np.full(len(along), index), along))
    tops.extend([work[0].max(), work[-1].max(), work[:, 0].max(), work[:, -1].max()])
    return (np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found]),
            np.array(tops))


@functools.lru_cache(maxsize=8)
def _psf_bank(min_fwhm):
    """3x3 pixel-integrated circular Gaussians with peak 1, shape (W, O, O, 9): FWHM
    ``min_fwhm * 2 ** (k / 8)`` for k = 0 ... 21 (up to about six times ``min_fwhm``),
    centred at (oy, ox) = (i, j) / 16 pixel from the centre of the central pixel, i and j
    from 0 to 8: the lower-right quarter of the pixel (patches are flipped to match)."""
    edges = np.arange(-1.5, 2.0)                 # pixel edges of a 3-pixel row
    shifts = np.arange(_PSF_STEPS) / (2 * (_PSF_STEPS - 1))
    widths = min_fwhm * 2.0 ** (np.arange(_PSF_WIDTHS) / 8)
    scale = widths / (2 * np.sqrt(2 * np.log(2))) * np.sqrt(2)
    # Integral of the Gaussian over each pixel, for every width and sub-pixel centre.
    profile = 0.5 * np.diff(erf((edges[None, None, :] - shifts[None, :, None])
                                / scale[:, None, None]), axis=2)        # (W, O, 3)
    bank = profile[:, :, None, :, None] * profile[:, None, :, None, :]  # (W, O, O, 3, 3)
    bank = bank.reshape(len(widths), _PSF_STEPS, _PSF_STEPS, 9)
    return (bank / bank.max(axis=-1, keepdims=True)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _star_sharpness(min_fwhm):
    """The largest (x - m1) / (m1 - m3) of a noiseless Gaussian star at least ``min_fwhm``
    wide, over sub-pixel centres, at the pixel that is its local maximum (a finely sampled
    7x7 model: m1 is the median of the 8 neighbours, m3 of the 24 pixels at distance 3).
    It is largest for the sharpest star centred on a pixel corner: 6.7 at FWHM 1.5."""
    edges = np.arange(-3.5, 4.0)
    shifts = np.linspace(0.0, 0.5, 11)
    ring1 = [(dy, dx) for dy in range(-1, 2) for dx in range(-1, 2) if (dy, dx) != (0, 0)]
    ring3 = [tuple(o) for o in _RING3]
    scale = min_fwhm / (2 * np.sqrt(2 * np.log(2))) * np.sqrt(2)
    profile = 0.5 * np.diff(erf((edges[None, :] - shifts[:, None]) / scale), axis=1)
    largest = 0.0
    for py in profile:
        for px in profile:
            star = np.outer(py, px)
            m1 = np.median([star[3 + dy, 3 + dx] for dy, dx in ring1])
            m3 = np.median([star[3 + dy, 3 + dx] for dy, dx in ring3])
            largest = max(largest, (star[3, 3] - m1) / (m1 - m3))
    return float(largest)


def _psf_coarse():
    """Indices (k, i, j) into `_psf_bank` of the coarse grid: 7 widths a factor ~1.3
    apart, centres 1/4 pixel apart with i <= j (patches are transposed to match)."""
    return np.array([(k, i, j) for k in _PSF_COARSE_WIDTHS for i in (0, 4, 8)
                     for j in (0, 4, 8) if i <= j])


def _psf_chi2(patch, var_bg, templates, inverse_gain):
    """Chi-square of the least-squares (amplitude >= 0) fit of each template to each patch.

    ``patch`` (n, 9), ``var_bg`` (n,), ``templates`` (m, 9) or (n, m, 9) -> (n, m)."""
    if templates.ndim == 2:
        # (np.dot rather than the @ operator: for these small products the latter went
        # through multithreaded BLAS, whose wake-up cost milliseconds on a busy machine)
        amp = np.dot(patch, np.ascontiguousarray(
            (templates / np.einsum("kp,kp->k", templates, templates)[:, None]).T))
        templates = templates[None]
    else:
        amp = (np.einsum("np,nmp->nm", patch, templates)
               / np.einsum("nmp,nmp->nm", templates, templates))
    np.maximum(amp, 0, out=amp)
    model = amp[:, :, None] * templates
    var = model * np.float32(_PSF_TOLERANCE ** 2)
    var += inverse_gain
    var *= model
    var += var_bg[:, None, None]
    model -= patch[:, None, :]
    model *= model
    model /= var
    return model.sum(axis=2)


def _psf_misfit(patches, var_bg, gain, min_fwhm=1.0, limit=None):
    """Smallest chi-square of a star fit to each 3x3 patch (background already removed).

    A star is a pixel-integrated Gaussian at least ``min_fwhm`` wide, centred anywhere in
    the central pixel, with its least-squares amplitude (at least 0); the variance of a
    pixel is the background's, plus the Poisson noise of the star when the gain is known,
    plus (_PSF_TOLERANCE x star)^2 for the difference between a real PSF and a Gaussian.
    The search runs on a coarse grid of widths and centres, then on a grid four times finer
    around the best coarse fit of the patches that still fit badly (bright, sharp stars).

    With ``limit``, only whether the smallest chi-square exceeds it matters: the three
    coarse templates that fit best without weights are tried first, and patches that one
    of them fits within the limit (most stars) go no further. The values returned are then
    exact above the limit and an upper bound, still within it, below.
    """
    bank = _psf_bank(float(min_fwhm))
    flat_bank = bank.reshape(-1, 9)
    coarse_index = _psf_coarse()
    coarse = bank[tuple(coarse_index.T)]                               # (K, 9)
    # Flip each patch so that its light leans right and down, and more right than down,
    # where the coarse templates' centres are.
    patches = patches.reshape(-1, 3, 3).astype(np.float32)
    flip_x = patches[:, :, 0].sum(axis=1) > patches[:, :, 2].sum(axis=1)
    patches[flip_x] = patches[flip_x, :, ::-1]
    flip_y = patches[:, 0, :].sum(axis=1) > patches[:, 2, :].sum(axis=1)
    patches[flip_y] = patches[flip_y, ::-1, :]
    lean_x = patches[:, :, 2].sum(axis=1) - patches[:, :, 0].sum(axis=1)
    lean_y = patches[:, 2, :].sum(axis=1) - patches[:, 0, :].sum(axis=1)
    swap = lean_y > lean_x
    patches[swap] = patches[swap].transpose(0, 2, 1)
    patches = patches.reshape(-1, 9)
    var_bg = np.asarray(var_bg, dtype=np.float32)
    inverse_gain = np.float32(0 if gain is None else 1 / gain)

    out = np.full(len(patches), np.inf, dtype=np.float32)
    todo = np.arange(len(patches))
    if limit is not None and len(patches):
        norm = np.einsum("kp,kp->k", coarse, coarse)
        projection = np.dot(patches, np.ascontiguousarray((coarse / norm[:, None]).T))
        residual = (patches * patches).sum(axis=1)[:, None] - projection ** 2 * norm
        residual[projection < 0] = np.inf
        # Every pixel's variance is at least the background's, so the chi-square of a
        # template is at most its unweighted residual over var_bg: faint stars stop here.
        smallest = residual.min(axis=1)
        out[:] = smallest / var_bg
        todo = np.nonzero(out > limit)[0]
        best = np.argpartition(residual[todo], 3, axis=1)[:, :3]
        out[todo] = np.minimum(out[todo], _psf_chi2(patches[todo], var_bg[todo],
                                                    coarse[best], inverse_gain).min(axis=1))
        todo = todo[out[todo] > limit]
    best = np.zeros(len(patches), dtype=int)
    for start in range(0, len(todo), 128):
        part = todo[start:start + 128]
        chi2 = _psf_chi2(patches[part], var_bg[part], coarse, inverse_gain)
        best[part] = chi2.argmin(axis=1)
        out[part] = np.minimum(out[part], chi2.min(axis=1))
    if limit is not None:
        todo = todo[out[todo] > limit]
    # Refine: the 5 x 5 x 5 fine templates around the best coarse one.
    nw, no = bank.shape[:2]
    step = np.arange(-2, 3)
    for start in range(0, len(todo), 128):
        part = todo[start:start + 128]
        k, i, j = coarse_index[best[part]].T
        kk = np.clip(k[:, None, None, None] + step[None, :, None, None], 0, nw - 1)
        ii = np.clip(i[:, None, None, None] + step[None, None, :, None], 0, no - 1)
        jj = np.clip(j[:, None, None, None] + step[None, None, None, :], 0, no - 1)
        index = ((kk * no + ii) * no + jj).reshape(len(part), -1)
        chi2 = _psf_chi2(patches[part], var_bg[part], flat_bank[index], inverse_gain)
        out[part] = np.minimum(out[part], chi2.min(axis=1))
    return out.astype(np.float64)


def _test(work, noise, ys, xs, threshold, sharpness, min_fwhm):
    """The exact test at the prescreen's candidates (ys, xs).

    Returns the hits' coordinates, their local variance, and the median and variance of
    their background (the ring at distance 3), which growing starts from.
    """
    ring = _gather(work, ys, xs, _RING1, by_offset=True)      # (8, n)
    values = work[ys, xs]
    # New hits start from local maxima: a pixel on the flank of a star has a brighter
    # neighbour, and its neighbours' median can sit near the sky, which would make it look
    # sharp. The rest of a hit is found by growing from its peak.
    peak = values >= np.maximum.reduce(ring, axis=0)
    ys, xs, ring, values = ys[peak], xs[peak], ring[:, peak], values[peak].astype(np.float64)
    m1 = _median8(ring)
    var = noise.local(m1, ys, xs, work.shape)
    excess = values - m1
    hit = excess > threshold * np.sqrt(var * _RESIDUAL_VAR)
    idx = np.nonzero(hit)[0]
    if len(idx):
        # Sharpness: a cosmic ray stands out from neighbours that sit on the background;
        # a star's neighbours are themselves well above the wider ring at distance 3.
        m3 = _median24(_gather(work, ys[idx], xs[idx], _RING3))
        # (with an allowance of _SHARP_NOISE times the noise of m1 - m3, so that the noise
        # of a faint star's neighbours does not make it look sharp)
        allowance = _SHARP_NOISE * np.sqrt(var[idx] * _BROAD_VAR)
        sharp = excess[idx] > sharpness * (m1[idx] - m3 + allowance)
        # What is not that sharp (thick tracks, 2x2 hits) must still look like a star: a
        # Gaussian at least min_fwhm wide, centred in the pixel, must fit its 3x3 box.
        var_bg = noise.background(m3, ys[idx], xs[idx])
        soft = idx[~sharp]
        if len(soft):
            patches = (_gather(work, ys[soft], xs[soft], _BOX3).astype(np.float64)
                       - m3[~sharp, None])
            misfit = _psf_misfit(patches, var_bg[~sharp], noise.gain, min_fwhm,
                                 limit=_PSF_CHI2)
            sharp[~sharp] = misfit > _PSF_CHI2
        hit[idx] = sharp
        m3, var_bg = m3[sharp], var_bg[sharp]
    else:
        m3 = var_bg = np.array([])
    return ys[hit], xs[hit], var[hit], m3, var_bg


def _grow(work, flagged, noise, ys, xs, grow_threshold):
    """Which of the pixels (ys, xs), next to a hit, belong to it.

    A pixel joins the hit when (1) its brightest neighbour is already flagged and at least
    as bright as itself: it lies on the slope that leads up to the hit, not on one that leads
    to a star next to it (a watershed rule, which peels thick tracks layer by layer); (2) it
    stands ``grow_threshold`` sigma above the background (the median of the ring at
    distance 3); and (3) it stands above its unflagged neighbours by at least half its
    height above the background, as the wing of a hit does and the halo of a star does not.
    ``work`` holds the original values (repairs come after all passes).
    """
    values = work[ys, xs].astype(np.float64)
    ring = _gather(work, ys, xs, _RING1).astype(np.float64)
    ring_flagged = _gather(flagged, ys, xs, _RING1)
    brightest = np.argmax(ring, axis=1)
    rows = np.arange(len(ys))
    hit = ring_flagged[rows, brightest] & (values <= ring[rows, brightest])
    idx = np.nonzero(hit)[0]
    ring = ring[idx]
    ring[ring_flagged[idx]] = np.nan
    others = _row_nanmedian(ring)   # NaN where every neighbour is flagged
    hit[idx] = ~(values[idx] <= others)       # (3) cannot hold otherwise
    var, background = np.zeros(len(ys)), np.zeros(len(ys))
    keep = hit[idx]
    idx, others = idx[keep], others[keep]
    if len(idx):
        m3 = _median24(_gather(work, ys[idx], xs[idx], _RING3))
        background[idx] = m3
        var[idx] = noise.background(m3, ys[idx], xs[idx])
        excess = values[idx] - m3
        others = np.where(np.isnan(others), m3, others)
        hit[idx] = ((excess > grow_threshold * np.sqrt(var[idx]))
                    & (values[idx] - others > _GROW_CONTRAST * excess))
    # the variance of a grown pixel is that of its background: also what the next pass uses
    return hit, var, background, var


def _median_method(work, bad, noise, threshold, sharpness, grow_threshold, iterations,
                   saturation, min_fwhm, sky, label):
    """Flag and repair cosmic rays in ``work`` (modified in place).

    Returns the flag image, the coordinates and local variance of the flagged pixels, and
    the saturation level used (``saturation="auto"`` is resolved from the data).
    """
    flagged = np.zeros(work.shape, bool)
    ny, nx = work.shape

    def usable(ys, xs):
        """No saturated pixel within two pixels (bleed trails and the flat tops of
        saturated stars are not cosmic rays we can tell from stars)."""
        if saturation is None or not len(ys):
            return np.ones(len(ys), bool)
        return ((_gather(work, ys, xs, _BOX5).max(axis=1) < saturation)
                & (work[ys, xs] < saturation))

    ys, xs, tops = _prescreen(work, noise, threshold)
    if saturation == "auto":
        saturation = _saturation_from_blocks(work, tops, label)
    keep = ~bad[ys, xs]
    ys, xs, var, m3, var_bg = _test(work, noise, ys[keep], xs[keep], threshold, sharpness,
                                    min_fwhm)
    keep = usable(ys, xs)
    ys, xs, var, m3, var_bg = ys[keep], xs[keep], var[keep], m3[keep], var_bg[keep]
    if not len(ys):
        empty = np.array([], dtype=np.intp)
        return flagged, empty, empty, np.array([]), saturation
    # The image stays as it is until every hit is found (growing looks at the original
    # values); the repairs come at the end.
    flag_y, flag_x, flag_var = [], [], []
    for step in range(max(int(iterations), 1)):
        flagged[ys, xs] = True
        flag_y.append(ys)
        flag_x.append(xs)
        flag_var.append(var)
        # Next pass: the unflagged neighbours of what was just found that stand clearly
        # above its background. A cheap preselection: the growing test compares a pixel
        # with its own background, which differs from the hit's only by noise, and the
        # margin (_GROW_PREFILTER) covers that.
        floor = m3 + _GROW_PREFILTER * grow_threshold * np.sqrt(var_bg)
        ys = np.clip(ys[:, None] + _RING1[None, :, 0], 0, ny - 1)
        xs = np.clip(xs[:, None] + _RING1[None, :, 1], 0, nx - 1)
        flat = ys * nx + xs
        keep = ((np.take(work.reshape(-1), flat) > floor[:, None])
                & ~np.take(flagged.reshape(-1), flat) & ~np.take(bad.reshape(-1), flat))
        unique = np.unique(flat[keep])
        if not len(unique):
            break
        ys, xs = unique // nx, unique % nx
        hit, var, m3, var_bg = _grow(work, flagged, noise, ys, xs, grow_threshold)
        hit[hit] = usable(ys[hit], xs[hit])
        ys, xs, var, m3, var_bg = ys[hit], xs[hit], var[hit], m3[hit], var_bg[hit]
        if not len(ys):
            break
    fy, fx = np.concatenate(flag_y), np.concatenate(flag_x)
    work[fy, fx] = _masked_median(work, bad, fy, fx, sky, flagged)
    log.debug("%d pixels flagged in %d passes", len(fy), step + 1)
    return flagged, fy, fx, np.concatenate(flag_var), saturation


def _saturation_from_blocks(work, tops, label, rows=32):
    """`_saturation_from_data`, from the block maxima the prescreen found on its way (the
    last four are those of the first and last rows and columns, which no block covers)."""
    top = float(tops.max())
    if not np.isfinite(top) or top <= 0:
        return None
    count = sum(int(np.count_nonzero(edge >= 0.995 * top))
                for edge in (work[0], work[-1], work[1:-1, 0], work[1:-1, -1]))
    for block in np.nonzero(tops[:-4] >= 0.995 * top)[0]:
        if count >= _SATURATION_COUNT:
            break
        rows_ = work[1 + block * rows:1 + (block + 1) * rows, 1:-1]
        count += int(np.count_nonzero(rows_ >= 0.995 * top))
    return _saturation_verdict(top, count, label)


def _saturation_verdict(top, count, label):
    if count < _SATURATION_COUNT:
        return None
    log.info("%s: no saturation level given or in the header; %d pixels sit within 0.5%% "
             "of the maximum (%.6g), so %.6g is taken as saturation", label, count, top,
             0.98 * top)
    return 0.98 * top


def _saturation_from_data(work, label):
    """A saturation level guessed from a plateau at the top of the data, or None.

    Saturated stars put many pixels at (nearly) the same, highest value: when at least
    ``_SATURATION_COUNT`` pixels lie within 0.5 % of the maximum, 98 % of the maximum is
    taken as saturation.
    """
    top = float(work.max())
    if not np.isfinite(top) or top <= 0:
        return None
    return _saturation_verdict(top, int(np.count_nonzero(work >= 0.995 * top)), label)


def _sample_residuals(work, bad, samples=5_000):
    """Residuals (pixel - median of its 8 neighbours) on a sparse grid of about ``samples``
    good pixels.

    Returns the grid coordinates, the residuals and the neighbour medians.
    """
    ny, nx = work.shape
    step = max(1, int(np.sqrt(ny * nx / samples)))
    rows, cols = slice(1, ny - 1, step), slice(1, nx - 1, step)
    centre = work[rows, cols]
    ring = np.stack([work[1 + dy:ny - 1 + dy:step, 1 + dx:nx - 1 + dx:step]
                     [:centre.shape[0], :centre.shape[1]]
                     for dy, dx in _RING1]).reshape(8, -1)
    ys, xs = np.mgrid[rows, cols]
    keep = ~bad[rows, cols].ravel()
    m1 = _median8(ring[:, keep])
    return ys.ravel()[keep], xs.ravel()[keep], centre.ravel()[keep] - m1, m1


def _mad_std(values):
    return 1.4826 * np.median(np.abs(values - np.median(values)))


# --------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------
def clean_cosmic_rays(ccd, method="median", *, threshold=5.0, sharpness=None,
                      grow_threshold=3.0, iterations=None, gain=None, read_noise=None,
                      saturation=None, min_fwhm=1.5, lacosmic_kwargs=None):
    r"""Find cosmic-ray hits, repair them from their neighbours and mask them.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame, bias-subtracted (the noise model needs the level above the bias). It is
        not modified.
    method : {"median", "lacosmic"}
        ``"median"``: this package's ring-median detector (see Notes). ``"lacosmic"``:
        L.A.Cosmic through `astroscrappy.detect_cosmics`.
    threshold : float
        Detection threshold in noise units (standard deviations). For ``"lacosmic"``,
        astroscrappy's ``sigclip``.
    sharpness : float, optional
        ``"median"``: a peak is a hit at once when its excess over the median of its 8
        neighbours exceeds ``sharpness`` times the excess of that median over the ring at
        distance 3 (plus half its noise); otherwise only when its 3x3 box fails the
        star-shape test (see Notes). By default 1.25 times the largest value a Gaussian star
        at least ``min_fwhm`` wide reaches: 8.37 for ``min_fwhm=1.5`` (the 5856 peaks of
        stars above 20 sigma in the Lowell example frames reach 6.2). ``"lacosmic"``:
        astroscrappy's ``objlim`` (default 5).
    grow_threshold : float
        Threshold, in noise units above the local background, for the pixels next to a hit
        (wings and interiors of tracks). For ``"lacosmic"`` it sets
        ``sigfrac = grow_threshold / threshold``.
    iterations : int, optional
        ``"median"``: the most passes of growing around the hits (default 50; growing stops
        as soon as a pass adds nothing, usually after a few). ``"lacosmic"``: astroscrappy's
        ``niter`` (default 4).
    gain : float or `~astropy.units.Quantity`, optional
        Electrons per data unit (a float is e-/ADU for data in ADU). By default from the
        header (``GAIN``, ``EGAIN``, ``CCDGAIN``, ``AGAIN_01``); data in electrons need none.
    read_noise : float or `~astropy.units.Quantity`, optional
        Read noise in electrons. By default from the header (``RDNOISE``, ``READNOIS``,
        ``RON``, ``ENOISE``, ``ARDNS_01``), else 0.
    saturation : float or `~astropy.units.Quantity`, optional
        Saturation level in data units. Pixels within two pixels of a saturated one are
        never flagged (``"median"``); astroscrappy masks saturated stars (``"lacosmic"``).
        By default ``SATURATE``/``SATLEVEL``/``SATURATN`` from the header, else, when at
        least ten pixels lie within 0.5 % of the maximum of the data (a plateau of
        saturated stars), 98 % of that maximum; else none.
    min_fwhm : float
        ``"median"``: the FWHM, in pixels, of the sharpest real source. Peaks that look like
        a Gaussian at least this wide are protected as stars. Lower it for undersampled data
        (a Gaussian star narrower than ``min_fwhm`` on a pixel corner can be flagged); the
        price is recall: on the Lowell frames, 96 % of the real cosmic rays above 10 sigma
        are recognised at 1.5, 88 % at 1.2 and 65 % at 1.0.
    lacosmic_kwargs : dict, optional
        More arguments for `astroscrappy.detect_cosmics` (``sepmed``, ``cleantype``,
        ``fsmode``, ``psffwhm``, ``inbkg`` ...).

    Returns
    -------
    cleaned : `~astropy.nddata.CCDData`
        A new frame: repaired data in the input unit (float32 unless the input is float64),
        the input mask or-ed with the hits, the input uncertainty (if any, same class) with
        repaired pixels given the error of their repair, WCS and meta carried over. The
        header records ``CRMETHOD``, ``CRTHRESH``, ``CRSHARP``, ``CRGROW``, ``CRNITER``,
        ``CRNFLAG`` (pixels flagged), ``CRNOISE`` (where the noise came from:
        ``model``, ``uncertainty`` or ``data``) and ``CRNSRAT`` (measured / predicted
        scatter), and a HISTORY line with every parameter.

    Raises
    ------
    FrameError
        If the frame is not a 2-D `~astropy.nddata.CCDData`, the method is unknown, the
        thresholds are inconsistent, or a gain is given for data in electrons.

    Warns
    -----
    AstropyUserWarning
        If the scatter of the data differs from what the noise model predicts by more than
        a factor 1.3 (a frame that still has its bias, or a wrong gain or read noise): the
        thresholds are then not in true noise units.

    Notes
    -----
    **Noise model.** Thresholds are in units of the noise expected at each pixel, taken
    from, in order: the ``gain``/``read_noise`` arguments; the frame's uncertainty; the
    header's gain and read noise (or the unit, for data in electrons); and, when none of
    these exists, a constant sigma measured from the data (1.4826 times the median absolute
    deviation of pixel minus neighbour median, on a sparse grid), which is logged. With a
    gain :math:`g` (e-/unit) and read noise :math:`r` (e-), the variance of a pixel at
    bias-subtracted level :math:`m` is :math:`\max(m, 0)/g + (r/g)^2`, where :math:`m` is
    the median of its neighbours, so that a hit does not raise its own noise; with an
    uncertainty, it is the median of the neighbours' variances, for the same reason.

    **Median method.** Let :math:`x` be a pixel, :math:`m_1` the median of its 8
    neighbours (the pixel left out), :math:`m_3` the median of the 24 pixels at distance 3
    and :math:`\sigma` the noise. A local maximum is a hit when

    1. :math:`x - m_1 > t\,\sigma\sqrt{1 + \pi/16}` (the square root is the noise of
       :math:`x - m_1`, the median of 8 values having variance about
       :math:`\pi\sigma^2/16`), and
    2. it is sharp, :math:`x - m_1 > s\,(m_1 - m_3 + \sigma_F/2)` -- a cosmic ray's
       neighbours sit on the background, a star's are themselves bright; :math:`\sigma_F =
       \sigma\sqrt{\pi/16 + \pi/48}` is the noise of :math:`m_1 - m_3`, so that a faint
       star's noisy neighbours do not make it look sharp -- or, failing that, its 3x3 box
       (minus :math:`m_3`) is not a star: no pixel-integrated Gaussian at least
       ``min_fwhm`` wide, centred anywhere in the pixel, fits it with a chi-square below
       40, each pixel's variance being the background's plus the star's Poisson noise plus
       (20 % of the star)^2 for the difference between a real PSF and a Gaussian. This
       catches the 2x2 hits and thick tracks that are not sharp in the first sense.

    Hits then grow: a neighbour joins when it stands ``grow_threshold`` sigma above
    :math:`m_3`, its brightest neighbour is a hit at least as bright as itself (so growth
    runs down the slopes of the hit and never up into a star next to it), and it stands
    above its unflagged neighbours by at least half its height. Hits are replaced by the
    median of the unflagged, unmasked pixels of their 5x5 box and get the uncertainty
    :math:`\sigma\sqrt{1 + \pi/48}` (a pixel's noise plus that of a 24-pixel median). A
    cheap full-frame bound (see ``_prescreen``) limits the exact test to the few pixels
    that can pass it, so the result equals that of the full ring-median computation at a
    small fraction of its cost; nothing loops over pixels in Python.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from shiftstack_ccd.cosmicray import clean_cosmic_rays
    >>> rng = np.random.default_rng(0)
    >>> sky = rng.poisson(400.0, (64, 64)) + rng.normal(0.0, 5.0, (64, 64))
    >>> data = sky.astype(np.float32)
    >>> data[20, 30] += 800.0                        # a single-pixel hit
    >>> data[40, 10:13] += [300.0, 900.0, 250.0]     # a short track
    >>> ccd = CCDData(data, unit="electron")
    >>> clean = clean_cosmic_rays(ccd, read_noise=5.0)
    >>> bool(clean.mask[20, 30]), bool(clean.mask[40, 10:13].all())
    (True, True)
    >>> int(clean.meta["CRNFLAG"]), bool(abs(clean.data[20, 30] - 400) < 60)
    (4, True)
    >>> ccd.mask is None and float(ccd.data[20, 30]) > 1000  # the input is untouched
    True
    """
    label = frame_label(ccd)
    if not isinstance(ccd, CCDData):
        raise FrameError(f"{label}: clean_cosmic_rays needs a CCDData, got "
                         f"{type(ccd).__name__}.")
    if ccd.data.ndim != 2 or min(ccd.data.shape) < 3:
        raise FrameError(f"{label}: clean_cosmic_rays needs a 2-D image of at least 3 x 3 "
                         f"pixels, got shape {ccd.data.shape}.")
    if method not in ("median", "lacosmic"):
        raise FrameError(f"{label}: unknown cosmic-ray method {method!r}; use 'median' or "
                         "'lacosmic'.")
    if not threshold > 0 or not grow_threshold > 0:
        raise FrameError(f"{label}: threshold and grow_threshold must be positive.")
    if grow_threshold > threshold:
        raise FrameError(f"{label}: grow_threshold ({grow_threshold}) must not exceed "
                         f"threshold ({threshold}).")
    if not min_fwhm > 0:
        raise FrameError(f"{label}: min_fwhm must be positive, got {min_fwhm}.")
    if sharpness is None:
        sharpness = (round(_SHARP_MARGIN * _star_sharpness(float(min_fwhm)), 2)
                     if method == "median" else 5.0)
    if iterations is None:
        iterations = 50 if method == "median" else 4
    unit = ccd.unit if ccd.unit is not None else u.adu

    dtype = ccd.data.dtype if ccd.data.dtype in (np.float32, np.float64) else np.float32
    work = np.array(ccd.data, dtype=dtype, copy=True)   # becomes the output data
    bad = np.isfinite(work)
    np.logical_not(bad, out=bad)
    if ccd.mask is not None:
        bad |= np.asarray(ccd.mask, dtype=bool)
    if bad.all():
        raise FrameError(f"{label}: every pixel is masked or not finite; nothing to clean.")

    noise = _noise_model(ccd, gain, read_noise, label, dtype)
    if isinstance(saturation, u.Quantity):
        saturation = saturation.to_value(unit)
    elif saturation is None:
        key, saturation = _header_number(ccd.meta, SATURATION_KEYS)

    # Masked and non-finite pixels are filled from their neighbours so they cannot disturb
    # the medians; they stay masked and are never counted as hits.
    coarse = work[::16, ::16]
    coarse = coarse[~bad[::16, ::16]]
    sky = float(np.median(coarse)) if coarse.size else float(np.median(work[~bad]))
    if bad.any():
        ys_bad, xs_bad = np.nonzero(bad)
        work[ys_bad, xs_bad] = _masked_median(work, bad, ys_bad, xs_bad, sky)
    else:
        ys_bad = xs_bad = np.array([], dtype=np.intp)
    if saturation is None:
        saturation = "auto" if method == "median" else _saturation_from_data(work, label)

    # Measured scatter versus the model, on a sparse grid (also the fallback estimate).
    sy, sx, resid, level = _sample_residuals(work, bad)
    if noise is None:
        sigma = _mad_std(resid) / np.sqrt(_RESIDUAL_VAR)
        noise = _Noise("data", constant=sigma * sigma)
        log.info("%s: no gain, read noise or uncertainty: noise estimated from the data as a "
                 "constant sigma of %.4g %s", label, sigma, unit)
        ratio = 1.0
    else:
        predicted = np.sqrt(noise.local(level, sy, sx, work.shape) * _RESIDUAL_VAR)
        ratio = float(_mad_std(resid / predicted))
        log.info("%s: measured / predicted noise = %.3f (%s)", label, ratio, noise.describe())
        if not 1 / _NOISE_TOLERANCE <= ratio <= _NOISE_TOLERANCE:
            warnings.warn(
                f"{label}: the scatter of the data is {ratio:.2f} times what the noise model "
                f"({noise.describe()}) predicts, so thresholds are not in true noise units. "
                "Is the frame bias-subtracted, and are the gain and read noise right?",
                AstropyUserWarning)

    if method == "median":
        flagged, fy, fx, fvar, saturation = _median_method(
            work, bad, noise, threshold, sharpness, grow_threshold, iterations, saturation,
            min_fwhm, sky, label)
        params = dict(threshold=threshold, sharpness=sharpness,
                      grow_threshold=grow_threshold, iterations=iterations,
                      saturation=saturation, min_fwhm=min_fwhm)
    else:
        flagged, extra = _lacosmic(ccd, work, bad, noise, threshold, sharpness,
                                   grow_threshold, iterations, saturation, lacosmic_kwargs)
        fy, fx = np.nonzero(flagged)
        fvar = noise.local(work[fy, fx], fy, fx, work.shape)
        params = dict(threshold=threshold, objlim=sharpness,
                      sigfrac=grow_threshold / threshold, niter=iterations,
                      saturation=saturation, **extra)

    # Masked input pixels go back to their original values: only hits are repaired.
    if len(ys_bad):
        work[ys_bad, xs_bad] = np.asarray(ccd.data)[ys_bad, xs_bad]
    mask = flagged if ccd.mask is None else (np.asarray(ccd.mask, bool) | flagged)
    uncertainty = _repaired_uncertainty(ccd.uncertainty, fy, fx, fvar * _REPAIR_VAR)
    meta = _record(ccd.meta, method, noise, ratio, params, len(fy))
    log.info("%s: %d cosmic-ray pixels flagged (%s)", label, len(fy), method)
    return CCDData(work, unit=unit, mask=mask, uncertainty=uncertainty, meta=meta,
                   wcs=ccd.wcs.deepcopy() if ccd.wcs is not None else None)


def _lacosmic(ccd, work, bad, noise, threshold, sharpness, grow_threshold, iterations,
              saturation, lacosmic_kwargs):
    """Run astroscrappy on ``work`` (repaired in place), with gain and variance in order."""
    import astroscrappy

    kwargs = dict(lacosmic_kwargs or {})
    for key in ("gain", "readnoise", "invar", "inmask", "satlevel", "sigclip", "sigfrac",
                "objlim", "niter"):
        if key in kwargs:
            raise FrameError(f"{frame_label(ccd)}: give {key!r} through clean_cosmic_rays' own "
                             "arguments, not lacosmic_kwargs.")
    if noise.source == "model":
        gain, read_noise, invar = noise.gain, noise.read_noise, None
    else:
        # astroscrappy multiplies data and variance by the gain: with gain 1 the variance
        # stays in data units squared, which is what we give it.
        gain, read_noise = 1.0, 0.0
        invar = (noise.variance if noise.source == "uncertainty"
                 else np.full(work.shape, noise.constant, dtype=np.float32))
    satlevel = np.inf if saturation is None else saturation * gain  # astroscrappy: electrons
    crmask, cleaned = astroscrappy.detect_cosmics(
        work, inmask=bad, invar=invar, sigclip=threshold, sigfrac=grow_threshold / threshold,
        objlim=sharpness, gain=gain, readnoise=read_noise, satlevel=satlevel,
        niter=int(iterations), **kwargs)
    crmask &= ~bad
    # astroscrappy returns the cleaned array divided by the gain again: the input unit.
    work[crmask] = cleaned[crmask]
    return crmask, kwargs


def _repaired_uncertainty(uncertainty, ys, xs, variance):
    if uncertainty is None or uncertainty.array is None:
        return None
    out = uncertainty.__class__(np.array(uncertainty.array, copy=True),
                                unit=uncertainty.unit)
    if len(ys):
        array = out.array
        if isinstance(out, StdDevUncertainty):
            array[ys, xs] = np.sqrt(variance)
        elif isinstance(out, VarianceUncertainty):
            array[ys, xs] = variance
        elif isinstance(out, InverseVariance):
            array[ys, xs] = 1.0 / variance
    return out


def _record(meta, method, noise, ratio, params, nflag):
    cards = [("CRMETHOD", method, "cosmic-ray method (shiftstack_ccd)"),
             ("CRTHRESH", float(params["threshold"]), "cosmic-ray threshold [sigma]"),
             ("CRSHARP", float(params.get("sharpness", params.get("objlim"))),
              "cosmic-ray sharpness / objlim"),
             ("CRGROW", float(params.get("grow_threshold",
                                         params.get("sigfrac", 0) * params["threshold"])),
              "cosmic-ray growing threshold [sigma]"),
             ("CRNITER", int(params.get("iterations", params.get("niter"))),
              "cosmic-ray iterations"),
             ("CRNFLAG", nflag, "pixels flagged as cosmic rays"),
             ("CRNOISE", noise.source, "cosmic-ray noise from: model/uncertainty/data"),
             ("CRNSRAT", round(float(ratio), 4), "measured / predicted noise")]
    text = ", ".join(f"{k}={v}" for k, v in params.items())
    history = (f"clean_cosmic_rays: method={method}, {text}; noise: {noise.describe()}; "
               f"{nflag} pixels flagged")
    if isinstance(meta, fits.Header):
        out = meta.copy()
    else:
        try:
            out = fits.Header(dict(meta or {}))
        except (ValueError, TypeError, KeyError):
            out = dict(meta or {})
            for key, value, _ in cards:
                out[key] = value
            out["HISTORY"] = history
            return out
    for key, value, comment in cards:
        out[key] = (value, comment)
    out.add_history(history)
    return out
