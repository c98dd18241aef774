# Licensed under a 3-clause BSD style license - see LICENSE
"""The noise of a frame that comes without one: a detector model, checked against the data.

A frame without an uncertainty gets one from, in order of preference:

1. **a detector model**, when the gain is known (a ``gain`` argument, a header card of
   `GAIN_KEYS`, or data in electrons): ``var = max(level - bias, 0) / gain +
   (read_noise / gain) ** 2`` in data units, with the read noise from an argument or a card
   of `READ_NOISE_KEYS` (else 0, logged) and the bias level from an argument, else the median
   of the overscan (``BIASSEC``) of a raw frame, else 0 (a calibrated frame). Poisson noise
   is that of the signal above the bias.
2. **a local estimate** otherwise: the pixel noise of the sky measured in boxes
   (`photutils.background.Background2D` on the differences of neighbouring pixels, sources
   masked), smoothly interpolated. It does not include a source's own photon noise.

Never the global scatter of the frame: on a raw Lowell 42-inch frame that is 76.9 ADU, four
times the pixel noise (17.8 ADU), because the overscan, the vignetting and the unflattened dust
rings count as "noise" (DESIGN.md, pitfalls).

The model is checked against the data: the **measured pixel noise** of the sky is the robust
standard deviation (the biweight scale) of the differences of horizontally neighbouring
sky pixels, over sqrt(2) (insensitive to anything smoother than a pixel), and the model's is
the square root of the median model variance over the same pixels. Their ratio is reported
per frame; for a detector model the variance is then scaled by its square (``noise_scale``),
so the uncertainties follow the data. On the ten raw Lowell frames the header gain (4.95 e-/ADU,
``AGAIN_01``) with 9.3 e- read noise predicts 0.86-0.88 of the measured noise: either the gain
is about 25% lower than the header says, or the unflattened pixel response adds a few per cent
per pixel; both scale with the level, as the correction does. A ratio beyond `NOISE_TOLERANCE`
either way is warned about (a gain card is probably wrong). Detectors whose neighbouring pixels
share noise (interpolated CMOS, drizzled products) would fool the measure: give those frames an
uncertainty.
"""

import logging
import re
import warnings

import numpy as np
from astropy import units as u
from astropy.nddata import StdDevUncertainty
from astropy.utils.exceptions import AstropyUserWarning

from ._utils import frame_label
from .exceptions import FrameError

__all__ = ["GAIN_KEYS", "NOISE_TOLERANCE", "READ_NOISE_KEYS", "NoiseModel", "add_uncertainty",
           "header_number", "mask_outside_trimsec", "model_uncertainty", "noise_model",
           "overscan_level", "pixel_noise"]

log = logging.getLogger(__name__)

#: Header cards holding the gain (electrons per data unit), in order of preference.
GAIN_KEYS = ("GAIN", "EGAIN", "CCDGAIN", "AGAIN_01")
#: Header cards holding the read noise (electrons), in order of preference.
READ_NOISE_KEYS = ("RDNOISE", "READNOIS", "RON", "ENOISE", "ARDNS_01")
#: Measured / model pixel noise beyond this factor (either way) is warned about.
NOISE_TOLERANCE = 1.3

# Keys ccdproc writes when it subtracts a bias or an overscan (log_to_metadata): the frame's
# level is then already above the bias.
_BIAS_DONE = ("subtract_bias", "subtract_overscan", "SUBBIAS", "OVERSCAN")
_SECTION = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")


def header_number(meta, keys, label, what, allow_zero=False):
    """The first of ``keys`` present in ``meta``, as a float: ``(key, value)`` or ``(None, None)``.

    A card that is present but nonsense (not a number, not finite, negative, or zero unless
    ``allow_zero``) is an error naming the frame and the card, not something to skip: the
    next card would silently give another detector's value.

    Examples
    --------
    >>> header_number({"GAIN": 2.5}, GAIN_KEYS, "f.fits", "gain")
    ('GAIN', 2.5)
    >>> header_number({"GAIN": "n/a"}, GAIN_KEYS, "f.fits", "gain")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    shiftstack_ccd.exceptions.FrameError: f.fits: header card GAIN = 'n/a' is not a usable ...
    """
    for key in keys:
        if key not in meta:
            continue
        raw = meta[key]
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = np.nan
        if isinstance(raw, bool) or not np.isfinite(value) or value < 0 or \
                (value == 0 and not allow_zero):
            kind = "a non-negative number" if allow_zero else "a positive number"
            raise FrameError(f"{label}: header card {key} = {raw!r} is not a usable {what} "
                             f"({kind}); fix the card or give the {what} as an argument.")
        return key, value
    return None, None


def _section(text, shape):
    """0-based (row slice, column slice) of a FITS section ``[x1:x2,y1:y2]`` inside ``shape``,
    or None when it is not one or does not fit (e.g. the frame was trimmed)."""
    match = _SECTION.match(str(text)) if text is not None else None
    if match is None:
        return None
    x1, x2, y1, y2 = (int(v) for v in match.groups())
    if not (1 <= x1 <= x2 <= shape[1] and 1 <= y1 <= y2 <= shape[0]):
        return None
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def overscan_level(ccd):
    """Median of a raw frame's overscan (``BIASSEC``), or None.

    None when there is no ``BIASSEC`` card, when it does not fit in the frame (trimmed), or
    when ccdproc already subtracted a bias or an overscan.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> data = np.full((4, 6), 1000.0)
    >>> data[:, 4:] = 300.0
    >>> float(overscan_level(CCDData(data, unit="adu", meta={"BIASSEC": "[5:6,1:4]"})))
    300.0
    """
    meta = ccd.meta or {}
    if any(key in meta for key in _BIAS_DONE):
        return None
    region = _section(meta.get("BIASSEC"), ccd.shape)
    if region is None:
        return None
    values = np.asarray(ccd.data[region], dtype=float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else None


def mask_outside_trimsec(ccd):
    """``ccd`` with the pixels outside ``TRIMSEC`` (prescan, overscan) of a raw frame masked.

    A new `~astropy.nddata.CCDData` sharing the data (not a copy); ``ccd`` itself when the
    frame has no ``TRIMSEC``/``BIASSEC`` pair that fits it (e.g. it was trimmed).

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> raw = CCDData(np.ones((4, 6)), unit="adu",
    ...               meta={"TRIMSEC": "[1:4,1:4]", "BIASSEC": "[5:6,1:4]"})
    >>> mask_outside_trimsec(raw).mask.sum(axis=0).tolist()
    [0, 0, 0, 0, 4, 4]
    """
    meta = ccd.meta or {}
    if _section(meta.get("BIASSEC"), ccd.shape) is None:
        return ccd  # not a raw frame with its overscan: TRIMSEC no longer applies
    region = _section(meta.get("TRIMSEC"), ccd.shape)
    if region is None:
        return ccd
    outside = np.ones(ccd.shape, dtype=bool)
    outside[region] = False
    if ccd.mask is not None:
        outside |= np.asarray(ccd.mask, dtype=bool)
    return type(ccd)(ccd.data, unit=ccd.unit, wcs=ccd.wcs, meta=ccd.meta, mask=outside,
                     uncertainty=ccd.uncertainty)


class NoiseModel:
    """How a frame's noise is known: ``kind`` is 'given', 'detector' or 'local'.

    Made by `noise_model`; applied by `add_uncertainty`. Attributes: ``gain`` (e- per data
    unit) and ``gain_source`` (card name, 'argument' or 'unit'), ``read_noise`` (e-) and
    ``read_noise_source``, ``bias`` (data units) and ``bias_source`` ('argument',
    'overscan' or 'none').
    """

    def __init__(self, kind, gain=None, gain_source=None, read_noise=None,
                 read_noise_source=None, bias=0.0, bias_source="none"):
        self.kind = kind
        self.gain, self.gain_source = gain, gain_source
        self.read_noise, self.read_noise_source = read_noise, read_noise_source
        self.bias, self.bias_source = bias, bias_source

    def describe(self):
        if self.kind == "detector":
            return (f"gain {self.gain:.4g} e-/unit ({self.gain_source}), read noise "
                    f"{self.read_noise:.4g} e- ({self.read_noise_source}), bias "
                    f"{self.bias:.6g} ({self.bias_source}), Poisson above the bias")
        if self.kind == "local":
            return "local pixel noise of the sky (Background2D of neighbour differences)"
        return "the frame's own uncertainty"


def _as_float(value, unit):
    if isinstance(value, u.Quantity):
        return float(value.to_value(unit))
    return float(value)


def noise_model(ccd, gain=None, read_noise=None, bias=None, label=None):
    """Decide how the noise of ``ccd`` is known (cheap: header cards and the overscan).

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame, untrimmed if raw (the overscan gives the bias level).
    gain : float or `~astropy.units.Quantity`, optional
        Electrons per data unit; overrides the header.
    read_noise : float or `~astropy.units.Quantity`, optional
        Electrons; overrides the header.
    bias : float, optional
        Bias level in data units; overrides the overscan.
    label : str, optional
        Name of the frame in messages.

    Returns
    -------
    model : `NoiseModel`

    Raises
    ------
    FrameError
        A nonsense gain or read-noise card or argument; the message names the frame and card.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> frame = CCDData(np.zeros((4, 4)), unit="adu", meta={"GAIN": 2.0, "RDNOISE": 5.0})
    >>> noise_model(frame).describe()
    'gain 2 e-/unit (GAIN), read noise 5 e- (RDNOISE), bias 0 (none), Poisson above the bias'
    """
    label = label or frame_label(ccd)
    if ccd.uncertainty is not None:
        return NoiseModel("given")
    meta = ccd.meta or {}
    unit = ccd.unit if ccd.unit is not None else u.adu
    if gain is not None:
        if isinstance(gain, u.Quantity):
            gain = gain.to_value(u.electron / (u.adu if unit in (u.adu, u.count) else unit),
                                 equivalencies=[(u.adu, u.count)])
        gain_key, gain = header_number({"gain": gain}, ["gain"], label, "gain")
        gain_key = "argument"
    elif unit.is_equivalent(u.electron):
        gain_key, gain = "unit", float(u.electron.to(unit))
    else:
        gain_key, gain = header_number(meta, GAIN_KEYS, label, "gain")
    if gain is None:
        log.info("%s: no gain (argument, header card or electron unit): the noise is "
                 "estimated locally from the sky", label)
        return NoiseModel("local")
    if read_noise is not None:
        _, rn = header_number({"rn": _as_float(read_noise, u.electron)}, ["rn"], label,
                              "read noise", allow_zero=True)
        rn_key = "argument"
    else:
        rn_key, rn = header_number(meta, READ_NOISE_KEYS, label, "read noise", allow_zero=True)
    if rn is None:
        rn_key, rn = "assumed", 0.0
        log.info("%s: no read noise given or in the header; assuming 0", label)
    if bias is not None:
        bias_value, bias_source = _as_float(bias, unit), "argument"
    else:
        bias_value = overscan_level(ccd)
        bias_source = "overscan" if bias_value is not None else "none"
        bias_value = 0.0 if bias_value is None else bias_value
    return NoiseModel("detector", gain, gain_key, rn, rn_key, bias_value, bias_source)


def pixel_noise(data, good):
    """Robust pixel noise: biweight scale of horizontal neighbour differences / sqrt 2.

    Only pairs of ``good`` pixels count. Returns NaN when fewer than 20 pairs are left.
    The biweight scale (`~astropy.stats.biweight_scale`) rather than the MAD: raw frames are
    integers, and the MAD of integer differences is itself an integer (17.8 ADU could only
    come out as 16.0 or 17.5), while the biweight is continuous and nearly as efficient as
    the standard deviation.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ramp = np.add.outer(np.arange(200.0), np.arange(200.0)) * 50  # smooth: ignored
    >>> data = ramp + rng.normal(0, 3.0, (200, 200))
    >>> round(float(pixel_noise(data, np.ones(data.shape, bool))), 1)
    3.0
    """
    data = np.asarray(data, dtype=float)
    pairs = good[:, 1:] & good[:, :-1]
    if pairs.sum() < 20:
        return np.nan
    return float(_biweight_scale((data[:, 1:] - data[:, :-1])[pairs]) / np.sqrt(2))


def _biweight_scale(values, c=9.0):
    """`~astropy.stats.biweight_scale` of a 1-D array of finite values (same formula, same
    defaults; equal to ~1e-15).

    Written here for speed: astropy's takes the median three times (its MAD takes its own)
    and raises ``1 - u**2`` to the fourth power with `numpy.power` over every value, 6 ms
    for the 110 000 differences of a 331-pixel cutout, twice a frame; this takes 4.
    """
    d = values - np.median(values)
    mad = np.median(np.abs(d))
    if not mad > 0:  # constant data: astropy gives 0 (and NaN for NaN)
        return float(mad)
    u = d / (c * mad)
    keep = np.abs(u) < 1
    d, u2 = d[keep], u[keep] ** 2
    w = 1.0 - u2
    denominator = np.sum(w * (1.0 - 5.0 * u2))
    w *= w
    w *= d  # d (1 - u**2)**2: its sum of squares is astropy's sum of d**2 (1 - u**2)**4
    w *= w  # (not np.dot: the BLAS's threads would spin on, costing CPU time after the call)
    return float(np.sqrt(values.size * np.sum(w)) / abs(denominator))


def _local_sigma(data, good, label):
    """Sky pixel noise in boxes, interpolated over the frame (the 'local' model)."""
    from photutils.background import Background2D, MADStdBackgroundRMS, MedianBackground
    diff = np.zeros(data.shape)
    diff[:, :-1] = (data[:, 1:] - data[:, :-1]) / np.sqrt(2)
    pairs = np.zeros(data.shape, dtype=bool)
    pairs[:, :-1] = good[:, 1:] & good[:, :-1]
    box = min(32, *data.shape)  # 1000 pixels give the noise to 3%; the sky level needs more
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            bkg = Background2D(diff, box, mask=~pairs, exclude_percentile=50,
                               bkg_estimator=MedianBackground(),
                               bkg_rms_estimator=MADStdBackgroundRMS())
    except ValueError as exc:
        raise FrameError(f"{label}: no uncertainty, no gain, and too few unmasked sky pixels "
                         f"to measure the noise locally ({exc}).") from None
    return np.asarray(bkg.background_rms, dtype=float)


def model_uncertainty(ccd, model=None, sky=None, label=None, warn=True):
    """The standard deviation `add_uncertainty` gives ``ccd``, and what was measured,
    without making a new frame.

    Parameters (``warn`` too) and ``info`` as for `add_uncertainty`.

    Returns
    -------
    sigma : `~numpy.ndarray` or None
        Standard deviation per pixel (the data's float type); None for a ``'given'`` model
        (the frame keeps its own uncertainty).
    info : dict
        As for `add_uncertainty`.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> rng = np.random.default_rng(0)
    >>> frame = CCDData(rng.poisson(400.0, (50, 50)).astype(float), unit="adu",
    ...                 meta={"GAIN": 1.0})
    >>> sigma, info = model_uncertainty(frame, noise_model(frame))
    >>> round(float(np.median(sigma))), info["noise_model"]
    (20, 'detector')
    """
    label = label or frame_label(ccd)
    model = model or noise_model(ccd, label=label)
    data = np.asarray(ccd.data)
    bad = ~np.isfinite(data)
    if ccd.mask is not None:
        bad |= np.asarray(ccd.mask, dtype=bool)
    good = ~bad if sky is None else (~bad & sky)
    if not good.any():
        raise FrameError(f"{label}: every pixel is masked or not finite; no noise can be "
                         "measured.")
    measured = pixel_noise(data, good)
    info = {"noise_model": model.kind, "gain": model.gain or np.nan,
            "read_noise": np.nan if model.read_noise is None else model.read_noise,
            "bias": model.bias, "bias_source": model.bias_source, "pixel_noise": measured,
            "noise_scale": 1.0}
    dtype = data.dtype if data.dtype.kind == "f" else np.float32
    if model.kind == "given":
        variance = np.asarray(ccd.uncertainty.represent_as(StdDevUncertainty).array,
                              dtype=float) ** 2
    elif model.kind == "detector":
        g, rn = model.gain, model.read_noise
        variance = np.maximum(data - model.bias, 0) / g + (rn / g) ** 2
    else:
        sigma = _local_sigma(data, good, label)
        variance = sigma ** 2
    with np.errstate(invalid="ignore"):
        predicted = float(np.sqrt(np.median(variance[good])))
    info["model_noise"] = predicted
    info["noise_ratio"] = ratio = measured / predicted if predicted > 0 else np.nan
    if model.kind == "detector" and np.isfinite(ratio) and ratio > 0:
        info["noise_scale"] = ratio
        variance = variance * ratio ** 2
    if warn and np.isfinite(ratio) and not 1 / NOISE_TOLERANCE <= ratio <= NOISE_TOLERANCE:
        warnings.warn(f"{label}: the measured pixel noise of the sky is {ratio:.2f} times what "
                      f"the noise model predicts ({model.describe()}); "
                      + ("the model is scaled to the data (check the gain card)"
                         if model.kind == "detector" else "check the frame's uncertainty"),
                      AstropyUserWarning)
    log.info("%s: noise: %s; measured pixel noise %.4g, model %.4g (ratio %.3f)", label,
             model.describe(), measured, predicted, ratio)
    if model.kind == "given":
        return None, info
    return np.sqrt(variance).astype(dtype), info


def add_uncertainty(ccd, model=None, sky=None, label=None, warn=True):
    """A copy of ``ccd`` with an uncertainty from ``model``, and what was measured.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame (or a cutout of it).
    model : `NoiseModel`, optional
        From `noise_model` (default: made from ``ccd``).
    sky : ndarray of bool, optional
        Pixels of empty sky (sources masked) where the pixel noise is measured; default all
        unmasked finite pixels.
    label : str, optional
        Name of the frame in messages.
    warn : bool
        Warn when the measured noise and the model's differ by more than
        `NOISE_TOLERANCE` either way (`~shiftstack_ccd.shift_and_stack` says it once for
        all its frames instead).

    Returns
    -------
    frame : `~astropy.nddata.CCDData`
        A new frame: the input's uncertainty if it had one, else a
        `~astropy.nddata.StdDevUncertainty` from the model. ``ccd`` is not modified.
    info : dict
        ``noise_model`` (kind), ``gain``, ``read_noise``, ``bias``, ``bias_source``,
        ``pixel_noise`` (measured, data units), ``model_noise`` (the model's, before scaling),
        ``noise_ratio`` (measured / model) and ``noise_scale`` (applied to the model's
        standard deviation).

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> rng = np.random.default_rng(1)
    >>> data = rng.poisson(400.0, (100, 100)) / 2.0 + 100.0  # gain 2, bias 100
    >>> frame = CCDData(data, unit="adu", meta={"GAIN": 2.0, "RDNOISE": 0.0})
    >>> noisy, info = add_uncertainty(frame, noise_model(frame, bias=100.0))
    >>> round(float(np.median(noisy.uncertainty.array))), round(info["noise_ratio"], 1)
    (10, 1.0)
    """
    sigma, info = model_uncertainty(ccd, model, sky, label, warn)
    out = ccd.copy()
    if sigma is not None:
        out.uncertainty = StdDevUncertainty(sigma)
    return out, info
