# Licensed under a 3-clause BSD style license - see LICENSE
"""Motion models of moving targets: where a target is on the sky at any time.

`Ephemeris` (``core``) is the interface, with one class per kind behind it:
`LinearEphemeris` (``linear``), `TableEphemeris` and `HorizonsEphemeris` (``table``),
`ElementsEphemeris` (``elements``, two-body propagation by ``orbits``). ``horizons``
queries and caches JPL Horizons; ``motion`` fits a linear motion to positions measured on
the frames. Private helpers: ``_sphere`` (unit vectors and rates), ``_values`` (times and
table values), ``_tables`` (reading user tables and orbital elements).
"""

from .core import *  # noqa: F401, F403
from .elements import *  # noqa: F401, F403
from .linear import *  # noqa: F401, F403
from .motion import *  # noqa: F401, F403
from .table import *  # noqa: F401, F403
