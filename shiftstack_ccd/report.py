# Licensed under a 3-clause BSD style license - see LICENSE
"""Reporting measurements to the Minor Planet Center: IAU ADES (PSV, XML) and 80 columns.

`write_ades` writes the rows of a `~shiftstack_ccd.measure.measure_target` table that were
detected as ADES 2022 optical observations, in PSV (``.psv``) or XML (``.xml``) by the file's
suffix; `write_mpc80` writes the MPC's older 80-column lines. Every field is checked against
the ADES submission schema's rules before anything is written: a value out of range is
refused with a message naming the field, never written invalid. (The tests validate the
output with the IAU's own tools, ``psvtoxml`` and ``valsubmit`` of the ``iau-ades``
package.)
"""

import logging
import re
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning

from ._utils import atomic_output
from .exceptions import MeasurementError

__all__ = ["write_ades", "write_mpc80"]

log = logging.getLogger(__name__)

_PERM_ID = re.compile(r"^\d+([IPD](-[A-Z]{1,2})?)?$")
_PROV_ID = re.compile(r"^(\d{4} [A-HJ-Y][A-HJ-Z]\d*|\d{4} (P-L|T-[123])|"
                      r"[ADCPX]/\d{4} [A-Z]{1,2}\d*(-[A-Z])?)$")
_TRK_SUB = re.compile(r"^[-A-Za-z0-9_]{1,8}$")
_ALNUM = re.compile(r"^[A-Za-z0-9_]+$")
_CAT = re.compile(r"^[.A-Za-z0-9_]{1,8}$")


def _identify(obj):
    """(ADES element, value) for a target: permID, provID or trkSub."""
    text = str(obj).strip()
    if _PERM_ID.match(text):
        return "permID", text
    if _PROV_ID.match(text):
        return "provID", text
    if _TRK_SUB.match(text):
        return "trkSub", text
    raise MeasurementError(f"obj={obj!r}: not a number (permID), a provisional designation such as "
                           "'2019 AB12' (provID), nor a tracklet name of 1-8 letters, digits, '-' "
                           "or '_' (trkSub)")


def _decimal(name, value, decimals, width, low=None, high=None, positive=False):
    """A decimal string within the schema's width and range, or a MeasurementError."""
    value = float(value)
    if not np.isfinite(value):
        raise MeasurementError(f"ADES field {name}: {value} is not a finite number")
    if positive and value <= 0:
        raise MeasurementError(f"ADES field {name}: {value} must be positive")
    text = f"{value:.{decimals}f}"
    if positive and float(text) <= 0:
        text = f"{10.0 ** -decimals:.{decimals}f}"  # rounds to zero: the smallest step
    if text.startswith("-0.") and float(text) == 0:
        text = text[1:]
    if low is not None and float(text) < low or high is not None and float(text) > high:
        raise MeasurementError(f"ADES field {name}: {value} is out of range [{low}, {high}]")
    if len(text.lstrip("+-")) > width:
        raise MeasurementError(f"ADES field {name}: {value} does not fit in {width} characters")
    return text


def _text(name, value, pattern, what):
    text = str(value).strip()
    if not pattern.match(text):
        raise MeasurementError(f"ADES field {name}: {value!r} is not {what}")
    return text


def _context(stn, submitter, observers, measurers, telescope):
    """The obsContext as (group, [(key, value)]) pairs, checked."""
    stn = _text("stn", stn, re.compile(r"^[A-Za-z0-9_]{3,4}$"),
                "an MPC observatory code (3 or 4 letters or digits, e.g. '688')")
    names = {}
    for field, value in (("submitter", submitter), ("observers", observers),
                         ("measurers", measurers)):
        value = [value] if isinstance(value, str) else list(value or [])
        if not value or any(not str(v).strip() or len(str(v)) > 100 for v in value):
            raise MeasurementError(f"ADES field {field}: give one or more names of 1-100 "
                                   f"characters; got {value!r}")
        names[field] = [str(v).strip() for v in value]
    if len(names["submitter"]) != 1:
        raise MeasurementError(f"ADES field submitter: one name; got {names['submitter']!r}")
    if not isinstance(telescope, dict):
        raise MeasurementError("ADES field telescope: a dict with 'design', 'aperture' (m) and "
                               "'detector'")
    missing = [k for k in ("design", "aperture", "detector") if k not in telescope]
    if missing:
        raise MeasurementError(f"ADES field telescope: missing {missing} (design, aperture in m, "
                               "detector)")
    tel = []
    if "name" in telescope:
        tel.append(("name", str(telescope["name"])[:100]))
    design = str(telescope["design"]).strip()
    if not design or len(design) > 35:
        raise MeasurementError(f"ADES field telescope design: 1-35 characters; got {design!r}")
    aperture = u.Quantity(telescope["aperture"], u.m).to_value(u.m)
    detector = str(telescope["detector"]).strip()
    if not detector or len(detector) > 25:
        raise MeasurementError(f"ADES field telescope detector: 1-25 characters; got {detector!r}")
    tel += [("design", design),
            ("aperture", _decimal("telescope aperture", aperture, 2, 6, positive=True)),
            ("detector", detector)]
    return stn, [("observatory", [("mpcCode", stn)]),
                 ("submitter", [("name", names["submitter"][0])]),
                 ("observers", [("name", n) for n in names["observers"]]),
                 ("measurers", [("name", n) for n in names["measurers"]]),
                 ("telescope", tel)]


def _observations(table, stn, obj, ast_cat, phot_cat):
    """One ordered list of (field, text) per detected row, every value checked."""
    id_field, id_value = _identify(obj)
    ast_cat = _text("astCat", ast_cat, _CAT, "a catalogue code of 1-8 characters "
                    "(e.g. 'Gaia3', 'Gaia2', 'UCAC4')")
    detected = np.asarray(table["detected"], dtype=bool)
    if not detected.any():
        raise MeasurementError("no detected target in the table: ADES reports detections only "
                               "(the 5-sigma limit is in the table)")
    if not detected.all():
        warnings.warn(f"{int((~detected).sum())} undetected row(s) left out of the report",
                      AstropyUserWarning)
    meta = table.meta
    band = meta.get("band")
    n_frames = meta.get("n_frames")
    exptime = meta.get("exptime")
    rows = []
    for row in table[detected]:
        time = Time(row["time"]).utc
        fields = [(id_field, id_value), ("mode", "CCD"), ("stn", stn),
                  ("obsTime", Time(time, precision=2).isot + "Z"),  # to 0.01 s
                  ("ra", _decimal("ra", u.Quantity(row["ra"], u.deg).value % 360.0, 7, 11,
                                  low=0.0, high=359.9999999)),
                  ("dec", _decimal("dec", u.Quantity(row["dec"], u.deg).value, 7, 10,
                                   low=-90.0, high=90.0)),
                  ("rmsRA", _decimal("rmsRA", u.Quantity(row["ra_err"], u.arcsec).value, 3, 7,
                                     positive=True)),
                  ("rmsDec", _decimal("rmsDec", u.Quantity(row["dec_err"], u.arcsec).value, 3,
                                      7, positive=True)),
                  ("astCat", ast_cat)]
        mag = u.Quantity(row["mag"], u.mag).value
        if np.isfinite(mag):
            if not band:
                raise MeasurementError("ADES field band: the table has magnitudes but no band "
                                       "(table.meta['band'])")
            fields.append(("mag", _decimal("mag", mag, 2, 7, low=-5.0, high=35.0)))
            mag_err = u.Quantity(row["mag_err"], u.mag).value
            if np.isfinite(mag_err):
                fields.append(("rmsMag", _decimal("rmsMag", mag_err, 3, 6, positive=True)))
            fields.append(("band", _text("band", band, re.compile(r"^[A-Za-z0-9_]{1,3}$"),
                                         "a band code of 1-3 letters or digits")))
            if phot_cat:
                fields.append(("photCat", _text("photCat", phot_cat, _CAT,
                                                "a catalogue code of 1-8 characters")))
        snr = float(row["snr"])
        if snr > 0:
            fields.append(("logSNR", _decimal("logSNR", np.log10(snr), 2, 5)))
        fwhm = u.Quantity(row["fwhm"], u.arcsec).value
        if np.isfinite(fwhm):
            fields.append(("seeing", _decimal("seeing", fwhm, 2, 6, positive=True)))
        if exptime and n_frames and np.isfinite(exptime):
            fields.append(("exp", _decimal("exp", float(exptime) * int(n_frames), 1, 6,
                                           positive=True)))
        remark = "shift-and-stack"
        if n_frames:
            remark += f" of {int(n_frames)} frames"
            if exptime and np.isfinite(exptime):
                remark += f" of {float(exptime):g} s (exp is their sum)"
        remark += "; shiftstack_ccd"
        fields.append(("remarks", remark[:300]))
        rows.append(fields)
    return rows


def _psv(context, observations):
    lines = ["# version=2022"]
    for group, items in context:
        lines.append(f"# {group}")
        lines.extend(f"! {key} {value}" for key, value in items)
    keys = [k for k, _ in observations[0]]
    for fields in observations[1:]:
        for k, _ in fields:
            if k not in keys:
                keys.append(k)
    widths = {k: max(len(k), *(len(dict(f).get(k, "")) for f in observations)) for k in keys}
    lines.append("|".join(k.ljust(widths[k]) for k in keys))
    for fields in observations:
        values = dict(fields)
        lines.append("|".join(values.get(k, "").ljust(widths[k]) for k in keys))
    return "\n".join(lines) + "\n"


def _xml(context, observations):
    import xml.etree.ElementTree as ET
    root = ET.Element("ades", version="2022")
    block = ET.SubElement(root, "obsBlock")
    ctx = ET.SubElement(block, "obsContext")
    for group, items in context:
        element = ET.SubElement(ctx, group)
        for key, value in items:
            ET.SubElement(element, key).text = value
    data = ET.SubElement(block, "obsData")
    for fields in observations:
        optical = ET.SubElement(data, "optical")
        for key, value in fields:
            ET.SubElement(optical, key).text = value
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") \
        + "\n"


def write_ades(table, path, *, stn, submitter, observers, measurers, telescope, obj,
               ast_cat, phot_cat=None, overwrite=False):
    """Write detected measurements as IAU ADES 2022 optical observations (PSV or XML).

    Parameters
    ----------
    table : `~astropy.table.QTable`
        As `~shiftstack_ccd.measure.measure_target` returns it; undetected rows are left
        out (with a warning).
    path : str or path
        ``.psv`` for the pipe-separated form, ``.xml`` for XML.
    stn : str
        MPC observatory code.
    submitter : str
        Name of the submitter.
    observers, measurers : list of str
        Names.
    telescope : dict
        ``design`` (e.g. 'Reflector'), ``aperture`` (m), ``detector`` ('CCD', 'CMO'), and
        optionally ``name``.
    obj : int or str
        The target: a number (permID), a provisional designation such as '2019 AB12'
        (provID), or a tracklet name of up to 8 characters (trkSub).
    ast_cat : str
        The catalogue the WCS was solved against (ADES ``astCat``: 'Gaia3', 'Gaia2',
        'UCAC4' ...).
    phot_cat : str, optional
        The photometric catalogue of the zero point (``photCat``).
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    MeasurementError
        A field out of the schema's range (the message names it); nothing is written.
    OutputExistsError
        The file exists and ``overwrite`` is False.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.table import QTable
    >>> from astropy.time import Time
    >>> m = QTable({"time": Time(["2019-03-26T03:39:33.091"]), "ra": [124.62794503] * u.deg,
    ...             "dec": [25.34029997] * u.deg, "ra_err": [0.031] * u.arcsec,
    ...             "dec_err": [0.029] * u.arcsec, "mag": [16.81] * u.mag,
    ...             "mag_err": [0.02] * u.mag, "snr": [306.0], "detected": [True],
    ...             "fwhm": [1.80] * u.arcsec})
    >>> m.meta.update(band="R", n_frames=10, exptime=300.0)
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "obs.psv")
    >>> write_ades(m, path, stn="688", submitter="A. Observer", observers=["A. Observer"],
    ...            measurers=["A. Observer"], obj=5945, ast_cat="Gaia2",
    ...            telescope={"design": "Reflector", "aperture": 1.1, "detector": "CCD"})
    >>> from pathlib import Path
    >>> print(Path(path).read_text().splitlines()[-1].split("|")[:6])
    ['5945  ', 'CCD ', '688', '2019-03-26T03:39:33.09Z', '124.6279450', '+25.3403000']
    """
    from .exceptions import OutputExistsError

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".psv", ".xml"):
        raise MeasurementError(f"{path}: ADES files end in .psv or .xml, not {path.suffix!r}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists; pass overwrite=True to replace it.")
    stn, context = _context(stn, submitter, observers, measurers, telescope)
    observations = _observations(table, stn, obj, ast_cat, phot_cat)
    for fields in observations:  # the dec's sign is explicit, as the MPC prefers
        for i, (key, value) in enumerate(fields):
            if key == "dec" and not value.startswith(("+", "-")):
                fields[i] = (key, "+" + value)
    text = _psv(context, observations) if suffix == ".psv" else _xml(context, observations)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("wrote %d ADES observation(s) to %s", len(observations), path)


# ------------------------------------------------------------------------------ 80 columns
_PACK = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _packed_number(number):
    number = int(number)
    if 0 < number < 100000:
        return f"{number:05d}"
    if number < 620000:
        return _PACK[number // 10000] + f"{number % 10000:04d}"
    raise MeasurementError(f"obj={number}: numbers from 620000 need the MPC's extended packing, "
                           "which write_mpc80 does not write; use write_ades")


def _packed_provisional(designation):
    match = re.match(r"^(\d{2})(\d{2}) ([A-HJ-Y])([A-HJ-Z])(\d*)$", designation)
    if not match:
        raise MeasurementError(f"obj={designation!r}: only provisional designations such as "
                               "'2019 AB12' are packed by write_mpc80")
    century, year, half, letter, cycle = match.groups()
    cycle = int(cycle or 0)
    if cycle >= 620:
        raise MeasurementError(f"obj={designation!r}: cycle count too large to pack")
    return (_PACK[int(century)] + year + half + _PACK[cycle // 10] + str(cycle % 10)
            + letter)


def write_mpc80(table, path, *, stn, obj, overwrite=False):
    """Write detected measurements as MPC 80-column observation lines.

    Columns: 1-5 packed number, 6-12 packed provisional designation (or a temporary name),
    15 note 'C' (CCD), 16-32 UTC date to 1e-6 day, 33-44 RA (hh mm ss.sss), 45-56 Dec
    (sdd mm ss.ss), 66-71 magnitude and band, 78-80 observatory code.

    Parameters
    ----------
    table : `~astropy.table.QTable`
        As `~shiftstack_ccd.measure.measure_target` returns it (undetected rows left out).
    path : str or path
        Output file.
    stn : str
        Three-character MPC observatory code.
    obj : int or str
        Number, provisional designation, or a temporary name of up to 7 characters.
    overwrite : bool
        Replace an existing file.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.table import QTable
    >>> from astropy.time import Time
    >>> m = QTable({"time": Time(["2019-03-26T03:39:33.091"]), "ra": [124.62794503] * u.deg,
    ...             "dec": [25.34029997] * u.deg, "mag": [16.81] * u.mag,
    ...             "detected": [True]})
    >>> m.meta["band"] = "R"
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "obs.txt")
    >>> write_mpc80(m, path, stn="688", obj=5945)
    >>> from pathlib import Path
    >>> print(Path(path).read_text(), end="")
    05945         C2019 03 26.15246608 18 30.707+25 20 25.08         16.8 R      688
    """
    from .exceptions import OutputExistsError

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists; pass overwrite=True to replace it.")
    stn = str(stn).strip()
    if not re.match(r"^[A-Z0-9]{3}$", stn):
        raise MeasurementError(f"stn={stn!r}: the 80-column format takes a 3-character code")
    text = str(obj).strip()
    if re.match(r"^\d+$", text):
        ident = _packed_number(text) + " " * 7
    elif _PROV_ID.match(text):
        ident = " " * 5 + _packed_provisional(text)
    elif re.match(r"^[A-Za-z0-9]{1,7}$", text):
        ident = " " * 5 + text.ljust(7)
    else:
        raise MeasurementError(f"obj={obj!r}: a number, a provisional designation or a temporary "
                               "name of up to 7 letters or digits")
    detected = np.asarray(table["detected"], dtype=bool)
    if not detected.any():
        raise MeasurementError("no detected target in the table: nothing to report")
    band = table.meta.get("band") or ""
    lines = []
    for row in table[detected]:
        time = Time(row["time"]).utc
        day = time.datetime.day + (time.mjd % 1.0)
        date = f"{time.datetime.year:04d} {time.datetime.month:02d} {day:09.6f}"
        ra = Angle(row["ra"]).to_string(unit=u.hourangle, sep=" ", precision=3, pad=True)
        dec = Angle(row["dec"]).to_string(unit=u.deg, sep=" ", precision=2, pad=True,
                                          alwayssign=True)
        mag = u.Quantity(row["mag"], u.mag).value if "mag" in table.colnames else np.nan
        photometry = " " * 6
        if np.isfinite(mag):
            if not band or len(band) != 1:
                raise MeasurementError(f"band {band!r}: the 80-column format takes a "
                                       "one-letter band")
            if not -5 < mag < 35:
                raise MeasurementError(f"mag {mag}: out of range")
            photometry = f"{mag:.1f}".ljust(5) + band  # 66-70 magnitude, 71 band
        line = f"{ident}  C{date}{ra}{dec}" + " " * 9 + photometry + " " * 6 + stn
        if len(line) != 80:
            raise RuntimeError(f"internal: an 80-column line came out {len(line)} long: {line!r}")
        lines.append(line)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="ascii")
    log.info("wrote %d 80-column observation(s) to %s", len(lines), path)
