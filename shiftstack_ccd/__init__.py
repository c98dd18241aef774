# Licensed under a 3-clause BSD style license - see LICENSE
"""shiftstack_ccd: shift-and-stack CCD frames on the motion of solar-system bodies.

The public names of every step module are available here, e.g. ``ss.read_frames``,
``ss.Ephemeris``, ``ss.shift_and_stack``.
"""

try:
    from ._version import version as __version__
except ImportError:  # not installed, running from a source tree
    __version__ = "0.0.dev0"

from .astrometry import *  # noqa: F401, F403
from .background import *  # noqa: F401, F403
from .calibration import *  # noqa: F401, F403
from .combine import *  # noqa: F401, F403
from .completeness import *  # noqa: F401, F403
from .config import *  # noqa: F401, F403
from .cosmicray import *  # noqa: F401, F403
from .datasets import *  # noqa: F401, F403
from .ephemeris import *  # noqa: F401, F403
from .exceptions import *  # noqa: F401, F403
from .fluxscale import *  # noqa: F401, F403
from .frames import *  # noqa: F401, F403
from .measure import *  # noqa: F401, F403
from .noise import *  # noqa: F401, F403
from .photometry import *  # noqa: F401, F403
from .register import *  # noqa: F401, F403
from .report import *  # noqa: F401, F403
from .pipeline import *  # noqa: F401, F403
from .resample import *  # noqa: F401, F403
from .search import *  # noqa: F401, F403
from .stack import *  # noqa: F401, F403
from .stars import *  # noqa: F401, F403
from .static_sky import *  # noqa: F401, F403
from .steps import *  # noqa: F401, F403
from .target_frame import *  # noqa: F401, F403
from .visualization import *  # noqa: F401, F403
from .zeropoint import *  # noqa: F401, F403
