# Licensed under a 3-clause BSD style license - see LICENSE
"""Two-body orbits: the offline motion model behind `Ephemeris.from_elements`.

A heliocentric (or barycentric) conic, propagated with universal variables, seen
from an observer whose position comes from astropy's built-in solar-system
ephemeris (``erfa.epv00`` for the Earth and the Sun, a few km) and, for a site on
the ground, `~astropy.coordinates.EarthLocation.get_gcrs_posvel`. Positions are
*astrometric*: the light-time corrected direction from the observer to the
target, in ICRS axes, without aberration or light deflection, which is what JPL
Horizons calls "astrometric RA/DEC" (its quantity 1).

Why by hand: astropy has no Kepler propagator and the packages that do (poliastro,
sbpy with oorb) are heavy or unmaintained; the two-body problem with light time is
~100 lines and fully testable against the recorded Horizons responses.

Everything here works in au, days (TDB) and radians, as plain ``numpy`` arrays;
`Ephemeris.from_elements` wraps it with Quantities and `~astropy.time.Time`.
"""

import numpy as np
import astropy.units as u
from astropy.constants import c as _c
from astropy.coordinates import EarthLocation, get_body_barycentric_posvel
from astropy.time import Time

__all__ = ["GM_SUN", "OBLIQUITY_J2000", "ecliptic_to_icrs", "elements_to_state", "observer_posvel",
           "propagate_two_body", "two_body_astrometric"]

#: Heliocentric gravitational parameter (au^3/day^2), the "Keplerian GM" JPL Horizons
#: prints for heliocentric osculating elements (DE440/441 GM_sun).
GM_SUN = 2.9591220828411951e-04

#: IAU 1976 obliquity of the J2000 ecliptic with respect to the ICRF X-Y plane (rad): the
#: "ecliptic of J2000" of Horizons elements and vectors (84381.448 arcsec).
OBLIQUITY_J2000 = np.deg2rad(84381.448 / 3600.0)

_C_AU_PER_DAY = _c.to_value(u.au / u.day)


def ecliptic_to_icrs(vec):
    """Rotate (..., 3) vectors from the J2000 ecliptic to ICRS axes."""
    ce, se = np.cos(OBLIQUITY_J2000), np.sin(OBLIQUITY_J2000)
    vec = np.asarray(vec, dtype=float)
    out = np.empty_like(vec)
    out[..., 0] = vec[..., 0]
    out[..., 1] = ce * vec[..., 1] - se * vec[..., 2]
    out[..., 2] = se * vec[..., 1] + ce * vec[..., 2]
    return out


def _stumpff(z):
    """Stumpff functions C(z), S(z), with series near z = 0 (no cancellation)."""
    z = np.asarray(z, dtype=float)
    c = np.empty_like(z)
    s = np.empty_like(z)
    small = np.abs(z) < 1e-3
    pos = (z >= 1e-3)
    neg = (z <= -1e-3)
    zs = z[small]
    c[small] = 1 / 2 - zs / 24 + zs ** 2 / 720 - zs ** 3 / 40320
    s[small] = 1 / 6 - zs / 120 + zs ** 2 / 5040 - zs ** 3 / 362880
    sz = np.sqrt(z[pos])
    c[pos] = (1 - np.cos(sz)) / z[pos]
    s[pos] = (sz - np.sin(sz)) / sz ** 3
    sz = np.sqrt(-z[neg])
    c[neg] = (np.cosh(sz) - 1) / (-z[neg])
    s[neg] = (np.sinh(sz) - sz) / sz ** 3
    return c, s


def propagate_two_body(r0, v0, dt, mu=GM_SUN):
    """Propagate a state on a two-body conic (any eccentricity) by ``dt``.

    Universal-variable formulation (Curtis, *Orbital Mechanics for Engineering
    Students*, ch. 3) with a Newton solve; ellipses, parabolas and hyperbolas alike,
    so comets are handled.

    Parameters
    ----------
    r0, v0 : array-like, shape (3,)
        Position (au) and velocity (au/day) relative to the central body.
    dt : float or array-like
        Times from the initial state (days); any shape.
    mu : float
        Gravitational parameter of the central body (au^3/day^2).

    Returns
    -------
    r, v : `~numpy.ndarray`, shape ``dt.shape + (3,)``
        Position (au) and velocity (au/day).

    Examples
    --------
    A circular orbit at 1 au returns to its start after one period:

    >>> import numpy as np
    >>> from shiftstack_ccd.ephemeris.orbits import propagate_two_body, GM_SUN
    >>> period = 2 * np.pi / np.sqrt(GM_SUN)
    >>> r, v = propagate_two_body([1, 0, 0], [0, np.sqrt(GM_SUN), 0], period)
    >>> np.allclose(r, [1, 0, 0], atol=1e-10)
    True
    """
    r0 = np.asarray(r0, dtype=float)
    v0 = np.asarray(v0, dtype=float)
    dt = np.asarray(dt, dtype=float)
    shape = dt.shape
    dt = dt.ravel()
    sqmu = np.sqrt(mu)
    r0n = np.linalg.norm(r0)
    vr0 = r0 @ v0 / r0n
    alpha = 2 / r0n - (v0 @ v0) / mu
    # Initial guess: exact for circular orbits, good for the short arcs used here.
    chi = sqmu * np.abs(alpha) * dt if alpha > 1e-12 else sqmu * dt / r0n
    for _ in range(60):
        z = alpha * chi ** 2
        c, s = _stumpff(z)
        f = (r0n * vr0 / sqmu * chi ** 2 * c + (1 - alpha * r0n) * chi ** 3 * s
             + r0n * chi - sqmu * dt)
        fp = (r0n * vr0 / sqmu * chi * (1 - z * s) + (1 - alpha * r0n) * chi ** 2 * c + r0n)
        step = f / fp
        chi = chi - step
        if np.all(np.abs(step) <= 1e-14 * np.maximum(1.0, np.abs(chi))):
            break
    z = alpha * chi ** 2
    c, s = _stumpff(z)
    f = 1 - chi ** 2 / r0n * c
    g = dt - chi ** 3 * s / sqmu
    r = f[:, None] * r0 + g[:, None] * v0
    rn = np.linalg.norm(r, axis=1)
    fdot = sqmu / (rn * r0n) * (z * chi * s - chi)
    gdot = 1 - chi ** 2 / rn * c
    v = fdot[:, None] * r0 + gdot[:, None] * v0
    return r.reshape(shape + (3,)), v.reshape(shape + (3,))


def elements_to_state(e, incl, node, peri, *, q=None, a=None, mean_anomaly=None,
                      tp=None, epoch=None, mu=GM_SUN):
    """Convert osculating Keplerian elements to a state vector at their epoch.

    Parameters
    ----------
    e : float
        Eccentricity.
    incl, node, peri : float
        Inclination, longitude of the ascending node and argument of perihelion (deg),
        in the reference plane of the elements.
    q, a : float, optional
        Perihelion distance or semi-major axis (au); one is needed (``q`` for
        parabolic orbits).
    mean_anomaly : float, optional
        Mean anomaly at ``epoch`` (deg), for elliptic or hyperbolic orbits.
    tp : float, optional
        Time of perihelion passage (JD, TDB), used when ``mean_anomaly`` is not given.
    epoch : float
        Epoch of the elements (JD, TDB).
    mu : float
        Gravitational parameter (au^3/day^2).

    Returns
    -------
    r, v : `~numpy.ndarray`, shape (3,)
        Position (au) and velocity (au/day) at ``epoch``, in the frame of the elements.
    """
    if epoch is None:
        raise ValueError("elements_to_state needs the epoch of the elements (JD TDB)")
    if q is None:
        if a is None:
            raise ValueError("give the perihelion distance q or the semi-major axis a")
        q = a * (1 - e)
    if mean_anomaly is not None and abs(e - 1) > 1e-10:
        a_ = q / (1 - e)
        n = np.sqrt(mu / abs(a_) ** 3)  # rad/day
        m = np.deg2rad(mean_anomaly)
        if e < 1:
            m = (m + np.pi) % (2 * np.pi) - np.pi  # nearest perihelion
        tp = epoch - m / n
    if tp is None:
        raise ValueError("give the mean anomaly at epoch or the time of perihelion tp")
    # State at perihelion in the perifocal frame, then rotate to the reference frame.
    vp = np.sqrt(mu * (1 + e) / q)
    i, om, w = np.deg2rad([incl, node, peri])
    co, so, ci, si, cw, sw = np.cos(om), np.sin(om), np.cos(i), np.sin(i), np.cos(w), np.sin(w)
    p_hat = np.array([co * cw - so * sw * ci, so * cw + co * sw * ci, sw * si])
    q_hat = np.array([-co * sw - so * cw * ci, -so * sw + co * cw * ci, cw * si])
    r, v = propagate_two_body(q * p_hat, vp * q_hat, epoch - tp, mu)
    return r, v


def observer_posvel(times, location=None):
    """Barycentric position and velocity of an observer, from the built-in ephemeris.

    Parameters
    ----------
    times : `~astropy.time.Time`
        Observation times (any scale; converted to TDB).
    location : `~astropy.coordinates.EarthLocation` or None
        A site on the Earth; `None` for the geocentre.

    Returns
    -------
    pos, vel : `~numpy.ndarray`, shape ``times.shape + (3,)``
        ICRS barycentric position (au) and velocity (au/day).

    Notes
    -----
    astropy's 'builtin' ephemeris gives the Earth's barycentric position from
    ``erfa.epv00``, accurate to a few km (1900-2100), which is 2 mas at 2 au;
    a JPL kernel can be used instead by setting
    `~astropy.coordinates.solar_system_ephemeris` (e.g. to 'de432s', if jplephem is
    installed and the kernel is available), which this function honours.
    """
    tdb = times.tdb
    pos, vel = get_body_barycentric_posvel("earth", tdb)
    p = pos.get_xyz(xyz_axis=-1).to_value(u.au)
    v = vel.get_xyz(xyz_axis=-1).to_value(u.au / u.day)
    if location is not None:
        if not isinstance(location, EarthLocation):
            raise TypeError("location must be an EarthLocation or None (geocentre)")
        gp, gv = location.get_gcrs_posvel(times)
        p = p + gp.get_xyz(xyz_axis=-1).to_value(u.au)
        v = v + gv.get_xyz(xyz_axis=-1).to_value(u.au / u.day)
    return p, v


def two_body_astrometric(r0, v0, epoch, times, *, mu=GM_SUN, center="sun",
                         location=None, light_time=True, frame="ecliptic"):
    """Astrometric direction, rate and distance of a two-body target seen by an observer.

    Parameters
    ----------
    r0, v0 : array-like, shape (3,)
        State of the target relative to ``center`` at ``epoch`` (au, au/day).
    epoch : `~astropy.time.Time`
        Epoch of the state.
    times : `~astropy.time.Time`
        Observation times (at the observer).
    mu : float
        Gravitational parameter of ``center`` (au^3/day^2).
    center : {'sun', 'ssb'}
        Origin of the state: the Sun's centre or the solar-system barycentre.
    location : `~astropy.coordinates.EarthLocation` or None
        Observer on the Earth, or `None` for the geocentre.
    light_time : bool
        Evaluate the target at the emission time (astrometric place), as Horizons does.
    frame : {'ecliptic', 'icrs'}
        Axes of ``r0``/``v0``: the J2000 ecliptic (Horizons' default for elements and
        vectors) or ICRS equatorial.

    Returns
    -------
    unit : `~numpy.ndarray`, shape ``times.shape + (3,)``
        Unit vector from observer to target (ICRS axes).
    rate : `~numpy.ndarray`, shape ``times.shape + (3,)``
        Time derivative of ``unit`` (rad/day), light time included.
    distance : `~numpy.ndarray`
        Observer-target distance (au) at emission.
    """
    r0 = np.asarray(r0, dtype=float)
    v0 = np.asarray(v0, dtype=float)
    if frame == "ecliptic":
        r0, v0 = ecliptic_to_icrs(r0), ecliptic_to_icrs(v0)
    elif frame != "icrs":
        raise ValueError(f"frame must be 'ecliptic' or 'icrs', not {frame!r}")
    if center not in ("sun", "ssb"):
        raise ValueError(f"center must be 'sun' or 'ssb', not {center!r}")
    times = Time(times)
    shape = times.shape
    times = times.reshape(-1) if shape else times.reshape(1)
    tdb = times.tdb
    ep = epoch.tdb
    dt0 = (tdb.jd1 - ep.jd1) + (tdb.jd2 - ep.jd2)
    obs_p, obs_v = observer_posvel(times, location)

    def target(dt_days):
        r, v = propagate_two_body(r0, v0, dt_days, mu)
        if center == "sun":
            t_emit = ep + dt_days * u.day
            sp, sv = get_body_barycentric_posvel("sun", t_emit)
            r = r + sp.get_xyz(xyz_axis=-1).to_value(u.au)
            v = v + sv.get_xyz(xyz_axis=-1).to_value(u.au / u.day)
        return r, v

    tau = np.zeros_like(dt0)
    n_iter = 3 if light_time else 1
    for _ in range(n_iter):
        tr, tv = target(dt0 - tau)
        rho = tr - obs_p
        dist = np.linalg.norm(rho, axis=-1)
        if light_time:
            tau = dist / _C_AU_PER_DAY
    unit = rho / dist[:, None]
    # d(rho)/dt = v_t (1 - dtau/dt) - v_o with dtau/dt = unit.(v_t - v_o) / (c + unit.v_t)
    if light_time:
        tau_dot = (np.sum(unit * (tv - obs_v), axis=-1)
                   / (_C_AU_PER_DAY + np.sum(unit * tv, axis=-1)))
    else:
        tau_dot = np.zeros_like(dist)
    rho_dot = tv * (1 - tau_dot)[:, None] - obs_v
    rate = (rho_dot - np.sum(unit * rho_dot, axis=-1)[:, None] * unit) / dist[:, None]
    return (unit.reshape(shape + (3,)), rate.reshape(shape + (3,)), dist.reshape(shape))
