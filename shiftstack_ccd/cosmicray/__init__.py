# Licensed under a 3-clause BSD style license - see LICENSE
"""Cosmic-ray cleaning of single frames: `clean_cosmic_rays`.

``core`` holds the public function and its provenance; the private modules hold its parts:
``_noise`` (the noise model: gain and read noise, or a measured variance model), ``_ring``
(neighbourhood look-ups and medians), ``_psf`` (the star-shape test), ``_median`` (the
ring-median detector) and ``_lacosmic`` (L.A.Cosmic through astroscrappy).
"""

from .core import *  # noqa: F401, F403
