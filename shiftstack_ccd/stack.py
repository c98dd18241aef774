# Licensed under a 3-clause BSD style license - see LICENSE
"""`shift_and_stack`: the whole job, composed from the public steps, and its result."""

import contextlib
import functools
import logging
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.table import Table
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS

from ._frame_noise import (MIN_CUTOUT, add_noise_columns, noise_and_background, noise_cards,
                           warn_noise_ratios)
from ._parallel import map_frames
from ._crop import crop_to_grids
from ._photometric import divided, frame_scales, snr_factors, star_photometry
from ._utils import as_header, atomic_output, check_output_path, require_celestial_wcs, set_card
from ._stack_header import stack_header, target_cards
from ._validate import check_stack_memory, per_frame_weights, stack_parameters
from .combine import RunningStack, combine_frames, frame_factors
from .config import conf
from .ephemeris import Ephemeris
from .exceptions import FrameError, ParameterError
from .frames import Footprint, exposure_time, mid_exposure_time, read_footprint, read_frame
from .noise import mask_outside_trimsec, noise_model
from .resample import DRIZZLE_KERNELS, resample_to_grids
from .stars import stellar_fwhm
from .static_sky import (static_sky_template, static_sky_variance_factor,
                         subtract_static_sky)
from .steps import run_steps
from .target_frame import TargetFrame, check_target_on_frame

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
        if self.target_frame is None:  # read back from a file: the target plane's tangent
            crpix = self.stack.wcs.wcs.crpix  # point is the target (1-based FITS CRPIX)
            return float(crpix[0] - 1), float(crpix[1] - 1)
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
            # as CCDData writes BUNIT: the FITS format raises for units outside the standard
            # (electron, which HST/JWST frames carry)
            sky.header["BUNIT"] = self.sky_stack.unit.to_string()
            hdul.append(sky)
            skyunc = fits.ImageHDU(self.sky_stack.uncertainty.array, name="SKYUNC")
            skyunc.header.update(self.sky_stack.wcs.to_header())
            hdul.append(skyunc)
        table = self.table.copy()
        table["mid_time"] = table["mid_time"].utc.isot
        frames = fits.BinTableHDU(table, name="FRAMES")
        for i, name in enumerate(table.colnames, start=1):  # units and conventions, in FITS
            if table[name].description:
                set_card(frames.header, f"TTYPE{i}", name, table[name].description)
        hdul.append(frames)
        return hdul

    def write(self, path, overwrite=False):
        """Write the result as one multi-extension FITS file, atomically.

        Parameters
        ----------
        path : str or path
            Output file name.
        overwrite : bool
            Replace an existing file; otherwise an existing file is an error and is left as
            it was. A file that is one of the stacked frames is never replaced.

        Raises
        ------
        OutputError
            ``path`` is one of the input frames, a folder, or cannot be written.
        OutputExistsError
            ``path`` exists and ``overwrite`` is False.
        """
        inputs = [] if self.table is None else [str(f) for f in self.table["file"]]
        check_output_path(path, overwrite=overwrite, inputs=inputs)
        hdul = self.to_hdulist()
        with atomic_output(path, overwrite=overwrite) as tmp:
            hdul.writeto(tmp, overwrite=True)
        log.info("wrote %s", path)

    @classmethod
    def read(cls, path):
        """Read back a file written by `write` (the target frame is not restored;
        ``target_pixel`` comes from the stack's WCS)."""
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


class _Context:
    """What every per-frame task needs: picklable, so tasks can run in other processes."""

    def __init__(self, **values):
        self.__dict__.update(values)


class _ExactWCS:
    """A grid's TAN WCS that pickles exactly.

    An astropy WCS pickles through its FITS header, which rounds the numbers (CRVAL to about
    1e-12 degree): enough to make a frame resampled in another process differ in the last
    bits from the same frame resampled here. The grids are plain TAN projections, so their
    parameters are kept as arrays and the WCS rebuilt from them.
    """

    def __init__(self, wcs):
        w = wcs.wcs
        self.params = (list(w.ctype), np.array(w.crval), np.array(w.crpix),
                       np.array(w.cd), w.radesys)
        self.pixel_shape = wcs.pixel_shape
        self._wcs = wcs

    def __getstate__(self):
        return {"params": self.params, "pixel_shape": self.pixel_shape}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._wcs = None

    @property
    def wcs(self):
        if self._wcs is None:
            from astropy.wcs import WCS
            ctype, crval, crpix, cd, radesys = self.params
            wcs = WCS(naxis=2)
            wcs.wcs.ctype, wcs.wcs.crval, wcs.wcs.crpix, wcs.wcs.cd = ctype, crval, crpix, cd
            wcs.wcs.radesys = radesys
            wcs.wcs.set()
            wcs.pixel_shape = self.pixel_shape
            self._wcs = wcs
        return self._wcs


class _Stored:
    """An intermediate product written to the work folder."""

    def __init__(self, path):
        self.path = path


def _load(source, hdu=None, unit=None, footprint=None):
    """A frame in memory, an input file (with its `read_footprint`, when known), or an
    intermediate product from the work folder."""
    if isinstance(source, CCDData):
        return source
    if isinstance(source, _Stored):
        if source.path.endswith(".pickle"):
            with open(source.path, "rb") as file:
                return pickle.load(file)
        return CCDData.read(source.path, hdu_mask="MASK", hdu_uncertainty="UNCERT")
    return read_frame(source, hdu=hdu, unit=unit, footprint=footprint)


def _keep(frame, ctx, name, as_fits=True):
    """Keep a product in memory, or write it to the work folder.

    Products on the output grids go to FITS, which the combine reads in blocks of rows.
    Input frames go to a pickle: their WCS may carry distortions (SIP, TPV, lookup tables)
    that a FITS header written by CCDData would round or drop.
    """
    if ctx.workdir is None:
        return frame
    if as_fits:
        path = f"{ctx.workdir}/{name}.fits"
        frame.write(path, hdu_mask="MASK", hdu_uncertainty="UNCERT", overwrite=True)
    else:
        path = f"{ctx.workdir}/{name}.pickle"
        with open(path, "wb") as file:
            pickle.dump(frame, file, protocol=pickle.HIGHEST_PROTOCOL)
    return _Stored(path)


def _combinable(products):
    """What `combine_frames` reads: frames in memory, or the products' paths."""
    return [p.path if isinstance(p, _Stored) else p for p in products]


def _prepare_task(job, ctx):
    """Per-frame steps, target check, crop, noise and background, the frame on the sky grid;
    and on its target grid too when nothing needs all frames first (``ctx.one_pass``): the
    crop is then not kept."""
    index, source, target, label, footprint = job
    frame = run_steps(_load(source, ctx.hdu, ctx.unit, footprint), ctx.steps)
    # the detector model needs the whole raw frame (its overscan); the rest only the crop
    model = noise_model(frame, gain=ctx.gain, read_noise=ctx.read_noise, bias=ctx.bias,
                        label=label)
    frame = mask_outside_trimsec(frame)
    x, y = check_target_on_frame(frame, target, label)  # also: it still has a WCS
    step_cards = {key: frame.meta.get(key) for key in _STEP_COLUMNS if key in frame.meta}
    # Cropped first, so that nothing below works on pixels the output cannot show.
    frame, (cx, cy) = crop_to_grids(frame, (x, y),
                                    [ctx.target_wcs[index].wcs, ctx.grid_wcs.wcs], ctx.shape,
                                    min_size=MIN_CUTOUT)
    frame, noise_info = noise_and_background(frame, model, (cx, cy), ctx.background, label)
    # the frame on the sky grid, and in one pass on its target grid too (one call: what
    # depends on the frame alone is done once)
    grids = [ctx.grid_wcs.wcs] if ctx.need_sky else []
    if ctx.one_pass:
        grids.append(ctx.target_wcs[index].wcs)
    products = _resample(frame, grids, ctx) if grids else []
    sky = _keep(products[0], ctx, f"sky{index:04d}") if ctx.need_sky else None
    prepared = {"index": index, "sky": sky, "position": (x, y), "crop_position": (cx, cy),
                "step_cards": step_cards, "noise": noise_info}
    if ctx.one_pass:
        prepared["frame"] = None
        prepared["on_target"] = _on_target(index, frame, products[-1], ctx)
    else:
        prepared["frame"] = _keep(frame, ctx, f"frame{index:04d}", as_fits=False)
    return prepared


def _target_task(job, ctx):
    """Static-sky subtraction (if asked) and the frame on its epoch's target grid."""
    index, prepared, wcs = job
    frame = _load(prepared["frame"])
    if ctx.scales is not None:
        frame = divided(frame, ctx.scales[index])
    if ctx.template is not None:
        template = ctx.template
        template = CCDData(template.data, unit=template.unit, mask=template.mask,
                           uncertainty=template.uncertainty, meta=template.meta,
                           wcs=ctx.grid_wcs.wcs)  # the exact grid (see _ExactWCS)
        frame = subtract_static_sky(frame, template, prepared["crop_position"],
                                    track_radius=ctx.track_radius, k=ctx.static_k,
                                    interpolation=ctx.interpolation)
    return _on_target(index, frame, _resample(frame, [wcs.wcs], ctx)[0], ctx)


def _on_target(index, frame, resampled, ctx):
    """What the stack keeps of a frame resampled on its target grid."""
    cards = {key: frame.meta.get(key) for key in ("SSSKYOFF", "SSNSTMSK") if key in frame.meta}
    return {"index": index, "target": _keep(resampled, ctx, f"target{index:04d}"),
            "path": resampled.meta["SSRESAMP"], "area_ratio": resampled.meta["SSPIXAR"],
            "flux_convention": resampled.meta["SSFLUXC"], "static_cards": cards}


def _resample(frame, wcses, ctx):
    """A frame on output grids, as the stack's options say (`resample_to_grids`)."""
    return resample_to_grids(frame, wcses, ctx.shape, method=ctx.resample,
                             interpolation=ctx.interpolation, pixfrac=ctx.pixfrac,
                             kernel=ctx.drizzle_kernel)


def shift_and_stack(frames: Sequence[CCDData | str | os.PathLike] | str | os.PathLike,
                    ephemeris: Ephemeris, method: Literal["mean", "median", "sum"] = "mean",
                    size: int | tuple[int, int] | u.Quantity | None = None,
                    reference_time: Time | None = None,
                    resample: Literal["auto", "shift", "warp", "drizzle"] = "auto",
                    sigma_clip: bool = False, sigma_low: float = 3.0, sigma_high: float = 3.0,
                    weights: Literal["inverse-variance", "exptime", "snr"] | Sequence[float]
                    | None = None,
                    frame_weights: Literal["exptime"] | Sequence[float] | None = None,
                    clip_gradient: float = 1.0, pixel_scale: u.Quantity | None = None,
                    orientation: Literal["north", "first"] | WCS = "north",
                    sky_stack: bool = True, per_frame_steps: list | None = None,
                    interpolation: Literal["bicubic", "bilinear"] = "bicubic",
                    subtract_static: bool = False, track_radius: float | None = None,
                    static_k: float = 5.0, refine: bool = False,
                    refine_max_shift: float | None = None, refine_size: int = 64,
                    scheduler: str | None = None, workdir: str | os.PathLike | None = None,
                    mem_limit: float | str | None = None,
                    intermediate: Callable | None = None, hdu: int | str | None = None,
                    unit: str | None = None, background: Literal["model"] | None = "model",
                    scale: Literal["stars"] | Sequence[float] | None = None,
                    gain: float | u.Quantity | None = None,
                    read_noise: float | u.Quantity | None = None,
                    bias: float | None = None, pixfrac: float = 1.0,
                    drizzle_kernel: str = "square") -> StackResult:
    """Stack frames on the motion of a moving target.

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData`, or anything `read_frames` accepts
        The exposures, each with a celestial WCS and a readable mid-exposure time. Paths are
        read one at a time, by the task that processes them (see ``workdir``).
    ephemeris : `~shiftstack_ccd.ephemeris.Ephemeris`
        The target's motion (``ephemeris.at(times)``).
    method : {'mean', 'median', 'sum'}
        How to combine (see `combine_frames`).
    size : int, (int, int) or `~astropy.units.Quantity`, optional
        Size of the output, centred on the target. Default: large enough for every frame.
    reference_time : `~astropy.time.Time`, optional
        The epoch of the output's WCS (the target plane's tangent point). Default: the mean
        mid-exposure time.
    resample : {'auto', 'shift', 'warp', 'drizzle'}
        Resampling path (see `resample_to_target`). Whatever the path, data in counts per
        pixel keep their flux when the output pixels differ in size from a frame's (they are
        scaled by the pixel-area ratio, recorded per frame in ``result.table``); a surface
        brightness (per solid angle) is left as it is. ``'drizzle'`` (STScI's `drizzle`) is
        the right choice when the output pixels are larger than the frames'.
    sigma_clip, sigma_low, sigma_high, clip_gradient : bool, float, float, float
        Outlier rejection before combining (see `combine_frames`).
    weights : None, 'inverse-variance', 'exptime', 'snr' or array-like
        Per-pixel or per-frame weights of the mean and sum (see `combine_frames`).
        ``'snr'``: for point sources, ``1 / variance`` per pixel times each frame's share
        of a star's light within 1.5 FWHM (its seeing), and its transparency unless the
        frames are scaled (measured on the
        stars common to the frames).
    frame_weights : None, 'exptime' or array-like
        Per-frame factors multiplied into ``weights``.
    pixel_scale : `~astropy.units.Quantity`, optional
        Output pixel scale (default: the inputs' median).
    orientation : {'north', 'first'} or `~astropy.wcs.WCS`
        Orientation of the output grid (see `TargetFrame`). ``'first'`` keeps the first
        frame's, which lets unrotated, undistorted frames take the shift path.
    sky_stack : bool
        Also combine the frames on the stars.
    per_frame_steps : list, optional
        Steps applied to each frame before resampling, in order, through
        `~shiftstack_ccd.steps.run_steps` (which checks the step contract): callables
        ``CCDData -> CCDData``, ``(callable, kwargs)`` pairs or ``(name, callable, kwargs)``
        triples, e.g. ``[(clean_cosmic_rays, {"method": "median"})]``. The output grid is
        laid out from the frames as read (their WCS and shape): steps that trim a frame or
        correct its WCS do not move it (with ``size`` the grid is centred on the target
        whatever the frames' WCS; without, it covers the frames as read).
    interpolation : {'bicubic', 'bilinear'}
        Resampling kernel for the data (see `resample_to_target`).
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
    refine : bool
        Measure each frame's residual offset of the target by FFT cross-correlation against
        the stack of the others (`~shiftstack_ccd.register.refine_offsets`, after static-sky
        subtraction when asked) and resample the frames again with the corrections. For
        targets visible in single frames.
    refine_max_shift : float, optional
        Largest accepted correction, pixels. Default: three times the ephemeris' 1-sigma
        uncertainty (``RA_3sigma``/``DEC_3sigma`` from Horizons), else 2 pixels. Larger
        peaks are refused (correction 0) and reported in ``result.table``.
    refine_size : int
        Side of the cutout around the target used for the refinement.
    scheduler : None, 'threads', 'processes', address or `distributed.Client`
        Where the per-frame work runs (see `~shiftstack_ccd._parallel.map_frames`); None runs
        it here, in order. Results do not depend on it.
    workdir : str or path, optional
        A folder for intermediate products: frames are then never all held in memory
        (each task reads its input, writes its products there, and the combine reads them in
        blocks of rows within ``mem_limit``). Without it the products stay in memory when
        they fit in ``mem_limit``, and go to a temporary folder (where `tempfile` puts it)
        when they do not, so that memory does not grow with the number of frames.
    mem_limit : float or str, optional
        Memory budget, bytes (or text such as ``"64MB"``, ``"2GiB"``): of the combine's blocks
        (see `combine_frames`), and of the intermediate products kept in memory. Default
        ``conf.mem_limit``.
    pixfrac, drizzle_kernel : float, str
        Drizzle's drop size and kernel, for ``resample='drizzle'`` (see
        `resample_to_target`).
    intermediate : callable, optional
        Called as ``intermediate(k, image)`` after each frame is added to a running mean
        (`~shiftstack_ccd.combine.RunningStack`), in time order: the stack of the first ``k``
        frames, at the cost of one frame each time.
    background : {'model', None}
        ``'model'``: each frame's sky is modelled (`~shiftstack_ccd.background`, sources and
        the target masked) and subtracted before combining, so the median, clipping and
        weights compare like with like over a night whose sky changes. None keeps each
        frame's sky (e.g. to measure the sky itself, or for frames already sky-subtracted
        whose residual structure is signal).
    scale : None, 'stars' or array-like
        Photometric scale of each frame, by which it is divided before combining: measured
        on the stars common to the frames (`~shiftstack_ccd.fluxscale.photometric_scales`;
        the stack is then on the system of the median frame), or one number per frame.
    gain, read_noise, bias : float or `~astropy.units.Quantity`, optional
        Detector gain (e-/data unit), read noise (e-) and bias level (data units) for
        frames without an uncertainty, overriding the header (see `~shiftstack_ccd.noise`).
    hdu : int or str, optional
        The extension to read from files (see `read_frames`).
    unit : str, optional
        The data unit of files whose header has none (see `read_frames`).

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
    A frame without an uncertainty is given one by `~shiftstack_ccd.noise`: from the gain
    and read noise (arguments or header cards) with Poisson noise above the bias (overscan of
    raw frames), checked against, and scaled to, the measured pixel noise of its sky; else a
    local estimate of the sky noise. ``result.table`` says per frame what was used
    (``noise_model``, ``gain``, ``read_noise``, ``bias``, ``pixel_noise``, ``model_noise``,
    ``noise_ratio``, ``noise_scale``), the sky subtracted (``sky_level``) and, with
    ``scale`` or ``weights='snr'``, what the stars said (``flux_scale``, ``aperture_fraction``
    ...). With ``subtract_static`` the stack's variance is multiplied by
    `~shiftstack_ccd.static_sky.static_sky_variance_factor` (header ``SSSTVARF``), the
    template sharing the frames' noise.
    """
    params = stack_parameters(
        method=method, size=size, reference_time=reference_time, resample=resample,
        sigma_clip=sigma_clip, sigma_low=sigma_low, sigma_high=sigma_high, weights=weights,
        frame_weights=frame_weights, clip_gradient=clip_gradient, pixel_scale=pixel_scale,
        orientation=orientation, sky_stack=sky_stack, per_frame_steps=per_frame_steps,
        interpolation=interpolation, subtract_static=subtract_static,
        track_radius=track_radius, static_k=static_k, refine=refine,
        refine_max_shift=refine_max_shift, refine_size=refine_size, scheduler=scheduler,
        workdir=workdir, mem_limit=mem_limit, intermediate=intermediate)
    size, reference_time, pixel_scale = params["size"], params["reference_time"], \
        params["pixel_scale"]
    mem_limit = params["mem_limit"]  # text such as "64MB" read as bytes
    if not hasattr(ephemeris, "at"):
        raise ParameterError(f"ephemeris: must be an Ephemeris (or have .at(times)), not "
                             f"{type(ephemeris).__name__}.")
    if params["resample"] == "drizzle":
        if isinstance(pixfrac, bool) or not isinstance(pixfrac, (int, float)) \
                or not 0 < pixfrac <= 1:
            raise ParameterError(f"pixfrac: must be a number in (0, 1], not {pixfrac!r}.")
        if drizzle_kernel not in DRIZZLE_KERNELS:
            raise ParameterError(f"drizzle_kernel: must be one of {list(DRIZZLE_KERNELS)}, "
                                 f"not {drizzle_kernel!r}.")
    sources = _sources(frames)
    for name, value in (("weights", weights), ("frame_weights", frame_weights)):
        per_frame_weights(value, name, len(sources))
    footprints = [_footprint(source, hdu) for source in sources]  # headers: no pixels read
    headers = [f.meta for f in footprints]
    shapes = [f.shape for f in footprints]
    wcses = [require_celestial_wcs(f, "shift_and_stack", i) for i, f in enumerate(footprints)]
    labels = [str(h.get("SSFILE", f"frame #{i}")) for i, h in enumerate(headers)]
    times = Time([mid_exposure_time(h) for h in headers])
    grid = TargetFrame.for_frames([_Footprint(None, w, s) for w, s in zip(wcses, shapes)],
                                  ephemeris, reference_time=reference_time, size=size,
                                  pixel_scale=pixel_scale, orientation=orientation, times=times)
    _check_frame_weights(headers, labels, weights, frame_weights)
    # products over the budget go to a work folder of their own (memory flat in the frames)
    spill = workdir is not None or _must_spill(shapes, grid.shape, sky_stack or subtract_static,
                                               subtract_static or refine, mem_limit)
    check_stack_memory(grid.shape, len(sources), 2 if (sky_stack or subtract_static) else 1,
                       spill)
    offsets = grid.offset(times)
    targets = ephemeris.at(times)

    with contextlib.ExitStack() as stack_of_contexts:
        folder = None
        if spill:
            # an unnamed work folder goes where tempfile puts it (TMPDIR)
            folder = stack_of_contexts.enter_context(
                tempfile.TemporaryDirectory(prefix="shiftstack-", dir=workdir))
        ctx = _Context(steps=per_frame_steps, resample=resample, interpolation=interpolation,
                       shape=grid.shape, grid_wcs=_ExactWCS(grid.wcs),
                       target_wcs=[_ExactWCS(grid.wcs_at_offset(dx, dy))
                                   for dx, dy in zip(*offsets)],
                       need_sky=(sky_stack or subtract_static or _named(weights, "snr")
                                 or (isinstance(scale, str) and scale == "stars")),
                       workdir=folder, template=None, track_radius=track_radius,
                       static_k=static_k, gain=gain, read_noise=read_noise, bias=bias,
                       background=background, scales=None, hdu=hdu, unit=unit,
                       pixfrac=pixfrac, drizzle_kernel=drizzle_kernel,
                       # the static-sky template, the refinement and the photometric scales
                       # need every frame first
                       one_pass=not (subtract_static or refine or scale is not None))
        # In this process the headers and WCS read for the plan serve again; other processes
        # read their own (a pickled WCS is rounded, see _ExactWCS).
        here = scheduler in (None, "sync", "serial", "threads")
        jobs = [(i, source, targets[i], label,
                 Footprint(headers[i], shapes[i], footprints[i].wcs)
                 if here and not isinstance(source, CCDData) else None)
                for i, (source, label) in enumerate(zip(sources, labels))]
        prepared = map_frames(functools.partial(_prepare_task, ctx=ctx), jobs, scheduler,
                              "preparing frames")
        warn_noise_ratios(labels, [p["noise"] for p in prepared])
        sky_frames = _combinable([p["sky"] for p in prepared])
        cx, cy = grid.center_pixel
        track = [(cx + dx, cy + dy) for dx, dy in zip(*offsets)]
        photometry = None
        if _named(weights, "snr") or _named(scale, "stars"):
            photometry = star_photometry(sky_frames, track, grid.shape, mem_limit)
        ctx.scales = frame_scales(scale, photometry, len(prepared))
        if ctx.scales is not None and ctx.need_sky:
            sky_frames = [divided(f, s) for f, s in zip(sky_frames, ctx.scales)]
        if _named(weights, "snr"):  # per pixel 1 / variance, per frame the seeing
            factors = snr_factors(photometry, ctx.scales)
            if frame_weights is not None:
                factors = factors * frame_factors(None, frame_weights, headers, labels)
            weights, frame_weights = "inverse-variance", factors
        combine_options = dict(method=method, sigma_clip=sigma_clip, sigma_low=sigma_low,
                               sigma_high=sigma_high, weights=weights,
                               frame_weights=frame_weights, clip_gradient=clip_gradient,
                               mem_limit=mem_limit)
        with warnings.catch_warnings():  # the target's combine below says it, once a call
            warnings.filterwarnings("ignore", "the median ignores weights", AstropyUserWarning)
            sky = combine_frames(sky_frames, **combine_options).image if sky_stack else None
        if subtract_static:
            reference = sky if sky is not None and method == "median" else \
                combine_frames(sky_frames, method="median", mem_limit=mem_limit).image
            fwhm = stellar_fwhm(reference)
            if ctx.track_radius is None:
                ctx.track_radius = max(5.0, 4.0 * fwhm) if fwhm else 10.0
            log.info("static sky: stars' FWHM %s pixels; target track radius %.1f pixels",
                     f"{fwhm:.2f}" if fwhm else "unknown", ctx.track_radius)
            ctx.template = static_sky_template(
                sky_frames, track,
                track_radius=ctx.track_radius, workdir=folder, mem_limit=mem_limit)
        if ctx.one_pass:
            on_target = [p.pop("on_target") for p in prepared]
        else:
            target_jobs = [(i, p, ctx.target_wcs[i]) for i, p in enumerate(prepared)]
            on_target = map_frames(functools.partial(_target_task, ctx=ctx), target_jobs,
                                   scheduler, "resampling on the target")
        refinement = None
        if refine:
            refinement = _refine(on_target, prepared, ctx, ephemeris, times, grid,
                                 refine_max_shift, refine_size, scheduler)
        targets_out = _combinable([r["target"] for r in on_target])
        combined = combine_frames(targets_out, **combine_options)
        if intermediate is not None:
            _run_intermediate(targets_out, headers, intermediate, weights, frame_weights)
        stack = combined.image
        if subtract_static:
            # the template shares the frames' noise (see static_sky_variance_factor)
            static_radius = max(2.0, 1.5 * fwhm) if fwhm else 3.0
            static_factor = static_sky_variance_factor(offsets, static_radius, interpolation)
            stack.uncertainty = StdDevUncertainty(
                stack.uncertainty.array * np.float32(np.sqrt(static_factor)))
        if sky is not None:
            sky.meta = as_header(sky.meta)

    # Each frame went onto its own epoch's grid; the stack is described by the plane at the
    # reference time, where the target sits on the centre pixel.
    stack.wcs = grid.wcs
    table = _frame_table(labels, times, prepared, on_target, offsets, combined, headers,
                         weights, frame_weights, refinement)
    add_noise_columns(table, [p["noise"] for p in prepared], photometry, ctx.scales)
    header = stack_header(stack.meta, grid, ephemeris, table, method, resample, headers)
    noise_cards(header, table, background, scale)
    stack.meta = header
    if sky is not None:
        sky.meta = header.copy()
        sky.meta["SSKIND"] = ("sky", "stacked on the stars (fixed plane)")
    static = (ctx.track_radius, static_factor, static_radius) if subtract_static else None
    for key, value, comment in target_cards(static, refine, table, grid.reference_time):
        stack.meta[key] = (value, comment)
    return StackResult(stack, sky, combined.coverage, table, grid)


def _check_frame_weights(headers, labels, weights, frame_weights):
    """Refuse, before any work, per-frame weights that would leave a frame (or all) at 0."""
    for name, spec in (("weights", weights), ("frame_weights", frame_weights)):
        if isinstance(spec, str) and spec == "exptime":
            for header, label in zip(headers, labels):
                key, value = exposure_time(header)
                if value is None:
                    raise FrameError(f"{label}: has no exposure time (EXPTIME) in its header; "
                                     f"{name}='exptime' needs one.")
                if value <= 0:
                    raise FrameError(f"{label}: {key} = {value}, so {name}='exptime' gives it "
                                     "no weight; leave the frame out or choose other weights.")


def _named(option, name):
    """``option == name`` for options that may also be arrays."""
    return isinstance(option, str) and option == name


def _must_spill(frame_shapes, shape, need_sky, keep_frames, mem_limit):
    """Whether the intermediate products would exceed the memory budget.

    Per frame: one or two products on the output grid, and its crop when it is kept for a
    second pass (at most the frame, else about the output grid and a margin); data,
    uncertainty and mask: 9 bytes a pixel.
    """
    budget = float(conf.mem_limit if mem_limit is None else mem_limit)
    grid = shape[0] * shape[1]
    per_pixel = 4 + 4 + 1
    total = sum(per_pixel * (keep_frames * min(ny * nx, 1.5 * grid)
                             + grid * (2 if need_sky else 1))
                for ny, nx in frame_shapes)
    if total > budget:
        log.info("intermediate products of %d frames: %.0f MB, over the memory budget of "
                 "%.0f MB; they go to a temporary folder", len(frame_shapes), total / 1e6,
                 budget / 1e6)
        return True
    return False


class _Footprint:
    """Just what planning the stack needs of a frame: its header, WCS and shape."""

    def __init__(self, meta, wcs, shape):
        self.meta, self.wcs, self.shape = meta, wcs, shape


def _footprint(source, hdu=None):
    """A frame's footprint, with a header of its own; a file's is read from its headers
    alone (`read_footprint`)."""
    if isinstance(source, CCDData):
        return _Footprint(as_header(source.meta), source.wcs, source.shape)
    header, shape, wcs = read_footprint(source, hdu=hdu)
    return _Footprint(header, wcs, shape)


def _sources(frames):
    """CCDData in memory stay as they are; anything else becomes a list of paths."""
    if isinstance(frames, (list, tuple)) and frames and all(isinstance(f, CCDData)
                                                            for f in frames):
        return list(frames)
    from .frames import expand_files
    paths = [str(p) for p in expand_files(frames)]
    if not paths:
        raise FrameError("no frames to stack.")
    return paths


def _refine(on_target, prepared, ctx, ephemeris, times, grid, max_shift, size, scheduler):
    """Measure per-frame offsets on the target, then resample the corrected frames again."""
    from .register import refine_offsets, shift_bound, shifted_wcs
    if max_shift is None:
        sigmas = ephemeris.uncertainty_at(times)
        if sigmas is not None:
            max_shift = shift_bound(sigmas[0], sigmas[1], grid.pixel_scale)
        else:
            max_shift = 2.0
            log.info("refinement: the ephemeris has no uncertainty; corrections are bounded "
                     "at %.1f pixels (give refine_max_shift to change it)", max_shift)
    cutouts = [_load(r["target"]) for r in on_target]  # cropped to `size` by refine_offsets
    size = min(int(size), *grid.shape)
    dx, dy, accepted, table = refine_offsets(cutouts, max_shift=max_shift, size=size)
    redo = [i for i in range(len(on_target)) if accepted[i] and (dx[i] or dy[i])]
    jobs = [(i, prepared[i], _ExactWCS(shifted_wcs(ctx.target_wcs[i].wcs, dx[i], dy[i])))
            for i in redo]
    for result in map_frames(functools.partial(_target_task, ctx=ctx), jobs, scheduler,
                             "resampling refined frames"):
        on_target[result["index"]] = result
    log.info("refinement: %d of %d frames corrected, %s", int(accepted.sum()), len(accepted),
             "converged" if table.meta.get("converged") else "not converged")
    return table


def _run_intermediate(targets, headers, callback, weights, frame_weights):
    running = RunningStack(method="mean",
                           weights="inverse-variance" if _named(weights, "inverse-variance")
                           else None)
    factors = _per_frame_factors(headers, weights, frame_weights)
    for k, (target, factor) in enumerate(zip(targets, factors), start=1):
        running.add(target, weight=factor)
        callback(k, running.image)


def _per_frame_factors(headers, weights, frame_weights):
    """The per-frame part of the weights (pixel weights aside), as the combine uses them,
    normalised to sum 1."""
    labels = [str(h.get("SSFILE", f"frame #{i}")) for i, h in enumerate(headers)]
    factors = frame_factors(weights, frame_weights, headers, labels)
    return factors / factors.sum()


def _frame_table(labels, times, prepared, on_target, offsets, combined, headers, weights,
                 frame_weights, refinement):
    table = Table()
    table["file"] = [str(label) for label in labels]
    table["mid_time"] = times.utc
    table["mjd_mid"] = times.utc.mjd
    table["x_frame"] = [p["position"][0] for p in prepared]
    table["y_frame"] = [p["position"][1] for p in prepared]
    table["x_frame"].description = "target x in the frame (0-based pixel; FITS is 1-based)"
    table["y_frame"].description = "target y in the frame (0-based pixel; FITS is 1-based)"
    table["dx"] = offsets[0]
    table["dy"] = offsets[1]
    table["dx"].unit = table["dy"].unit = u.pix
    table["resample"] = [r["path"] for r in on_target]
    table["pixel_area_ratio"] = [r["area_ratio"] for r in on_target]
    table["pixel_area_ratio"].description = ("output/input pixel area (median over the frame); "
                                             "counts per pixel were multiplied by it")
    table["flux_convention"] = [r["flux_convention"] for r in on_target]
    table["weight"] = _per_frame_factors(headers, weights, frame_weights)
    table["weight"].description = ("per-frame weight (normalised); inverse-variance weights, "
                                   "if used, vary per pixel on top of it")
    table["rejected_fraction"] = combined.rejected_fraction
    # what the per-frame steps recorded, where they did (see clean_cosmic_rays, correct_wcs)
    cards = [{**p["step_cards"], **r["static_cards"]} for p, r in zip(prepared, on_target)]
    for key, column in _STEP_COLUMNS.items():
        values = [c.get(key) for c in cards]
        if any(v is not None for v in values):
            table[column] = [np.nan if v is None else float(v) for v in values]
    if refinement is not None:
        for name in refinement.colnames:
            if name != "frame":
                table[name] = refinement[name]
    return table


#: Header cards written by per-frame steps, copied into the per-frame table.
_STEP_COLUMNS = {"CRNFLAG": "cr_flagged", "WCSDX": "wcs_dx", "WCSDY": "wcs_dy",
                 "WCSNSTAR": "wcs_nstars", "WCSRMSPX": "wcs_rms_pix", "WCSERR": "wcs_err",
                 "SSSKYOFF": "static_sky_offset", "SSNSTMSK": "static_masked"}
