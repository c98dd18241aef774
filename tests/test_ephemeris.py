"""Tests of the Ephemeris class: linear model, tables, interpolation, I/O, provenance."""

import numpy as np
import pytest
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from shiftstack_ccd.ephemeris import Ephemeris
from shiftstack_ccd.ephemeris._sphere import radec
from shiftstack_ccd.exceptions import EphemerisError, OutputExistsError

RATE = u.arcsec / u.hour


def rotating_track(t, t0, pole, start, rate):
    """Exact uniform rotation of the point ``start`` about the axis ``pole`` at ``rate``
    (angle per time): a small circle on the sky. Unit vectors and their derivatives."""
    pole = pole / np.linalg.norm(pole)
    w = rate.to_value(u.rad / u.day)
    ang = w * (t - t0).to_value(u.day)
    s0 = start / np.linalg.norm(start)
    ax = np.cross(pole, s0)
    par = np.dot(pole, s0) * pole
    perp = s0 - par
    vec = par + perp * np.cos(ang)[:, None] + ax * np.sin(ang)[:, None]
    dvec = w * (-perp * np.sin(ang)[:, None] + ax * np.cos(ang)[:, None])  # rad/day
    return vec, dvec


def table_from_vectors(times, vec, dvec=None):
    ra, dec = radec(vec)
    tab = Table({"time": times, "ra": ra * u.deg, "dec": dec * u.deg})
    if dvec is not None:
        ra_r = np.deg2rad(ra)
        dec_r = np.deg2rad(dec)
        east = np.stack([-np.sin(ra_r), np.cos(ra_r), 0 * ra_r], -1)
        north = np.stack([-np.sin(dec_r) * np.cos(ra_r), -np.sin(dec_r) * np.sin(ra_r),
                          np.cos(dec_r)], -1)
        k = (1 * u.rad / u.day).to_value(RATE)
        tab["ra_rate"] = np.sum(dvec * east, -1) * k * RATE
        tab["dec_rate"] = np.sum(dvec * north, -1) * k * RATE
    return tab


def sep_uas(coord, vec):
    ra, dec = radec(vec)
    return coord.separation(SkyCoord(ra * u.deg, dec * u.deg)).to_value(u.uas)


# --------------------------------------------------------------------------- linear
def test_linear_is_spherical_offsets_by():
    pos = SkyCoord(359.99 * u.deg, -30 * u.deg, frame="icrs")
    epoch = Time("2024-03-01T03:00:00", scale="utc")
    eph = Ephemeris.linear(pos, epoch, 120 * RATE, -45 * RATE)
    times = epoch + np.array([-2.0, -0.5, 0.0, 0.7, 3.0]) * u.hour
    expected = pos.spherical_offsets_by(120 * RATE * (times - epoch).to(u.hour),
                                        -45 * RATE * (times - epoch).to(u.hour))
    got = eph.at(times)
    assert got.shape == (5,)
    assert np.all(got.separation(expected) < 1 * u.uas)
    assert got[4].ra.deg < 1  # wrapped through RA = 0
    # time scale: the same instant given in TDB or TT gives the same position
    assert eph.at(times[1].tdb).separation(got[1]) < 1 * u.uas
    # a scalar in, a scalar out; rates are the defining ones
    assert eph.at(epoch).isscalar
    ra_rate, dec_rate = eph.rates_at(times)
    assert np.all(ra_rate == 120 * RATE) and np.all(dec_rate == -45 * RATE)
    assert eph.time_range is None
    assert eph.uncertainty_at(epoch) is None


def test_time_scale_is_explicit():
    """The same ISO string read as TDB instead of UTC is 69.18 s later (2024): the target
    has moved by rate x 69.18 s."""
    eph = Ephemeris.linear(SkyCoord(10 * u.deg, 5 * u.deg), Time("2024-03-01"),
                           3600 * RATE, 0 * RATE)
    iso = "2024-03-01T05:00:00"
    moved = eph.at(Time(iso, scale="utc")).separation(eph.at(Time(iso, scale="tdb")))
    dt = (Time(iso, scale="utc") - Time(iso, scale="tdb")).to(u.s)
    assert abs(dt.value) == pytest.approx(69.184, abs=2e-3)
    assert moved.to_value(u.arcsec) == pytest.approx(abs(dt.value), rel=1e-6)


def test_linear_round_trip_and_cards(tmp_path):
    eph = Ephemeris.linear(SkyCoord(150.1 * u.deg, 2.2 * u.deg), Time("2024-01-01T12:00"),
                           36 * u.arcsec / u.min, -1 * u.arcsec / u.s, meta={"target": "sim"})
    path = tmp_path / "lin.ecsv"
    eph.write(path)
    back = Ephemeris.from_table(path)
    assert back.kind == "linear"
    assert back.meta["target"] == "sim"
    t = Time("2024-01-02T12:00") + np.arange(3) * u.hour
    assert back.at(t).separation(eph.at(t)).max() < 1 * u.uas
    cards = {k: (v, c) for k, v, c in eph.header_cards()}
    assert cards["EPHKIND"][0] == "linear"
    assert cards["EPHRATE1"][0] == pytest.approx(2160.0)
    assert cards["EPHRATE2"][0] == pytest.approx(-3600.0)
    assert cards["EPHRA"][0] == pytest.approx(150.1)
    for key, value, comment in eph.header_cards():
        assert len(fits.Card(key, value, comment).image) == 80


def test_linear_rejects_bad_input():
    pos = SkyCoord(1 * u.deg, 2 * u.deg)
    with pytest.raises(EphemerisError, match="angular rate"):
        Ephemeris.linear(pos, Time("2024-01-01"), 3 * u.km / u.s, 0 * RATE)
    with pytest.raises(EphemerisError, match="single SkyCoord"):
        Ephemeris.linear(SkyCoord([1, 2] * u.deg, [2, 3] * u.deg), Time("2024-01-01"),
                         1 * RATE, 0 * RATE)
    with pytest.raises(EphemerisError, match="astropy Time"):
        Ephemeris.linear(pos, "not a time", 1 * RATE, 0 * RATE)


# --------------------------------------------------------------------------- interpolation
@pytest.mark.parametrize("method", ["hermite", "spline"])
@pytest.mark.parametrize("case", ["ra_wrap", "over_pole"])
def test_interpolation_on_a_rotating_track(method, case):
    """A curved track crossing RA = 0 (or passing 0.02 deg from the pole, where RA turns
    by 180 deg within minutes) is interpolated to < 1 uas at 30-minute steps."""
    t0 = Time("2024-05-01T00:00:00", scale="utc")
    if case == "ra_wrap":
        pole, start = np.array([0.1, -0.3, 1.0]), np.array([np.cos(0.01), -np.sin(0.01), 0.05])
    else:
        pole, start = np.array([0.0, 1.0, 0.0]), np.array([-0.02, 5e-5, 1.0])
    rate = 2000 * RATE  # 0.56 arcsec/s, a fast near-Earth object
    nodes = t0 + np.arange(0, 8.01, 0.5) * u.hour
    vec, dvec = rotating_track(nodes, t0, pole, start, rate)
    ra, _ = radec(vec)
    if case == "ra_wrap":
        assert ra.min() < 1 and ra.max() > 359
    eph = Ephemeris(table_from_vectors(nodes, vec, dvec), interpolation=method)
    assert eph.interpolation == method
    test = t0 + np.linspace(0.03, 7.97, 97) * u.hour
    tvec, tdvec = rotating_track(test, t0, pole, start, rate)
    assert sep_uas(eph.at(test), tvec).max() < 1
    ra_rate, dec_rate = eph.rates_at(test)
    speed = np.hypot(ra_rate, dec_rate)
    # the speed does not depend on the local RA/Dec axes, even 0.02 deg from the pole
    expected = np.linalg.norm(tdvec, axis=1) * (1 * u.rad / u.day).to(RATE)
    assert np.all(np.abs(speed - expected) < 1e-5 * rate)
    if case == "over_pole":
        ra_t, dec_t = radec(tvec)
        assert dec_t.max() > 89.98 and np.ptp(ra_t) > 170


def test_auto_interpolation_choice():
    t0 = Time("2024-05-01T00:00:00")
    nodes = t0 + np.arange(6) * u.hour
    vec, dvec = rotating_track(nodes, t0, np.array([0, 0, 1.0]), np.array([1.0, 0, 0]), 50 * RATE)
    tab = table_from_vectors(nodes, vec, dvec)
    assert Ephemeris(tab).interpolation == "hermite"  # user rates: derivatives
    assert Ephemeris(tab, meta={"rates": "apparent"}).interpolation == "spline"
    assert Ephemeris(tab[:3], meta={"rates": "apparent"}).interpolation == "hermite"
    no_rates = tab.copy()
    del no_rates["ra_rate"], no_rates["dec_rate"]
    assert Ephemeris(no_rates).interpolation == "spline"
    with pytest.raises(EphemerisError, match="hermite"):
        Ephemeris(no_rates, interpolation="hermite")


def test_refuses_to_extrapolate():
    t0 = Time("2024-05-01T00:00:00")
    nodes = t0 + np.arange(5) * u.hour
    vec, dvec = rotating_track(nodes, t0, np.array([0, 0, 1.0]), np.array([1.0, 0, 0]), 50 * RATE)
    eph = Ephemeris(table_from_vectors(nodes, vec, dvec), meta={"target": "2024 XY"})
    # a half-millisecond beyond the edges is accepted (Horizons prints epochs to 86 us)
    eph.at(Time([nodes[0] - 0.5 * u.ms, nodes[-1] + 0.5 * u.ms]))
    late = nodes[-1] + 1 * u.min
    with pytest.raises(EphemerisError) as exc:
        eph.at(Time([nodes[2], late, late + 1 * u.day]))
    msg = str(exc.value)
    assert msg.startswith("2024 XY ephemeris (table): 2 epoch(s) outside")
    assert "2024-05-01 00:00:00.000 to 2024-05-01 04:00:00.000 UTC" in msg
    assert late.isot in msg
    with pytest.raises(EphemerisError, match="outside"):
        eph.rates_at(nodes[0] - 1 * u.s)


def test_uncertainty_is_one_sigma():
    t0 = Time("2024-05-01T00:00:00")
    tab = Table({"time": t0 + np.arange(3) * u.day, "ra": [1.0, 2.0, 3.0],
                 "dec": [0.0, 0.1, 0.2], "ra_3sigma": [0.3, 0.6, 0.9],
                 "dec_3sigma": [3.0, 3.0, 6.0]})
    eph = Ephemeris.from_table(tab)
    ra_sig, dec_sig = eph.uncertainty_at(t0 + [0.5, 1.5] * u.day)
    np.testing.assert_allclose(ra_sig.to_value(u.arcsec), [0.15, 0.25])
    np.testing.assert_allclose(dec_sig.to_value(u.arcsec), [1.0, 1.5])


# --------------------------------------------------------------------------- table input
def test_from_csv_time_formats_and_units(tmp_path):
    t0 = Time("2024-05-01T00:00:00", scale="utc")
    nodes = t0 + np.arange(5) * u.hour
    vec, dvec = rotating_track(nodes, t0, np.array([0.2, 0, 1.0]), np.array([1.0, 0.1, 0]),
                             300 * RATE)
    ref = Ephemeris(table_from_vectors(nodes, vec, dvec))
    base = table_from_vectors(nodes, vec, dvec)
    variants = {
        "jd": nodes.jd, "mjd": nodes.mjd, "epoch": nodes.isot,
        "date": [t.strftime("%Y-%b-%d %H:%M") for t in nodes],  # Horizons calendar
    }
    probe = t0 + 2.5 * u.hour
    for name, values in variants.items():
        tab = Table({name: values, "RA": base["ra"].value, "DEC": base["dec"].value,
                     "ra_rate": base["ra_rate"].value, "dec_rate": base["dec_rate"].value})
        path = tmp_path / f"{name}.csv"
        tab.write(path, format="ascii.csv")  # no units: rates read as arcsec/hour
        eph = Ephemeris.from_table(path)
        assert eph.at(probe).separation(ref.at(probe)).to_value(u.uas) < 1, name
        assert eph.meta["source_file"] == str(path)
    # ECSV with units: rates in arcsec/min are converted
    tab = Table({"mjd": nodes.mjd, "ra": base["ra"], "dec": base["dec"],
                 "ra_rate": base["ra_rate"].to(u.arcsec / u.min),
                 "dec_rate": base["dec_rate"].to(u.arcsec / u.min)})
    tab.write(tmp_path / "units.ecsv")
    eph = Ephemeris.from_table(tmp_path / "units.ecsv")
    assert eph.interpolation == "hermite"
    assert eph.at(probe).separation(ref.at(probe)).to_value(u.uas) < 1
    np.testing.assert_allclose(eph.rates_at(nodes[1])[0].to_value(RATE),
                               base["ra_rate"][1], rtol=1e-9)
    # sexagesimal strings, RA in hours
    tab = Table({"time": ["2024-05-01T00:00:00", "2024-05-01T01:00:00"],
                 "ra": ["23:59:59.0", "00:00:01.0"], "dec": ["-00:00:30", "+00:00:30"]})
    eph = Ephemeris.from_table(tab)
    mid = eph.at(Time("2024-05-01T00:30:00"))
    assert mid.separation(SkyCoord(0 * u.deg, 0 * u.deg)) < 1 * u.mas
    # a time column in TT, declared by the argument
    tt = Ephemeris.from_table(Table({"jd": nodes.tt.jd, "ra": base["ra"].value,
                                     "dec": base["dec"].value}), time_scale="tt")
    assert abs((tt.time_range[0] - nodes[0]).to_value(u.us)) < 50


def test_table_errors(tmp_path):
    with pytest.raises(EphemerisError, match="no time column"):
        Ephemeris.from_table(Table({"ra": [1.0, 2.0], "dec": [1.0, 2.0]}))
    with pytest.raises(EphemerisError, match="ra and dec"):
        Ephemeris.from_table(Table({"jd": [2460000.5, 2460001.5], "x": [1.0, 2.0]}))
    with pytest.raises(EphemerisError, match="repeated epochs"):
        Ephemeris.from_table(Table({"jd": [2460000.5, 2460000.5], "ra": [1.0, 2.0],
                                    "dec": [1.0, 2.0]}))
    with pytest.raises(EphemerisError, match="not found"):
        Ephemeris.from_table(tmp_path / "missing.ecsv")
    with pytest.raises(EphemerisError, match="only one of"):
        Ephemeris.from_table(Table({"jd": [2460000.5, 2460001.5], "ra": [1.0, 2.0],
                                    "dec": [1.0, 2.0], "ra_rate": [1.0, 1.0]}))


def test_write_round_trip_every_column(tmp_path):
    t0 = Time("2024-05-01T00:00:00.123456", scale="utc")
    nodes = t0 + np.arange(7) * 20 * u.min
    vec, dvec = rotating_track(nodes, t0, np.array([0.2, 0, 1.0]), np.array([1.0, 0.1, 0]),
                             300 * RATE)
    tab = table_from_vectors(nodes, vec, dvec)
    tab["ra_3sigma"] = np.linspace(0.1, 0.2, 7) * u.arcsec
    tab["dec_3sigma"] = np.linspace(0.3, 0.4, 7) * u.arcsec
    tab["delta"] = np.linspace(0.05, 0.051, 7) * u.au
    tab["V"] = np.linspace(20.1, 20.2, 7) * u.mag
    meta = {"kind": "table", "target": "2024 XY", "source": "orbit fit v3",
            "nested": {"a": 1, "b": [1.5, 2.5]}}
    eph = Ephemeris(tab, meta=meta)
    path = tmp_path / "out" / "eph.ecsv"
    eph.write(path)
    with pytest.raises(OutputExistsError, match="overwrite"):
        eph.write(path)
    eph.write(path, overwrite=True)
    assert sorted(p.name for p in path.parent.iterdir()) == ["eph.ecsv"]  # atomic, no debris
    back = Ephemeris.from_table(path)
    a, b = eph.to_table(), back.to_table()
    assert a.colnames == b.colnames == ["time", "ra", "dec", "ra_rate", "dec_rate",
                                        "ra_3sigma", "dec_3sigma", "delta", "V"]
    assert b["time"].scale == "utc"
    assert np.all(np.abs((a["time"] - b["time"]).to_value(u.us)) < 1)
    for name in a.colnames[1:]:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-14)
        assert a[name].unit == b[name].unit
    for key, value in meta.items():
        assert back.meta[key] == value
    assert back.interpolation == eph.interpolation == "hermite"


# --------------------------------------------------------------------------- elements wrapper
def test_elements_ephemeris_tabulates_and_refuses():
    ceres = {"e": 0.07858376292112841, "q": 2.549023692352033, "incl": 10.58706771204556,
             "Omega": 80.26756872640345, "w": 73.56246662775156, "M": 323.5863760597782,
             "epoch": 2459750.5}
    eph = Ephemeris.from_elements(ceres, target="Ceres",
                                  time_range=(Time("2022-06-19"), Time("2022-06-21")))
    tab = eph.to_table()
    assert len(tab) == 97  # 2 days every 30 minutes
    assert tab.meta["kind"] == "elements" and tab.meta["rates"] == "derivative"
    back = Ephemeris.from_table(tab)
    assert back.interpolation == "hermite"
    t = Time("2022-06-20T07:13:00") + np.arange(5) * 11 * u.min
    assert back.at(t).separation(eph.at(t)).max() < 1 * u.uas
    with pytest.raises(EphemerisError, match="outside its range"):
        eph.at(Time("2022-06-22T00:00:00"))
    cards = dict((k, v) for k, v, c in eph.header_cards())
    assert cards["EPHKIND"] == "elements" and cards["EPHTARG"] == "Ceres"
    assert cards["EPHEPOCH"].startswith("2022-06-20T00:00:00")
