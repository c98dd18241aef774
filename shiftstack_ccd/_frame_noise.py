# Licensed under a 3-clause BSD style license - see LICENSE
"""Noise and background of one frame (or its cutout), as `shift_and_stack` does them.

Sources are found once, on the frame minus a quick box-median sky model (on a raw frame the
vignetting would otherwise pass for a source), and masked both where the pixel noise is
measured (`~shiftstack_ccd.noise.add_uncertainty`) and in the background model
(`~shiftstack_ccd.background.subtract_background`); so is a disc of `TARGET_RADIUS` pixels
around the target, which a faint target is not detected by and must not enter the sky.
"""

import warnings

import numpy as np
from astropy.utils.exceptions import AstropyUserWarning

from ._utils import as_header
from ._zoom import zoom_grid
from .background import background_box_size, background_model
from .exceptions import FrameError
from .noise import NOISE_TOLERANCE, model_uncertainty, pixel_noise

#: Radius (input pixels) kept out of the background model around the target.
TARGET_RADIUS = 10.0
#: Smallest side (input pixels) of the cutout the noise and background are measured on:
#: four of the smallest background boxes (`background_box_size`), so that a small output
#: still has sky boxes all round its target.
MIN_CUTOUT = 128


def _box_median_model(data, bad, box):
    """A quick sky model: the median of each box (stars are a minority of it), bilinear.

    Only for finding the sources: the background subtracted is `subtract_background`'s.
    """
    ny, nx = data.shape
    by, bx = -(-ny // box), -(-nx // box)
    padded = np.full((by * box, bx * box), np.nan)
    padded[:ny, :nx] = np.where(bad, np.nan, data)
    blocks = padded.reshape(by, box, bx, box).transpose(0, 2, 1, 3).reshape(by, bx, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN boxes
        grid = np.nanmedian(blocks, axis=2)
    if np.isnan(grid).all():
        return np.zeros(data.shape)
    grid = np.where(np.isnan(grid), np.nanmedian(grid), grid)
    if grid.shape == (1, 1):
        return np.full(data.shape, grid[0, 0])
    return zoom_grid(grid, box, (ny, nx), order=1, mode="nearest")


def source_pixels(data, bad, sigma, box, nsigma=4.0, grow=3):
    """Pixels of sources: the 3x3 mean of the frame minus a quick sky model above ``nsigma``
    times its noise (``sigma / 3``), grown by ``grow`` pixels.

    Written here rather than with `~shiftstack_ccd.photometry.source_mask` (photutils
    segmentation after an astropy convolution): that costs 0.24 s on a 317-pixel cutout,
    this 10 ms, and a mask is all the noise and background need. A 3x3 mean is above
    4 sigma by chance at 3e-5 of the pixels: pure noise hardly enters the mask (which would
    bias the noise measured off it low).
    """
    from scipy.ndimage import maximum_filter, uniform_filter
    residual = np.where(bad, 0.0, data - _box_median_model(data, bad, box))
    smoothed = uniform_filter(residual, 3, mode="nearest")
    found = smoothed > nsigma * sigma / 3
    return maximum_filter(found, size=2 * grow + 1) if grow else found


def noise_and_background(frame, model, target, background, label):
    """The frame with its uncertainty (if it had none) and minus its sky (if asked).

    Returns the new frame and a dict of what was measured (the per-frame table's columns).
    What `~shiftstack_ccd.noise.add_uncertainty` then
    `~shiftstack_ccd.background.subtract_background` give, made as one new frame (one copy
    of the header, not three).
    """
    from astropy.nddata import StdDevUncertainty
    data = np.asarray(frame.data)
    bad = ~np.isfinite(data)
    if frame.mask is not None:
        bad |= np.asarray(frame.mask, dtype=bool)
    if bad.all():
        raise FrameError(f"{label}: no usable background: every pixel is masked or not finite.")
    yy, xx = np.indices(data.shape, sparse=True)
    near_target = (xx - target[0]) ** 2 + (yy - target[1]) ** 2 <= TARGET_RADIUS ** 2
    # Only the threshold of the source mask: every third row gives it to ~0.5% at a third
    # of the cost. The pixel noise reported (and the uncertainty scaled to) is measured on
    # every sky pixel, by model_uncertainty.
    sigma = pixel_noise(data[::3], ~bad[::3])
    sources = near_target
    if np.isfinite(sigma) and sigma > 0:
        sources = sources | source_pixels(data, bad, sigma, background_box_size(data.shape))
    # (a noise off the model is said once for the stack, by warn_noise_ratios)
    std, info = model_uncertainty(frame, model, sky=~sources, label=label, warn=False)
    info["model_description"] = model.describe()
    uncertainty = frame.uncertainty if std is None else StdDevUncertainty(std)
    meta = as_header(frame.meta)
    info["sky_level"] = np.nan
    if background == "model":
        sky, cards = background_model(frame, mask=sources, label=label)
        for key, value, comment in cards:
            meta[key] = (value, comment)
        info["sky_level"] = float(meta["SSBKGLEV"])
        dtype = data.dtype if data.dtype.kind == "f" else np.float32
        data = (np.asarray(data, dtype=float) - sky).astype(dtype)
    elif background is not None:
        raise ValueError(f"background must be 'model' or None, not {background!r}")
    else:
        data = data.copy()
    return type(frame)(data, unit=frame.unit, wcs=frame.wcs, meta=meta, mask=frame.mask,
                       uncertainty=uncertainty), info


def warn_noise_ratios(labels, infos):
    """One warning per kind of noise model for the frames whose measured sky noise is off
    the model's by more than `~shiftstack_ccd.noise.NOISE_TOLERANCE` (either way), naming
    them; ``infos`` are `noise_and_background`'s. Said once for a stack, not once per
    frame, and in the calling process (a worker process's warning escapes the caller's
    warning filters and the command line's handler).
    """
    ratios = np.array([info["noise_ratio"] for info in infos], dtype=float)
    with np.errstate(invalid="ignore"):
        off = np.flatnonzero(np.isfinite(ratios) & ((ratios < 1 / NOISE_TOLERANCE)
                                                    | (ratios > NOISE_TOLERANCE)))
    for kind in dict.fromkeys(infos[i]["noise_model"] for i in off):
        which = [i for i in off if infos[i]["noise_model"] == kind]
        names = ", ".join(labels[i] for i in which[:3]) \
            + (f" and {len(which) - 3} more" if len(which) > 3 else "")
        low, high = f"{ratios[which].min():.2f}", f"{ratios[which].max():.2f}"
        if len(which) == 1:
            who, span = labels[which[0]], low
        else:
            who = f"{len(which)} of {len(infos)} frames ({names})"
            span = low if low == high else f"{low} to {high}"
        warnings.warn(f"{who}: the measured pixel noise of the sky is {span} times what the "
                      f"noise model predicts ({infos[which[0]]['model_description']}"
                      + (", first frame" if len(which) > 1 else "") + "); "
                      + ("the model is scaled to the data (check the gain card)"
                         if kind == "detector" else "check the frames' uncertainty")
                      + " (noise_ratio in the frames table)", AstropyUserWarning,
                      stacklevel=3)  # the caller of shift_and_stack


#: Per-frame table columns from `noise_and_background`, in order, with their descriptions.
NOISE_COLUMNS = {
    "noise_model": "how the noise is known: given, detector (gain/read noise) or local",
    "gain": "gain used by the detector model, e-/data unit",
    "read_noise": "read noise used by the detector model, e-",
    "bias": "bias level subtracted before the Poisson term (data units)",
    "bias_source": "where the bias level came from: argument, overscan or none",
    "pixel_noise": "measured pixel noise of the sky (neighbour differences), data units",
    "model_noise": "the noise model's pixel noise on the same sky, before scaling",
    "noise_ratio": "measured / model pixel noise",
    "noise_scale": "factor applied to the detector model's standard deviation",
    "sky_level": "median background subtracted (data units; NaN if not subtracted)",
}
#: ... and from the photometric scaling.
PHOTOMETRY_COLUMNS = {
    "flux_scale": "frame divided by this (transparency relative to the median frame)",
    "flux_scale_err": "uncertainty of flux_scale from the stars' scatter",
    "scale_stars": "stars used for the scale",
    "aperture_fraction": "share of a star's light within 1.5 FWHM (seeing)",
    "sky_sigma": "median uncertainty of the frame on the sky grid (data units)",
}


def add_noise_columns(table, infos, photometry, scales):
    """Add the noise, background and scaling columns to the per-frame table (in place)."""
    for name, description in NOISE_COLUMNS.items():
        table[name] = [info[name] for info in infos]
        table[name].description = description
    if photometry is not None:
        for name, description in PHOTOMETRY_COLUMNS.items():
            table[name] = photometry[name]
            table[name].description = description
    if scales is not None:
        table["flux_scale"] = scales
        table["flux_scale"].description = PHOTOMETRY_COLUMNS["flux_scale"]


def noise_cards(header, table, background, scale):
    """Header cards saying what was done to the frames' noise, sky and flux scale."""
    kinds = sorted(set(table["noise_model"]))
    header["SSNOISE"] = (",".join(kinds), "per-frame noise models (see FRAMES table)")
    ratios = np.asarray(table["noise_ratio"], dtype=float)
    if np.isfinite(ratios).any():
        header["SSNOISER"] = (round(float(np.nanmedian(ratios)), 4),
                              "median measured/model pixel noise")
    header["SSBKG"] = ("Background2D" if background == "model" else "none",
                       "per-frame sky model subtracted before combining")
    if isinstance(scale, str):
        label = scale
    else:
        label = "none" if scale is None else "factors"
    header["SSSCALE"] = (label, "per-frame photometric scale (flux_scale column)")
