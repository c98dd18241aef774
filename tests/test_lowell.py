"""The real Lowell frames of (5945) Roachapproach, stacked on rates measured from them.

Ten 300 s VR frames, Lowell 42-inch, NASA42 CCD binned 3x3 (1.107"/pixel); the asteroid moves
about 0.7 pixel per frame. Nothing about its motion is assumed: the moving source nearest the
telescope pointing is found by cross-matching detections between frames, tracked in every
frame, and a linear motion is fitted to its positions.
"""

import glob

import numpy as np
import pytest
from astropy import units as u
from astropy.stats import sigma_clipped_stats
from photutils.detection import DAOStarFinder
from astropy.modeling.fitting import TRFLSQFitter
from astropy.modeling.models import Const2D, Gaussian2D

import shiftstack_ccd as ss
from shiftstack_ccd.photometry import aperture_flux, source_mask
from shiftstack_ccd.stars import measure_fwhm

from lowell_helpers import TRIM, asteroid_motion


@pytest.fixture(scope="module")
def lowell(shared_data):
    folder = shared_data("lowell42-5945/5945")
    frames = ss.read_frames(sorted(glob.glob(str(folder / "*.fits"))))
    # raw frames: the sources are found on the exposed pixels (TRIMSEC) only
    track, eph = asteroid_motion(frames, frames, section=TRIM)
    result = ss.shift_and_stack(frames, eph, method="mean", size=201)
    return frames, track, eph, result


def _shape(image, x, y, half=8):
    """Elongation (major/minor sigma) and major-axis angle (deg, from +x) of a source.

    An elliptical 2-D Gaussian plus a constant is fitted to a cutout: a trail (a line
    convolved with the PSF) comes out as an elongated Gaussian along the line.
    """
    xi, yi = int(round(x)), int(round(y))
    cut = np.array(image[yi - half:yi + half + 1, xi - half:xi + half + 1], dtype=float)
    yy, xx = np.indices(cut.shape)
    background = np.nanmedian(cut)
    model = Gaussian2D(np.nanmax(cut) - background, x - xi + half, y - yi + half, 1.5, 1.5,
                       0.0) + Const2D(background)
    good = np.isfinite(cut)
    fit = TRFLSQFitter()(model, xx[good], yy[good], cut[good])
    sx, sy, theta = abs(fit.x_stddev_0.value), abs(fit.y_stddev_0.value), fit.theta_0.value
    if sy > sx:
        sx, sy, theta = sy, sx, theta + np.pi / 2
    return sx / sy, np.degrees(theta) % 180


def _isolated_stars(image, avoid, nsigma=30, edge=12, spacing=16):
    """Bright sources with no neighbour within ``spacing`` pixels, star-like in width.

    The frames are raw: hot pixels survive into both stacks, and a fitted width below
    1.4 pixels (the seeing is about 1.9) tells them apart from stars.
    """
    _, median, std = sigma_clipped_stats(image)
    found = DAOStarFinder(fwhm=3.5, threshold=nsigma * std)(np.nan_to_num(image - median))
    xy = np.column_stack([found["x_centroid"], found["y_centroid"]])
    ny, nx = image.shape
    keep = []
    for i, (x, y) in enumerate(xy):
        others = np.delete(xy, i, axis=0)
        if (edge < x < nx - edge and edge < y < ny - edge
                and np.hypot(x - avoid[0], y - avoid[1]) > 20
                and (len(others) == 0 or np.min(np.hypot(*(others - (x, y)).T)) > spacing)
                and measure_fwhm(image, (x, y)) > 1.4):
            keep.append((x, y))
    return keep


def test_measured_motion_is_linear_and_plausible(lowell):
    frames, track, eph, result = lowell
    assert len(track) == 10
    # the fit describes every position to a fraction of a pixel (1.107"/pixel, the WCS's)
    assert eph.meta["fit_rms"] < 0.15
    ra_rate, dec_rate = eph.rates_at(track["time"][0])
    speed = np.hypot(ra_rate, dec_rate).to_value(u.arcsec / u.hour)
    # about 0.7 pixel per frame, frames 305 s apart
    per_frame = speed * (track["time"][1] - track["time"][0]).to_value(u.hour) / 1.107
    assert 0.5 < per_frame < 0.9


def test_asteroid_compact_in_target_stack_stars_trail(lowell):
    frames, track, eph, result = lowell
    single = [measure_fwhm(f, (x, y)) for f, x, y in zip(frames, track["x"], track["y"])]
    # frames are sorted by time in track; fwhm per frame regardless of order
    cx, cy = result.target_pixel
    stacked = measure_fwhm(result.stack, (cx, cy))
    assert abs(stacked / np.median(single) - 1) < 0.10, (stacked, np.median(single))

    # the direction of the target's motion on the plane, modulo 180 degrees
    dx, dy = result.table["dx"], result.table["dy"]
    motion = np.degrees(np.arctan2(dy[-1] - dy[0], dx[-1] - dx[0])) % 180

    def angle_to_motion(angle):
        return abs((angle - motion + 90) % 180 - 90)

    # the asteroid: round on its own motion, trailed along it on the stars
    elongation, _ = _shape(result.stack.data, cx, cy)
    assert elongation < 1.2, elongation
    elongation, angle = _shape(result.sky_stack.data, cx, cy)
    assert elongation > 1.5 and angle_to_motion(angle) < 15, (elongation, angle, motion)
    # stars: the reverse
    stars = _isolated_stars(result.sky_stack.data, avoid=(cx, cy))
    assert len(stars) >= 3
    for x, y in stars:
        elongation, _ = _shape(result.sky_stack.data, x, y)
        assert elongation < 1.2, (x, y, elongation)
        elongation, angle = _shape(result.stack.data, x, y)
        assert elongation > 1.5 and angle_to_motion(angle) < 15, (x, y, elongation, angle)


def test_stack_header_records_the_frames(lowell):
    frames, track, eph, result = lowell
    h = result.stack.meta
    assert h["NCOMBINE"] == 10 and h["EPHKIND"] == "linear"
    assert set(result.table["resample"]) == {"warp"}  # TPV distortion, rotated frames
    assert h["SSF001"].endswith("20190326.0135.fits")
    assert np.all(result.coverage[90:110, 90:110] == 10)


def test_static_sky_subtraction_removes_trails_keeps_asteroid(lowell):
    """Static-sky template subtracted: star trails go, the asteroid's flux stays."""
    frames, track, eph, result = lowell
    subtracted = ss.shift_and_stack(frames, eph, method="mean", size=201, sky_stack=False,
                                    subtract_static=True)
    cx, cy = result.target_pixel
    # the star trails of the plain target stack: its detected sources, the asteroid excepted
    trails = source_mask(result.stack, dilate=2)
    yy, xx = np.indices(trails.shape)
    trails &= np.hypot(xx - cx, yy - cy) > 8

    def trail_flux(image):
        data = image.data
        sky = sigma_clipped_stats(data[~trails & np.isfinite(data)])[1]
        inside = trails & np.isfinite(data)
        return float(np.sum(data[inside] - sky)), int(inside.sum())
    before, n_before = trail_flux(result.stack)
    after, n_after = trail_flux(subtracted.stack)
    assert before > 0 and abs(after) <= 0.05 * before, (before, after)
    assert n_after >= 0.9 * n_before  # removed, not masked away
    flux_before, _ = aperture_flux(result.stack, (cx, cy), 4)
    flux_after, _ = aperture_flux(subtracted.stack, (cx, cy), 4)
    assert abs(flux_after / flux_before - 1) < 0.02, (flux_before, flux_after)
