"""The Lowell frames of (5945) calibrated and its motion found, for the tests and benchmarks.

Shared by ``tests/test_measure_lowell.py`` and ``benchmarks/bench_measure.py`` (which puts
this folder on ``sys.path``), so that both measure the same chain.
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


def detections(frame):
    from astropy.stats import sigma_clipped_stats
    from photutils.detection import DAOStarFinder
    _, median, std = sigma_clipped_stats(frame.data[::3, ::3])
    found = DAOStarFinder(fwhm=3.5, threshold=8 * std)(frame.data - median)
    return frame.wcs.pixel_to_world(found["x_centroid"], found["y_centroid"])


def find_asteroid(frames, pointing):
    """The moving source nearest the pointing: in the first frame, not in the last, and
    found again on the line between (as tests/test_lowell.py finds it)."""
    times = Time([ss.mid_exposure_time(f) for f in frames])
    catalogs = [detections(f) for f in frames]
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
    return min(movers, key=lambda m: m[0].separation(pointing))


def asteroid_motion(raw, frames):
    """The asteroid tracked in ``frames`` and its fitted linear motion: ``(track, eph)``."""
    pointing = SkyCoord(raw[0].meta["TELRA"], raw[0].meta["TELDEC"],
                        unit=(u.hourangle, u.deg))
    track = track_target(frames, *find_asteroid(frames, pointing))
    eph = fit_linear_motion(track["time"], SkyCoord(track["ra"], track["dec"], unit="deg"))
    return track, eph
