# Licensed under a 3-clause BSD style license - see LICENSE
"""Frames -> psi/phi planes on one fixed sky grid, for the motion search.

Each frame, in its own pixels: a local background (`box_statistics`) is subtracted and, if
the frame has no uncertainty, its local robust rms becomes one (a raw frame's global scatter
is several times its pixel noise: overscan, vignetting, dust); cosmic rays and hot pixels
are masked (`clean_cosmic_rays`). Then it is resampled once onto the fixed grid (by block
translations, see `_resample`, or `resample_to_target`). The static sky, the clipped mean
of the frames on that grid (`combine_frames`' rules, on row blocks), is subtracted from
each; the cores of bright stars, which never subtract cleanly, are masked. Each difference
image D with variance V and mask M gives, as in KBMOD,

    psi = PSF * (D / V),     phi = PSF^2 * (1 / V)     (masked pixels: 1/V = 0)

so that along a trajectory ``sum(psi) / sum(phi)`` is the PSF-fitted flux and
``sum(psi) / sqrt(sum(phi))`` its S/N. Resampling correlates the noise and a noise model
is never exact, so each frame's planes are calibrated on the data: the robust standard
deviation ``c`` of ``psi / sqrt(phi)`` over the frame (1 for exact white noise) divides psi
and phi by ``c**2``, which makes every frame's S/N have unit scatter (`psi_phi`, in boxes).
The search keeps per frame the calibrated S/N ``z = psi / sqrt(phi)`` and ``phi``, written
over the frame's resampled data and noise.
"""

import logging

import numpy as np
from astropy.nddata import CCDData, StdDevUncertainty, VarianceUncertainty

from .._utils import check_finite_fraction, frame_label
from ..exceptions import FrameError
from ._kernel import SIGMA_G

__all__ = []

log = logging.getLogger(__name__)

#: The standard deviation given to bad pixels on their way through the resampling.
_HUGE = np.float32(1e15)


def box_statistics(image, good, box, min_fraction=0.3):
    """Median and sigma-G of an image in boxes: two small arrays, one value per box.

    Written here rather than through `photutils.background.Background2D` (which does the same
    with more options) because it runs three times per frame in the search and this is
    several times faster: one sort per box, and only the maps that are needed are
    interpolated to every pixel (`upsample`). Boxes with less than ``min_fraction`` good
    pixels take the median of the other boxes. Returns ``median, sigma, box``.
    """
    ny, nx = image.shape
    box = int(max(8, min(box, ny, nx)))
    nby, nbx = -(-ny // box), -(-nx // box)
    padded = np.full((nby * box, nbx * box), np.nan, np.float32)
    padded[:ny, :nx] = np.where(good, image, np.nan)
    blocks = padded.reshape(nby, box, nbx, box).transpose(0, 2, 1, 3).reshape(nby, nbx, -1)
    blocks = np.sort(blocks[:, :, ::2], axis=2)  # every other pixel: plenty for a box
    count = np.sum(np.isfinite(blocks), axis=2)

    def quantile(q):
        index = np.clip(np.rint(q * (count - 1)).astype(int), 0, blocks.shape[2] - 1)
        return np.take_along_axis(blocks, index[:, :, None], axis=2)[:, :, 0]
    median = quantile(0.5)
    sigma = SIGMA_G * (quantile(0.75) - quantile(0.25))
    enough = count >= min_fraction * blocks.shape[2]
    if not enough.any():
        raise FrameError("too few good pixels to measure the local background and noise")
    median = np.where(enough, median, np.median(median[enough]))
    sigma = np.where(enough, sigma, np.median(sigma[enough]))
    return median, sigma, box


def _axis_weights(n, nb, box):
    """For ``n`` pixels: the box centre at or before each (clamped) and the fraction of the
    way to the next one (0 before the first centre and after the last)."""
    pos = (np.arange(n) + 0.5) / box - 0.5
    i0 = np.clip(np.floor(pos).astype(int), 0, nb - 1)
    return i0, np.clip(pos - i0, 0, 1).astype(np.float32)


def upsample(values, box, shape):
    """Bilinear interpolation of box values (at the box centres) onto every pixel.

    Along y on the small (ny, n_boxes) array, then along x one run of columns between two
    box centres at a time (``a + (b - a) * f`` with ``a``, ``b`` a column each): the output
    is written once, without full-size gathers or temporaries. (A matrix product would
    be faster alone, but a multi-threaded BLAS spins its threads on a shared machine.)
    """
    ny, nx = shape
    values = np.asarray(values, np.float32)
    nby, nbx = values.shape
    i0, f = _axis_weights(ny, nby, box)
    a, b = values[i0], values[np.minimum(i0 + 1, nby - 1)]
    rows = a + (b - a) * f[:, None]
    j0, g = _axis_weights(nx, nbx, box)
    out = np.empty((ny, nx), np.float32)
    edges = np.flatnonzero(np.diff(j0)) + 1
    for start, stop in zip(np.r_[0, edges], np.r_[edges, nx]):
        k = j0[start]
        a, b = rows[:, k:k + 1], rows[:, min(k + 1, nbx - 1):min(k + 1, nbx - 1) + 1]
        np.multiply(b - a, g[None, start:stop], out=out[:, start:stop])
        out[:, start:stop] += a
    return out


def _local_background(data, bad, box):
    """Local sky and pixel noise maps of a frame in its own pixels.

    The noise comes from differences of neighbouring pixels (divided by sqrt(2)), whose
    robust scatter ignores the steep vignetting and dust-ring gradients of a raw frame that
    inflate a plain local rms several times near its edges.
    """
    background, _, size = box_statistics(data, ~bad, box)
    diff = np.zeros_like(data)
    np.subtract(data[:, 1:], data[:, :-1], out=diff[:, 1:])
    diff_good = ~bad
    diff_good[:, 1:] &= ~bad[:, :-1]
    diff_good[:, 0] = False
    _, noise, _ = box_statistics(diff, diff_good, box)
    return (upsample(background, size, data.shape),
            upsample(noise / np.sqrt(2), size, data.shape))


def prepare_frame(job):
    """One frame in its own pixels: background removed, noise attached, cosmic rays masked.

    ``job`` is ``(index, frame, options)``; returns the frame resampled onto the grid: by
    block translations (`_resample`) when the frame maps onto the grid as one to within
    0.01 pixel, else through `resample_to_target`'s warp path. ``data`` and ``std`` are NaN
    where masked (no separate mask: the NaN are the mask).
    """
    from ..cosmicray import clean_cosmic_rays
    from ..resample import flux_convention
    from ._lines import bad_lines
    from ._resample import resample_blocks, translations
    index, frame, opts = job
    label = frame_label(frame, index)
    frame = crop_to_grid(trim(frame), opts["wcs"], opts["shape"])
    data = np.asarray(frame.data, dtype=np.float32)
    good = check_finite_fraction(frame, label)
    bad = ~good | _saturated(frame, data, opts["saturation_grow"])
    del good
    background, rms = _local_background(data, bad, opts["background_box"])
    if frame.uncertainty is not None:
        try:
            variance = frame.uncertainty.represent_as(VarianceUncertainty).array
            std = np.sqrt(variance).astype(np.float32)
        except Exception as exc:  # astropy raises several types for unconvertible ones
            raise FrameError(f"{label}: its uncertainty cannot be converted to a variance: "
                             f"{exc}") from None
    else:
        std = rms
    if not np.any(np.isfinite(std) & (std > 0)):
        raise FrameError(f"{label}: its noise cannot be estimated (constant frame?).")
    bad |= ~((std > 0) & (std < np.inf))  # NaN fails both
    if opts.get("bad_lines"):  # dithered frames: lines the static sky will not cancel
        bad |= bad_lines(data - background, std, bad)
    sky = np.subtract(data, background, out=background)  # in place: no more copies
    sky[bad] = 0
    n_cr = 0
    if opts["cosmic_rays"]:
        # without the mask (the bad pixels are at the sky level, 0): the detector's
        # masked-neighbour path is many times slower and the bad pixels stay masked anyway
        work = CCDData(sky, unit=frame.unit, wcs=frame.wcs,
                       uncertainty=StdDevUncertainty(np.where(std > 0, std, np.inf)),
                       meta=frame.meta)
        cleaned = clean_cosmic_rays(work, method="median")
        n_cr = int(cleaned.meta.get("CRNFLAG", 0))
        hits = np.asarray(cleaned.mask, bool)
        del work, cleaned  # their planes are the frame's size: not kept while resampling
        bad |= hits
        sky[hits] = 0  # a cosmic ray's ringing through the cubic spline is not sky either
    found = translations(frame.wcs.celestial, opts["wcs"], frame.shape, opts["shape"])
    if found is not None:
        blocks, ratio = found
        variance = np.square(std)
        variance[bad] = 0
        del std, rms
        out, variance, mask = resample_blocks(sky, variance, bad, blocks, opts["shape"])
        if flux_convention(frame.unit) != "surface":  # counts per pixel (or unknown)
            out *= np.float32(ratio)
            variance *= np.float32(ratio * ratio)
        out_std = np.sqrt(variance, out=variance)
        path = "block translations"
    else:
        out, out_std, mask = _warp(frame, sky, std, bad, opts)
        path = "warp"
    log.debug("%s: prepared (%s), %d cosmic-ray pixels masked", label, path, n_cr)
    return {"data": out, "std": out_std, "n_cr": n_cr}


def _warp(frame, sky, std, bad, opts):
    """`resample_to_target`'s bicubic warp: data, std and mask on the grid (NaN if masked).

    Bad pixels go through the resampling as sky (0) with a huge variance rather than as a
    mask: the output pixels they touch get a weight of ~0, as masked ones would, without
    the slow filling of masked pixels that a spline needs.
    """
    from ..resample import resample_to_target
    work = CCDData(sky, unit=frame.unit, wcs=frame.wcs, meta=frame.meta,
                   uncertainty=StdDevUncertainty(np.where(bad, _HUGE, std)
                                                 .astype(np.float32)))
    resampled = resample_to_target(work, opts["wcs"], opts["shape"],
                                   interpolation="bicubic")
    out_std = resampled.uncertainty.array
    mask = np.asarray(resampled.mask, bool) | ~(out_std < _HUGE * 1e-9)
    return (np.where(mask, np.nan, resampled.data).astype(np.float32),
            np.where(mask, np.nan, out_std).astype(np.float32), mask)


def trim(frame):
    """The frame cut to its header's ``TRIMSEC`` (overscan and prescan are not sky)."""
    section = str(frame.meta.get("TRIMSEC", "") or "").strip()
    try:
        xs, ys = section.strip("[]").split(",")
        x0, x1 = (int(v) for v in xs.split(":"))
        y0, y1 = (int(v) for v in ys.split(":"))
    except ValueError:  # no section, or not one this reader understands: use every pixel
        return frame
    ny, nx = frame.shape
    # a section describes the file's array: a frame already cut is left alone
    if (frame.meta.get("NAXIS1"), frame.meta.get("NAXIS2")) != (nx, ny) \
            or not (1 <= x0 < x1 <= nx and 1 <= y0 < y1 <= ny):
        return frame
    return frame[y0 - 1:y1, x0 - 1:x1]


def _saturated(frame, data, grow):
    """Saturated pixels (and bleed trails, which are saturated too), grown.

    The level is ``SATURATE``/``SATLEVEL``/``SATURATN`` from the header, else 98 % of the
    maximum when at least ten pixels lie within 0.5 % of it (a plateau of saturated stars).
    """
    level = None
    for key in ("SATURATE", "SATLEVEL", "SATURATN"):
        try:
            level = float(frame.meta[key])
            break
        except (KeyError, TypeError, ValueError):
            continue
    finite = data[np.isfinite(data)]
    if level is None and finite.size:
        top = float(finite.max())
        if top > 0 and np.count_nonzero(finite >= 0.995 * top) >= 10:
            level = 0.98 * top
    if level is None:
        return np.zeros(data.shape, bool)
    from scipy.ndimage import maximum_filter
    with np.errstate(invalid="ignore"):
        saturated = data >= level
    if not saturated.any():
        return saturated
    return maximum_filter(saturated, size=2 * int(np.ceil(grow)) + 1)


def crop_to_grid(frame, wcs, shape, margin=8):
    """The part of a frame that can fall on the grid (saves resampling the rest)."""
    ny, nx = shape
    edge = np.linspace(-0.5, 1, 9)
    border = np.concatenate([np.column_stack([edge * nx, np.full(9, -0.5)]),
                             np.column_stack([edge * nx, np.full(9, ny - 0.5)]),
                             np.column_stack([np.full(9, -0.5), edge * ny]),
                             np.column_stack([np.full(9, nx - 0.5), edge * ny])])
    x, y = frame.wcs.world_to_pixel(wcs.pixel_to_world(border[:, 0], border[:, 1]))
    x, y = np.asarray(x), np.asarray(y)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return frame
    fy, fx = frame.shape
    x0, x1 = max(0, int(np.floor(x.min())) - margin), min(fx, int(np.ceil(x.max())) + margin)
    y0, y1 = max(0, int(np.floor(y.min())) - margin), min(fy, int(np.ceil(y.max())) + margin)
    if x1 - x0 < 2 * margin or y1 - y0 < 2 * margin or (x0, y0, x1, y1) == (0, 0, fx, fy):
        return frame
    return frame[y0:y1, x0:x1]


def static_sky(prepared, min_frames=3, rows=64):
    """The static sky on the grid: the clipped mean of the frames (`combine_frames`' rules).

    A mean, not a median: along a motion of zero, a static source then cancels exactly
    (the median of a star whose seeing changes is not its mean, and the difference would
    add up over the frames). Values more than 3 sigma above the median (a mover, a cosmic
    ray left over) are left out. NaN where fewer than ``min_frames`` cover. Returns
    ``template, noise``: the template and the mean single-frame noise at each pixel.

    The combine's own block arithmetic (``_combine_block``, the same clipping and mean as
    `combine_frames` with ``sigma_clip=True, sigma_low=10, sigma_high=3``) is called on
    blocks of ``rows`` rows of the frames' arrays: `combine_frames` would first wrap each
    frame in a `~astropy.nddata.CCDData` whose uncertainty copies the array, a second
    full set of the frames' planes for nothing.
    """
    from .._combine_block import combine_block
    n = len(prepared)
    ny, nx = prepared[0]["data"].shape
    template = np.full((ny, nx), np.nan, np.float32)
    noise = np.full((ny, nx), np.nan, np.float32)
    ones = np.ones(n)
    need = min(min_frames, n)
    for r0 in range(0, ny, rows):
        r1 = min(ny, r0 + rows)
        h0, h1 = max(0, r0 - 1), min(ny, r1 + 1)  # a halo of one row: the clip's gradient
        data = np.stack([p["data"][h0:h1] for p in prepared])
        std = np.stack([p["std"][h0:h1] for p in prepared])
        bad = ~np.isfinite(data)
        core = slice(r0 - h0, r1 - h0)
        good = ~bad[:, core] & np.isfinite(data[:, core])
        count = good.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            noise[r0:r1] = np.where(count > 0, np.where(good, std[:, core], 0).sum(axis=0)
                                    / np.maximum(count, 1), np.nan)
        value, _, coverage, _, _ = combine_block(data, std * std, bad, ones, "mean", False,
                                                 n, 1.0, (10.0, 3.0, 1.0), core)
        template[r0:r1] = np.where((coverage >= need) & np.isfinite(value), value, np.nan)
    return template, noise


def keep_slow_movers(template, prepared, noise, fwhm, star_sigma, vary_sigma=4.0):
    """The static sky without slow movers, and the mask of bright stars.

    A slow mover sits on the same pixels in many frames and would be in the median, hence
    subtracted from itself; a static source is in every frame. So where at least two frames
    (and a fifth of them) are below the median by more than ``vary_sigma`` times the noise
    and below 30 % of it (the mover has left the pixel; a star's core changes less with the
    seeing, and one odd frame is a cosmic-ray repair or a bad pixel) the template is the
    sky, 0, on that pixel and its neighbours within ``fwhm / 2``.

    Bright stars (connected pixels above ``star_sigma`` times the single-frame noise whose
    brightest pixel does not vary) never subtract cleanly: they are masked, grown by the
    FWHM plus two FWHM per decade of peak brightness above the threshold, and the template
    is left alone on them.

    Returns ``template, stars, n_varying``.
    """
    from scipy.ndimage import label
    holes = ~np.isfinite(template)
    low = np.zeros(template.shape, np.int16)
    with np.errstate(invalid="ignore"):
        for p in prepared:
            value = p["data"]  # NaN where masked: no comparison holds there
            low += (template - value > vary_sigma * noise) & (value < 0.3 * template)
        varying = (low >= max(2, int(np.ceil(0.2 * len(prepared))))) & ~holes
        bright = template > star_sigma * noise
    labels, n = label(bright)
    stars = np.zeros(template.shape, bool)
    if n:
        peaks = component_peaks(template, labels, n)
        static = np.array([False] + [not varying[p] for p in peaks])
        # brighter stars have wider wings and halos: grow by one FWHM plus two per decade
        peak_sigma = np.array([1.0] + [template[p] / noise[p] for p in peaks])
        radius = fwhm * (1 + 2 * np.log10(np.maximum(peak_sigma / star_sigma, 1)))
        radius[~static] = -1
        core = static[labels]
        if core.any():
            stars = _grow_cores(core, labels, radius)
    varying = _grow(varying & ~stars, max(1.0, fwhm / 2)) & ~holes & ~stars
    return np.where(varying, 0, template).astype(np.float32), stars, int(varying.sum())


def component_peaks(image, labels, n):
    """The position ``(y, x)`` of the maximum of ``image`` in each of the ``n`` labelled
    components (`scipy.ndimage.maximum_position` on the component's box alone: its
    whole-image form sorts every pixel of the image, several full-size index arrays)."""
    from scipy.ndimage import find_objects
    peaks = []
    for i, box in enumerate(find_objects(labels, n), start=1):
        part = np.where(labels[box] == i, image[box], -np.inf)
        y, x = np.unravel_index(np.argmax(part), part.shape)
        peaks.append((box[0].start + int(y), box[1].start + int(x)))
    return peaks


def _grow_cores(core, labels, radius, tile=256):
    """Pixels nearer a core pixel than that core's star's ``radius`` (by label).

    The nearest core pixel of each pixel (`scipy.ndimage.distance_transform_edt`), found
    tile by tile with a margin of the largest radius: a core farther than that cannot mask
    the pixel, so the answer is the whole image's, without its full-size distance and
    index planes.
    """
    from scipy.ndimage import distance_transform_edt
    ny, nx = core.shape
    reach = int(np.ceil(max(float(radius.max()), 0))) + 1
    stars = np.zeros(core.shape, bool)
    for y0 in range(0, ny, tile):
        for x0 in range(0, nx, tile):
            ya, yb = max(0, y0 - reach), min(ny, y0 + tile + reach)
            xa, xb = max(0, x0 - reach), min(nx, x0 + tile + reach)
            part = core[ya:yb, xa:xb]
            if not part.any():
                continue
            distance, (iy, ix) = distance_transform_edt(~part, return_indices=True)
            grown = distance <= radius[labels[ya:yb, xa:xb][iy, ix]]
            stars[y0:y0 + tile, x0:x0 + tile] = grown[y0 - ya:y0 - ya + tile,
                                                      x0 - xa:x0 - xa + tile]
    return stars


def _grow(mask, radius):
    from scipy.ndimage import binary_dilation
    if radius <= 0 or not mask.any():
        return mask
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return binary_dilation(mask, structure=np.hypot(xx, yy) <= radius)


def _subsampled_median(values, keep, step=3):
    """Median of ``values[keep]`` on one pixel in ``step**2`` when that leaves 1000 or more
    (a typical value of a smooth plane needs no more), else on all of them; NaN if none."""
    part, inside = values[::step, ::step], keep[::step, ::step]
    chosen = part[inside] if np.count_nonzero(inside) >= 1000 else values[keep]
    return float(np.median(chosen)) if chosen.size else float("nan")


def psi_phi(difference, std, mask, fwhm, calibrate_on, box=128, out=None):
    """KBMOD's psi and phi of one frame, calibrated to unit S/N scatter, as S/N and phi.

    The per-frame S/N ``psi / sqrt(phi)`` is measured in boxes of ``box`` pixels (its
    median and sigma-G over the quiet pixels, `~photutils.background.Background2D`):
    ``psi`` and ``phi`` are corrected so that it has zero mean and unit scatter locally,
    whatever the noise model missed (correlations from resampling, background residuals).
    Returns ``z, phi, c``: the calibrated S/N plane ``z = psi / sqrt(phi)`` (written into
    ``out`` if given, which may be ``difference`` itself), the calibrated phi (0 where
    the frame does not cover: there psi and
    z are 0 too) and the median scatter factor. ``psi = z * sqrt(phi)``: the search keeps
    these two planes, the first pass reads ``z`` and the candidates ``psi`` from them.
    """
    from scipy.ndimage import gaussian_filter
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    good = ~mask & np.isfinite(difference) & np.isfinite(std) & (std > 0)
    weight = np.zeros(difference.shape, np.float32)
    np.divide(np.float32(1), np.square(std, where=good, out=np.ones_like(weight)),
              out=weight, where=good)
    signal = np.zeros(difference.shape, np.float32)
    np.multiply(difference, weight, out=signal, where=good)
    psi = gaussian_filter(signal, sigma, mode="constant", truncate=4.0, output=signal)
    # PSF^2 of a unit-sum Gaussian is a Gaussian of sigma/sqrt(2) times 1/(4 pi sigma^2)
    phi = gaussian_filter(weight, sigma / np.sqrt(2), mode="constant", truncate=4.0,
                          output=weight)
    phi /= np.float32(4 * np.pi * sigma ** 2)
    positive = phi > 0
    covered = phi > 0.5 * np.median(phi[positive]) if positive.any() else positive
    use = covered & calibrate_on
    if use.sum() < 100:
        raise FrameError("too few unmasked pixels to calibrate the noise of a frame "
                         f"({int(use.sum())}).")
    phi[~covered] = 0
    root = np.sqrt(phi)
    z = out if out is not None else np.empty(phi.shape, np.float32)
    z[...] = 0
    np.divide(psi, root, out=z, where=covered)  # the uncalibrated S/N
    mean, c, size = box_statistics(z, use, box)
    fine = np.isfinite(c) & (c > 0)
    c = np.where(fine, c, np.median(c[fine]) if fine.any() else 1.0)
    mean, c = upsample(mean, size, z.shape), upsample(c, size, z.shape)
    z -= mean
    z /= c
    z[~covered] = 0
    phi /= c * c
    return z, phi, _subsampled_median(c, use)


def aperture_correction(template, noise, fwhm, min_sigma=20.0, n_stars=30):
    """Total flux over Gaussian-PSF-fitted flux, measured on the static sky's stars.

    The search's filter is a Gaussian of the stars' FWHM; real PSFs have wider wings
    (a Moffat of beta 3 puts about a quarter of its light outside the Gaussian fit), so the
    fitted flux is low by a factor that this ratio, the median over isolated unsaturated
    stars of their flux within 3 FWHM over their fitted flux, corrects. Returns 1 (and
    says so) when fewer than 3 stars can be measured.
    """
    from scipy.ndimage import gaussian_filter, label, maximum_filter
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    finite = np.isfinite(template)
    with np.errstate(invalid="ignore"):
        bright = (template > min_sigma * noise) & finite
    labels, n = label(bright)
    if n == 0:
        log.info("search: no star to measure the flux correction on; fluxes are Gaussian-fit")
        return 1.0
    peaks = component_peaks(template, labels, n)
    order = np.argsort([-template[p] for p in peaks])
    r_ap, r_in, r_out = 3 * fwhm, 4 * fwhm, 6 * fwhm
    half = int(np.ceil(r_out)) + 1
    ny, nx = template.shape
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    rr = np.hypot(xx, yy)
    centres = np.array(peaks, float)
    ratios = []
    for k in order:
        y, x = peaks[k]
        if not (half <= y < ny - half and half <= x < nx - half):
            continue
        others = np.hypot(*(centres - (y, x)).T)
        if np.sum(others < r_out + 2 * fwhm) > 1:  # itself, and nothing else near
            continue
        cut = template[y - half:y + half + 1, x - half:x + half + 1]
        if not np.all(np.isfinite(cut[rr <= r_out])):  # saturated (masked) or at an edge
            continue
        sky = np.median(cut[(rr >= r_in) & (rr <= r_out)])
        total = np.sum(cut[rr <= r_ap] - sky)
        # the Gaussian fit about the peak, filtered on the cut alone (the filter reaches
        # 4 sigma, well inside it): not a filtered copy of the whole field in float64
        fitted = gaussian_filter(np.where(finite[y - half:y + half + 1, x - half:x + half + 1],
                                          cut, 0).astype(np.float64), sigma, mode="constant",
                                 truncate=4.0) * (4 * np.pi * sigma ** 2)
        fit = maximum_filter(fitted[half - 1:half + 2, half - 1:half + 2], size=3).max() \
            - sky * 4 * np.pi * sigma ** 2 * 1.0
        if fit > 0:
            ratios.append(total / fit)
        if len(ratios) >= n_stars:
            break
    if len(ratios) < 3:
        log.info("search: %d stars to measure the flux correction on; fluxes are "
                 "Gaussian-fit", len(ratios))
        return 1.0
    return float(np.median(ratios))
