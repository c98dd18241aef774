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
from typing import Literal

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import CCDData
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from .._utils import frame_label, require_celestial_wcs
from ..exceptions import FrameError
from ..steps import log_to_header, provenance_header
from ..stars import detect_stars
from ._match import (FIT_MODELS, gnomonic, linear_matrix, measure_correction, pixel_scale,
                     reference_coords)
from ._offsets import apply_offset, read_offsets, resolve_offset

__all__ = ["correct_wcs", "read_offsets"]

log = logging.getLogger(__name__)

# Linear WCS cards that the output's WCS supersedes if a caller left them in meta.
_LINEAR_CARD = re.compile(r"^(CRVAL\d|CD\d_\d|PC\d_\d|CDELT\d|CROTA\d)$")


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
    dra, ddec, _ = gnomonic(lon1, lat1, lon0, lat0)
    p = new.all_world2pix([[lon0, lat0]], 0)[0]  # where the star the old WCS put at c is
    m = np.linalg.solve(linear_matrix(old).T, linear_matrix(new).T).T
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


@log_to_header
def correct_wcs(ccd: CCDData,
                offset: tuple[float, float] | u.Quantity | Table | str | os.PathLike | None
                = None,
                reference: CCDData | Table | SkyCoord | str | os.PathLike | None = None, *,
                fit: Literal["shift", "shift+rotation", "shift+rotation+scale", "affine"]
                = "shift",
                min_stars: int = 5, match_radius: float | u.Quantity = 3.0,
                max_offset: float | u.Quantity = 50.0, detect_threshold: float = 5.0,
                fwhm: float | None = None, max_stars: int = 300, sigma_clip: float = 3.0,
                max_rotation: u.Quantity = 1.0 * u.deg,
                max_scale_change: float = 0.01) -> CCDData:
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
    scale = pixel_scale(wcs0)
    match_arcsec = _to_arcsec(match_radius, scale, "match_radius")
    max_arcsec = _to_arcsec(max_offset, scale, "max_offset")
    if not 0 < match_arcsec < max_arcsec:
        raise ValueError("match_radius must be positive and smaller than max_offset.")

    history, steps = [], []
    wcs = wcs0
    if offset is not None:
        kind, value, description = resolve_offset(offset, ccd, label)
        wcs = apply_offset(wcs0, kind, value, shape, label)
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
        ref_lon, ref_lat, ref_label = reference_coords(reference, wcs, detect_kwargs)
        xy = np.column_stack([stars["x"], stars["y"]])
        measured, params, stats = measure_correction(wcs, xy, shape, ref_lon, ref_lat,
                                                     ref_label, fit, min_stars, match_arcsec,
                                                     max_arcsec, sigma_clip, label)
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
    cards = [("WCSCORR", "+".join(steps), "WCS corrected by shiftstack_ccd.correct_wcs"),
             ("WCSDX", round(summary["dx"], 4), "[pix] star at old-WCS pixel p is at p+dx"),
             ("WCSDY", round(summary["dy"], 4), "[pix] star at old-WCS pixel p is at p+dy"),
             ("WCSDRA", round(summary["dra"], 4), "[arcsec] dRA*cos(Dec) added at centre"),
             ("WCSDDEC", round(summary["ddec"], 4), "[arcsec] dDec added at centre"),
             ("WCSROT", round(summary["rot"], 6), "[deg] rotation applied to the CD matrix"),
             ("WCSSCAL", round(summary["scale"], 8), "scale factor applied to the CD matrix")]
    if stats is not None:
        cards += [("WCSFIT", fit, "model fitted to the matched stars"),
                  ("WCSNSTAR", stats["n"], "stars used in the WCS fit"),
                  ("WCSRMS", round(stats["rms"], 4), "[arcsec] rms residual of the WCS fit"),
                  ("WCSRMSPX", round(stats["rms_px"], 4), "[pix] rms residual of the WCS fit"),
                  ("WCSERR", round(stats["shift_err"], 4),
                   "[arcsec] 1-sigma error of the shift")]
    meta = provenance_header(meta, cards, history)
    log.info("%s: %s", label, "; ".join(history))
    out = ccd.copy()  # deep copy: data, mask, uncertainty, flags, psf
    out.wcs = wcs
    out.meta = meta
    return out
