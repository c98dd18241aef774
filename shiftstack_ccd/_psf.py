# Licensed under a 3-clause BSD style license - see LICENSE
"""The package's one PSF implementation (private): the pixel-integrated Moffat, its fit to
an image's stars, and an empirical PSF built from the same stars.

Used by the renderer of the simulator and of the injection of fakes
(`shiftstack_ccd.datasets._render`, which must draw what the stars look like) and by
`measure_target` (which fits the target with the stars' PSF). The Moffat is integrated over
each pixel with one 3x3 Gauss-Legendre rule (`GL_NODES`, `GL_WEIGHTS`) everywhere, so the
FWHM and beta found by `fit_psf` are those that, rendered again, reproduce the stars:
photutils' `~photutils.psf.MoffatPSF` and astropy's
`~astropy.modeling.functional_models.Moffat2D` are sampled at pixel centres, which makes a
3-pixel FWHM come out about 2.5 % too wide, and the fake would be rendered wider still.

`empirical_psf` builds photutils' effective PSF (`~photutils.psf.EPSFBuilder`) from the
stars `fit_psf` selects, for fakes whose halo is the stars' own rather than a Moffat's.
"""

import logging
import warnings

import numpy as np
from astropy.stats import sigma_clipped_stats

from .exceptions import FrameError

__all__ = []

log = logging.getLogger(__name__)

# Pixel integration of the PSF: 3x3 Gauss-Legendre nodes per pixel. This is exact for
# polynomials up to degree 5 in each axis and matches the true pixel integral of a Moffat
# to 1e-5 of the peak at FWHM 3 px, 1e-4 at 2 px, 5e-4 at 1.5 px (5x5 midpoint
# oversampling: 2e-3, 4e-3, 7e-3) for a third of the cost. astropy's `discretize_model`
# would evaluate through the modelling machinery on full grids, far slower for thousands of
# small stamps.
GL_NODES, GL_WEIGHTS = np.polynomial.legendre.leggauss(3)
GL_NODES = GL_NODES / 2.0
GL_WEIGHTS = GL_WEIGHTS / 2.0

#: Fraction of a star's light allowed outside its stamp (before renormalisation).
STAMP_TRUNCATION = 1e-3


def moffat_alpha(fwhm, beta):
    """The Moffat's core width ``alpha`` for a FWHM and an index ``beta``."""
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def stamp_half_size(fwhm, beta, aperture_radius):
    """Half-size (pixels) of a stamp holding all but `STAMP_TRUNCATION` of a Moffat's light
    (at most 10 FWHM), and at least an aperture of ``aperture_radius`` plus 2 pixels."""
    alpha = moffat_alpha(fwhm, beta)
    # Radius outside which a Moffat holds a fraction STAMP_TRUNCATION of its light:
    # (1 + r^2/alpha^2)^(1 - beta) = fraction.
    radius = alpha * np.sqrt(STAMP_TRUNCATION ** (1.0 / (1.0 - beta)) - 1.0)
    radius = min(radius, 10.0 * fwhm)  # shallow wings (beta near 1): cap the stamp
    return int(max(np.ceil(radius), np.ceil(aperture_radius) + 2))


def moffat_integrated(x, y, x0, y0, fwhm, beta):
    """Unit-flux Moffat integrated over the pixels centred at ``(x, y)``."""
    alpha = moffat_alpha(fwhm, beta)
    norm = (beta - 1.0) / (np.pi * alpha * alpha)
    total = np.zeros(np.broadcast(x, y).shape)
    for ny, wy in zip(GL_NODES, GL_WEIGHTS):
        for nx, wx in zip(GL_NODES, GL_WEIGHTS):
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


def fit_psf(ccd, n_stars=30, nsigma=20.0, exclude=None, saturation=None, near=None):
    """Fit a pixel-integrated Moffat to the bright isolated stars of an image.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The image (its mask is honoured).
    n_stars : int
        Largest number of stars fitted (the brightest that qualify, or the nearest to
        ``near``).
    nsigma : float
        Detection threshold over the sky noise.
    exclude : list of (x, y, radius), optional
        Places whose stars are not used (e.g. the target).
    saturation : float, optional
        Stars peaking above this are not used. Default: the ``SATURATE`` card if any, else
        90 % of the image's maximum; besides, flat-topped stars (whose brightest pixel holds
        less than 0.8 times the typical fraction of the light of the central 5 x 5 pixels)
        are left out as saturated.
    near : (float, float), optional
        A pixel (x, y): the brightest stars among the ``3 * n_stars`` that qualify nearest
        to it are fitted, rather than the brightest anywhere. The PSF varies over a field:
        on the whole 1505-pixel Lowell stack the thirty brightest stars gave (5945) a flux
        2 % (4 sigma) above the one of the 601-pixel stack around it and of its own large
        aperture.

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
    if near is not None:  # the brightest of the 3 n_stars nearest (still in flux order)
        distance = [np.hypot(c[0] - near[0], c[1] - near[1]) for c in candidates]
        nearest = set(np.argsort(distance)[:3 * n_stars].tolist())
        candidates = [c for i, c in enumerate(candidates) if i in nearest]
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


def empirical_psf(ccd, psf=None, oversampling=1, size=None):
    """An effective PSF (photutils `~photutils.psf.EPSFBuilder`) from an image's stars.

    The stars are those `fit_psf` selects (bright, isolated, unsaturated, not flat-topped),
    each cut out after subtracting a local background (`~photutils.background.Background2D`,
    64-pixel boxes) and weighted by the image's uncertainty when it has one.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The image (its mask is honoured).
    psf : dict, optional
        What `fit_psf` returned for it (fitted here otherwise).
    oversampling : int
        Oversampling of the ePSF. 1 by default: with the 15-30 stars a frame gives, an
        oversampled ePSF is not filled evenly and its centre wanders with the pixel phase
        (a Moffat fit of it moved by up to 0.35 pixel over phases 0-0.5 at oversampling 2,
        0.2 at 3, 0.001 at 1, from 15 simulated stars at FWHM 3); oversample only with
        hundreds of stars.
    size : int, optional
        Side of the star cutouts and of the ePSF, pixels (odd); default
        ``2 * ceil(4 * FWHM) + 1``, at least 15: the halo as far as the stars stay isolated
        and the local background (which holds the far wings of all the stars) is flat.

    Returns
    -------
    model : `HybridPSF`
        The stars' Moffat plus the ePSF's residual from it, unit flux over the footprint;
        evaluated at pixel centres it gives pixel-integrated values (an effective PSF).
    psf : dict
        The `fit_psf` result (``fwhm``, ``beta``, ``stars`` ...).
    """
    from astropy.nddata import NDData, StdDevUncertainty
    from astropy.table import Table
    from photutils.background import Background2D
    from photutils.psf import EPSFBuilder, extract_stars

    if psf is None:
        psf = fit_psf(ccd)
    if size is None:
        size = max(15, 2 * int(np.ceil(4.0 * psf["fwhm"])) + 1)
    size = int(size) | 1  # odd: the star on the centre pixel
    data = np.asarray(ccd.data, dtype=float)
    mask = ~np.isfinite(data)
    if ccd.mask is not None:
        mask |= np.asarray(ccd.mask, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        background = Background2D(np.where(mask, np.nanmedian(data), data), 64, mask=mask,
                                  filter_size=3).background
    uncertainty = None
    if getattr(ccd, "uncertainty", None) is not None:
        sigma = np.asarray(ccd.uncertainty.represent_as(StdDevUncertainty).array, dtype=float)
        mask |= ~np.isfinite(sigma) | (sigma <= 0)
        uncertainty = StdDevUncertainty(np.where(mask, 1.0, sigma))
    image = NDData(np.where(mask, 0.0, data - background), mask=mask, uncertainty=uncertainty)
    stars = extract_stars(image, Table({"x": psf["stars"]["x"], "y": psf["stars"]["y"]}),
                          size=size)
    label = str((getattr(ccd, "meta", None) or {}).get("SSFILE", "image"))
    if len(stars) < 3:
        raise FrameError(f"{label}: only {len(stars)} stars fit in {size}-pixel cutouts; "
                         "cannot build an empirical PSF.")
    with warnings.catch_warnings():  # photutils warns of stars its fitter could not place
        warnings.simplefilter("ignore")
        model, _ = EPSFBuilder(oversampling=oversampling, maxiters=10,
                               progress_bar=False)(stars)
    model = HybridPSF(_centred(model, size), psf["fwhm"], psf["beta"])
    log.debug("%s: empirical PSF from %d stars, %d x %d pixels", label, len(stars), size, size)
    return model, psf


class HybridPSF:
    """The stars' fitted Moffat plus the empirical residual from it (DAOPHOT's way).

    A native-sampled ePSF is wider than the stars (FWHM 3.16 instead of 3.0 for simulated
    Moffat stars: the builder registers the stars by interpolation), and an oversampled one
    needs hundreds of stars (see `empirical_psf`). So the core is the pixel-integrated
    Moffat fitted to the stars, exact at any pixel phase, and what it misses in the halo
    (beyond 1.5-2.5 FWHM) is the ePSF minus that Moffat, a small and smooth residual.
    Same calling convention as photutils' `~photutils.psf.ImagePSF` (``evaluate(x, y,
    flux, x_0, y_0)``, ``data``, ``oversampling``: the residual's footprint).
    """

    def __init__(self, epsf, fwhm, beta):
        from photutils.psf import ImagePSF
        ny, nx = epsf.data.shape
        oy, ox = epsf.oversampling
        yy, xx = np.indices((ny, nx), dtype=float)
        x = (xx - epsf.origin[0]) / ox
        y = (yy - epsf.origin[1]) / oy
        self.fwhm, self.beta = float(fwhm), float(beta)
        # both at unit flux over the footprint; the residual is the ePSF's excess
        moffat = moffat_integrated(x, y, 0.0, 0.0, self.fwhm, self.beta)
        inside = epsf.data > 0
        residual = epsf.data / (ox * oy) - np.where(inside, moffat, 0.0) / moffat[inside].sum()
        # only beyond the core: there the builder's registration of the stars (which
        # smooths a native-sampled ePSF) leaves it 5 % wider than the stars; the fitted
        # Moffat is the core (the residual rises from 0 at 1.5 FWHM to 1 at 2.5 FWHM)
        r = np.hypot(x, y) / self.fwhm
        residual *= np.clip(r - 1.5, 0.0, 1.0)
        self.residual = ImagePSF(residual * ox * oy, origin=epsf.origin,
                                 oversampling=epsf.oversampling)
        self.data, self.oversampling, self.origin = epsf.data, epsf.oversampling, epsf.origin

    def evaluate(self, x, y, flux, x_0, y_0):
        core = moffat_integrated(np.asarray(x, dtype=float), np.asarray(y, dtype=float),
                                 x_0, y_0, self.fwhm, self.beta)
        # where the stars' halo is fainter than the Moffat's the residual is negative: the
        # sum may dip below zero in the noise of the ePSF's wings, and no light is negative
        return flux * np.clip(core + self.residual.evaluate(x, y, 1.0, x_0, y_0), 0.0, None)


def _centred(model, size):
    """The ePSF with its origin where the pixel-integrated Moffat fit puts its centre.

    EPSFBuilder centres the ePSF on its centroid in a small box, which is not where
    `fit_psf` and `measure_target` (a Moffat fit) put a star: 0.08 pixel apart on
    simulated Moffat stars at FWHM 3. A fake must sit where the fit will find a star.

    Also, the builder's edges are poorly constrained (few samples, interpolated): a
    simulated Moffat field gave a negative blob of 2 % of the flux in one pixel near the
    corner. The ePSF is kept within its inscribed circle (one pixel in) and its negative
    values, which no light is, are set to zero.
    """
    from photutils.psf import ImagePSF
    half = size // 2
    ny, nx = model.data.shape
    oy, ox = model.oversampling
    yy, xx = np.indices((ny, nx), dtype=float)
    radius = np.hypot((xx - model.origin[0]) / ox, (yy - model.origin[1]) / oy)
    data = np.where(radius <= half - 1, np.clip(model.data, 0.0, None), 0.0)
    model = ImagePSF(data * (ox * oy / data.sum()), origin=model.origin,
                     oversampling=model.oversampling)
    grid = np.arange(-half, half + 1, dtype=float)
    xx, yy = np.meshgrid(grid, grid)
    image = model.evaluate(xx, yy, 1.0, 0.0, 0.0)
    fit = _fit_one(image, np.ones(image.shape), half, half, 2.0)
    dx, dy = fit.x[1] - half, fit.x[2] - half
    oversampling = np.asarray(model.oversampling, dtype=float)  # (y, x)
    origin = np.asarray(model.origin, dtype=float) + np.array([dx * oversampling[1],
                                                               dy * oversampling[0]])
    return ImagePSF(model.data, origin=tuple(origin), oversampling=model.oversampling)
