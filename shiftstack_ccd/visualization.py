# Licensed under a 3-clause BSD style license - see LICENSE
"""PNG previews of frames and stacks."""

import logging

import numpy as np

from ._utils import atomic_output

__all__ = ["plot_image", "write_preview"]

log = logging.getLogger(__name__)


def plot_image(ax, ccd, title=None, mark=None, stretch=None):
    """Draw an image on a matplotlib axis with a z-scale, asinh-stretched normalisation.

    Parameters
    ----------
    ax : `matplotlib.axes.Axes`
        Where to draw.
    ccd : `~astropy.nddata.CCDData` or array
        The image; masked pixels are shown blank.
    title : str, optional
        Axis title.
    mark : (float, float), optional
        0-based ``(x, y)`` to point at with two ticks (e.g. the target).
    stretch : `astropy.visualization.BaseStretch`, optional
        Default `~astropy.visualization.AsinhStretch`.
    """
    # imported here: astropy.visualization imports matplotlib, which `import shiftstack_ccd`
    # must not
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval

    data = np.array(getattr(ccd, "data", ccd), dtype=float)
    mask = getattr(ccd, "mask", None)
    if mask is not None:
        data[np.asarray(mask, dtype=bool)] = np.nan
    finite = data[np.isfinite(data)]
    norm = None
    if finite.size:
        norm = ImageNormalize(finite, interval=ZScaleInterval(),
                              stretch=stretch or AsinhStretch(0.3))
    ax.imshow(data, origin="lower", cmap="gray", norm=norm, interpolation="nearest")
    if mark is not None:  # two ticks pointing at the position, leaving the source visible
        gap = max(data.shape) / 30
        x, y = mark
        ax.plot([x - 3 * gap, x - gap], [y, y], color="tab:orange", lw=1.5)
        ax.plot([x, x], [y + gap, y + 3 * gap], color="tab:orange", lw=1.5)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def write_preview(path, images, titles=None, marks=None, overwrite=False, dpi=110):
    """Write one PNG holding one or more images side by side, atomically.

    Parameters
    ----------
    path : str or path
        Output PNG.
    images : `~astropy.nddata.CCDData` or list of them
        Images to show, left to right.
    titles, marks : list, optional
        Per-image titles and ``(x, y)`` positions to point at.
    overwrite : bool
        Replace an existing file.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "preview.png")
    >>> write_preview(path, [np.random.default_rng(0).normal(size=(32, 32))], titles=["noise"])
    >>> os.path.getsize(path) > 0
    True
    """
    from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone

    if not isinstance(images, (list, tuple)):
        images = [images]
    titles = titles or [None] * len(images)
    marks = marks or [None] * len(images)
    fig = Figure(figsize=(4 * len(images), 4.3))
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for ax, image, title, mark in zip(axes, images, titles, marks):
        plot_image(ax, image, title=title, mark=mark)
    fig.tight_layout()
    with atomic_output(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    log.info("wrote %s", path)
