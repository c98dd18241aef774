# Licensed under a 3-clause BSD style license - see LICENSE
"""Matching detected stars to a reference and fitting the linear WCS correction (private).

The reference (a frame, a catalogue or a SkyCoord) becomes sky coordinates; a histogram vote
finds the offset, stars are matched within a radius and the model is fitted star by star on
the full WCS (distortions included), with sigma clipping.
"""

import copy
import logging
import os

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import CCDData
from astropy.table import Table

from .._utils import frame_label, require_celestial_wcs
from ..exceptions import FrameError
from ..stars import detect_stars

log = logging.getLogger(__name__)


#: Models `correct_wcs` can fit, and their number of free parameters.
FIT_MODELS = {"shift": 2, "shift+rotation": 3, "shift+rotation+scale": 4, "affine": 6}

# Column names (lower case) recognised as RA/Dec in a reference catalogue, in order.
RADEC_NAMES = (("ra", "dec"), ("ra_icrs", "de_icrs"), ("ra_icrs", "dec_icrs"),
               ("raj2000", "dej2000"), ("raj2000", "decj2000"), ("ra_deg", "dec_deg"),
               ("alpha_j2000", "delta_j2000"), ("ra_obs", "dec_obs"), ("_raj2000", "_dej2000"))
MAG_NAMES = ("phot_g_mean_mag", "gmag", "mag", "rmag", "vmag", "flux")

MAX_OUTER_ITERATIONS = 10
MAX_CLIP_ITERATIONS = 10


def gnomonic(lon, lat, lon0, lat0):
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


def linear_matrix(wcs):
    """The matrix M of the linear part, intermediate = M @ (p - CRPIX), in degrees/pixel."""
    w = wcs.wcs
    if w.has_cd():
        return np.array(w.cd, dtype=float)
    return np.diag(np.asarray(w.cdelt, dtype=float)) @ np.array(w.get_pc(), dtype=float)


def set_linear_matrix(wcs, matrix):
    w = wcs.wcs
    if w.has_cd():
        w.cd = matrix
    else:
        w.pc = np.diag(1.0 / np.asarray(w.cdelt, dtype=float)) @ matrix


def pixel_scale(wcs):
    """Mean pixel scale in arcsec/pixel."""
    return float(np.sqrt(abs(np.linalg.det(linear_matrix(wcs))))) * 3600.0


def model_matrix(params, model):
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


class LinearCorrection:
    """A WCS whose CRVAL and linear matrix are functions of a few parameters.

    The matrix `model_matrix` left-multiplies the linear (CD) matrix, which rotates and
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
        self.matrix0 = linear_matrix(wcs)
        lon, lat = wcs.all_pix2world([pivot], 0)[0]
        xi, eta, _ = gnomonic(lon, lat, *self.crval0)
        self.pivot = np.array([xi, eta], dtype=float)  # arcsec east, north of CRVAL

    def wcs_for(self, params, target=None):
        w = self.work if target is None else target
        matrix = model_matrix(params, self.model)
        east, north = (np.asarray(params[0:2]) + self.pivot - matrix @ self.pivot) / 3600.0
        lon0, lat0 = self.crval0
        w.wcs.crval = [(lon0 + east / np.cos(np.radians(lat0))) % 360.0, lat0 + north]
        set_linear_matrix(w, matrix @ self.matrix0)
        w.wcs.set()
        return w

    def make(self, params):
        """A new, independent WCS for these parameters."""
        return self.wcs_for(params, copy.deepcopy(self.base))


def initial_params(model, east=0.0, north=0.0):
    p = np.zeros(FIT_MODELS[model])
    p[0], p[1] = east, north
    return p


def fit_correction(corr, xy, ref_xi, ref_eta, center, p0, label):
    """Least-squares fit of the correction parameters; residuals in arcsec on the sky."""
    from scipy.optimize import least_squares

    def residuals(params):
        w = corr.wcs_for(params)
        lon, lat = w.all_pix2world(xy[:, 0], xy[:, 1], 0)
        xi, eta, _ = gnomonic(lon, lat, *center)
        return np.concatenate([xi - ref_xi, eta - ref_eta])

    with np.errstate(invalid="ignore"):
        result = least_squares(residuals, p0, method="lm", x_scale="jac")
    if not result.success or not np.all(np.isfinite(result.x)):
        raise FrameError(f"{label}: the WCS fit did not converge ({result.message}); the WCS "
                         "was not changed. Check the reference, or fit a simpler model.")
    n = len(xy)
    dxi, deta = result.fun[:n], result.fun[n:]
    return result, np.hypot(dxi, deta)


def celestial_frame(wcs):
    from astropy.wcs.utils import wcs_to_celestial_frame
    try:
        return wcs_to_celestial_frame(wcs)
    except ValueError:
        return "icrs"


def catalog_coords(table, label):
    for name in table.colnames:
        if isinstance(table[name], SkyCoord):
            return table[name], table
    lower = {name.lower(): name for name in table.colnames}
    for ra_name, dec_name in RADEC_NAMES:
        if ra_name in lower and dec_name in lower:
            ra, dec = table[lower[ra_name]], table[lower[dec_name]]
            ra = u.Quantity(ra, u.deg) if getattr(ra, "unit", None) is None else u.Quantity(ra)
            dec = (u.Quantity(dec, u.deg) if getattr(dec, "unit", None) is None
                   else u.Quantity(dec))
            good = np.isfinite(ra) & np.isfinite(dec)
            return SkyCoord(ra[good], dec[good], frame="icrs"), table[good]
    raise FrameError(f"{label}: reference catalogue has no RA/Dec columns (it has "
                     f"{table.colnames}); name them 'ra' and 'dec' (degrees, ICRS).")


def reference_coords(reference, frame_wcs, detect_kwargs):
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
        coords, table = catalog_coords(table, label)
        lower = {name.lower(): name for name in table.colnames}
        for mag in MAG_NAMES:
            if mag in lower:
                values = np.asarray(u.Quantity(table[lower[mag]]).value, dtype=float)
                values = np.where(np.isfinite(values), values, np.inf if mag != "flux"
                                  else -np.inf)
                order = np.argsort(-values if mag == "flux" else values, kind="stable")
                break
    else:
        raise TypeError(f"reference must be a CCDData, a SkyCoord, a Table or a path to a "
                        f"catalogue, not {type(reference).__name__}.")
    coords = coords.transform_to(celestial_frame(frame_wcs))
    sph = coords.spherical
    lon, lat = sph.lon.to_value(u.deg), sph.lat.to_value(u.deg)
    if order is not None:
        lon, lat = lon[order], lat[order]
    return np.atleast_1d(lon), np.atleast_1d(lat), label


# --------------------------------------------------------------------------------------
# Matching and fitting
# --------------------------------------------------------------------------------------
def vote_offset(det, ref, max_offset, bin_size, min_stars, label, ref_label):
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


def match_stars(det, ref, radius):
    """One-to-one nearest-neighbour pairs (det index, ref index) closer than radius."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(ref).query(det, distance_upper_bound=radius)
    ok = np.isfinite(dist)
    det_idx, ref_idx, dist = np.flatnonzero(ok), idx[ok], dist[ok]
    order = np.argsort(dist, kind="stable")
    _, first = np.unique(ref_idx[order], return_index=True)
    keep = np.sort(order[first])
    return det_idx[keep], ref_idx[keep]


def measure_correction(wcs, xy, shape, ref_lon, ref_lat, ref_label, model, min_stars, match_radius,
                       max_offset, sigma_clip, label):
    """Fit the correction of ``wcs`` that brings detected stars onto the reference."""
    ny, nx = shape
    center = tuple(wcs.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)[0])
    scale = pixel_scale(wcs)
    # Keep the reference stars that can land on the frame, allowing for max_offset.
    edge = np.array([[0, 0], [nx - 1, 0], [nx - 1, ny - 1], [0, ny - 1]], dtype=float)
    border = np.concatenate([edge + t * (np.roll(edge, -1, axis=0) - edge)
                             for t in np.linspace(0, 1, 8, endpoint=False)])
    bxi, beta, _ = gnomonic(*wcs.all_pix2world(border, 0).T, *center)
    rxi, reta, front = gnomonic(ref_lon, ref_lat, *center)
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

    corr = LinearCorrection(wcs, model, ((nx - 1) / 2, (ny - 1) / 2))
    det0 = np.column_stack(gnomonic(*wcs.all_pix2world(xy, 0).T, *center)[:2])
    shift = vote_offset(det0, ref, max_offset, match_radius, min_stars, label, ref_label)
    params = initial_params(model, *shift)

    radius = 2.0 * match_radius
    seen = set()
    for _ in range(MAX_OUTER_ITERATIONS):
        det = np.column_stack(gnomonic(*corr.wcs_for(params).all_pix2world(xy, 0).T,
                                       *center)[:2])
        di, ri = match_stars(det, ref, radius)
        if len(di) < min_stars:
            raise FrameError(f"{label}: only {len(di)} stars matched {ref_label} within "
                             f"{radius / scale:.1f} pixels (need {min_stars}).")
        use = np.ones(len(di), dtype=bool)
        for _ in range(MAX_CLIP_ITERATIONS):
            if np.count_nonzero(use) < max(min_stars, FIT_MODELS[model]):
                raise FrameError(f"{label}: only {np.count_nonzero(use)} matched stars are "
                                 f"left after outlier rejection (need {min_stars}).")
            result, _ = fit_correction(corr, xy[di[use]], ref[ri[use], 0], ref[ri[use], 1], center,
                                       params, label)
            params = result.x
            det = np.column_stack(gnomonic(*corr.wcs_for(params).all_pix2world(xy, 0).T,
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
                         f"{MAX_OUTER_ITERATIONS} iterations; the WCS was not changed.")

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
