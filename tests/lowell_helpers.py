"""The Lowell frames of (5945) calibrated and its motion found, for the tests and benchmarks.

Shared by ``tests/test_lowell.py`` (raw frames), ``tests/test_measure_lowell.py`` and
``benchmarks/bench_measure.py`` (calibrated frames; the benchmark puts this folder on
``sys.path``), so that all find the asteroid the same way. The gallery's Lowell example
starts from two rough positions instead, read off the first and last frames (a reader's
path); `shiftstack_ccd.search_motion` is the package's general way to find movers. The
blink search here is a test's way to find the one bright mover without being told where
it is, not a general tool: it needs the mover detected in every single frame.
"""

import glob

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.time import Time

import shiftstack_ccd as ss
from shiftstack_ccd.ephemeris.motion import fit_linear_motion, track_target

TRIM = "[18:1382,1:1370]"


def calibrated(folder):
    """The raw Lowell frames and the same frames calibrated as a user would with ccdproc."""
    import ccdproc
    raw = ss.read_frames(sorted(glob.glob(str(folder / "5945" / "*.fits"))))
    bias = ccdproc.trim_image(ss.read_frames(str(folder / "zero"))[0], fits_section=TRIM)
    flat = ccdproc.trim_image(ss.read_frames(str(folder / "flat"))[0], fits_section=TRIM)
    flat = ccdproc.subtract_bias(flat, bias)
    frames = []
    for frame in raw:
        gain = float(frame.meta["AGAIN_01"]) * u.electron / u.adu
        read_noise = float(frame.meta["ARDNS_01"]) * u.electron
        ccd = ccdproc.subtract_bias(ccdproc.trim_image(frame, fits_section=TRIM), bias)
        ccd = ccdproc.create_deviation(ccd, gain=gain, readnoise=read_noise,
                                       disregard_nan=True)
        ccd = ccdproc.gain_correct(ccdproc.flat_correct(ccd, flat), gain)
        ccd.meta["SSFILE"] = frame.meta["SSFILE"]
        frames.append(ccd)
    return raw, frames


def detections(frame, section=None):
    """Sky positions of the sources above 8 sigma (DAOStarFinder, FWHM 3.5 px).

    ``section`` (FITS convention, e.g. `TRIM`) limits the search to the exposed pixels of a
    raw frame, whose prescan and overscan would inflate the noise estimate several times.
    """
    from astropy.stats import sigma_clipped_stats
    from ccdproc.utils.slices import slice_from_string
    from photutils.detection import DAOStarFinder
    rows, cols = (slice(None), slice(None)) if section is None else \
        slice_from_string(section, fits_convention=True)
    data = frame.data[rows, cols]
    _, median, std = sigma_clipped_stats(data[::3, ::3])
    found = DAOStarFinder(fwhm=3.5, threshold=8 * std)(data - median)
    return frame.wcs.pixel_to_world(np.asarray(found["x_centroid"]) + (cols.start or 0),
                                    np.asarray(found["y_centroid"]) + (rows.start or 0))


def find_asteroid(frames, pointing, section=None):
    """The moving source nearest the pointing: in the first frame, not in the last, and
    found again on the line between in every frame. Returns its rough positions in the
    first and last frames (SkyCoord), for `track_target`."""
    times = Time([ss.mid_exposure_time(f) for f in frames])
    catalogs = [detections(f, section) for f in frames]
    first, last = catalogs[0], catalogs[-1]
    _, sep_first, _ = first.match_to_catalog_sky(last)
    _, sep_last, _ = last.match_to_catalog_sky(first)
    fractions = ((times - times[0]) / (times[-1] - times[0])).value
    movers = []
    for i in np.where(sep_first > 2 * u.arcsec)[0]:
        close = last.separation(first[i])
        for j in np.where((close > 2 * u.arcsec) & (close < 20 * u.arcsec)
                          & (sep_last > 2 * u.arcsec))[0]:
            dra, ddec = first[i].spherical_offsets_to(last[j])
            if all(np.min(c.separation(first[i].spherical_offsets_by(dra * f, ddec * f)))
                   < 1 * u.arcsec for c, f in zip(catalogs, fractions)):
                movers.append((first[i], last[j]))
    assert movers, "no moving source found in the Lowell frames"
    return min(movers, key=lambda m: m[0].separation(pointing))


def asteroid_motion(raw, frames, section=None):
    """The asteroid (the mover nearest the telescope's pointing, from the raw headers)
    tracked in ``frames`` and its fitted linear motion: ``(track, eph)``. ``section``: see
    `detections` (`TRIM` when ``frames`` are raw)."""
    pointing = SkyCoord(raw[0].meta["TELRA"], raw[0].meta["TELDEC"],
                        unit=(u.hourangle, u.deg))
    track = track_target(frames, *find_asteroid(frames, pointing, section))
    eph = fit_linear_motion(track["time"], SkyCoord(track["ra"], track["dec"], unit="deg"))
    return track, eph


def empty_spots(plain, n, rng, n_frames):
    """``n`` random places of the stack ``plain`` on empty sky, as a SkyCoord: away from the
    stars (sky stack) and their trails (target stack), from the asteroid and from each
    other, where all ``n_frames`` frames overlap."""
    busy = ss.source_mask(plain.sky_stack, nsigma=2.0, npixels=5, dilate=10) \
        | ss.source_mask(plain.stack, nsigma=2.0, npixels=5, dilate=6) \
        | (plain.coverage < n_frames)
    ny, nx = busy.shape
    cx, cy = plain.target_pixel
    spots = []
    for _ in range(50000):  # random places, each free of sources within 6 px
        x, y = rng.uniform(40, nx - 40), rng.uniform(40, ny - 40)
        if busy[int(y) - 6:int(y) + 7, int(x) - 6:int(x) + 7].any() or \
                np.hypot(x - cx, y - cy) < 30 or \
                any(np.hypot(x - a, y - b) < 25 for a, b in spots):
            continue
        spots.append((x, y))
        if len(spots) == n:
            break
    if len(spots) < n:
        raise RuntimeError(f"only {len(spots)} empty places found for {n} fakes")
    spots = np.array(spots)
    return plain.stack.wcs.pixel_to_world(spots[:, 0], spots[:, 1])
