# Licensed under a 3-clause BSD style license - see LICENSE
"""Simulated cosmic-ray hits: single pixels and short tracks (private)."""

import numpy as np

#: Cosmic-ray events per 10^4 pixels per 100 s when ``cosmic_rays=True``.
DEFAULT_CR_RATE = 2.0
#: Amplitude range of cosmic-ray pixels, in units of the sky-plus-read noise.
_CR_AMPLITUDE = (5.0, 100.0)


def draw_cosmic_rays(rng, shape, expected, sigma):
    """Draw cosmic-ray hits: single pixels and short straight tracks of 2-6 pixels.

    Returns the flat indices of the hit pixels, the electrons in each, and the number of
    events. Amplitudes are drawn per event, log-uniformly between 5 and 100 times
    ``sigma``, and vary by a factor 0.6-1 along a track (never below 5 sigma).
    """
    ny, nx = shape
    n_events = int(rng.poisson(expected))
    xs, ys, amps = [], [], []
    low, high = _CR_AMPLITUDE
    for _ in range(n_events):
        x, y = rng.integers(0, nx), rng.integers(0, ny)
        amplitude = sigma * np.exp(rng.uniform(np.log(low), np.log(high)))
        length = 1 if rng.random() < 0.5 else int(rng.integers(2, 7))
        angle = rng.uniform(0.0, np.pi)
        step = np.array([np.cos(angle), np.sin(angle)])
        step /= np.abs(step).max()  # one pixel a step along the dominant axis: no repeats
        k = np.arange(length)
        px = x + np.rint(k * step[0]).astype(np.int64)
        py = y + np.rint(k * step[1]).astype(np.int64)
        keep = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
        xs.append(px[keep])
        ys.append(py[keep])
        amps.append(np.maximum(amplitude * rng.uniform(0.6, 1.0, keep.sum()), low * sigma))
    if not n_events:
        return np.zeros(0, np.int64), np.zeros(0), 0
    flat = np.concatenate(ys) * nx + np.concatenate(xs)
    amps = np.concatenate(amps)
    index, inverse = np.unique(flat, return_inverse=True)  # two events may share a pixel
    return index, np.bincount(inverse, weights=amps), n_events
