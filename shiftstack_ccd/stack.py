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
from .photometry import stellar_fwhm
from .resample import resample_to_target
from .static_sky import static_sky_template, subtract_static_sky
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
                    per_frame_steps=None, interpolation="bicubic", subtract_static=False,
                    track_radius=None, static_k=5.0):
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
    subtract_static : bool
        Subtract a static-sky template (the frames stacked on the stars with the target's
        track masked) from every frame before stacking on the target, and mask what it
        cannot remove (see `~shiftstack_ccd.static_sky`). The target stack then holds the
        target and noise instead of star trails. ``sky_stack`` stays unsubtracted.
    track_radius : float, optional
        Radius (output pixels) masked around the target when building the template.
        Default: 4 times the stars' FWHM measured on the sky stack (at least 5 pixels): a
        smaller radius lets the target's wings into the template, which then removes them
        from the target (1.3% of the peak at 2 FWHM, 0.1% at 4 FWHM on simulated frames;
        1.9% of the flux at 2.6 FWHM on the Lowell frames, 0.9% at 4.2). A larger one
        leaves the sky near a slow mover unsubtracted.
    static_k : float
        Residuals beyond ``static_k`` sigma after subtraction (away from the target) are
        masked.

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
    # Only the part of each frame that can land on the output grids is resampled.
    for i, t in enumerate(times):
        processed[i], positions[i] = _crop_to_grids(
            processed[i], positions[i], [grid.wcs_at(t), grid.wcs], grid.shape)

    on_sky = []
    if sky_stack or subtract_static:
        on_sky = [resample_to_target(frame, grid.wcs, grid.shape, method=resample,
                                     interpolation=interpolation) for frame in processed]
    template = None
    if subtract_static:
        if track_radius is None:
            fwhm = stellar_fwhm(combine_frames(on_sky, method="median").image)
            track_radius = max(5.0, 4.0 * fwhm) if fwhm else 10.0
            log.info("static sky: stars' FWHM %s pixels; target track radius %.1f pixels",
                     f"{fwhm:.2f}" if fwhm else "unknown", track_radius)
        cx, cy = grid.center_pixel
        template = static_sky_template(
            on_sky, [(cx + dx, cy + dy) for dx, dy in zip(*offsets)], track_radius=track_radius)

    on_target, paths = [], []
    for i, (frame, t) in enumerate(zip(processed, times)):
        if template is not None:
            frame = subtract_static_sky(frame, template, positions[i], track_radius=track_radius,
                                        k=static_k, interpolation=interpolation)
            processed[i] = frame
        resampled = resample_to_target(frame, grid.wcs_at(t), grid.shape, method=resample,
                                       interpolation=interpolation)
        paths.append(resampled.meta["SSRESAMP"])
        on_target.append(resampled)
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
    del on_sky

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
    stack.meta["SSSTATIC"] = (bool(subtract_static), "static-sky template subtracted")
    if subtract_static:
        stack.meta["SSTRACKR"] = (float(track_radius), "[pix] target track masked in template")
    return StackResult(stack, sky, combined.coverage, table, grid)


def _crop_to_grids(frame, position, wcses, shape, margin=8):
    """The frame cut to the box that the output grids can draw on, and the target in it.

    Saves resampling (and static-sky subtraction) of pixels that fall off the output, which
    for a small ``size`` is most of the frame. The margin covers the interpolation kernel.
    CCDData slicing keeps the WCS consistent.
    """
    ny, nx = shape
    edge = np.linspace(-0.5, 1, 9)
    border = np.concatenate([np.column_stack([edge * nx, np.full(9, -0.5)]),
                             np.column_stack([edge * nx, np.full(9, ny - 0.5)]),
                             np.column_stack([np.full(9, -0.5), edge * ny]),
                             np.column_stack([np.full(9, nx - 0.5), edge * ny])])
    xs, ys = [], []
    for wcs in wcses:
        x, y = frame.wcs.world_to_pixel(wcs.pixel_to_world(border[:, 0], border[:, 1]))
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        return frame, position
    fy, fx = frame.shape
    x0 = max(0, int(np.floor(xs.min())) - margin)
    x1 = min(fx, int(np.ceil(xs.max())) + margin + 1)
    y0 = max(0, int(np.floor(ys.min())) - margin)
    y1 = min(fy, int(np.ceil(ys.max())) + margin + 1)
    if (x0, y0, x1, y1) == (0, 0, fx, fy) or x1 - x0 < 2 * margin or y1 - y0 < 2 * margin:
        return frame, position
    cropped = frame[y0:y1, x0:x1]
    return cropped, (position[0] - x0, position[1] - y0)


#: Header cards written by per-frame steps, copied into the per-frame table.
_STEP_COLUMNS = {"CRNFLAG": "cr_flagged", "WCSDX": "wcs_dx", "WCSDY": "wcs_dy",
                 "WCSNSTAR": "wcs_nstars", "WCSRMSPX": "wcs_rms_pix",
                 "SSSKYOFF": "static_sky_offset", "SSNSTMSK": "static_masked"}


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
