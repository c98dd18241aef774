# Licensed under a 3-clause BSD style license - see LICENSE
"""Private helpers shared by several modules."""

import contextlib
import os
import stat
import tempfile
from pathlib import Path

import numpy as np

from .exceptions import FrameError, OutputError, OutputExistsError

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


def _umask():
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def _first_existing(path):
    for parent in [path, *path.parents]:
        if parent.exists() or parent.is_symlink():
            return parent
    return Path(".")


def check_output_path(path, overwrite=False, inputs=(), what="output", create=True):
    """Refuse, before anything is computed, an output that cannot or must not be written.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The output file.
    overwrite : bool
        Whether an existing file may be replaced.
    inputs : iterable of str or path
        Files read by the same job: an output that is one of them (after resolving links)
        is refused even with ``overwrite``; inputs are never replaced.
    what : str
        What the output is called in messages (an option name such as ``--output``).
    create : bool
        Create the output's folder now (it would be anyway) and try a file in it; without,
        nothing is made and the nearest existing folder must be writable.

    Returns
    -------
    path : `~pathlib.Path`

    Raises
    ------
    OutputError
        The output is an input, a folder, under a file, or in a folder that cannot be written.
    OutputExistsError
        It exists and ``overwrite`` is False.
    """
    path = Path(path)
    resolved = path.resolve()
    for source in inputs:
        if isinstance(source, (str, Path)) and Path(source).resolve() == resolved:
            raise OutputError(f"{path}: the {what} is one of the input files ({source}); inputs "
                              "are never replaced, even with overwrite. Choose another name.")
    if path.is_dir():
        raise OutputError(f"{path}: the {what} is a folder; give a file name.")
    existing = _first_existing(path.parent)
    if not existing.is_dir():
        raise OutputError(f"{path}: cannot write the {what} there: {existing} is a file, not a "
                          "folder.")
    if not create and existing != path.parent:  # nothing made: the nearest folder must do
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"{path}: cannot write the {what}: the folder {existing} is not "
                              "writable.")
        return path
    try:  # the folder is made now (it would be anyway), and a file tried in it
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the {what} in {path.parent}: "
                          f"{exc.strerror or exc}.") from None
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists; pass overwrite=True (or --overwrite) "
                                "to replace it.")
    return path


@contextlib.contextmanager
def atomic_output(path, overwrite=False):
    """Write a file atomically: yield a temporary path, rename it on success.

    The temporary file lives in the destination folder, so the final rename is
    atomic on POSIX file systems; on any error it is removed and an existing
    file at ``path`` is left untouched. The file gets the mode of the file it replaces,
    else the usual mode of a new file (0666 less the umask), not the temporary file's 0600.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The final name.
    overwrite : bool
        Replace an existing file. If False and ``path`` exists,
        `~shiftstack_ccd.exceptions.OutputExistsError` is raised before anything is written.

    Raises
    ------
    OutputError
        The folder cannot be created or written, or the path is a folder
        (see `check_output_path`).
    """
    path = check_output_path(path, overwrite=overwrite)
    try:
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, mode)
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written: {exc.strerror or exc}.") from None
    tmp = Path(tmp)
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"{path}: cannot be written: {exc.strerror or exc}.") from None
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


def _fits_in_one_card(key, value, comment):
    """Whether ``key = value / comment`` surely fits one 80-character card as it is: a
    number (at most 20 characters in FITS) or a short plain string ends at column 30, and
    the comment starts at column 34, leaving 47 characters."""
    if len(key) > 8 or len(comment) > 47 or not comment.isascii():
        return False
    if isinstance(value, str):
        return len(value) <= 18 and "'" not in value and value.isascii()
    return isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating))


def set_card(header, key, value, comment=""):
    """Set a header card, shortening the comment (never the value) to fit one 80-char card."""
    from astropy.io import fits
    if _fits_in_one_card(key, value, comment):  # the usual case, without building cards
        header[key] = (value, comment) if comment else value
        return
    bare = fits.Card(key, value).image
    if len(bare) <= 80 and comment:  # a long string continues on CONTINUE cards: leave it
        if len(bare.rstrip()) + 4 > 80:  # no room for " / " and one character
            comment = ""
        else:
            # where the comment starts once astropy has padded the value (to column 30 for
            # short strings, which a bare card does not show)
            start = fits.Card(key, value, "#").image.rstrip().rfind("#")
            comment = comment[:max(80 - start, 0)]
    header[key] = (value, comment) if comment else value


def data_and_mask(ccd):
    """Float data of a frame (or an array) and its bad-pixel mask (masked or not finite)."""
    data = np.asarray(getattr(ccd, "data", ccd), dtype=float)
    mask = ~np.isfinite(data)
    if getattr(ccd, "mask", None) is not None:
        mask |= np.asarray(ccd.mask, dtype=bool)
    return data, mask


def pixel_to_pixel(wcs_from, wcs_to, x, y):
    """Pixel coordinates in ``wcs_to`` of pixels ``(x, y)`` of ``wcs_from``, through the sky.

    Two celestial WCS in the same frame (RADESYS, equinox, axis order) go through wcslib's
    own transforms (distortions included); otherwise `astropy.wcs.utils.pixel_to_pixel`
    converts between the frames through `~astropy.coordinates.SkyCoord`, which costs more
    than the transform itself on a few thousand points.
    """
    a, b = wcs_from.wcs, wcs_to.wcs
    same = (wcs_from.naxis == wcs_to.naxis == 2 and a.lng == b.lng and a.lat == b.lat
            and a.radesys == b.radesys
            and (a.equinox == b.equinox or (np.isnan(a.equinox) and np.isnan(b.equinox)))
            and a.ctype[a.lng][:4] == b.ctype[b.lng][:4])
    if not same:
        from astropy.wcs.utils import pixel_to_pixel
        return pixel_to_pixel(wcs_from, wcs_to, x, y)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    world = wcs_from.all_pix2world(x, y, 0)
    return wcs_to.all_world2pix(*world, 0, quiet=True)


def frames_wcs_error(headers, table):
    """The frames' WCS error per axis (arcsec, median over frames), when they say it.

    From `~shiftstack_ccd.astrometry.correct_wcs`'s ``WCSERR`` when it ran, else SCAMP's
    ``ASTRRMS1``/``ASTRRMS2`` (degrees; the residual rms of the reference stars, an upper
    bound of the solution's error at one place).
    """
    import numpy as np
    if "wcs_err" in table.colnames and np.any(np.isfinite(table["wcs_err"])):
        return float(np.nanmedian(table["wcs_err"]))
    values = []
    for h in headers:
        try:
            r1, r2 = float(h["ASTRRMS1"]), float(h["ASTRRMS2"])
        except (KeyError, TypeError, ValueError):
            continue
        values.append(3600.0 * np.sqrt((r1 ** 2 + r2 ** 2) / 2))
    return float(np.median(values)) if values else None


def primary_has_card(path, keyword):
    """Whether a plain FITS file's primary header has the card ``keyword`` (8 bytes, padded),
    found by its keyword alone; None when the file is not plain FITS (e.g. gzipped).

    Read here rather than by `astropy.io.fits.getheader`, which parses every card (a
    millisecond for a 200-card camera header, for a yes or no on every frame of a stack).
    """
    with open(path, "rb") as file:
        block = file.read(2880)
        if not block.startswith(b"SIMPLE  ="):
            return None
        while len(block) == 2880:
            for start in range(0, 2880, 80):
                card = block[start:start + 8].upper()  # as astropy matches keywords
                if card == keyword:
                    return True
                if card == b"END     ":
                    return False
            block = file.read(2880)
    return None  # a truncated header: astropy says what is wrong
