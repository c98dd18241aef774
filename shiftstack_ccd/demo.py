# Licensed under a 3-clause BSD style license - see LICENSE
"""The offline demonstration behind ``shiftstack-ccd demo``.

It simulates a short sequence with a target too faint to see in one frame, writes the
frames and the ephemeris to disk, reads them back as a user would, stacks them, and measures
the target's S/N in one frame and in the stack with the same empty-sky noise estimate.
"""

import logging
from pathlib import Path

import numpy as np
from astropy import units as u

from ._utils import check_output_path
from ._validate import integer, number
from .datasets import simulate_observation
from .ephemeris import Ephemeris
from .frames import read_frames
from .photometry import aperture_snr
from .stack import shift_and_stack
from .visualization import write_preview

__all__ = ["DemoReport", "run_demo"]

log = logging.getLogger(__name__)


class DemoReport:
    """Figures and files produced by `run_demo`."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def lines(self):
        """The human-readable summary printed by the command line."""
        return [
            f"simulated {self.n_frames} frames in {self.frames_dir}",
            f"target S/N in one frame: {self.snr_single:.1f} (simulated: {self.snr_requested:.1f};"
            " median over the frames)",
            f"target S/N in the {self.method} stack: {self.snr_stack:.1f} "
            f"(ideal sqrt(N) gain: {self.snr_single * np.sqrt(self.n_frames):.1f})",
            f"wrote {self.stack_path}",
            f"wrote {self.preview_path}",
        ]


def run_demo(output_dir, n_frames=9, snr=3.0, seed=3, method="mean", overwrite=False):
    """Simulate, stack and measure a faint moving target; write FITS and PNG.

    Parameters
    ----------
    output_dir : str or path
        Folder for ``frames/``, ``ephemeris.ecsv``, ``stack.fits`` and ``stack.png``.
    n_frames : int
        Number of frames.
    snr : float
        The target's S/N in one frame.
    seed : int
        Random seed of the simulation.
    method : str
        Combine method.
    overwrite : bool
        Replace existing outputs.

    Returns
    -------
    report : `DemoReport`

    Raises
    ------
    ParameterError
        ``n_frames`` below 2, ``snr`` not above 0, ``seed`` negative.
    OutputExistsError, OutputError
        An output exists (and ``overwrite`` is False) or cannot be written; nothing is done.
    """
    n_frames = integer(n_frames, "n_frames", minimum=2)  # one frame is not a stack
    snr = number(snr, "snr", 0)
    seed = integer(seed, "seed", minimum=0)
    out = Path(output_dir)
    for name in ("ephemeris.ecsv", "stack.fits", "stack.png"):  # before any work
        check_output_path(out / name, overwrite=overwrite)
    # A main-belt asteroid near opposition moves about 30"/h: over nine 2.5-minute steps it
    # crosses ~20 pixels of 0.5", so the stars' and the target's trails are plain to see.
    sim = simulate_observation(n_frames=n_frames, target_snr=snr, seed=seed,
                               target_rate=(-28.0, 9.0) * u.arcsec / u.hour)
    paths = sim.write(out / "frames", overwrite=overwrite)
    eph_path = out / "ephemeris.ecsv"
    sim.ephemeris.write(eph_path, overwrite=overwrite)

    frames = read_frames([str(p) for p in paths])
    ephemeris = Ephemeris.from_table(eph_path)
    result = shift_and_stack(frames, ephemeris, method=method, sigma_clip=True)

    # Same aperture and the same empty-sky noise estimate in one frame and in the stack.
    # The single-frame figure is the median flux over the frames (one S/N-3 measurement
    # alone scatters by +/-1, and a cosmic ray on the target would pull a mean) over the
    # mean noise.
    radius = float(sim.psf_fwhm)
    singles = [aperture_snr(f, (row["x"], row["y"]), radius)
               for f, row in zip(frames, sim.truth)]
    snr_single = (np.median([m["flux"] for m in singles])
                  / np.mean([m["noise"] for m in singles]))
    full = result.coverage == len(frames)
    stacked = aperture_snr(result.stack, result.target_pixel, radius, region=full)
    x0, y0 = sim.truth["x"][0], sim.truth["y"][0]

    stack_path = out / "stack.fits"
    preview_path = out / "stack.png"
    result.write(stack_path, overwrite=overwrite)
    half = 50
    cx, cy = (int(round(v)) for v in result.target_pixel)
    fx, fy = int(round(x0)), int(round(y0))
    write_preview(preview_path,
                  [frames[0].data[fy - half:fy + half + 1, fx - half:fx + half + 1],
                   result.stack.data[cy - half:cy + half + 1, cx - half:cx + half + 1],
                   result.sky_stack.data[cy - half:cy + half + 1, cx - half:cx + half + 1]],
                  titles=[f"one frame (S/N {singles[0]['snr']:.1f})",
                          f"{n_frames} frames on the target (S/N {stacked['snr']:.1f})",
                          f"{n_frames} frames on the stars"],
                  marks=[(x0 - fx + half, y0 - fy + half), (half, half), None],
                  overwrite=overwrite)
    return DemoReport(n_frames=n_frames, frames_dir=out / "frames", snr_requested=snr,
                      snr_single=snr_single, snr_stack=stacked["snr"], method=method,
                      stack_path=stack_path, preview_path=preview_path,
                      result=result)
