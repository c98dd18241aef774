# Licensed under a 3-clause BSD style license - see LICENSE
"""Correcting a frame's WCS: known offsets, or offsets measured on the stars.

`correct_wcs` returns a new frame whose celestial WCS has been corrected, either by a
known offset (a pixel or sky offset, or a per-file table of them, see `read_offsets`) or
by matching the stars detected in the frame to a reference (a frame with a trusted WCS, a
catalogue of RA/Dec, or a `~astropy.coordinates.SkyCoord`) and fitting a shift, optionally
a rotation, a scale or a general linear term.

Only the linear part of the WCS is changed: ``CRVAL`` (shift) and the ``CD`` (or
``PC``/``CDELT``) matrix (rotation, scale). ``CRPIX`` and every distortion (SIP, TPV ``PV``
coefficients, lookup tables) are kept as they are, so a distortion solved on the detector
stays attached to the detector. The fit is made on the full WCS (distortions included),
star by star, so what is reported is the actual residual of the corrected WCS.
"""

import copy
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import CCDData
from astropy.stats import sigma_clipped_stats
from astropy.table import QTable, Table
from astropy.utils.exceptions import AstropyUserWarning

from ._utils import frame_label, require_celestial_wcs
from .exceptions import FrameError

__all__ = ["correct_wcs", "detect_stars", "read_offsets"]

log = logging.getLogger(__name__)

#: Models `correct_wcs` can fit, and their number of free parameters.
FIT_MODELS = {"shift": 2, "shift+rotation": 3, "shift+rotation+scale": 4, "affine": 6}

_SECTION = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")
_FITS_SUFFIXES = (".fits.gz", ".fits.fz", ".fit.gz", ".fits", ".fit", ".fts", ".fz")
# Column names (lower case) recognised as RA/Dec in a reference catalogue, in order.
_RADEC_NAMES = (("ra", "dec"), ("ra_icrs", "de_icrs"), ("ra_icrs", "dec_icrs"),
                ("raj2000", "dej2000"), ("raj2000", "decj2000"), ("ra_deg", "dec_deg"),
                ("alpha_j2000", "delta_j2000"), ("ra_obs", "dec_obs"), ("_raj2000", "_dej2000"))
_MAG_NAMES = ("phot_g_mean_mag", "gmag", "mag", "rmag", "vmag", "flux")
# Linear WCS cards that the output's WCS supersedes if a caller left them in meta.
_LINEAR_CARD = re.compile(r"^(CRVAL\d|CD\d_\d|PC\d_\d|CDELT\d|CROTA\d)$")
_MAX_OUTER_ITERATIONS = 10
_MAX_CLIP_ITERATIONS = 10


# --------------------------------------------------------------------------------------
# Small geometric helpers
# --------------------------------------------------------------------------------------
def _gnomonic(lon, lat, lon0, lat0):
    """Standard coordinates (xi east, eta north), in arcsec, about (lon0, lat0) (degrees).

    Returns ``(xi, eta, front)`` where ``front`` is False for points more than 90 degrees
    away (which have no gnomonic projection).
    """
    lon, lat = np.radians(lon), np.radians(lat)
    lon0, lat0 = np.radians(lon0), np.radians(lat0)
    dlon = lon - lon0
    cosc = np.sin(lat0) * np.sin(lat) + np.cos(lat0) * np.cos(lat) * np.cos(dlon)
    front = cosc > 1e-3
    cosc = np.where(front, cosc, 1.0)
    xi = np.cos(lat) * np.sin(dlon) / cosc
    eta = (np.cos(lat0) * np.sin(lat) - np.sin(lat0) * np.cos(lat) * np.cos(dlon)) / cosc
    return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0, front


def _linear_matrix(wcs):
    """The matrix M of the linear part, intermediate = M @ (p - CRPIX), in degrees/pixel."""
    w = wcs.wcs
    if w.has_cd():
        return np.array(w.cd, dtype=float)
    return np.diag(np.asarray(w.cdelt, dtype=float)) @ np.array(w.get_pc(), dtype=float)


def _set_linear_matrix(wcs, matrix):
    w = wcs.wcs
    if w.has_cd():
        w.cd = matrix
    else:
        w.pc = np.diag(1.0 / np.asarray(w.cdelt, dtype=float)) @ matrix


def _pixel_scale(wcs):
    """Mean pixel scale in arcsec/pixel."""
    return float(np.sqrt(abs(np.linalg.det(_linear_matrix(wcs))))) * 3600.0


def _model_matrix(params, model):
    """The 2x2 matrix the linear WCS matrix is left-multiplied by."""
    if model == "shift":
        return np.eye(2)
    if model == "affine":
        m = params[2:6]
        return np.array([[1.0 + m[0], m[1]], [m[2], 1.0 + m[3]]])
    theta = np.radians(params[2])
    scale = np.exp(params[3]) if model == "shift+rotation+scale" else 1.0
    c, s = np.cos(theta), np.sin(theta)
    return scale * np.array([[c, -s], [s, c]])


class _LinearCorrection:
    """A WCS whose CRVAL and linear matrix are functions of a few parameters.

    The matrix `_model_matrix` left-multiplies the linear (CD) matrix, which rotates and
    scales the intermediate world coordinates (east, north) about CRVAL/CRPIX; CRVAL is
    then moved so that this happens about the ``pivot`` pixel (the frame centre) instead,
    and ``params[0:2]`` move the pivot's sky position by (east, north) arcsec. Rotating
    about the frame centre keeps shift and rotation independent even when CRPIX lies far
    outside the frame (a cutout). Distortions (SIP, TPV, tables) are left untouched.
    """

    def __init__(self, wcs, model, pivot):
        self.base = wcs
        self.model = model
        self.work = copy.deepcopy(wcs)
        self.crval0 = np.array(wcs.wcs.crval, dtype=float)
        self.matrix0 = _linear_matrix(wcs)
        lon, lat = wcs.all_pix2world([pivot], 0)[0]
        xi, eta, _ = _gnomonic(lon, lat, *self.crval0)
        self.pivot = np.array([xi, eta], dtype=float)  # arcsec east, north of CRVAL

    def wcs_for(self, params, target=None):
        w = self.work if target is None else target
        matrix = _model_matrix(params, self.model)
        east, north = (np.asarray(params[0:2]) + self.pivot - matrix @ self.pivot) / 3600.0
        lon0, lat0 = self.crval0
        w.wcs.crval = [(lon0 + east / np.cos(np.radians(lat0))) % 360.0, lat0 + north]
        _set_linear_matrix(w, matrix @ self.matrix0)
        w.wcs.set()
        return w

    def make(self, params):
        """A new, independent WCS for these parameters."""
        return self.wcs_for(params, copy.deepcopy(self.base))


def _initial_params(model, east=0.0, north=0.0):
    p = np.zeros(FIT_MODELS[model])
    p[0], p[1] = east, north
    return p


def _fit(corr, xy, ref_xi, ref_eta, center, p0, label):
    """Least-squares fit of the correction parameters; residuals in arcsec on the sky."""
    from scipy.optimize import least_squares

    def residuals(params):
        w = corr.wcs_for(params)
        lon, lat = w.all_pix2world(xy[:, 0], xy[:, 1], 0)
        xi, eta, _ = _gnomonic(lon, lat, *center)
        return np.concatenate([xi - ref_xi, eta - ref_eta])

    with np.errstate(invalid="ignore"):
        result = least_squares(residuals, p0, method="lm", x_scale="jac")
    if not result.success or not np.all(np.isfinite(result.x)):
        raise FrameError(f"{label}: the WCS fit did not converge ({result.message}); the WCS "
                         "was not changed. Check the reference, or fit a simpler model.")
    n = len(xy)
    dxi, deta = result.fun[:n], result.fun[n:]
    return result, np.hypot(dxi, deta)


# --------------------------------------------------------------------------------------
# Star detection
# --------------------------------------------------------------------------------------
def _section_mask(meta, shape):
    """True outside DATASEC/TRIMSEC (1-based inclusive FITS section), if the header has one."""
    for key in ("DATASEC", "TRIMSEC"):
        value = meta.get(key) if meta else None
        if not value:
            continue
        match = _SECTION.match(str(value))
        if not match:
            continue
        x1, x2, y1, y2 = (int(g) for g in match.groups())
        if not (1 <= x1 <= x2 <= shape[1] and 1 <= y1 <= y2 <= shape[0]):
            continue
        outside = np.ones(shape, dtype=bool)
        outside[y1 - 1:y2, x1 - 1:x2] = False
        return outside
    return None


def _saturation_level(data, good, meta, saturation):
    if saturation is not None:
        return float(u.Quantity(saturation).value)
    for key in ("SATURATE", "SATLEVEL"):
        if meta and key in meta:
            try:
                return float(meta[key])
            except (TypeError, ValueError):
                pass
    # No stated level: a plateau of pixels all at the maximum value is saturation.
    values = data[good]
    vmax = values.max()
    if np.count_nonzero(values >= vmax) >= 3:
        return float(vmax)
    return None


def _background(data, mask, box_size):
    """Background image and its median rms: `Background2D` if the frame is large enough."""
    from photutils.background import Background2D, MedianBackground

    ny, nx = data.shape
    box = int(min(box_size, ny // 4, nx // 4))
    if box >= 16:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyUserWarning)
                bkg = Background2D(data, box, mask=mask, filter_size=3,
                                   bkg_estimator=MedianBackground())
            return bkg.background, float(bkg.background_rms_median)
        except ValueError:  # too many masked boxes: fall back to a single level
            pass
    _, median, std = sigma_clipped_stats(data, mask=mask, sigma=3.0)
    return np.full(data.shape, median), float(std)


def _estimate_fwhm(sub, mask, rms, saturated, default=3.0):
    """Median FWHM (pixels) of the brightest unsaturated, isolated peaks."""
    from photutils.detection import find_peaks
    from photutils.psf import fit_fwhm
    from photutils.utils.exceptions import NoDetectionsWarning

    threshold = 20.0 * rms
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        peaks = find_peaks(sub, threshold, box_size=11, mask=mask | saturated, n_peaks=200,
                           border_width=8)
    if peaks is None or len(peaks) < 3:
        return default
    peaks.sort("peak_value", reverse=True)
    peaks = peaks[:40]
    xy = np.column_stack([peaks["x_peak"], peaks["y_peak"]]).astype(float)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fwhm = fit_fwhm(sub, xypos=xy, fit_shape=7, mask=mask)
    except Exception as exc:  # a failed fit only means we keep the default
        log.debug("FWHM estimate failed (%s); using %.1f px", exc, default)
        return default
    fwhm = np.asarray(fwhm, dtype=float)
    fwhm = fwhm[np.isfinite(fwhm) & (fwhm > 0.8) & (fwhm < 30)]
    if len(fwhm) < 3:
        return default
    return float(np.median(fwhm))


def detect_stars(ccd, threshold=5.0, fwhm=None, max_stars=300, saturation=None,
                 box_size=64):
    """Detect point sources in a frame and return their centroids (and sky positions).

    The background is estimated with `photutils.background.Background2D` (a single
    sigma-clipped level on frames too small for it), stars are found with
    `photutils.detection.DAOStarFinder` on the background-subtracted data, and sources
    near saturated pixels are dropped (their centroids are biased). The mask, non-finite
    pixels, and pixels outside ``DATASEC``/``TRIMSEC`` (overscan) are ignored.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame (raw or calibrated; only a rough background is needed).
    threshold : float
        Detection threshold in units of the background rms.
    fwhm : float, optional
        Stellar FWHM in pixels; estimated from the brightest stars when not given.
    max_stars : int
        Keep at most this many of the brightest sources.
    saturation : float, optional
        Saturation level in data units. By default the ``SATURATE``/``SATLEVEL`` card, else
        the maximum value when at least three pixels share it (a saturation plateau).
    box_size : int
        Box size of the background mesh, in pixels.

    Returns
    -------
    stars : `~astropy.table.QTable`
        Columns ``x``, ``y`` (0-based pixel centroids), ``flux``, ``peak``, ``sharpness``,
        ``roundness1``, and ``sky`` (`~astropy.coordinates.SkyCoord`) when the frame has a
        celestial WCS; brightest first. ``meta['fwhm']`` holds the FWHM used. The table is
        empty when nothing is found.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from shiftstack_ccd.astrometry import detect_stars
    >>> yy, xx = np.mgrid[:100, :100]
    >>> data = 100 + 500 * np.exp(-((xx - 30.3)**2 + (yy - 60.7)**2) / (2 * 1.5**2))
    >>> data += np.random.default_rng(0).normal(0, 2, data.shape)
    >>> stars = detect_stars(CCDData(data, unit="adu"), fwhm=3.5)
    >>> print(f"{stars['x'][0]:.1f} {stars['y'][0]:.1f}")
    30.3 60.7
    """
    from photutils.detection import DAOStarFinder
    from photutils.utils.exceptions import NoDetectionsWarning

    # float32 is ample for detection and halves the memory of the working copies.
    data = np.asarray(ccd.data, dtype=np.float32)
    bad = ~np.isfinite(data)
    if ccd.mask is not None:
        bad |= np.asarray(ccd.mask, dtype=bool)
    outside = _section_mask(ccd.meta, data.shape)
    if outside is not None:
        bad |= outside
    if bad.all():
        raise FrameError(f"{frame_label(ccd)}: every pixel is masked or not finite; "
                         "no stars can be detected.")
    level = _saturation_level(data, ~bad, ccd.meta, saturation)
    saturated = np.zeros(data.shape, dtype=bool) if level is None else (data >= level) & ~bad
    sub = np.array(data, dtype=np.float32)  # becomes the background-subtracted image
    sub[bad] = np.median(data[~bad])
    del data
    background, rms = _background(sub, bad, box_size)
    sub -= background
    del background
    if not (np.isfinite(rms) and rms > 0):
        raise FrameError(f"{frame_label(ccd)}: the background noise is zero or undefined; "
                         "no stars can be detected.")
    if fwhm is None:
        fwhm = _estimate_fwhm(sub, bad, rms, saturated)
    fwhm = float(fwhm)

    finder = DAOStarFinder(threshold=float(threshold) * rms,
                           fwhm=fwhm, exclude_border=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        found = finder.find_stars(sub, mask=bad)
    stars = QTable()
    stars.meta["fwhm"] = fwhm
    if found is None or len(found) == 0:
        for name in ("x", "y", "flux", "peak", "sharpness", "roundness1"):
            stars[name] = np.zeros(0)
        return stars
    x = np.asarray(found["x_centroid"], dtype=float)
    y = np.asarray(found["y_centroid"], dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if saturated.any() and keep.any():
        from scipy.spatial import cKDTree
        sat_y, sat_x = np.nonzero(saturated)
        dist, _ = cKDTree(np.column_stack([sat_x, sat_y])).query(
            np.column_stack([np.where(keep, x, 0), np.where(keep, y, 0)]),
            distance_upper_bound=2 * fwhm + 1.5)
        keep &= ~np.isfinite(dist)
    found = found[keep]
    found.sort("flux", reverse=True)
    found = found[:max_stars]
    stars["x"] = np.asarray(found["x_centroid"], dtype=float)
    stars["y"] = np.asarray(found["y_centroid"], dtype=float)
    for name in ("flux", "peak", "sharpness", "roundness1"):
        stars[name] = np.asarray(found[name], dtype=float)
    wcs = getattr(ccd, "wcs", None)
    if wcs is not None and wcs.has_celestial:
        stars["sky"] = wcs.celestial.pixel_to_world(stars["x"], stars["y"])
    log.debug("%s: %d stars detected (FWHM %.2f px)", frame_label(ccd), len(stars), fwhm)
    return stars


# --------------------------------------------------------------------------------------
# Offsets
# --------------------------------------------------------------------------------------
def _file_key(name):
    base = Path(str(name).strip()).name
    lower = base.lower()
    for suffix in _FITS_SUFFIXES:
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
    keys = [_file_key(name)[1] for name in out["file"]]
    seen = set()
    for name, key in zip(out["file"], keys):
        if key in seen:
            raise FrameError(f"{label}: file {name!r} appears more than once.")
        seen.add(key)
    out.meta["source"] = label
    return out


def _lookup_offset(table, ccd, label):
    source = table.meta.get("source", "offset table")
    name = (ccd.meta or {}).get("SSFILE")
    if not name:
        raise FrameError(f"{label}: has no file name (meta['SSFILE']) to look up in "
                         f"{source}; pass the offset itself instead of a table.")
    _, key = _file_key(name)
    matches = [i for i, f in enumerate(table["file"]) if _file_key(f)[1] == key]
    if not matches:
        raise FrameError(f"{label}: {Path(str(name)).name!r} is not in {source} (it lists "
                         f"{len(table)} files); add a row for it.")
    row = table[matches[0]]
    if "dx" in table.colnames:
        return "pixel", (float(row["dx"].to_value(u.pix)), float(row["dy"].to_value(u.pix)))
    return "sky", (float(row["dra"].to_value(u.arcsec)), float(row["ddec"].to_value(u.arcsec)))


def _resolve_offset(offset, ccd, label):
    """Return ('pixel', (dx, dy)) or ('sky', (dra_arcsec, ddec_arcsec)), and a description."""
    if isinstance(offset, (str, os.PathLike, Table)):
        table = read_offsets(offset)
        kind, value = _lookup_offset(table, ccd, label)
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


def _grid(shape, n=9):
    ny, nx = shape
    yy, xx = np.meshgrid(np.linspace(0, ny - 1, n), np.linspace(0, nx - 1, n), indexing="ij")
    return np.column_stack([xx.ravel(), yy.ravel()])


def _apply_offset(wcs, kind, value, shape, label):
    """A new WCS with a known offset applied through CRVAL (distortions untouched)."""
    corr = _LinearCorrection(wcs, "shift", ((shape[1] - 1) / 2, (shape[0] - 1) / 2))
    center = tuple(wcs.wcs.crval)
    grid = _grid(shape)
    lon, lat = wcs.all_pix2world(grid[:, 0], grid[:, 1], 0)
    xi, eta, _ = _gnomonic(lon, lat, *center)
    if kind == "pixel":
        # The star the old WCS puts at p is at p + d: new(p + d) = old(p).
        pixels = grid + np.asarray(value)
        c = np.array([[(shape[1] - 1) / 2, (shape[0] - 1) / 2]])
        a = _gnomonic(*wcs.all_pix2world(c - np.asarray(value), 0).T, *center)
        b = _gnomonic(*wcs.all_pix2world(c, 0).T, *center)
        p0 = _initial_params("shift", float(a[0][0] - b[0][0]), float(a[1][0] - b[1][0]))
    else:
        # new(p) = old(p) + (dra, ddec)
        pixels = grid
        xi, eta = xi + value[0], eta + value[1]
        p0 = _initial_params("shift", value[0], value[1])
    result, _ = _fit(corr, pixels, xi, eta, center, p0, label)
    return corr.make(result.x)


# --------------------------------------------------------------------------------------
# Reference positions
# --------------------------------------------------------------------------------------
def _celestial_frame(wcs):
    from astropy.wcs.utils import wcs_to_celestial_frame
    try:
        return wcs_to_celestial_frame(wcs)
    except ValueError:
        return "icrs"


def _catalog_coords(table, label):
    for name in table.colnames:
        if isinstance(table[name], SkyCoord):
            return table[name], table
    lower = {name.lower(): name for name in table.colnames}
    for ra_name, dec_name in _RADEC_NAMES:
        if ra_name in lower and dec_name in lower:
            ra, dec = table[lower[ra_name]], table[lower[dec_name]]
            ra = u.Quantity(ra, u.deg) if getattr(ra, "unit", None) is None else u.Quantity(ra)
            dec = (u.Quantity(dec, u.deg) if getattr(dec, "unit", None) is None
                   else u.Quantity(dec))
            good = np.isfinite(ra) & np.isfinite(dec)
            return SkyCoord(ra[good], dec[good], frame="icrs"), table[good]
    raise FrameError(f"{label}: reference catalogue has no RA/Dec columns (it has "
                     f"{table.colnames}); name them 'ra' and 'dec' (degrees, ICRS).")


def _reference_coords(reference, frame_wcs, detect_kwargs):
    """Reference star positions as (lon, lat) degrees in the frame's celestial frame."""
    order = None
    if isinstance(reference, CCDData):
        label = f"reference frame {frame_label(reference)}"
        ref_wcs = require_celestial_wcs(reference, "correct_wcs (as the reference)")
        stars = detect_stars(reference, **detect_kwargs)
        if len(stars) == 0:
            raise FrameError(f"{label}: no stars were detected in the reference frame.")
        coords = ref_wcs.pixel_to_world(stars["x"], stars["y"])
    elif isinstance(reference, SkyCoord):
        label, coords = "reference positions", reference
    elif isinstance(reference, (Table, str, os.PathLike)):
        if isinstance(reference, Table):
            label, table = "reference catalogue", reference
        else:
            label = f"reference catalogue {reference}"
            try:
                table = Table.read(reference)
            except Exception as exc:  # astropy raises many types for unreadable tables
                raise FrameError(f"{label}: cannot be read as a table ({exc}).") from None
        coords, table = _catalog_coords(table, label)
        lower = {name.lower(): name for name in table.colnames}
        for mag in _MAG_NAMES:
            if mag in lower:
                values = np.asarray(u.Quantity(table[lower[mag]]).value, dtype=float)
                values = np.where(np.isfinite(values), values, np.inf if mag != "flux"
                                  else -np.inf)
                order = np.argsort(-values if mag == "flux" else values, kind="stable")
                break
    else:
        raise TypeError(f"reference must be a CCDData, a SkyCoord, a Table or a path to a "
                        f"catalogue, not {type(reference).__name__}.")
    coords = coords.transform_to(_celestial_frame(frame_wcs))
    sph = coords.spherical
    lon, lat = sph.lon.to_value(u.deg), sph.lat.to_value(u.deg)
    if order is not None:
        lon, lat = lon[order], lat[order]
    return np.atleast_1d(lon), np.atleast_1d(lat), label


# --------------------------------------------------------------------------------------
# Matching and fitting
# --------------------------------------------------------------------------------------
def _vote_offset(det, ref, max_offset, bin_size, min_stars, label, ref_label):
    """Coarse offset (arcsec) such that ref ~ det + offset, by voting on pair differences.

    Every pair closer than ``max_offset`` votes in a 2-D histogram of bin ``bin_size``;
    the peak, if significantly above the level random pairs give, is refined by the mean
    of the differences near it.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(ref)
    neighbours = tree.query_ball_point(det, r=max_offset)
    diffs = [ref[j] - det[i] for i, js in enumerate(neighbours) for j in js]
    if len(diffs) < min_stars:
        raise FrameError(f"{label}: fewer than {min_stars} detected stars have a star of "
                         f"{ref_label} within {max_offset:.1f} arcsec; they do not overlap, "
                         "or the WCS is further off than max_offset (increase it).")
    diffs = np.asarray(diffs)
    nbin = int(np.ceil(max_offset / bin_size))
    edges = np.arange(-nbin - 1, nbin + 2) * bin_size
    hist, _, _ = np.histogram2d(diffs[:, 0], diffs[:, 1], bins=[edges, edges])
    summed = hist[:-1, :-1] + hist[1:, :-1] + hist[:-1, 1:] + hist[1:, 1:]
    i, j = np.unravel_index(np.argmax(summed), summed.shape)
    guess = np.array([edges[i + 1], edges[j + 1]])
    for radius in (1.5 * bin_size, bin_size, bin_size):
        near = np.hypot(*(diffs - guess).T) < radius
        if not near.any():
            break
        guess = diffs[near].mean(axis=0) if radius < 1.5 * bin_size else \
            np.median(diffs[near], axis=0)
    n_peak = int(np.count_nonzero(np.hypot(*(diffs - guess).T) < bin_size))
    expected = len(diffs) * (bin_size / max_offset) ** 2
    if n_peak < min_stars or n_peak < expected + 5 * np.sqrt(expected + 1):
        raise FrameError(f"{label}: no consistent offset to {ref_label} within "
                         f"{max_offset:.1f} arcsec (best candidate has {n_peak} star pairs, "
                         f"random pairs give ~{expected:.1f}; at least {min_stars} needed). "
                         "The frame and the reference may not overlap, or max_offset is too "
                         "small.")
    log.debug("%s: coarse offset (%.2f, %.2f) arcsec from %d pairs", label, *guess, n_peak)
    return guess


def _match(det, ref, radius):
    """One-to-one nearest-neighbour pairs (det index, ref index) closer than radius."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(ref).query(det, distance_upper_bound=radius)
    ok = np.isfinite(dist)
    det_idx, ref_idx, dist = np.flatnonzero(ok), idx[ok], dist[ok]
    order = np.argsort(dist, kind="stable")
    _, first = np.unique(ref_idx[order], return_index=True)
    keep = np.sort(order[first])
    return det_idx[keep], ref_idx[keep]


def _measure(wcs, xy, shape, ref_lon, ref_lat, ref_label, model, min_stars, match_radius,
             max_offset, sigma_clip, label):
    """Fit the correction of ``wcs`` that brings detected stars onto the reference."""
    ny, nx = shape
    center = tuple(wcs.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0])
    scale = _pixel_scale(wcs)
    # Keep the reference stars that can land on the frame, allowing for max_offset.
    edge = np.array([[0, 0], [nx - 1, 0], [nx - 1, ny - 1], [0, ny - 1]], dtype=float)
    border = np.concatenate([edge + t * (np.roll(edge, -1, axis=0) - edge)
                             for t in np.linspace(0, 1, 8, endpoint=False)])
    bxi, beta, _ = _gnomonic(*wcs.all_pix2world(border, 0).T, *center)
    rxi, reta, front = _gnomonic(ref_lon, ref_lat, *center)
    inside = front & (rxi > bxi.min() - max_offset) & (rxi < bxi.max() + max_offset) & \
        (reta > beta.min() - max_offset) & (reta < beta.max() + max_offset)
    n_inside = int(np.count_nonzero(inside))
    if n_inside < min_stars:
        sep = SkyCoord(*center, unit="deg").separation(
            SkyCoord(np.median(ref_lon), np.median(ref_lat), unit="deg"))
        raise FrameError(f"{label}: only {n_inside} stars of {ref_label} fall on the frame "
                         f"(need {min_stars}); the reference does not overlap it (its stars "
                         f"centre {sep.to_value(u.deg):.3g} deg from the frame centre).")
    ref = np.column_stack([rxi[inside], reta[inside]])[:20 * len(xy) + 500]

    corr = _LinearCorrection(wcs, model, ((nx - 1) / 2, (ny - 1) / 2))
    det0 = np.column_stack(_gnomonic(*wcs.all_pix2world(xy, 0).T, *center)[:2])
    shift = _vote_offset(det0, ref, max_offset, match_radius, min_stars, label, ref_label)
    params = _initial_params(model, *shift)

    radius = 2.0 * match_radius
    seen = set()
    for _ in range(_MAX_OUTER_ITERATIONS):
        det = np.column_stack(_gnomonic(*corr.wcs_for(params).all_pix2world(xy, 0).T,
                                        *center)[:2])
        di, ri = _match(det, ref, radius)
        if len(di) < min_stars:
            raise FrameError(f"{label}: only {len(di)} stars matched {ref_label} within "
                             f"{radius / scale:.1f} pixels (need {min_stars}).")
        use = np.ones(len(di), dtype=bool)
        for _ in range(_MAX_CLIP_ITERATIONS):
            if np.count_nonzero(use) < max(min_stars, FIT_MODELS[model]):
                raise FrameError(f"{label}: only {np.count_nonzero(use)} matched stars are "
                                 f"left after outlier rejection (need {min_stars}).")
            result, _ = _fit(corr, xy[di[use]], ref[ri[use], 0], ref[ri[use], 1], center,
                             params, label)
            params = result.x
            det = np.column_stack(_gnomonic(*corr.wcs_for(params).all_pix2world(xy, 0).T,
                                            *center)[:2])
            resid = np.hypot(*(det[di] - ref[ri]).T)
            # Robust 1-D sigma of a 2-D Gaussian: median(r^2) = 2 ln2 sigma^2; floored so
            # that an exact match (the same image) does not clip noise-free residuals.
            sigma = max(np.sqrt(np.median(resid[use] ** 2) / (2 * np.log(2))), 0.01 * scale)
            new_use = resid < sigma_clip * sigma
            if np.array_equal(new_use, use):
                break
            use = new_use
        else:
            raise FrameError(f"{label}: outlier rejection did not settle; the WCS fit did "
                             "not converge.")
        state = (tuple(di[use]), tuple(ri[use]))
        if radius == match_radius and state in seen:
            break  # the matched set repeats (settled, or flipping between equal fits)
        if radius == match_radius:
            seen.add(state)
        radius = match_radius
    else:
        raise FrameError(f"{label}: the star matching did not converge in "
                         f"{_MAX_OUTER_ITERATIONS} iterations; the WCS was not changed.")

    n_used = int(np.count_nonzero(use))
    rms = float(np.sqrt(np.mean(resid[use] ** 2)))
    jac = result.jac
    try:
        cov = np.linalg.inv(jac.T @ jac) * (rms ** 2 / 2)
        shift_err = float(np.sqrt(cov[0, 0] + cov[1, 1]))
    except np.linalg.LinAlgError:
        raise FrameError(f"{label}: the matched stars do not constrain a '{model}' fit "
                         "(degenerate geometry); fit a simpler model.") from None
    stats = {"n": n_used, "n_matched": len(di), "rms": rms, "rms_px": rms / scale,
             "shift_err": shift_err}
    return corr.make(params), params, stats


# --------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------
def _to_arcsec(value, scale, name):
    """A length given in pixels (number or u.pix) or as an angle, in arcsec."""
    value = u.Quantity(value)
    if value.unit in (u.pix, u.dimensionless_unscaled):
        return float(value.value) * scale
    try:
        return float(value.to_value(u.arcsec))
    except u.UnitConversionError:
        raise ValueError(f"{name} must be in pixels or an angle, not {value.unit}.") from None


def _summary(old, new, shape):
    """Offsets between two WCS at the frame centre: pixel (dx, dy), sky (dra, ddec)."""
    ny, nx = shape
    c = np.array([[(nx - 1) / 2, (ny - 1) / 2]])
    lon0, lat0 = old.all_pix2world(c, 0)[0]
    lon1, lat1 = new.all_pix2world(c, 0)[0]
    dra, ddec, _ = _gnomonic(lon1, lat1, lon0, lat0)
    p = new.all_world2pix([[lon0, lat0]], 0)[0]  # where the star the old WCS put at c is
    m = np.linalg.solve(_linear_matrix(old).T, _linear_matrix(new).T).T
    theta = np.degrees(np.arctan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1]))
    return {"dx": float(p[0] - c[0, 0]), "dy": float(p[1] - c[0, 1]), "dra": float(dra),
            "ddec": float(ddec), "rot": float(theta),
            "scale": float(np.sqrt(abs(np.linalg.det(m))))}


def _check_plausible(summary, stats, scale, match_arcsec, max_arcsec, max_rotation,
                     max_scale_change, label):
    """Refuse a measured correction that is implausible; warn about a poor one."""
    moved = np.hypot(summary["dx"], summary["dy"]) * scale
    if moved > max_arcsec:
        raise FrameError(f"{label}: the fitted correction ({moved:.1f} arcsec) is larger "
                         f"than max_offset ({max_arcsec:.1f} arcsec); it is not "
                         "plausible, the WCS was not changed.")
    max_rotation = u.Quantity(max_rotation, u.deg)
    if abs(summary["rot"]) > max_rotation.value:
        raise FrameError(f"{label}: the fitted rotation ({summary['rot']:.3f} deg) is "
                         f"larger than max_rotation ({max_rotation}); the WCS was not "
                         "changed.")
    if abs(summary["scale"] - 1) > max_scale_change:
        raise FrameError(f"{label}: the fitted scale change ({summary['scale'] - 1:+.4f}) "
                         f"is larger than max_scale_change ({max_scale_change}); the WCS "
                         "was not changed.")
    if stats["n"] < 0.5 * stats["n_matched"]:
        warnings.warn(f"{label}: {stats['n_matched'] - stats['n']} of "
                      f"{stats['n_matched']} matched stars were rejected as outliers; "
                      "check the correction.", AstropyUserWarning)
    if stats["rms"] > match_arcsec / 3:
        warnings.warn(f"{label}: the WCS fit leaves {stats['rms_px']:.2f} px rms "
                      "residuals; the correction may be poor.", AstropyUserWarning)


def _add_history(meta, text):
    if hasattr(meta, "add_history"):
        meta.add_history(text)
    else:
        history = meta.get("HISTORY", [])
        history = list(history) if isinstance(history, (list, tuple)) else [history]
        meta["HISTORY"] = history + [text]


def correct_wcs(ccd, offset=None, reference=None, *, fit="shift", min_stars=5,
                match_radius=3.0, max_offset=50.0, detect_threshold=5.0, fwhm=None,
                max_stars=300, sigma_clip=3.0, max_rotation=1.0 * u.deg,
                max_scale_change=0.01):
    """Correct a frame's celestial WCS by a known offset, or by matching its stars.

    Only the linear part of the WCS changes: ``CRVAL`` for a shift and the ``CD`` (or
    ``PC``) matrix for rotation and scale. ``CRPIX`` and all distortions (SIP, TPV,
    lookup tables) are kept, so a distortion solution stays attached to the detector.
    Corrections are fitted on the full WCS, distortions included.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        Frame with a celestial WCS. It is not modified.
    offset : tuple, `~astropy.units.Quantity`, `~astropy.table.Table`, str or path, optional
        A known correction, in one of these forms:

        - ``(dx, dy)`` numbers or a ``pix`` Quantity: **pixel offset**. The star that the
          old WCS puts at pixel ``p`` is really at pixel ``p + (dx, dy)`` (the same as
          adding ``(dx, dy)`` to ``CRPIX``, but done through ``CRVAL``);
        - two angles ``(dRA * cos(Dec), dDec)``: **sky offset**. The true sky position
          of every pixel is the old one plus this offset, i.e. a star the old WCS puts at
          ``(ra, dec)`` is really at ``(ra + dRA / cos(Dec), dec + dDec)``;
        - two `~astropy.coordinates.SkyCoord` ``(given, true)``: the position the old WCS
          gives for a star and its true position (a sky offset);
        - an offset table or its path (see `read_offsets`), looked up by the frame's file
          name (``meta['SSFILE']``).

        Note that a pixel offset ``d`` and a sky offset ``s`` describing the same error
        have opposite signs: ``s ~ -CD @ d``.
    reference : CCDData, Table, str, path or SkyCoord, optional
        Measure the correction on the stars: a frame with a trusted WCS (its stars are
        detected), a catalogue with RA/Dec columns in degrees (``ra``/``dec``,
        ``RA_ICRS``/``DE_ICRS``, ``RAJ2000``/``DEJ2000``...; sorted by a magnitude column
        when there is one), or star positions. Catalogue positions should be at the
        epoch of the frame (propagate Gaia proper motions first). When ``offset`` is also
        given it is applied first and the measurement refines it.
    fit : {'shift', 'shift+rotation', 'shift+rotation+scale', 'affine'}
        Model fitted with ``reference``.
    min_stars : int
        Fewest matched stars accepted.
    match_radius : float or `~astropy.units.Quantity`
        Radius for matching a detected star to a reference star once the coarse offset is
        known (pixels, or an angle). The coarse offset itself is found by voting on all
        pairs closer than ``max_offset``, in bins of this size.
    max_offset : float or `~astropy.units.Quantity`
        Largest correction searched for (pixels, or an angle). A fitted correction larger
        than this is refused.
    detect_threshold, fwhm, max_stars
        Passed to `detect_stars` (threshold in background sigma, FWHM in pixels or None
        to estimate it, number of brightest stars kept), for the frame and a reference
        frame.
    sigma_clip : float
        Matched stars whose residual exceeds this many (robust) sigma are rejected,
        iteratively.
    max_rotation : `~astropy.units.Quantity`
        Largest rotation accepted from the fit.
    max_scale_change : float
        Largest fractional change of the pixel scale accepted from the fit.

    Returns
    -------
    ccd : `~astropy.nddata.CCDData`
        A new frame, identical but for its WCS and these header cards: ``WCSCORR``
        (``offset``, ``reference`` or ``offset+reference``), ``WCSDX``/``WCSDY`` (pixel
        offset at the frame centre, in the ``offset`` convention), ``WCSDRA``/``WCSDDEC``
        (sky offset at the frame centre, arcsec), ``WCSROT`` (degrees; the linear matrix
        was left-multiplied by ``[[cos, -sin], [sin, cos]]``), ``WCSSCAL`` (scale
        factor), and when measured, ``WCSFIT``, ``WCSNSTAR`` (stars used), ``WCSRMS``
        (arcsec) and ``WCSRMSPX`` (pixels; rms of the 2-D residual distances),
        ``WCSERR`` (1-sigma uncertainty of the shift, arcsec), plus a ``HISTORY`` line.

    Raises
    ------
    FrameError
        The frame has no celestial WCS; too few stars are detected or matched; the
        reference does not overlap the frame; no consistent offset is found within
        ``max_offset``; the fit does not converge or gives an implausible correction (larger
        than ``max_offset``, ``max_rotation`` or ``max_scale_change``); the frame is not in
        the offset table. The message names the frame. The input is never left half-changed.

    Warns
    -----
    AstropyUserWarning
        When more than half of the matched stars were rejected as outliers, or the residual
        rms exceeds a third of ``match_radius``.

    Examples
    --------
    A known pixel offset: the star the old WCS placed at pixel (50, 40) is really at
    (52, 39).

    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from astropy.wcs import WCS
    >>> from shiftstack_ccd.astrometry import correct_wcs
    >>> wcs = WCS(naxis=2)
    >>> wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> wcs.wcs.crval = [150.0, 2.0]
    >>> wcs.wcs.crpix = [50.0, 50.0]
    >>> wcs.wcs.cd = [[-2.8e-4, 0], [0, 2.8e-4]]
    >>> ccd = CCDData(np.zeros((100, 100)), unit="adu", wcs=wcs)
    >>> fixed = correct_wcs(ccd, offset=(2.0, -1.0))
    >>> star = wcs.pixel_to_world(50, 40)
    >>> x, y = fixed.wcs.world_to_pixel(star)
    >>> print(f"{x:.3f} {y:.3f}")
    52.000 39.000
    >>> print(fixed.meta["WCSCORR"], round(fixed.meta["WCSDX"], 3), round(fixed.meta["WCSDY"], 3))
    offset 2.0 -1.0
    """
    if fit not in FIT_MODELS:
        raise ValueError(f"fit={fit!r}: choose one of {list(FIT_MODELS)}.")
    if offset is None and reference is None:
        raise ValueError("correct_wcs needs offset= (a known correction) or reference= (a "
                         "frame or catalogue to measure it against).")
    label = frame_label(ccd)
    wcs0 = copy.deepcopy(require_celestial_wcs(ccd, "correct_wcs"))
    wcs0.wcs.set()
    if wcs0.wcs.lng != 0 or wcs0.wcs.lat != 1:
        raise FrameError(f"{label}: the WCS has its latitude axis first ({wcs0.wcs.ctype}); "
                         "correct_wcs needs longitude (RA) on the first axis.")
    shape = ccd.shape
    scale = _pixel_scale(wcs0)
    match_arcsec = _to_arcsec(match_radius, scale, "match_radius")
    max_arcsec = _to_arcsec(max_offset, scale, "max_offset")
    if not 0 < match_arcsec < max_arcsec:
        raise ValueError("match_radius must be positive and smaller than max_offset.")

    history, steps = [], []
    wcs = wcs0
    if offset is not None:
        kind, value, description = _resolve_offset(offset, ccd, label)
        wcs = _apply_offset(wcs0, kind, value, shape, label)
        unit = "px" if kind == "pixel" else "arcsec"
        history.append(f"correct_wcs: {description} ({value[0]:.4g}, {value[1]:.4g}) {unit}")
        steps.append("offset")

    stats = None
    if reference is not None:
        detect_kwargs = {"threshold": detect_threshold, "fwhm": fwhm, "max_stars": max_stars}
        stars = detect_stars(ccd, **detect_kwargs)
        if len(stars) < min_stars:
            raise FrameError(f"{label}: only {len(stars)} stars detected above "
                             f"{detect_threshold} sigma (need {min_stars}) to correct the "
                             "WCS; lower detect_threshold or min_stars, or give an offset.")
        ref_lon, ref_lat, ref_label = _reference_coords(reference, wcs, detect_kwargs)
        xy = np.column_stack([stars["x"], stars["y"]])
        measured, params, stats = _measure(wcs, xy, shape, ref_lon, ref_lat, ref_label, fit,
                                           min_stars, match_arcsec, max_arcsec, sigma_clip,
                                           label)
        _check_plausible(_summary(wcs, measured, shape), stats, scale, match_arcsec,
                         max_arcsec, max_rotation, max_scale_change, label)
        wcs = measured
        history.append(f"correct_wcs: measured on {stats['n']} stars against {ref_label}, "
                       f"fit {fit}, rms {stats['rms']:.3f} arcsec ({stats['rms_px']:.3f} px)")
        steps.append("reference")

    summary = _summary(wcs0, wcs, shape)
    meta = copy.deepcopy(ccd.meta)
    for key in [k for k in list(meta.keys()) if _LINEAR_CARD.match(str(k))]:
        del meta[key]  # the WCS object is authoritative; stale cards would contradict it
    meta["WCSCORR"] = ("+".join(steps), "WCS corrected by shiftstack_ccd.correct_wcs")
    meta["WCSDX"] = (round(summary["dx"], 4), "[pix] star at old-WCS pixel p is at p+dx")
    meta["WCSDY"] = (round(summary["dy"], 4), "[pix] star at old-WCS pixel p is at p+dy")
    meta["WCSDRA"] = (round(summary["dra"], 4), "[arcsec] dRA*cos(Dec) added at centre")
    meta["WCSDDEC"] = (round(summary["ddec"], 4), "[arcsec] dDec added at centre")
    meta["WCSROT"] = (round(summary["rot"], 6), "[deg] rotation applied to the CD matrix")
    meta["WCSSCAL"] = (round(summary["scale"], 8), "scale factor applied to the CD matrix")
    if stats is not None:
        meta["WCSFIT"] = (fit, "model fitted to the matched stars")
        meta["WCSNSTAR"] = (stats["n"], "stars used in the WCS fit")
        meta["WCSRMS"] = (round(stats["rms"], 4), "[arcsec] rms residual of the WCS fit")
        meta["WCSRMSPX"] = (round(stats["rms_px"], 4), "[pix] rms residual of the WCS fit")
        meta["WCSERR"] = (round(stats["shift_err"], 4), "[arcsec] 1-sigma error of the shift")
    if not hasattr(meta, "add_history"):  # plain dict meta: drop the (value, comment) form
        meta.update({k: v[0] for k, v in meta.items() if isinstance(v, tuple) and
                     str(k).startswith("WCS")})
    for text in history:
        _add_history(meta, text)
    log.info("%s: %s", label, "; ".join(history))
    out = ccd.copy()  # deep copy: data, mask, uncertainty, flags, psf
    out.wcs = wcs
    out.meta = meta
    return out
