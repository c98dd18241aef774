"""Reading frames: header quirks, times, WCS, units, errors."""

import glob
import re
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS

from shiftstack_ccd import FrameError, mid_exposure_time, read_frames


# --- mid_exposure_time on synthetic headers, one dialect at a time -----------------------

@pytest.mark.parametrize("cards, expected, source", [
    ({"EXPSTART": 55611.0, "EXPEND": 55611.002}, "2011-02-19T00:01:26.400", "EXPSTART/EXPEND"),
    ({"DATE-BEG": "2020-01-01T00:00:00", "DATE-END": "2020-01-01T00:10:00"},
     "2020-01-01T00:05:00.000", "DATE-BEG/DATE-END"),
    ({"DATE-AVG": "2020-01-01T00:05:00"}, "2020-01-01T00:05:00.000", "DATE-AVG"),
    ({"DATE-OBS": "2020-01-01T00:00:00.5", "EXPTIME": 60.0}, "2020-01-01T00:00:30.500",
     "DATE-OBS + EXPTIME/2"),
    ({"DATE-OBS": "2005-03-07", "TIME-OBS": "06:51:26", "EXPTIME": 400.0},
     "2005-03-07T06:54:46.000", "DATE-OBS+TIME-OBS"),
    ({"DATE-OBS": "2019-03-26", "UTCSTART": "03:24:3.07", "EXPTIME": 300.0},
     "2019-03-26T03:26:33.070", "DATE-OBS+UTCSTART"),
    ({"DATE-OBS": "26/03/96", "UT": "01:00:00", "EXPTIME": 20.0},
     "1996-03-26T01:00:10.000", "DATE-OBS+UT"),
    ({"MJD-OBS": 58568.0, "EXPTIME": 86.4}, "2019-03-26T00:00:43.200", "MJD-OBS"),
])
def test_mid_exposure_time_dialects(cards, expected, source):
    t = mid_exposure_time(fits.Header(cards))
    assert t.scale == "utc"
    assert abs((t - Time(expected, scale="utc")).to_value(u.ms)) < 1
    assert t.info.description.startswith(source)


def test_mid_exposure_time_converts_time_scale():
    # TT = UTC + 69.184 s in 2020
    t = mid_exposure_time(fits.Header({"DATE-AVG": "2020-01-01T00:01:09.184", "TIMESYS": "TT"}))
    assert abs((t - Time("2020-01-01T00:00:00", scale="utc")).to_value(u.ms)) < 1
    assert t.scale == "utc"


@pytest.mark.parametrize("cards, message", [
    ({"OBJECT": "x"}, "cannot tell when the exposure was taken"),
    ({"DATE-OBS": "2020-01-01T00:00:00"}, "no exposure time"),
    ({"DATE-OBS": "2020-01-01", "EXPTIME": 10.0}, "has no time of day"),
    ({"DATE-OBS": "2020-01-01", "UTCSTART": "25:00:00", "EXPTIME": 1.0}, "not a valid time"),
    ({"DATE-OBS": "yesterday", "EXPTIME": 1.0}, "cannot read DATE-OBS = 'yesterday' as a date"),
    ({"MJD-OBS": 2458568.6, "EXPTIME": 1.0}, "looks like a Julian Date"),
    ({"DATE-OBS": "2020-01-01T00:00:00", "EXPTIME": "long"}, "is not a number"),
])
def test_mid_exposure_time_refuses(cards, message):
    header = fits.Header(cards)
    header["SSFILE"] = "night1/frame7.fits"
    with pytest.raises(FrameError, match=message) as info:
        mid_exposure_time(header)
    assert "night1/frame7.fits" in str(info.value)


def test_midtimjd_disagreement_is_warned():
    header = fits.Header({"DATE-OBS": "2019-03-26", "UTCSTART": "03:13:52.56", "EXPTIME": 300.0,
                          "MIDTIMJD": 2458568.7})
    with pytest.warns(Warning, match="MIDTIMJD"):
        mid_exposure_time(header)


# --- real files --------------------------------------------------------------------------

def _lowell_files(shared_data):
    return sorted(glob.glob(str(shared_data("lowell42-5945/5945")) + "/*.fits"))


def test_lowell_wcs_from_string_cards(shared_data):
    """The quoted WCS numbers are read: a star lands within 0.5 px of an explicit float cast."""
    files = _lowell_files(shared_data)
    assert len(files) == 10
    frames = read_frames(files)
    for path, frame in zip(files, frames):
        raw = fits.getheader(path)
        cast = raw.copy()
        for key in list(cast.keys()):
            if re.match(r"^(CRVAL|CRPIX|CD\d_|PV\d_)", key):
                cast[key] = float(cast[key])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = WCS(cast)
            naive = WCS(raw)  # what astropy builds from the raw header: CRVAL 0, unit CD
        assert np.allclose(reference.wcs.crval, [124.6, 25.3], atol=0.1)
        assert np.allclose(naive.wcs.crval, 0)
        # a grid of "stars" over the frame
        x, y = np.meshgrid(np.linspace(20, 1400, 8), np.linspace(20, 1350, 8))
        sky = reference.pixel_to_world(x.ravel(), y.ravel())
        px, py = frame.wcs.world_to_pixel(sky)
        assert np.max(np.hypot(px - x.ravel(), py - y.ravel())) < 0.5
        # and the SCAMP PV distortion is applied (not silently dropped)
        assert frame.wcs.wcs.ctype[0].startswith("RA---T")
        assert frame.unit == u.adu
        assert frame.data.dtype == np.float32


def test_lowell_mid_times(shared_data):
    """Mid-times equal UTCSTART + EXPTIME/2 and agree with the pipeline's MIDTIMJD (a JD)."""
    files = _lowell_files(shared_data)
    for frame in read_frames(files):
        h = frame.meta
        start = Time(f"{h['DATE-OBS']}T{h['UTCSTART']}", scale="utc")
        t = mid_exposure_time(frame)
        assert abs((t - start).to_value(u.s) - h["EXPTIME"] / 2) < 1e-3
        assert abs((t - Time(h["MIDTIMJD"], format="jd", scale="utc")).to_value(u.s)) < 0.01
        assert t.info.description == "DATE-OBS+UTCSTART + EXPTIME/2"


def test_inputs_unchanged_by_reading(shared_data, digests):
    files = _lowell_files(shared_data)[:2]
    before = digests(files)
    frames = read_frames(files)
    frames[0].data[:] = 0  # the arrays handed out are copies, not views of the files
    assert digests(files) == before


def test_hst_multi_extension(shared_data):
    path = shared_data("hst-headers/sample_svm_flt.fits")
    (frame,) = read_frames(str(path))
    with fits.open(path) as hdul:
        err, dq = hdul["ERR"].data, hdul["DQ"].data
        expstart, expend = hdul[0].header["EXPSTART"], hdul[0].header["EXPEND"]
    assert frame.unit == u.electron / u.s
    assert np.array_equal(frame.uncertainty.array, err.astype(np.float32))
    assert np.array_equal(frame.mask, dq != 0)
    t = mid_exposure_time(frame)
    assert abs(t.mjd - (expstart + expend) / 2) * 86400 < 1e-3
    assert frame.wcs.has_celestial


def test_hst_lookup_table_distortion(shared_data):
    """WFC3 flc: the SIP + lookup-table distortion needs the open file; it is read."""
    (frame,) = read_frames(str(shared_data("hst-headers/sample_svm_flc.fits")))
    assert frame.wcs.sip is not None
    assert frame.wcs.cpdis1 is not None or frame.wcs.det2im1 is not None


def test_second_chip(shared_data):
    path = str(shared_data("hst-headers/sample_svm_flc.fits"))
    (chip2,) = read_frames(path, hdu=("SCI", 2))
    assert chip2.meta["EXTVER"] == 2
    with pytest.raises(FrameError, match="has no HDU"):
        read_frames(path, hdu=("SCI", 5))


def test_gmos_variance_extension(shared_data):
    (frame,) = read_frames(str(shared_data("cosmic-rays/gmos.fits")), unit="adu")
    with fits.open(shared_data("cosmic-rays/gmos.fits")) as hdul:
        var = hdul["VAR"].data
    assert np.allclose(frame.uncertainty.array ** 2 if frame.uncertainty.uncertainty_type == "std"
                       else frame.uncertainty.array, var, rtol=1e-6)


def test_wallace_frames_have_no_wcs_and_are_refused(shared_data):
    from shiftstack_ccd._utils import require_celestial_wcs
    files = sorted(glob.glob(str(shared_data("wallace-2713")) + "/*Light*.fit"))
    with pytest.warns(Warning, match="no BUNIT"):
        frames = read_frames(files)
    assert all(f.wcs is None for f in frames)
    t = mid_exposure_time(frames[0])
    assert t.isot == "2018-10-13T02:04:40.984"  # DATE-OBS (ISO start) + 180 s / 2
    with pytest.raises(FrameError, match="has no celestial WCS.*OBJCTRA") as info:
        require_celestial_wcs(frames[0], "shift_and_stack")
    assert "Light.Open.00000015.fit" in str(info.value)


# --- errors on bad input -----------------------------------------------------------------

def _write(path, data, **cards):
    hdu = fits.PrimaryHDU(data)
    for key, value in cards.items():
        hdu.header[key.replace("_", "-")] = value
    hdu.writeto(path)
    return path


def test_long_paths_are_kept_without_a_warning():
    """SSFILE holds the whole path; its comment is cut (or left out) to fit the card, by
    us rather than by astropy with a warning, whatever the path's length."""
    import tempfile
    from pathlib import Path
    good = dict(DATE_OBS="2020-01-01T00:00:00", EXPTIME=10.0, BUNIT="adu")
    tried = set()
    # a short folder (pytest's tmp_path may fill a card alone)
    with tempfile.TemporaryDirectory() as folder:
        for n in range(1, 80):
            path = Path(folder) / f"{'f' * n}.fits"
            image = fits.Card("SSFILE", str(path)).image  # longer strings: CONTINUE cards
            length = len(image.rstrip()) if len(image) == 80 else 81
            if length < 70 or length in tried:
                continue
            tried.add(length)
            _write(path, np.zeros((5, 5), dtype=np.float32), **good)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                frame = read_frames(str(path))[0]
                frame.meta.tostring()  # every card formats without a warning
            assert frame.meta["SSFILE"] == str(path)
    assert tried == set(range(70, 82))  # up to the end of one card, and beyond


def test_errors_name_the_file(tmp_path):
    good = dict(DATE_OBS="2020-01-01T00:00:00", EXPTIME=10.0, BUNIT="adu")
    with pytest.raises(FrameError, match="no such file"):
        read_frames(str(tmp_path / "missing.fits"))
    with pytest.raises(FrameError, match="matches no file"):
        read_frames(str(tmp_path / "*.fits"))
    notfits = tmp_path / "notfits.fits"
    notfits.write_text("hello")
    with pytest.raises(FrameError, match="notfits.fits: cannot be read as FITS"):
        read_frames(str(notfits))
    nans = _write(tmp_path / "nans.fits", np.full((5, 5), np.nan, dtype=np.float32), **good)
    with pytest.raises(FrameError, match="nans.fits: every pixel is masked"):
        read_frames(str(nans))
    notime = _write(tmp_path / "notime.fits", np.zeros((5, 5), dtype=np.float32), BUNIT="adu")
    with pytest.raises(FrameError, match="notime.fits: cannot tell when"):
        read_frames(str(notime))
    badunit = _write(tmp_path / "badunit.fits", np.zeros((5, 5)),
                     **{**good, "BUNIT": "furlongs per fortnight"})
    with pytest.raises(FrameError, match="badunit.fits: BUNIT"):
        read_frames(str(badunit))
    badwcs = _write(tmp_path / "badwcs.fits", np.zeros((5, 5)), **good, CTYPE1="RA---TAN",
                    CTYPE2="DEC--TAN", CRVAL1="abc", CRVAL2=1.0)
    with pytest.raises(FrameError, match="badwcs.fits: WCS card CRVAL1"):
        read_frames(str(badwcs))


def test_nonfinite_pixels_are_masked(tmp_path):
    data = np.ones((6, 6), dtype=np.float32)
    data[2, 3] = np.nan
    path = _write(tmp_path / "f.fits", data, DATE_OBS="2020-01-01T00:00:00", EXPTIME=1.0,
                  BUNIT="electron")
    (frame,) = read_frames(str(path))
    assert frame.mask[2, 3] and frame.mask.sum() == 1
    assert frame.unit == u.electron


def test_image_file_collection_and_ccddata_lists(tmp_path):
    from ccdproc import ImageFileCollection
    for i in range(3):
        _write(tmp_path / f"f{i}.fits", np.full((4, 4), i, dtype=np.float32),
               DATE_OBS=f"2020-01-01T00:0{i}:00", EXPTIME=1.0, BUNIT="adu",
               IMAGETYP="LIGHT" if i else "BIAS")
    collection = ImageFileCollection(tmp_path).filter(imagetyp="LIGHT")
    frames = read_frames(collection)
    assert sorted(float(f.data[0, 0]) for f in frames) == [1.0, 2.0]
    ccd = CCDData(np.zeros((3, 3)), unit="adu")
    (copy,) = read_frames([ccd])
    assert copy is not ccd and copy.data is not ccd.data


def test_frame_wcs_roundtrip_to_sky(shared_data):
    """The cleaned WCS of a Lowell frame points where the catalog says the field is."""
    (frame,) = read_frames(_lowell_files(shared_data)[:1])
    center = frame.wcs.pixel_to_world(frame.shape[1] / 2, frame.shape[0] / 2)
    telescope = SkyCoord(frame.meta["TELRA"], frame.meta["TELDEC"], unit=(u.hourangle, u.deg))
    assert center.separation(telescope) < 5 * u.arcmin


def test_ccddata_written_files_keep_uncertainty_and_mask(tmp_path):
    from astropy.nddata import StdDevUncertainty
    from astropy.wcs import WCS
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [10, 20]
    w.wcs.crpix = [3, 3]
    w.wcs.cdelt = [-1e-4, 1e-4]
    mask = np.zeros((5, 5), bool)
    mask[1, 2] = True
    ccd = CCDData(np.arange(25, dtype=np.float32).reshape(5, 5), unit="electron", wcs=w,
                  mask=mask, uncertainty=StdDevUncertainty(np.full((5, 5), 2.5, np.float32)),
                  meta={"DATE-OBS": "2020-01-01T00:00:00", "EXPTIME": 10.0})
    path = tmp_path / "ccd.fits"
    ccd.write(path)
    (back,) = read_frames(str(path))
    assert np.array_equal(back.mask, mask)
    assert back.uncertainty.uncertainty_type == "std"
    assert np.all(back.uncertainty.array == 2.5)
    assert np.array_equal(back.data, ccd.data)


@pytest.mark.parametrize("name, hdu", [("lowell42-5945/5945/20190326.0135.fits", None),
                                       ("hst-headers/sample_svm_flc.fits", ("SCI", 2))])
def test_footprint_is_the_frame_without_pixels(shared_data, name, hdu):
    """read_footprint gives read_frame's header, shape and WCS (lookup tables included), and
    read_frame(footprint=) gives the same frame as reading everything again."""
    from shiftstack_ccd import read_footprint
    from shiftstack_ccd.frames import read_frame
    path = str(shared_data(name))
    footprint = read_footprint(path, hdu=hdu)
    full = read_frame(path, hdu=hdu)
    assert footprint.shape == full.shape
    assert list(footprint.header.items()) == list(full.meta.items())
    x, y = np.array([3.0, 500.5, 1000.0]), np.array([7.0, 250.2, 1010.0])
    assert np.array_equal(footprint.wcs.pixel_to_world_values(x, y),
                          full.wcs.pixel_to_world_values(x, y))
    again = read_frame(path, hdu=hdu, footprint=footprint)
    assert np.array_equal(again.data, full.data)
    assert list(again.meta.items()) == list(full.meta.items())
    assert again.wcs is not footprint.wcs and again.meta is not footprint.header
    assert np.array_equal(again.wcs.pixel_to_world_values(x, y),
                          full.wcs.pixel_to_world_values(x, y))
    assert again.data.dtype == full.data.dtype == np.float32


@pytest.mark.parametrize("bzero, bscale, blank", [(32768, 1, None), (32768, 1, -32768),
                                                  (0, 1, -32768), (100, 2, None)])
def test_16_bit_frames_read_alike_with_a_footprint(tmp_path, bzero, bscale, blank):
    """With a footprint, 16-bit pixels are read scaled by astropy (float32 at once); the
    frame is the one read without: same numbers, NaN and mask where BLANK says, header."""
    from shiftstack_ccd import read_footprint
    from shiftstack_ccd.frames import read_frame
    raw = np.arange(-32768, 32768, 16, dtype=np.int16).reshape(64, 64)
    hdu = fits.PrimaryHDU(raw, do_not_scale_image_data=True)
    hdu.header.update({"BZERO": bzero, "BSCALE": bscale, "BUNIT": "adu",
                       "DATE-OBS": "2024-03-01T03:00:00", "EXPTIME": 1.0})
    if blank is not None:
        hdu.header["BLANK"] = blank
    path = str(tmp_path / "frame.fits")
    hdu.writeto(path)
    full = read_frame(path)
    again = read_frame(path, footprint=read_footprint(path))
    assert again.data.dtype == full.data.dtype == np.float32
    assert np.array_equal(again.data, full.data, equal_nan=True)
    assert np.array_equal(again.mask, full.mask)
    # (a truly scaled image's header is rewritten by astropy when read without a footprint:
    # BITPIX -32, no BZERO/BSCALE; the footprint keeps the file's)
    scaling = ("BITPIX", "BZERO", "BSCALE") if (bzero, bscale) == (100, 2) else ()
    assert ([c for c in again.meta.items() if c[0] not in scaling]
            == [c for c in full.meta.items() if c[0] not in scaling])
    expected = raw.astype(float) * bscale + bzero  # FITS: physical = BZERO + BSCALE * raw
    good = ~np.isnan(full.data)
    assert np.array_equal(full.data[good], expected[good])


@pytest.mark.parametrize("compressed", [False, True])
def test_stacks_are_told_by_their_sskind_card(tmp_path, compressed):
    """expand_files leaves out files with an SSKIND card in the primary header (the card
    found by its keyword, on any block of the header; gzipped files through astropy) and
    keeps frames whose header merely mentions SSKIND elsewhere."""
    from shiftstack_ccd.frames import expand_files
    suffix = ".fits.gz" if compressed else ".fits"
    frame = fits.PrimaryHDU(np.zeros((4, 4), np.float32))
    frame.header["COMMENT"] = "SSKIND  = 'target' is only text here"
    frame.header["HISTORY"] = "SSKIND"
    stack = fits.PrimaryHDU(np.zeros((4, 4), np.float32))
    for i in range(60):  # the card on the header's second 2880-byte block
        stack.header[f"PAD{i}"] = i
    stack.header["SSKIND"] = ("target", "stacked on the target")
    frame.writeto(tmp_path / f"a{suffix}")
    stack.writeto(tmp_path / f"b{suffix}")
    with pytest.warns(AstropyUserWarning, match="a stack written by shiftstack_ccd"):
        kept = expand_files(str(tmp_path / f"*{suffix}"))
    assert kept == [str(tmp_path / f"a{suffix}")]
