"""Real headers mangled card by card: the right answer, or one clear error, never a traceback.

Each header of the shared real data (Lowell, HST, Wallace, star fields) is written over a
tiny image and read back with one card removed, replaced by text, or by an absurd number.
`read_frame` must then return a frame whose mid-exposure time and sky position agree with
the unmangled header's, or one whose changed card legitimately changes them, or raise a
`FrameError` on one line naming the file. Any other exception fails.
"""

import re
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits

from shiftstack_ccd.exceptions import FrameError
from shiftstack_ccd.frames import mid_exposure_time, read_frame

HEADERS = [
    ("lowell42-5945/5945/20190326.0135.fits", 0),
    ("hst-headers/j94f05bgq_flt.fits", 1),
    ("hst-headers/sample_svm_flc.fits", 1),
    ("hst-headers/o4sp040b0_raw.fits", 1),
    ("wallace-2713/lux-180.000secs.Light.Open.00000015.fit", 0),
    ("starfields/sip-wcs.fit", 0),
    ("starfields/image.fits", 0),
]
STRUCTURE = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT",
             "GCOUNT", "BZERO", "BSCALE", "BLANK", "COMMENT", "HISTORY", "", "CHECKSUM",
             "DATASUM", "EXTNAME", "EXTVER", "INHERIT", "NEXTEND", "SSFILE"}
# Cards the FITS and SIP conventions let default (to 0, 1, ICRS...): removing one is a
# different valid header, so the position may change; and cards that only describe.
MAY_DEFAULT = ("A_", "B_", "AP_", "BP_", "PV", "PC", "CD1_2", "CD2_1", "CDELT", "CROTA",
               "LONPOLE", "LATPOLE", "RADESYS", "RADECSYS", "EQUINOX", "EPOCH", "WCSAXES",
               "CUNIT", "D2IM", "CPDIS", "DP", "CPERR", "WCSNAME", "DATE-OBS", "TIME-OBS",
               "MJD-OBS", "EXPSTART", "EXPEND", "EXPTIME", "UTC", "UT", "TIMESYS")


READER = re.compile(r"^(DATE|TIME|MJD|EXP|UT|TIMESYS|TELAPSE|ITIME|MIDTIMJD|BUNIT|LONPOLE|"
                    r"LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|WCSAXES$|"
                    r"(CTYPE|CRVAL|CRPIX|CDELT|CROTA|CUNIT)\d$|CD\d_\d$|PC\d_\d$|PV\d_\d+$|"
                    r"[AB]P?_(ORDER|DMAX)$)")
SIP = re.compile(r"^[AB]P?_\d_\d$")  # dozens of coefficients: a third of them, in turn


def _science_header(path, ext):
    with fits.open(path) as hdul:
        header = hdul[0].header.copy()
        if ext:
            for card in hdul[ext].header.cards:
                if card.keyword not in STRUCTURE:
                    header[card.keyword] = (card.value, card.comment)
    lookup = ("NAXIS", "D2IM", "CPDIS", "DP1", "DP2", "WCSDVARR", "CPERR")  # no tables here
    for key in [k for k in header if k in STRUCTURE or k.startswith(lookup)]:
        header.remove(key, ignore_missing=True, remove_all=True)
    return header


def _read(header, path):
    data = np.ones((16, 16), dtype=np.float32)
    fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True, output_verify="fix")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = read_frame(path, unit="adu")
    return frame, mid_exposure_time(frame)


def _sky(frame):
    if frame.wcs is None:
        return None
    return frame.wcs.pixel_to_world(7.5, 7.5)


@pytest.mark.parametrize("relative, ext", HEADERS, ids=[h[0].split("/")[-1] for h in HEADERS])
def test_mangled_real_headers(shared_data, tmp_path, relative, ext):
    header = _science_header(shared_data(relative), ext)
    path = tmp_path / "mangled.fits"
    try:
        truth, truth_time = _read(header, path)
    except FrameError as exc:  # the header itself is refused (no time): mangling stays so
        truth, truth_time = None, None
        assert "mangled.fits" in str(exc)
    truth_sky = _sky(truth) if truth is not None else None
    checked = 0
    keys = list(dict.fromkeys(k for k in header.keys() if k not in STRUCTURE))
    # every card the reader uses (time, exposure, WCS, unit, quality) mangled three ways;
    # of the others (instrument, proposal...), 25 spread over the header, garbled once
    used = [k for k in keys if READER.match(k)] + [k for k in keys if SIP.match(k)][::3]
    others = [k for k in keys if not (READER.match(k) or SIP.match(k))]
    others = others[::max(1, len(others) // 25)]
    mutations = (("removed", None), ("text", "x?garbage"), ("number", 1e30))
    cases = [(k, m) for k in used for m in mutations] + [(k, mutations[1]) for k in others]
    for key, (how, value) in cases:
        if True:
            mangled = header.copy()
            if how == "removed":
                mangled.remove(key, remove_all=True)
            else:
                mangled[key] = value
            try:
                frame, t = _read(mangled, path)
            except FrameError as exc:
                text = str(exc)
                assert "mangled.fits" in text and "\n" not in text, (key, how, text)
                continue
            checked += 1
            if truth is None or how == "number" or key.startswith(MAY_DEFAULT):
                continue
            # anything else removed or garbled must not move the time or the sky silently
            assert abs((t - truth_time).to_value(u.s)) < 1.0, (key, how, t.isot)
            sky = _sky(frame)
            if truth_sky is not None and sky is not None:
                assert sky.separation(truth_sky).to_value(u.arcsec) < 0.01, (key, how)
    assert checked > 0 or truth is None
