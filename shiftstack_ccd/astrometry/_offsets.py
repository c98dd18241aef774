# Licensed under a 3-clause BSD style license - see LICENSE
"""Known WCS offsets (private): a pixel or sky offset, or a per-file table of them."""

import logging
import os
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import QTable, Table

from ..exceptions import FrameError
from ._match import LinearCorrection, fit_correction, gnomonic, initial_params

log = logging.getLogger(__name__)


FITS_SUFFIXES = (".fits.gz", ".fits.fz", ".fit.gz", ".fits", ".fit", ".fts", ".fz")


def file_key(name):
    base = Path(str(name).strip()).name
    lower = base.lower()
    for suffix in FITS_SUFFIXES:
        if lower.endswith(suffix):
            return base, base[:-len(suffix)]
    return base, base


def read_offsets(source):
    """Read a table of per-file WCS offsets, and check it.

    Parameters
    ----------
    source : str, `~pathlib.Path` or `~astropy.table.Table`
        An ECSV or CSV file (or a table already in memory) with a ``file`` column and either
        pixel offsets ``dx``, ``dy`` or sky offsets ``dra``, ``ddec``:

        ``file``
            File name of the frame. It is matched against the base name of the frame's
            ``meta['SSFILE']``, with or without its FITS extension (``20190326.0135.fits``
            or ``20190326.0135``); folders are ignored.
        ``dx``, ``dy``
            Pixel offsets: the star that the frame's WCS puts at pixel ``p`` is really at
            ``p + (dx, dy)`` (pixels; a unit, if any, must be ``pix``).
        ``dra``, ``ddec``
            Sky offsets ``(dRA * cos(Dec), dDec)`` to add to the positions the frame's WCS
            gives (arcsec unless the column has an angle unit, as ECSV can say).

    Returns
    -------
    offsets : `~astropy.table.QTable`
        ``file`` plus either ``dx``, ``dy`` (in ``pix``) or ``dra``, ``ddec`` (in arcsec).

    Raises
    ------
    FrameError
        If the file cannot be read, a column is missing or not numeric, both kinds of
        offsets are given, a value is not finite, or a file name appears twice.

    Examples
    --------
    >>> from astropy.table import Table
    >>> from shiftstack_ccd.astrometry import read_offsets
    >>> table = Table.read(["file,dx,dy", "a.fits,1.5,-2", "b.fits,0,0.25"],
    ...                    format="ascii.csv")
    >>> offsets = read_offsets(table)
    >>> offsets["dx"]
    <Quantity [1.5, 0. ] pix>
    """
    if isinstance(source, Table):
        table, label = Table(source, copy=True), "offset table"
    else:
        path = Path(source)
        label = str(path)
        if not path.is_file():
            raise FrameError(f"{label}: no such offset table.")
        lower = path.name.lower()
        fmt = ("ascii.ecsv" if lower.endswith(".ecsv") else
               "ascii.csv" if lower.endswith(".csv") else None)
        try:
            table = Table.read(path, format=fmt) if fmt else Table.read(path)
        except Exception as exc:  # astropy raises many types for unreadable tables
            raise FrameError(f"{label}: cannot be read as an offset table ({exc}). Write an "
                             "ECSV or CSV file with columns file, dx, dy (pixels) or file, "
                             "dra, ddec (arcsec).") from None
    names = {name.lower(): name for name in table.colnames}
    if "file" not in names:
        raise FrameError(f"{label}: has no 'file' column (it has {table.colnames}); each row "
                         "needs the file name of the frame it corrects.")
    has_pixel = "dx" in names and "dy" in names
    has_sky = "dra" in names and "ddec" in names
    if has_pixel == has_sky:
        what = "both" if has_pixel else "neither"
        raise FrameError(f"{label}: has {what} of the pixel columns (dx, dy) and the sky "
                         f"columns (dra, ddec); give exactly one pair. Columns: "
                         f"{table.colnames}.")
    cols = ("dx", "dy") if has_pixel else ("dra", "ddec")
    out = QTable()
    out["file"] = [str(v).strip() for v in table[names["file"]]]
    for col in cols:
        column = table[names[col]]
        unit = column.unit
        try:
            values = np.asarray(getattr(column, "filled", lambda v: column)(np.nan),
                                dtype=float)
        except (TypeError, ValueError):
            raise FrameError(f"{label}: column {col!r} is not numeric.") from None
        if not np.all(np.isfinite(values)):
            bad = [str(out["file"][i]) for i in np.flatnonzero(~np.isfinite(values))]
            raise FrameError(f"{label}: column {col!r} has missing or non-finite values "
                             f"(rows for {bad}).")
        if has_pixel:
            if unit is not None and u.Unit(unit) not in (u.pix, u.dimensionless_unscaled):
                raise FrameError(f"{label}: column {col!r} has unit {unit}; pixel offsets "
                                 "must be in pixels (use dra, ddec for sky offsets).")
            out[col] = values * u.pix
        else:
            try:
                out[col] = (values * (u.Unit(unit) if unit is not None else u.arcsec)
                            ).to(u.arcsec)
            except u.UnitConversionError:
                raise FrameError(f"{label}: column {col!r} has unit {unit}, not an angle."
                                 ) from None
    keys = [file_key(name)[1] for name in out["file"]]
    seen = set()
    for name, key in zip(out["file"], keys):
        if key in seen:
            raise FrameError(f"{label}: file {name!r} appears more than once.")
        seen.add(key)
    out.meta["source"] = label
    return out


def lookup_offset(table, ccd, label):
    source = table.meta.get("source", "offset table")
    name = (ccd.meta or {}).get("SSFILE")
    if not name:
        raise FrameError(f"{label}: has no file name (meta['SSFILE']) to look up in "
                         f"{source}; pass the offset itself instead of a table.")
    _, key = file_key(name)
    matches = [i for i, f in enumerate(table["file"]) if file_key(f)[1] == key]
    if not matches:
        raise FrameError(f"{label}: {Path(str(name)).name!r} is not in {source} (it lists "
                         f"{len(table)} files); add a row for it.")
    row = table[matches[0]]
    if "dx" in table.colnames:
        return "pixel", (float(row["dx"].to_value(u.pix)), float(row["dy"].to_value(u.pix)))
    return "sky", (float(row["dra"].to_value(u.arcsec)), float(row["ddec"].to_value(u.arcsec)))


def resolve_offset(offset, ccd, label):
    """Return ('pixel', (dx, dy)) or ('sky', (dra_arcsec, ddec_arcsec)), and a description."""
    if isinstance(offset, (str, os.PathLike, Table)):
        table = read_offsets(offset)
        kind, value = lookup_offset(table, ccd, label)
        return kind, value, f"{kind} offset from {table.meta.get('source')}"
    if isinstance(offset, (tuple, list)) and len(offset) == 2 and \
            all(isinstance(v, SkyCoord) for v in offset):
        old, new = offset
        dra, ddec = old.spherical_offsets_to(new.transform_to(old.frame))
        value = (float(dra.to_value(u.arcsec)), float(ddec.to_value(u.arcsec)))
        return "sky", value, "sky offset between two positions"
    if isinstance(offset, (tuple, list)) and len(offset) == 2 and \
            all(isinstance(v, u.Quantity) for v in offset):
        offset = u.Quantity(offset)
    if isinstance(offset, u.Quantity):
        if offset.shape != (2,):
            raise ValueError(f"offset must hold two values, got shape {offset.shape}.")
        if offset.unit.physical_type == "angle":
            value = tuple(float(v) for v in offset.to_value(u.arcsec))
            return "sky", value, "sky offset"
        if offset.unit in (u.pix, u.dimensionless_unscaled):
            return "pixel", tuple(float(v) for v in offset.value), "pixel offset"
        raise ValueError(f"offset has unit {offset.unit}: use pixels or an angle.")
    try:
        value = np.asarray(offset, dtype=float)
    except (TypeError, ValueError):
        value = None
    if value is None or value.shape != (2,) or not np.all(np.isfinite(value)):
        raise ValueError(
            f"offset={offset!r} is not understood: give (dx, dy) in pixels, two angles "
            "(dRA*cos(Dec), dDec), two SkyCoord (position given by the WCS, true position), "
            "or an offset table (path or Table, see read_offsets).")
    return "pixel", (float(value[0]), float(value[1])), "pixel offset"


def sample_grid(shape, n=9):
    ny, nx = shape
    yy, xx = np.meshgrid(np.linspace(0, ny - 1, n), np.linspace(0, nx - 1, n), indexing="ij")
    return np.column_stack([xx.ravel(), yy.ravel()])


def apply_offset(wcs, kind, value, shape, label):
    """A new WCS with a known offset applied through CRVAL (distortions untouched)."""
    corr = LinearCorrection(wcs, "shift", ((shape[1] - 1) / 2, (shape[0] - 1) / 2))
    center = tuple(wcs.wcs.crval)
    grid = sample_grid(shape)
    lon, lat = wcs.all_pix2world(grid[:, 0], grid[:, 1], 0)
    xi, eta, _ = gnomonic(lon, lat, *center)
    if kind == "pixel":
        # The star the old WCS puts at p is at p + d: new(p + d) = old(p).
        pixels = grid + np.asarray(value)
        c = np.array([[(shape[1] - 1) / 2, (shape[0] - 1) / 2]])
        a = gnomonic(*wcs.all_pix2world(c - np.asarray(value), 0).T, *center)
        b = gnomonic(*wcs.all_pix2world(c, 0).T, *center)
        p0 = initial_params("shift", float(a[0][0] - b[0][0]), float(a[1][0] - b[1][0]))
    else:
        # new(p) = old(p) + (dra, ddec)
        pixels = grid
        xi, eta = xi + value[0], eta + value[1]
        p0 = initial_params("shift", value[0], value[1])
    result, _ = fit_correction(corr, pixels, xi, eta, center, p0, label)
    return corr.make(result.x)
