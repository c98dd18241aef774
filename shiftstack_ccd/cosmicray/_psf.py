# Licensed under a 3-clause BSD style license - see LICENSE
"""The star-shape test of the ring-median detector (private): can a Gaussian star at least
``min_fwhm`` wide explain a 3x3 box, and how sharp can such a star be?"""

import functools

import numpy as np

from ._ring import RING3


# The default sharpness is this margin times the largest value a Gaussian star at least
# min_fwhm wide can reach (star_sharpness), with an allowance of SHARP_NOISE sigma.
SHARP_MARGIN = 1.25
SHARP_NOISE = 0.5
# Star-shape test (see psf_misfit): a Gaussian star may differ from a real PSF by this
# fraction of its value in each pixel; a 3x3 box whose best star fit has a chi-square above
# PSF_CHI2 is not a star. Calibrated on the 5856 peaks of stars above 20 sigma (FWHM
# 1.5-3.5 px) in the ten Lowell 42-inch frames: with min_fwhm = 1.5 the largest chi-square
# of a star was 28.5 (99.9 % below 16) and none was sharper than the default sharpness;
# of 452 real cosmic rays above 10 sigma (found against the median of the other frames),
# 96 % fail the star fit or are sharp.
PSF_TOLERANCE = 0.2
PSF_CHI2 = 40.0
PSF_STEPS = 9                                   # centres 1/16 pixel apart, 0 to 1/2
PSF_WIDTHS = 22                                 # widths 2 ** (1/8) apart, 1 to 6.2
PSF_COARSE_WIDTHS = (0, 3, 6, 9, 13, 17, 21)    # 1.0, 1.3, 1.7, 2.2, 3.1, 4.4, 6.2


@functools.lru_cache(maxsize=8)
def psf_bank(min_fwhm):
    """3x3 pixel-integrated circular Gaussians with peak 1, shape (W, O, O, 9): FWHM
    ``min_fwhm * 2 ** (k / 8)`` for k = 0 ... 21 (up to about six times ``min_fwhm``),
    centred at (oy, ox) = (i, j) / 16 pixel from the centre of the central pixel, i and j
    from 0 to 8: the lower-right quarter of the pixel (patches are flipped to match)."""
    from scipy.special import erf  # here: `import shiftstack_ccd` stays light

    edges = np.arange(-1.5, 2.0)                 # pixel edges of a 3-pixel row
    shifts = np.arange(PSF_STEPS) / (2 * (PSF_STEPS - 1))
    widths = min_fwhm * 2.0 ** (np.arange(PSF_WIDTHS) / 8)
    scale = widths / (2 * np.sqrt(2 * np.log(2))) * np.sqrt(2)
    # Integral of the Gaussian over each pixel, for every width and sub-pixel centre.
    profile = 0.5 * np.diff(erf((edges[None, None, :] - shifts[None, :, None])
                                / scale[:, None, None]), axis=2)        # (W, O, 3)
    bank = profile[:, :, None, :, None] * profile[:, None, :, None, :]  # (W, O, O, 3, 3)
    bank = bank.reshape(len(widths), PSF_STEPS, PSF_STEPS, 9)
    return (bank / bank.max(axis=-1, keepdims=True)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def star_sharpness(min_fwhm):
    """The largest (x - m1) / (m1 - m3) of a noiseless Gaussian star at least ``min_fwhm``
    wide, over sub-pixel centres, at the pixel that is its local maximum (a finely sampled
    7x7 model: m1 is the median of the 8 neighbours, m3 of the 24 pixels at distance 3).
    It is largest for the sharpest star centred on a pixel corner: 6.7 at FWHM 1.5."""
    from scipy.special import erf

    edges = np.arange(-3.5, 4.0)
    shifts = np.linspace(0.0, 0.5, 11)
    ring1 = [(dy, dx) for dy in range(-1, 2) for dx in range(-1, 2) if (dy, dx) != (0, 0)]
    ring3 = [tuple(o) for o in RING3]
    scale = min_fwhm / (2 * np.sqrt(2 * np.log(2))) * np.sqrt(2)
    profile = 0.5 * np.diff(erf((edges[None, :] - shifts[:, None]) / scale), axis=1)
    largest = 0.0
    for py in profile:
        for px in profile:
            star = np.outer(py, px)
            m1 = np.median([star[3 + dy, 3 + dx] for dy, dx in ring1])
            m3 = np.median([star[3 + dy, 3 + dx] for dy, dx in ring3])
            largest = max(largest, (star[3, 3] - m1) / (m1 - m3))
    return float(largest)


def psf_coarse():
    """Indices (k, i, j) into `psf_bank` of the coarse grid: 7 widths a factor ~1.3
    apart, centres 1/4 pixel apart with i <= j (patches are transposed to match)."""
    return np.array([(k, i, j) for k in PSF_COARSE_WIDTHS for i in (0, 4, 8)
                     for j in (0, 4, 8) if i <= j])


def psf_chi2(patch, var_bg, templates, inverse_gain):
    """Chi-square of the least-squares (amplitude >= 0) fit of each template to each patch.

    ``patch`` (n, 9), ``var_bg`` (n,), ``templates`` (m, 9) or (n, m, 9) -> (n, m)."""
    if templates.ndim == 2:
        # (np.dot rather than the @ operator: for these small products the latter went
        # through multithreaded BLAS, whose wake-up cost milliseconds on a busy machine)
        amp = np.dot(patch, np.ascontiguousarray(
            (templates / np.einsum("kp,kp->k", templates, templates)[:, None]).T))
        templates = templates[None]
    else:
        amp = (np.einsum("np,nmp->nm", patch, templates)
               / np.einsum("nmp,nmp->nm", templates, templates))
    np.maximum(amp, 0, out=amp)
    model = amp[:, :, None] * templates
    var = model * np.float32(PSF_TOLERANCE ** 2)
    var += inverse_gain
    var *= model
    var += var_bg[:, None, None]
    model -= patch[:, None, :]
    model *= model
    model /= var
    return model.sum(axis=2)


def psf_misfit(patches, var_bg, gain, min_fwhm=1.0, limit=None):
    """Smallest chi-square of a star fit to each 3x3 patch (background already removed).

    A star is a pixel-integrated Gaussian at least ``min_fwhm`` wide, centred anywhere in
    the central pixel, with its least-squares amplitude (at least 0); the variance of a
    pixel is the background's, plus the Poisson noise of the star when the gain is known,
    plus (PSF_TOLERANCE x star)^2 for the difference between a real PSF and a Gaussian.
    The search runs on a coarse grid of widths and centres, then on a grid four times finer
    around the best coarse fit of the patches that still fit badly (bright, sharp stars).

    With ``limit``, only whether the smallest chi-square exceeds it matters: the three
    coarse templates that fit best without weights are tried first, and patches that one
    of them fits within the limit (most stars) go no further. The values returned are then
    exact above the limit and an upper bound, still within it, below.
    """
    bank = psf_bank(float(min_fwhm))
    flat_bank = bank.reshape(-1, 9)
    coarse_index = psf_coarse()
    coarse = bank[tuple(coarse_index.T)]                               # (K, 9)
    # Flip each patch so that its light leans right and down, and more right than down,
    # where the coarse templates' centres are.
    patches = patches.reshape(-1, 3, 3).astype(np.float32)
    flip_x = patches[:, :, 0].sum(axis=1) > patches[:, :, 2].sum(axis=1)
    patches[flip_x] = patches[flip_x, :, ::-1]
    flip_y = patches[:, 0, :].sum(axis=1) > patches[:, 2, :].sum(axis=1)
    patches[flip_y] = patches[flip_y, ::-1, :]
    lean_x = patches[:, :, 2].sum(axis=1) - patches[:, :, 0].sum(axis=1)
    lean_y = patches[:, 2, :].sum(axis=1) - patches[:, 0, :].sum(axis=1)
    swap = lean_y > lean_x
    patches[swap] = patches[swap].transpose(0, 2, 1)
    patches = patches.reshape(-1, 9)
    var_bg = np.asarray(var_bg, dtype=np.float32)
    inverse_gain = np.float32(0 if gain is None else 1 / gain)

    out = np.full(len(patches), np.inf, dtype=np.float32)
    todo = np.arange(len(patches))
    if limit is not None and len(patches):
        norm = np.einsum("kp,kp->k", coarse, coarse)
        projection = np.dot(patches, np.ascontiguousarray((coarse / norm[:, None]).T))
        residual = (patches * patches).sum(axis=1)[:, None] - projection ** 2 * norm
        residual[projection < 0] = np.inf
        # Every pixel's variance is at least the background's, so the chi-square of a
        # template is at most its unweighted residual over var_bg: faint stars stop here.
        smallest = residual.min(axis=1)
        out[:] = smallest / var_bg
        todo = np.nonzero(out > limit)[0]
        best = np.argpartition(residual[todo], 3, axis=1)[:, :3]
        out[todo] = np.minimum(out[todo], psf_chi2(patches[todo], var_bg[todo],
                                                   coarse[best], inverse_gain).min(axis=1))
        todo = todo[out[todo] > limit]
    best = np.zeros(len(patches), dtype=int)
    for start in range(0, len(todo), 128):
        part = todo[start:start + 128]
        chi2 = psf_chi2(patches[part], var_bg[part], coarse, inverse_gain)
        best[part] = chi2.argmin(axis=1)
        out[part] = np.minimum(out[part], chi2.min(axis=1))
    if limit is not None:
        todo = todo[out[todo] > limit]
    # Refine: the 5 x 5 x 5 fine templates around the best coarse one.
    nw, no = bank.shape[:2]
    step = np.arange(-2, 3)
    for start in range(0, len(todo), 128):
        part = todo[start:start + 128]
        k, i, j = coarse_index[best[part]].T
        kk = np.clip(k[:, None, None, None] + step[None, :, None, None], 0, nw - 1)
        ii = np.clip(i[:, None, None, None] + step[None, None, :, None], 0, no - 1)
        jj = np.clip(j[:, None, None, None] + step[None, None, None, :], 0, no - 1)
        index = ((kk * no + ii) * no + jj).reshape(len(part), -1)
        chi2 = psf_chi2(patches[part], var_bg[part], flat_bank[index], inverse_gain)
        out[part] = np.minimum(out[part], chi2.min(axis=1))
    return out.astype(np.float64)
