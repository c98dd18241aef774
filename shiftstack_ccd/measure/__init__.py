# Licensed under a 3-clause BSD style license - see LICENSE
"""Measuring the target on a stack: detection, PSF photometry, astrometry, honest errors.

`measure_target` gives one row per target; `summary_line` says it in one line. See
`shiftstack_ccd.measure.core` for how.
"""

from .core import *  # noqa: F401, F403
