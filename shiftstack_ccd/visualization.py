# Licensed under a 3-clause BSD style license - see LICENSE
"""PNG previews of frames and stacks."""

import logging

import numpy as np

from ._cutout import zoom_cut
from ._utils import atomic_output

__all__ = ["TARGET_ZOOM", "plot_image", "write_preview"]

log = logging.getLogger(__name__)

#: Half-width (pixels) of the zoom panel on the target in the previews of ``shiftstack-ccd
#: stack`` and ``run``.
TARGET_ZOOM = 20


def plot_image(ax, ccd, title=None, mark=None, stretch=None, interval=None):
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
    interval : `astropy.visualization.BaseInterval`, optional
        Default `~astropy.visualization.ZScaleInterval` (the sky; bright sources saturate).
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
        norm = ImageNormalize(finite, interval=interval or ZScaleInterval(),
                              stretch=stretch or AsinhStretch(0.3))
    ax.imshow(data, origin="lower", cmap="gray", norm=norm, interpolation="nearest")
    if mark is not None:  # two ticks pointing at the position, leaving the source visible
        gap = max(max(data.shape) / 30, 4)  # clear of a few-pixel PSF in a small zoom
        x, y = mark
        ax.plot([x - 3 * gap, x - gap], [y, y], color="tab:orange", lw=1.5)
        ax.plot([x, x], [y + gap, y + 3 * gap], color="tab:orange", lw=1.5)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def write_preview(path, images, titles=None, marks=None, overwrite=False, dpi=110, zoom=None):
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
    zoom : int, optional
        Add a panel after the first image: its square within ``zoom`` pixels of its mark
        (e.g. the target), with its own contrast. Needs ``marks[0]``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "preview.png")
    >>> write_preview(path, [np.random.default_rng(0).normal(size=(32, 32))], titles=["noise"])
    >>> os.path.getsize(path) > 0
    True
    >>> image = np.random.default_rng(1).normal(size=(101, 101))
    >>> write_preview(path, [image], marks=[(50, 50)], zoom=10, overwrite=True)
    """
    from matplotlib.figure import Figure  # no pyplot: the user's backend is left alone

    if not isinstance(images, (list, tuple)):
        images = [images]
    images = list(images)
    titles = list(titles or [None] * len(images))
    marks = list(marks or [None] * len(images))
    zoomed = None
    if zoom is not None and marks[0] is not None:
        cut, mark = zoom_cut(images[0], marks[0], int(zoom))
        if cut is not None:
            images.insert(1, cut)
            marks.insert(1, mark)
            titles.insert(1, f"zoom: {cut.shape[1]} x {cut.shape[0]} px")
            zoomed = 1
    fig = Figure(figsize=(4 * len(images), 4.3))
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for k, (ax, image, title, mark) in enumerate(zip(axes, images, titles, marks)):
        if k == zoomed:  # the whole range: the target's profile, not only the sky
            from astropy.visualization import AsinhStretch, MinMaxInterval
            plot_image(ax, image, title=title, mark=mark, stretch=AsinhStretch(0.01),
                       interval=MinMaxInterval())
        else:
            plot_image(ax, image, title=title, mark=mark)
    fig.tight_layout()
    with atomic_output(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    log.info("wrote %s", path)
