# Licensed under a 3-clause BSD style license - see LICENSE
"""Data sets: simulated observations with known truth, and the real example data.

`inject_moving_source` adds fake moving sources to real frames, with their truth.
`simulate_observation` makes a sequence of calibrated CCD frames of a star field
with a moving target whose position, flux and signal-to-noise ratio are known
exactly; tests, the demo and the documentation use it. `get_data_path` and
`fetch_example_data` find the real example frames (the Lowell 42-inch frames of
asteroid (5945) Roachapproach), locally through the environment variable
``SHIFTSTACK_CCD_DATA`` or, failing that, by downloading the public originals.
"""

from .example_data import *  # noqa: F401, F403
from .simulate import *  # noqa: F401, F403
from .inject import *  # noqa: F401, F403
