# Licensed under a 3-clause BSD style license - see LICENSE
"""JPL Horizons through astroquery: batched requests, a disk cache, plain-word errors.

What is sent
------------
An OBSERVER table (``EPHEM_TYPE=OBSERVER``) with

* ``QUANTITIES='1,3,9,20,23,24,36'``: astrometric RA/Dec (ICRF, light-time corrected,
  no aberration), apparent rates, magnitude, distance, elongation, phase angle and the
  3-sigma RA/Dec uncertainties;
* ``EXTRA_PREC=YES`` (otherwise RA/Dec are rounded to 1e-5 deg = 0.036 arcsec),
  ``ANG_FORMAT=DEG``, ``CAL_FORMAT=BOTH``, ``APPARENT=AIRLESS``, ``REF_SYSTEM=ICRF``,
  no cut-offs (``SKIP_DAYLT=NO``, no airmass or elongation limits) so no epoch is dropped;
* ``TIME_TYPE=UT`` explicitly: epochs sent and returned are UTC (Horizons' "UT" is UTC
  after 1962). With a list of epochs, ``TLIST`` holds UTC Julian dates with
  ``TLIST_TYPE=JD``; with a range, ``START_TIME``/``STOP_TIME`` are UTC calendar
  strings and ``STEP_SIZE`` is whole minutes. The answer's time column must be
  ``Date_________JDUT``, which is checked.

How epochs are batched (``epochs=``)
------------------------------------
``'range'``
    One START/STOP/STEP request covering all the epochs, padded by one step on each
    side and aligned on a grid of the step (so adding a frame to a night usually reuses
    the cached answer); split into several requests only beyond ``max_rows`` rows. The
    step (`default_step`) keeps the interpolation error below 1 mas, and the table
    covers every time in the span (exposure starts and ends, reference time, ...).
``'tlist'``
    The exact epochs, at most ``max_tlist`` (50) per request: Horizons reads the epoch
    list from the URL, whose length must stay under ~2000 characters (astroquery
    warns beyond that and Horizons truncates); 50 epochs make ~1.5 kB. Positions and
    rates are exact at the frames; between frames the table is interpolated with
    Hermite on the Horizons rates, only as well as the frames' spacing allows.
``'auto'`` (default)
    Whichever needs fewer requests, the range on a tie: 50 frames in a night are one
    range request of ~16 rows (20-min step); 50 frames spread over a year are one TLIST
    request rather than 6 range requests of 5000 rows.

Default range steps (`default_step`), from ``benchmarks/bench_ephemeris_interpolation.py``
(exact two-body truth for Ceres and a near-Earth object at 0.05 au): 60 min at the
geocentre or on a smooth orbit (JWST), worst error 0.011 mas; 20 min from a ground site
(diurnal parallax), 0.025 mas; 1 min from low Earth orbit (HST), 0.010 mas.

Rates
-----
Horizons' ``dRA*cosD`` and ``d(DEC)/dt`` are apparent rates on the true equator and
equinox of date. They are rotated to ICRS axes (``ra_rate``, ``dec_rate``; the raw values
are kept as ``ra_rate_app``, ``dec_rate_app``).

Errors
------
Unknown target, ambiguous target (with Horizons' list of candidates and how to pick
one), no network (with the cache folder and the offline alternatives), HTTP errors and
any other refusal raise `~shiftstack_ccd.exceptions.HorizonsError`; none is cached.

Cache
-----
Every answer is stored as JSON (request URL, parameters, query time, astroquery version
and the raw Horizons text) in ``<root>/horizons/<sha256 of the request>.json``, where
``<root>`` is the ``cache_dir`` argument, else ``$SHIFTSTACK_CCD_CACHE``, else
shiftstack_ccd's astropy-style cache folder. A repeated query makes no request. An entry
is checked when read (JSON object of this format, the whole answer, parseable, covering the
request); a malformed one is reported by file name, with a warning, and fetched again.
astroquery's own cache is bypassed (``cache=False``) so answers are stored once.
"""

import hashlib
import json
import logging
import math
import os
import re
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.coordinates import EarthLocation
from astropy.table import Table
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning

from .._utils import atomic_output
from ..exceptions import EphemerisError, HorizonsError
from ._horizons_parser import astroquery_table
from ._sphere import basis, unit_vectors
from ._values import float_array

__all__ = ["CACHE_ENV", "HORIZONS_QUANTITIES", "default_step", "horizons_cache_dir",
           "parse_horizons_elements", "parse_horizons_text", "plan_epochs", "query_horizons",
           "standardize_horizons_table"]

log = logging.getLogger(__name__)

#: Environment variable naming shiftstack_ccd's cache root.
CACHE_ENV = "SHIFTSTACK_CCD_CACHE"

#: Horizons observer-table quantities requested.
HORIZONS_QUANTITIES = "1,3,9,20,23,24,36"

_RATE_UNIT = u.arcsec / u.hour
_CACHE_FORMAT = 1
_MATCH_TOL_DAYS = 1e-3 / 86400.0  # requested vs returned TLIST epochs (Horizons prints 1e-9 d)

# Default range steps (see default_step and benchmarks/bench_ephemeris_interpolation.py).
_STEP_GEOCENTRE = 60 * u.min
_STEP_GROUND = 20 * u.min
_STEP_LEO = 1 * u.min
_LEO_SPACECRAFT = ("hst", "-48")
_SMOOTH_SPACECRAFT = ("jwst", "-170")
# Extra columns kept from Horizons' answer (astroquery names).
_EXTRA_COLUMNS = ("delta", "delta_rate", "r", "r_rate", "V", "Tmag", "Nmag", "surfbright",
                  "elong", "alpha", "lighttime")


# --------------------------------------------------------------------------- location
def _location_param(location):
    """Return (astroquery location, label for provenance, observer class)."""
    if location is None:
        return "500", "500", "geocentre"
    if isinstance(location, EarthLocation):
        if not location.isscalar:
            raise EphemerisError("location must be one EarthLocation, not an array")
        lon, lat, height = location.to_geodetic("WGS84")
        loc = {"lon": lon.to(u.deg), "lat": lat.to(u.deg), "elevation": height.to(u.km)}
        return loc, _loc_label(loc), "ground"
    if isinstance(location, dict):
        missing = {"lon", "lat", "elevation"} - set(location)
        if missing:
            raise EphemerisError(f"a location dict needs lon, lat and elevation (missing "
                                 f"{sorted(missing)}); lon/lat in deg, elevation in km")
        loc = {"lon": u.Quantity(location["lon"], u.deg),
               "lat": u.Quantity(location["lat"], u.deg),
               "elevation": u.Quantity(location["elevation"], u.km)}
        if "body" in location:
            loc["body"] = location["body"]
        return loc, _loc_label(loc), "ground"
    if isinstance(location, (tuple, list)) and len(location) == 3:
        lon, lat, height = location
        if not all(isinstance(q, u.Quantity) for q in location):
            raise EphemerisError("a (lon, lat, height) location needs Quantities, e.g. "
                                 "(-111.5*u.deg, 35.1*u.deg, 2.2*u.km)")
        return _location_param({"lon": lon, "lat": lat, "elevation": height})
    if not isinstance(location, str) or not location.strip():
        raise EphemerisError(f"location must be a Horizons code ('500', '688', '@hst'), an "
                             f"EarthLocation or a lon/lat/elevation dict, not {location!r}")
    code = location.strip()
    low = code.lower()
    if low in ("500", "500@399", "@399", "geocentre", "geocenter", "geocentric", "earth"):
        return ("500" if low in ("geocentre", "geocenter", "geocentric", "earth") else code,
                code, "geocentre")
    if "@" in low:
        body = low.split("@", 1)[1]
        if any(s == body for s in _LEO_SPACECRAFT):
            return code, code, "leo"
        if any(s == body for s in _SMOOTH_SPACECRAFT):
            return code, code, "smooth"
        if body.startswith("-"):
            return code, code, "leo"  # unknown spacecraft: assume the worst (low orbit)
        return code, code, "smooth"
    return code, code, "ground"  # an MPC observatory code


def _loc_label(loc):
    label = (f"{loc['lon'].to_value(u.deg):.6f},{loc['lat'].to_value(u.deg):.6f},"
             f"{loc['elevation'].to_value(u.km):.4f}")
    return label + (f"@{loc['body']}" if "body" in loc and str(loc["body"]) != "399" else "")


def default_step(location):
    """The default range step for an observer, keeping the interpolation error < 1 mas.

    The interpolation error of a table is dominated by the fastest periodic part of
    the observer's motion (its parallax), of amplitude A (angle) and angular
    frequency w: a cubic spline errs by about ``(5/384) A (w h)**4`` at step ``h``.

    * ground sites (MPC codes, EarthLocation): diurnal parallax, A = 8.8"/Delta(au),
      w = 2 pi/day: 20 minutes keeps it below 1 mas down to Delta = 0.05 au
      (0.2 mas for a main-belt asteroid, measured);
    * geocentre and smooth orbits (JWST, other bodies' centres): 60 minutes;
    * low-Earth-orbit spacecraft (HST, unknown spacecraft): orbital parallax,
      A = 7000 km/Delta, w = 2 pi/95 min: 1 minute.

    Parameters
    ----------
    location : str, `~astropy.coordinates.EarthLocation` or dict
        As for `~shiftstack_ccd.ephemeris.Ephemeris.from_horizons`.

    Returns
    -------
    step : `~astropy.units.Quantity`

    Examples
    --------
    >>> from shiftstack_ccd.ephemeris.horizons import default_step
    >>> default_step("688"), default_step("@hst"), default_step("500")
    (<Quantity 20. min>, <Quantity 1. min>, <Quantity 60. min>)
    """
    cls = _location_param(location)[2]
    return {"ground": _STEP_GROUND, "leo": _STEP_LEO}.get(cls, _STEP_GEOCENTRE)


# --------------------------------------------------------------------------- planning
def _step_minutes(step):
    try:
        minutes = u.Quantity(step).to_value(u.min)
    except (u.UnitsError, TypeError) as exc:
        raise EphemerisError(f"step must be a time Quantity (e.g. 10*u.min), not {step!r}") \
            from exc
    if not np.isscalar(minutes) or not np.isfinite(minutes):
        raise EphemerisError(f"step must be one finite time (e.g. 10*u.min), not {step!r}")
    minutes = int(round(minutes))
    if minutes < 1:
        raise EphemerisError("the Horizons step must be at least 1 minute")
    return minutes


def plan_epochs(times, step, *, epochs="auto", max_tlist=50, max_rows=5000):
    """Split a set of epochs into Horizons requests.

    Parameters
    ----------
    times : `~astropy.time.Time`
        Epochs needed (any scale, any order).
    step : `~astropy.units.Quantity`
        Step of range requests (rounded to whole minutes).
    epochs : {'auto', 'range', 'tlist'}
        Strategy (see the module notes).
    max_tlist : int
        Most epochs in one TLIST request.
    max_rows : int
        Most rows in one range request.

    Returns
    -------
    mode : str
        'range' or 'tlist'.
    specs : list
        For 'tlist', lists of UTC JD strings; for 'range', dicts with 'start', 'stop'
        (UTC ISO strings) and 'step' (e.g. ``'20m'``), as astroquery's ``epochs`` wants.

    Examples
    --------
    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astropy.time import Time
    >>> from shiftstack_ccd.ephemeris.horizons import plan_epochs
    >>> night = Time("2024-03-01T03:00") + np.arange(50) * 5 * u.min
    >>> plan_epochs(night, 20 * u.min)
    ('range', [{'start': '2024-03-01 02:40:00', 'stop': '2024-03-01 07:40:00', 'step': '20m'}])
    """
    if epochs not in ("auto", "range", "tlist"):
        raise EphemerisError(f"epochs must be 'auto', 'range' or 'tlist', not {epochs!r}")
    t = times.utc.reshape(-1) if not times.isscalar else times.utc.reshape(1)
    jd = t.jd1 + t.jd2
    order = np.argsort(jd)
    t = t[order]
    # --- exact epochs, deduplicated to the TLIST precision (1e-9 day)
    strings = []
    for jd1, jd2 in zip(t.jd1, t.jd2):
        s = _jd_string(jd1, jd2)
        if not strings or s != strings[-1]:
            strings.append(s)
    tlist = [strings[i:i + max_tlist] for i in range(0, len(strings), max_tlist)]
    # --- ranges on a grid of the step, anchored at 0h UTC of the first day
    minutes = _step_minutes(step)
    step_d = minutes / 1440.0
    anchor = Time(t[0].iso[:10] + " 00:00:00", scale="utc")
    off = (t.tai.jd1 - anchor.tai.jd1) + (t.tai.jd2 - anchor.tai.jd2)
    k0 = math.floor(off[0] / step_d + 1e-9) - 1  # one row before the first epoch
    k1 = math.ceil(off[-1] / step_d - 1e-9) + 1  # one row after the last
    ranges = []
    while True:  # contiguous chunks of at most max_rows rows, sharing their end rows
        k_end = min(k0 + max_rows - 1, k1)
        ranges.append((k0, k_end))
        if k_end >= k1:
            break
        k0 = k_end
    range_specs = []
    for k0, k1 in ranges:
        start = anchor + k0 * minutes * u.min
        stop = anchor + k1 * minutes * u.min
        range_specs.append({"start": _cal(start), "stop": _cal(stop), "step": f"{minutes}m"})
    if epochs == "range" or (epochs == "auto" and len(range_specs) <= len(tlist)):
        return "range", range_specs
    return "tlist", tlist


def _jd_string(jd1, jd2):
    """A UTC JD as a decimal string with 9 decimals (86 us), from the two-part JD."""
    i1 = math.floor(jd1)
    frac = (jd1 - i1) + jd2
    shift = math.floor(frac)
    i1 += shift
    frac -= shift
    micro = int(round(frac * 1e9))
    if micro >= 10 ** 9:
        i1 += 1
        micro -= 10 ** 9
    return f"{i1:d}.{micro:09d}"


def _cal(t):
    t = Time(t, precision=0)
    return t.utc.iso


# --------------------------------------------------------------------------- cache
def horizons_cache_dir(cache_dir=None):
    """Folder of cached Horizons answers: ``<root>/horizons``.

    ``<root>`` is ``cache_dir`` if given, else ``$SHIFTSTACK_CCD_CACHE``, else
    shiftstack_ccd's astropy-style cache folder (``astropy.config.get_cache_dir_path``).
    The folder is created only when an answer is written.
    """
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV)
    if cache_dir:
        root = Path(cache_dir).expanduser()
    else:
        from astropy.config import get_cache_dir_path
        root = get_cache_dir_path("shiftstack_ccd", ensure_exists=False)
    return root / "horizons"


def _cache_key(server, payload):
    blob = json.dumps({"server": server, "params": {k: str(v) for k, v in payload.items()}},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _cache_read(folder, key):
    path = folder / f"{key}.json"
    if not path.exists():
        return None
    try:
        entry = json.loads(path.read_text())
        if not isinstance(entry, dict):
            raise ValueError(f"it holds a JSON {type(entry).__name__}, not an entry")
        if entry.get("format") != _CACHE_FORMAT:
            raise ValueError(f"format {entry.get('format')!r}, not {_CACHE_FORMAT!r}")
        for name in ("text", "url", "query_time"):
            if not isinstance(entry.get(name), str):
                raise ValueError(f"no {name!r} string in it")
        if "$$SOE" not in entry["text"] or "$$EOE" not in entry["text"]:
            raise ValueError("the answer in it is cut short (no $$SOE/$$EOE)")
    except (OSError, ValueError) as exc:
        _stale(path, exc)
        return None
    entry["file"] = str(path)
    return entry


def _stale(path, reason):
    """Say, by file name, that a cache entry is not used (it is then fetched again)."""
    warnings.warn(f"{path}: malformed Horizons cache entry ({reason}); asking Horizons again "
                  "(the entry is replaced)", AstropyUserWarning)


def _cached_answer(entry, spec, mode, times, target, id_type):
    """The table and meta of a cached answer, checked against the request it answers.

    Raises `ValueError` (or `EphemerisError`) when the entry cannot be the answer.
    """
    table, meta = parse_horizons_text(entry["text"], target, id_type)
    if mode == "tlist":
        return _match_tlist(table, spec, target), meta
    start, stop = Time(spec["start"], scale="utc"), Time(spec["stop"], scale="utc")
    t = times.utc.reshape(-1)
    inside = t[(t >= start) & (t <= stop)]
    if len(inside):
        _check_coverage(table, inside, target)
    return table, meta


def _cache_write(folder, key, entry):
    path = folder / f"{key}.json"
    try:
        with atomic_output(path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(entry, indent=1))
    except OSError as exc:
        log.warning("could not write the Horizons cache file %s (%s)", path, exc)
        return None
    return str(path)


# --------------------------------------------------------------------------- parsing
def _header_meta(text):
    """Provenance lines of a Horizons answer."""
    meta = {}
    patterns = {
        "horizons_api_version": r"API VERSION:\s*(\S+)",
        "record": r"Rec #:\s*(-?\d+)",
        "solution_date": r"Soln\.date:\s*(\S+)",
        "resolved_name": r"Target body name:\s*(.+?)\s{2,}",
        "solution": r"Target body name:.*\{source:\s*([^}]+)\}",
        "center_body": r"Center body name:\s*(.+?)\s{2,}",
        "center_site": r"Center-site name:\s*(.+?)\s*$",
        "horizons_time": r"Ephemeris / \S+\s+(.+?\d{4})\s",
    }
    for key, pat in patterns.items():
        m = re.search(pat, text, flags=re.M)
        if m:
            meta[key] = m.group(1).strip()
    m = re.search(r"Keplerian GM\s*:\s*([0-9.Ee+-]+)\s*au\^3/d\^2", text)
    if m:
        meta["mu"] = float(m.group(1))
    return meta


def _check_errors(text, target=None, id_type=None):
    """Raise HorizonsError for answers that are not ephemerides, in words a user can act on."""
    tgt = f"{target!r}" if target is not None else "the target"
    if "No matches found" in text and "$$SOE" not in text:
        raise HorizonsError(
            f"JPL Horizons knows no object matching {tgt} (id_type={id_type!r}). Check the "
            "name or designation (e.g. 'Ceres', '2019 AB', '5945'), or try another id_type "
            "('smallbody', 'designation', 'name').")
    amb = re.search(r"(Matching small-bodies:|Multiple major-bodies match string.*)\s*\n", text)
    if amb and "$$SOE" not in text:
        lines = text[amb.end():].splitlines()
        cands = []
        for line in lines:
            if ("matches." in line or "Number of matches" in line
                    or "To SELECT" in line or line.startswith("****")):
                break
            if line.strip():
                cands.append(line.rstrip())
        major = "major-bodies" in amb.group(1)
        hint = ("Pass the ID# of the body you mean as the target (id_type=None), e.g. "
                "target='502'." if major else
                "Pass the record number of the orbit solution you mean as the target with "
                "id_type='smallbody' (e.g. target='90000091', id_type='smallbody'), or a more "
                "specific designation; for a comet, the latest apparition is usually the last "
                "record.")
        raise HorizonsError(f"JPL Horizons found several objects matching {tgt}:\n"
                            + "\n".join(cands) + f"\n{hint}")
    if "$$SOE" not in text:
        msg = "\n".join(line for line in text.splitlines()[:12] if line.strip())
        raise HorizonsError(f"JPL Horizons did not return an ephemeris for {tgt}; it said:\n"
                            f"{msg}")


def parse_horizons_text(text, target=None, id_type=None):
    """Parse a raw Horizons observer-table answer into a standard ephemeris table.

    Parameters
    ----------
    text : str
        The answer (``format=text``), as recorded or cached.
    target, id_type : optional
        Only for error messages.

    Returns
    -------
    table : `~astropy.table.Table`
        Columns ``time`` (UTC), ``ra``, ``dec`` (deg, astrometric ICRF), ``ra_rate``,
        ``dec_rate`` (arcsec/h on ICRS axes), the raw Horizons rates ``ra_rate_app``,
        ``dec_rate_app``, ``ra_3sigma``, ``dec_3sigma`` (arcsec) when given, and
        extra columns (``delta``, ``V``, ...).
    meta : dict
        Provenance parsed from the header (resolved name, record, solution, center ...).

    Raises
    ------
    shiftstack_ccd.exceptions.HorizonsError
        Unknown or ambiguous target, or any answer without an ephemeris.
    """
    _check_errors(text, target, id_type)
    if "Date_________JDUT" not in text:
        raise HorizonsError("the Horizons answer has no UTC Julian-date column "
                            "(Date_________JDUT); shiftstack_ccd asks TIME_TYPE=UT and "
                            "CAL_FORMAT=BOTH and cannot use other time columns")
    try:
        raw = astroquery_table(text, "ephemerides", "target" if target is None else target)
    except ValueError as exc:
        raise HorizonsError(f"could not read the Horizons answer for {target!r}: {exc}") from exc
    table, meta = standardize_horizons_table(raw)
    hmeta = _header_meta(text)
    hmeta.pop("mu", None)
    meta.update(hmeta)
    return table, meta


def parse_horizons_elements(text):
    """Parse a raw Horizons *elements* or *vectors* answer (astroquery's parser).

    Returns
    -------
    table : `~astropy.table.Table`
        astroquery's columns (``datetime_jd`` in TDB, ``e``, ``q``, ``incl``, ...
        or ``x``, ``y``, ``z``, ``vx`` ...).
    meta : dict
        Provenance, ``center`` ('sun' or 'ssb'), ``frame`` ('ecliptic' or 'icrs') and the
        Keplerian GM (``mu``, au^3/day^2) when printed.
    """
    _check_errors(text)
    query_type = "vectors" if re.search(r"JDTDB,.*\bX,", text) else "elements"
    if "JDTDB" not in text:
        raise HorizonsError("this is not a Horizons elements or vectors answer (no JDTDB "
                            "column)")
    if re.search(r"Center body name:\s*Sun", text):
        center = "sun"
    elif re.search(r"Center body name:\s*Solar System Barycenter", text):
        center = "ssb"
    else:
        raise HorizonsError("the elements/vectors answer must be heliocentric (CENTER='500@10') "
                            "or barycentric (CENTER='500@0')")
    m = re.search(r"Reference frame\s*:\s*(.+)", text)
    frame_line = m.group(1) if m else ""
    if "Ecliptic" in frame_line:
        frame = "ecliptic"
    elif "ICRF" in frame_line:
        frame = "icrs"
    else:
        raise HorizonsError(f"unrecognised reference frame in the elements/vectors answer: "
                            f"{frame_line!r}; use REF_PLANE=ECLIPTIC or FRAME")
    try:
        table = astroquery_table(text, query_type)
    except ValueError as exc:
        raise HorizonsError(f"could not read the Horizons elements/vectors answer: {exc}") \
            from exc
    meta = _header_meta(text)
    meta["target"] = str(table["targetname"][0]) if "targetname" in table.colnames else ""
    meta["center"] = center
    meta["frame"] = frame
    return table, meta


def _apparent_rates_to_icrs(times, ra, dec, ra_rate, dec_rate):
    """Rotate Horizons' rates from the true equator and equinox of date to ICRS axes.

    Horizons gives dRA*cos(Dec)/dt and dDec/dt "with respect to the non-inertial IAU76/80
    Earth true equator and equinox of-date reference frame"; IAU 1976/1980
    precession-nutation (``erfa.pnm80``) takes them to J2000 axes (ICRS within 23 mas).
    Ignoring this rotation errs by up to ~0.1 arcsec/h for a 20-70 arcsec/h mover in
    2022-2024 (measured on the recorded Ceres answers).
    """
    import erfa

    tt = times.tt
    mat = erfa.pnm80(tt.jd1, tt.jd2)  # (N, 3, 3): J2000 mean -> true of date
    vec = unit_vectors(ra, dec)
    vec_tod = np.einsum("nij,nj->ni", mat, vec)
    ra_t = np.rad2deg(np.arctan2(vec_tod[:, 1], vec_tod[:, 0]))
    dec_t = np.rad2deg(np.arcsin(np.clip(vec_tod[:, 2], -1, 1)))
    e_t, n_t = basis(ra_t, dec_t)
    vel_tod = ra_rate[:, None] * e_t + dec_rate[:, None] * n_t
    vel = np.einsum("nji,nj->ni", mat, vel_tod)
    e, n = basis(ra, dec)
    return np.sum(vel * e, axis=1), np.sum(vel * n, axis=1)


def standardize_horizons_table(raw):
    """Convert astroquery's ephemerides table to shiftstack_ccd's columns (see
    `parse_horizons_text`)."""
    if "datetime_jd" not in raw.colnames or "RA" not in raw.colnames or \
            "DEC" not in raw.colnames:
        raise HorizonsError(f"the Horizons table lacks datetime_jd/RA/DEC (has {raw.colnames}); "
                            "request quantity 1 with CAL_FORMAT=BOTH")
    times = Time(float_array(raw["datetime_jd"]), format="jd", scale="utc")
    ra = float_array(raw["RA"])
    dec = float_array(raw["DEC"])
    out = Table()
    out["time"] = times
    out["ra"] = ra * u.deg
    out["dec"] = dec * u.deg
    meta = {"kind": "horizons", "time_scale": "utc",
            "radec": "astrometric RA/DEC (ICRF), Horizons quantity 1"}
    apparent = None
    if "RA_rate" in raw.colnames and "DEC_rate" in raw.colnames:
        rr = float_array(raw["RA_rate"])
        dr = float_array(raw["DEC_rate"])
        if np.all(np.isfinite(rr)) and np.all(np.isfinite(dr)):
            ra_rate, dec_rate = _apparent_rates_to_icrs(times, ra, dec, rr, dr)
            out["ra_rate"] = ra_rate * _RATE_UNIT
            out["dec_rate"] = dec_rate * _RATE_UNIT
            apparent = (rr, dr)
            meta["rates"] = "apparent"
            meta["rates_note"] = ("ra_rate/dec_rate: Horizons apparent rates rotated from "
                                  "of-date to ICRS axes (erfa.pnm80); raw in *_app")
    for src, dst in (("RA_3sigma", "ra_3sigma"), ("DEC_3sigma", "dec_3sigma")):
        if src in raw.colnames:
            vals = float_array(raw[src])
            if np.any(np.isfinite(vals)):
                out[dst] = vals * u.arcsec
    if apparent is not None:
        out["ra_rate_app"] = apparent[0] * _RATE_UNIT
        out["dec_rate_app"] = apparent[1] * _RATE_UNIT
    for name in _EXTRA_COLUMNS:
        if name in raw.colnames:
            col = raw[name]
            vals = float_array(col)
            if np.any(np.isfinite(vals)):
                out[name] = vals * (col.unit if col.unit is not None else 1)
    if "targetname" in raw.colnames and len(raw):
        meta["resolved_name"] = str(raw["targetname"][0])
    return out, meta


# --------------------------------------------------------------------------- query
def _fetch(obj, kwargs, target, loc_label, folder, timeout):
    """One HTTP request through astroquery; returns (text, url)."""
    import requests

    if timeout is not None:
        obj.TIMEOUT = timeout
    try:
        response = obj.ephemerides_async(cache=False, **kwargs)
        response.raise_for_status()
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise HorizonsError(
            f"could not reach JPL Horizons for {target!r} at {loc_label} ({type(exc).__name__}: "
            f"{exc}). No network? A previous answer to this exact query would be in the cache "
            f"({folder}), but there is none. Run once with network access (answers are then "
            f"reused offline), or give the motion offline: on the command line "
            f"--ephemeris TABLE (a saved ephemeris or Horizons answer) or --rates DRA DDEC "
            f"--position RA DEC --epoch TIME; in Python Ephemeris.from_table(...), "
            f"Ephemeris.linear(...) or Ephemeris.from_elements(...).") from exc
    except requests.exceptions.HTTPError as exc:
        body = getattr(exc.response, "text", "") or ""
        raise HorizonsError(f"JPL Horizons answered HTTP {exc.response.status_code} for "
                            f"{target!r}: {body[:300]}") from exc
    except requests.exceptions.RequestException as exc:
        raise HorizonsError(f"the request to JPL Horizons failed for {target!r}: {exc}") \
            from exc
    return response.text, response.url


def query_horizons(target, location="500", times=None, *, id_type=None, cache=True,
                   cache_dir=None, epochs="auto", step=None, max_tlist=50, max_rows=5000,
                   timeout=None):
    """Query Horizons for astrometric positions covering ``times``: batched and cached.

    Parameters
    ----------
    target, location, times, id_type, cache, cache_dir, epochs, step, timeout
        See `~shiftstack_ccd.ephemeris.Ephemeris.from_horizons`.
    max_tlist : int
        Most epochs per TLIST request (URL length).
    max_rows : int
        Most rows per range request.

    Returns
    -------
    table : `~astropy.table.Table`
        See `parse_horizons_text`; sorted, duplicates removed.
    meta : dict
        Provenance: target, id_type, resolved name, record, solution, location,
        center, query time (UTC, of the original request even when read from the cache),
        astroquery version, epochs mode, step, number of requests, request URLs, cache
        files, whether everything came from the cache.
    """
    import astroquery
    from astroquery.jplhorizons import HorizonsClass, conf

    if times is None:
        raise EphemerisError("query_horizons needs times (astropy Time)")
    if not isinstance(times, Time):
        try:
            times = Time(times, scale="utc") if not (
                isinstance(times, (list, tuple)) and times and isinstance(times[0], Time)) \
                else Time(list(times))
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise EphemerisError(f"times must be an astropy Time (or a list of them), not "
                                 f"{type(times).__name__}: {exc}") from exc
    if target is None or str(target).strip() == "":
        raise EphemerisError("a Horizons target is needed (name, designation, number or "
                             "record number)")
    target = str(target).strip()
    loc_param, loc_label, _ = _location_param(location)
    if step is None:
        step = default_step(location)
    mode, specs = plan_epochs(times, step, epochs=epochs, max_tlist=max_tlist,
                              max_rows=max_rows)
    folder = horizons_cache_dir(cache_dir)
    server = conf.horizons_server
    tables, urls, files, qtimes = [], [], [], []
    all_cached = True
    hmeta = {}
    for spec in specs:
        obj = HorizonsClass(id=target, location=loc_param, epochs=spec, id_type=id_type)
        settings = {"TIME_TYPE": "UT", "TIME_DIGITS": "FRACSEC"}
        if mode == "tlist":
            settings["TLIST_TYPE"] = "JD"
        kwargs = dict(quantities=HORIZONS_QUANTITIES, extra_precision=True, refraction=False,
                      refsystem="ICRF", skip_daylight=False, optional_settings=settings)
        payload = obj.ephemerides_async(get_query_payload=True, **kwargs)
        key = _cache_key(server, payload)
        entry = _cache_read(folder, key) if cache else None
        if entry is not None:
            try:
                table, meta = _cached_answer(entry, spec, mode, times, target, id_type)
            except (ValueError, KeyError, TypeError) as exc:  # EphemerisError is a ValueError
                _stale(entry["file"], " ".join(str(exc).split()))
                entry = None
        if entry is None:
            all_cached = False
            log.info("querying JPL Horizons for %s at %s (%s)", target, loc_label,
                     f"{len(spec)} epochs" if mode == "tlist" else
                     f"{spec['start']} to {spec['stop']} every {spec['step']}")
            qtime = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            try:
                text, url = _fetch(obj, kwargs, target, loc_label, folder, timeout)
            finally:
                obj._session.close()  # no dangling connection (ResourceWarning)
            table, meta = parse_horizons_text(text, target, id_type)  # errors are not cached
            entry = {"format": _CACHE_FORMAT, "url": url, "params": dict(payload),
                     "query_time": qtime, "astroquery_version": astroquery.__version__,
                     "text": text}
            if cache:
                path = _cache_write(folder, key, entry)
                if path:
                    files.append(path)
            if mode == "tlist":
                table = _match_tlist(table, spec, target)
        else:
            obj._session.close()
            log.info("Horizons answer for %s read from the cache %s", target, entry["file"])
            files.append(entry["file"])
        tables.append(table)
        urls.append(entry["url"])
        qtimes.append(entry["query_time"])
        hmeta.setdefault("astroquery_version", entry.get("astroquery_version"))
        for k, v in meta.items():
            hmeta.setdefault(k, v)
    from astropy.table import vstack
    table = vstack(tables, metadata_conflicts="silent") if len(tables) > 1 else tables[0]
    table.meta = {}
    x = table["time"].tai.jd1 - table["time"].tai.jd1[0] + \
        (table["time"].tai.jd2 - table["time"].tai.jd2[0])
    order = np.argsort(x, kind="stable")
    table = table[order]
    x = x[order]
    keep = np.concatenate([[True], np.diff(x) > _MATCH_TOL_DAYS])
    table = table[keep]
    _check_coverage(table, times, target)
    meta = {"kind": "horizons", "target": target, "id_type": id_type,
            "location": loc_label, "query_time": min(qtimes),
            "epochs_mode": mode, "step": specs[0]["step"] if mode == "range" else None,
            "n_requests": len(specs), "from_cache": all_cached, "request_urls": urls,
            "cache_files": files, "quantities": HORIZONS_QUANTITIES, "extra_precision": True}
    for k, v in hmeta.items():
        meta.setdefault(k, v)
    meta["time_scale"] = "utc"
    return table, meta


def _match_tlist(table, spec, target):
    """Check a TLIST answer against the request; use the exact epochs sent."""
    sent = Time(spec, format="jd", scale="utc")
    if len(table) != len(sent):
        raise HorizonsError(f"Horizons returned {len(table)} rows for the {len(sent)} epochs "
                            f"sent for {target!r}; the TLIST may have been truncated")
    got = table["time"]
    diff = np.abs((got.jd1 - sent.jd1) + (got.jd2 - sent.jd2))
    if np.any(diff > _MATCH_TOL_DAYS):
        i = int(np.argmax(diff))
        raise HorizonsError(f"Horizons returned epoch {got[i].isot} UTC for the requested "
                            f"{sent[i].isot} UTC ({diff[i] * 86400:.3f} s apart): time scales "
                            "do not match")
    table["time"] = sent
    return table


def _check_coverage(table, times, target):
    t = times.reshape(-1) if not times.isscalar else times.reshape(1)
    first, last = table["time"][0], table["time"][-1]
    lo = (t.tai.jd1 - first.tai.jd1) + (t.tai.jd2 - first.tai.jd2)
    hi = (t.tai.jd1 - last.tai.jd1) + (t.tai.jd2 - last.tai.jd2)
    bad = (lo < -_MATCH_TOL_DAYS) | (hi > _MATCH_TOL_DAYS)
    if np.any(bad):
        raise HorizonsError(f"the Horizons answer for {target!r} covers {first.utc.isot} to "
                            f"{last.utc.isot} UTC but {int(bad.sum())} requested epoch(s) fall "
                            f"outside, e.g. {t[bad][0].utc.isot} UTC")
