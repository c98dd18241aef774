"""Tests of two-body propagation and Ephemeris.from_elements against recorded Horizons answers.

Reference numbers: ``$SHIFTSTACK_CCD_DATA/ephemerides/astroquery_jplhorizons/`` holds
Horizons' heliocentric osculating elements, state vectors (n-body, geometric) and
geocentric astrometric positions of (1) Ceres on 2022-06-10, -20, -30 and 07-10.
The positions there are rounded to 1e-5 deg (EXTRA_PREC=NO), i.e. up to 18 mas per
coordinate.
"""

from pathlib import Path

import numpy as np
import pytest
import astropy.units as u
from astropy.coordinates import EarthLocation
from astropy.time import Time
from astropy.utils import iers

from shiftstack_ccd.ephemeris import Ephemeris
from shiftstack_ccd.exceptions import EphemerisError
from shiftstack_ccd.ephemeris.horizons import parse_horizons_elements, parse_horizons_text
from shiftstack_ccd.ephemeris.orbits import (GM_SUN, elements_to_state, propagate_two_body,
                                             two_body_astrometric)

AQ = "ephemerides/astroquery_jplhorizons/"
KM_PER_AU = 1.495978707e8


@pytest.fixture
def ceres(shared_data):
    """Recorded elements, vectors and astrometric positions of Ceres."""
    el, el_meta = parse_horizons_elements(Path(shared_data(AQ + "ceres_elements_range.txt"))
                                          .read_text())
    vec, _ = parse_horizons_elements(Path(shared_data(AQ + "ceres_vectors_range.txt"))
                                     .read_text())
    obs, _ = parse_horizons_text(Path(shared_data(AQ + "ceres_ephemerides_range.txt"))
                                 .read_text())
    xyz = np.stack([np.asarray(vec[c], float) for c in ("x", "y", "z")], -1)
    vxyz = np.stack([np.asarray(vec[c], float) for c in ("vx", "vy", "vz")], -1)
    return {"elements": el, "mu": el_meta["mu"], "jd": np.asarray(vec["datetime_jd"], float),
            "xyz": xyz, "vxyz": vxyz, "obs": obs,
            "elements_path": shared_data(AQ + "ceres_elements_range.txt"),
            "vectors_path": shared_data(AQ + "ceres_vectors_range.txt")}


def test_conservation_on_ellipse_and_hyperbola():
    """Energy and angular momentum are conserved to 1e-12 over many revolutions/years."""
    for r0, v0 in (([1.2, 0.1, 0.05], [0.002, 0.018, 0.001]),   # e ~ 0.3 ellipse
                   ([0.9, -0.2, 0.1], [0.01, 0.025, -0.003])):  # hyperbolic (v > v_esc)
        r0, v0 = np.array(r0), np.array(v0)
        energy0 = v0 @ v0 / 2 - GM_SUN / np.linalg.norm(r0)
        h0 = np.cross(r0, v0)
        dt = np.linspace(-3000, 3000, 41)
        r, v = propagate_two_body(r0, v0, dt)
        energy = np.sum(v * v, -1) / 2 - GM_SUN / np.linalg.norm(r, axis=-1)
        np.testing.assert_allclose(energy, energy0, rtol=1e-11)
        np.testing.assert_allclose(np.cross(r, v), np.broadcast_to(h0, (41, 3)), rtol=1e-11,
                                   atol=1e-15)
        # propagating forth and back returns to the start
        rb, vb = propagate_two_body(r[-1], v[-1], -dt[-1])
        np.testing.assert_allclose(rb, r0, atol=1e-11)
    assert energy0 > 0  # the second case was indeed hyperbolic


def test_elements_to_state_matches_recorded_vectors(ceres):
    """Horizons' osculating elements and state vectors at the same epoch agree to < 10 m."""
    el = ceres["elements"]
    for k in range(len(el)):
        row = el[k]
        r, v = elements_to_state(row["e"], row["incl"], row["Omega"], row["w"], q=row["q"],
                                 mean_anomaly=row["M"], epoch=row["datetime_jd"], mu=ceres["mu"])
        assert np.linalg.norm(r - ceres["xyz"][k]) * KM_PER_AU < 0.01
        assert np.linalg.norm(v - ceres["vxyz"][k]) * KM_PER_AU / 86400 < 1e-6  # km/s
        # the time of perihelion gives the same state as the mean anomaly
        r2, _ = elements_to_state(row["e"], row["incl"], row["Omega"], row["w"], q=row["q"],
                                  tp=row["Tp_jd"], epoch=row["datetime_jd"], mu=ceres["mu"])
        assert np.linalg.norm(r2 - r) * KM_PER_AU < 0.01


def test_two_body_against_nbody_vectors(ceres):
    """Ignoring the planets (mostly Jupiter) costs Ceres < 100 km in 10 days."""
    jd, xyz, vxyz = ceres["jd"], ceres["xyz"], ceres["vxyz"]
    r, _ = propagate_two_body(xyz[1], vxyz[1], jd - jd[1], ceres["mu"])
    err_km = np.linalg.norm(r - xyz, axis=-1) * KM_PER_AU
    assert err_km[1] < 1e-6
    assert err_km[0] < 100 and err_km[2] < 100  # +/- 10 days
    assert err_km[3] < 400  # 20 days: grows ~ dt^2


def test_from_elements_against_recorded_astrometry(ceres):
    """Astrometric positions from the 2022-06-20 elements vs Horizons 10 days either side:
    within the 1e-5 deg rounding of the recorded file plus the two-body error."""
    obs = ceres["obs"]
    eph = Ephemeris.from_elements(ceres["elements_path"], epoch=Time(2459750.5, format="jd",
                                                                      scale="tdb"))
    assert eph.kind == "elements"
    assert eph.meta["resolved_name"] == "1 Ceres (A801 AA)"
    assert eph.meta["mu_au3_d2"] == pytest.approx(2.9591220828411951e-04)
    pos = eph.at(obs["time"][:3])  # -10, 0, +10 days
    ref = Ephemeris(obs, meta={"rates": "apparent"}).at(obs["time"][:3])
    sep = pos.separation(ref).to(u.mas)
    assert sep.max() < 30 * u.mas
    # rates: the derivative of the astrometric place vs Horizons' rates rotated to ICRS
    # axes differ by the change of aberration (<= 0.015 arcsec/h)
    ra_rate, dec_rate = eph.rates_at(obs["time"][:3])
    assert np.all(np.abs(ra_rate.value - np.asarray(obs["ra_rate"][:3])) < 0.015)
    assert np.all(np.abs(dec_rate.value - np.asarray(obs["dec_rate"][:3])) < 0.015)
    # without light time (geometric place) Ceres is ~30 arcsec off: light time matters
    geo = Ephemeris.from_elements(ceres["elements_path"],
                                  epoch=Time(2459750.5, format="jd", scale="tdb"),
                                  light_time=False)
    assert geo.at(obs["time"][1]).separation(ref[1]) > 10 * u.arcsec


def test_from_state_vector_and_dict(ceres):
    """A saved vectors answer, a state dict and an elements dict give the same positions."""
    ep = Time(2459760.5, format="jd", scale="tdb")
    t = Time("2022-06-28T03:00:00") + np.arange(4) * 17 * u.hour
    from_file = Ephemeris.from_elements(ceres["vectors_path"], epoch=ep)
    k = 2
    state = dict(zip(("x", "y", "z", "vx", "vy", "vz"),
                     [*ceres["xyz"][k], *ceres["vxyz"][k]]), epoch=ep)
    from_dict = Ephemeris.from_elements(state)
    row = ceres["elements"][k]
    elements = {"EC": row["e"], "QR": row["q"] * u.au, "IN": row["incl"] * u.deg,
                "OM": row["Omega"], "W": row["w"], "MA": row["M"], "epoch": row["datetime_jd"]}
    from_el = Ephemeris.from_elements(elements, mu=ceres["mu"] * u.au ** 3 / u.day ** 2)
    assert from_file.at(t).separation(from_dict.at(t)).max() < 1 * u.uas
    assert from_el.at(t).separation(from_dict.at(t)).max() < 0.1 * u.mas
    with pytest.raises(EphemerisError, match="lack"):
        Ephemeris.from_elements({"e": 0.1, "q": 2.0, "epoch": 2459760.5})


def test_topocentric_parallax(ceres):
    """A site on the Earth sees Ceres displaced from the geocentric place by less than the
    diurnal parallax 8.794"/Delta(au), and by more than its 10% for a mid-latitude site."""
    el = ceres["elements_path"]
    ep = Time(2459750.5, format="jd", scale="tdb")
    site = EarthLocation.from_geodetic(-111.535 * u.deg, 35.097 * u.deg, 2.2 * u.km)
    t = Time("2022-06-20T00:00:00") + np.arange(0, 24, 3) * u.hour
    with iers.conf.set_temp("auto_download", False):
        topo = Ephemeris.from_elements(el, epoch=ep, location=site)
        geo = Ephemeris.from_elements(el, epoch=ep, location="500")
        shift = topo.at(t).separation(geo.at(t)).to(u.arcsec)
    _, _, dist = two_body_astrometric(ceres["xyz"][1], ceres["vxyz"][1], ep, t, mu=ceres["mu"])
    limit = 8.794 / dist * u.arcsec
    assert np.all(shift <= limit * 1.001)
    assert shift.max() > 0.1 * limit.max()
    assert topo.meta["location"].startswith("-111.535000,35.097000")
    with pytest.raises(EphemerisError, match="not usable offline"):
        Ephemeris.from_elements(el, epoch=ep, location="688")
