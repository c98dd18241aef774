# Licensed under a 3-clause BSD style license - see LICENSE
"""The noise model of a frame for cosmic-ray detection (private): detector gain and read
noise from arguments, uncertainty or header, else a variance model measured on the frame."""

import logging

import numpy as np
from astropy import units as u
from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty

from ..exceptions import FrameError
from ..noise import GAIN_KEYS, READ_NOISE_KEYS
from ..noise import header_number as detector_card
from ._ring import RING1, RING3, gather, median24, median8

log = logging.getLogger(__name__)


#: Header cards holding the saturation level (data units).
SATURATION_KEYS = ("SATURATE", "SATLEVEL", "SATURATN")


class Noise:
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
            return median24(gather(self.variance, ys, xs, RING3))
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
            return median8(gather(self.variance, ys, xs, RING1, by_offset=True))
        return self.at_level(level)


def as_gain(gain, unit, label):
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


def header_number(meta, keys):
    """The first usable positive number among ``keys`` (saturation cards; the gain and read
    noise cards go through `shiftstack_ccd.noise.header_number`, which refuses nonsense)."""
    for key in keys:
        if key in meta:
            try:
                value = float(meta[key])
            except (TypeError, ValueError):
                continue
            if np.isfinite(value) and value > 0:
                return key, value
    return None, None


def variance_image(uncertainty, dtype):
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


def noise_model(ccd, gain, read_noise, label, dtype):
    """Choose the noise model: arguments, then uncertainty, then header, then the data.

    Returns None when nothing is known (the caller then measures a constant sigma).
    """
    unit = ccd.unit if ccd.unit is not None else u.adu
    in_electrons = unit.is_equivalent(u.electron)
    meta = ccd.meta or {}

    if gain is not None:
        gain = as_gain(gain, unit, label)
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
        return detector_card(meta, GAIN_KEYS, label, "gain")

    def model(gain_key, gain, rn_key, rn):
        if rn is None:
            rn_key, rn = detector_card(meta, READ_NOISE_KEYS, label, "read noise",
                                       allow_zero=True)
        if rn is None:
            rn_key, rn = "assumed", 0.0
            log.info("%s: no read noise given or in the header; assuming 0", label)
        log.info("%s: noise model: gain %.4g e-/unit (%s), read noise %.4g e- (%s)",
                 label, gain, gain_key, rn, rn_key)
        return Noise("model", gain=gain, read_noise=rn)

    # 1. Arguments (a read noise alone takes the gain from the unit or the header).
    if gain is not None or read_noise is not None:
        gain_key, gain_value = ("argument", gain) if gain is not None else header_gain()
        if gain_value is not None:
            return model(gain_key, gain_value, "argument" if read_noise is not None else None,
                         read_noise)
        log.info("%s: read_noise given but no gain (argument, header or electron unit); "
                 "it is not used", label)

    # 2. The frame's own uncertainty.
    variance = variance_image(ccd.uncertainty, dtype)
    if variance is not None:
        good = np.isfinite(variance) & (variance > 0)
        if good.any():
            if not good.all():
                variance = np.where(good, variance, np.median(variance[good]))
            log.info("%s: noise from the frame's uncertainty", label)
            return Noise("uncertainty", variance=variance.astype(dtype, copy=False))

    # 3. Header cards (or the unit, for data in electrons).
    gain_key, gain_value = header_gain()
    if gain_value is not None:
        return model(gain_key, gain_value, None, None)
    return None
