# Licensed under a 3-clause BSD style license - see LICENSE
"""The target's shape against the stars' (private): a wrong motion stacks it into a trail.

Stacked on a motion off by ``delta`` (pixels per day), the target of frame ``i`` lands
``delta (t_i - t_mean)`` from where the stack expects it: the stacked target is the PSF
spread along a segment, whose light has the excess second moments ``delta delta^T var_t``
(``var_t`` the combine-weighted variance of the frames' times). A round PSF fitted to it
still "detects" it, off-centre and with a fraction of its flux.

The test: the light's excess second moments over the model (a Gaussian blur of covariance
``[[c + e1, e2], [e2, c - e1]]`` is, to first order, the model plus ``c (Pxx + Pyy) / 2 +
e1 (Pxx - Pyy) / 2 + e2 Pxy``) are fitted linearly with flux and position, on the target
and on each of the sky stack's PSF stars. The anisotropic part ``(e1, e2)`` of the target,
minus the stars' mean, is compared with its covariance (the exact one under the stack's
correlated noise, `shiftstack_ccd._noise.measurement_covariance`, plus the stars' own
scatter, which is how much the PSF's shape varies over the field) by a chi-square with two
degrees of freedom. The isotropic part ``c`` is left out: it also holds a blur that the
stars do not share (the refinement's, seeing weighted otherwise). A target flagged
elongated gets its motion error from a fit of the segment model (the frames' own times
and weights); the stack cannot tell the sign of that error (a segment is symmetric).
"""

import types

import numpy as np

from .._noise import measurement_covariance
from ._fit import _background, _Image

__all__ = []

#: Chi-square (two degrees of freedom) beyond which the target is elongated: a false-alarm
#: probability of 0.01 % for the chi-square law. On 123 fakes with the right motion in the
#: Lowell frames (S/N 10-50) the chi-square's mean was 2.2 (2 for the law) and none passed
#: 13.8, the 0.1 % point; with PSF stars taken anywhere on the stack rather than around the
#: target the mean was 2.5 and one passed 13.8: hence the margin.
ELONGATION_CHI2 = 18.4
#: Targets below this S/N are not tested (their shape is noise; see `measure_target`).
ELONGATION_MIN_SNR = 10.0
#: Step (pixels) of the finite differences of the model.
_STEP = 0.25


def _columns(model, xx, yy, x, y):
    """The model at (x, y), its position derivatives and its second-moment templates."""
    h = _STEP

    def at(dx, dy):
        return model.image(xx, yy, x + dx, y + dy)
    p0, xp, xm, yp, ym = at(0, 0), at(h, 0), at(-h, 0), at(0, h), at(0, -h)
    pxx = (xp - 2 * p0 + xm) / h ** 2
    pyy = (yp - 2 * p0 + ym) / h ** 2
    pxy = (at(h, h) - at(h, -h) - at(-h, h) + at(-h, -h)) / (4 * h ** 2)
    return [p0, (xp - xm) / (2 * h), (yp - ym) / (2 * h), 0.5 * (pxx + pyy),
            0.5 * (pxx - pyy), pxy]


def _moments(image, model, x, y, radius, cov=None):
    """Flux and excess anisotropic moments (e1, e2) of the source at (x, y), pixels**2,
    with their 2x2 covariance (the correlated noise ``cov``, else independent pixels)."""
    background, keep, sl = _background(image, model, x, y)
    yy, xx = np.mgrid[sl]
    xx, yy = xx.astype(float), yy.astype(float)
    bad = image.bad[sl]
    inside = (np.hypot(xx - x, yy - y) <= radius) & ~bad
    sigma = np.where(bad, 0.0, image.sigma[sl])
    columns = _columns(model, xx, yy, x, y)
    jac = np.array([c[inside] for c in columns]).T
    w = 1.0 / sigma[inside] ** 2
    solve = np.linalg.solve(jac.T @ (w[:, None] * jac), (jac * w[:, None]).T)
    weights = np.zeros((len(columns),) + inside.shape)
    for i in range(len(columns)):
        weights[i][inside] = solve[i]
        weights[i] -= solve[i].sum() * keep  # the background subtracted
    data = np.where(bad, 0.0, image.data[sl])
    params = np.einsum("iab,ab->i", weights, data)
    flux = params[0]
    if cov is None:
        scaled = weights[4:6] * sigma[None]
        pcov = np.einsum("iab,jab->ij", scaled, scaled)
    else:
        pcov = measurement_covariance(weights[4:6], sigma, cov)
    return flux, params[4:6] / flux, pcov / flux ** 2, background


def stars_anisotropy(sky, model, psf):
    """The sky stack's PSF stars' mean excess moments (e1, e2) and the variance of that
    mean plus the stars' own scatter (per component): what the target is compared with."""
    stars = psf.get("stars")
    if sky is None or stars is None:
        return None
    image = _Image(sky)
    radius = model.r_in - 1.0
    values, variances = [], []
    for x, y in zip(stars["x"], stars["y"]):
        try:
            flux, e, pcov, _ = _moments(image, model, float(x), float(y), radius)
        except Exception:  # a star at the edge or among masked pixels: not used
            continue
        if flux > 0 and np.all(np.isfinite(e)):
            values.append(e)
            variances.append(np.diag(pcov))
    if len(values) < 3:
        return None
    from astropy.stats import mad_std
    values, variances = np.array(values), np.array(variances)
    centre = np.median(values, axis=0)
    spread = mad_std(values, axis=0) ** 2
    intrinsic = np.maximum(spread - np.median(variances, axis=0), 0.0)
    # the stars' scatter (the PSF's shape varies over the field) applies to the target
    # too; the median's error is about 1.25 times that of a mean
    return {"e": centre, "var": intrinsic + 1.57 * spread / len(values),
            "n_stars": len(values)}


def shape_test(stack, model, cov, row, stars, snr, refined=False):
    """The target's elongation over the stars' and whether it is significant.

    Returns a dict: ``elongation`` (the axis ratio the excess anisotropic moments give a
    Gaussian of the PSF's FWHM: ``sqrt(1 + 2 |e| / sigma**2)``), ``shape_chi2``,
    ``elongated`` and, when elongated, ``delta`` (the motion error implied, pixels per day,
    one of its two signs; None when the segment model finds no trail longer than a tenth
    of the FWHM: then the shape is not a wrong linear motion's) and ``excess`` (e1, e2).

    A stack refined on the target (``refined``) follows it frame by frame, so its shape
    says nothing of the motion: it is measured, not flagged. (With an ephemeris 3 "/h off,
    refined on a fake at S/N 16 per frame, the target came out elongated 1.6 along no
    trail: the corrections, measured on each frame's noise, sharpen it unevenly.)
    """
    out = {"elongation": np.nan, "shape_chi2": np.nan, "elongated": False, "delta": None}
    if stars is None or not row["detected"] or not np.isfinite(snr):
        return out
    x, y = row["x"], row["y"]
    try:
        flux, e, pcov, _ = _moments(stack, model, x, y, model.r_in - 1.0, cov)
    except Exception:  # no room for the moments (an edge): untested, said by NaN
        return out
    excess = e - stars["e"]
    total = pcov + np.diag(stars["var"])
    chi2 = float(excess @ np.linalg.solve(total, excess))
    sigma2 = (model.fwhm / 2.3548) ** 2
    out.update(elongation=float(np.sqrt(1.0 + 2.0 * np.hypot(*excess) / sigma2)),
               shape_chi2=chi2, excess=excess)
    out["elongated"] = bool(snr >= ELONGATION_MIN_SNR and chi2 > ELONGATION_CHI2
                            and not refined)
    if out["elongated"]:
        out["delta"], span = _segment_fit(stack, model, x, y, flux, excess)
        if out["delta"] is not None and np.hypot(*out["delta"]) * span < 0.1 * model.fwhm:
            out["delta"] = None
    return out


def _segment_fit(stack, model, x, y, flux, excess):
    """The motion error (pixels per day) of the segment model that fits the target: the
    PSF (trailed per exposure) at ``delta (t_i - t_mean)`` in each frame, the frames'
    combine weights, on the stack minus a background beyond the segment; and the frames'
    time span (days)."""
    from scipy.optimize import least_squares
    table = stack.table
    if table is None or len(table) < 2 or "mjd_mid" not in table.colnames:
        return None, 0.0
    t = np.asarray(table["mjd_mid"], dtype=float)
    v = np.asarray(table["weight"], dtype=float) if "weight" in table.colnames \
        else np.ones(len(t))
    v = v / v.sum()
    tau = t - np.sum(v * t)
    var_t = float(np.sum(v * tau ** 2))
    if var_t <= 0:
        return None, 0.0
    # start: the moments' segment, |delta|**2 var_t = 2 |e| along the angle of (e1, e2)
    size = np.sqrt(2.0 * np.hypot(*excess) / var_t)
    angle = 0.5 * np.arctan2(excess[1], excess[0])
    start = size * np.array([np.cos(angle), np.sin(angle)])
    half_length = size * float(np.max(np.abs(tau)))
    radius = model.r_in - 1.0 + half_length
    ring = types.SimpleNamespace(r_in=radius + 2.0, r_out=radius + 2.0 + model.r_out - model.r_in)
    background, _, sl = _background(stack, ring, x, y)
    yy, xx = np.mgrid[sl]
    inside = (np.hypot(xx - x, yy - y) <= radius) & ~stack.bad[sl]
    xx, yy = xx[inside].astype(float), yy[inside].astype(float)
    data = stack.data[sl][inside] - background
    sigma = stack.sigma[sl][inside]

    def residuals(p):
        f, x0, y0, dx, dy = p
        image = sum(w * model.image(xx, yy, x0 + dx * s, y0 + dy * s) for w, s in zip(v, tau))
        return (f * image - data) / sigma

    fit = least_squares(residuals, [flux, x, y, *start], x_scale="jac")
    return (fit.x[3:5] if fit.success else None), float(np.ptp(tau))
