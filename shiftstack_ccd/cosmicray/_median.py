# Licensed under a 3-clause BSD style license - see LICENSE
"""The ring-median cosmic-ray detector (private): prescreen, test, grow, repair; saturation
and the measured-noise check."""

import logging

import numpy as np

from ._psf import PSF_CHI2, SHARP_NOISE, psf_misfit
from ._ring import (BOX3, BOX5, BROAD_VAR, RESIDUAL_VAR, RING1, RING3, gather, masked_median,
                    median24, median8, row_nanmedian)


log = logging.getLogger(__name__)


# Growing: a wing pixel stands above its unflagged neighbours by this fraction of its height.
GROW_CONTRAST = 0.5
# Growing candidates must stand this fraction of grow_threshold above the background of
# the hit they touch (a cheap preselection; the growing test then uses their own).
GROW_PREFILTER = 0.6
# Measured / predicted scatter beyond this factor (either way) is warned about.
NOISE_TOLERANCE = 1.3
# A plateau of this many pixels within 0.5 % of the maximum means saturation.
SATURATION_COUNT = 10


def min5(a, pair, out):
    """Smallest of five neighbours (up-left, up, up-right, left, right) of the interior of
    ``a`` (shape (m + 2, n + 2)), into ``out`` (m, n), with 3 array operations: the minimum
    of the left and right neighbours of each row (into ``pair``, (m + 1, n)) serves twice."""
    np.minimum(a[:-1, :-2], a[:-1, 2:], out=pair)               # rows 0 .. m
    np.minimum(pair[:-1], a[:-2, 1:-1], out=out)                # the row above, all three
    np.minimum(out, pair[1:], out=out)                          # and left and right


def bound_test(a, var, slope, offset, out, buffers):
    """The prescreen's test on the interior of ``a`` (shape (m + 2, n + 2)): local maximum
    among the four edge neighbours, and pixel minus the smallest of five neighbours above
    the threshold, squared (``slope * level + offset``, or ``var`` times ``offset``).
    Writes the verdict, shape (m, n), into ``out``."""
    h, lo, ex, t, pair = buffers
    c = a[1:-1, 1:-1]
    up, down, left, right = a[:-2, 1:-1], a[2:, 1:-1], a[1:-1, :-2], a[1:-1, 2:]
    np.maximum(up, down, out=h)          # local maximum among the edge neighbours
    np.maximum(h, left, out=h)
    np.maximum(h, right, out=h)
    np.greater_equal(c, h, out=out)
    min5(a, pair, lo)
    np.subtract(c, lo, out=ex)           # >= 0 wherever out is True
    if var is not None:                  # the variance of the same five neighbours
        min5(var, pair, lo)
        lo *= offset
    else:
        # (a negative level only makes the bound looser, so it is not clipped at 0)
        lo *= slope
        lo += offset
    np.multiply(ex, ex, out=ex)
    np.greater(ex, lo, out=t)
    out &= t


def prescreen(work, noise, threshold, rows=32):
    """Local maxima that can possibly pass the ring-median test: a cheap full-frame pass.

    The exact test needs the median of the eight neighbours, m. The smallest of any five of
    them is a lower bound of m (five values out of eight always include one of the four
    smallest), and the noise grows with the level, so ``x - min5 > threshold * sigma(min5)``
    keeps every pixel that ``x - m > threshold * sigma(m)`` would; a local maximum is also
    at least as bright as its four edge neighbours. This costs a dozen array operations
    instead of a median filter (done in blocks of rows that stay in the CPU cache); the
    exact test then runs only on the few pixels that survive. The border is tested on thin
    mirrored strips.

    Returns the candidates' coordinates and the maximum of each block of ``rows`` rows
    (their inner columns) followed by those of the first and last rows and columns.
    """
    ny, nx = work.shape
    scale = threshold * threshold * RESIDUAL_VAR
    variance = noise.variance if noise.source == "uncertainty" else None
    if noise.source == "model":
        slope, offset = scale / noise.gain, scale * (noise.read_noise / noise.gain) ** 2
    elif noise.source == "data":
        slope, offset = 0.0, scale * noise.constant
    else:
        slope, offset = 0.0, scale

    def buffers(shape):
        dtype = np.result_type(work.dtype, np.float32 if variance is None else variance.dtype)
        return ([np.empty(shape, work.dtype) for _ in range(3)] + [np.empty(shape, bool)]
                + [np.empty((shape[0] + 1, shape[1]), dtype)])

    shape = (min(rows, ny), nx - 2)
    bufs, verdict = buffers(shape), np.empty(shape, bool)
    found, tops = [], []
    for y0 in range(1, ny - 1, rows):
        y1 = min(y0 + rows, ny - 1)
        n = y1 - y0
        block = work[y0 - 1:y1 + 1]
        tops.append(block[1:-1, 1:-1].max())
        bound_test(block, None if variance is None else variance[y0 - 1:y1 + 1],
                   slope, offset, verdict[:n], [b[:n] for b in bufs[:4]] + [bufs[4][:n + 1]])
        flat = np.flatnonzero(verdict[:n])
        found.append((flat // (nx - 2) + y0, flat % (nx - 2) + 1))
    # The border: each edge with its mirrored neighbours, as a 3-row strip.
    for index, transpose in ((0, False), (ny - 1, False), (0, True), (nx - 1, True)):
        source = work.T if transpose else work
        inner = 1 if index == 0 else index - 1
        rows_ = [inner, index, inner]
        strips = [np.pad(arr[rows_], ((0, 0), (1, 1)), mode="reflect")
                  for arr in ((source,) if variance is None
                              else (source, variance.T if transpose else variance))]
        length = source.shape[1]
        out = np.empty((1, length), bool)
        bound_test(strips[0], strips[1] if len(strips) > 1 else None, slope, offset, out,
                   buffers((1, length)))
        along = np.flatnonzero(out[0])
        if transpose:    # the corners are done with the first and last rows
            along = along[(along > 0) & (along < length - 1)]
            found.append((along, np.full(len(along), index)))
        else:
            found.append((np.full(len(along), index), along))
    tops.extend([work[0].max(), work[-1].max(), work[:, 0].max(), work[:, -1].max()])
    return (np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found]),
            np.array(tops))


def classify(work, noise, ys, xs, threshold, sharpness, min_fwhm):
    """The exact test at the prescreen's candidates (ys, xs).

    Returns the hits' coordinates, their local variance, and the median and variance of
    their background (the ring at distance 3), which growing starts from.
    """
    ring = gather(work, ys, xs, RING1, by_offset=True)      # (8, n)
    values = work[ys, xs]
    # New hits start from local maxima: a pixel on the flank of a star has a brighter
    # neighbour, and its neighbours' median can sit near the sky, which would make it look
    # sharp. The rest of a hit is found by growing from its peak.
    peak = values >= np.maximum.reduce(ring, axis=0)
    ys, xs, ring, values = ys[peak], xs[peak], ring[:, peak], values[peak].astype(np.float64)
    m1 = median8(ring)
    var = noise.local(m1, ys, xs, work.shape)
    excess = values - m1
    hit = excess > threshold * np.sqrt(var * RESIDUAL_VAR)
    idx = np.nonzero(hit)[0]
    if len(idx):
        # Sharpness: a cosmic ray stands out from neighbours that sit on the background;
        # a star's neighbours are themselves well above the wider ring at distance 3.
        m3 = median24(gather(work, ys[idx], xs[idx], RING3))
        # (with an allowance of SHARP_NOISE times the noise of m1 - m3, so that the noise
        # of a faint star's neighbours does not make it look sharp)
        allowance = SHARP_NOISE * np.sqrt(var[idx] * BROAD_VAR)
        sharp = excess[idx] > sharpness * (m1[idx] - m3 + allowance)
        # What is not that sharp (thick tracks, 2x2 hits) must still look like a star: a
        # Gaussian at least min_fwhm wide, centred in the pixel, must fit its 3x3 box.
        var_bg = noise.background(m3, ys[idx], xs[idx])
        soft = idx[~sharp]
        if len(soft):
            patches = (gather(work, ys[soft], xs[soft], BOX3).astype(np.float64)
                       - m3[~sharp, None])
            misfit = psf_misfit(patches, var_bg[~sharp], noise.gain, min_fwhm,
                                limit=PSF_CHI2)
            sharp[~sharp] = misfit > PSF_CHI2
        hit[idx] = sharp
        m3, var_bg = m3[sharp], var_bg[sharp]
    else:
        m3 = var_bg = np.array([])
    return ys[hit], xs[hit], var[hit], m3, var_bg


def grow(work, flagged, noise, ys, xs, grow_threshold):
    """Which of the pixels (ys, xs), next to a hit, belong to it.

    A pixel joins the hit when (1) its brightest neighbour is already flagged and at least
    as bright as itself: it lies on the slope that leads up to the hit, not on one that leads
    to a star next to it (a watershed rule, which peels thick tracks layer by layer); (2) it
    stands ``grow_threshold`` sigma above the background (the median of the ring at
    distance 3); and (3) it stands above its unflagged neighbours by at least half its
    height above the background, as the wing of a hit does and the halo of a star does not.
    ``work`` holds the original values (repairs come after all passes).
    """
    values = work[ys, xs].astype(np.float64)
    ring = gather(work, ys, xs, RING1).astype(np.float64)
    ring_flagged = gather(flagged, ys, xs, RING1)
    brightest = np.argmax(ring, axis=1)
    rows = np.arange(len(ys))
    hit = ring_flagged[rows, brightest] & (values <= ring[rows, brightest])
    idx = np.nonzero(hit)[0]
    ring = ring[idx]
    ring[ring_flagged[idx]] = np.nan
    others = row_nanmedian(ring)   # NaN where every neighbour is flagged
    hit[idx] = ~(values[idx] <= others)       # (3) cannot hold otherwise
    var, background = np.zeros(len(ys)), np.zeros(len(ys))
    keep = hit[idx]
    idx, others = idx[keep], others[keep]
    if len(idx):
        m3 = median24(gather(work, ys[idx], xs[idx], RING3))
        background[idx] = m3
        var[idx] = noise.background(m3, ys[idx], xs[idx])
        excess = values[idx] - m3
        others = np.where(np.isnan(others), m3, others)
        hit[idx] = ((excess > grow_threshold * np.sqrt(var[idx]))
                    & (values[idx] - others > GROW_CONTRAST * excess))
    # the variance of a grown pixel is that of its background: also what the next pass uses
    return hit, var, background, var


def median_method(work, bad, noise, threshold, sharpness, grow_threshold, iterations,
                  saturation, min_fwhm, sky, label):
    """Flag and repair cosmic rays in ``work`` (modified in place).

    Returns the flag image, the coordinates and local variance of the flagged pixels, and
    the saturation level used (``saturation="auto"`` is resolved from the data).
    """
    flagged = np.zeros(work.shape, bool)
    ny, nx = work.shape

    def usable(ys, xs):
        """No saturated pixel within two pixels (bleed trails and the flat tops of
        saturated stars are not cosmic rays we can tell from stars)."""
        if saturation is None or not len(ys):
            return np.ones(len(ys), bool)
        return ((gather(work, ys, xs, BOX5).max(axis=1) < saturation)
                & (work[ys, xs] < saturation))

    ys, xs, tops = prescreen(work, noise, threshold)
    if saturation == "auto":
        saturation = saturation_from_blocks(work, tops, label)
    keep = ~bad[ys, xs]
    ys, xs, var, m3, var_bg = classify(work, noise, ys[keep], xs[keep], threshold, sharpness,
                                       min_fwhm)
    keep = usable(ys, xs)
    ys, xs, var, m3, var_bg = ys[keep], xs[keep], var[keep], m3[keep], var_bg[keep]
    if not len(ys):
        empty = np.array([], dtype=np.intp)
        return flagged, empty, empty, np.array([]), saturation
    # The image stays as it is until every hit is found (growing looks at the original
    # values); the repairs come at the end.
    flag_y, flag_x, flag_var = [], [], []
    for step in range(max(int(iterations), 1)):
        flagged[ys, xs] = True
        flag_y.append(ys)
        flag_x.append(xs)
        flag_var.append(var)
        # Next pass: the unflagged neighbours of what was just found that stand clearly
        # above its background. A cheap preselection: the growing test compares a pixel
        # with its own background, which differs from the hit's only by noise, and the
        # margin (GROW_PREFILTER) covers that.
        floor = m3 + GROW_PREFILTER * grow_threshold * np.sqrt(var_bg)
        ys = np.clip(ys[:, None] + RING1[None, :, 0], 0, ny - 1)
        xs = np.clip(xs[:, None] + RING1[None, :, 1], 0, nx - 1)
        flat = ys * nx + xs
        keep = ((np.take(work.reshape(-1), flat) > floor[:, None])
                & ~np.take(flagged.reshape(-1), flat) & ~np.take(bad.reshape(-1), flat))
        unique = np.unique(flat[keep])
        if not len(unique):
            break
        ys, xs = unique // nx, unique % nx
        hit, var, m3, var_bg = grow(work, flagged, noise, ys, xs, grow_threshold)
        hit[hit] = usable(ys[hit], xs[hit])
        ys, xs, var, m3, var_bg = ys[hit], xs[hit], var[hit], m3[hit], var_bg[hit]
        if not len(ys):
            break
    fy, fx = np.concatenate(flag_y), np.concatenate(flag_x)
    work[fy, fx] = masked_median(work, bad, fy, fx, sky, flagged)
    log.debug("%d pixels flagged in %d passes", len(fy), step + 1)
    return flagged, fy, fx, np.concatenate(flag_var), saturation


def saturation_from_blocks(work, tops, label, rows=32):
    """`saturation_from_data`, from the block maxima the prescreen found on its way (the
    last four are those of the first and last rows and columns, which no block covers)."""
    top = float(tops.max())
    if not np.isfinite(top) or top <= 0:
        return None
    count = sum(int(np.count_nonzero(edge >= 0.995 * top))
                for edge in (work[0], work[-1], work[1:-1, 0], work[1:-1, -1]))
    for block in np.nonzero(tops[:-4] >= 0.995 * top)[0]:
        if count >= SATURATION_COUNT:
            break
        rows_ = work[1 + block * rows:1 + (block + 1) * rows, 1:-1]
        count += int(np.count_nonzero(rows_ >= 0.995 * top))
    return saturation_verdict(top, count, label)


def saturation_verdict(top, count, label):
    if count < SATURATION_COUNT:
        return None
    log.info("%s: no saturation level given or in the header; %d pixels sit within 0.5%% "
             "of the maximum (%.6g), so %.6g is taken as saturation", label, count, top,
             0.98 * top)
    return 0.98 * top


def saturation_from_data(work, label):
    """A saturation level guessed from a plateau at the top of the data, or None.

    Saturated stars put many pixels at (nearly) the same, highest value: when at least
    ``SATURATION_COUNT`` pixels lie within 0.5 % of the maximum, 98 % of the maximum is
    taken as saturation.
    """
    top = float(work.max())
    if not np.isfinite(top) or top <= 0:
        return None
    return saturation_verdict(top, int(np.count_nonzero(work >= 0.995 * top)), label)


def sample_residuals(work, bad, samples=5_000):
    """Residuals (pixel - median of its 8 neighbours) on a sparse grid of about ``samples``
    good pixels.

    Returns the grid coordinates, the residuals and the neighbour medians.
    """
    ny, nx = work.shape
    step = max(1, int(np.sqrt(ny * nx / samples)))
    rows, cols = slice(1, ny - 1, step), slice(1, nx - 1, step)
    centre = work[rows, cols]
    ring = np.stack([work[1 + dy:ny - 1 + dy:step, 1 + dx:nx - 1 + dx:step]
                     [:centre.shape[0], :centre.shape[1]]
                     for dy, dx in RING1]).reshape(8, -1)
    ys, xs = np.mgrid[rows, cols]
    keep = ~bad[rows, cols].ravel()
    m1 = median8(ring[:, keep])
    return ys.ravel()[keep], xs.ravel()[keep], centre.ravel()[keep] - m1, m1


def mad_std(values):
    return 1.4826 * np.median(np.abs(values - np.median(values)))
