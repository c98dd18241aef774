# Licensed under a 3-clause BSD style license - see LICENSE
"""The search's core: the grid of motions, the tile kernel, the robust filter, merging.

Written by hand with numpy: KBMOD does this on GPUs, and nothing in the Python ecosystem
evaluates psi/phi likelihoods along trajectories on the CPU. The kernel sums integer-pixel
shifted slices of the per-frame S/N planes (``z = psi / sqrt(phi)``, capped and weighted),
one motion at a time, over a tile of starting pixels small enough for the planes' slab and
the accumulators to stay in the CPU cache; that is what makes it as fast as a plain
shift-and-add that streams whole frames. The candidates read psi and phi from ``z`` and
``phi`` (``psi = z * sqrt(phi)``).
"""

import numpy as np

from .._combine_block import median_of_valid

__all__ = []

#: sigma_G = 0.7413 (q75 - q25): a standard deviation that ignores outliers (KBMOD's sigma-G).
SIGMA_G = 0.741301109252801


def sigma_g(values):
    """Robust standard deviation from the inter-quartile range."""
    q25, q75 = np.percentile(values, [25, 75])
    return SIGMA_G * float(q75 - q25)


def motion_step(fwhm, dt, max_loss=0.1):
    """The rate step (pixels per hour) of the trial grid.

    A trajectory whose rate is wrong by ``dv`` (pixels/h) is off by ``|dv| * dt_i`` in frame
    ``i`` (``dt_i`` hours from the reference time); for a Gaussian PSF of this ``fwhm`` the
    matched-filter signal of that frame falls to ``exp(-d**2 / (4 sigma**2))``. The worst
    trajectory lies midway between grid points on both axes (``|dv| = step / sqrt(2)``);
    the step is the largest for which its mean signal over the frames is at least
    ``1 - max_loss`` of the true motion's.
    """
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    dt = np.asarray(dt, float)

    def loss(step):
        d2 = (step / np.sqrt(2) * dt) ** 2
        return 1 - np.mean(np.exp(-d2 / (4 * sigma ** 2)))

    span = float(np.max(np.abs(dt)))
    if span == 0:
        return np.inf
    lo, hi = 0.0, 100 * fwhm / span
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if loss(mid) <= max_loss else (lo, mid)
    return lo


def axis_grid(lo, hi, step):
    """Rates from ``lo`` to ``hi`` no more than ``step`` apart (both ends included)."""
    if hi - lo <= 0:
        return np.array([(lo + hi) / 2])
    n = int(np.ceil((hi - lo) / step - 1e-9)) + 1
    return np.linspace(lo, hi, n)


def offsets_for(motions, dt):
    """Integer pixel offsets ``(n_motions, n_frames)`` in x and y for each motion."""
    ox = np.rint(motions[:, 0:1] * dt[None, :]).astype(np.int64)
    oy = np.rint(motions[:, 1:2] * dt[None, :]).astype(np.int64)
    return ox, oy


def first_pass_slab(task):
    """The capped, weighted S/N planes a first-pass task reads, ``(n_frames, *size)``.

    ``task['z']`` (the calibrated per-frame S/N, ``psi / sqrt(phi)``, on the part of the
    slab inside the grid: one plane per frame) goes at ``task['at']`` of a slab of
    ``task['size']`` that is 0
    elsewhere (beyond the grid's edges), capped at +-``task['cap']`` and multiplied by each
    frame's ``task['weights']``. Made per task rather than once for the field: the first
    pass then needs no plane of the field beyond the S/N itself.
    """
    z = task["z"]
    h, w = z[0].shape
    slab = np.zeros((len(z),) + tuple(task["size"]), np.float32)
    y, x = task["at"]
    for i, plane in enumerate(z):
        view = slab[i, y:y + h, x:x + w]
        np.clip(plane, -task["cap"], task["cap"], out=view)
        view *= np.float32(task["weights"][i])
    return slab


def search_tile(task):
    """Best first-pass score per starting pixel of one tile over a range of motions.

    ``task`` holds what makes the slab of the per-frame score planes (`first_pass_slab`:
    ``(n_frames, h + 2 * my, w + 2 * mx)``, the tile's starting pixels plus the largest
    offsets), the tile size and the motions' integer offsets (already relative to the
    slab). Frames are taken in pairs
    (0 and 1, 2 and 3...): a pair's sum along a motion is the sum of the first frame and the
    second shifted by their relative offset, which few values cover for all the motions
    (7 x 7 over +-40 arcsec/h in 5-minute steps), so those sums are made once per tile
    (`pair_planes`). Per motion: then one add per pair and one maximum, half the memory
    traffic of a plain shift-and-add, on slabs that stay in the CPU cache across motions.
    Returns the best score per pixel (the maximum over motions, so merging tasks split over
    motions gives the same answer as one task: a motion's sum does not depend on the
    others) and the motion that gave it (the last of equal ones).
    """
    planes = first_pass_slab(task)
    h, w = task["shape"]
    ox, oy = task["ox"], task["oy"]
    terms = pair_planes(planes, ox, oy)
    best = np.full((h, w), -np.inf, np.float32)
    index = np.full((h, w), -1, np.int32)
    s = np.empty((h, w), np.float32)
    t = np.empty((h, w), np.float32)
    won = np.empty((h, w), bool)
    for m in range(ox.shape[0]):
        # s = term 0 + term 1 + ...; the first two are added into s (no copy of the first)
        pending, started = None, False
        for stack, which, a in terms:
            y, x = oy[m, a], ox[m, a]
            if which is None:  # a pair not made in advance: the same sum, made here
                y1, x1 = oy[m, a + 1], ox[m, a + 1]
                first, second = stack[a, y:y + h, x:x + w], stack[a + 1, y1:y1 + h, x1:x1 + w]
                if not started and pending is None:
                    np.add(first, second, out=s)
                    started = True
                    continue
                value = np.add(first, second, out=t)
            else:
                value = stack[which[m], y:y + h, x:x + w]
            if started:
                s += value
            elif pending is None:
                pending = value
            else:
                np.add(pending, value, out=s)
                started = True
        if not started:
            np.copyto(s, pending)
        np.maximum(best, s, out=best)
        np.equal(s, best, out=won)
        np.copyto(index, np.int32(task["indices"][m]), where=won)
    return {"origin": task["origin"], "first": task["first"], "best": best, "index": index}


def pair_planes(planes, ox, oy, budget=32 * 2**20):
    """The terms of the first pass's sums: pairs of frames where they pay, else frames.

    For frames ``a, a + 1`` (a = 0, 2, ...): their sums at every relative offset that the
    motions need, ``stack[k]`` being frame ``a`` plus frame ``a + 1`` shifted by the k-th
    (defined where both are; motion ``m`` only reads it there) and ``which[m]`` that k for
    each motion, when there are at most half as many offsets as motions and they take at
    most ``budget`` bytes. Returns a list of ``(stack, which, a)``: a motion's term is
    ``stack[which[m]]`` read at frame ``a``'s offset; for a pair not made in advance
    ``which`` is None and ``stack`` the planes (the caller adds the two frames, in the same
    order: a motion's sum has the same bits whatever the split of the motions); for a last
    odd frame, the frame itself.
    """
    n, ny, nx = planes.shape
    n_motions = ox.shape[0]
    alone = np.zeros(n_motions, np.intp)
    out = []
    for a in range(0, n, 2):
        if a + 1 < n:
            d = np.stack([oy[:, a + 1] - oy[:, a], ox[:, a + 1] - ox[:, a]], axis=1)
            offsets, which = np.unique(d, axis=0, return_inverse=True)
            if 2 * len(offsets) <= n_motions and len(offsets) * ny * nx * 4 <= budget:
                stack = np.empty((len(offsets), ny, nx), np.float32)
                for k, (dy, dx) in enumerate(offsets):
                    y0, y1 = max(0, -dy), ny - max(0, dy)
                    x0, x1 = max(0, -dx), nx - max(0, dx)
                    np.add(planes[a, y0:y1, x0:x1],
                           planes[a + 1, y0 + dy:y1 + dy, x0 + dx:x1 + dx],
                           out=stack[k, y0:y1, x0:x1])
                out.append((stack, which.ravel(), a))
                continue
            out.append((planes, None, a))
        else:
            out.append((planes[a:a + 1], alone, a))
    return out


def sample_psi_phi(z, phi, x, y):
    """psi and phi at whole-pixel per-frame positions (`sample`), from z and phi:
    ``psi = z * sqrt(phi)``."""
    phi_v = sample(phi, x, y)
    return sample(z, x, y) * np.sqrt(np.maximum(phi_v, 0)), phi_v


def sample(planes, x, y):
    """Values of ``planes`` (n planes of (ny, nx)) at whole-pixel per-frame positions ``x``,
    ``y`` (n, k).

    Outside the planes the value is 0 (no data, no weight).
    """
    ny, nx = planes[0].shape
    xi, yi = np.asarray(x, np.int64), np.asarray(y, np.int64)
    inside = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
    xi, yi = np.clip(xi, 0, nx - 1), np.clip(yi, 0, ny - 1)
    values = np.stack([plane[yi[i], xi[i]] for i, plane in enumerate(planes)])
    return np.where(inside, values, 0).astype(np.float64)


def robust_values(psi_v, phi_v, clip=4.0, tolerance=0.5, min_frames=3):
    """The robust S/N and flux of trajectories from their per-frame psi and phi values.

    ``psi_v``, ``phi_v``: ``(n_frames, k)``. Per frame, the flux ``a = psi / phi`` and its
    noise ``1 / sqrt(phi)`` (calibrated, see ``_prepare``). Frames whose flux departs from
    the median flux by more than ``clip`` times their noise plus ``tolerance`` times the
    median (a bright source's flux changes with the seeing) are left out: one bright pixel
    in one frame cannot make a candidate. KBMOD's sigma-G filter scales the cut by the
    spread of the values themselves, which two or three outliers among ten frames inflate;
    the noise here is known, so it is used instead. The median test is the other half:
    ``snr_median`` is the median flux over its noise (1.2533 times that of the mean), low
    for a trajectory that strings outliers of a few frames together.

    Returns ``snr, flux, flux_err, n_used, used, snr_median``.
    """
    valid = phi_v > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        flux = np.where(valid, psi_v / np.where(valid, phi_v, 1), np.nan)
        sigma = np.where(valid, 1 / np.sqrt(np.where(valid, phi_v, 1)), np.nan)
        # the median of the valid frames by one sort (`numpy.nanmedian` over a short axis
        # goes through `numpy.ma`, ten times slower: it was most of the refinement's time)
        med = median_of_valid(flux, valid.sum(axis=0))
        used = valid & (np.abs(flux - med) <= clip * sigma + tolerance * np.abs(med))
    s = np.where(used, psi_v, 0).sum(axis=0)
    f = np.where(used, phi_v, 0).sum(axis=0)
    f_all = np.where(valid, phi_v, 0).sum(axis=0)
    n_used = used.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where((f > 0) & (n_used >= min_frames), s / np.sqrt(f), -np.inf)
        flux_out = np.where(f > 0, s / f, np.nan)
        err = np.where(f > 0, 1 / np.sqrt(f), np.nan)
        snr_median = np.where(f_all > 0, med * np.sqrt(f_all) / 1.2533, -np.inf)
    return snr, flux_out, err, n_used, used, np.nan_to_num(snr_median, nan=-np.inf)


def cut_patches(planes, dt, start, half, margin=8):
    """Squares of the planes about each trajectory, for `spline_patches`.

    ``planes``: one (ny, nx) plane per frame; ``start``: ``(x, y, vx, vy)`` arrays (k
    trajectories). Per frame and trajectory, a square of ``2 * (half + margin) + 1``
    pixels centred on the trajectory's whole pixel
    there (0 outside the planes, as `scipy.ndimage`'s ``grid-constant`` mode). Returns the
    squares ``(n_frames, k, m, m)`` and each one's origin, ``x0, y0`` ``(n_frames, k)``.
    """
    x, y, vx, vy = start
    n, (ny, nx) = len(planes), planes[0].shape
    r = half + margin
    x0 = np.rint(x[None, :] + vx[None, :] * dt[:, None]).astype(np.int64) - r
    y0 = np.rint(y[None, :] + vy[None, :] * dt[:, None]).astype(np.int64) - r
    m = 2 * r + 1
    cut = np.zeros((n, len(x), m, m), np.float32)
    whole = (x0 >= 0) & (x0 <= nx - m) & (y0 >= 0) & (y0 <= ny - m)
    for i in range(n):  # patches inside the plane: rows of a sliding window, copied
        windows = np.lib.stride_tricks.sliding_window_view(planes[i], (m, m))
        cut[i, whole[i]] = windows[y0[i, whole[i]], x0[i, whole[i]]]
    fi, ki = np.nonzero(~whole)  # patches over an edge: 0 outside the plane
    if len(fi):
        grid = np.arange(m)
        xx = x0[fi, ki][:, None, None] + grid[None, None, :]
        yy = y0[fi, ki][:, None, None] + grid[None, :, None]
        inside = (xx >= 0) & (xx < nx) & (yy >= 0) & (yy < ny)
        yy, xx = np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)
        for i in np.unique(fi):
            j = fi == i
            cut[i, ki[j]] = np.where(inside[j], planes[i][yy[j], xx[j]], 0)
    return cut, x0, y0


def spline_patches(cut):
    """Cubic-spline coefficients of squares from `cut_patches`, for `refine`.

    A spline's prefilter is global but decays by 0.27 a pixel, so ``margin`` pixels beyond
    the ``half`` that `refine` samples the coefficients are those of the whole plane to
    3e-5 of the values: filtering patches instead of whole planes costs what the
    candidates need, not what the field holds. Returns the coefficients
    ``(n_frames, k, m, m)`` and the origins, as `cut_patches`.
    """
    from scipy.ndimage import spline_filter1d
    squares, x0, y0 = cut
    for axis in (-1, -2):
        squares = spline_filter1d(squares, order=3, axis=axis, output=np.float32,
                                  mode="mirror")
    return squares, x0, y0


def _bspline(t):
    """Cubic B-spline weights at taps -1, 0, 1, 2 for fractions ``t`` in [0, 1) (float32)."""
    t = t.astype(np.float32)
    s = 1 - t
    t2 = t * t
    t3 = t2 * t
    return (s * s * s / 6, (3 * t3 - 6 * t2 + 4) / 6, (-3 * t3 + 3 * t2 + 3 * t + 1) / 6,
            t3 / 6)


def trial_values(patches, dt, p, h):
    """Each frame's plane along the 81 trials about trajectories ``p`` = ``(x, y, vx, vy)``.

    ``patches`` from `spline_patches` (coefficients and origins); the trials are every
    combination of -1, 0, +1 times ``h = (h_position, h_rate)`` added to ``x``, ``y``,
    ``vx`` and ``vy`` (in this order, the last fastest). In frame ``i`` a trial's x is
    ``x + vx * dt_i`` and depends on two of the four offsets only (and y on the other two), so
    the spline's weights are computed for 9 positions per axis and combined, and the sum
    is made separably.
    Returns ``(n_frames, k, 81)``.
    """
    coefficients, x0, y0 = patches
    n, k, m, _ = coefficients.shape
    x, y, vx, vy = p
    hp, hv = h
    o = np.array([-1.0, 0.0, 1.0])
    t = dt[:, None, None, None]
    # (n, k, 3 position offsets, 3 rate offsets), in the patch's pixels
    u = (x[None, :, None, None] + hp * o[None, None, :, None]
         + (vx[None, :, None, None] + hv * o[None, None, None, :]) * t - x0[:, :, None, None])
    v = (y[None, :, None, None] + hp * o[None, None, :, None]
         + (vy[None, :, None, None] + hv * o[None, None, None, :]) * t - y0[:, :, None, None])
    iu, iv = np.floor(u), np.floor(v)
    wu, wv = _bspline(u - iu), _bspline(v - iv)
    # separably: first along x, on the few rows that the 9 y positions reach (their first
    # taps span a few rows), for the 9 x positions; then along y for the 81 trials. Half
    # the gathers of the 16 per trial of the direct sum, the same sums in the same order.
    left = iu.astype(np.int64) - 1  # (n, k, a, c): the first tap's column
    top = iv.astype(np.int64) - 1  # (n, k, b, d): the first tap's row
    first = top.min(axis=(2, 3))
    n_rows = int((top.max(axis=(2, 3)) - first).max()) + 4
    flat = coefficients.reshape(-1)
    base = (np.arange(n)[:, None] * k + np.arange(k)[None, :]) * m * m
    rows = base[:, :, None] + np.minimum(first[:, :, None] + np.arange(n_rows), m - 1) * m
    index = rows[:, :, :, None, None] + left[:, :, None, :, :]  # (n, k, rows, a, c)
    across = wu[0][:, :, None] * flat[index]
    for r in (1, 2, 3):
        across += wu[r][:, :, None] * flat[index + r]
    across = across.reshape(-1)
    cell = np.arange(n * k).reshape(n, k)
    row_of = (cell[:, :, None, None] * n_rows + (top - first[:, :, None, None])) * 9  # b, d
    index = (row_of[:, :, None, :, None, :]
             + (np.arange(3)[:, None] * 3 + np.arange(3)[None, :])[None, None, :, None, :, None])
    out = wv[0][:, :, None, :, None, :] * across[index]
    for q in (1, 2, 3):
        out += wv[q][:, :, None, :, None, :] * across[index + 9 * q]
    return out.reshape(n, k, 81)


def refine(z, phi, dt, start, step, levels=4, trail=None):
    """Sub-pixel positions and sub-grid rates that maximise the robust S/N, all at once.

    ``start``: ``(x, y, vx, vy)`` arrays from the grid; ``z``, ``phi`` the planes (the
    per-frame S/N and phi: ``psi = z * sqrt(phi)``, see ``_prepare.psi_phi``), which
    are sampled by cubic splines (`spline_patches`; linear interpolation would pin the
    optimum to pixel edges). Each level tries the 81 combinations of -h, 0, +h on the four
    parameters (h: half a pixel and half a grid step, halved at each level) and keeps the
    best robust S/N (`robust_values`: an outlier frame cannot pull a trajectory towards
    itself); four levels reach 1/16 pixel and 1/16 of the step, within one pixel and one
    step of the start. Returns the refined ``(x, y, vx, vy)`` and the per-frame psi and
    phi values there, ``(n_frames, k)`` each: with ``trail = (exposures, fwhm, longest)``
    (hours per frame, pixels, the longest trail in pixels), those of the trailed PSF
    (`trailed_values`).
    """
    p = np.array(start, float)  # (4, k)
    k = p.shape[1]
    if k == 0:
        return p, np.zeros((len(dt), 0)), np.zeros((len(dt), 0))
    reach = (1 - 0.5 ** levels) * (1 + step * np.max(np.abs(dt)))  # pixels, in any frame
    if trail is not None:  # and half the longest trail
        speed = np.hypot(np.abs(p[2]) + step, np.abs(p[3]) + step).max()
        reach += speed * np.max(trail[0]) / 2
    half = int(np.ceil(reach)) + 3  # the cubic taps reach two pixels beyond
    z_cut, x0, y0 = cut_patches(z, dt, p, half)
    phi_cut = cut_patches(phi, dt, p, half)[0]
    psi_c = spline_patches((z_cut * np.sqrt(np.maximum(phi_cut, 0)), x0, y0))
    phi_c = spline_patches((phi_cut, x0, y0))
    offsets = np.array(np.meshgrid(*[[-1, 0, 1]] * 4, indexing="ij")).reshape(4, -1)
    scale = np.array([0.5, 0.5, step / 2, step / 2])
    best = None
    for _ in range(levels):
        psi_v = trial_values(psi_c, dt, p, scale[1:3])
        phi_v = np.maximum(trial_values(phi_c, dt, p, scale[1:3]), 0)
        snr = robust_values(psi_v.reshape(len(dt), -1).astype(np.float64),
                            phi_v.reshape(len(dt), -1).astype(np.float64))[0].reshape(k, -1)
        choice = np.argmax(snr, axis=1)
        p = p + offsets[:, choice] * scale[:, None]
        best = (psi_v[:, np.arange(k), choice].astype(np.float64),
                phi_v[:, np.arange(k), choice].astype(np.float64))
        scale = scale / 2
    if trail is not None:
        best = trailed_values(psi_c, phi_c, dt, p, *trail)
    return p, best[0], best[1]


def patch_values(patches, x, y):
    """Cubic-spline values at positions ``x``, ``y`` ``(n_frames, k, t)`` (plane pixels)
    from `spline_patches` (the positions must lie within the patches)."""
    coefficients, x0, y0 = patches
    n, k, m, _ = coefficients.shape
    u, v = x - x0[:, :, None], y - y0[:, :, None]
    iu, iv = np.floor(u), np.floor(v)
    wu, wv = _bspline(u - iu), _bspline(v - iv)
    base = ((np.arange(n)[:, None, None] * k + np.arange(k)[None, :, None]) * m * m)
    start = base + (iv.astype(np.int64) - 1) * m + iu.astype(np.int64) - 1
    flat = coefficients.reshape(-1)
    out = np.zeros(u.shape)
    for q in range(4):
        row = np.zeros(u.shape)
        for r in range(4):
            row += wu[r] * flat[start + (q * m + r)]
        out += wv[q] * row
    return out


def trail_factor(length, fwhm, n_samples):
    """phi of the trailed PSF over phi of the PSF, for uniform noise: ``kappa``.

    The trailed PSF is the mean of ``n_samples`` Gaussians of this ``fwhm`` spread evenly
    along a trail of ``length`` pixels; the sum of its square over that of one Gaussian is
    the mean over pairs of samples of ``exp(-d**2 / (4 sigma**2))``, ``d`` their distance.
    """
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    tau = (np.arange(n_samples) + 0.5) / n_samples - 0.5
    d = (tau[:, None] - tau[None, :])[None, :, :] * np.asarray(length, float).reshape(-1, 1, 1)
    return np.mean(np.exp(-d ** 2 / (4 * sigma ** 2)), axis=(1, 2)).reshape(np.shape(length))


def trailed_values(psi_c, phi_c, dt, p, exposures, fwhm, longest=None, spacing=0.5, most=32):
    """psi and phi of the trailed PSF along trajectories ``p`` = ``(x, y, vx, vy)``.

    A source moving at ``(vx, vy)`` during an exposure of ``e`` hours is trailed over
    ``(vx, vy) * e``, centred on its mid-exposure position. The search's planes are filtered
    by the round PSF (psi = PSF * (D / V)); the trailed PSF is that PSF convolved with the
    trail, and convolution commutes, so its psi is the mean of psi along the trail (sampled
    every ``spacing`` pixels at most) and its phi that of phi times `trail_factor` (exact
    for noise that is uniform over the trail). For a trail shorter than a pixel this is the
    round PSF's within a few per cent. Every trail gets the same number of samples, set by
    ``longest`` (pixels; default the longest of these trails): give the longest any
    candidate can have, and a candidate's values do not depend on which others are
    scored with it. Returns ``(n_frames, k)`` each.
    """
    x, y, vx, vy = p
    e = np.asarray(exposures, float)[:, None]  # (n, 1)
    length = np.hypot(vx, vy)[None, :] * e  # (n, k) pixels
    longest = np.max(length) if longest is None else longest
    n_samples = int(min(most, max(1, np.ceil(longest / spacing))))
    tau = (np.arange(n_samples) + 0.5) / n_samples - 0.5
    px = (x[None, :] + vx[None, :] * dt[:, None])[:, :, None] \
        + (vx[None, :] * e)[:, :, None] * tau[None, None, :]
    py = (y[None, :] + vy[None, :] * dt[:, None])[:, :, None] \
        + (vy[None, :] * e)[:, :, None] * tau[None, None, :]
    psi_t = patch_values(psi_c, px, py).mean(axis=2)
    phi_t = np.maximum(patch_values(phi_c, px, py), 0).mean(axis=2) \
        * trail_factor(length, fwhm, n_samples)
    return psi_t, phi_t


def merge(x, y, vx, vy, snr, dt, radius, anywhere=True):
    """Indices of the candidates kept, best first, one per object.

    Greedily, from the highest S/N: a candidate whose trajectory comes within ``radius``
    pixels of a kept one's in any frame is the same object (a neighbouring trial motion,
    a neighbouring starting pixel, or a trajectory that crosses the object in some frames).
    With ``anywhere=False``, only one that is within ``radius`` in at least half of the
    frames (the same object on a neighbouring trajectory, not one that brushes it).
    Only kept candidates that can come that close are compared (a k-d tree on the
    positions at the reference time), so this is fast for many candidates.
    """
    from scipy.spatial import cKDTree
    order = np.argsort(-snr, kind="stable")
    if len(order) == 0:
        return np.zeros(0, int)
    px = x[:, None] + vx[:, None] * dt[None, :]
    py = y[:, None] + vy[:, None] * dt[None, :]
    # two trajectories within `radius` in some frame are within this at the reference time
    reach = radius + (np.ptp(vx) + np.ptp(vy)) * np.max(np.abs(dt)) + 1e-9
    tree = cKDTree(np.column_stack([x, y]))
    kept = np.zeros(len(x), bool)
    out = []
    for j in order:
        near = [k for k in tree.query_ball_point((x[j], y[j]), reach) if kept[k]]
        if near:
            distance = np.hypot(px[near] - px[j], py[near] - py[j])
            distance = distance.min(axis=1) if anywhere else np.median(distance, axis=1)
            if np.any(distance < radius):
                continue
        kept[j] = True
        out.append(j)
    return np.asarray(out, dtype=int)
