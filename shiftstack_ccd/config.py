# Licensed under a 3-clause BSD style license - see LICENSE
"""Package defaults, as an astropy configuration namespace: `conf`.

Values can be set for a session (``ss.conf.mem_limit = 64e6``, or
``with ss.conf.set_temp("mem_limit", 64e6): ...``) or in the ``shiftstack_ccd.cfg`` file of
the astropy configuration folder.
"""

from astropy import config as _config

__all__ = ["Conf", "conf"]


class Conf(_config.ConfigNamespace):
    """Defaults of shiftstack_ccd (``[combine]`` in ``shiftstack_ccd.cfg``).

    Examples
    --------
    >>> import shiftstack_ccd as ss
    >>> with ss.conf.set_temp("mem_limit", 64e6):
    ...     print(f"{ss.conf.mem_limit:.0e}")
    6e+07
    """

    # module= keeps the item in the [combine] section, where it was before this module.
    mem_limit = _config.ConfigItem(
        64e6, "Largest size, in bytes, of the working arrays of one block of rows when "
        "combining frames, and of the intermediate products shift_and_stack keeps in memory. "
        "64 MB: as fast as 512 MB or faster (blocks that stay in cache; "
        "benchmarks/bench_combine.py) at a third of the memory.", cfgtype="float",
        module="shiftstack_ccd.combine")


conf = Conf()
