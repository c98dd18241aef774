# Licensed under a 3-clause BSD style license - see LICENSE
"""Correcting a frame's WCS: `correct_wcs` (known offsets, or offsets measured on the stars).

``core`` holds `correct_wcs` and the summary it records; the private modules hold its parts:
``_offsets`` (`read_offsets` and applying a known offset) and ``_match`` (the reference's
sky positions, the vote, the star matching and the fit). Star detection is
`shiftstack_ccd.stars.detect_stars`.
"""

from .core import *  # noqa: F401, F403
