# Licensed under a 3-clause BSD style license - see LICENSE
"""Reading ephemeris tables and orbital elements in the many forms users have them (private).

Any table with a time column and RA/Dec (user ECSV/CSV, a raw Horizons text answer, an
astroquery Horizons table) becomes one standard table: ``time`` (UTC), ``ra``, ``dec`` (deg),
optionally ``ra_rate``, ``dec_rate`` (arcsec/h), ``ra_3sigma``, ``dec_3sigma`` (arcsec).
"""

import logging
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.table import Table
from astropy.time import Time

from ..exceptions import EphemerisError
from ._sphere import RATE_UNIT
from ._values import as_time, float_array
from .horizons import parse_horizons_elements, parse_horizons_text, standardize_horizons_table

log = logging.getLogger(__name__)

DESCRIPTIONS = {
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


def describe(table):
    for name, text in DESCRIPTIONS.items():
        if name in table.colnames:
            table[name].info.description = text
    return table


def read_table_file(path):
    if not path.exists():
        raise EphemerisError(f"{path}: ephemeris file not found")
    try:
        with open(path, "r", errors="replace") as fh:
            head = fh.read()
    except OSError as exc:
        raise EphemerisError(f"{path}: cannot read the ephemeris file: {exc}") from exc
    if "$$SOE" in head:
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


def find_column(table, names):
    lower = {c.lower(): c for c in table.colnames}
    for n in names:
        if n.lower() in lower:
            return lower[n.lower()]
    return None


def parse_time_column(col, name, scale):
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


def angle_column(col, name, is_ra):
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


def quantity_column(col, default_unit, target_unit, name):
    unit = getattr(col, "unit", None)
    data = float_array(col)
    if unit is None or u.Unit(unit) == u.dimensionless_unscaled:
        unit = default_unit
    try:
        return (data * u.Unit(unit)).to_value(target_unit)
    except u.UnitsError as exc:
        raise EphemerisError(f"column {name!r} has unit {unit}; expected something "
                             f"convertible to {target_unit}") from exc


def standardize_table(table):
    """Recognise the columns of a user/Horizons table; return (standard table, meta)."""
    meta = {k: v for k, v in dict(table.meta).items()}
    if "datetime_jd" in table.colnames and "RA" in table.colnames and \
            ("targetname" in table.colnames or "RA_rate" in table.colnames) \
            and "ra" not in table.colnames:
        std, hmeta = standardize_horizons_table(table)
        hmeta.update(meta)
        hmeta.setdefault("kind", "horizons")
        return std, hmeta
    scale = str(meta.get("time_scale", "utc")).lower()
    tname = find_column(table, ["time", "epoch", "datetime_jd", "jd", "mjd", "date",
                                "datetime", "date_obs", "date-obs", "datetime_str", "jd_utc",
                                "mjd_utc"])
    if tname is None:
        raise EphemerisError(f"the ephemeris table has no time column (looked for time, epoch, "
                             f"date, datetime, jd, mjd); it has {table.colnames}")
    raname = find_column(table, ["ra", "ra_deg", "raj2000", "ra_icrs"])
    decname = find_column(table, ["dec", "dec_deg", "dej2000", "decj2000", "dec_icrs"])
    if raname is None or decname is None:
        raise EphemerisError(f"the ephemeris table needs ra and dec columns (degrees); it has "
                             f"{table.colnames}")
    times = parse_time_column(table[tname], tname, scale)
    std = Table()
    std["time"] = times.utc
    std["ra"] = angle_column(table[raname], raname, True) % 360.0
    std["dec"] = angle_column(table[decname], decname, False)
    std["ra"].unit = u.deg
    std["dec"].unit = u.deg
    used = {tname, raname, decname}
    for std_name, cands, dunit, tunit in (
            ("ra_rate", ["ra_rate", "dra_cosdec", "ra_rate_cosdec"], RATE_UNIT, RATE_UNIT),
            ("dec_rate", ["dec_rate", "ddec"], RATE_UNIT, RATE_UNIT),
            ("ra_3sigma", ["ra_3sigma"], u.arcsec, u.arcsec),
            ("dec_3sigma", ["dec_3sigma"], u.arcsec, u.arcsec)):
        name = find_column(table, cands)
        if name is not None:
            std[std_name] = quantity_column(table[name], dunit, tunit, name)
            std[std_name].unit = tunit
            used.add(name)
    if ("ra_rate" in std.colnames) != ("dec_rate" in std.colnames):
        raise EphemerisError("the ephemeris table has only one of ra_rate/dec_rate; give both "
                             "or neither")
    for name in table.colnames:
        if name not in used and name not in std.colnames:
            std[name] = table[name]
    return std, meta


def read_elements(elements, epoch):
    """Return (state or None, info) from the many accepted forms of ``elements``."""
    from astropy.table import Row
    info = {}

    def _is_file(x):
        try:
            return Path(str(x)).is_file()
        except (OSError, ValueError):  # e.g. a long text that is no file name
            return False

    if isinstance(elements, (str, Path)) and ("$$SOE" in str(elements) or _is_file(elements)):
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
            ep, _ = as_time(epoch, "epoch")
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
        ep, _ = as_time(epoch, "epoch")
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
