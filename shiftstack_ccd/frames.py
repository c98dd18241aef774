# Licensed under a 3-clause BSD style license - see LICENSE
"""Reading frames: CCDData with a clean WCS and a trustworthy mid-exposure time.

Real headers are messy. This module reads single-HDU files and HST/JWST-style
multi-extension files (``SCI`` + ``ERR`` + ``DQ``), repairs the quirks that make
astropy build a silently wrong WCS, and finds the UTC mid-exposure time from
whatever cards the header has, saying which ones it used.
"""

import copy
import functools
import glob
import logging
import os
import re
import warnings
from collections import namedtuple
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty, VarianceUncertainty
from astropy.time import Time, TimeDelta
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS

from ._utils import primary_has_card, set_card
from .exceptions import FrameError

__all__ = ["Footprint", "mid_exposure_time", "read_footprint", "read_frame", "read_frames"]

log = logging.getLogger(__name__)

# WCS cards whose values must be numbers. Some pipelines (e.g. Lowell's LOIS/SCAMP
# headers) write them as quoted strings; astropy then ignores them with only a
# FITSFixedWarning and builds a WCS with CRVAL=0 and a unit CD matrix.
_NUMERIC_WCS = re.compile(
    r"^(CRVAL|CRPIX|CDELT|CROTA|CD\d_|PC\d_|PV\d_|PV\d+_|A_|B_|AP_|BP_|LONPOLE|LATPOLE|"
    r"EQUINOX|EPOCH|MJD-OBS|MJDREF)")

# Cards that describe the celestial WCS (removed from meta once `CCDData.wcs` holds them).
_WCS_CARD = re.compile(r"^(WCSAXES|CTYPE\d|CUNIT\d|CRVAL\d|CRPIX\d|CDELT\d|CROTA\d|CD\d_\d|"
                       r"PC\d_\d|PV\d_\d+|PS\d_\d+|[AB]P?_(\d+_\d+|ORDER|DMAX)|LONPOLE|LATPOLE|"
                       r"RADESYS|RADECSYS|WCSNAME)$")
# Cards that building a celestial WCS reads: the WCS cards above, the axes, the epoch and
# date cards, and the lookup-table distortions (Paper IV: CPDISj, DPj, D2IM*, NPOL*).
_WCS_INPUT = re.compile(_WCS_CARD.pattern[:-2] + r"|NAXIS\d?|EQUINOX|EPOCH|MJD-OBS|DATE-OBS|"
                        r"MJDREF|DATEREF|CPDIS\d|CPERR\d|DP\d.*|DQ\d.*|D2IM.*|AXISCORR|NPOL.*|"
                        r"CRDER\d|CSYER\d|CNAME\d)$")
_BENIGN_WCS_WARNINGS = ("datfix", "RADECSYS", "unitfix", "Card is too long",
                        "redundant SIP distortion")
_TIME_OF_DAY = re.compile(r"^\s*(\d{1,2}):(\d{1,2}):(\d{1,2}(?:\.\d*)?)\s*$")
_DATE_WITH_TIME = re.compile(r"^\s*[+-]?\d{4,}-\d{1,2}-\d{1,2}[T ]\s*\d{1,2}:\d")
_OLD_DATE = re.compile(r"^\s*(\d{1,2})/(\d{1,2})/(\d{2})\s*$")  # dd/mm/yy (pre-1999 FITS)
_EXPTIME_KEYS = ("EXPTIME", "EXPOSURE", "ITIME", "TELAPSE")
_LONGEST_EXPOSURE = 10 * 86400.0  # seconds; anything longer is a wrong card, not an exposure
_START_TIME_KEYS = ("TIME-OBS", "UTCSTART", "UTC-OBS", "UT", "UTSTART", "TIME-BEG")


# --------------------------------------------------------------------------------------
# Times
# --------------------------------------------------------------------------------------
def _label(header, default="header"):
    return str(header.get("SSFILE", default))


def _time_scale(header):
    scale = str(header.get("TIMESYS", "UTC")).strip().lower()
    if scale in ("utc", "tt", "tai", "tdb", "tcg", "tcb", "ut1"):
        return scale
    if scale == "gps":
        return "tai"  # handled by the offset below
    raise FrameError(f"{_label(header)}: TIMESYS = {header['TIMESYS']!r} is not a time scale "
                     "this reader knows (UTC, TT, TAI, TDB, TCG, TCB, UT1, GPS).")


def _parse_date(value, header, key):
    """Parse a FITS date card: ISO (with or without time) or the old dd/mm/yy form."""
    scale = _time_scale(header)  # outside the try: its own message must not be swallowed
    text = str(value).strip()
    match = _OLD_DATE.match(text)
    if match:
        day, month, year = (int(g) for g in match.groups())
        text = f"{1900 + year:04d}-{month:02d}-{day:02d}"
    if text.endswith("Z"):  # ISO 8601 'Zulu': UTC, which astropy's parser does not take
        text = text[:-1]
        if scale != "utc":
            raise FrameError(f"{_label(header)}: {key} = {value!r} says UTC ('Z') but TIMESYS "
                             f"is {header.get('TIMESYS')!r}.")
    try:
        return Time(text, format="isot" if "T" in text else "iso", scale=scale)
    except ValueError:
        raise FrameError(f"{_label(header)}: cannot read {key} = {value!r} as a date "
                         "(expected YYYY-MM-DD[Thh:mm:ss]).") from None


def _has_time_of_day(text):
    """Whether a DATE-OBS value carries a time of day ('2024-03-01T03:00' or '... 03:00')."""
    return bool(_DATE_WITH_TIME.match(text))


def _parse_time_of_day(value, header, key):
    """Seconds since midnight from 'hh:mm:ss[.sss]'; tolerates '03:24:3.07'."""
    match = _TIME_OF_DAY.match(str(value))
    if not match:
        raise FrameError(f"{_label(header)}: cannot read {key} = {value!r} as a time of day "
                         "(expected hh:mm:ss).")
    h, m, s = int(match.group(1)), int(match.group(2)), float(match.group(3))
    if h > 23 or m > 59 or s >= 61:
        raise FrameError(f"{_label(header)}: {key} = {value!r} is not a valid time of day.")
    return 3600 * h + 60 * m + s


def exposure_time(header):
    """The exposure time of a header: ``(key, seconds)`` from the first of the usual cards
    present, or ``(None, None)`` when none is.

    Raises
    ------
    shiftstack_ccd.exceptions.FrameError
        The card holds no number, or a negative or non-finite one.
    """
    for key in _EXPTIME_KEYS:
        if key in header:
            if isinstance(header[key], bool):  # a FITS logical, T or F: not a duration
                raise FrameError(f"{_label(header)}: {key} = {header[key]!r} is not a number.")
            try:
                value = float(header[key])
            except (TypeError, ValueError):
                raise FrameError(f"{_label(header)}: {key} = {header[key]!r} is not a number.") \
                    from None
            if not np.isfinite(value) or value < 0 or value > _LONGEST_EXPOSURE:
                raise FrameError(f"{_label(header)}: {key} = {header[key]!r} is not a valid "
                                 "exposure time (seconds, 0 to 10 days).")
            return key, value
    return None, None


def _mjd(header, key):
    scale = _time_scale(header)
    try:
        if isinstance(header[key], bool):  # a FITS logical, T or F: not a date
            raise TypeError
        value = float(header[key])
    except (TypeError, ValueError):
        raise FrameError(f"{_label(header)}: {key} = {header[key]!r} is not a number.") from None
    if not np.isfinite(value):
        raise FrameError(f"{_label(header)}: {key} = {header[key]!r} is not a finite MJD.")
    if value > 2_400_000:  # a Julian Date written where an MJD was expected
        raise FrameError(f"{_label(header)}: {key} = {value} looks like a Julian Date, not an MJD.")
    if value < 0:  # before 1858: no CCD frame
        raise FrameError(f"{_label(header)}: {key} = {value} is not a plausible MJD (negative).")
    return Time(value, format="mjd", scale=scale)


def _start_end(header, start_key, end_key, parse):
    start, end = parse(header, start_key), parse(header, end_key)
    if end < start:
        raise FrameError(f"{_label(header)}: {end_key} ({end.isot}) is before {start_key} "
                         f"({start.isot}).")
    return start + (end - start) / 2, f"{start_key}/{end_key}"


def _mid_time_and_source(header):
    """Return (Time, description) of the mid-exposure, or raise FrameError."""
    has = header.__contains__
    if has("EXPSTART") and has("EXPEND"):  # HST, JWST: MJD
        mid, source = _start_end(header, "EXPSTART", "EXPEND", _mjd)
        return mid, source + " (MJD)"
    if has("DATE-BEG") and has("DATE-END"):  # FITS 4.0 time cards
        return _start_end(header, "DATE-BEG", "DATE-END",
                          lambda h, key: _parse_date(h[key], h, key))
    if has("DATE-AVG"):
        return _parse_date(header["DATE-AVG"], header, "DATE-AVG"), "DATE-AVG"
    if has("MJD-AVG"):
        return _mjd(header, "MJD-AVG"), "MJD-AVG"

    exp_key, exptime = exposure_time(header)
    start, source = None, None
    if has("DATE-OBS") and str(header["DATE-OBS"]).strip():
        date_text = str(header["DATE-OBS"]).strip()
        time_key = next((key for key in _START_TIME_KEYS
                         if has(key) and str(header[key]).strip()), None)
        if _has_time_of_day(date_text):  # 'T' or a space: the time of day is in DATE-OBS
            start, source = _parse_date(date_text, header, "DATE-OBS"), "DATE-OBS"
            if time_key is not None:  # redundant; refuse rather than pick one if they differ
                seconds = _parse_time_of_day(header[time_key], header, time_key)
                of_day = (start - Time(start.iso[:10], scale=start.scale)).to_value(u.s)
                if abs(of_day - seconds) > 1.0 and abs(abs(of_day - seconds) - 86400) > 1.0:
                    raise FrameError(
                        f"{_label(header)}: DATE-OBS = {date_text!r} and {time_key} = "
                        f"{header[time_key]!r} give different start times; fix one of them.")
        elif time_key is not None:
            day = _parse_date(date_text, header, "DATE-OBS")
            seconds = _parse_time_of_day(header[time_key], header, time_key)
            start = day + TimeDelta(seconds, format="sec")
            source = f"DATE-OBS+{time_key}"
    if start is None and has("MJD-OBS"):
        start, source = _mjd(header, "MJD-OBS"), "MJD-OBS"
    if start is None and has("DATE-OBS") and str(header["DATE-OBS"]).strip():
        _parse_date(header["DATE-OBS"], header, "DATE-OBS")  # is it a date at all?
        raise FrameError(
            f"{_label(header)}: DATE-OBS = {header['DATE-OBS']!r} has no time of day, and none "
            f"of {'/'.join(_START_TIME_KEYS)} or MJD-OBS gives the start of the exposure.")
    if start is None:
        raise FrameError(
            f"{_label(header)}: cannot tell when the exposure was taken: none of EXPSTART/"
            "EXPEND, DATE-BEG/DATE-END, DATE-AVG, MJD-AVG, DATE-OBS with a time (or with "
            "TIME-OBS/UTCSTART/UTC-OBS/UT), MJD-OBS is in the header.")
    if exptime is None:
        raise FrameError(
            f"{_label(header)}: {source} gives the start of the exposure but no exposure time "
            f"({'/'.join(_EXPTIME_KEYS)}) is in the header, so the mid-exposure time is unknown.")
    return start + TimeDelta(exptime / 2, format="sec"), f"{source} + {exp_key}/2"


#: The cards the mid-exposure time is read from, and ``SSFILE`` (the frame's name in the
#: messages): `mid_exposure_time` remembers its answer for each set of their values.
_TIME_CARDS = (("SSFILE", "TIMESYS", "EXPSTART", "EXPEND", "DATE-BEG", "DATE-END", "DATE-AVG",
                "MJD-AVG", "DATE-OBS", "MJD-OBS", "MIDTIMJD") + _EXPTIME_KEYS
               + _START_TIME_KEYS)


@functools.lru_cache(maxsize=4096)
def _mid_time_of_cards(cards):
    return _mid_time(dict(cards))


def _mid_time(header):
    """``(jd1, jd2, format, source, warning)`` of the UTC mid-exposure time of a header;
    ``warning`` is the text of a MIDTIMJD disagreement, or None."""
    try:
        time, source = _mid_time_and_source(header)
        time = time.utc
    except FrameError:
        raise
    except (ValueError, ArithmeticError) as exc:  # e.g. erfa: a date it cannot convert
        raise FrameError(f"{_label(header)}: the time cards give an impossible date "
                         f"({exc}).") from None
    warning = None
    if "MIDTIMJD" in header:
        try:
            check = Time(float(header["MIDTIMJD"]), format="jd", scale="utc")
            difference = abs((check - time).to_value(u.s))
        except (TypeError, ValueError, ArithmeticError):  # not a JD: no check to make
            check, difference = None, 0.0
        if check is not None and not difference <= 1.0:
            warning = (f"{_label(header)}: mid-exposure from {source} is {time.isot} but "
                       f"MIDTIMJD (a JD) says {check.isot}; using {source}.")
    return float(time.jd1), float(time.jd2), time.format, source, warning


def mid_exposure_time(frame):
    """Return the UTC mid-exposure time of a frame.

    The cards are tried in this order, and the first complete set wins:
    ``EXPSTART``/``EXPEND`` (MJD, HST and JWST), ``DATE-BEG``/``DATE-END``, ``DATE-AVG``,
    ``MJD-AVG``, ``DATE-OBS`` (with a time part, or a date-only ``DATE-OBS`` completed by
    ``TIME-OBS``, ``UTCSTART``, ``UTC-OBS`` or ``UT``) plus half of ``EXPTIME``, and
    ``MJD-OBS`` plus half of ``EXPTIME``. ``TIMESYS`` gives the time scale of the cards
    (UTC when absent); the result is always converted to UTC. Which cards were used is
    logged and kept in ``time.info.description``.

    Where a ``MIDTIMJD`` card (a Julian Date, as Lowell's pipeline writes) is present, it is
    compared with the result and a disagreement of more than one second is warned about.

    Parameters
    ----------
    frame : `~astropy.nddata.CCDData`, `~astropy.io.fits.Header` or dict-like
        The frame or its header.

    Returns
    -------
    time : `~astropy.time.Time`
        Mid-exposure time, scale ``utc``.

    Raises
    ------
    FrameError
        If the header does not say when the exposure was taken, or a card cannot be read;
        the message names the file.

    Examples
    --------
    >>> from astropy.io import fits
    >>> from shiftstack_ccd import mid_exposure_time
    >>> header = fits.Header({"DATE-OBS": "2019-03-26", "UTCSTART": "03:13:52.56",
    ...                       "EXPTIME": 300.0})
    >>> t = mid_exposure_time(header)
    >>> t.isot, t.scale
    ('2019-03-26T03:16:22.560', 'utc')
    >>> t.info.description
    'DATE-OBS+UTCSTART + EXPTIME/2'
    """
    header = getattr(frame, "meta", frame)
    # Answered from the time cards alone, and remembered: a stack asks for each frame's time
    # five times (plan, read, two combines, provenance), and astropy's Time makes each
    # answer cost a millisecond.
    cards = tuple((key, header[key]) for key in _TIME_CARDS if key in header)
    try:
        jd1, jd2, form, source, warning = _mid_time_of_cards(cards)
    except TypeError:  # a value that cannot be a dictionary key (from a dict meta): no cache
        jd1, jd2, form, source, warning = _mid_time(header)
    if warning is not None:
        warnings.warn(warning, AstropyUserWarning)
    time = Time(jd1, jd2, format="jd", scale="utc")
    time.format = form
    time.info.description = source
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s: mid-exposure %s UTC from %s", _label(header), time.isot, source)
    return time


# --------------------------------------------------------------------------------------
# Headers and WCS
# --------------------------------------------------------------------------------------
def _clean_header(header, label):
    """Return a copy of the header with numeric WCS cards written as strings cast to float."""
    header = header.copy()
    fixed = []
    for card in header.cards:
        key = card.keyword
        if not _NUMERIC_WCS.match(key):  # before the value: parsing every value is slow
            continue
        value = card.value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                if not key.startswith(("EQUINOX", "EPOCH", "MJD")):  # astropy would drop it
                    raise FrameError(f"{label}: WCS card {key} = {value!r} is not a number.") \
                        from None
                continue
            card.value = number  # the card itself (a third faster than header[key] = ...)
            fixed.append(key)
    if fixed:
        log.info("%s: %d numeric WCS cards were written as strings and were read as numbers "
                 "(%s...)", label, len(fixed), ", ".join(fixed[:4]))
    return header


def _wcs_cards(header):
    """The cards a WCS is built from (the others cost time: astropy turns the header into
    text three times while building one, ~20 ms for a 200-card header against ~3 ms)."""
    return fits.Header([card for card in header.cards if _WCS_INPUT.match(card.keyword)])


def _wcslib_message(exc):
    """wcslib's multi-line error as one line, without its C source locations."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [line for line in lines if line and not re.match(r"^ERROR \d+ in \w+\(\)", line)]
    return "; ".join(kept) or type(exc).__name__


def _celestial_wcs(header, label, hdul=None):
    """Build the celestial WCS of a cleaned header, or None when it has none.

    ``hdul`` is the open file, needed for lookup-table distortions (HST ``D2IMARR``,
    ``WCSDVARR``).
    """
    if not any(str(header.get(f"CTYPE{i}", "")).startswith(("RA", "DEC", "GLON", "GLAT",
                                                            "ELON", "ELAT"))
               for i in (1, 2)):
        return None
    for key in ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2"):  # FITS lets them default to 0:
        if key not in header:  # for a real frame that is a broken header, not a WCS
            raise FrameError(f"{label}: the header has a celestial CTYPE but no {key}; the WCS "
                             "is incomplete.")
    diagonal = [key for key in ("CD1_1", "CD2_2") if key in header]
    if len(diagonal) == 1:  # a lost diagonal card would default to 0: a wrong WCS, not none
        missing = "CD2_2" if diagonal == ["CD1_1"] else "CD1_1"
        raise FrameError(f"{label}: the header has {diagonal[0]} but no {missing}; the WCS is "
                         "incomplete.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every WCS complaint is logged below, none leaks
        try:
            wcs = WCS(_wcs_cards(header), fobj=hdul, relax=True)
        except Exception as exc:  # astropy raises many types for broken WCS headers
            raise FrameError(f"{label}: the WCS in the header cannot be used: "
                             f"{_wcslib_message(exc)}") from None
    for warning in caught:
        message = str(warning.message)
        if any(text in message for text in _BENIGN_WCS_WARNINGS):
            log.debug("%s: %s", label, message)
        else:
            log.info("%s: WCS: %s", label, message)
    if not wcs.has_celestial:
        return None
    if wcs.naxis > 2:
        wcs = wcs.celestial
    cd = wcs.pixel_scale_matrix
    if not np.all(np.isfinite(cd)) or abs(np.linalg.det(cd)) == 0:
        raise FrameError(f"{label}: the WCS pixel scale matrix is singular or not finite.")
    return wcs


# --------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------
_UNIT_ALIASES = {"counts": "count", "electrons": "electron", "e-": "electron", "e": "electron",
                 "adus": "adu", "dn": "adu", "data number": "adu"}


def _parse_unit(text, label):
    try:
        return _parse_unit_text(str(text).strip())
    except ValueError:
        raise FrameError(f"{label}: BUNIT = {str(text).strip()!r} is not a unit astropy can "
                         "read; pass unit=...") from None


@functools.lru_cache(maxsize=64)
def _parse_unit_text(raw):
    """The unit a BUNIT text means (cached: a failed strict parse, as of 'ADU', builds a
    "did you mean" message that costs ~20 ms, and every frame of a night has the same card)."""
    lower = raw.lower()
    for alias, canonical in _UNIT_ALIASES.items():
        lower = re.sub(rf"(?<![a-z]){re.escape(alias)}(?![a-z])", canonical, lower)
    for candidate in (raw, lower):
        try:
            return u.Unit(candidate, parse_strict="raise")
        except ValueError:
            continue
    raise ValueError(raw)


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------
def _science_hdu(hdul, hdu, label, header_only=False):
    """The science HDU: ``hdu`` if given, else ``SCI``, else the first 2-D image.

    With ``header_only`` the image is recognised by its header, so no pixels are read.
    """
    if hdu is not None:
        try:
            return hdul[hdu]
        except (KeyError, IndexError):
            names = [h.name for h in hdul]
            raise FrameError(f"{label}: has no HDU {hdu!r} (it has {names}).") from None
    if "SCI" in hdul:
        return hdul["SCI"]
    for candidate in hdul:
        if not candidate.is_image:
            continue
        if (candidate.header.get("NAXIS", 0) >= 2 if header_only else
                candidate.data is not None and candidate.data.ndim >= 2):
            return candidate
    raise FrameError(f"{label}: contains no image HDU.")


def _companion(hdul, sci, name):
    """The ERR/DQ/VAR extension with the same EXTVER as the science HDU, if any."""
    ver = sci.header.get("EXTVER", 1)
    for key in ((name, ver), name):
        try:
            ext = hdul[key]
        except (KeyError, IndexError):
            continue
        if ext.data is not None and ext.data.shape == sci.data.shape:
            return ext
        return None
    return None


def _merged_header(hdul, sci):
    """The primary header with the science HDU's cards merged in (the science cards win).

    The primary header itself, not a copy: the file is read into memory and closed, so the
    header is the caller's to change.
    """
    header = hdul[0].header
    if sci is not hdul[0]:
        for card in sci.header.cards:
            if card.keyword in ("HISTORY", "COMMENT"):
                header.add_history(card.value) if card.keyword == "HISTORY" \
                    else header.add_comment(card.value)
            elif card.keyword not in ("", "XTENSION", "PCOUNT", "GCOUNT"):
                header[card.keyword] = (card.value, card.comment)
    return header


def _header_and_wcs(header, path, hdul):
    """``SSFILE`` set, numeric WCS cards cast, the WCS built and its cards dropped from the
    header (they live in the WCS, so the two cannot disagree).

    ``header`` is the caller's own copy, changed in place. The casting and the WCS work on
    the few WCS cards alone (`_wcs_cards`): copying and scanning the whole header twice cost
    more than reading the file.
    """
    label = str(path)
    set_card(header, "SSFILE", label, "file this frame was read from")  # fits a long path
    cards = _clean_header(_wcs_cards(header), label)
    wcs = _celestial_wcs(cards, label, hdul)
    if wcs is not None:  # one pass: removing cards one by one is quadratic
        header = fits.Header([card for card in header.cards
                              if not _WCS_CARD.match(card.keyword)])
    for card in cards.cards:  # what stays in the header (EQUINOX, MJD-OBS...), cast too
        if card.keyword in header and _NUMERIC_WCS.match(card.keyword) \
                and not isinstance(card.value, str) and isinstance(header[card.keyword], str):
            header[card.keyword] = (card.value, card.comment)
    return header, wcs


#: What `read_footprint` returns: a frame's header, ``(ny, nx)`` shape and celestial WCS.
Footprint = namedtuple("Footprint", ["header", "shape", "wcs"])


def read_footprint(path, hdu=None):
    """The header, shape and WCS of a frame file, without reading its pixels.

    The header and WCS are exactly those `read_frame` gives (same HDU choice, same header
    merge and repairs), and the mid-exposure time is checked the same way, at the cost of
    reading the headers only: planning a stack (its grid, its epochs) needs no more.

    Parameters
    ----------
    path : str or path
        A FITS file.
    hdu : int or str or tuple, optional
        The science HDU (see `read_frames`).

    Returns
    -------
    footprint : `Footprint`
        ``(header, shape, wcs)``; ``wcs`` is None when the header has no celestial WCS.

    Raises
    ------
    FrameError
        As `read_frame`, for everything that the headers can tell.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> from shiftstack_ccd import read_footprint
    >>> path = os.path.join(tempfile.mkdtemp(), "frame.fits")
    >>> header = fits.Header({"DATE-OBS": "2024-03-01T03:00:00", "EXPTIME": 60.0})
    >>> fits.writeto(path, np.zeros((20, 30), dtype=np.float32), header)
    >>> footprint = read_footprint(path)
    >>> footprint.shape, footprint.wcs is None
    ((20, 30), True)
    """
    path = Path(path)
    label = str(path)
    if not path.is_file():
        raise FrameError(f"{label}: no such file.")
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            sci = _science_hdu(hdul, hdu, label, header_only=True)
            naxis = [sci.header.get(f"NAXIS{i}") for i in range(1, sci.header.get("NAXIS", 0) + 1)]
            if len(naxis) != 2:
                raise FrameError(f"{label}: HDU {sci.name!r} holds no 2-D image "
                                 f"(NAXIS = {len(naxis)}).")
            header, wcs = _header_and_wcs(_merged_header(hdul, sci), path, hdul)
    except FrameError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise FrameError(f"{label}: cannot be read as FITS: {exc}") from None
    mid_exposure_time(header)
    return Footprint(header, (int(naxis[1]), int(naxis[0])), wcs)


def read_frame(path, hdu=None, unit=None, dq_mask_bits=None, footprint=None):
    """Read one frame into a `~astropy.nddata.CCDData`.

    See `read_frames` for the parameters; this reads a single file. ``footprint``, the
    `read_footprint` of the same file and HDU, saves parsing the header and building the WCS
    a second time (copies of its header and WCS are used).

    Returns
    -------
    ccd : `~astropy.nddata.CCDData`
        With ``meta['SSFILE']`` set to the path.
    """
    path = Path(path)
    label = str(path)
    if not path.is_file():
        raise FrameError(f"{label}: no such file.")
    # 16-bit unsigned pixels (BZERO 32768, what most CCD cameras write) are read by astropy
    # as uint16 then copied to float32 (6 ms for a 1432 x 1370 frame); scaled, they come as
    # float32 at once (2 ms), the same numbers. Only with a footprint: the scaling also
    # rewrites the HDU's header (BITPIX, BZERO), and its header is then not used. Not with
    # BLANK, which astropy honours when it scales (NaN) and not for uint16.
    scaled = (footprint is not None and footprint.header.get("BITPIX") == 16
              and "BLANK" not in footprint.header)
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=False, uint=not scaled) as hdul:
            sci = _science_hdu(hdul, hdu, label)
            if sci.data is None or sci.data.ndim != 2:
                shape = None if sci.data is None else sci.data.shape
                raise FrameError(f"{label}: HDU {sci.name!r} holds no 2-D image "
                                 f"(shape {shape}).")
            data = np.asarray(sci.data)
            dtype = np.float64 if data.dtype == np.float64 else np.float32
            # the file is read into memory (memmap=False) and closed: its array is ours, and
            # is copied only to change the type
            data = data.astype(dtype, copy=False)
            header = _merged_header(hdul, sci)
            uncertainty = None
            err = _companion(hdul, sci, "ERR")
            var = _companion(hdul, sci, "VAR")
            unc = _companion(hdul, sci, "UNCERT")  # as CCDData.write writes it
            if err is not None:
                uncertainty = StdDevUncertainty(np.asarray(err.data, dtype=dtype))
            elif var is not None:
                uncertainty = VarianceUncertainty(np.asarray(var.data, dtype=dtype))
            elif unc is not None:
                kind = {"VarianceUncertainty": VarianceUncertainty}.get(
                    unc.header.get("UTYPE"), StdDevUncertainty)
                uncertainty = kind(np.asarray(unc.data, dtype=dtype))
            dq = _companion(hdul, sci, "DQ")
            mask = None
            if dq is not None:
                flags = np.asarray(dq.data).astype(np.int64)
                if dq_mask_bits is not None:
                    flags &= int(dq_mask_bits)
                mask = flags != 0
            elif _companion(hdul, sci, "MASK") is not None:
                mask = np.asarray(_companion(hdul, sci, "MASK").data) != 0
            if footprint is None:
                header, wcs = _header_and_wcs(header, path, hdul)
            else:
                header, wcs = footprint.header.copy(), copy.deepcopy(footprint.wcs)
    except FrameError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise FrameError(f"{label}: cannot be read as FITS: {exc}") from None

    if unit is None:
        if "BUNIT" in header and str(header["BUNIT"]).strip():
            unit = _parse_unit(header["BUNIT"], label)
        else:
            warnings.warn(f"{label}: no BUNIT in the header; assuming ADU (pass unit= to say "
                          "otherwise).", AstropyUserWarning)
            unit = u.adu
    else:
        unit = u.Unit(unit)

    nonfinite = ~np.isfinite(data)
    if nonfinite.any():
        mask = nonfinite if mask is None else (mask | nonfinite)
        log.info("%s: %d non-finite pixels masked", label, int(nonfinite.sum()))
    if mask is not None and mask.all():
        raise FrameError(f"{label}: every pixel is masked (DQ flags or non-finite values).")

    if footprint is None:  # (a footprint's time was checked when it was read)
        # Validate the time now, so a frame without one is refused at the door, by name.
        mid_exposure_time(header)
    return CCDData(data, unit=unit, wcs=wcs, meta=header, mask=mask, uncertainty=uncertainty)


def _is_stack_product(path):
    """Whether a file was written by `shift_and_stack` (its ``SSKIND`` provenance card)."""
    try:
        found = primary_has_card(path, b"SSKIND  ")
        return "SSKIND" in fits.getheader(path, 0) if found is None else found
    except (OSError, ValueError, TypeError):
        return False  # not readable as FITS: read_frame says so, by name


def expand_files(files):
    """The frames that ``files`` names, in order, each once.

    Parameters
    ----------
    files : str, path, list, or `ccdproc.ImageFileCollection`
        A file, a folder, a glob pattern, a list of paths (or of
        `~astropy.nddata.CCDData`, passed through), or a collection (its filtered files).

    Returns
    -------
    items : list
        Paths as str (and CCDData as given). A path listed twice (the same file after
        resolving links) is kept once, with a warning. Stacks written by this package (files
        with an ``SSKIND`` card) found through a folder, a pattern or among other frames are
        left out, with a warning: a second run would otherwise stack the first run's output.
        A stack is taken as a frame only when named alone, or in a list of stacks only.

    Raises
    ------
    FrameError
        A pattern that matches nothing, a folder without FITS files, nothing left.

    Examples
    --------
    >>> from shiftstack_ccd.frames import expand_files
    >>> expand_files(["a.fits", "b.fits"])
    ['a.fits', 'b.fits']
    """
    named = False
    if isinstance(files, (str, Path)):
        text = str(files)
        if any(ch in text for ch in "*?["):
            items = sorted(glob.glob(text))
            if not items:
                raise FrameError(f"{text}: the pattern matches no file.")
        elif Path(text).is_dir():
            items = sorted(str(p) for p in Path(text).iterdir()
                           if p.suffix.lower() in (".fits", ".fit", ".fts") or
                           p.name.lower().endswith((".fits.gz", ".fit.gz")))
            if not items:
                raise FrameError(f"{text}: the folder holds no FITS file.")
        else:
            return [text]
    elif hasattr(files, "files_filtered"):  # ccdproc.ImageFileCollection
        items = [str(p) for p in files.files_filtered(include_path=True)]
    else:
        items = [str(f) if isinstance(f, Path) else f for f in files]
        named = True
    unique, seen = [], {}
    for item in items:
        if not isinstance(item, str):
            unique.append(item)
            continue
        key = os.path.realpath(item)
        if key in seen:
            warnings.warn(f"{item}: given twice (as {seen[key]} before); used once.",
                          AstropyUserWarning)
            continue
        seen[key] = item
        unique.append(item)
    paths = [item for item in unique if isinstance(item, str)]
    stacks = {p for p in paths if _is_stack_product(p)}
    if stacks and not (named and len(stacks) == len(paths)):
        for path in sorted(stacks):
            warnings.warn(f"{path}: a stack written by shiftstack_ccd (SSKIND card), not a "
                          "frame; left out (name it alone to use it as a frame).",
                          AstropyUserWarning)
        unique = [item for item in unique if item not in stacks]
        if not unique:
            raise FrameError(f"{files}: holds only stacks written by shiftstack_ccd, no frame.")
    return unique


def read_frames(files, hdu=None, unit=None, dq_mask_bits=None):
    """Read frames into `~astropy.nddata.CCDData`, nothing guessed silently.

    Parameters
    ----------
    files : str, path, list, or `ccdproc.ImageFileCollection`
        A file, a folder, a glob pattern (``"night1/*.fits"``), a list of paths, or an
        `~ccdproc.ImageFileCollection` (its filtered files are read). A list may also hold
        `~astropy.nddata.CCDData` objects, which are passed through as copies.
    hdu : int or str or tuple, optional
        The science HDU. By default the ``SCI`` extension when there is one (HST, JWST),
        else the first HDU with an image. ``("SCI", 2)`` picks the second chip.
    unit : `~astropy.units.Unit` or str, optional
        Unit of the data; by default read from ``BUNIT`` (``ELECTRONS/S``, ``COUNTS`` and
        such spellings are understood). With neither, ADU is assumed with a warning.
    dq_mask_bits : int, optional
        Data-quality bits that mask a pixel; by default any non-zero ``DQ`` value masks it.

    Returns
    -------
    frames : list of `~astropy.nddata.CCDData`
        Data as float32 (float64 if the file holds float64); ``ERR`` becomes a
        `~astropy.nddata.StdDevUncertainty`, ``VAR`` a `~astropy.nddata.VarianceUncertainty`
        (``UNCERT``, as `~astropy.nddata.CCDData.write` writes it, is read by its ``UTYPE``),
        ``DQ`` (or a ``MASK`` extension) and non-finite pixels the mask. The primary header
        and the science header are
        merged into ``meta``, with ``SSFILE`` naming the file. A celestial WCS is built after
        casting numeric WCS cards that were written as strings (astropy would otherwise
        build a wrong WCS with only a warning); frames without one get ``wcs=None`` and are
        refused, by name, by the steps that need a WCS.

    Raises
    ------
    FrameError
        For an unreadable file, no image, no usable time, an all-masked frame; the message
        names the file.

    Notes
    -----
    Every frame's mid-exposure time is checked while reading (`mid_exposure_time`), so
    a frame whose time cannot be told is refused here rather than half-way through a stack.
    Files are opened read-only and never modified. A file listed twice is read once, and
    stacks written by this package are left out unless named on their own (see
    `expand_files`); both with a warning.
    """
    frames = []
    for item in expand_files(files):
        if isinstance(item, CCDData):
            frames.append(item.copy())
        else:
            frames.append(read_frame(item, hdu=hdu, unit=unit, dq_mask_bits=dq_mask_bits))
    if not frames:
        raise FrameError("no frames to read.")
    log.info("read %d frames", len(frames))
    return frames
