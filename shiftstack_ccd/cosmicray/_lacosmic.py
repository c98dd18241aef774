# Licensed under a 3-clause BSD style license - see LICENSE
"""L.A.Cosmic through astroscrappy (private), in the frame's own noise model."""

import numpy as np

from ..exceptions import FrameError
from .._utils import frame_label


def lacosmic(ccd, work, bad, noise, threshold, sharpness, grow_threshold, iterations,
             saturation, lacosmic_kwargs):
    """Run astroscrappy on ``work`` (repaired in place), with gain and variance in order."""
    import astroscrappy

    kwargs = dict(lacosmic_kwargs or {})
    for key in ("gain", "readnoise", "invar", "inmask", "satlevel", "sigclip", "sigfrac",
                "objlim", "niter"):
        if key in kwargs:
            raise FrameError(f"{frame_label(ccd)}: give {key!r} through clean_cosmic_rays' own "
                             "arguments, not lacosmic_kwargs.")
    if noise.source == "model":
        gain, read_noise, invar = noise.gain, noise.read_noise, None
    else:
        # astroscrappy multiplies data and variance by the gain: with gain 1 the variance
        # stays in data units squared, which is what we give it.
        gain, read_noise = 1.0, 0.0
        invar = (noise.variance if noise.source == "uncertainty"
                 else np.full(work.shape, noise.constant, dtype=np.float32))
    satlevel = np.inf if saturation is None else saturation * gain  # astroscrappy: electrons
    crmask, cleaned = astroscrappy.detect_cosmics(
        work, inmask=bad, invar=invar, sigclip=threshold, sigfrac=grow_threshold / threshold,
        objlim=sharpness, gain=gain, readnoise=read_noise, satlevel=satlevel,
        niter=int(iterations), **kwargs)
    crmask &= ~bad
    # astroscrappy returns the cleaned array divided by the gain again: the input unit.
    work[crmask] = cleaned[crmask]
    return crmask, kwargs
