# Licensed under a 3-clause BSD style license - see LICENSE
"""`shift_and_stack`: the whole job, composed from the public steps, and its result."""

import logging
import warnings

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS

from ._utils import atomic_output, frame_label, require_celestial_wcs, set_card
from .combine import combine_frames
from .exceptions import FrameError
from .frames import mid_exposure_time, read_frames
from .resample import resample_to_target
from .target_frame import TargetFrame

__all__ = ["StackResult", "shift_and_stack"]

log = logging.getLogger(__name__)


class StackResult:
    """The products of `shift_and_stack`.

    Attributes
    ----------
    stack : `~astropy.nddata.CCDData`
        The frames combined on the target's motion, target on the centre pixel; unit,
        `~astropy.nddata.StdDevUncertainty`, mask, WCS (the target plane at the reference time)
        and a provenance header.
    sky_stack : `~astropy.nddata.CCDData` or None
        The same frames combined on the stars (the fixed plane), where the target trails.
    coverage : `~numpy.ndarray`
        Number of frames contributing to each pixel of ``stack``.
    table : `~astropy.table.Table`
        One row per frame: file, mid-exposure time, the target's pixel in the frame, its
        offset in the target plane, the resampling path, the weight and the fraction of the
        frame's pixels rejected by clipping.
    target_frame : `~shiftstack_ccd.target_frame.TargetFrame`
        The grid everything was resampled onto.
    """

    def __init__(self, stack, sky_stack, coverage, table, target_frame):
        self.stack = stack
        self.sky_stack = sky_stack
        self.coverage = coverage
        self.table = table
        self.target_frame = target_frame

    @property
    def target_pixel(self):
        """0-based ``(x, y)`` of the target in ``stack``."""
        return self.target_frame.center_pixel

    def to_hdulist(self):
        """The multi-extension FITS form written by `write`.

        Extensions: primary (the target stack), ``UNCERT`` (its standard deviation),
        ``MASK``, ``COVERAGE``, ``SKY`` and ``SKYUNC`` (the sky stack, if made) and ``FRAMES``
        (the per-frame table).
        """
        hdul = self.stack.to_hdu(hdu_mask="MASK", hdu_uncertainty="UNCERT",
                                 as_image_hdu=False)
        hdul["MASK"].data = hdul["MASK"].data.astype(np.uint8)
        cov = fits.ImageHDU(self.coverage.astype(np.int16), name="COVERAGE")
        cov.header.update(self.stack.wcs.to_header())
        hdul.append(cov)
        if self.sky_stack is not None:
            sky = fits.ImageHDU(self.sky_stack.data, name="SKY")
            sky.header.update(self.sky_stack.wcs.to_header())
            sky.header["BUNIT"] = self.sky_stack.unit.to_string("fits")
            hdul.append(sky)
            skyunc = fits.ImageHDU(self.sky_stack.uncertainty.array, name="SKYUNC")
            skyunc.header.update(self.sky_stack.wcs.to_header())
            hdul.append(skyunc)
        table = self.table.copy()
        table["mid_time"] = table["mid_time"].utc.isot
        hdul.append(fits.BinTableHDU(table, name="FRAMES"))
        return hdul

    def write(self, path, overwrite=False):
        """Write the result as one multi-extension FITS file, atomically.

        Parameters
        ----------
        path : str or path
            Output file name.
        overwrite : bool
            Replace an existing file; otherwise an existing file is an error and is left as
            it was.
        """
        hdul = self.to_hdulist()
        with atomic_output(path, overwrite=overwrite) as tmp:
            hdul.writeto(tmp, overwrite=True)
        log.info("wrote %s", path)

    @classmethod
    def read(cls, path):
        """Read back a file written by `write` (the target frame is not restored)."""
        stack = CCDData.read(path, hdu=0, hdu_mask="MASK", hdu_uncertainty="UNCERT")
        stack.mask = stack.mask.astype(bool)
        with fits.open(path) as hdul:
            coverage = np.asarray(hdul["COVERAGE"].data)
            sky = None
            if "SKY" in hdul:
                sky = CCDData(np.asarray(hdul["SKY"].data), unit=hdul["SKY"].header["BUNIT"],
                              wcs=WCS(hdul["SKY"].header),
                              uncertainty=StdDevUncertainty(np.asarray(hdul["SKYUNC"].data)))
            table = Table.read(hdul["FRAMES"])
            table["mid_time"] = Time(table["mid_time"], scale="utc")
        return cls(stack, sky, coverage, table, None)


def _ensure_uncertainty(frame, label):
    """Give a frame without uncertainty a constant background-limited one, loudly."""
    if frame.uncertainty is not None:
        return frame
    good = np.isfinite(frame.data)
    if frame.mask is not None:
        good &= ~frame.mask
    sigma = float(sigma_clipped_stats(frame.data[good], sigma=3.0)[2])
    if not np.isfinite(sigma) or sigma <= 0:
        raise FrameError(f"{label}: has no uncertainty and its noise cannot be estimated "
                         "from the data (constant or empty frame).")
    log.info("%s: no uncertainty given; using the sky noise %.4g %s (sigma-clipped standard "
             "deviation of the frame; a background-limited approximation)", label, sigma,
             frame.unit)
    out = frame.copy()
    out.uncertainty = StdDevUncertainty(np.full(frame.shape, sigma, dtype=frame.data.dtype))
    return out


def _apply_steps(frame, steps):
    for step in steps or ():
        if isinstance(step, tuple):
            function, kwargs = step
        else:
            function, kwargs = step, {}
        frame = function(frame, **kwargs)
    return frame


def shift_and_stack(frames, ephemeris, method="mean", size=None, reference_time=None,
                    resample="auto", sigma_clip=False, sigma_low=3.0, sigma_high=3.0,
                    weights=None, pixel_scale=None, orientation="north", sky_stack=True,
                    per_frame_steps=None, interpolation="bicubic"):
    """Stack frames on the motion of a moving target.

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData`, or anything `read_frames` accepts
        The exposures, each with a celestial WCS and a readable mid-exposure time.
    ephemeris : `~shiftstack_ccd.ephemeris.Ephemeris`
        The target's motion (``ephemeris.at(times)``).
    method : {'mean', 'median', 'sum'}
        How to combine (see `combine_frames`).
    size : int, (int, int) or `~astropy.units.Quantity`, optional
        Size of the output, centred on the target. Default: large enough for every frame.
    reference_time : `~astropy.time.Time`, optional
        The epoch of the output's WCS (the target plane's tangent point). Default: the mean
        mid-exposure time.
    resample : {'auto', 'shift', 'warp'}
        Resampling path (see `resample_to_target`).
    interpolation : {'bicubic', 'bilinear'}
        Resampling kernel for the data (see `resample_to_target`).
    sigma_clip, sigma_low, sigma_high : bool, float, float
        Outlier rejection before combining.
    weights : array-like, optional
        One weight per frame.
    pixel_scale : `~astropy.units.Quantity`, optional
        Output pixel scale (default: the inputs' median).
    orientation : {'north', 'first'} or `~astropy.wcs.WCS`
        Orientation of the output grid (see `TargetFrame`). ``'first'`` keeps the first
        frame's, which lets unrotated, undistorted frames take the fast shift path.
    sky_stack : bool
        Also combine the frames on the stars.
    per_frame_steps : list, optional
        Steps applied to each frame before resampling, in order: callables
        ``CCDData -> CCDData`` or ``(callable, kwargs)`` pairs, e.g.
        ``[(clean_cosmic_rays, {"method": "median"})]``.

    Returns
    -------
    result : `StackResult`

    Raises
    ------
    FrameError
        A frame without WCS, time or usable pixels, or with the target off the frame; the
        message names the file.
    EphemerisError
        An epoch outside the ephemeris.

    Notes
    -----
    A frame without an uncertainty is given a constant one, its robust sky noise
    (the sigma-clipped standard deviation of the frame), and this is logged: a background-limited approximation that
    ignores the target's own photon noise. Give frames a proper uncertainty (e.g.
    `ccdproc.create_deviation` with gain and read noise) for bright targets.
    """
    if not (isinstance(frames, (list, tuple)) and frames
            and all(isinstance(f, CCDData) for f in frames)):
        frames = read_frames(frames)
    frames = list(frames)
    labels = [frame_label(f, i) for i, f in enumerate(frames)]
    for i, frame in enumerate(frames):
        require_celestial_wcs(frame, "shift_and_stack", i)
    times = Time([mid_exposure_time(f) for f in frames])

    processed = []
    for frame, label in zip(frames, labels):
        frame = _apply_steps(frame, per_frame_steps)
        processed.append(_ensure_uncertainty(frame, label))

    grid = TargetFrame.for_frames(processed, ephemeris, reference_time=reference_time,
                                  size=size, pixel_scale=pixel_scale, orientation=orientation,
                                  times=times)
    offsets = grid.offset(times)
    positions = [grid.check_on_frame(f, t, label)
                 for f, t, label in zip(processed, times, labels)]

    on_target, on_sky, paths = [], [], []
    for i, (frame, t) in enumerate(zip(processed, times)):
        resampled = resample_to_target(frame, grid.wcs_at(t), grid.shape, method=resample,
                                       interpolation=interpolation)
        paths.append(resampled.meta["SSRESAMP"])
        on_target.append(resampled)
        if sky_stack:
            on_sky.append(resample_to_target(frame, grid.wcs, grid.shape, method=resample,
                                             interpolation=interpolation))
        log.info("%s: resampled (%s), target offset (%.2f, %.2f) pix", labels[i], paths[-1],
                 offsets[0][i], offsets[1][i])

    combined = combine_frames(on_target, method=method, sigma_clip=sigma_clip,
                              sigma_low=sigma_low, sigma_high=sigma_high, weights=weights)
    stack = combined.image
    # Each frame went onto its own epoch's grid; the stack is described by the plane at the
    # reference time, where the target sits on the centre pixel.
    stack.wcs = grid.wcs
    sky = None
    if sky_stack:
        sky = combine_frames(on_sky, method=method, sigma_clip=sigma_clip, sigma_low=sigma_low,
                             sigma_high=sigma_high, weights=weights).image

    n = len(frames)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    table = Table()
    table["file"] = [str(label) for label in labels]
    table["mid_time"] = times.utc
    table["mjd_mid"] = times.utc.mjd
    table["x_frame"] = [p[0] for p in positions]
    table["y_frame"] = [p[1] for p in positions]
    table["dx"] = offsets[0]
    table["dy"] = offsets[1]
    table["dx"].unit = table["dy"].unit = u.pix
    table["resample"] = paths
    table["weight"] = w / w.sum()
    table["rejected_fraction"] = combined.rejected_fraction
    # what the per-frame steps recorded, where they did (see clean_cosmic_rays, correct_wcs)
    for key, column in _STEP_COLUMNS.items():
        values = [f.meta.get(key) for f in processed]
        if any(v is not None for v in values):
            table[column] = [np.nan if v is None else float(v) for v in values]

    header = _provenance_header(stack.meta, grid, ephemeris, table, method, resample)
    stack.meta = header
    if sky is not None:
        sky.meta = header.copy()
        sky.meta["SSKIND"] = ("sky", "stacked on the stars (fixed plane)")
    stack.meta["SSKIND"] = ("target", "stacked on the target's motion")
    return StackResult(stack, sky, combined.coverage, table, grid)


#: Header cards written by per-frame steps, copied into the per-frame table.
_STEP_COLUMNS = {"CRNFLAG": "cr_flagged", "WCSDX": "wcs_dx", "WCSDY": "wcs_dy",
                 "WCSNSTAR": "wcs_nstars", "WCSRMSPX": "wcs_rms_pix"}


def _provenance_header(meta, grid, ephemeris, table, method, resample):
    header = fits.Header()
    for key, value in meta.items():
        header[key] = value
    for key, value, comment in grid.header_cards():
        set_card(header, key, value, comment)
    header["SSRESMP"] = (resample, "requested resampling path")
    if hasattr(ephemeris, "header_cards"):
        for key, value, comment in ephemeris.header_cards():
            set_card(header, key, value, comment)
    times = Time(table["mid_time"])
    header["MJD-AVG"] = (float(np.mean(times.mjd)), "[d] mean mid-exposure time (UTC)")
    header["DATE-AVG"] = (Time(np.mean(times.mjd), format="mjd", scale="utc").isot,
                          "mean mid-exposure time (UTC)")
    header["TIMESYS"] = ("UTC", "time scale of the time cards")
    if len(table) > 999:
        warnings.warn("more than 999 frames: per-frame header cards are written for the first "
                      "999 only; the FRAMES table has them all.", AstropyUserWarning)
    for i, row in enumerate(table[:999], start=1):
        set_card(header, f"SSF{i:03d}", str(row["file"])[-60:], "input frame")
        header[f"SST{i:03d}"] = (float(row["mjd_mid"]), "[d] mid-exposure MJD (UTC)")
        header[f"SSX{i:03d}"] = (round(float(row["dx"]), 4), "[pix] target offset x")
        header[f"SSY{i:03d}"] = (round(float(row["dy"]), 4), "[pix] target offset y")
    header.add_history(f"shiftstack_ccd: {len(table)} frames stacked by {method} on the "
                       f"target's motion")
    return header
