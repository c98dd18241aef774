# Licensed under a 3-clause BSD style license - see LICENSE
"""Per-frame background: a 2-D model of the sky, sources masked, subtracted before combining.

Over a night the sky goes from twilight to dark and back (8700 to 2700 to 5700 ADU on the
Lowell 42-inch frames). Frames combined with their own sky are not comparable: the median of
such frames is not the median of their signal, clipping compares unlike values and
inverse-variance weights favour the dark frames for the wrong reason. Each frame's sky is
therefore modelled with `photutils.background.Background2D` (sigma-clipped medians in boxes,
a 3x3 median filter of the boxes, smooth interpolation) with the sources masked, and
subtracted. The box is chosen from the frame (`background_box_size`): a quarter of its
shorter side, between 32 and 64 pixels. A box's median has a noise of about 1.25 sigma / box
that is shared by every pixel of it, and an aperture sum of N pixels gets N times that: with
16-pixel boxes the stacked flux of a 9-pixel-radius aperture moved by 1.7% between two runs
of the same nine simulated frames, with 32 or more by less than 1%. The boxes' values are not
median filtered (photutils' ``filter_size``): sources are masked and the box medians are
sigma clipped, and the filter flattens gradients over the outer box all round (a ramp of
0.8 ADU per pixel left 19 ADU there). The model's own noise (the
median of hundreds of pixels per box) is not added to the uncertainty: it is below a few
per cent of a pixel's. `shift_and_stack` models the frame cut to the output and its margin,
with the target at its centre.
"""

import logging
import warnings

import numpy as np
from astropy.utils.exceptions import AstropyUserWarning

from ._utils import as_header, frame_label
from ._zoom import zoom_grid
from .exceptions import FrameError

__all__ = ["background_box_size", "background_model", "subtract_background"]

log = logging.getLogger(__name__)


def background_box_size(shape):
    """Background box side for a frame of ``shape``: min(shape) // 4, within 32-64 pixels.

    Examples
    --------
    >>> background_box_size((137, 137)), background_box_size((1370, 1432))
    (34, 64)
    """
    return int(np.clip(min(shape) // 4, 32, 64))


def background_model(ccd, mask=None, box_size=None, filter_size=1, label=None):
    """The frame's sky model (sources masked), and the header cards that describe it.

    What `subtract_background` subtracts; parameters as there.

    Returns
    -------
    model : `~numpy.ndarray`
        The sky, float64, the frame's shape.
    cards : list of (key, value, comment)
        ``SSBKG``, ``SSBKGBOX``, ``SSBKGLEV`` and ``SSBKGRNG`` (see `subtract_background`).

    Raises
    ------
    FrameError
        As `subtract_background`.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> frame = CCDData(np.full((64, 64), 250.0), unit="adu")
    >>> model, cards = background_model(frame)
    >>> float(model[10, 10]), [key for key, value, comment in cards]
    (250.0, ['SSBKG', 'SSBKGBOX', 'SSBKGLEV', 'SSBKGRNG'])
    """
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground
    label = label or frame_label(ccd)
    data = np.asarray(ccd.data, dtype=float)
    bad = ~np.isfinite(data)
    if ccd.mask is not None:
        bad |= np.asarray(ccd.mask, dtype=bool)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    if bad.all():
        raise FrameError(f"{label}: no usable background: every pixel is masked (frame mask, "
                         "sources, target or non-finite values).")
    box = int(box_size) if box_size is not None else background_box_size(data.shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            bkg = Background2D(np.where(bad, 0.0, data), min(box, *data.shape), mask=bad,
                               filter_size=filter_size, exclude_percentile=50,
                               sigma_clip=SigmaClip(sigma=3.0, maxiters=5),
                               bkg_estimator=MedianBackground())
    except ValueError as exc:
        raise FrameError(f"{label}: no usable background: no {box}x{box} box has half of its "
                         f"pixels unmasked ({exc}).") from None
    # photutils' own interpolation of the mesh (cubic spline zoom, 'reflect', grid mode,
    # clipped to the mesh's range), done axis by axis: 40 times faster (see _zoom)
    mesh = np.asarray(bkg.background_mesh, dtype=float)
    model = zoom_grid(mesh, bkg.box_size, data.shape, order=3, mode="reflect")
    np.clip(model, mesh.min(), mesh.max(), out=model)
    level = float(np.median(model))
    spread = float(model.max() - model.min())
    log.debug("%s: background %.6g (range %.4g), box %d", label, level, spread, box)
    return model, [("SSBKG", "Background2D", "sky model subtracted (sources masked)"),
                   ("SSBKGBOX", box, "[pix] background box"),
                   ("SSBKGLEV", level, "median sky level subtracted"),
                   ("SSBKGRNG", spread, "range of the sky model")]


def subtract_background(ccd, mask=None, box_size=None, filter_size=1, label=None):
    """Model the frame's sky with sources masked and subtract it.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame.
    mask : ndarray of bool, optional
        Pixels to leave out of the model besides the frame's mask and non-finite pixels
        (sources, e.g. from `~shiftstack_ccd.photometry.source_mask`, and the target).
    box_size : int, optional
        Box side, pixels (default `background_box_size`).
    filter_size : int
        Median filter of the box values, in boxes (default none: see the module notes).
    label : str, optional
        Name of the frame in messages.

    Returns
    -------
    subtracted : `~astropy.nddata.CCDData`
        A new frame, data minus the model (`background_model`), the uncertainty, mask, WCS
        and unit carried over. Header: ``SSBKG`` ('Background2D'), ``SSBKGBOX`` (box,
        pixels), ``SSBKGLEV`` (median of the model, data units) and ``SSBKGRNG`` (its range,
        max - min).

    Raises
    ------
    FrameError
        When no box has enough unmasked pixels to measure the sky (e.g. everything is
        masked); the message names the frame.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> rng = np.random.default_rng(0)
    >>> sky = 100.0 + np.add.outer(np.arange(128.0), np.zeros(128))  # a gradient in y
    >>> frame = CCDData(sky + rng.normal(0, 1, sky.shape), unit="adu")
    >>> flat = subtract_background(frame)
    >>> abs(float(np.median(flat.data))) < 0.1, flat.meta["SSBKGBOX"]
    (True, 32)
    """
    model, cards = background_model(ccd, mask=mask, box_size=box_size,
                                    filter_size=filter_size, label=label)
    meta = as_header(ccd.meta)
    for key, value, comment in cards:
        meta[key] = (value, comment)
    dtype = ccd.data.dtype if ccd.data.dtype.kind == "f" else np.float32
    return type(ccd)((np.asarray(ccd.data, dtype=float) - model).astype(dtype), unit=ccd.unit,
                     wcs=ccd.wcs, meta=meta, mask=ccd.mask, uncertainty=ccd.uncertainty)
