# Licensed under a 3-clause BSD style license - see LICENSE
"""Parameter validators shared by the API functions, the command line and pipeline files.

Each public function checks its parameters once, on entry, with these; the command line
and ``shiftstack-ccd run --check`` call the same functions, so that what passes a check
runs. Every failure is a `~shiftstack_ccd.exceptions.ParameterError` whose message names the
parameter, the value given and what is expected; its ``parameter`` attribute holds the name.
"""

import numbers
import os
import re
from pathlib import Path

import numpy as np
from astropy import units as u

from .exceptions import ParameterError

__all__ = []

#: Resampling paths `shift_and_stack` accepts (see `resample_to_target`).
RESAMPLE_METHODS = ("auto", "shift", "warp", "drizzle")
#: Named weights `shift_and_stack` accepts (see `combine_frames`).
WEIGHTS = ("inverse-variance", "exptime", "snr")
#: Bytes per pixel of one frame on an output grid: float32 data and uncertainty, bool mask.
BYTES_PER_PIXEL = 9
#: Local dask schedulers; anything else must be an address (``tcp://host:port``) or a Client.
LOCAL_SCHEDULERS = ("sync", "serial", "threads", "processes")


def fail(parameter, message):
    """Raise a `ParameterError` for ``parameter`` (its name is kept on the exception)."""
    error = ParameterError(f"{parameter}: {message}")
    error.parameter = parameter
    raise error


def _show(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def boolean(value, name):
    """True or False (Python or numpy booleans), nothing else."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    fail(name, f"must be True or False, not {_show(value)}.")


def integer(value, name, minimum=1):
    """An integer (not a bool, not 101.7) of at least ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        fail(name, f"must be a whole number of at least {minimum}, not {_show(value)}.")
    if value < minimum:
        fail(name, f"must be at least {minimum}, not {value}.")
    return int(value)


def number(value, name, minimum=None, strict=True, maximum=None):
    """A finite real number; above ``minimum`` (``strict``) or at least it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not np.isfinite(value):
        fail(name, f"must be a finite number, not {_show(value)}.")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        fail(name, f"must be {'above' if strict else 'at least'} {minimum}, not {value}.")
    if maximum is not None and value > maximum:
        fail(name, f"must be at most {maximum}, not {value}.")
    return float(value)


#: Units of a memory size given as text: decimal (MB) and binary (MiB), case-insensitive.
BYTE_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KIB": 2 ** 10,
              "MIB": 2 ** 20, "GIB": 2 ** 30}


def byte_size(value, name):
    """A positive memory size in bytes: a number, or text such as ``'64MB'`` or ``'2 GiB'``.

    Pipeline files and the command line give sizes as text, the API as numbers; both go
    through here so that ``mem_limit = "2GB"`` means the same everywhere.
    """
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", value)
        unit = match.group(2).upper() if match else None
        if unit not in BYTE_UNITS:
            fail(name, f"{_show(value)} is not a size (e.g. 64MB, 2GB, 5e8 bytes).")
        value = float(match.group(1)) * BYTE_UNITS[unit]
    return number(value, name, 0)


def choice(value, name, choices):
    """One of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        fail(name, f"must be one of {', '.join(repr(c) for c in choices)}, not {_show(value)}.")
    return value


def angle(value, name):
    """A positive angle `~astropy.units.Quantity` (a string such as ``'0.5 arcsec'`` is read)."""
    try:
        quantity = u.Quantity(value)
    except (TypeError, ValueError):
        fail(name, f"must be an angle such as 0.5 * u.arcsec, not {_show(value)}.")
    if quantity.unit.physical_type != "angle" or not quantity.isscalar:
        fail(name, f"must be one angle (arcsec, deg...), not {_show(value)}.")
    if not np.isfinite(quantity.value) or quantity.value <= 0:
        fail(name, f"must be a positive angle, not {quantity}.")
    return quantity.to(u.arcsec)


def output_size(value, name="size"):
    """None, a positive number of pixels, ``(ny, nx)``, or a positive angle."""
    if value is None:
        return None
    if isinstance(value, (str, u.Quantity)):
        try:
            quantity = u.Quantity(value)
        except (TypeError, ValueError):
            fail(name, f"must be pixels (an integer or (ny, nx)) or an angle, not {_show(value)}.")
        if quantity.unit == u.pix:
            return output_size(int(quantity.value) if float(quantity.value).is_integer()
                               else quantity.value, name)
        return angle(quantity, name)
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            fail(name, f"must be one size or two (ny, nx), not {_show(value)}.")
        return tuple(integer(v, name) for v in value)
    return integer(value, name)


def time(value, name):
    """None or something `~astropy.time.Time` takes (a Time, or an ISO string in UTC)."""
    if value is None:
        return None
    from astropy.time import Time
    if isinstance(value, Time):
        if not value.isscalar:
            fail(name, "must be one time, not an array of times.")
        return value
    try:
        return Time(value, scale="utc")
    except (TypeError, ValueError):
        fail(name, f"must be a time (e.g. '2024-03-01T03:00:00', UTC), not {_show(value)}.")


def dask_scheduler(value, name="scheduler"):
    """None, a local dask scheduler's name, an address ``proto://host:port``, or a Client."""
    if value is None:
        return None
    if isinstance(value, str):
        if value in LOCAL_SCHEDULERS or "://" in value:
            return value
        fail(name, f"must be one of {', '.join(LOCAL_SCHEDULERS)} or a dask.distributed "
                   f"address such as tcp://127.0.0.1:8786, not {_show(value)}.")
    if type(value).__name__ == "Client" and hasattr(value, "submit"):
        return value
    fail(name, f"must be a scheduler name, an address or a distributed.Client, not "
               f"{_show(value)}.")


def folder(value, name):
    """None or an existing, writable folder."""
    if value is None:
        return None
    if not isinstance(value, (str, Path)):
        fail(name, f"must be a folder, not {_show(value)}.")
    path = Path(value)
    if not path.exists():
        fail(name, f"{path} does not exist; create it first (it holds a temporary folder "
                   "that is removed at the end).")
    if not path.is_dir():
        fail(name, f"{path} is a file, not a folder.")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(name, f"the folder {path} is not writable.")
    return str(path)


def per_frame_weights(value, name, n_frames):
    """None, a name, or ``n_frames`` finite numbers >= 0, not all 0 (per-pixel arrays pass)."""
    if value is None or isinstance(value, str):
        return value
    try:
        w = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        fail(name, f"must be numbers, not {_show(value)}.")
    if w.ndim != 1:
        return value  # per-pixel weights: checked against the frames' shapes by the combine
    if w.shape != (n_frames,):
        fail(name, f"must hold one weight per frame ({n_frames}), not {w.size}.")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        fail(name, f"must be finite numbers >= 0, not all 0, not {_show(value)}.")
    return value


def steps(value, name="per_frame_steps"):
    """None, or a list of callables, ``(callable, dict)`` pairs or ``(name, callable, dict)``
    triples (as `~shiftstack_ccd.steps.run_steps` takes them)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        fail(name, f"must be a list of steps, not {_show(value)}.")
    for step in value:
        if isinstance(step, tuple) and len(step) in (2, 3) and callable(step[-2]) \
                and isinstance(step[-1], dict) and (len(step) == 2 or isinstance(step[0], str)):
            continue
        if not callable(step):
            fail(name, f"each step must be a function, a (function, dict) pair or a (name, "
                       f"function, dict) triple, not {_show(step)}.")
    return list(value)


def stack_parameters(method="mean", size=None, reference_time=None, resample="auto",
                     sigma_clip=False, sigma_low=3.0, sigma_high=3.0, weights=None,
                     frame_weights=None, clip_gradient=1.0, pixel_scale=None,
                     orientation="north", sky_stack=True, per_frame_steps=None,
                     interpolation="bicubic", subtract_static=False, track_radius=None,
                     static_k=5.0, refine=False, refine_max_shift=None, refine_size=64,
                     scheduler=None, workdir=None, mem_limit=None, intermediate=None):
    """Check `shift_and_stack`'s parameters (all but the frames and ephemeris).

    Returns a dict of the values to use (strings read as times/angles where the parameter
    takes one); raises `ParameterError` naming the first bad one. Per-frame weights are
    checked against the number of frames by `shift_and_stack` (`per_frame_weights`).
    """
    from astropy.wcs import WCS
    out = dict(method=choice(method, "method", ("mean", "median", "sum")),
               size=output_size(size), reference_time=time(reference_time, "reference_time"),
               resample=choice(resample, "resample", RESAMPLE_METHODS),
               sigma_clip=boolean(sigma_clip, "sigma_clip"),
               sigma_low=number(sigma_low, "sigma_low", 0),
               sigma_high=number(sigma_high, "sigma_high", 0),
               clip_gradient=number(clip_gradient, "clip_gradient", 0, strict=False),
               pixel_scale=None if pixel_scale is None else angle(pixel_scale, "pixel_scale"),
               sky_stack=boolean(sky_stack, "sky_stack"),
               per_frame_steps=steps(per_frame_steps),
               interpolation=choice(interpolation, "interpolation", ("bicubic", "bilinear")),
               subtract_static=boolean(subtract_static, "subtract_static"),
               # below 2 pixels the template keeps most of the target's light, which the
               # subtraction then removes from the target (600 of 3000 at 0.5 pixel)
               track_radius=None if track_radius is None else number(
                   track_radius, "track_radius", 2, strict=False),
               static_k=number(static_k, "static_k", 0),
               refine=boolean(refine, "refine"),
               refine_max_shift=None if refine_max_shift is None else number(
                   refine_max_shift, "refine_max_shift", 0),
               refine_size=integer(refine_size, "refine_size", minimum=8),
               scheduler=dask_scheduler(scheduler),
               workdir=folder(workdir, "workdir"),
               mem_limit=None if mem_limit is None else int(byte_size(mem_limit, "mem_limit")),
               weights=weights, frame_weights=frame_weights, orientation=orientation)
    if not (isinstance(orientation, WCS) or orientation in ("north", "first")):
        fail("orientation", f"must be 'north', 'first' or a WCS, not {_show(orientation)}.")
    if not (weights is None or (isinstance(weights, str) and weights in WEIGHTS)
            or not isinstance(weights, str)):
        fail("weights", f"must be None, {', '.join(repr(w) for w in WEIGHTS)} or numbers, not "
                        f"{_show(weights)}.")
    if not (frame_weights is None or frame_weights == "exptime"
            or not isinstance(frame_weights, str)):
        fail("frame_weights", f"must be None, 'exptime' or numbers, not {_show(frame_weights)}.")
    if intermediate is not None and not callable(intermediate):
        fail("intermediate", f"must be a function called as intermediate(k, image), not "
                             f"{_show(intermediate)}.")
    out["intermediate"] = intermediate
    return out


def available_memory():
    """Bytes of memory available to this process now (None when the system does not say)."""
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil comes with dask.distributed; without it, ask the system
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


def _bytes(n):
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000


def check_stack_memory(shape, n_frames, n_products, workdir, available=None):
    """Refuse, before allocating, a stack whose frames on the output grid exceed memory.

    Parameters
    ----------
    shape : (int, int)
        The output grid.
    n_frames : int
        Number of frames.
    n_products : int
        Grids kept per frame (the target stack, and the sky stack if made).
    workdir : str or None
        With a work folder only a few frames are in memory at a time.
    available : int, optional
        Bytes available (default: asked of the system).

    Returns
    -------
    estimate : int
        Bytes the stack needs in memory.
    """
    available = available_memory() if available is None else available
    one = int(shape[0]) * int(shape[1]) * BYTES_PER_PIXEL
    # the frames on the grid (or a few, with a work folder), plus the combine's result
    # (data, uncertainty, mask, coverage) and a block of working arrays
    held = (2 if workdir else n_frames) * n_products + 4
    estimate = one * held
    if available is None or estimate <= available:
        return estimate
    ny, nx = shape
    hint = "give a smaller size (--size)"
    if not workdir and one * (2 * n_products + 4) <= available:
        hint += (" or a work folder (workdir=..., --workdir DIR) to keep the frames on disk, "
                 "which gives the same result")
    fail("size", f"an output of {ny} x {nx} pixels needs about {_bytes(estimate)} of memory "
                 f"for {n_frames} frames ({BYTES_PER_PIXEL} bytes per pixel per frame), but "
                 f"{_bytes(available)} is available; {hint}.")
