# Licensed under a 3-clause BSD style license - see LICENSE
"""CCD calibration through ccdproc: overscan, trim, master bias and flat, the error array.

Plain functions, `~astropy.nddata.CCDData` in and a new CCDData out, in ccdproc's own
order (as `ccdproc.ccd_process`): overscan, trim, error (gain and read noise), bias, flat.
Pipeline files (``[calibration]``) call them frame by frame; a script can call them too.
They only wrap ccdproc: what they add is reading calibration frames that have no time or
WCS, and combining masters the way the pipeline always has.
"""

import logging
import warnings

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning

from ._utils import set_card
from .exceptions import FrameError
from .frames import read_frame

__all__ = ["calibrate_frame", "calibrate_from_header", "combine_bias", "combine_dark",
           "combine_flat", "read_calibration_frame", "read_masters",
           "subtract_overscan_and_trim"]

log = logging.getLogger(__name__)


def read_calibration_frame(path, hdu=None, unit=None):
    """Read a bias or flat frame: `~shiftstack_ccd.frames.read_frame` when its header
    allows, else the plain pixels (a calibration frame needs neither a time nor a WCS).

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The FITS file.
    hdu : int or str, optional
        The extension (default: the first with data).
    unit : str or `~astropy.units.Unit`, optional
        The data unit when the header has none (default ``adu`` for plain pixels).

    Returns
    -------
    ccd : `~astropy.nddata.CCDData`
        float32 data; ``SSFILE`` names the file.
    """
    try:
        return read_frame(path, hdu=hdu, unit=unit)
    except FrameError as exc:
        log.info("%s: %s; read as a plain calibration frame", path, exc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            ccd = CCDData.read(path, hdu=hdu or 0, unit=unit or "adu")
        ccd.data = ccd.data.astype("float32")
        ccd.wcs = None
        set_card(ccd.meta, "SSFILE", str(path), "file this frame was read from")
        return ccd


def subtract_overscan_and_trim(ccd, overscan=None, trim=None, *, overscan_median=True,
                               overscan_polynomial=None):
    """Subtract the overscan (`ccdproc.subtract_overscan`) and trim (`ccdproc.trim_image`).

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The raw frame (not modified).
    overscan, trim : str, optional
        FITS sections (1-based, inclusive, e.g. ``'[1:1370, 1433:1482]'``); None skips.
    overscan_median : bool
        Collapse the overscan with the median (else the mean).
    overscan_polynomial : int, optional
        Degree of a polynomial fitted along the overscan (default: none, each row's value).

    Returns
    -------
    ccd : `~astropy.nddata.CCDData`
        A new frame, with ccdproc's keywords added to its header.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from shiftstack_ccd.calibration import subtract_overscan_and_trim
    >>> raw = CCDData(np.full((10, 12), 100.0), unit="adu")
    >>> raw.data[:, 10:] = 90.0
    >>> out = subtract_overscan_and_trim(raw, overscan="[11:12, 1:10]", trim="[1:10, 1:10]")
    >>> out.shape, float(out.data.mean())
    ((10, 10), 10.0)
    """
    import ccdproc
    from astropy.modeling.models import Polynomial1D

    out = ccd
    if overscan:
        out = ccdproc.subtract_overscan(
            out, fits_section=overscan, median=overscan_median,
            model=None if overscan_polynomial is None else Polynomial1D(overscan_polynomial))
    if trim:
        out = ccdproc.trim_image(out, fits_section=trim)
    return out if out is not ccd else ccd.copy()  # always a new frame (the step contract)


def combine_bias(frames):
    """Master bias: the median of the (overscan-subtracted, trimmed) bias frames.

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData`

    Returns
    -------
    bias : `~astropy.nddata.CCDData`
        The frame itself when there is only one.
    """
    import ccdproc

    return frames[0] if len(frames) == 1 else ccdproc.combine(frames, method="median")


def combine_dark(frames, bias=None):
    """Master dark: each dark bias-subtracted, median-combined, with its exposure time.

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData`
        Overscan-subtracted, trimmed darks of the same exposure time (``EXPTIME``).
    bias : `~astropy.nddata.CCDData`, optional
        Master bias subtracted from each dark first.

    Returns
    -------
    dark : `~astropy.nddata.CCDData`
        ``EXPTIME`` in its header, so `calibrate_frame` can scale it to each frame's.
    """
    import ccdproc

    if bias is not None:
        frames = [ccdproc.subtract_bias(dark, bias) for dark in frames]
    exptimes = {float(f.meta.get("EXPTIME", np.nan)) for f in frames}
    if len(exptimes) != 1 or not np.isfinite(next(iter(exptimes))):
        raise FrameError(f"darks to combine need one common EXPTIME; found {sorted(exptimes)} "
                         f"in {[f.meta.get('SSFILE', '?') for f in frames]}.")
    if len(frames) == 1:
        return frames[0]
    dark = ccdproc.combine(frames, method="median")
    dark.meta["EXPTIME"] = exptimes.pop()
    return dark


def combine_flat(frames, bias=None):
    """Master flat: each flat bias-subtracted, scaled to a median of 1, median-combined.

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData`
        Overscan-subtracted, trimmed flats.
    bias : `~astropy.nddata.CCDData`, optional
        Master bias subtracted from each flat first.

    Returns
    -------
    flat : `~astropy.nddata.CCDData`
        The (bias-subtracted) frame itself when there is only one; `ccdproc.flat_correct`
        normalises it.
    """
    import ccdproc

    if bias is not None:
        frames = [ccdproc.subtract_bias(flat, bias) for flat in frames]
    return frames[0] if len(frames) == 1 else ccdproc.combine(
        frames, method="median", scale=lambda a: 1 / np.ma.median(a))


def calibrate_frame(ccd, *, overscan=None, trim=None, overscan_median=True,
                    overscan_polynomial=None, gain=None, read_noise=None, bias=None, flat=None,
                    flat_min=None, dark=None):
    """Calibrate one frame in ccdproc's order: overscan, trim, error, bias, dark, flat.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The raw frame (not modified).
    overscan, trim, overscan_median, overscan_polynomial
        As for `subtract_overscan_and_trim`.
    gain : float, optional
        Electrons per data unit; with ``read_noise`` (electrons), the uncertainty is made by
        `ccdproc.create_deviation` (negative pixels get the read noise alone).
    read_noise : float, optional
        Read noise in electrons.
    bias, flat : `~astropy.nddata.CCDData`, optional
        Master bias and flat (`combine_bias`, `combine_flat`).
    dark : `~astropy.nddata.CCDData`, optional
        Master dark (`combine_dark`), scaled by the ratio of the frames' ``EXPTIME``.
    flat_min : float, optional
        Flat values below this are raised to it (`ccdproc.flat_correct`'s ``min_value``).

    Returns
    -------
    ccd : `~astropy.nddata.CCDData`
        A new, calibrated frame.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from shiftstack_ccd.calibration import calibrate_frame
    >>> raw = CCDData(np.full((8, 8), 110.0), unit="adu")
    >>> bias = CCDData(np.full((8, 8), 10.0), unit="adu")
    >>> out = calibrate_frame(raw, gain=2.0, read_noise=4.0, bias=bias)
    >>> float(out.data[0, 0])
    100.0

    The error is that of the raw 110 adu (made before the bias is subtracted, as in
    ccdproc), sqrt(110 * 2 + 4 ** 2) / 2:

    >>> round(float(out.uncertainty.array[0, 0]), 3)
    7.681
    """
    import ccdproc

    ccd = subtract_overscan_and_trim(ccd, overscan, trim, overscan_median=overscan_median,
                                     overscan_polynomial=overscan_polynomial)
    if gain is not None:
        # Negative pixels get the read noise alone (disregard_nan), not a NaN error.
        ccd = ccdproc.create_deviation(ccd, gain=gain * u.electron / ccd.unit,
                                       readnoise=read_noise * u.electron, disregard_nan=True)
    if bias is not None:
        ccd = ccdproc.subtract_bias(ccd, bias)
    if dark is not None:
        ccd = ccdproc.subtract_dark(ccd, dark, exposure_time="EXPTIME", exposure_unit=u.s,
                                    scale=True)
    if flat is not None:
        ccd = ccdproc.flat_correct(ccd, flat, min_value=flat_min)
    return ccd  # a new frame: subtract_overscan_and_trim made one


def _header_sections(ccd):
    """``BIASSEC`` and ``TRIMSEC`` of a raw frame, when its header has them."""
    from .noise import overscan_level
    if overscan_level(ccd) is None:  # no overscan in the frame (trimmed, or calibrated)
        return {"overscan": None, "trim": None}
    return {"overscan": str(ccd.meta["BIASSEC"]).strip(),
            "trim": str(ccd.meta["TRIMSEC"]).strip() if "TRIMSEC" in ccd.meta else None}


def read_masters(bias=(), dark=(), flat=(), hdu=None, unit=None):
    """Master bias, dark and flat from files (overscan and trim from each file's header).

    Parameters
    ----------
    bias, dark, flat : sequence of paths
        The calibration frames; several of a kind are combined (`combine_bias`,
        `combine_dark`, `combine_flat`), darks and flats after subtracting the bias.
    hdu, unit
        As for `read_calibration_frame`.

    Returns
    -------
    masters : dict
        ``bias``, ``dark``, ``flat``: `~astropy.nddata.CCDData` or None.
    """
    def prepared(paths):
        frames = []
        for path in paths:
            ccd = read_calibration_frame(path, hdu=hdu, unit=unit)
            frames.append(subtract_overscan_and_trim(ccd, **_header_sections(ccd)))
        return frames

    masters = {"bias": None, "dark": None, "flat": None}
    if bias:
        masters["bias"] = combine_bias(prepared(bias))
    if dark:
        masters["dark"] = combine_dark(prepared(dark), bias=masters["bias"])
    if flat:  # bias-subtracted; the dark current of a flat's short exposure is neglected
        masters["flat"] = combine_flat(prepared(flat), bias=masters["bias"])
    return masters


def calibrate_from_header(ccd, bias=None, dark=None, flat=None, flat_min=None):
    """`calibrate_frame` with the overscan and trim sections of the frame's own header.

    A per-frame step for `~shiftstack_ccd.shift_and_stack` (``stack --bias/--dark/--flat``):
    ``BIASSEC`` and ``TRIMSEC`` are used when the frame still has its overscan; the noise
    model is left to the stack (its gain and read noise, and the measured pixel noise).

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> raw = CCDData(np.full((4, 6), 1100.0), unit="adu",
    ...               meta={"BIASSEC": "[5:6,1:4]", "TRIMSEC": "[1:4,1:4]"})
    >>> raw.data[:, 4:] = 100.0
    >>> out = calibrate_from_header(raw)
    >>> out.shape, float(out.data.mean())
    ((4, 4), 1000.0)
    """
    return calibrate_frame(ccd, **_header_sections(ccd), bias=bias, dark=dark, flat=flat,
                           flat_min=flat_min)
