"""Tests of the Horizons path: request building, batching, cache, parsing, errors.

The HTTP transport is mocked (``requests.adapters.HTTPAdapter.send``), so astroquery
builds and encodes the real request, which is captured, and gets back a recorded
Horizons answer (``$SHIFTSTACK_CCD_DATA/ephemerides/``). Positions and rates are checked
against the numbers printed in those answers.
"""

import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import requests
import astropy.units as u
from astropy.coordinates import EarthLocation
from astropy.io import fits
from astropy.time import Time

from shiftstack_ccd.ephemeris import Ephemeris, ephemeris_for_times
from shiftstack_ccd.ephemeris._sphere import unit_vectors
from shiftstack_ccd.exceptions import EphemerisError, HorizonsError
from shiftstack_ccd.ephemeris.horizons import (CACHE_ENV, default_step, horizons_cache_dir,
                                               parse_horizons_text, plan_epochs)

HERE = Path(__file__).parent / "data" / "ephemerides"
AQ = "ephemerides/astroquery_jplhorizons/"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never touch the user's cache, even when a test forgets cache_dir."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env-cache"))
    return tmp_path / "env-cache"


def recorded(shared_data, name):
    return Path(shared_data(AQ + name)).read_text()


def tlist_answer(single_text):
    """An answer factory: the recorded one-epoch answer, repeated at the epochs requested."""
    lines = single_text.splitlines()
    i0 = lines.index("$$SOE")
    row = lines[i0 + 1]

    def answer(params):
        jds = params["TLIST"].split("\n")
        out = []
        for jd in jds:
            t = Time(jd, format="jd", scale="utc")
            date = t.strftime("%Y-%b-%d %H:%M:%S.%f")[:-3]
            fields = row.split(",")
            fields[0] = " " + date
            fields[1] = f" {float(jd):.9f}"
            out.append(",".join(fields))
        return "\n".join(lines[:i0 + 1] + out + lines[i0 + 2:])
    return answer


def file_columns(text):
    """Independent parse of a recorded CSV answer: {header name: [floats or str]}."""
    lines = text.splitlines()
    i0 = lines.index("$$SOE")
    header = [h.strip() for h in lines[i0 - 2].split(",")]
    rows = [line.split(",") for line in lines[i0 + 1:lines.index("$$EOE")]]
    return {h: [r[k].strip() for r in rows] for k, h in enumerate(header) if h}


# --------------------------------------------------------------------------- parsing
def test_parse_recorded_range_matches_file_numbers(shared_data):
    text = recorded(shared_data, "ceres_ephemerides_range.txt")
    table, meta = parse_horizons_text(text)
    cols = file_columns(text)
    assert len(table) == 4
    np.testing.assert_allclose(table["ra"], np.array(cols["R.A._(ICRF)"], float), atol=1e-10)
    np.testing.assert_allclose(table["dec"], np.array(cols["DEC_(ICRF)"], float), atol=1e-10)
    np.testing.assert_allclose(table["ra_rate_app"], np.array(cols["dRA*cosD"], float),
                               atol=1e-10)
    np.testing.assert_allclose(table["dec_rate_app"], np.array(cols["d(DEC)/dt"], float),
                               atol=1e-10)
    np.testing.assert_allclose(table["ra_3sigma"], np.array(cols["RA_3sigma"], float))
    # times: the JDUT column, read as UTC
    assert table["time"].scale == "utc"
    expected = Time(np.array(cols["Date_________JDUT"], float), format="jd", scale="utc")
    assert np.all(np.abs((table["time"] - expected).to_value(u.us)) < 1)
    assert table["time"][0].isot == "2022-06-10T00:00:00.000"
    # provenance from the header
    assert meta["resolved_name"] == "1 Ceres (A801 AA)"
    assert meta["record"] == "1"
    assert meta["solution"] == "JPL#48"
    assert meta["center_site"] == "GEOCENTRIC"
    assert meta["horizons_time"] == "Fri Jun 10 08:57:29 2022"


def test_rates_rotated_to_icrs_are_derivatives_of_positions(shared_data):
    """Horizons' rates are of-date apparent rates; rotated to ICRS axes they match the
    time derivative of the astrometric positions (1-day steps, 61 rows)."""
    table, _ = parse_horizons_text(
        Path(shared_data("ephemerides/sbpy/TestEphemerisCLI-ceres-horizons.txt")).read_text())
    vec = unit_vectors(table["ra"], table["dec"])
    h = 24.0  # hours between rows
    d = (vec[:-4] - 8 * vec[1:-3] + 8 * vec[3:-1] - vec[4:]) / (12 * h)  # rad/hour
    ra = np.deg2rad(np.asarray(table["ra"]))[2:-2]
    dec = np.deg2rad(np.asarray(table["dec"]))[2:-2]
    east = np.stack([-np.sin(ra), np.cos(ra), 0 * ra], -1)
    north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], -1)
    fd_ra = np.sum(d * east, -1) * 206264.806
    fd_dec = np.sum(d * north, -1) * 206264.806
    icrs = np.hypot(np.asarray(table["ra_rate"])[2:-2] - fd_ra,
                    np.asarray(table["dec_rate"])[2:-2] - fd_dec)
    raw = np.hypot(np.asarray(table["ra_rate_app"])[2:-2] - fd_ra,
                   np.asarray(table["dec_rate_app"])[2:-2] - fd_dec)
    # residual = change of annual aberration (<= 0.015 arcsec/h) + finite-difference noise
    assert icrs.max() < 0.01
    assert raw.max() > 0.05  # the rotation matters at this level


def test_astroquery_table_is_recognised(shared_data):
    """A table as returned by astroquery's Horizons.ephemerides() is read as a Horizons
    ephemeris: same positions, rates rotated to ICRS axes, spline interpolation."""
    from shiftstack_ccd.ephemeris._horizons_parser import astroquery_table

    text = Path(shared_data("ephemerides/sbpy/TestEphemerisCLI-2p-horizons.txt")).read_text()
    raw = astroquery_table(text, "ephemerides", "2P")
    eph = Ephemeris.from_table(raw)
    ref = Ephemeris.from_table(Path(shared_data("ephemerides/sbpy/"
                                                "TestEphemerisCLI-2p-horizons.txt")))
    assert eph.kind == "horizons" and eph.interpolation == "spline"
    assert eph.meta["resolved_name"] == "2P/Encke"
    t = eph.time_range[0] + np.linspace(0.5, 59.5, 7) * u.day
    assert eph.at(t).separation(ref.at(t)).max() < 1 * u.uas
    np.testing.assert_allclose(eph.to_table()["ra_rate"], ref.to_table()["ra_rate"])
    assert ref.meta["record"] == "90000091"


def test_uncertainty_from_3sigma(shared_data):
    eph = Ephemeris.from_table(shared_data(AQ + "no_H.txt"))
    t = eph.time_range[0]
    ra_sig, dec_sig = eph.uncertainty_at(t)
    assert ra_sig.unit == u.arcsec
    assert ra_sig.value == pytest.approx(16005524.0 / 3)
    assert dec_sig.value == pytest.approx(5337286.04 / 3)
    assert eph.meta["record"] == "50000002"
    assert eph.meta["resolved_name"] == "(1935 UZ)"


def test_pole_comet_from_recorded_answer(shared_data):
    """C/1995 O1 at Dec -85.8: interpolating every other day reproduces the dropped rows
    to the 1e-5 deg rounding of the file (36 mas)."""
    table, meta = parse_horizons_text(
        Path(shared_data("ephemerides/sbpy/TestEphemerisCLI-c1995o1-horizons.txt")).read_text())
    assert np.all(np.asarray(table["dec"]) < -85)
    eph = Ephemeris(table[::2], meta=meta)
    assert eph.interpolation == "spline"
    test = table[1:-1:2]
    sep = eph.at(test["time"]).separation(
        Ephemeris(table, meta=meta).at(test["time"])).to(u.mas)
    assert sep.max() < 40 * u.mas


# --------------------------------------------------------------------------- request building
def test_request_parameters_tlist_and_time_scales(shared_data, transport, tmp_path):
    transport.answer = tlist_answer(recorded(shared_data, "ceres_ephemerides_single.txt"))
    # two frames given in TT and TDB: sent as UTC Julian dates
    t_tt = Time("2000-01-01T00:01:04.184", scale="tt")  # = 2000-01-01 00:00:00 UTC
    t_tdb = Time("2000-01-01T01:01:04.184", scale="tdb")
    times = Time([t_tt.utc, t_tdb.utc])
    eph = Ephemeris.from_horizons("Ceres", "568", times=Time([t_tt, t_tdb.tt]),
                                  id_type="smallbody", epochs="tlist", cache_dir=tmp_path)
    p = transport.params()
    assert len(transport.urls) == 1
    assert p["EXTRA_PREC"] == "YES"
    assert p["EPHEM_TYPE"] == "OBSERVER"
    assert p["QUANTITIES"] == "'1,3,9,20,23,24,36'"
    assert p["COMMAND"] == '"Ceres;"'
    assert p["CENTER"] == "'568'"
    assert p["TIME_TYPE"] == "UT"
    assert p["TLIST_TYPE"] == "JD"
    assert p["REF_SYSTEM"] == "ICRF" and p["ANG_FORMAT"] == "DEG"
    assert p["APPARENT"] == "AIRLESS" and p["SKIP_DAYLT"] == "NO"
    sent = [float(s) for s in p["TLIST"].split("\n")]
    assert sent[0] == pytest.approx(2451544.5, abs=1e-9)
    assert sent[1] == pytest.approx(times[1].jd, abs=2e-9)
    # the table keeps the exact epochs, in UTC; at() of the TT input hits the node
    assert eph.to_table()["time"].scale == "utc"
    assert abs((eph.time_range[0] - t_tt).to_value(u.us)) < 100
    assert eph.at(t_tt).separation(eph.at(times[0])).to_value(u.uas) < 1
    assert eph.meta["epochs_mode"] == "tlist"
    assert eph.meta["location"] == "568"


def test_request_parameters_range_and_observers(shared_data, transport, tmp_path):
    transport.answer = recorded(shared_data, "ceres_ephemerides_range.txt")
    night = Time("2022-06-20T03:07:00", scale="utc") + np.arange(5) * 7 * u.min
    Ephemeris.from_horizons("2019 AB", "@hst", times=night, id_type="designation",
                            cache_dir=tmp_path, epochs="range")
    p = transport.params()
    assert p["COMMAND"] == '"DES=2019 AB;"'
    assert p["CENTER"] == "'@hst'"
    assert p["STEP_SIZE"] == '"1m"'  # low Earth orbit: 1-minute default step
    assert p["START_TIME"] == '"2022-06-20 03:06:00"'  # one step before the first frame
    assert p["STOP_TIME"] == '"2022-06-20 03:36:00"'
    assert "TLIST" not in p
    # JWST is on a smooth orbit; the record number of an orbit solution passes through
    Ephemeris.from_horizons("90000091", "500@-170", times=night, id_type="smallbody",
                            cache_dir=tmp_path, epochs="range")
    p = transport.params()
    assert p["COMMAND"] == '"90000091;"' and p["CENTER"] == "'500@-170'"
    assert p["STEP_SIZE"] == '"60m"'
    # a site given as an EarthLocation: geodetic coordinates
    site = EarthLocation.from_geodetic(-111.535 * u.deg, 35.097 * u.deg, 2200 * u.m)
    eph = Ephemeris.from_horizons("Ceres", site, times=night, cache_dir=tmp_path)
    p = transport.params()
    assert p["CENTER"] == "coord@399" and p["COORD_TYPE"] == "GEODETIC"
    lon, lat, elev = (float(x) for x in p["SITE_COORD"].strip("'").split(","))
    assert lon == pytest.approx(-111.535) and lat == pytest.approx(35.097)
    assert elev == pytest.approx(2.2)
    assert p["STEP_SIZE"] == '"20m"'
    assert eph.meta["location"].startswith("-111.535000,35.097000,2.2")
    assert len(transport.urls) == 3


def test_tlist_batches_keep_urls_short(shared_data, transport, tmp_path):
    transport.answer = tlist_answer(recorded(shared_data, "ceres_ephemerides_single.txt"))
    times = Time("2000-01-01T00:00:00") + np.arange(120) * 1.37 * u.day
    eph = Ephemeris.from_horizons("Ceres", "500", times=times, id_type="smallbody",
                                  epochs="tlist", cache_dir=tmp_path)
    sizes = [len(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["TLIST"][0]
                 .split("\n")) for url in transport.urls]
    assert sizes == [50, 50, 20]
    assert max(len(url) for url in transport.urls) < 2000  # astroquery's truncation warning
    assert len(eph) == 120
    assert eph.meta["n_requests"] == 3
    # sparse exact epochs: Hermite with the (ICRS-rotated) Horizons rates at the nodes
    assert eph.interpolation == "hermite"
    ra_rate, dec_rate = eph.rates_at(times[:3])
    np.testing.assert_allclose(ra_rate.value, eph.to_table()["ra_rate"][:3], rtol=1e-9)


def test_auto_chooses_fewer_requests():
    night = Time("2024-03-01T03:00") + np.arange(50) * 5 * u.min
    mode, specs = plan_epochs(night, 20 * u.min)
    assert mode == "range" and len(specs) == 1
    rows = (Time(specs[0]["stop"]) - Time(specs[0]["start"])).to_value(u.min) / 20 + 1
    # frames 03:00-07:05 -> grid rows 03:00-07:20, plus one row each side: 02:40-07:40
    assert rows == 16
    year = Time("2024-01-01") + np.arange(50) * 7.3 * u.day
    mode, specs = plan_epochs(year, 20 * u.min)
    assert mode == "tlist" and len(specs) == 1
    mode, specs = plan_epochs(year, 20 * u.min, epochs="range")
    assert len(specs) == 6  # 5000-row requests
    starts = [Time(s["start"]) for s in specs]
    assert all(np.diff([t.jd for t in starts]) > 0)


def test_default_steps():
    assert default_step("688") == 20 * u.min
    assert default_step(EarthLocation.from_geodetic(0, 0, 0)) == 20 * u.min
    assert default_step("500") == 60 * u.min
    assert default_step("@jwst") == 60 * u.min
    assert default_step("@hst") == 1 * u.min
    assert default_step("500@-999") == 1 * u.min  # unknown spacecraft: assume low orbit


# --------------------------------------------------------------------------- one request, cache
def test_fifty_frames_one_request_then_none(shared_data, transport, tmp_path):
    transport.answer = recorded(shared_data, "ceres_ephemerides_range.txt")
    frames = Time("2022-06-20T02:00:00", scale="utc") + np.arange(50) * 6 * u.min
    eph = Ephemeris.from_horizons("Ceres", "688", times=frames, id_type="smallbody",
                                  cache_dir=tmp_path)
    assert len(transport.urls) == 1
    assert eph.meta["from_cache"] is False
    files = list((tmp_path / "horizons").glob("*.json"))
    assert len(files) == 1
    entry = json.loads(files[0].read_text())
    assert entry["url"] == transport.urls[0]
    assert entry["params"]["EXTRA_PREC"] == "YES"
    again = Ephemeris.from_horizons("Ceres", "688", times=frames, id_type="smallbody",
                                    cache_dir=tmp_path)
    assert len(transport.urls) == 1  # no new request
    assert again.meta["from_cache"] is True
    assert again.meta["query_time"] == eph.meta["query_time"]  # the original query's
    assert again.at(frames).separation(eph.at(frames)).max() == 0 * u.deg
    # cache=False: asks again and writes nothing new
    Ephemeris.from_horizons("Ceres", "688", times=frames, id_type="smallbody",
                            cache_dir=tmp_path, cache=False)
    assert len(transport.urls) == 2
    assert len(list((tmp_path / "horizons").glob("*.json"))) == 1


def test_cache_location_from_environment(shared_data, transport, private_cache):
    transport.answer = recorded(shared_data, "ceres_ephemerides_range.txt")
    frames = Time("2022-06-20T02:00:00") + np.arange(3) * u.hour
    ephemeris_for_times(frames, "Ceres", "500", id_type="smallbody")
    assert horizons_cache_dir() == private_cache / "horizons"
    assert len(list((private_cache / "horizons").glob("*.json"))) == 1


def test_ephemeris_for_times_writes_and_round_trips(shared_data, transport, tmp_path):
    transport.answer = recorded(shared_data, "ceres_ephemerides_range.txt")
    frames = Time("2022-06-12T02:00:00") + np.arange(10) * u.day
    out = tmp_path / "eph.ecsv"
    eph = ephemeris_for_times(frames, "Ceres", "500", id_type="smallbody", cache_dir=tmp_path,
                              output=out)
    back = Ephemeris.from_table(out)
    assert back.kind == "horizons"
    for key in ("target", "resolved_name", "record", "location", "query_time",
                "astroquery_version", "epochs_mode", "step", "request_urls"):
        assert back.meta[key] == eph.meta[key]
    a, b = eph.to_table(), back.to_table()
    assert a.colnames == b.colnames
    for name in a.colnames:
        if name == "time":
            assert np.all(np.abs((a[name] - b[name]).to_value(u.us)) < 1)
        else:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-15)
            assert a[name].unit == b[name].unit
    assert back.at(frames).separation(eph.at(frames)).max() < 1 * u.uas
    assert back.interpolation == eph.interpolation == "spline"


def test_header_cards_fit_fits(shared_data, transport, tmp_path):
    transport.answer = recorded(shared_data, "ceres_ephemerides_range.txt")
    frames = Time("2022-06-20T02:00:00") + np.arange(3) * u.hour
    eph = Ephemeris.from_horizons("Ceres", "688", times=frames, id_type="smallbody",
                                  cache_dir=tmp_path)
    cards = eph.header_cards()
    header = fits.Header()
    for key, value, comment in cards:
        assert len(key) <= 8
        card = fits.Card(key, value, comment)
        assert len(card.image) == 80
        header.append(card)
    assert header["EPHKIND"] == "horizons"
    assert header["EPHNAME"] == "1 Ceres (A801 AA)"
    assert header["EPHREC"] == "1"
    assert header["EPHLOC"] == "688"
    assert header["EPHAQVER"] == eph.meta["astroquery_version"]
    assert header["EPHMODE"] == "range" and header["EPHSTEP"] == "20m"


# --------------------------------------------------------------------------- errors
def test_ambiguous_target_lists_candidates(transport, tmp_path):
    transport.answer = (HERE / "ambiguous_1P.txt").read_text()
    with pytest.raises(HorizonsError, match="several objects") as exc:
        Ephemeris.from_horizons("1P", "500", times=Time("2024-01-01"), id_type="designation",
                                cache_dir=tmp_path)
    msg = str(exc.value)
    for record in ("90000026", "90000030"):
        assert record in msg
    assert "id_type='smallbody'" in msg
    assert not (tmp_path / "horizons").exists() or not any((tmp_path / "horizons").iterdir())
    transport.answer = (HERE / "ambiguous_major.txt").read_text()
    with pytest.raises(HorizonsError, match="ID#") as exc:
        Ephemeris.from_horizons("Europa", "500", times=Time("2024-01-01"), cache_dir=tmp_path)
    assert "502" in str(exc.value)


def test_unknown_target(transport, tmp_path):
    transport.answer = (HERE / "unknown_target.txt").read_text()
    with pytest.raises(HorizonsError, match="knows no object matching 'nosuchobjectxyz'"):
        Ephemeris.from_horizons("nosuchobjectxyz", "500", times=Time("2024-01-01"),
                                cache_dir=tmp_path)


def test_no_network_points_to_cache_and_from_table(transport, tmp_path):
    transport.error = requests.exceptions.ConnectionError("Name or service not known")
    with pytest.raises(HorizonsError) as exc:
        Ephemeris.from_horizons("Ceres", "500", times=Time("2024-01-01"), cache_dir=tmp_path)
    msg = str(exc.value)
    assert "No network?" in msg
    assert str(tmp_path / "horizons") in msg
    assert "Ephemeris.from_table" in msg


def test_horizons_refusal_and_http_error(shared_data, transport, tmp_path):
    transport.answer = recorded(shared_data, "tlist_error.txt")
    with pytest.raises(HorizonsError, match="no TLIST values found"):
        Ephemeris.from_horizons("Mars", "500", times=Time("2024-01-01"), epochs="tlist",
                                cache_dir=tmp_path)
    transport.answer = "Service Unavailable"
    transport.status = 503
    with pytest.raises(HorizonsError, match="HTTP 503"):
        Ephemeris.from_horizons("Mars", "500", times=Time("2024-01-01"), cache_dir=tmp_path)


def test_answer_not_covering_epochs(shared_data, transport, tmp_path):
    transport.answer = recorded(shared_data, "ceres_ephemerides_range.txt")  # Jun 10 - Jul 10
    frames = Time("2022-07-09T20:00:00") + np.arange(3) * 3 * u.hour
    with pytest.raises(HorizonsError, match="1 requested epoch"):
        Ephemeris.from_horizons("Ceres", "500", times=frames, id_type="smallbody",
                                cache_dir=tmp_path)


def test_epochs_outside_the_ephemeris(shared_data, transport, tmp_path):
    transport.answer = recorded(shared_data, "ceres_ephemerides_range.txt")
    frames = Time("2022-06-20T02:00:00") + np.arange(3) * u.hour
    eph = Ephemeris.from_horizons("Ceres", "500", times=frames, id_type="smallbody",
                                  cache_dir=tmp_path)
    with pytest.raises(EphemerisError) as exc:
        eph.at(Time(["2022-06-15T00:00:00", "2022-07-11T06:00:00"]))
    msg = str(exc.value)
    assert "1 epoch(s) outside" in msg and "2022-07-11T06:00:00" in msg
    assert "2022-06-10 00:00:00.000 to 2022-07-10 00:00:00.000 UTC" in msg
    assert "does not extrapolate" in msg


def test_bad_arguments(tmp_path):
    with pytest.raises(EphemerisError, match="needs times"):
        Ephemeris.from_horizons("Ceres", "500")
    with pytest.raises(EphemerisError, match="epochs must be"):
        Ephemeris.from_horizons("Ceres", "500", times=Time("2024-01-01"), epochs="daily",
                                cache_dir=tmp_path)
    with pytest.raises(EphemerisError, match="lon, lat and elevation"):
        Ephemeris.from_horizons("Ceres", {"lon": 1}, times=Time("2024-01-01"),
                                cache_dir=tmp_path)


# --------------------------------------------------------------------------- live
@pytest.mark.remote_data
def test_live_horizons_ceres(tmp_path):
    frames = Time("2022-06-20T06:00:00") + np.arange(4) * 30 * u.min
    eph = Ephemeris.from_horizons("Ceres", "688", times=frames, id_type="smallbody",
                                  cache_dir=tmp_path)
    assert eph.meta["resolved_name"].startswith("1 Ceres")
    table = eph.to_table()
    # extra precision: more than 5 decimals of a degree
    assert np.any(np.abs(table["ra"] * 1e5 - np.round(table["ra"] * 1e5)) > 1e-3)
    # agrees with the recorded geocentric answer within the diurnal parallax (< 4 arcsec)
    ref = Ephemeris.from_horizons("Ceres", "500", times=frames, id_type="smallbody",
                                  cache_dir=tmp_path)
    assert eph.at(frames).separation(ref.at(frames)).max() < 4 * u.arcsec
    tlist = Ephemeris.from_horizons("Ceres", "688", times=frames, id_type="smallbody",
                                    cache_dir=tmp_path, epochs="tlist")
    assert tlist.at(frames).separation(eph.at(frames)).max() < 1 * u.mas
