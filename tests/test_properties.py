"""Property-based tests (hypothesis): header time dialects, ephemeris tables, stack parameters.

Each property states what must hold for every input drawn: the right answer, or one of this
package's errors with a message naming the problem; never another exception.
"""

import datetime
import math
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from erfa import ErfaWarning
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import shiftstack_ccd as ss
from shiftstack_ccd._validate import stack_parameters
from shiftstack_ccd.exceptions import EphemerisError, FrameError, ParameterError

FAST = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# A start time to the millisecond, 1995-2025: observed epochs, where UTC is defined (erfa
# calls years beyond its leap-second table "dubious", with a warning).
starts = st.datetimes(min_value=datetime.datetime(1995, 1, 1),
                      max_value=datetime.datetime(2025, 12, 31)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
exptimes = st.floats(min_value=0.0, max_value=4000.0, allow_nan=False).map(
    lambda x: round(x, 3))


def _iso(d, sep="T", digits=3):
    text = d.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    return text + (f".{d.microsecond // 1000:03d}" if digits else "")


def _mjd(d):
    return Time(d, scale="utc").mjd


@st.composite
def dialects(draw):
    """(header cards, true UTC mid-exposure) in one of the dialects real headers use."""
    start, exptime = draw(starts), draw(exptimes)
    end = start + datetime.timedelta(seconds=exptime)
    mid = start + datetime.timedelta(seconds=exptime / 2)
    kind = draw(st.sampled_from(["isot", "iso-space", "date+time", "date+utcstart", "old-date",
                                 "mjd-obs", "expstart", "date-beg", "date-avg", "mjd-avg",
                                 "zulu"]))
    if kind == "isot":
        cards = {"DATE-OBS": _iso(start), "EXPTIME": exptime}
    elif kind == "iso-space":
        cards = {"DATE-OBS": _iso(start, " "), "EXPTIME": exptime}
        if draw(st.booleans()):  # the redundant TIME-OBS that was once added twice
            cards["TIME-OBS"] = start.strftime("%H:%M:%S.%f")[:-3]
    elif kind == "date+time":
        key = draw(st.sampled_from(["TIME-OBS", "UT", "UTC-OBS", "UTSTART", "TIME-BEG"]))
        cards = {"DATE-OBS": start.strftime("%Y-%m-%d"),
                 key: start.strftime("%H:%M:%S.%f")[:-3], "EXPTIME": exptime}
    elif kind == "date+utcstart":  # Lowell: seconds without a leading zero
        seconds = start.second + start.microsecond / 1e6
        cards = {"DATE-OBS": start.strftime("%Y-%m-%d"),
                 "UTCSTART": f"{start.hour:02d}:{start.minute:02d}:{seconds:g}",
                 "EXPOSURE": exptime}
    elif kind == "old-date":
        assume(start.year < 2000)
        cards = {"DATE-OBS": start.strftime("%d/%m/%y"),
                 "TIME-OBS": start.strftime("%H:%M:%S.%f")[:-3], "EXPTIME": exptime}
    elif kind == "mjd-obs":
        cards = {"MJD-OBS": _mjd(start), "EXPTIME": exptime}
    elif kind == "expstart":
        cards = {"EXPSTART": _mjd(start), "EXPEND": _mjd(end)}
    elif kind == "date-beg":
        cards = {"DATE-BEG": _iso(start), "DATE-END": _iso(end)}
    elif kind == "date-avg":
        cards = {"DATE-AVG": _iso(mid)}
    elif kind == "mjd-avg":
        cards = {"MJD-AVG": _mjd(mid)}
    else:
        cards = {"DATE-OBS": _iso(start) + "Z", "EXPTIME": exptime}
    return cards, Time(mid, scale="utc"), kind


@FAST
@given(dialects())
def test_mid_exposure_time_equals_the_truth(case):
    cards, truth, kind = case
    t = ss.mid_exposure_time(fits.Header(cards))
    assert t.scale == "utc"
    # MJD cards in float64 hold ~1 us at MJD 60000; ISO cards hold 1 ms (halved, 0.5 ms)
    assert abs((t - truth).to_value(u.ms)) < 1.0, (cards, t.isot, truth.isot)


@FAST
@given(starts, exptimes, st.sampled_from(["TT", "TAI", "TDB", "UTC"]),
       st.sampled_from(["DATE-OBS", "MJD-OBS", "DATE-AVG"]))
def test_time_scales_convert_to_utc(start, exptime, scale, key):
    t_start = Time(start, scale="utc")
    truth = t_start + exptime / 2 * u.s
    in_scale = getattr(t_start, scale.lower())
    if key == "DATE-OBS":
        cards = {"DATE-OBS": in_scale.isot, "EXPTIME": exptime}
    elif key == "MJD-OBS":
        cards = {"MJD-OBS": in_scale.mjd, "EXPTIME": exptime}
    else:
        cards = {"DATE-AVG": getattr(truth, scale.lower()).isot}
    t = ss.mid_exposure_time(fits.Header({**cards, "TIMESYS": scale}))
    assert t.scale == "utc"
    assert abs((t - truth).to_value(u.ms)) < 1.0


_garbage = st.one_of(st.text(max_size=12), st.floats(allow_nan=True, allow_infinity=True),
                     st.integers(-10**9, 10**9), st.booleans(), st.just(""))


@FAST
@given(dialects(), st.data())
def test_mangled_time_cards_give_the_truth_or_a_frame_error(case, data):
    """Any one card replaced by garbage or removed: the truth, another sound reading, or a
    FrameError naming the file; never another exception."""
    cards, truth, kind = case
    header = fits.Header(cards)
    header["SSFILE"] = "night/f.fits"
    key = data.draw(st.sampled_from(list(cards)))
    if data.draw(st.booleans()):
        del header[key]
    else:
        value = data.draw(_garbage)
        try:
            header[key] = value
        except (ValueError, TypeError):  # astropy refuses it as a card: nothing to read
            return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = ss.mid_exposure_time(header)
    except FrameError as exc:
        assert "night/f.fits" in str(exc) and "\n" not in str(exc)
        return
    with warnings.catch_warnings():  # a garbage card may put t in a "dubious year" for erfa
        warnings.simplefilter("ignore", ErfaWarning)
        moved = abs((t - truth).to_value(u.ms))
    if moved < 1.0:
        return
    # another reading is sound only if the new value itself reads as a number or a date
    assert key in header, f"{key} removed, and the time moved to {t.isot}"
    value = header[key]
    assert not isinstance(value, bool), (key, value)
    try:
        assert math.isfinite(float(value))
    except ValueError:
        Time(str(value).strip().rstrip("Z"))


# ----------------------------------------------------------------------------------------
# Ephemeris tables
# ----------------------------------------------------------------------------------------
@st.composite
def linear_tables(draw):
    # no subnormal numbers (1e-320 degrees): a table reader rightly warns on them
    ra0 = draw(st.floats(0, 359.9, allow_subnormal=False))
    dec0 = draw(st.floats(-80, 80, allow_subnormal=False))
    rates = draw(st.tuples(st.floats(-3600, 3600), st.floats(-3600, 3600)))  # arcsec/h
    n = draw(st.integers(2, 30))
    step = draw(st.floats(1.0, 600.0))  # seconds
    # 1995 to 2025: observed epochs, where UTC is defined (leap seconds known)
    t0 = Time(draw(st.floats(50000, 61000)), format="mjd", scale="utc")
    return ra0, dec0, rates, n, step, t0


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(linear_tables(), st.sampled_from(["ecsv", "csv"]))
def test_ephemeris_tables_round_trip(tmp_path_factory, case, fmt):
    ra0, dec0, (dra, ddec), n, step, t0 = case
    linear = ss.Ephemeris.linear(SkyCoord(ra0, dec0, unit="deg"), t0,
                                 dra * u.arcsec / u.hour, ddec * u.arcsec / u.hour)
    times = t0 + np.arange(n) * step * u.s
    pos = linear.at(times)
    table = Table({"time": times.isot, "ra": pos.ra.deg, "dec": pos.dec.deg})
    path = tmp_path_factory.mktemp("eph") / f"eph.{fmt}"
    table.write(path, format="ascii.ecsv" if fmt == "ecsv" else "ascii.csv")
    eph = ss.Ephemeris.from_table(path)
    inside = times[0] + (times[-1] - times[0]) * np.linspace(0, 1, 7)
    got, want = eph.at(inside), linear.at(inside)
    # a table samples the path; between samples it interpolates: within 1 mas here
    assert np.all(got.separation(want).to_value(u.mas) < 1.0)
    with pytest.raises(EphemerisError):
        eph.at(times[-1] + 1 * u.day)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_garbage, _garbage, _garbage), max_size=5))
# numbers beyond float64 (1e-320) in the garbage: astropy's reader says so, rightly; what
# the package does next is the property
@pytest.mark.filterwarnings("ignore:OverflowError converting to FloatType")
def test_bad_ephemeris_tables_are_refused_by_name(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("bad") / "eph.csv"
    text = "time,ra,dec\n" + "".join(f"{a},{b},{c}\n".replace("\n,", ",")
                                     for a, b, c in rows)
    path.write_text(text)
    try:
        eph = ss.Ephemeris.from_table(path)
    except (EphemerisError, ValueError) as exc:
        assert isinstance(exc, (EphemerisError, ss.ShiftStackError)), repr(exc)
        return
    # accepted only if usable: a finite position at its first epoch
    position = eph.at(eph.time_range[0])
    assert np.isfinite(position.ra.deg) and abs(position.dec.deg) <= 90


# ----------------------------------------------------------------------------------------
# Stack parameters
# ----------------------------------------------------------------------------------------
_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 200),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from(["mean", "median", "sum", "auto", "shift", "warp",
                                     "threads", "bicubic", "north", "0.5 arcsec", "3 m",
                                     "inverse-variance", "exptime"]),
                    st.tuples(st.integers(-2, 50), st.integers(-2, 50)),
                    st.builds(lambda v, unit: v * unit, st.floats(-10, 10),
                              st.sampled_from([u.arcsec, u.deg, u.m, u.pix, u.one])))
_PARAMETERS = ["method", "size", "resample", "sigma_clip", "sigma_low", "sigma_high",
               "clip_gradient", "pixel_scale", "orientation", "sky_stack", "interpolation",
               "subtract_static", "track_radius", "static_k", "refine", "refine_max_shift",
               "refine_size", "scheduler", "mem_limit", "intermediate", "weights",
               "frame_weights", "reference_time"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_PARAMETERS), _values)
def test_stack_parameters_accept_or_name_the_parameter(name, value):
    try:
        checked = stack_parameters(**{name: value})
    except ParameterError as exc:
        assert exc.parameter == name and str(exc).startswith(f"{name}: ")
        assert "\n" not in str(exc)
        return
    # accepted: the value means something for this parameter
    value = checked[name]
    if name in ("sigma_low", "sigma_high", "static_k", "refine_max_shift") and \
            value is not None:
        assert value > 0
    if name == "size" and value is not None:
        if isinstance(value, u.Quantity):
            assert value.unit.physical_type == "angle" and value.value > 0
        else:
            assert all(isinstance(v, (int, np.integer)) and v >= 1
                       for v in np.atleast_1d(value))
    if name == "pixel_scale" and value is not None:
        assert value.unit.physical_type == "angle" and value.value > 0
    if name == "track_radius" and value is not None:
        assert value >= 2
    if name == "refine_size":
        assert isinstance(value, int) and value >= 8
