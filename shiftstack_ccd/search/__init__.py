# Licensed under a 3-clause BSD style license - see LICENSE
"""Search for moving sources over a grid of trial motions (synthetic tracking).

`search_motion` finds candidates; `stack_candidate` gives each one's `StackResult` (so that
`measure_target` measures it) and `write_candidate_stamps` a PNG of postage stamps.
"""

from .candidates import *  # noqa: F401, F403
from .core import *  # noqa: F401, F403
