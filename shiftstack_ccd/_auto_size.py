# Licensed under a 3-clause BSD style license - see LICENSE
"""The default output size of the command line and of pipeline files: the target's path plus
a margin of PSFs.

``shift_and_stack(size=None)`` keeps its meaning (every pixel of every frame); ``shiftstack-ccd
stack`` without ``--size`` and a pipeline file without ``[stack] size`` ask for a cut-out
around the target instead, because the whole field of a CCD is tens of MB, takes most of the
run and makes a preview where the target is one pixel in a thousand.
"""

import logging

__all__ = []

log = logging.getLogger(__name__)

#: Stellar FWHM on each side of the target's path.
MARGIN_FWHM = 25
#: The smallest default size (pixels): room for the background and the neighbouring stars.
MIN_SIZE = 101
#: FWHM assumed when the middle frame has too few measurable stars.
FALLBACK_FWHM = 3.0
#: Stars (detected at `PSF_STAR_NSIGMA` on the middle frame, unsaturated) the output must
#: hold: `~shiftstack_ccd.measure_target` fits the PSF and the aperture correction on the
#: sky stack's bright stars, and with five of them (a 119-px stack of the Lowell field) its
#: flux error was 5 times that of a 601-px stack, the flux itself 14 % off
#: (benchmarks/bench_noise_size.py).
PSF_STARS = 30
#: Detection threshold (sky sigma) of those stars in the stack: the PSF fit's own
#: (``_psf.fit_psf``); on one frame of N it is this over sqrt(N), at least `MIN_NSIGMA`.
PSF_STAR_NSIGMA = 20.0
MIN_NSIGMA = 5.0

RULE = (f"the target's path across the frames plus {MARGIN_FWHM} stellar FWHM (measured on "
        f"the middle frame) on each side, grown until it holds {PSF_STARS} bright stars for "
        f"the PSF (or every one the frame has), odd, at least {MIN_SIZE} px and at most the "
        "whole field")


def default_size(files, ephemeris, hdu=None, unit=None, option="--size"):
    """Output size (pixels, odd) for frames ``files`` and a motion model, by `RULE`.

    ``hdu`` and ``unit`` are passed to `~shiftstack_ccd.read_frame`; ``option`` names the
    setting in the message of a frame without a celestial WCS.

    Returns
    -------
    size : int or None
        None when the rule asks for at least the whole field.
    why : str
        How it was chosen, for the log.
    """
    import numpy as np  # here: the command line reads RULE for --help
    from astropy.time import Time
    from astropy.wcs.utils import proj_plane_pixel_scales

    from ._utils import require_celestial_wcs
    from .frames import read_frame
    from .stars import stellar_fwhm

    middle = read_frame(files[len(files) // 2], hdu=hdu, unit=unit)
    wcs = require_celestial_wcs(middle, option, len(files) // 2)
    scale = float(np.mean(proj_plane_pixel_scales(wcs))) * 3600  # arcsec per pixel
    times = Time([_mid_time(path, lambda p: read_frame(p, hdu=hdu, unit=unit))
                  for path in files])
    ends = ephemeris.at(Time([times.min(), times.max()]))
    path_px = float(ends[0].separation(ends[1]).arcsec) / scale
    fwhm = stellar_fwhm(middle)
    measured = fwhm is not None
    fwhm = float(fwhm) if measured else FALLBACK_FWHM
    n = max(MIN_SIZE, int(np.ceil(path_px + 2 * MARGIN_FWHM * fwhm)))
    centre = wcs.world_to_pixel(ephemeris.at(times[len(files) // 2]))
    for_stars, n_stars = stars_size(middle, centre, fwhm, len(files))
    why = (f"path {path_px:.1f} px + 2 x {MARGIN_FWHM} x FWHM {fwhm:.2f} px"
           f"{'' if measured else ' (assumed: too few stars to measure)'}")
    if for_stars > n:
        n = for_stars
        why += f", grown to hold {n_stars} PSF stars"
    n += 1 - n % 2
    if n >= max(middle.shape):
        return None, why + " covers the field: the whole field"
    return n, why


def stars_size(frame, centre, fwhm, n_frames):
    """The side (pixels) of the square about ``centre`` holding `PSF_STARS` stars of
    ``frame`` (one of ``n_frames``) bright enough in their stack for the PSF fit, with room
    for their fit boxes, and how many it holds (fewer when the frame has fewer)."""
    import numpy as np

    from .stars import detect_stars

    threshold = max(MIN_NSIGMA, PSF_STAR_NSIGMA / np.sqrt(n_frames))
    stars = detect_stars(frame, threshold=threshold, fwhm=fwhm, max_stars=10 ** 6)
    if len(stars) == 0:
        return 0, 0
    reach = np.sort(np.maximum(np.abs(np.asarray(stars["x"]) - float(centre[0])),
                               np.abs(np.asarray(stars["y"]) - float(centre[1]))))
    k = min(PSF_STARS, len(reach))
    return int(np.ceil(2 * (reach[k - 1] + 3 * fwhm))) + 1, k


def _mid_time(path, read):
    """Mid-exposure time from the primary header, else from the frame as ``read`` makes it
    (time cards in a science extension)."""
    from astropy.io import fits

    from .exceptions import FrameError
    from .frames import mid_exposure_time
    try:
        return mid_exposure_time(fits.getheader(path, 0))
    except (FrameError, OSError, KeyError, ValueError):
        return mid_exposure_time(read(path))
