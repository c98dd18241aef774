"""Noise and background on the cutout `shift_and_stack` keeps, against the whole frame.

`shift_and_stack` measures each frame's noise and sky on the part of the frame its output
grids need (`crop_to_grids`), not on the whole frame. On the raw Lowell frames the two must
tell the same story where they overlap: the cutout's sky model and measured pixel noise
agree with the whole frame's over the same pixels. (The whole frame's own figures differ:
its median sky is ~0.45% lower than at the centre and its pixel noise 4-6% lower, real
structure of an unflattened frame, which is why the noise is measured where the output is.)
Measured: pixel noise within 0.2%, sky level within 0.05%, the sky model 0.01-0.02 sigma
apart on average (0.06-0.2 sigma rms).
"""

import glob

import numpy as np
from astropy import units as u
from astropy.time import Time

import shiftstack_ccd as ss
from shiftstack_ccd._crop import crop_box, crop_to_grids
from shiftstack_ccd._frame_noise import MIN_CUTOUT, noise_and_background, source_pixels
from shiftstack_ccd.background import background_box_size
from shiftstack_ccd.noise import mask_outside_trimsec, noise_model, pixel_noise
from shiftstack_ccd.target_frame import check_target_on_frame


def _lowell(shared_data, size):
    """Three raw frames, a linear motion through the centre, and the stack's grids."""
    paths = sorted(glob.glob(str(shared_data("lowell42-5945/5945") / "*.fits")))
    footprints = [ss.read_footprint(p) for p in paths]
    times = Time([ss.mid_exposure_time(f.header) for f in footprints])
    centre = footprints[0].wcs.pixel_to_world(700, 685)
    eph = ss.Ephemeris.linear(centre, times[0], -20 * u.arcsec / u.hour,
                              8 * u.arcsec / u.hour)
    grid = ss.TargetFrame(eph, Time(np.mean(times.mjd), format="mjd"), (size, size),
                          footprints[0].wcs.proj_plane_pixel_scales()[0])
    return paths, footprints, times, eph, grid


def _sky_mask(frame, target):
    """The pixels noise_and_background measures on (sources and the target left out)."""
    data = np.asarray(frame.data)
    bad = ~np.isfinite(data) | np.asarray(frame.mask, dtype=bool)
    sigma = pixel_noise(data[::3], ~bad[::3])
    yy, xx = np.indices(data.shape, sparse=True)
    sources = (np.hypot(xx - target[0], yy - target[1]) <= 10) | source_pixels(
        data, bad, sigma, background_box_size(data.shape))
    return ~bad & ~sources


def test_cutout_noise_and_sky_agree_with_the_whole_frame(shared_data):
    paths, footprints, times, eph, grid = _lowell(shared_data, 301)
    for i in (0, 5, 9):
        frame = ss.read_frame(paths[i], footprint=footprints[i])
        model = noise_model(frame)
        frame = mask_outside_trimsec(frame)
        x, y = check_target_on_frame(frame, eph.at(times[i]))
        grids = [grid.wcs_at(times[i]), grid.wcs]
        whole, whole_info = noise_and_background(frame, model, (x, y), "model", "whole")
        cut, (cx, cy) = crop_to_grids(frame, (x, y), grids, grid.shape, min_size=MIN_CUTOUT)
        part, info = noise_and_background(cut, model, (cx, cy), "model", "cutout")
        x0, y0 = round(x - cx), round(y - cy)
        region = (slice(y0, y0 + cut.shape[0]), slice(x0, x0 + cut.shape[1]))
        # the cutout is what the output needs, not the frame
        assert cut.shape[0] * cut.shape[1] < 0.07 * frame.shape[0] * frame.shape[1]
        # pixel noise: the cutout's against the whole frame's on the same pixels
        sky = _sky_mask(frame, (x, y))[region]
        same_pixels = pixel_noise(np.asarray(frame.data)[region], sky)
        assert abs(info["pixel_noise"] / same_pixels - 1) < 0.02
        # sky level: the cutout's model against the whole frame's over the cutout
        sky_whole = np.asarray(frame.data)[region] - whole.data[region]
        sky_cut = np.asarray(cut.data) - part.data
        assert abs(info["sky_level"] / np.median(sky_whole) - 1) < 0.005
        # ... and pixel by pixel: no offset, and a scatter (the boxes lie differently; near
        # a bright star a box's median moves by up to ~2 sigma) well under the pixel noise
        difference = (sky_cut - sky_whole) / same_pixels
        assert abs(np.mean(difference)) < 0.05 and np.sqrt(np.mean(difference ** 2)) < 0.25
        # the uncertainty given to the sky is the scatter of the data where it is used
        assert abs(np.median(part.uncertainty.array[sky]) / same_pixels - 1) < 0.02


def test_small_output_keeps_a_cutout_big_enough_for_the_sky(shared_data):
    """A 21-pixel output still models the sky on 128 pixels a side (4 boxes of 32)."""
    paths, footprints, times, eph, grid = _lowell(shared_data, 21)
    frame = ss.read_frame(paths[0], footprint=footprints[0])
    box = crop_box(frame.shape, frame.wcs, [grid.wcs_at(times[0]), grid.wcs], grid.shape,
                   min_size=MIN_CUTOUT)
    x0, y0, x1, y1 = box
    assert (x1 - x0, y1 - y0) == (MIN_CUTOUT, MIN_CUTOUT)
    x, y = check_target_on_frame(frame, eph.at(times[0]))
    assert x0 + 50 < x < x1 - 50 and y0 + 50 < y < y1 - 50  # the target near its centre
    assert background_box_size((y1 - y0, x1 - x0)) == 32
