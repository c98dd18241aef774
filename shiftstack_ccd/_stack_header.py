"""The header cards of a stack: its provenance, its plane, its frames, what was done on it.

Kept apart from `shiftstack_ccd.stack` (which runs the stack) so that each stays small.
"""

import warnings

import numpy as np
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning

from ._utils import as_header, frames_wcs_error
from .combine import exposure_header_cards
from .exceptions import FrameError
from .steps import provenance_header

__all__ = []


def stack_header(meta, grid, ephemeris, table, method, resample, headers):
    """The stack's header: the combine's cards, then the plane, the ephemeris, the mean time
    and one card per frame (`~shiftstack_ccd.steps.provenance_header`)."""
    cards = list(grid.header_cards())
    cards.append(("SSRESMP", resample, "requested resampling path"))
    conventions = sorted(set(table["flux_convention"]))
    if conventions:
        cards.append(("SSFLUXC", "+".join(conventions), "flux convention: per-pixel or surface"))
    if hasattr(ephemeris, "header_cards"):
        cards += ephemeris.header_cards()
    times = Time(table["mid_time"])
    try:  # exposure-weighted, when every frame has an exposure time
        cards += exposure_header_cards(headers, weights=np.asarray(table["weight"]))
    except FrameError:
        mean = Time(np.mean(times.mjd), format="mjd", scale="utc")
        cards += [("MJD-AVG", float(mean.mjd), "[d] mean mid-exposure time (UTC)"),
                  ("DATE-AVG", mean.isot, "mean mid-exposure time (UTC)"),
                  ("TIMESYS", "UTC", "time scale of the time cards")]
    wcs_error = frames_wcs_error(headers, table)
    if wcs_error is not None:
        cards.append(("SSWCSRMS", round(wcs_error, 4), "[arcsec] 1-sigma WCS error per axis"))
    if len(table) > 999:
        warnings.warn("more than 999 frames: per-frame header cards are written for the first "
                      "999 only; the FRAMES table has them all.", AstropyUserWarning)
    for i, row in enumerate(table[:999], start=1):
        cards += [(f"SSF{i:03d}", str(row["file"])[-60:], "input frame"),
                  (f"SST{i:03d}", float(row["mjd_mid"]), "[d] mid-exposure MJD (UTC)"),
                  (f"SSX{i:03d}", round(float(row["dx"]), 4), "[pix] target offset x"),
                  (f"SSY{i:03d}", round(float(row["dy"]), 4), "[pix] target offset y")]
    return provenance_header(as_header(meta), cards, f"shiftstack_ccd: {len(table)} frames "
                             f"stacked by {method} on the target's motion")


def target_cards(static, refine, table, reference_time):
    """The target stack's own cards: its kind, the static-sky and refinement records.

    ``static`` is ``None`` without static-sky subtraction, else ``(track_radius,
    variance_factor, aperture_radius)``; ``refine`` says whether per-frame offsets were
    refined, and then the refined track's shift of the target (register's notes) is recorded.
    """
    cards = [("SSKIND", "target", "stacked on the target's motion"),
             ("SSSTATIC", static is not None, "static-sky template subtracted")]
    if static is not None:
        track_radius, factor, radius = static
        cards += [("SSTRACKR", float(track_radius), "[pix] target track masked in template"),
                  ("SSSTVARF", round(factor, 4), "variance x this: template shares noise"),
                  ("SSSTAPR", round(radius, 2), "[pix] aperture radius of SSSTVARF")]
    cards.append(("SSREFINE", bool(refine), "per-frame offsets refined on the target"))
    if refine:
        from .register import refinement_cards
        cards += list(refinement_cards(table, reference_time))
    return cards
