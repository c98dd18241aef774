# Licensed under a 3-clause BSD style license - see LICENSE
"""shiftstack_ccd: shift-and-stack CCD frames on the motion of solar-system bodies.

The public names of every step module are available here, e.g. ``ss.read_frames``,
``ss.Ephemeris``, ``ss.shift_and_stack``.
"""

import importlib

try:
    from ._version import version as __version__
except ImportError:  # not installed, running from a source tree
    __version__ = "0.0.dev0"

# The modules whose public names (``__all__``) are gathered here, loaded on the first access
# to one of them (PEP 562), so that ``import shiftstack_ccd`` (and so ``shiftstack-ccd
# --help``) does not pay for astropy.coordinates, astropy.nddata, scipy, ... up front.
_PUBLIC_MODULES = ("astrometry", "background", "calibration", "combine", "completeness", "config",
                   "cosmicray", "datasets", "ephemeris", "exceptions", "fluxscale", "frames",
                   "measure", "noise", "photometry", "register", "report", "pipeline", "resample",
                   "search", "stack", "stars", "static_sky", "steps", "target_frame",
                   "visualization", "zeropoint")


def _load_public_names():
    names = []
    for module_name in _PUBLIC_MODULES:
        module = importlib.import_module(f".{module_name}", __name__)
        public = getattr(module, "__all__", None)  # what ``from module import *`` takes
        if public is None:
            public = [n for n in vars(module) if not n.startswith("_")]
        for name in public:
            globals()[name] = getattr(module, name)
            names.append(name)
    globals()["__all__"] = names
    return names


def __getattr__(name):
    if name.startswith("__") and name != "__all__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if "__all__" not in globals():
        _load_public_names()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    names = globals().get("__all__") or _load_public_names()
    return sorted(set(globals()) | set(names))
