# Licensed under a 3-clause BSD style license - see LICENSE
"""Private helpers shared by several modules."""

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from .exceptions import FrameError, OutputExistsError

__all__ = []


def frame_label(ccd, index=None):
    """Return a short human name for a frame: its file name, else its index."""
    meta = getattr(ccd, "meta", None) or {}
    name = meta.get("SSFILE")
    if name:
        return str(name)
    return f"frame #{index}" if index is not None else "frame"


def require_celestial_wcs(ccd, step, index=None):
    """Return the frame's celestial WCS or raise a `FrameError` that names it.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame.
    step : str
        The name of the step that needs the WCS, for the message.
    index : int, optional
        Position of the frame in its list, used when it has no file name.
    """
    wcs = getattr(ccd, "wcs", None)
    if wcs is None or not wcs.has_celestial:
        hint = ""
        meta = getattr(ccd, "meta", None) or {}
        if "OBJCTRA" in meta or "RA" in meta:
            hint = (" The header has only a pointing (OBJCTRA/OBJCTDEC or RA/DEC), which is "
                    "not a WCS.")
        raise FrameError(
            f"{frame_label(ccd, index)}: has no celestial WCS, and '{step}' needs one."
            f"{hint} Solve the frame (e.g. astrometry.net or SCAMP) or give it a WCS first.")
    return wcs.celestial


@contextlib.contextmanager
def atomic_output(path, overwrite=False):
    """Write a file atomically: yield a temporary path, rename it on success.

    The temporary file lives in the destination folder, so the final rename is
    atomic on POSIX file systems; on any error it is removed and an existing
    file at ``path`` is left untouched.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The final name.
    overwrite : bool
        Replace an existing file. If False and ``path`` exists,
        `~shiftstack_ccd.exceptions.OutputExistsError` is raised before anything is written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists; pass overwrite=True (or --overwrite) "
                                "to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_finite_fraction(ccd, label):
    """Refuse a frame whose pixels are all masked or non-finite."""
    good = np.isfinite(ccd.data)
    if ccd.mask is not None:
        good &= ~ccd.mask
    if not good.any():
        raise FrameError(f"{label}: every pixel is masked or not finite; nothing to use.")
    return good


def as_header(meta):
    """A new `~astropy.io.fits.Header` from a CCDData's meta (a Header or a dict).

    Dict values may be ``(value, comment)`` pairs, as FITS cards take them.
    """
    from astropy.io import fits
    if isinstance(meta, fits.Header):
        return meta.copy()
    header = fits.Header()
    for key, value in (meta or {}).items():
        header[key] = value
    return header


def set_card(header, key, value, comment=""):
    """Set a header card, shortening the comment (never the value) to fit one 80-char card."""
    from astropy.io import fits
    bare = fits.Card(key, value).image
    if len(bare) <= 80:  # a long string value continues on CONTINUE cards: leave it
        comment = comment[:max(80 - len(bare.rstrip()) - 3, 0)]  # 3 for " / "
    header[key] = (value, comment) if comment else value


def data_and_mask(ccd):
    """Float data of a frame (or an array) and its bad-pixel mask (masked or not finite)."""
    data = np.asarray(getattr(ccd, "data", ccd), dtype=float)
    mask = ~np.isfinite(data)
    if getattr(ccd, "mask", None) is not None:
        mask |= np.asarray(ccd.mask, dtype=bool)
    return data, mask
