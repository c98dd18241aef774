# Licensed under a 3-clause BSD style license - see LICENSE
"""The motion model of a moving target: where it is on the sky at any time.

An `Ephemeris` is one of

* **linear**: a position, an epoch and two rates, for short sequences or quick looks;
* **table**: tabulated astrometric positions (ECSV/CSV written by anyone, a saved
  JPL Horizons answer), interpolated smoothly and never extrapolated;
* **horizons**: a table fetched from JPL Horizons through astroquery, in one request per
  batch of epochs, cached on disk (see `shiftstack_ccd.horizons`);
* **elements**: two-body propagation of osculating elements or of a state vector, with
  light time, and no network at all (see `shiftstack_ccd.orbits`).

Conventions
-----------
Positions are ICRS (astrometric: light-time corrected, no aberration, as Horizons'
quantity 1), returned as `~astropy.coordinates.SkyCoord`. Rates are
``ra_rate = dRA*cos(Dec)/dt`` and ``dec_rate = dDec/dt`` in arcsec/hour, on ICRS axes.

Times may be given in any scale (UTC, TT, TDB ...); they are converted explicitly.
Tables store **UTC** (the ``time`` column of `Ephemeris.to_table` and of the files
written by `Ephemeris.write`); interpolation runs on TT (a uniform scale, so a leap
second inside a table does no harm).

Interpolation of a table is done on unit vectors, not on raw RA/Dec, so it is correct
across RA = 0/360 and near the poles:

* ``'hermite'``: piecewise cubic Hermite through the positions *and* the rates at every
  node; used when the rates are the time derivatives of the tabulated positions
  (elements, user tables), for tables with fewer than 4 rows, and for Horizons tables
  of the exact frame epochs (TLIST), whose nodes are too sparse for a spline;
* ``'spline'``: a C2 cubic spline through the positions, its end slopes clamped to the
  rates when present. Used for Horizons range tables, whose rates are *apparent* rates
  (of-date frame, aberration included): even rotated to ICRS axes they differ from the
  derivative of the astrometric positions by the change of aberration, up to
  0.015 arcsec/h (geocentre), 0.08 arcsec/h (ground site) and ~20 arcsec/h (low Earth
  orbit), which a Hermite interpolant turns into errors of ~1 mas (ground site, 10-min
  steps) to ~30 mas (HST, 1-min steps), while the spline stays below 0.03 mas at the
  default Horizons steps (``benchmarks/bench_ephemeris_interpolation.py``).

The choice ``'auto'`` reads the table's ``rates`` meta: ``'derivative'`` (the default for
user tables, elements, linear) or ``'apparent'`` (Horizons), and ``epochs_mode``.

A table refuses to extrapolate: asking for a time outside it raises
`~shiftstack_ccd.exceptions.EphemerisError` naming the epochs and the table's range.
"""

import logging
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time
from scipy.interpolate import CubicHermiteSpline, CubicSpline

from ._utils import atomic_output
from .exceptions import EphemerisError

__all__ = ["Ephemeris", "ephemeris_for_times"]

log = logging.getLogger(__name__)

#: Unit of the rate columns and of `Ephemeris.rates_at`.
RATE_UNIT = u.arcsec / u.hour
_RADDAY_TO_RATE = (1 * u.rad / u.day).to_value(RATE_UNIT)
# Slack allowed at the edges of a table (1 ms): Horizons prints epochs to 1e-9 day.
_EDGE_TOL_DAYS = 1e-3 / 86400.0
# Default tabulation step for `to_table` of an elements ephemeris.
_ELEMENTS_TABLE_STEP = 30 * u.min


# --------------------------------------------------------------------------- helpers
def _unit_vectors(ra_deg, dec_deg):
    ra = np.deg2rad(np.asarray(ra_deg, dtype=float))
    dec = np.deg2rad(np.asarray(dec_deg, dtype=float))
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def _radec(vec):
    """RA in [0, 360) and Dec (deg) of (..., 3) vectors (not necessarily unit)."""
    x, y, z = vec[..., 0], vec[..., 1], vec[..., 2]
    ra = np.rad2deg(np.arctan2(y, x)) % 360.0
    dec = np.rad2deg(np.arctan2(z, np.hypot(x, y)))
    return ra, dec


def _basis(ra_deg, dec_deg):
    """East (increasing RA) and north unit vectors of the tangent plane."""
    ra = np.deg2rad(np.asarray(ra_deg, dtype=float))
    dec = np.deg2rad(np.asarray(dec_deg, dtype=float))
    east = np.stack([-np.sin(ra), np.cos(ra), np.zeros_like(ra)], axis=-1)
    north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)],
                     axis=-1)
    return east, north


def _rates_to_vectors(ra_deg, dec_deg, ra_rate, dec_rate):
    """Rates (arcsec/h) to derivative vectors of the unit vector (rad/day)."""
    east, north = _basis(ra_deg, dec_deg)
    k = 1.0 / _RADDAY_TO_RATE
    return (np.asarray(ra_rate, float)[..., None] * east
            + np.asarray(dec_rate, float)[..., None] * north) * k


def _vectors_to_rates(vec, dvec):
    """Derivative of a (not necessarily unit) vector curve -> rates (arcsec/h)."""
    norm = np.linalg.norm(vec, axis=-1, keepdims=True)
    w = vec / norm
    dw = (dvec - np.sum(w * dvec, axis=-1, keepdims=True) * w) / norm
    ra, dec = _radec(w)
    east, north = _basis(ra, dec)
    return (np.sum(dw * east, axis=-1) * _RADDAY_TO_RATE,
            np.sum(dw * north, axis=-1) * _RADDAY_TO_RATE)


def _as_time(times, what="times"):
    """Return (Time, is_scalar); strings and datetimes are read as UTC."""
    if not isinstance(times, Time):
        try:
            times = Time(times, scale="utc")
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise EphemerisError(
                f"{what} must be an astropy Time (any scale) or ISO strings read as UTC; "
                f"could not read {times!r}: {exc}") from exc
    return times, times.isscalar


def _tt_days(times, t0):
    """Days (TT) from ``t0`` to ``times``, with full two-part precision."""
    a = times.tt
    b = t0.tt
    return (a.jd1 - b.jd1) + (a.jd2 - b.jd2)


def _iso(t):
    return t.utc.isot if t.isscalar else [s for s in t.utc.isot]


def _fmt_range(t0, t1):
    return f"{Time(t0).utc.iso[:23]} to {Time(t1).utc.iso[:23]} UTC"


def _float_array(col):
    """A (possibly masked) column as a float ndarray with NaN for masked values."""
    data = getattr(col, "value", col)
    if hasattr(data, "filled"):
        data = np.ma.asarray(data, dtype=float).filled(np.nan)
    return np.asarray(data, dtype=float)


def _short(value, n=68):
    s = str(value)
    return s if len(s) <= n else s[: n - 3] + "..."


# --------------------------------------------------------------------------- the class
class Ephemeris:
    """Where a moving target is on the sky, as a function of time.

    Build one with `Ephemeris.linear`, `Ephemeris.from_table`,
    `Ephemeris.from_horizons` or `Ephemeris.from_elements`; calling the class
    directly with a standardised table (columns ``time``, ``ra``, ``dec`` and
    optionally ``ra_rate``, ``dec_rate``, ``ra_3sigma``, ``dec_3sigma``) is the same
    as `Ephemeris.from_table` on that table.

    Parameters
    ----------
    table : `~astropy.table.Table`
        The tabulated ephemeris (see `Ephemeris.from_table` for the columns read).
    meta : dict, optional
        Provenance (merged over ``table.meta``).
    interpolation : {'auto', 'hermite', 'spline'}
        How to interpolate (see the module notes).

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.coordinates import SkyCoord
    >>> from astropy.time import Time
    >>> from shiftstack_ccd.ephemeris import Ephemeris
    >>> eph = Ephemeris.linear(SkyCoord(150 * u.deg, 2 * u.deg), Time("2024-01-01T00:00"),
    ...                        ra_rate=36 * u.arcsec / u.hour, dec_rate=0 * u.arcsec / u.hour)
    >>> pos = eph.at(Time("2024-01-01T01:00"))
    >>> print(f"{pos.separation(SkyCoord(150 * u.deg, 2 * u.deg)).to(u.arcsec):.6f}")
    36.000000 arcsec
    """

    def __init__(self, table, meta=None, interpolation="auto"):
        self._linear = None
        self._model = None
        self._meta = {}
        if not isinstance(table, Table):
            raise EphemerisError("Ephemeris() takes an astropy Table; use Ephemeris.from_table "
                                 "for a file name")
        std, tmeta = _standardize_table(table)
        self._meta.update(tmeta)
        self._meta.update(dict(meta or {}))
        self._meta.setdefault("kind", "table")
        self._setup_table(std, interpolation)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def _blank(cls, meta):
        obj = cls.__new__(cls)
        obj._linear = None
        obj._model = None
        obj._table = None
        obj._meta = dict(meta)
        obj._interpolation = None
        return obj

    @classmethod
    def linear(cls, position, epoch, ra_rate, dec_rate, meta=None):
        """Uniform motion in the tangent plane at ``position``.

        Parameters
        ----------
        position : `~astropy.coordinates.SkyCoord`
            Position at ``epoch`` (any frame; converted to ICRS).
        epoch : `~astropy.time.Time`
            Epoch of ``position`` (any scale).
        ra_rate, dec_rate : `~astropy.units.Quantity`
            ``dRA*cos(Dec)/dt`` and ``dDec/dt``, angle per time (e.g. arcsec/h).
        meta : dict, optional
            Extra provenance.

        Returns
        -------
        eph : `Ephemeris`
            ``eph.at(t) == position.spherical_offsets_by(ra_rate*(t-epoch),
            dec_rate*(t-epoch))``: offsets in the tangent plane at ``position``
            (exactly what the simulator assumes). Valid at any time.

        Examples
        --------
        >>> import astropy.units as u
        >>> from astropy.coordinates import SkyCoord
        >>> from astropy.time import Time
        >>> from shiftstack_ccd.ephemeris import Ephemeris
        >>> eph = Ephemeris.linear(SkyCoord(0 * u.deg, 0 * u.deg), Time("2024-01-01"),
        ...                        -3600 * u.arcsec / u.hour, 0 * u.arcsec / u.hour)
        >>> print(f"{eph.at(Time('2024-01-01T00:30')).ra.deg:.4f}")
        359.5000
        """
        if not isinstance(position, SkyCoord):
            raise EphemerisError("position must be a SkyCoord")
        if not position.isscalar:
            raise EphemerisError("position must be a single SkyCoord, not an array")
        epoch, scalar = _as_time(epoch, "epoch")
        if not scalar:
            raise EphemerisError("epoch must be a single Time")
        rates = []
        for name, rate in (("ra_rate", ra_rate), ("dec_rate", dec_rate)):
            try:
                rates.append(u.Quantity(rate).to(RATE_UNIT))
            except u.UnitsError as exc:
                raise EphemerisError(
                    f"{name} must be an angular rate such as arcsec/hour, got {rate!r}") from exc
            if not rates[-1].isscalar or not np.isfinite(rates[-1]):
                raise EphemerisError(f"{name} must be one finite value, got {rate!r}")
        icrs = position.icrs
        pos = SkyCoord(icrs.ra, icrs.dec, frame="icrs")
        obj = cls._blank({"kind": "linear", **dict(meta or {})})
        obj._linear = {"position": pos, "epoch": epoch, "ra_rate": rates[0],
                       "dec_rate": rates[1]}
        return obj

    @classmethod
    def from_table(cls, path_or_table, interpolation="auto", time_scale=None):
        """Read a tabulated ephemeris.

        Parameters
        ----------
        path_or_table : str, `~pathlib.Path` or `~astropy.table.Table`
            An ECSV file (as written by `Ephemeris.write`, which round-trips every column
            and the provenance), a CSV file, a raw JPL Horizons text answer (a file
            containing ``$$SOE``), a table returned by astroquery's
            ``Horizons.ephemerides()``, or any table with:

            * a time column named ``time``, ``epoch``, ``date``, ``datetime``,
              ``jd`` / ``datetime_jd`` or ``mjd``: `~astropy.time.Time`, ISO strings,
              Horizons calendar strings (``2022-Jun-10 00:00``), JD or MJD numbers
              (read as JD above 2 400 000);
            * ``ra`` and ``dec`` in degrees (or any angle unit attached to the column, or
              sexagesimal strings: RA in hours);
            * optionally ``ra_rate`` (``dRA*cos(Dec)/dt``) and ``dec_rate``, arcsec/hour
              unless the column has a unit;
            * optionally ``ra_3sigma`` and ``dec_3sigma``, 3-sigma uncertainties in arcsec.

            Other columns are kept (and written back by `Ephemeris.write`). A ``rates``
            entry in the table's meta says whether the rates are time derivatives of
            the positions (``'derivative'``, assumed when absent) or apparent rates
            (``'apparent'``, as Horizons'), which selects the interpolation.
        interpolation : {'auto', 'hermite', 'spline'}
            See the module notes.
        time_scale : str, optional
            Scale of a time column that is not a `~astropy.time.Time` (default: the
            table's ``time_scale`` meta, else ``'utc'``).

        Returns
        -------
        eph : `Ephemeris`

        Examples
        --------
        >>> import astropy.units as u
        >>> from astropy.table import Table
        >>> from shiftstack_ccd.ephemeris import Ephemeris
        >>> t = Table({"jd": [2460000.5, 2460000.6, 2460000.7],
        ...            "ra": [359.99, 0.01, 0.03], "dec": [1.0, 1.0, 1.0]})
        >>> eph = Ephemeris.from_table(t)
        >>> print(f"{eph.at(eph.time_range[0] + 0.15 * u.day).ra.deg:.4f}")
        0.0200
        """
        source = None
        if isinstance(path_or_table, Table):
            table = path_or_table
        else:
            source = Path(path_or_table)
            table = _read_table_file(source)
        if time_scale is not None:
            table = table.copy(copy_data=False)
            table.meta["time_scale"] = time_scale
        meta = {}
        if source is not None:
            meta["source_file"] = str(source)
        std, tmeta = _standardize_table(table)
        tmeta.update(meta)
        tmeta.setdefault("kind", "table")
        if tmeta.get("kind") == "linear" and len(std) == 1 and "ra_rate" in std.colnames:
            row = std[0]
            return cls.linear(SkyCoord(row["ra"] * u.deg, row["dec"] * u.deg, frame="icrs"),
                              std["time"][0], row["ra_rate"] * RATE_UNIT,
                              row["dec_rate"] * RATE_UNIT, meta=tmeta)
        obj = cls._blank(tmeta)
        obj._setup_table(std, interpolation)
        return obj

    @classmethod
    def from_horizons(cls, target, location="500", times=None, id_type=None, cache=True, *,
                      cache_dir=None, epochs="auto", step=None, interpolation="auto",
                      timeout=None):
        """Query JPL Horizons (through astroquery) for the target's astrometric positions.

        One request per batch of epochs; answers are kept on disk so a repeated run
        makes no request (see `shiftstack_ccd.horizons.query_horizons` for the details,
        the request parameters and the time scales).

        Parameters
        ----------
        target : str or int
            Name, designation, number, or Horizons record number of one orbit solution
            (with ``id_type='smallbody'`` for a small body's record number, e.g.
            ``'90000091'`` for one solution of 2P/Encke).
        location : str, `~astropy.coordinates.EarthLocation` or dict
            Observer: an MPC code (``'688'``, ``'568'``), a spacecraft (``'@hst'``,
            ``'@jwst'``, ``'500@-170'``), the geocentre (``'500'``), an EarthLocation or a
            dict ``{'lon', 'lat', 'elevation'}``.
        times : `~astropy.time.Time`
            The epochs needed, normally the frames' mid-exposure times (any scale;
            sent to Horizons as UTC).
        id_type : str, optional
            Passed to astroquery: None, 'smallbody', 'designation', 'name',
            'asteroid_name', 'comet_name'.
        cache : bool
            Use (read and write) the on-disk cache of Horizons answers.
        cache_dir : str or `~pathlib.Path`, optional
            Cache root (default: ``$SHIFTSTACK_CCD_CACHE``, else the astropy-style cache
            folder of shiftstack_ccd); answers are under ``<root>/horizons``.
        epochs : {'auto', 'range', 'tlist'}
            Query a start/stop/step range, the exact epochs (TLIST), or whichever needs
            fewer requests.
        step : `~astropy.units.Quantity`, optional
            Range step (default `shiftstack_ccd.horizons.default_step` of ``location``,
            chosen so the interpolation error stays below 1 mas).
        interpolation : {'auto', 'hermite', 'spline'}
            See the module notes.
        timeout : float, optional
            Seconds to wait for Horizons (default: astroquery's).

        Returns
        -------
        eph : `Ephemeris`

        Raises
        ------
        shiftstack_ccd.exceptions.HorizonsError
            Unknown or ambiguous target (with Horizons' candidates), no network (with
            the cache location and the offline alternatives), or a refused query.
        """
        from .horizons import query_horizons

        if times is None:
            raise EphemerisError("from_horizons needs times= (the frames' mid-exposure times)")
        table, meta = query_horizons(target, location, times, id_type=id_type, cache=cache,
                                     cache_dir=cache_dir, epochs=epochs, step=step,
                                     timeout=timeout)
        obj = cls._blank(meta)
        obj._setup_table(table, interpolation)
        return obj

    @classmethod
    def from_elements(cls, elements, *, epoch=None, location="500", time_range=None,
                      mu=None, center=None, frame=None, light_time=True, target=None):
        """Two-body ephemeris from osculating elements or a state vector, offline.

        The target moves on a conic about the Sun (or the barycentre); the observer's
        position comes from astropy's built-in solar-system ephemeris (no network, no
        kernel file), and positions are astrometric (light time included), like
        Horizons' quantity 1. Accuracy is limited by the neglected planetary
        perturbations: for (1) Ceres, measured against the recorded Horizons answers,
        under 0.03 arcsec within 10 days of the elements' epoch, 0.09 arcsec at 20 days
        and 0.19 arcsec at 30 days (``benchmarks/bench_ephemeris_interpolation.py``).

        Parameters
        ----------
        elements : str, `~pathlib.Path`, dict or `~astropy.table.Row`
            * a saved JPL Horizons *elements* or *vectors* answer (text file, or its text);
              with several rows, the one nearest ``epoch`` is used;
            * a dict of elements with Horizons' names (case-insensitive): ``e`` (or
              ``EC``), ``q`` (``QR``) or ``a`` (``A``), ``incl`` (``IN``), ``Omega``
              (``OM``), ``w`` (``W``), ``M`` (``MA``) or ``Tp`` (``TP``, JD TDB), and
              ``epoch`` (JD TDB) unless given separately; angles in degrees, distances
              in au (Quantities accepted);
            * a dict state vector ``x, y, z, vx, vy, vz`` (au, au/day) and ``epoch``;
            * a row of astroquery's ``Horizons.elements()`` or ``vectors()`` table.
        epoch : `~astropy.time.Time`, optional
            Epoch of the elements (when not in ``elements``), or the epoch at which to
            pick a row of a multi-row Horizons answer.
        location : str or `~astropy.coordinates.EarthLocation`
            ``'500'`` (geocentre) or an EarthLocation. MPC codes would need the network
            to look up; give the site's EarthLocation instead.
        time_range : tuple of `~astropy.time.Time`, optional
            Times where the ephemeris may be used (default: epoch +/- 30 days);
            `at` refuses times outside.
        mu : float or `~astropy.units.Quantity`, optional
            Gravitational parameter (default: the "Keplerian GM" of a Horizons elements
            answer, else the Sun's, `shiftstack_ccd.orbits.GM_SUN`).
        center : {'sun', 'ssb'}, optional
            Origin of the elements or state vector (default: as stated in a Horizons
            answer, else the Sun).
        frame : {'ecliptic', 'icrs'}, optional
            Axes of the elements or state vector (default: as stated in a Horizons
            answer, else the J2000 ecliptic, Horizons' default).
        light_time : bool
            Astrometric (light-time corrected) positions; False gives geometric ones.
        target : str, optional
            Name recorded in the provenance.

        Returns
        -------
        eph : `Ephemeris`

        Examples
        --------
        >>> from astropy.time import Time
        >>> from shiftstack_ccd.ephemeris import Ephemeris
        >>> ceres = {"e": 0.0785838, "q": 2.5490237, "incl": 10.5870677, "Omega": 80.2675687,
        ...          "w": 73.5624666, "M": 323.5863761, "epoch": 2459750.5}
        >>> eph = Ephemeris.from_elements(ceres, target="Ceres")
        >>> pos = eph.at(Time("2022-06-20T00:00", scale="utc"))
        >>> print(f"{pos.ra.deg:.2f} {pos.dec.deg:.2f}")
        106.56 26.60
        """
        from .orbits import GM_SUN, elements_to_state, two_body_astrometric
        from astropy.coordinates import EarthLocation

        state, info = _read_elements(elements, epoch)
        center = center or info.get("center", "sun")
        frame = frame or info.get("frame", "ecliptic")
        if mu is None:
            mu = info.get("mu", GM_SUN)
        elif isinstance(mu, u.Quantity):
            mu = mu.to_value(u.au ** 3 / u.day ** 2)
        mu = float(mu)
        ep = Time(info["epoch_jd"], format="jd", scale="tdb")
        if state is None:
            el = info["elements"]
            r0, v0 = elements_to_state(el["e"], el["incl"], el["Omega"], el["w"],
                                       q=el.get("q"), a=el.get("a"),
                                       mean_anomaly=el.get("M"), tp=el.get("Tp"),
                                       epoch=info["epoch_jd"], mu=mu)
        else:
            r0, v0 = state
        if location is None or (isinstance(location, str)
                                and location.strip().lower() in ("500", "500@399", "@399",
                                                                 "geocentre", "geocenter")):
            loc, loc_label = None, "500"
        elif isinstance(location, EarthLocation):
            loc = location
            lon, lat, h = location.to_geodetic("WGS84")
            loc_label = f"{lon.deg:.6f},{lat.deg:.6f},{h.to_value(u.km):.4f}"
        else:
            raise EphemerisError(
                f"from_elements: location {location!r} is not usable offline; give '500' "
                "(geocentre) or an EarthLocation (e.g. EarthLocation.of_site(...) or "
                "EarthLocation.from_geodetic(lon, lat, height)). MPC codes need a network "
                "lookup.")
        if time_range is None:
            time_range = (ep - 30 * u.day, ep + 30 * u.day)
        t_lo, _ = _as_time(time_range[0], "time_range[0]")
        t_hi, _ = _as_time(time_range[1], "time_range[1]")
        if _tt_days(t_hi, t_lo) <= 0:
            raise EphemerisError("time_range must be (start, stop) with start < stop")

        def model(times):
            unit, rate, dist = two_body_astrometric(r0, v0, ep, times, mu=mu, center=center,
                                                    location=loc, light_time=light_time,
                                                    frame=frame)
            return unit, rate, dist

        meta = {"kind": "elements", "target": target or info.get("target", ""),
                "location": loc_label, "source": info.get("source", "elements"),
                "elements_epoch": ep.isot + " TDB", "mu_au3_d2": mu, "center": center,
                "frame": frame, "light_time": bool(light_time),
                "observer_ephemeris": "astropy builtin (erfa epv00)", "rates": "derivative",
                "time_scale": "utc"}
        if "elements" in info:
            meta["elements"] = {k: float(v) for k, v in info["elements"].items()}
        meta["state_au_au_per_day"] = [float(x) for x in np.concatenate([r0, v0])]
        for key in ("source_file", "resolved_name", "record"):
            if key in info:
                meta[key] = info[key]
        obj = cls._blank(meta)
        obj._model = model
        obj._valid = (t_lo.utc, t_hi.utc)
        return obj

    # ------------------------------------------------------------------ set-up
    def _setup_table(self, std, interpolation):
        if interpolation not in ("auto", "hermite", "spline"):
            raise EphemerisError(
                f"interpolation must be 'auto', 'hermite' or 'spline', not {interpolation!r}")
        times = std["time"]
        order = np.argsort(_tt_days(times, times[0]), kind="stable")
        std = std[order]
        times = std["time"]
        x = _tt_days(times, times[0])
        dup = np.nonzero(np.diff(x) <= _EDGE_TOL_DAYS)[0]
        if dup.size:
            same = (np.abs(std["ra"][dup] - std["ra"][dup + 1]) < 1e-9) & \
                   (np.abs(std["dec"][dup] - std["dec"][dup + 1]) < 1e-9)
            if not np.all(same):
                bad = _iso(times[dup[~same][:3]])
                raise EphemerisError(f"the ephemeris table has repeated epochs with different "
                                     f"positions: {', '.join(bad)}; remove the duplicates")
            keep = np.ones(len(std), bool)
            keep[dup + 1] = False
            std = std[keep]
            times = std["time"]
            x = _tt_days(times, times[0])
        ra = _float_array(std["ra"])
        dec = _float_array(std["dec"])
        if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
            raise EphemerisError("the ephemeris table has missing or non-finite RA/Dec values")
        has_rates = ("ra_rate" in std.colnames and "dec_rate" in std.colnames
                     and np.all(np.isfinite(_float_array(std["ra_rate"])))
                     and np.all(np.isfinite(_float_array(std["dec_rate"]))))
        method = interpolation
        if method == "auto":
            # Hermite when the rates are derivatives of the positions, when there are too
            # few rows for a spline, or when the rows are the exact frame epochs (a
            # Horizons TLIST): sparse nodes, where the tabulated rates beat any derivative
            # of the positions. A spline through dense apparent-rate (Horizons) tables.
            consistent = self._meta.get("rates", "derivative") == "derivative"
            sparse = len(std) < 4 or self._meta.get("epochs_mode") == "tlist"
            method = "hermite" if has_rates and (consistent or sparse) else "spline"
        if method == "hermite" and not has_rates:
            raise EphemerisError("interpolation='hermite' needs finite ra_rate and dec_rate "
                                 "columns; use 'spline' or 'auto'")
        self._table = std
        self._t0 = times[0].tt
        self._x = x
        self._nodes = _unit_vectors(ra, dec)
        self._interpolation = method
        self._has_rates = has_rates
        if has_rates:
            self._dnodes = _rates_to_vectors(ra, dec, _float_array(std["ra_rate"]),
                                             _float_array(std["dec_rate"]))
        if len(std) == 1:
            self._interp = None
        elif method == "hermite":
            self._interp = CubicHermiteSpline(x, self._nodes, self._dnodes, axis=0)
        elif has_rates:
            self._interp = CubicSpline(x, self._nodes, axis=0,
                                       bc_type=((1, self._dnodes[0]), (1, self._dnodes[-1])))
        else:
            self._interp = CubicSpline(x, self._nodes, axis=0)  # not-a-knot; 2 rows: linear
        self._dinterp = None if self._interp is None else self._interp.derivative()

    # ------------------------------------------------------------------ evaluation
    def _label(self):
        name = self._meta.get("resolved_name") or self._meta.get("target") or ""
        kind = self._meta.get("kind", "table")
        return f"{name} ephemeris ({kind})".strip()

    def _table_x(self, t):
        """TT days from the first node, after refusing times outside the table."""
        x = _tt_days(t, self._t0)
        lo, hi = self._x[0], self._x[-1]
        bad = (x < lo - _EDGE_TOL_DAYS) | (x > hi + _EDGE_TOL_DAYS) | ~np.isfinite(x)
        if np.any(bad):
            self._refuse(t[bad], self._table["time"][0], self._table["time"][-1])
        return np.clip(x, lo, hi)

    def _refuse(self, bad_times, t0, t1):
        n = bad_times.size
        shown = ", ".join(_iso(bad_times[:5])) + (", ..." if n > 5 else "")
        raise EphemerisError(
            f"{self._label()}: {n} epoch(s) outside its range {_fmt_range(t0, t1)}: {shown}. "
            "It does not extrapolate; extend it (query Horizons for these epochs, or give "
            "a longer table).")

    def _model_check(self, t):
        t_lo, t_hi = self._valid
        x = _tt_days(t, t_lo)
        span = _tt_days(t_hi, t_lo)
        bad = (x < -_EDGE_TOL_DAYS) | (x > span + _EDGE_TOL_DAYS)
        if np.any(bad):
            self._refuse(t[bad], t_lo, t_hi)

    def _vectors(self, t):
        """Unit vectors (N, 3) and their derivatives (rad/day) at 1-d times."""
        if self._linear is not None:
            lin = self._linear
            dt = (t - lin["epoch"]).to(u.hour)
            pos = lin["position"].spherical_offsets_by(lin["ra_rate"] * dt,
                                                       lin["dec_rate"] * dt)
            vec = _unit_vectors(pos.ra.deg, pos.dec.deg)
            return vec, None
        if self._model is not None:
            self._model_check(t)
            unit, rate, _ = self._model(t)
            return unit, rate
        x = self._table_x(t)
        if self._interp is None:
            vec = np.repeat(self._nodes[:1], len(x), axis=0)
            dvec = np.repeat(self._dnodes[:1], len(x), axis=0) if self._has_rates else None
            return vec, dvec
        return self._interp(x), self._dinterp(x)

    def at(self, times):
        """Position of the target at ``times``.

        Parameters
        ----------
        times : `~astropy.time.Time`
            Scalar or array, any scale.

        Returns
        -------
        coord : `~astropy.coordinates.SkyCoord`
            ICRS; scalar for a scalar ``times``, else the shape of ``times``.

        Raises
        ------
        shiftstack_ccd.exceptions.EphemerisError
            For times outside a table's (or an elements ephemeris') range.
        """
        t, scalar = _as_time(times)
        flat = t.reshape(-1) if not scalar else t.reshape(1)
        vec, _ = self._vectors(flat)
        ra, dec = _radec(vec)
        shape = () if scalar else t.shape
        return SkyCoord(ra.reshape(shape) * u.deg, dec.reshape(shape) * u.deg, frame="icrs")

    def rates_at(self, times):
        """Angular rates of the target at ``times``.

        Returns
        -------
        ra_rate, dec_rate : `~astropy.units.Quantity`
            ``dRA*cos(Dec)/dt`` and ``dDec/dt`` in arcsec/hour on ICRS axes: the
            derivative of the interpolated track (tables), the analytic rate
            (elements) or the defining rates (linear).
        """
        t, scalar = _as_time(times)
        flat = t.reshape(-1) if not scalar else t.reshape(1)
        shape = () if scalar else t.shape
        if self._linear is not None:
            ones = np.ones(shape)
            return ones * self._linear["ra_rate"], ones * self._linear["dec_rate"]
        vec, dvec = self._vectors(flat)
        if dvec is None:
            raise EphemerisError(f"{self._label()}: a one-row table without rate columns has "
                                 "no rates")
        ra_rate, dec_rate = _vectors_to_rates(vec, dvec)
        return ra_rate.reshape(shape) * RATE_UNIT, dec_rate.reshape(shape) * RATE_UNIT

    def uncertainty_at(self, times):
        """1-sigma position uncertainty at ``times``, or None when unknown.

        Tables with ``ra_3sigma``/``dec_3sigma`` columns (Horizons' quantity 36) are
        interpolated linearly and divided by 3.

        Returns
        -------
        ra_sigma, dec_sigma : `~astropy.units.Quantity` or None
            In arcsec (RA one is on the sky, i.e. includes cos(Dec), as Horizons').
        """
        t, scalar = _as_time(times)
        if self._table is None or "ra_3sigma" not in self._table.colnames \
                or "dec_3sigma" not in self._table.colnames:
            if self._model is not None:
                self._model_check(t.reshape(-1) if not scalar else t.reshape(1))
            return None
        flat = t.reshape(-1) if not scalar else t.reshape(1)
        x = self._table_x(flat)
        shape = () if scalar else t.shape
        out = []
        for name in ("ra_3sigma", "dec_3sigma"):
            col = _float_array(self._table[name])
            if not np.any(np.isfinite(col)):
                return None
            val = np.interp(x, self._x, col) if len(col) > 1 else np.full(x.shape, col[0])
            out.append((val / 3.0).reshape(shape) * u.arcsec)
        return tuple(out)

    # ------------------------------------------------------------------ properties
    @property
    def kind(self):
        """'linear', 'table', 'horizons' or 'elements'."""
        return self._meta.get("kind", "table")

    @property
    def meta(self):
        """Provenance (a dict): kind, target, resolved name, record, observer, query time,
        astroquery version, source file ...; written into `to_table` and FITS headers."""
        return self._meta

    @property
    def interpolation(self):
        """The interpolation used by a table ('hermite' or 'spline'), else None."""
        return self._interpolation

    @property
    def time_range(self):
        """(first, last) `~astropy.time.Time` (UTC) where `at` may be used; None if unbounded
        (linear)."""
        if self._linear is not None:
            return None
        if self._model is not None:
            return self._valid
        times = self._table["time"]
        return (times[0].utc, times[-1].utc)

    def __len__(self):
        return 0 if self._table is None else len(self._table)

    def __repr__(self):
        rng = self.time_range
        span = "unbounded" if rng is None else _fmt_range(*rng)
        name = self._meta.get("resolved_name") or self._meta.get("target") or "target"
        extra = f", {len(self)} rows, {self._interpolation}" if self._table is not None else ""
        return f"<Ephemeris {self.kind} of {name!s}: {span}{extra}>"

    # ------------------------------------------------------------------ output
    def to_table(self, times=None):
        """The ephemeris as a table (what `write` saves).

        Parameters
        ----------
        times : `~astropy.time.Time`, optional
            Evaluate at these times; by default a table's own rows, a linear
            ephemeris' epoch (one row, which `from_table` turns back into the same linear
            motion) or an elements ephemeris tabulated every 30 minutes over its range.

        Returns
        -------
        table : `~astropy.table.Table`
            Columns ``time`` (`~astropy.time.Time`, UTC), ``ra``, ``dec`` (deg),
            ``ra_rate``, ``dec_rate`` (arcsec/h), ``ra_3sigma``, ``dec_3sigma``
            (arcsec) when known, other tabulated columns; ``meta`` holds the provenance.
        """
        meta = dict(self._meta)
        meta["time_scale"] = "utc"
        if self._interpolation is not None:
            meta["interpolation"] = self._interpolation
        if times is None and self._table is not None:
            out = self._table.copy()
            out["time"] = Time(out["time"], precision=6).utc
            out.meta = meta
            return _describe(out)
        if times is None and self._linear is not None:
            times = self._linear["epoch"]
        if times is None:
            t_lo, t_hi = self._valid
            n = int(np.floor((_tt_days(t_hi, t_lo) * u.day / _ELEMENTS_TABLE_STEP)
                             .to_value(u.one) + 1e-9)) + 1
            times = t_lo + np.arange(n) * _ELEMENTS_TABLE_STEP
            if _tt_days(t_hi, times[-1]) > _EDGE_TOL_DAYS:
                times = Time([*times, t_hi])
        t, _ = _as_time(times)
        t = t.reshape(-1) if not t.isscalar else t.reshape(1)
        pos = self.at(t)
        ra_rate, dec_rate = self.rates_at(t)
        out = Table()
        out["time"] = Time(t, precision=6).utc
        out["ra"] = pos.ra.deg * u.deg
        out["dec"] = pos.dec.deg * u.deg
        out["ra_rate"] = ra_rate.to(RATE_UNIT)
        out["dec_rate"] = dec_rate.to(RATE_UNIT)
        unc = self.uncertainty_at(t)
        if unc is not None:
            out["ra_3sigma"] = 3 * unc[0]
            out["dec_3sigma"] = 3 * unc[1]
        if self._linear is None:
            meta["rates"] = "derivative"  # derivatives of the interpolated/propagated track
        out.meta = meta
        return _describe(out)

    def write(self, path, overwrite=False):
        """Write the ephemeris as ECSV (atomically), with every column and the provenance.

        Parameters
        ----------
        path : str or `~pathlib.Path`
            Output file (``.ecsv``).
        overwrite : bool
            Replace an existing file (else `~shiftstack_ccd.exceptions.OutputExistsError`).
        """
        table = self.to_table()
        with atomic_output(path, overwrite=overwrite) as tmp:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
        log.info("wrote ephemeris %s (%d rows)", path, len(table))

    def header_cards(self):
        """FITS cards (key, value, comment) summarising the motion model and its provenance.

        Keys have at most 8 characters and values are short: ``EPHKIND``, ``EPHTARG``,
        ``EPHNAME`` (resolved name), ``EPHREC`` (Horizons record), ``EPHLOC``,
        ``EPHSRC``, ``EPHQTIME``, ``EPHAQVER``, ``EPHMODE``/``EPHSTEP`` (how Horizons
        was queried), ``EPHINTRP``, ``EPHTMIN``/``EPHTMAX``, and for a linear model
        ``EPHEPOCH``, ``EPHRA``, ``EPHDEC``, ``EPHRATE1``, ``EPHRATE2``.

        Examples
        --------
        >>> import astropy.units as u
        >>> from astropy.coordinates import SkyCoord
        >>> from astropy.time import Time
        >>> from shiftstack_ccd.ephemeris import Ephemeris
        >>> eph = Ephemeris.linear(SkyCoord(1 * u.deg, 2 * u.deg), Time("2024-01-01"),
        ...                        10 * u.arcsec / u.hour, -5 * u.arcsec / u.hour)
        >>> dict((k, v) for k, v, c in eph.header_cards())["EPHRATE1"]
        10.0
        """
        m = self._meta
        cards = [("EPHKIND", m.get("kind", "table"), "motion model (linear/table/horizons/...)")]

        def add(key, value, comment):
            if value not in (None, ""):
                cards.append((key, value if isinstance(value, (int, float, bool))
                              else _short(value), comment))

        add("EPHTARG", m.get("target"), "target as requested")
        add("EPHNAME", m.get("resolved_name"), "target name resolved by Horizons")
        add("EPHREC", m.get("record"), "Horizons record number (orbit solution)")
        add("EPHSOLN", m.get("solution"), "orbit solution")
        add("EPHLOC", m.get("location"), "observer (Horizons code or lon,lat,km)")
        src = m.get("source_file") or m.get("source")
        if m.get("kind") == "horizons" and not m.get("source_file"):
            src = "JPL Horizons via astroquery"
        add("EPHSRC", Path(src).name if m.get("source_file") else src, "ephemeris source")
        add("EPHQTIME", m.get("query_time"), "Horizons query time (UTC)")
        add("EPHAQVER", m.get("astroquery_version"), "astroquery version")
        add("EPHMODE", m.get("epochs_mode"), "Horizons epochs: range or tlist")
        add("EPHSTEP", m.get("step"), "Horizons range step")
        add("EPHINTRP", self._interpolation, "interpolation of the table")
        add("EPHEPOCH", m.get("elements_epoch"), "epoch of the orbital elements")
        rng = self.time_range
        if rng is not None:
            add("EPHTMIN", rng[0].utc.isot[:23], "ephemeris valid from (UTC)")
            add("EPHTMAX", rng[1].utc.isot[:23], "ephemeris valid to (UTC)")
        if self._linear is not None:
            lin = self._linear
            add("EPHEPOCH", lin["epoch"].utc.isot[:23], "epoch of the linear model (UTC)")
            add("EPHRA", round(float(lin["position"].ra.deg), 9), "[deg] RA at EPHEPOCH")
            add("EPHDEC", round(float(lin["position"].dec.deg), 9), "[deg] Dec at EPHEPOCH")
            add("EPHRATE1", float(lin["ra_rate"].to_value(RATE_UNIT)),
                "[arcsec/h] dRA*cos(Dec)/dt")
            add("EPHRATE2", float(lin["dec_rate"].to_value(RATE_UNIT)), "[arcsec/h] dDec/dt")
        fitted = []
        for key, value, comment in cards:  # keep each card within 80 characters
            vlen = max(len(str(value).replace("'", "''")) + 2, 10) if isinstance(value, str) \
                else 20
            room = max(80 - 10 - vlen - 3, 0)
            fitted.append((key, value, comment if len(comment) <= room else comment[:room]))
        return fitted


# --------------------------------------------------------------------------- table I/O
_DESCRIPTIONS = {
    "time": "epoch (UTC)",
    "ra": "astrometric right ascension, ICRS",
    "dec": "astrometric declination, ICRS",
    "ra_rate": "dRA*cos(Dec)/dt on ICRS axes",
    "dec_rate": "dDec/dt on ICRS axes",
    "ra_rate_app": "Horizons apparent-place dRA*cos(Dec)/dt (of-date axes)",
    "dec_rate_app": "Horizons apparent-place dDec/dt (of-date axes)",
    "ra_3sigma": "3-sigma RA*cos(Dec) uncertainty (Horizons quantity 36)",
    "dec_3sigma": "3-sigma Dec uncertainty (Horizons quantity 36)",
}


def _describe(table):
    for name, text in _DESCRIPTIONS.items():
        if name in table.colnames:
            table[name].info.description = text
    return table


def _read_table_file(path):
    if not path.exists():
        raise EphemerisError(f"{path}: ephemeris file not found")
    try:
        with open(path, "r", errors="replace") as fh:
            head = fh.read()
    except OSError as exc:
        raise EphemerisError(f"{path}: cannot read the ephemeris file: {exc}") from exc
    if "$$SOE" in head:
        from .horizons import parse_horizons_text
        table, meta = parse_horizons_text(head)
        table.meta.update(meta)
        return table
    suffix = path.suffix.lower()
    try:
        if suffix == ".ecsv" or head.startswith("# %ECSV"):
            return Table.read(path, format="ascii.ecsv")
        if suffix == ".csv":
            return Table.read(path, format="ascii.csv")
        return Table.read(path)
    except Exception as exc:  # noqa: BLE001 - any reader error becomes an EphemerisError
        raise EphemerisError(f"{path}: cannot read an ephemeris table from it ({exc}); "
                             "write ECSV or CSV with time, ra, dec columns") from exc


def _find(table, names):
    lower = {c.lower(): c for c in table.colnames}
    for n in names:
        if n.lower() in lower:
            return lower[n.lower()]
    return None


def _parse_time_column(col, name, scale):
    if isinstance(col, Time):
        return col
    data = getattr(col, "value", col)
    if hasattr(data, "filled"):
        data = data.filled(np.nan) if data.dtype.kind == "f" else data.filled("")
    data = np.asarray(data)
    lname = name.lower()
    if data.dtype.kind in "iuf":
        if "mjd" in lname:
            fmt = "mjd"
        elif lname in ("jd", "datetime_jd") or "jd" in lname:
            fmt = "jd"
        else:
            fmt = "jd" if np.nanmin(data) > 2.4e6 else "mjd"
        return Time(data.astype(float), format=fmt, scale=scale)
    strings = [str(s).strip() for s in data]
    try:
        return Time(strings, scale=scale)
    except ValueError:
        pass
    from datetime import datetime
    for fmt in ("%Y-%b-%d %H:%M:%S.%f", "%Y-%b-%d %H:%M:%S", "%Y-%b-%d %H:%M", "%Y-%b-%d"):
        try:
            return Time([datetime.strptime(s, fmt) for s in strings], scale=scale)
        except ValueError:
            continue
    raise EphemerisError(f"cannot read the time column {name!r} (first value "
                         f"{strings[0]!r}); use ISO strings, JD or MJD")


def _angle_column(col, name, is_ra):
    from astropy.coordinates import Angle
    unit = getattr(col, "unit", None)
    data = getattr(col, "value", col)
    if hasattr(data, "filled"):
        data = data.filled(np.nan) if data.dtype.kind == "f" else data.filled("")
    data = np.asarray(data)
    if data.dtype.kind in "iuf":
        if unit is not None and u.Unit(unit) != u.dimensionless_unscaled:
            try:
                return (data * u.Unit(unit)).to_value(u.deg)
            except u.UnitsError as exc:
                raise EphemerisError(f"column {name!r} has unit {unit}, not an angle") from exc
        return data.astype(float)
    strings = [str(s).strip() for s in data]
    sexa = any((":" in s) or ("h" in s.lower()) for s in strings[:3])
    a_unit = u.hourangle if (is_ra and sexa) else u.deg
    return Angle(strings, unit=a_unit).deg


def _quantity_column(col, default_unit, target_unit, name):
    unit = getattr(col, "unit", None)
    data = _float_array(col)
    if unit is None or u.Unit(unit) == u.dimensionless_unscaled:
        unit = default_unit
    try:
        return (data * u.Unit(unit)).to_value(target_unit)
    except u.UnitsError as exc:
        raise EphemerisError(f"column {name!r} has unit {unit}; expected something "
                             f"convertible to {target_unit}") from exc


def _standardize_table(table):
    """Recognise the columns of a user/Horizons table; return (standard table, meta)."""
    meta = {k: v for k, v in dict(table.meta).items()}
    if "datetime_jd" in table.colnames and "RA" in table.colnames and \
            ("targetname" in table.colnames or "RA_rate" in table.colnames) \
            and "ra" not in table.colnames:
        from .horizons import standardize_horizons_table
        std, hmeta = standardize_horizons_table(table)
        hmeta.update(meta)
        hmeta.setdefault("kind", "horizons")
        return std, hmeta
    scale = str(meta.get("time_scale", "utc")).lower()
    tname = _find(table, ["time", "epoch", "datetime_jd", "jd", "mjd", "date", "datetime",
                          "date_obs", "date-obs", "datetime_str", "jd_utc", "mjd_utc"])
    if tname is None:
        raise EphemerisError(f"the ephemeris table has no time column (looked for time, epoch, "
                             f"date, datetime, jd, mjd); it has {table.colnames}")
    raname = _find(table, ["ra", "ra_deg", "raj2000", "ra_icrs"])
    decname = _find(table, ["dec", "dec_deg", "dej2000", "decj2000", "dec_icrs"])
    if raname is None or decname is None:
        raise EphemerisError(f"the ephemeris table needs ra and dec columns (degrees); it has "
                             f"{table.colnames}")
    times = _parse_time_column(table[tname], tname, scale)
    std = Table()
    std["time"] = times.utc
    std["ra"] = _angle_column(table[raname], raname, True) % 360.0
    std["dec"] = _angle_column(table[decname], decname, False)
    std["ra"].unit = u.deg
    std["dec"].unit = u.deg
    used = {tname, raname, decname}
    for std_name, cands, dunit, tunit in (
            ("ra_rate", ["ra_rate", "dra_cosdec", "ra_rate_cosdec"], RATE_UNIT, RATE_UNIT),
            ("dec_rate", ["dec_rate", "ddec"], RATE_UNIT, RATE_UNIT),
            ("ra_3sigma", ["ra_3sigma"], u.arcsec, u.arcsec),
            ("dec_3sigma", ["dec_3sigma"], u.arcsec, u.arcsec)):
        name = _find(table, cands)
        if name is not None:
            std[std_name] = _quantity_column(table[name], dunit, tunit, name)
            std[std_name].unit = tunit
            used.add(name)
    if ("ra_rate" in std.colnames) != ("dec_rate" in std.colnames):
        raise EphemerisError("the ephemeris table has only one of ra_rate/dec_rate; give both "
                             "or neither")
    for name in table.colnames:
        if name not in used and name not in std.colnames:
            std[name] = table[name]
    return std, meta


def _read_elements(elements, epoch):
    """Return (state or None, info) from the many accepted forms of ``elements``."""
    from astropy.table import Row
    info = {}

    def _is_file(x):
        try:
            return Path(str(x)).is_file()
        except (OSError, ValueError):  # e.g. a long text that is no file name
            return False

    if isinstance(elements, (str, Path)) and ("$$SOE" in str(elements) or _is_file(elements)):
        from .horizons import parse_horizons_elements
        text = str(elements)
        if "$$SOE" not in text:
            info["source_file"] = text
            info["source"] = Path(text).name
            text = Path(text).read_text(errors="replace")
        else:
            info["source"] = "Horizons elements/vectors text"
        table, hmeta = parse_horizons_elements(text)
        info.update({k: hmeta[k] for k in ("mu", "resolved_name", "record", "target",
                                           "center", "frame") if k in hmeta})
        jd = np.asarray(table["datetime_jd"], float)
        if epoch is not None:
            ep, _ = _as_time(epoch, "epoch")
            idx = int(np.argmin(np.abs(jd - ep.tdb.jd)))
        else:
            idx = 0
            if len(table) > 1:
                log.info("elements: %d rows; using the first (epoch JD %.6f TDB); pass epoch= "
                         "to choose", len(table), jd[0])
        elements = table[idx]
    if isinstance(elements, Row):
        elements = {k: elements[k] for k in elements.colnames}
    if not isinstance(elements, dict):
        raise EphemerisError("elements must be a Horizons elements/vectors file or text, a dict "
                             "of elements or of a state vector, or a table row")
    low = {}
    for k, v in elements.items():  # exact names first: 'q' (perihelion) is not 'Q' (aphelion)
        low.setdefault(str(k).lower(), v)
    exact = {str(k): v for k, v in elements.items()}

    def val(keys, unit=None):
        for k in keys:
            v = exact.get(k, exact.get(k.upper()))
            if v is None and k.lower() in low and k.lower() not in ("q",):
                v = low[k.lower()]
            if v is not None:
                if isinstance(v, u.Quantity):
                    return float(v.to_value(unit)) if unit is not None else float(v.value)
                col_unit = getattr(v, "unit", None)
                if col_unit is not None and unit is not None:
                    try:
                        return float((np.asarray(v, float) * u.Unit(col_unit)).to_value(unit))
                    except (u.UnitsError, ValueError):
                        pass
                return float(v)
        return None

    if isinstance(low.get("epoch"), Time):
        ep_jd = low["epoch"].tdb.jd
    else:
        ep_jd = val(["epoch", "datetime_jd", "jdtdb", "epoch_jd"], u.day)
    if epoch is not None and ep_jd is None:
        ep, _ = _as_time(epoch, "epoch")
        ep_jd = ep.tdb.jd
    if ep_jd is None:
        raise EphemerisError("the elements have no epoch; pass epoch=Time(..., scale='tdb') or an "
                             "'epoch' entry (JD TDB)")
    info["epoch_jd"] = ep_jd
    if "name" in low or "targetname" in low:
        info.setdefault("target", str(low.get("targetname", low.get("name"))))
    state_keys = ("x", "y", "z", "vx", "vy", "vz")
    if all(k in low for k in state_keys):
        r = np.array([val([k], u.au) for k in state_keys[:3]])
        v = np.array([val([k], u.au / u.day) for k in state_keys[3:]])
        info["source"] = info.get("source", "state vector")
        return (r, v), info
    el = {"e": val(["e", "ec"]), "incl": val(["incl", "in", "i"], u.deg),
          "Omega": val(["omega", "om", "node"], u.deg), "w": val(["w", "peri", "argper"], u.deg),
          "q": val(["q", "qr"], u.au), "a": val(["a"], u.au), "M": val(["m", "ma"], u.deg),
          "Tp": val(["tp", "tp_jd", "tp_jdtdb"], u.day)}
    missing = [k for k in ("e", "incl", "Omega", "w") if el[k] is None]
    if el["q"] is None and el["a"] is None:
        missing.append("q or a")
    if el["M"] is None and el["Tp"] is None:
        missing.append("M or Tp")
    if missing:
        raise EphemerisError(f"the orbital elements lack {', '.join(missing)}; got keys "
                             f"{sorted(elements)}")
    info["elements"] = {k: v for k, v in el.items() if v is not None}
    return None, info


# --------------------------------------------------------------------------- CLI helper
def ephemeris_for_times(times, target, location="500", *, id_type=None, cache=True,
                        cache_dir=None, epochs="auto", step=None, output=None,
                        overwrite=False, timeout=None):
    """Fetch (or reuse from the cache) the Horizons ephemeris covering a set of frame times.

    The plain function behind ``shiftstack-ccd ephemeris FILES --target T --location L
    -o eph.ecsv`` and ``shiftstack-ccd stack ... --target T --location L``: give it the
    frames' mid-exposure times; it makes one Horizons request per batch (none when the
    answer is cached) and optionally writes the table.

    Parameters
    ----------
    times : `~astropy.time.Time`
        Mid-exposure times of the frames (any scale).
    target, location, id_type, cache, cache_dir, epochs, step, timeout
        As for `Ephemeris.from_horizons`.
    output : str or `~pathlib.Path`, optional
        Write the ephemeris there (ECSV).
    overwrite : bool
        Replace ``output`` if it exists.

    Returns
    -------
    eph : `Ephemeris`
    """
    eph = Ephemeris.from_horizons(target, location, times=times, id_type=id_type, cache=cache,
                                  cache_dir=cache_dir, epochs=epochs, step=step, timeout=timeout)
    if output is not None:
        eph.write(output, overwrite=overwrite)
    return eph
