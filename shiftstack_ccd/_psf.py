# Licensed under a 3-clause BSD style license - see LICENSE
"""A Moffat PSF fitted to an image's stars, pixel-integrated (private).

Used by the injection of fakes (which must render what the stars look like) and by
`measure_target` (which fits the target with the stars' PSF). The fit integrates the
Moffat over each pixel with the same 3x3 Gauss-Legendre rule as the renderer
(`shiftstack_ccd.datasets._render`), so the FWHM and beta found are those that, rendered
again, reproduce the stars: photutils' `~photutils.psf.MoffatPSF` and astropy's
`~astropy.modeling.functional_models.Moffat2D` are sampled at pixel centres, which makes a
3-pixel FWHM come out about 2.5 % too wide, and the fake would be rendered wider still.
"""

import logging
import warnings

import numpy as np
from astropy.stats import sigma_clipped_stats

from .exceptions import FrameError

__all__ = []

log = logging.getLogger(__name__)

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(3)
_NODES = _NODES / 2.0
_WEIGHTS = _WEIGHTS / 2.0


def moffat_integrated(x, y, x0, y0, fwhm, beta):
    """Unit-flux Moffat integrated over the pixels centred at ``(x, y)``."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    norm = (beta - 1.0) / (np.pi * alpha * alpha)
    total = np.zeros(np.broadcast(x, y).shape)
    for ny, wy in zip(_NODES, _WEIGHTS):
        for nx, wx in zip(_NODES, _WEIGHTS):
            r2 = ((x + nx - x0) ** 2 + (y + ny - y0) ** 2) / (alpha * alpha)
            total += wx * wy * (1.0 + r2) ** (-beta)
    return norm * total


def _fit_one(cut, weights, x0, y0, fwhm0):
    """Least-squares fit of flux, x, y, FWHM, beta and a constant to one cutout."""
    from scipy.optimize import least_squares
    yy, xx = np.indices(cut.shape, dtype=float)
    good = weights > 0
    xx, yy, data, w = xx[good], yy[good], cut[good], weights[good]
    background0 = float(np.median(np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]])))
    flux0 = max(float(np.sum(data - background0)), 1e-9)

    def residuals(p):
        flux, x, y, fwhm, beta, background = p
        return w * (flux * moffat_integrated(xx, yy, x, y, fwhm, beta) + background - data)

    start = [flux0, x0, y0, fwhm0, 3.0, background0]
    lower = [0.0, x0 - 3, y0 - 3, 0.5, 1.05, -np.inf]
    upper = [np.inf, x0 + 3, y0 + 3, 4 * fwhm0 + 5, 20.0, np.inf]
    fit = least_squares(residuals, start, bounds=(lower, upper), x_scale="jac")
    return fit


def fit_psf(ccd, n_stars=30, nsigma=20.0, exclude=None, saturation=None):
    """Fit a pixel-integrated Moffat to the bright isolated stars of an image.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The image (its mask is honoured).
    n_stars : int
        Largest number of stars fitted (the brightest that qualify).
    nsigma : float
        Detection threshold over the sky noise.
    exclude : list of (x, y, radius), optional
        Places whose stars are not used (e.g. the target).
    saturation : float, optional
        Stars peaking above this are not used. Default: the ``SATURATE`` card if any, else
        90 % of the image's maximum; besides, flat-topped stars (whose brightest pixel holds
        less than 0.8 times the typical fraction of the light of the central 5 x 5 pixels)
        are left out as saturated.

    Returns
    -------
    psf : dict
        ``fwhm`` and ``beta`` (the stars' inverse-covariance weighted mean, outliers out),
        ``fwhm_std`` (their scatter),
        ``n_stars``, and ``stars`` (the fitted ``x``, ``y``, ``flux``, ``fwhm``, ``beta``
        as arrays).

    Raises
    ------
    FrameError
        If fewer than three stars can be fitted.
    """
    from photutils.detection import DAOStarFinder

    data = np.asarray(ccd.data, dtype=float)
    mask = ~np.isfinite(data)
    if ccd.mask is not None:
        mask |= np.asarray(ccd.mask, dtype=bool)
    _, median, std = sigma_clipped_stats(data[~mask][::7], sigma=3)  # a sample is plenty
    sigma = None
    if getattr(ccd, "uncertainty", None) is not None:
        from astropy.nddata import StdDevUncertainty
        sigma = np.asarray(ccd.uncertainty.represent_as(StdDevUncertainty).array, dtype=float)
        mask |= ~np.isfinite(sigma) | (sigma <= 0)
    if saturation is None:
        meta = getattr(ccd, "meta", None) or {}
        saturation = float(meta["SATURATE"]) if "SATURATE" in meta \
            else 0.9 * float(np.max(data[~mask]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NoDetectionsWarning: handled below
        image = np.where(mask, median, data) - median
        guess = _first_guess(image, mask, nsigma * std)
        found = DAOStarFinder(fwhm=guess, threshold=nsigma * std, exclude_border=True)(
            image, mask=mask)
    label = str((getattr(ccd, "meta", None) or {}).get("SSFILE", "image"))
    if found is None or len(found) < 3:
        raise FrameError(f"{label}: fewer than three stars above {nsigma:g} sigma; cannot "
                         "measure the PSF (give the FWHM instead).")
    found.sort("flux", reverse=True)
    xy = np.column_stack([found["x_centroid"], found["y_centroid"]])
    half = int(np.ceil(2.5 * guess)) + 2
    ny, nx = data.shape
    candidates = []
    for i, (x, y) in enumerate(xy):
        distance = np.hypot(*(xy - (x, y)).T)
        distance[i] = np.inf
        if distance.min() < 1.5 * half:
            continue
        if exclude and any(np.hypot(x - ex, y - ey) < r + half for ex, ey, r in exclude):
            continue
        xi, yi = int(round(x)), int(round(y))
        if not (half <= xi < nx - half and half <= yi < ny - half):
            continue
        box = (slice(yi - half, yi + half + 1), slice(xi - half, xi + half + 1))
        cut, cmask = data[box], mask[box]
        if cmask[half - 2:half + 3, half - 2:half + 3].any() or cut.max() >= saturation:
            continue
        level = np.median(np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]]))
        core = cut[half - 2:half + 3, half - 2:half + 3] - level
        if core.sum() > 0:
            candidates.append((x, y, xi, yi, box, float(core.max() / core.sum())))
    if candidates:
        # A saturated star is flat-topped: its peak holds less of its light than an
        # unsaturated one's (whatever the saturation level, which headers rarely give).
        sharpness = np.array([c[-1] for c in candidates])
        typical = np.median(sharpness[len(sharpness) // 2:])  # the fainter half
        candidates = [c for c, f in zip(candidates, sharpness) if f >= 0.8 * typical]
    rows = []
    for x, y, xi, yi, box, _ in candidates:
        cut, cmask = data[box], mask[box]
        weights = (~cmask).astype(float)
        if sigma is not None:  # inverse-noise weights: faint wings count as much as they tell
            weights /= np.where(cmask, 1.0, sigma[box])
        fit = _fit_one(np.where(cmask, 0.0, cut), weights, x - xi + half, y - yi + half, guess)
        flux, fx, fy, fwhm, beta, _ = fit.x
        if not fit.success or beta >= 19.9 or fwhm <= 0.51:
            continue
        try:  # covariance of (fwhm, beta) from the fit's Jacobian and residuals
            dof = max(int(np.count_nonzero(weights)) - 6, 1)
            cov = np.linalg.inv(fit.jac.T @ fit.jac)[3:5, 3:5] * (2 * fit.cost / dof)
        except np.linalg.LinAlgError:
            continue
        rows.append((fx + xi - half, fy + yi - half, flux, fwhm, beta, cov))
        if len(rows) >= n_stars:
            break
    if len(rows) < 3:
        raise FrameError(f"{label}: only {len(rows)} isolated, unsaturated stars could be "
                         "fitted; cannot measure the PSF (give the FWHM instead).")
    x, y, flux, fwhm, beta, cov = (np.array(c) for c in zip(*rows))
    best = _combine(np.column_stack([fwhm, beta]), cov)
    result = {"fwhm": float(best[0]), "beta": float(best[1]),
              "fwhm_std": float(np.std(fwhm)), "n_stars": len(rows),
              "stars": {"x": x, "y": y, "flux": flux, "fwhm": fwhm, "beta": beta}}
    log.debug("%s: PSF from %d stars: FWHM %.3f px, beta %.2f", label, len(rows),
              result["fwhm"], result["beta"])
    return result


def _combine(values, covariances, nsigma=5.0):
    """Inverse-covariance weighted mean of 2-vectors, leaving out those beyond ``nsigma``
    of the median (a double star, a galaxy, a cosmic ray on a star)."""
    median = np.median(values, axis=0)
    inverse = np.array([np.linalg.pinv(c) for c in covariances])
    delta = values - median
    chi2 = np.einsum("ni,nij,nj->n", delta, inverse, delta)
    keep = chi2 <= nsigma ** 2
    if keep.sum() < 3:  # formal errors too small to tell: the median
        return median
    weight = inverse[keep].sum(axis=0)
    return np.linalg.solve(weight, np.einsum("nij,nj->i", inverse[keep], values[keep]))


def _first_guess(image, mask, threshold):
    """A rough FWHM (pixels) from Gaussian fits to a few bright sources: it sets the size of
    the cutouts; the Moffat fits then measure the PSF."""
    from photutils.detection import DAOStarFinder
    from photutils.psf import fit_fwhm

    found = DAOStarFinder(fwhm=3.0, threshold=threshold, exclude_border=True)(image, mask=mask)
    if found is None or len(found) == 0:
        return 3.0
    found.sort("flux", reverse=True)
    xy = np.column_stack([found["x_centroid"], found["y_centroid"]])[1:12]  # not the brightest
    try:
        widths = fit_fwhm(image, xypos=xy, fit_shape=7, mask=mask)
    except Exception:  # a failed fit leaves the default guess
        return 3.0
    widths = np.asarray(widths)[np.isfinite(widths) & (np.asarray(widths) > 0.5)]
    return float(np.clip(np.median(widths), 1.0, 20.0)) if widths.size else 3.0
