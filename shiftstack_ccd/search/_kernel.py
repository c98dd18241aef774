# Licensed under a 3-clause BSD style license - see LICENSE
"""The search's core: the grid of motions, the tile kernel, the robust filter, merging.

Written by hand with numpy: KBMOD does this on GPUs, and nothing in the Python ecosystem
evaluates psi/phi likelihoods along trajectories on the CPU. The kernel sums integer-pixel
shifted slices of the psi and phi planes, one motion at a time, over a tile of starting
pixels small enough for the planes' slab and the accumulators to stay in the CPU cache;
that is what makes it as fast as a plain shift-and-add that streams whole frames.
"""

import numpy as np

__all__ = []


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


def search_tile(task):
    """Best first-pass score per starting pixel of one tile over a range of motions.

    ``task`` holds the slab of the per-frame score planes (``(n_frames, h + 2 * my,
    w + 2 * mx)``: the tile's starting pixels plus the largest offsets), the tile size and
    the motions' integer offsets (already relative to the slab). Per motion: one add per
    frame and one maximum, the same memory traffic as a plain shift-and-add, on a slab that
    stays in the CPU cache across motions. Returns the best score per pixel (the maximum
    over motions, so merging tasks split over motions gives the same answer as one task)
    and the motion that gave it (the last of equal ones).
    """
    planes = task["planes"]
    h, w = task["shape"]
    ox, oy = task["ox"], task["oy"]
    n_frames = planes.shape[0]
    best = np.full((h, w), -np.inf, np.float32)
    index = np.full((h, w), -1, np.int32)
    s = np.empty((h, w), np.float32)
    won = np.empty((h, w), bool)
    for m in range(ox.shape[0]):
        y, x = oy[m], ox[m]
        np.add(planes[0, y[0]:y[0] + h, x[0]:x[0] + w],
               planes[1, y[1]:y[1] + h, x[1]:x[1] + w], out=s)
        for i in range(2, n_frames):
            s += planes[i, y[i]:y[i] + h, x[i]:x[i] + w]
        np.maximum(best, s, out=best)
        np.equal(s, best, out=won)
        np.copyto(index, np.int32(task["first"] + m), where=won)
    return {"origin": task["origin"], "first": task["first"], "best": best, "index": index}


def sample(planes, x, y):
    """Bilinear values of ``planes`` (n, ny, nx) at per-frame positions ``x``, ``y`` (n, k).

    Outside the planes the value is 0 (no data, no weight).
    """
    n, ny, nx = planes.shape
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    out = np.zeros(x.shape, np.float64)
    frame = np.arange(n)[:, None] * np.ones_like(x0)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
            values = planes[frame, np.clip(yi, 0, ny - 1), np.clip(xi, 0, nx - 1)]
            out += np.where(inside, values * wx * wy, 0.0)
    return out


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
        med = np.nanmedian(flux, axis=0)
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


def spline_planes(planes):
    """Cubic-spline coefficients of each plane (float32), for `refine`."""
    from scipy.ndimage import spline_filter
    return np.stack([spline_filter(p, order=3, output=np.float32, mode="grid-constant")
                     for p in planes])


def cubic_values(coefficients, dt, p):
    """Values of each frame's plane along trajectories ``p`` = ``(x, y, vx, vy)`` arrays.

    Returns ``(n_frames, k)``; 0 outside the planes.
    """
    from scipy.ndimage import map_coordinates
    x, y, vx, vy = p
    out = np.empty((len(dt), x.size))
    for i, t in enumerate(dt):
        out[i] = map_coordinates(coefficients[i], [y + vy * t, x + vx * t], order=3,
                                 prefilter=False, mode="grid-constant")
    return out


def refine(psi_c, phi_c, dt, start, step, levels=4):
    """Sub-pixel positions and sub-grid rates that maximise the robust S/N, all at once.

    ``start``: ``(x, y, vx, vy)`` arrays from the grid; ``psi_c``, ``phi_c`` the planes'
    cubic-spline coefficients (`spline_planes`; linear interpolation would pin the optimum
    to pixel edges). Each level tries the 81 combinations of -h, 0, +h on the four
    parameters (h: half a pixel and half a grid step, halved at each level) and keeps the
    best robust S/N (`robust_values`: an outlier frame cannot pull a trajectory towards
    itself); four levels reach 1/16 pixel and 1/16 of the step, within one pixel and one
    step of the start. Returns the refined ``(x, y, vx, vy)`` and the per-frame psi and phi
    values there, ``(n_frames, k)`` each.
    """
    p = np.array(start, float)  # (4, k)
    k = p.shape[1]
    offsets = np.array(np.meshgrid(*[[-1, 0, 1]] * 4, indexing="ij")).reshape(4, -1)
    scale = np.array([0.5, 0.5, step / 2, step / 2])[:, None]
    best = None
    for _ in range(levels):
        trial = p[:, :, None] + (offsets * scale)[:, None, :]  # (4, k, 81)
        flat = trial.reshape(4, -1)
        psi_v, phi_v = cubic_values(psi_c, dt, flat), cubic_values(phi_c, dt, flat)
        phi_v = np.maximum(phi_v, 0)
        snr = robust_values(psi_v, phi_v)[0].reshape(k, -1)
        choice = np.argmax(snr, axis=1)
        p = trial[:, np.arange(k), choice]
        best = (psi_v.reshape(len(dt), k, -1)[:, np.arange(k), choice],
                phi_v.reshape(len(dt), k, -1)[:, np.arange(k), choice])
        scale = scale / 2
    return p, best[0], best[1]


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
