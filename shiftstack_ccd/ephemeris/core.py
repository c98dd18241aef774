# Licensed under a 3-clause BSD style license - see LICENSE
"""The motion model of a moving target: where it is on the sky at any time.

`Ephemeris` is the interface (`at`, `rates_at`, `uncertainty_at`, `time_range`, `to_table`,
`write`, `header_cards`); one small class per kind is behind it, built by the
`Ephemeris` constructors (`Ephemeris.linear`, `Ephemeris.from_table`,
`Ephemeris.from_horizons`, `Ephemeris.from_elements`):

* `~shiftstack_ccd.ephemeris.LinearEphemeris` (**linear**): a position, an epoch and two
  rates, for short sequences or quick looks;
* `~shiftstack_ccd.ephemeris.TableEphemeris` (**table**): tabulated astrometric positions
  (ECSV/CSV written by anyone, a saved JPL Horizons answer), interpolated smoothly and never
  extrapolated;
* `~shiftstack_ccd.ephemeris.HorizonsEphemeris` (**horizons**): a table fetched from JPL
  Horizons through astroquery, in one request per batch of epochs, cached on disk (see
  `shiftstack_ccd.ephemeris.horizons`);
* `~shiftstack_ccd.ephemeris.ElementsEphemeris` (**elements**): two-body propagation of
  osculating elements or of a state vector, with light time, and no network at all (see
  `shiftstack_ccd.ephemeris.orbits`).

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

A new kind is a subclass that implements ``_vectors`` (and ``time_range``); nothing
else needs editing.

A table refuses to extrapolate: asking for a time outside it raises
`~shiftstack_ccd.exceptions.EphemerisError` naming the epochs and the table's range.
"""

import logging
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.table import Table
from astropy.time import Time

from .._utils import atomic_output
from ..exceptions import EphemerisError
from ._sphere import RATE_UNIT, radec, vectors_to_rates
from ._tables import describe, read_elements, read_table_file, standardize_table
from ._values import EDGE_TOL_DAYS, as_time, fmt_range, iso, short, tt_days
from .horizons import query_horizons
from .orbits import GM_SUN, elements_to_state

__all__ = ["Ephemeris", "ephemeris_for_times"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the interface

class Ephemeris:
    """Where a moving target is on the sky, as a function of time.

    The interface of every kind of motion model. Build one with `Ephemeris.linear`,
    `Ephemeris.from_table`, `Ephemeris.from_horizons` or `Ephemeris.from_elements`, which
    return the subclass of the kind (`LinearEphemeris`, `TableEphemeris`,
    `HorizonsEphemeris`, `ElementsEphemeris`); calling the class
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

    _interpolation = None
    _rates_are_derivatives = True  # what `to_table` records in its ``rates`` meta
    # The class of each kind, filled by the subclasses (``class X(Ephemeris, kind="x")``):
    # the constructors below build them without this module importing theirs.
    _kinds = {}

    def __init_subclass__(cls, kind=None, **kwargs):
        super().__init_subclass__(**kwargs)
        if kind is not None:
            Ephemeris._kinds[kind] = cls

    def __new__(cls, *args, **kwargs):
        # Ephemeris(table, ...) is TableEphemeris(table, ...), as it always was.
        return super().__new__(cls._kinds["table"] if cls is Ephemeris else cls)

    # ------------------------------------------------------------------ constructors
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
        return cls._kinds["linear"](position, epoch, ra_rate, dec_rate, meta=meta)

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
            table = read_table_file(source)
        if time_scale is not None:
            table = table.copy(copy_data=False)
            table.meta["time_scale"] = time_scale
        name = str(source) if source is not None else "the ephemeris table"
        try:
            return cls._from_table(table, source, interpolation)
        except EphemerisError as exc:
            text = str(exc)
            raise EphemerisError(text if text.startswith(name) else f"{name}: {text}") from None
        except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as exc:
            # whatever else a malformed table trips on: named, one line, not a traceback
            raise EphemerisError(f"{name}: not a usable ephemeris table "
                                 f"({type(exc).__name__}: {' '.join(str(exc).split())}); "
                                 "write ECSV or CSV with time, ra, dec columns") from None

    @classmethod
    def _from_table(cls, table, source, interpolation):
        if len(table) == 0:
            raise EphemerisError("the ephemeris table has no rows")
        meta = {}
        if source is not None:
            meta["source_file"] = str(source)
        std, tmeta = standardize_table(table)
        tmeta.update(meta)
        tmeta.setdefault("kind", "table")
        for column in ("ra", "dec"):
            values = np.asarray(std[column], dtype=float)
            if not np.all(np.isfinite(values)):
                raise EphemerisError(f"the {column} column has empty or non-finite values")
        if np.any(np.abs(np.asarray(std["dec"], dtype=float)) > 90):
            raise EphemerisError("the dec column has values beyond +-90 degrees")
        if tmeta.get("kind") == "linear" and len(std) == 1 and "ra_rate" in std.colnames:
            row = std[0]
            position = SkyCoord(row["ra"] * u.deg, row["dec"] * u.deg, frame="icrs")
            return cls._kinds["linear"](position, std["time"][0], row["ra_rate"] * RATE_UNIT,
                                        row["dec_rate"] * RATE_UNIT, meta=tmeta)
        kind = "horizons" if tmeta.get("kind") == "horizons" else "table"
        return cls._kinds[kind].from_standard(std, tmeta, interpolation)

    @classmethod
    def from_horizons(cls, target, location="500", times=None, id_type=None, cache=True, *,
                      cache_dir=None, epochs="auto", step=None, interpolation="auto",
                      timeout=None):
        """Query JPL Horizons (through astroquery) for the target's astrometric positions.

        One request per batch of epochs; answers are kept on disk so a repeated run
        makes no request (see `shiftstack_ccd.ephemeris.horizons.query_horizons` for the details,
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
            Range step (default `shiftstack_ccd.ephemeris.horizons.default_step` of ``location``,
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
        if times is None:
            raise EphemerisError("from_horizons needs times= (the frames' mid-exposure times)")
        table, meta = query_horizons(target, location, times, id_type=id_type, cache=cache,
                                     cache_dir=cache_dir, epochs=epochs, step=step,
                                     timeout=timeout)
        return cls._kinds["horizons"].from_standard(table, meta, interpolation)

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
            answer, else the Sun's, `shiftstack_ccd.ephemeris.orbits.GM_SUN`).
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
        state, info = read_elements(elements, epoch)
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
        t_lo, _ = as_time(time_range[0], "time_range[0]")
        t_hi, _ = as_time(time_range[1], "time_range[1]")
        if tt_days(t_hi, t_lo) <= 0:
            raise EphemerisError("time_range must be (start, stop) with start < stop")

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
        return cls._kinds["elements"](r0, v0, ep, mu=mu, center=center, location=loc,
                                      light_time=light_time, frame=frame,
                                      valid=(t_lo.utc, t_hi.utc), meta=meta)

    # ------------------------------------------------------------------ what a kind provides
    def _vectors(self, t):
        """Unit vectors (N, 3) and their derivatives (rad/day, or None) at 1-d times."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _vectors")

    def _check_range(self, t):
        """Refuse 1-d times outside the range where the model may be used."""
        rng = self.time_range
        if rng is None:
            return
        t_lo, t_hi = rng
        x = tt_days(t, t_lo)
        span = tt_days(t_hi, t_lo)
        bad = (x < -EDGE_TOL_DAYS) | (x > span + EDGE_TOL_DAYS)
        if np.any(bad):
            self._refuse(t[bad], t_lo, t_hi)

    def _own_table(self):
        """The table `to_table` returns when given no times (None: tabulate the model)."""
        return None

    def _default_times(self):
        """Times `to_table` tabulates when given none."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _default_times")

    def _kind_cards(self, add):
        """Add the header cards particular to this kind (see `header_cards`)."""

    # ------------------------------------------------------------------ evaluation

    def _label(self):
        name = self._meta.get("resolved_name") or self._meta.get("target") or ""
        kind = self._meta.get("kind", "table")
        return f"{name} ephemeris ({kind})".strip()

    def _refuse(self, bad_times, t0, t1):
        n = bad_times.size
        shown = ", ".join(iso(bad_times[:5])) + (", ..." if n > 5 else "")
        raise EphemerisError(
            f"{self._label()}: {n} epoch(s) outside its range {fmt_range(t0, t1)}: {shown}. "
            "It does not extrapolate; extend it (query Horizons for these epochs, or give "
            "a longer table).")

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
        t, scalar = as_time(times)
        flat = t.reshape(-1) if not scalar else t.reshape(1)
        vec, _ = self._vectors(flat)
        ra, dec = radec(vec)
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
        t, scalar = as_time(times)
        flat = t.reshape(-1) if not scalar else t.reshape(1)
        shape = () if scalar else t.shape
        vec, dvec = self._vectors(flat)
        if dvec is None:
            raise EphemerisError(f"{self._label()}: a one-row table without rate columns has "
                                 "no rates")
        ra_rate, dec_rate = vectors_to_rates(vec, dvec)
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
        t, scalar = as_time(times)
        self._check_range(t.reshape(-1) if not scalar else t.reshape(1))
        return None

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
        return None

    def __len__(self):
        return 0

    def __repr__(self):
        rng = self.time_range
        span = "unbounded" if rng is None else fmt_range(*rng)
        name = self._meta.get("resolved_name") or self._meta.get("target") or "target"
        return f"<Ephemeris {self.kind} of {name!s}: {span}{self._repr_extra()}>"

    def _repr_extra(self):
        return ""

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
        if times is None:
            own = self._own_table()
            if own is not None:
                own.meta = meta
                return describe(own)
            times = self._default_times()
        t, _ = as_time(times)
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
        if self._rates_are_derivatives:
            meta["rates"] = "derivative"  # derivatives of the interpolated/propagated track
        out.meta = meta
        return describe(out)

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
                              else short(value), comment))

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
        self._kind_cards(add)
        fitted = []
        for key, value, comment in cards:  # keep each card within 80 characters
            vlen = max(len(str(value).replace("'", "''")) + 2, 10) if isinstance(value, str) \
                else 20
            room = max(80 - 10 - vlen - 3, 0)
            fitted.append((key, value, comment if len(comment) <= room else comment[:room]))
        return fitted


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
