# Licensed under a 3-clause BSD style license - see LICENSE
"""`search_motion`: find moving sources by stacking along a grid of trial motions.

The frames are resampled once onto one fixed grid, cleaned of the static sky and turned
into KBMOD's psi/phi planes (see ``_prepare``). The grid is the pixels of the frame nearest
the reference time (its WCS, distortion included), extended over every frame: frames taken
at the same position angle map onto it by translations to within 0.01 pixel on blocks of
128 pixels, which makes the resampling a separable spline (``_resample``; others go through
`resample_to_target`'s warp). Every trajectory (a starting pixel at the reference time and
a motion) is scored by ``sum(psi) / sqrt(sum(phi))`` over the frames (see ``_kernel``; a
first pass sums each frame's capped S/N plane, the same thing for frames of uniform depth),
tile by tile and motion by motion through the ``scheduler``. The best motion of each
starting pixel above the threshold is re-scored exactly with psi/phi and a robust
per-frame filter and the median test, refined to a sub-pixel position and a sub-grid rate,
and merged with its duplicates.

**Grid step.** Rates are tried on a square grid in pixels per hour whose step is the
largest for which a trajectory midway between grid points on both axes keeps at least 90 %
of the true motion's S/N (`motion_step`): about ``1.3 * FWHM / T`` for ``T`` hours between
the first and last frames. On top of it, starting pixels and per-frame offsets are whole
pixels, which costs on average 4 % of the S/N for a 2-pixel FWHM (at most 15 % for a
source on a pixel corner); the refinement recovers both for the candidates it reports.

**Trailing.** A source moving at ``v`` is trailed over ``v * EXPTIME`` in each exposure.
The first pass filters with the round PSF: for a Gaussian PSF the round filter keeps 99 %
of the trailed source's optimal S/N for a trail of one FWHM, 96 % at 1.5 FWHM and 91 % at
2 FWHM (77 % at 3 FWHM; about the same for a Moffat PSF of beta 3), so over +-40 arcsec/h
in the 300 s Lowell frames (trails up to 1.5 FWHM on the axes, 2.1 FWHM on the diagonals)
the first pass loses at most 10 %, which its threshold margin (one sigma below the
threshold) absorbs. The candidates are then scored with the trailed PSF (``trailed=True``):
psi averaged along the trail, phi times `trail_factor`, which recovers that S/N and the
flux the round filter misses (20 % for a trail of 1.5 FWHM).
"""

import logging
import time
import warnings

import numpy as np
from astropy import units as u
from astropy.table import QTable
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning

from .._parallel import map_frames
from .._utils import require_celestial_wcs
from ..exceptions import FrameError, SearchError
from ..frames import exposure_time, mid_exposure_time, read_frames
from ._kernel import (axis_grid, first_pass_slab, merge, motion_step, offsets_for, refine,
                      robust_values, sample_psi_phi, search_tile, sigma_g)
from ._lines import frames_dithered
from ._prepare import (aperture_correction, keep_slow_movers, prepare_frame, psi_phi,
                       static_sky, trim)
from ._resample import frame_grid, shifted_wcs

__all__ = ["search_motion"]

log = logging.getLogger(__name__)

RATE = u.arcsec / u.hour


def _rate_range(value, name):
    try:
        q = u.Quantity(value, RATE)
    except (TypeError, u.UnitsError) as exc:
        raise SearchError(f"{name} must be (low, high) in arcsec/h (a Quantity of angle per "
                          f"time); got {value!r}: {exc}") from None
    if q.shape != (2,) or not np.all(np.isfinite(q.value)):
        raise SearchError(f"{name} must be two finite rates (low, high); got {value!r}")
    lo, hi = q.to_value(RATE)
    if hi < lo:
        raise SearchError(f"{name} is an empty range: low {lo:g} > high {hi:g} arcsec/h")
    return float(lo), float(hi)


def _load(frames):
    if isinstance(frames, (list, tuple)) and frames and all(hasattr(f, "data") and
                                                            hasattr(f, "wcs") for f in frames):
        frames = list(frames)
    else:
        frames = read_frames(frames)
    if len(frames) < 3:
        raise SearchError(f"a motion search needs at least 3 frames (the static sky is their "
                          f"median and the robust filter needs several); got {len(frames)}")
    for i, frame in enumerate(frames):
        require_celestial_wcs(frame, "search_motion", i)
    return frames


def _measure_fwhm(template, mask, size=768):
    """The stars' FWHM (`stellar_fwhm`) on the static sky, or None.

    On its central ``size`` x ``size`` pixels first (the 40 brightest unsaturated stars of a
    star field are there, at a third of the cost of the whole grid), then on the whole grid
    if too few stars are there.
    """
    from astropy.nddata import CCDData

    from ..stars import stellar_fwhm
    ny, nx = template.shape
    y0, x0 = max(0, (ny - size) // 2), max(0, (nx - size) // 2)
    cuts = [(slice(y0, y0 + size), slice(x0, x0 + size))]
    if (ny, nx) != template[cuts[0]].shape:
        cuts.append((slice(None), slice(None)))
    for cut in cuts:
        part, bad = template[cut], mask[cut] | ~np.isfinite(template[cut])
        try:
            fwhm = stellar_fwhm(CCDData(np.where(bad, np.nan, part), unit="adu", mask=bad))
        except Exception as exc:  # a failed star fit is no verdict on the frames
            log.warning("search: could not measure the stars' FWHM (%s)", exc)
            fwhm = None
        if fwhm is not None:
            return fwhm
    return None


def _stopwatch():
    """``lap(stage)`` logs (debug) the seconds since the previous lap and the process's peak
    resident size so far (where the platform tells it): where the time and the memory go."""
    import sys
    try:
        import resource
    except ImportError:  # not on Windows
        resource = None
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
    last = [time.perf_counter(), time.process_time()]

    def lap(stage):
        now = [time.perf_counter(), time.process_time()]
        peak = (f"; peak resident size so far "
                f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20:.0f} MiB"
                if resource is not None else "")
        log.debug("search: %s took %.2f s (CPU %.2f s)%s", stage, now[0] - last[0],
                  now[1] - last[1], peak)
        last[:] = now
    return lap


def _typical_depth(phi, sample=4):
    """sqrt of the median phi over the covered pixels (on one pixel in ``sample**2`` when
    that holds enough of them: a typical value needs no more), 0 if none is covered."""
    part = phi[::sample, ::sample]
    values = part[part > 0] if np.count_nonzero(part > 0) >= 1000 else phi[phi > 0]
    return float(np.sqrt(np.median(values))) if values.size else 0.0


def _jacobian(wcs, shape):
    """Arcsec on the sky (east, north) per pixel (x, y) at the centre of a frame: 2 x 2."""
    from astropy.coordinates import SkyCoord
    ny, nx = shape
    x, y = (nx - 1) / 2, (ny - 1) / 2
    centre = wcs.pixel_to_world(x, y)
    out = np.empty((2, 2))
    for j, (ddx, ddy) in enumerate(((1.0, 0.0), (0.0, 1.0))):
        ahead, behind = (SkyCoord(wcs.pixel_to_world(x + sign * ddx, y + sign * ddy))
                         for sign in (1, -1))
        east_a, north_a = centre.spherical_offsets_to(ahead)
        east_b, north_b = centre.spherical_offsets_to(behind)
        out[0, j] = (east_a - east_b).to_value(u.arcsec) / 2
        out[1, j] = (north_a - north_b).to_value(u.arcsec) / 2
    return out


def _motion_grid(cd, rates, step):
    """The trial motions (pixels/h on the grid), the grid's shape and which are searched.

    A square grid of ``step`` over the pixel rates that the box of sky rates ``rates``
    (arcsec/h) reaches; when the grid is rotated on the sky, motions that are no nearer the
    box than half a cell's diagonal (so no rate in the box needs them) are not searched
    (the refinement may still reach them). Returns ``motions`` (n, 2), ``(nvx, nvy)``
    (motion ``k`` is cell ``(k % nvx, k // nvx)``) and the boolean ``searched``.
    """
    (ra_lo, ra_hi), (dec_lo, dec_hi) = rates
    corners = np.linalg.solve(cd, np.array([(r, d) for r in (ra_lo, ra_hi)
                                            for d in (dec_lo, dec_hi)]).T)
    vx = axis_grid(corners[0].min(), corners[0].max(), step)
    vy = axis_grid(corners[1].min(), corners[1].max(), step)
    motions = np.array([(a, b) for b in vy for a in vx], float)
    sky = motions @ cd.T  # arcsec/h
    reach = step / np.sqrt(2) * np.linalg.norm(cd, 2) + 1e-9
    searched = ((sky[:, 0] >= ra_lo - reach) & (sky[:, 0] <= ra_hi + reach)
                & (sky[:, 1] >= dec_lo - reach) & (sky[:, 1] <= dec_hi + reach))
    return motions, (len(vx), len(vy)), searched


def _estimate(n_pixels, motions, dt, n_frames, grid_pixels, tile):
    """Memory (bytes) and time (s) the search will take, from a quick measure of this CPU.

    The first pass, which dominates a large search, is timed as it will run: one tile of
    the search (`search_tile`, its Python overhead and cache behaviour included) over up to
    64 of the motions, on a slab as large as the fastest motion makes it, scaled to every
    tile and motion. The candidates' rescoring and refinement take about half as long again
    (0.4-0.5 of the first pass on the Lowell field from +-40 to +-120 arcsec/h), and the
    preparation about 40 trajectories' worth of time per frame pixel (noise, cosmic rays,
    resampling; 2.6 s for ten 1367 x 1372 frames against 3.6 ns a trajectory, measured
    together). A timing of the bare additions alone, in cache, was 5 times too hopeful.
    """
    # two float32 planes per frame (the resampled data and noise, then the S/N and phi
    # in their place), and half as much again for the preparation's transients
    memory = grid_pixels * n_frames * 4 * 3
    tile_h, tile_w = tile
    h, w = min(tile_h, int(np.sqrt(n_pixels)) + 1), min(tile_w, n_pixels)
    ox, oy = offsets_for(motions, dt)
    mx0, mx1, my0, my1 = _margins(ox, oy)
    pick = np.unique(np.linspace(0, len(motions) - 1, min(len(motions), 64)).astype(int))
    rows, cols = (0, h + my0 + my1), (0, w + mx0 + mx1)
    slab = _slab([np.zeros((rows[1], cols[1]), np.float32)] * n_frames, rows, cols,
                 np.float32(1), np.ones(n_frames, np.float32))
    task = dict(slab, shape=(h, w), ox=ox[pick] + mx0, oy=oy[pick] + my0, first=0,
                indices=pick, origin=(0, 0))
    start = time.process_time()
    search_tile(task)
    per_trajectory = (time.process_time() - start) / (len(pick) * h * w)
    first_pass = per_trajectory * n_pixels * len(motions)
    seconds = 1.5 * first_pass + 40 * per_trajectory * n_frames * grid_pixels
    return memory, seconds


def search_motion(frames, *, ra_rate=None, dec_rate=None, reference_time=None,
                  snr_threshold=5.0, around=None, around_radius=None,
                  rate_tolerance=5 * RATE, fwhm=None, max_loss=0.1, cosmic_rays=True,
                  star_mask_sigma=10.0, background_box=64, merge_radius=None, tile=(96, 384),
                  motions_per_task=None, scheduler=None, max_memory=4 * 2**30,
                  max_time=3600 * u.s, max_candidates=10000, median_fraction=0.5,
                  trailed=True):
    """Find moving sources: stack the frames along every trial motion, keep what stands out.

    Parameters
    ----------
    frames : list of `~astropy.nddata.CCDData`, or anything `read_frames` accepts
        At least 3 exposures, each with a celestial WCS and a readable mid-exposure time.
        They may be raw (no uncertainty): the noise is measured locally on each frame.
    ra_rate, dec_rate : `~astropy.units.Quantity`
        ``(low, high)`` ranges of ``dRA*cos(Dec)/dt`` and ``dDec/dt`` (angle per time).
        Required unless ``around`` is given (then: the ephemeris' rates +/- ``rate_tolerance``).
    reference_time : `~astropy.time.Time`, optional
        The epoch of the candidates' positions. Default: the mean mid-exposure time.
    snr_threshold : float
        Candidates with a robust S/N at least this are reported.
    around : `~shiftstack_ccd.ephemeris.Ephemeris`, optional
        Search only the ephemeris' 3-sigma ellipse of positions at the reference time
        (``Ephemeris.uncertainty_at``), or ``around_radius`` of its position when it has no
        uncertainty, instead of the whole field.
    around_radius : `~astropy.units.Quantity`, optional
        The search radius about ``around``'s position when it has no uncertainty (or to
        override it).
    rate_tolerance : `~astropy.units.Quantity`
        With ``around`` and no ``ra_rate``/``dec_rate``: half-width of the rate ranges about
        the ephemeris' rates (ephemerides give no rate uncertainty).
    fwhm : float, optional
        PSF FWHM in pixels of the grid. Default: measured on the static sky's stars.
    max_loss : float
        Largest S/N loss of a trajectory between grid points (see `motion_step`).
    cosmic_rays : bool
        Mask cosmic rays and hot pixels in each frame first (`clean_cosmic_rays`).
    star_mask_sigma : float
        Mask static sources brighter than this many single-frame noise sigma (grown by the
        FWHM plus two FWHM per decade of brightness): their residuals after static-sky
        subtraction are not trustworthy.
    background_box : int
        Box size (pixels) of each frame's local background and noise.
    merge_radius : float, optional
        Candidates whose trajectories come this close (pixels) in any frame are one object.
        Default: twice the FWHM, at least 3 pixels.
    tile : int or (int, int)
        Size (rows, columns) of the tiles of starting pixels: memory per task is bounded by
        the tile (plus the offsets of the fastest motion). The default keeps a tile's planes
        in the CPU cache (measured: 96 x 384 is 20 % faster than 128 x 128 here).
    motions_per_task : int, optional
        Split the motions into tasks of this many (default: all motions of a tile in one
        task). The result does not depend on the split.
    scheduler : None, str or `distributed.Client`
        As in `shift_and_stack`: None/'sync', 'threads', 'processes', or a dask.distributed
        client or address.
    max_memory : int
        Refuse a search whose planes would need more bytes than this.
    max_time : `~astropy.units.Quantity`
        Refuse a search estimated (from a quick measure of this CPU) to take longer.
    median_fraction : float
        The median test: a candidate's median-stack S/N (``snr_median``) must reach this
        fraction of ``snr_threshold`` (a real source's is about 0.8 of its S/N; a
        trajectory that strings together outliers of a few frames has about none).
    max_candidates : int
        The most candidates that are refined; beyond it the faintest are dropped with a
        warning in the log.
    trailed : bool
        Score the refined candidates (``snr``, ``flux``) with the PSF trailed over each
        frame's exposure (``EXPTIME``) at the candidate's rate, rather than the round PSF
        of the first pass (see the module notes: trailing).

    Returns
    -------
    candidates : `~astropy.table.QTable`
        Best first, one row per object: ``ra``, ``dec`` (deg, ICRS, at the reference time),
        ``ra_rate``, ``dec_rate`` (arcsec/h), ``snr``, ``flux`` and ``flux_err`` (the frames'
        unit, per frame: Gaussian-PSF-fitted, times ``meta['flux_correction']`` measured on
        the stars), ``snr_median`` (the median test), ``n_frames``
        (frames used by the robust filter), ``x``, ``y`` (0-based
        pixel on the search grid, ``meta['wcs']``). ``meta``: ``n_trajectories`` (starting
        pixels x motions evaluated), ``reference_time``, ``rate_step`` (arcsec/h),
        ``n_motions``, ``fwhm``, ``noise_factors`` (per frame, the calibration factor of
        the noise: measured over modelled scatter), ``snr_scatter`` (sigma-G of the S/N of
        empty-sky trajectories: 1 when the noise is right; NaN if the grid is too small to
        tell or no trial motion moves a FWHM between any two frames),
        ``flux_correction``, ``masked_fraction``, ``wcs``, ``times`` and ``seconds``
        (with ``seconds_prepare``, ``seconds_search``, ``seconds_candidates``).

    Raises
    ------
    SearchError
        An empty or malformed rate range, fewer than 3 frames, or a search estimated to
        exceed ``max_memory`` or ``max_time`` (the estimate is in the message).
    FrameError
        A frame without a celestial WCS or a usable time.

    Examples
    --------
    >>> from astropy import units as u
    >>> from astropy.coordinates import SkyCoord
    >>> import shiftstack_ccd as ss
    >>> sim = ss.simulate_observation(n_frames=8, shape=(96, 96), target_snr=4,
    ...                               target_rate=(20, -10) * u.arcsec / u.hour,
    ...                               cadence=300 * u.s, exptime=240 * u.s, n_stars=5,
    ...                               seed=3)
    >>> found = ss.search_motion(sim.frames, ra_rate=(0, 40) * u.arcsec / u.hour,
    ...                          dec_rate=(-30, 10) * u.arcsec / u.hour, snr_threshold=7)
    >>> best = found[0]
    >>> truth = sim.target_at(found.meta["reference_time"])
    >>> sep = SkyCoord(best["ra"], best["dec"]).separation(truth)
    >>> bool(sep < 0.5 * u.arcsec), bool(abs(best["ra_rate"] - 20 * u.arcsec / u.hour)
    ...                                  < 4 * u.arcsec / u.hour)
    (True, True)
    """
    started = time.perf_counter()
    frames = _load(frames)
    lap = _stopwatch()
    times = Time([mid_exposure_time(f) for f in frames]).utc
    exposures = np.array([exposure_time(f.meta)[1] or 0.0 for f in frames]) / 3600  # hours
    if reference_time is None:
        reference_time = Time(np.mean(times.mjd), format="mjd", scale="utc")
    reference_time = Time(reference_time).utc
    dt = ((times - reference_time).to_value(u.hour)).astype(float)
    if np.ptp(dt) <= 0:
        raise SearchError("the frames' mid-exposure times are all equal: no motion can be "
                          "measured")
    frames = [trim(f) for f in frames]  # overscan and prescan are not sky
    wcses = [f.wcs.celestial for f in frames]
    # the grid is the pixels of the frame nearest the reference time (see _resample)
    reference = int(np.argmin(np.abs(dt)))
    cd = _jacobian(wcses[reference], frames[reference].shape)  # arcsec/pixel
    pixel_arcsec = float(np.sqrt(abs(np.linalg.det(cd))))

    # ---- the rate ranges and the search box
    if around is not None:
        centre = around.at(reference_time)
        if ra_rate is None or dec_rate is None:
            r0, d0 = (q.to_value(RATE) for q in around.rates_at(reference_time))
            tol = u.Quantity(rate_tolerance, RATE).to_value(RATE)
            ra_rate = ra_rate if ra_rate is not None else (r0 - tol, r0 + tol) * RATE
            dec_rate = dec_rate if dec_rate is not None else (d0 - tol, d0 + tol) * RATE
    elif ra_rate is None or dec_rate is None:
        raise SearchError("give ra_rate=(low, high) and dec_rate=(low, high) in arcsec/h, "
                          "or around=ephemeris")
    rates = (_rate_range(ra_rate, "ra_rate"), _rate_range(dec_rate, "dec_rate"))
    tile_h, tile_w = (tile, tile) if np.ndim(tile) == 0 else tuple(tile)
    if not (tile_h >= 1 and tile_w >= 1):
        raise SearchError(f"tile must be a positive size (rows, columns); got {tile!r}")
    tile_h, tile_w = int(tile_h), int(tile_w)
    # the pixel rates that reach the corners of the box of sky rates
    corners = np.linalg.solve(cd, np.array([(r, d) for r in rates[0] for d in rates[1]]).T)
    max_shift = np.max(np.abs(corners)) * np.max(np.abs(dt))
    ellipse = None
    if around is not None:
        sigmas = around.uncertainty_at(reference_time)
        if around_radius is not None:
            r = u.Quantity(around_radius, u.arcsec).to_value(u.arcsec)
            ellipse = (r, r)
        elif sigmas is not None:
            ellipse = tuple(max(3 * float(s.to_value(u.arcsec)), pixel_arcsec)
                            for s in sigmas)
        else:
            raise SearchError("around: the ephemeris has no position uncertainty; give "
                              "around_radius (e.g. 30 * u.arcsec)")
        half = int(np.ceil(max(ellipse) / pixel_arcsec + max_shift)) + 12
        x, y = (float(v) for v in wcses[reference].world_to_pixel(centre))
        grid_wcs, (ny, nx) = shifted_wcs(wcses[reference], int(round(x)) - half,
                                         int(round(y)) - half, (2 * half + 1, 2 * half + 1))
    else:
        grid_wcs, (ny, nx) = frame_grid(frames, reference, wcses)

    # ---- refuse what cannot be done, before doing anything costly
    n_frames = len(frames)
    provisional_fwhm = fwhm if fwhm is not None else 2.0
    step = motion_step(provisional_fwhm, dt, max_loss)
    trial, _, reached = _motion_grid(cd, rates, step)
    n_motions = int(np.sum(reached))
    memory, seconds = _estimate(ny * nx, trial[reached], dt, n_frames, ny * nx,
                                (tile_h, tile_w))
    limit = u.Quantity(max_time, u.s).to_value(u.s)
    if memory > max_memory or seconds > limit:
        raise SearchError(
            f"this search is too large: {n_motions} motions x {ny * nx} starting pixels x "
            f"{n_frames} frames needs about {memory / 2**30:.2f} GiB (limit "
            f"{max_memory / 2**30:.2f}) and {seconds:.0f} s (limit {limit:.0f}) on this "
            "machine. Narrow the rate ranges, search around an ephemeris, or raise "
            "max_memory / max_time.")
    log.info("search: %d frames on a %d x %d grid, about %d motions, estimated %.0f s",
             n_frames, nx, ny, n_motions, seconds)

    # ---- frames -> psi/phi planes on the grid
    opts = {"wcs": grid_wcs, "shape": (ny, nx), "background_box": background_box,
            "cosmic_rays": cosmic_rays, "saturation_grow": 6.0,
            "bad_lines": frames_dithered(wcses, [f.shape for f in frames])}
    prepared = map_frames(prepare_frame,
                          [(i, f, opts) for i, f in enumerate(frames)], scheduler,
                          "search: preparing frames")
    lap("frames: background, noise, cosmic rays, resampling")
    template, noise = static_sky(prepared)
    lap("static sky")
    if fwhm is None:
        fwhm = _measure_fwhm(template, ~np.isfinite(template))
        if fwhm is None:
            raise SearchError("could not measure the PSF FWHM on the stars of the frames; "
                              "give fwhm= (pixels)")
        log.info("search: stars' FWHM %.2f pixels", fwhm)
    lap("FWHM")
    correction = aperture_correction(template, noise, fwhm)
    lap("flux correction")
    log.info("search: fluxes corrected by %.3f (stars' flux within 3 FWHM over their "
             "Gaussian-fit flux)", correction)
    template, stars, n_varying = keep_slow_movers(template, prepared, noise, fwhm,
                                                  star_mask_sigma)
    log.info("search: %d pixels vary like a slow mover; the static sky there is the sky",
             n_varying)
    lap("slow movers and star mask")
    quiet = ~stars & np.isfinite(template)
    # per frame, the calibrated S/N z = psi / sqrt(phi) and phi (lists of planes): psi =
    # z * sqrt(phi) is not kept (the first pass reads z, the candidates psi and phi from the
    # two). z takes the place of the frame's resampled data and phi that of its noise: the
    # planes of the search never need more memory than the prepared frames.
    z, phi, factors = [], [], []
    unusable = stars | ~np.isfinite(template)
    for i in range(n_frames):
        p = prepared[i]
        prepared[i] = None
        difference = np.subtract(p["data"], template, out=p.pop("data"))
        try:
            _, plane, c = psi_phi(difference, p.pop("std"), unusable, fwhm,
                                  quiet, out=difference)
        except FrameError as exc:
            raise FrameError(f"frame #{i}: {exc}") from None
        z.append(difference)
        phi.append(plane)
        factors.append(c)
    # the static sky and its masks are not needed any more: not kept through the search
    del prepared, p, difference, plane, template, noise, stars, quiet, unusable
    lap("psi and phi")
    prepared_at = time.perf_counter()
    log.info("search: noise calibration factors (measured / modelled scatter) %s",
             ", ".join(f"{c:.2f}" for c in factors))

    # ---- the grid of motions and the tiled search
    step = motion_step(fwhm, dt, max_loss)
    motions, grid_shape, searched = _motion_grid(cd, rates, step)
    ids = np.nonzero(searched)[0]  # the motions of the grid that reach the box of rates
    ox, oy = offsets_for(motions[ids], dt)
    mx0, mx1, my0, my1 = _margins(ox, oy)
    if ellipse is not None:
        cx, cy = (float(v) for v in grid_wcs.world_to_pixel(centre))
        r = max(ellipse) / pixel_arcsec  # a box about the ellipse whatever the grid's angle
        x_range = (max(0, int(np.floor(cx - r))), min(nx, int(np.ceil(cx + r)) + 1))
        y_range = (max(0, int(np.floor(cy - r))), min(ny, int(np.ceil(cy + r)) + 1))
    else:
        x_range, y_range = (0, nx), (0, ny)
    # First pass: per-frame S/N planes z = psi / sqrt(phi), weighted by each frame's typical
    # sqrt(phi) (its depth), summed along each trajectory; for frames whose depth does not
    # vary across the field this is the psi/phi likelihood itself. Candidates are then
    # scored exactly (sum(psi) / sqrt(sum(phi))) and robustly.
    depth = np.array([_typical_depth(ph) for ph in phi])
    weights = (depth / np.sqrt(np.sum(depth ** 2))).astype(np.float32)
    # Each frame's S/N is capped at 3 * threshold / sqrt(n): a source at the threshold is
    # below it in every frame (the cap is 3 sigma above its mean there), a brighter one still
    # sums to 3 * threshold, but no single frame (a cosmic ray, a hot pixel) can bring more
    # than 3 * threshold / n to a trajectory and claim the best motion of the pixels it
    # crosses. Each task makes its own capped, weighted slab (`first_pass_slab`).
    cap = np.float32(3 * snr_threshold / np.sqrt(n_frames))
    per_task = int(motions_per_task or len(ids))
    tasks = []
    for y0 in range(y_range[0], y_range[1], tile_h):
        for x0 in range(x_range[0], x_range[1], tile_w):
            h, w = min(tile_h, y_range[1] - y0), min(tile_w, x_range[1] - x0)
            # the slab this tile can reach: starting pixels plus every offset
            slab = _slab(z, (y0 - my0, y0 + h + my1), (x0 - mx0, x0 + w + mx1), cap, weights)
            for first in range(0, len(ids), per_task):
                sl = slice(first, first + per_task)
                tasks.append(dict(slab, shape=(h, w), ox=ox[sl] + mx0, oy=oy[sl] + my0,
                                  first=first, indices=ids[sl], origin=(y0, x0)))
    n_trajectories = (x_range[1] - x_range[0]) * (y_range[1] - y_range[0]) * len(ids)
    log.info("search: %d motions (step %.2f pixels/h), %d trajectories in %d tasks",
             len(ids), step, n_trajectories, len(tasks))
    lap("first-pass planes")
    # over the whole grid: the search's own region may be too small to measure it
    scatter = _snr_scatter(z, phi, ox, oy, (mx0, mx1, my0, my1), cap, weights, fwhm)
    log.info("search: robust scatter of the S/N of empty-sky trajectories %.3f (1 if the "
             "noise is right)", scatter)
    if np.isfinite(scatter) and not 0.8 < scatter < 1.25:
        warnings.warn(f"search_motion: the S/N of empty-sky trajectories scatters by "
                      f"{scatter:.2f}, not 1: the S/N threshold is not in true noise units "
                      "(correlated frames? a poor static-sky subtraction?)",
                      AstropyUserWarning)
    lap("S/N scatter")
    results = map_frames(search_tile, tasks, scheduler, "search: tiles")
    del tasks
    best = np.full((ny, nx), -np.inf, np.float32)
    best_index = np.full((ny, nx), -1, np.int32)
    for r in sorted(results, key=lambda r: r["first"]):  # ties: the later motion, as in a task
        y0, x0 = r["origin"]
        h, w = r["best"].shape
        view, index = best[y0:y0 + h, x0:x0 + w], best_index[y0:y0 + h, x0:x0 + w]
        won = r["best"] >= view
        view[won] = r["best"][won]
        index[won] = r["index"][won]
    del results
    searched = time.perf_counter()
    lap("first pass")

    table = _candidates(z, phi, dt, best, best_index, grid_shape, motions, step,
                        snr_threshold, fwhm, merge_radius, max_candidates, median_fraction,
                        (exposures, fwhm) if trailed else None)
    if ellipse is not None and len(table["x"]):
        east, north = cd @ np.array([table["x"] - cx, table["y"] - cy])  # arcsec
        inside = (east / ellipse[0]) ** 2 + (north / ellipse[1]) ** 2 <= 1
        table = {k: v[inside] for k, v in table.items()}
    table["flux"] = table["flux"] * correction
    table["flux_err"] = table["flux_err"] * correction
    out = _as_qtable(table, grid_wcs, cd, frames[0].unit)
    out.meta.update({
        "n_trajectories": int(n_trajectories), "n_motions": len(ids),
        "motions": motions[ids],
        "reference_time": reference_time, "rate_step": step * pixel_arcsec * RATE,
        "fwhm": float(fwhm), "noise_factors": [float(c) for c in factors],
        "masked_fraction": float(1 - np.mean(sum(phi) > 0)),
        "snr_threshold": float(snr_threshold), "wcs": grid_wcs, "times": times,
        "snr_scatter": scatter, "flux_correction": correction,
        "seconds": time.perf_counter() - started,
        "seconds_prepare": prepared_at - started, "seconds_search": searched - prepared_at,
        "seconds_candidates": time.perf_counter() - searched,
        "seconds_estimated": seconds})
    lap("candidates")
    log.info("search: %d candidates at S/N >= %g from %d trajectories in %.1f s", len(out),
             snr_threshold, n_trajectories, out.meta["seconds"])
    return out


def _margins(ox, oy):
    """How far the motions' integer offsets reach left, right, down and up (pixels, >= 0):
    the margins of a tile's slab."""
    return (int(max(0, -ox.min())), int(max(0, ox.max())),
            int(max(0, -oy.min())), int(max(0, oy.max())))


def _slab(z, rows, cols, cap, weights):
    """What a first-pass task reads: the z planes' (a list, one per frame) rows ``rows`` and
    columns ``cols`` (which may reach beyond the grid: 0 there), for `first_pass_slab` to
    cap and weight."""
    (r0, r1), (c0, c1) = rows, cols
    ny, nx = z[0].shape
    ya, yb, xa, xb = max(r0, 0), min(r1, ny), max(c0, 0), min(c1, nx)
    return {"z": [plane[ya:yb, xa:xb] for plane in z], "at": (ya - r0, xa - c0),
            "size": (r1 - r0, c1 - c0),
            "cap": cap, "weights": weights}


def _snr_scatter(z, phi, ox, oy, pad, cap, weights, fwhm, n=4, size=512):
    """Robust scatter (sigma-G) of the first-pass S/N of empty-sky trajectories.

    For a few motions whose positions in any two frames are at least a FWHM apart, over the
    starting pixels of the central ``size`` x ``size`` pixels of the grid (the search's own
    region may be too small to tell) whose trajectory every frame covers: 1 when the noise
    is right. Sources are too rare to matter to sigma-G. NaN when no motion is that fast.

    A slower trajectory reads nearly the same pixels of the static sky in several frames;
    the static sky, the mean of the frames, holds those frames' own noise, which its
    subtraction takes out of their sum: such a trajectory's S/N scatters by less than 1
    (0 for a motion of zero) whatever the noise model, and taking one among the few
    motions measured made the scatter 0.72 to 0.80 on simulated frames whose every single
    fast motion gives 1.00 +- 0.05.
    """
    mx0, mx1, my0, my1 = pad
    apart = np.hypot(ox[:, :, None] - ox[:, None, :], oy[:, :, None] - oy[:, None, :])
    apart[:, np.arange(ox.shape[1]), np.arange(ox.shape[1])] = np.inf
    usable = np.nonzero(apart.min(axis=(1, 2)) >= fwhm)[0]
    if len(usable) == 0:
        log.info("search: no trial motion moves a FWHM between any two frames; the S/N "
                 "scatter of empty-sky trajectories is not measured")
        return float("nan")
    chosen = usable[np.linspace(0, len(usable) - 1, min(n, len(usable))).astype(int)]
    ny, nx = phi[0].shape
    h, w = min(size, ny), min(size, nx)
    y0, x0 = (ny - h) // 2, (nx - w) // 2
    rows, cols = (y0 - my0, y0 + h + my1), (x0 - mx0, x0 + w + mx1)
    slab = _slab(z, rows, cols, cap, weights)
    covered = _slab(phi, rows, cols, cap, weights)
    covered = first_pass_slab(dict(covered, cap=np.float32(np.inf),
                                   weights=np.ones(len(weights), np.float32))) > 0
    values = []
    for m in chosen:
        task = dict(slab, shape=(h, w), ox=ox[m:m + 1] + mx0, oy=oy[m:m + 1] + my0, first=0,
                    indices=[m], origin=(y0, x0))
        score = search_tile(task)["best"]
        full = np.ones(score.shape, bool)
        for i in range(len(phi)):
            ya, xa = oy[m, i] + my0, ox[m, i] + mx0
            full &= covered[i, ya:ya + h, xa:xa + w]
        if full.sum() > 1000:
            values.append(score[full])
    if not values:
        return float("nan")
    return sigma_g(np.concatenate(values))


def _candidates(z, phi, dt, best, best_index, grid_shape, motions, step, threshold, fwhm,
                merge_radius, max_candidates, median_fraction, trail, top=3):
    """Pixels whose first-pass score passes, scored exactly and robustly, refined, merged.

    With ``trail`` (exposures in hours, FWHM), the refined candidates are scored with the
    trailed PSF (`trailed_values`), sampled as finely as the longest trail of any motion of
    the grid (plus a step, the refinement's reach) needs: a candidate's score then does
    not depend on the others refined with it.
    """
    from scipy.ndimage import maximum_filter
    pre = threshold - 1.0  # the first pass's approximation, the robust score, the refinement
    peaks = (best >= pre) & (best == maximum_filter(best, size=3, mode="constant",
                                                    cval=-np.inf))
    ys, xs = np.nonzero(peaks)
    if len(xs) > 20 * max_candidates:
        order = np.argsort(-best[ys, xs], kind="stable")[:20 * max_candidates]
        log.warning("search: %d starting pixels pass the first pass; only the best %d are "
                    "scored", len(xs), len(order))
        ys, xs = ys[order], xs[order]
    # from the first pass's best motion, climb the robust score over the grid of motions (the
    # first pass caps each frame, so a bright source's best motion there is anywhere on a
    # plateau; the plain psi/phi score would climb towards any single-frame outlier nearby);
    # then the best few of the last neighbourhood are kept
    log.debug("search: %d starting pixels pass the first pass (S/N >= %.1f)", len(xs), pre)
    nvx, nvy = grid_shape
    ix, iy = best_index[ys, xs] % nvx, best_index[ys, xs] // nvx

    def exact(index, rows):
        """Robust S/N of motions ``index`` (k, 9) from starting pixels ``rows`` (k)."""
        x = xs[rows][:, None] + np.rint(motions[index, 0][None] * dt[:, None, None])
        y = ys[rows][:, None] + np.rint(motions[index, 1][None] * dt[:, None, None])
        snr = robust_values(*sample_psi_phi(z, phi, x.reshape(len(dt), -1),
                                            y.reshape(len(dt), -1)))[0]
        return snr.reshape(index.shape)

    steps = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]  # (0, 0) is the fifth
    step_x, step_y = np.array([a for a, _ in steps]), np.array([b for _, b in steps])
    near = np.zeros((len(xs), len(steps)), np.int64)
    scores = np.full((len(xs), len(steps)), -np.inf)
    # in chunks of pixels: the per-frame values of 9 motions of every pixel at once would
    # be the stage's largest arrays (each pixel climbs on its own: the same result)
    for active in np.array_split(np.arange(len(xs)), max(1, int(np.ceil(len(xs) / 4096)))):
        for _ in range(max(nvx, nvy)):  # a pixel whose motion stopped never moves again
            if not len(active):
                break
            near[active] = (np.clip(iy[active, None] + step_y, 0, nvy - 1) * nvx
                            + np.clip(ix[active, None] + step_x, 0, nvx - 1))
            scores[active] = exact(near[active], active)
            move = np.argmax(scores[active], axis=1)
            moving = scores[active, move] > scores[active, 4]
            active, move = active[moving], move[moving]
            ix[active] = np.clip(ix[active] + step_x[move], 0, nvx - 1)
            iy[active] = np.clip(iy[active] + step_y[move], 0, nvy - 1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    hits = np.concatenate([np.column_stack([xs, ys, np.take_along_axis(near, order[:, k:k + 1],
                                                                       axis=1)[:, 0]])
                           for k in range(top)]) if len(xs) else np.zeros((0, 3), int)
    xs, ys, index = hits[:, 0], hits[:, 1], hits[:, 2]
    vx, vy = motions[index, 0], motions[index, 1]
    x = np.rint(xs[None, :] + vx[None, :] * dt[:, None])
    y = np.rint(ys[None, :] + vy[None, :] * dt[:, None])
    snr, flux, err, n_used, _, snr_median = robust_values(*sample_psi_phi(z, phi, x, y))
    # the refinement recovers the pixel-phase and grid losses (4 % on average, 15 % at worst
    # for a source on a pixel corner midway between grid motions)
    keep = np.nonzero((snr >= 0.9 * threshold) & (snr_median >= median_fraction * threshold))[0]
    radius = merge_radius if merge_radius is not None else max(3.0, 2 * fwhm)
    # before the refinement only trajectories that share most frames are merged: a spurious
    # trajectory that brushes a real source could otherwise hide it and then fail itself
    first = merge(xs[keep].astype(float), ys[keep].astype(float), vx[keep], vy[keep],
                  snr[keep], dt, radius, anywhere=False)
    keep = keep[first]
    log.debug("search: %d candidates to refine", len(keep))
    if len(keep) > max_candidates:
        log.warning("search: %d candidates above S/N %.1f; only the best %d are refined",
                    len(keep), pre, max_candidates)
        keep = keep[:max_candidates]
    # in chunks of similar speeds: a chunk's patches are as large as its fastest trajectory
    # needs (`refine`), and most candidates are slower than the fastest motion; 128 a chunk
    # keeps the patches (ten frames, z, phi, psi and their spline coefficients) near 30 MB
    if trail is not None:
        fastest = np.hypot(np.abs(motions[:, 0]) + step, np.abs(motions[:, 1]) + step).max()
        trail = (trail[0], trail[1], fastest * float(np.max(trail[0])))
    by_speed = keep[np.argsort(np.hypot(vx[keep], vy[keep]), kind="stable")]
    chunks = np.array_split(np.arange(len(keep)), max(1, int(np.ceil(len(keep) / 128))))
    parts = [refine(z, phi, dt, (xs[by_speed[c]].astype(float), ys[by_speed[c]].astype(float),
                                 vx[by_speed[c]], vy[by_speed[c]]), step, trail=trail)
             for c in chunks]
    back = np.argsort(np.argsort(np.hypot(vx[keep], vy[keep]), kind="stable"))  # keep's order
    p = np.concatenate([q[0] for q in parts], axis=1)[:, back]
    psi_v = np.concatenate([q[1] for q in parts], axis=1)[:, back]
    phi_v = np.concatenate([q[2] for q in parts], axis=1)[:, back]
    s, f, e, n, _, sm = robust_values(psi_v, phi_v)
    rows = {"x": p[0], "y": p[1], "vx": p[2], "vy": p[3], "snr": s, "flux": f, "flux_err": e,
            "n_frames": n, "snr_median": sm}
    table = {k: np.asarray(v, float) for k, v in rows.items()}
    good = (table["snr"] >= threshold) & (table["snr_median"] >= median_fraction * threshold)
    table = {k: v[good] for k, v in table.items()}
    if len(table["x"]):
        again = merge(table["x"], table["y"], table["vx"], table["vy"],
                      table["snr"], dt, radius)
        table = {k: v[again] for k, v in table.items()}
    return table


def _as_qtable(table, wcs, cd, unit):
    out = QTable()
    n = len(table["x"])
    if n:
        world = wcs.pixel_to_world(table["x"], table["y"])
        ra, dec = world.ra.deg, world.dec.deg
        ra_rate = cd[0, 0] * table["vx"] + cd[0, 1] * table["vy"]
        dec_rate = cd[1, 0] * table["vx"] + cd[1, 1] * table["vy"]
    else:
        ra = dec = ra_rate = dec_rate = np.zeros(0)
    out["ra"] = ra * u.deg
    out["dec"] = dec * u.deg
    out["ra_rate"] = ra_rate * RATE
    out["dec_rate"] = dec_rate * RATE
    out["snr"] = table["snr"]
    unit = u.Unit(unit) if unit is not None else u.dimensionless_unscaled
    out["flux"] = table["flux"] * unit
    out["flux_err"] = table["flux_err"] * unit
    out["snr_median"] = table["snr_median"]
    out["n_frames"] = table["n_frames"].astype(int)
    out["x"] = table["x"]
    out["y"] = table["y"]
    return out
