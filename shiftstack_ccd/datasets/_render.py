# Licensed under a 3-clause BSD style license - see LICENSE
"""Rendering of point sources and trails: pixel-integrated Moffat stamps, or any
photutils PSF model (private).

Shared by the simulator and the injection of fake moving sources; the PSF itself (the
Moffat, its pixel integration, the stamp size) is `shiftstack_ccd._psf`'s.
"""

import numpy as np
from astropy import units as u

# one Moffat, one pixel integration: those of the package's PSF (shiftstack_ccd._psf)
from .._psf import GL_NODES, GL_WEIGHTS, moffat_alpha

#: Largest trail step between sub-exposure renderings of the moving target, in pixels.
TRAIL_STEP = 0.2
#: Bytes of scratch memory per rendering chunk.
_CHUNK_BYTES = 32 * 2**20


def psf_stamps(x, y, half, fwhm, beta):
    """Render unit-flux Moffat PSFs integrated over pixels, one square stamp per position.

    Returns ``(stamps, ix0, iy0)``: stamps of shape ``(n, 2*half+1, 2*half+1)`` each
    summing to one, and the frame indices of each stamp's first column and row.
    """
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    ixc = np.rint(x).astype(np.int64)
    iyc = np.rint(y).astype(np.int64)
    dx, dy = x - ixc, y - iyc
    size = 2 * half + 1
    nodes = len(GL_NODES)
    sub = (np.arange(-half, half + 1)[:, None] + GL_NODES[None, :]).ravel()
    inv_alpha2 = 1.0 / moffat_alpha(fwhm, beta) ** 2
    stamps = np.empty((x.size, size, size))
    chunk = max(1, _CHUNK_BYTES // (8 * 3 * (size * nodes) ** 2))
    for start in range(0, x.size, chunk):
        stop = min(start + chunk, x.size)
        xx = (sub[None, :] - dx[start:stop, None]) ** 2 * inv_alpha2
        yy = (sub[None, :] - dy[start:stop, None]) ** 2 * inv_alpha2
        values = yy[:, :, None] + xx[:, None, :]
        values += 1.0
        if beta == 3.0:  # the default: two products instead of a power
            np.reciprocal(values, out=values)
            values = values * values * values
        else:
            np.power(values, -beta, out=values)
        values = values.reshape(stop - start, size, nodes, size, nodes)
        # Weighted sums over the quadrature nodes of each pixel (rows, then columns).
        rows = sum(weight * values[:, :, j] for j, weight in enumerate(GL_WEIGHTS))
        block = sum(weight * rows[..., j] for j, weight in enumerate(GL_WEIGHTS))
        # Renormalise: the PSF is the Moffat truncated to the stamp, so a source's whole
        # flux is in the image (the lost wings are below _psf.STAMP_TRUNCATION anyway).
        block /= block.sum(axis=(1, 2), keepdims=True)
        stamps[start:stop] = block
    return stamps, ixc - half, iyc - half


def add_stamps(image, stamps, ix0, iy0, fluxes):
    """Add ``flux * stamp`` into ``image`` at each place, clipping at the edges."""
    ny, nx = image.shape
    height, width = stamps.shape[1:]
    for stamp, x0, y0, flux in zip(stamps, ix0, iy0, fluxes):
        xa, xb = max(x0, 0), min(x0 + width, nx)
        ya, yb = max(y0, 0), min(y0 + height, ny)
        if xa < xb and ya < yb:
            image[ya:yb, xa:xb] += flux * stamp[ya - y0:yb - y0, xa - x0:xb - x0]


def trail_profile(xs, ys, half, fwhm, beta):
    """Unit-flux image of a source seen at the positions (xs, ys) for equal times.

    Returns ``(profile, x0, y0)``: a local array and the frame indices of its first
    column and row.
    """
    stamps, ix0, iy0 = psf_stamps(xs, ys, half, fwhm, beta)
    size = stamps.shape[1]
    x0, y0 = int(ix0.min()), int(iy0.min())
    profile = np.zeros((int(iy0.max()) - y0 + size, int(ix0.max()) - x0 + size))
    weight = 1.0 / len(stamps)
    for stamp, sx, sy in zip(stamps, ix0 - x0, iy0 - y0):
        profile[sy:sy + size, sx:sx + size] += weight * stamp
    return profile, x0, y0


def model_trail_profile(model, xs, ys):
    """Unit-flux image of a source seen at the positions (xs, ys) for equal times, drawn
    with a photutils PSF model (e.g. an `~photutils.psf.ImagePSF` from
    `~photutils.psf.EPSFBuilder`) evaluated at pixel centres: an effective PSF is already
    integrated over the pixels. Normalised to unit sum over the model's footprint.

    Returns ``(profile, x0, y0)`` as `trail_profile`.
    """
    ny, nx = np.asarray(model.data).shape
    half = int(np.ceil(max(ny / model.oversampling[0], nx / model.oversampling[1]) / 2))
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    x0, y0 = int(np.floor(xs.min())) - half, int(np.floor(ys.min())) - half
    x1, y1 = int(np.ceil(xs.max())) + half, int(np.ceil(ys.max())) + half
    yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(float)
    profile = np.zeros(xx.shape)
    for x, y in zip(xs, ys):
        profile += model.evaluate(xx, yy, 1.0, x, y)
    return profile / profile.sum(), x0, y0


def aperture_weights(x, y, radius, shape):
    """Exact-overlap weights of a circular aperture on an array of ``shape``.

    Returns ``(slices, weights)`` or ``(None, None)`` when the aperture misses the array.
    """
    from photutils.aperture import CircularAperture

    mask = CircularAperture((x, y), r=radius).to_mask(method="exact")
    large, small = mask.get_overlap_slices(shape)
    if large is None:
        return None, None
    return large, mask.data[small]


def as_quantity(value, unit, name, default_unit=None):
    quantity = u.Quantity(value, default_unit) if default_unit is not None else u.Quantity(value)
    if not quantity.unit.is_equivalent(unit):
        raise ValueError(f"{name} must be a quantity in {unit} (or equivalent); got {value!r}")
    return quantity.to(unit)
