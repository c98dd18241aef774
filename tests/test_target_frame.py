"""The co-moving target plane: exact offsets, grids per epoch, default sizes."""

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.time import Time
from astropy.wcs.utils import proj_plane_pixel_scales

import shiftstack_ccd as ss
from shiftstack_ccd import TargetFrame

T0 = Time("2024-03-01T03:00:00", scale="utc")


def _eph(rate=(36.0, -18.0), dec=2.0):
    return ss.Ephemeris.linear(SkyCoord(150.0, dec, unit="deg"), T0,
                               rate[0] * u.arcsec / u.hour, rate[1] * u.arcsec / u.hour)


def test_north_up_grid_and_centre():
    grid = TargetFrame(_eph(), T0, (101, 81), 0.5 * u.arcsec)
    assert grid.center_pixel == (40.0, 50.0)
    x, y = grid.wcs.world_to_pixel(_eph().at(T0))
    assert abs(x - 40) < 1e-9 and abs(y - 50) < 1e-9
    cd = grid.wcs.wcs.cd
    assert np.allclose(cd, [[-0.5 / 3600, 0], [0, 0.5 / 3600]])
    # north is +y: a point 10" north is 20 pixels up
    north = _eph().at(T0).spherical_offsets_by(0 * u.arcsec, 10 * u.arcsec)
    nx, ny = grid.wcs.world_to_pixel(north)
    assert abs(nx - 40) < 1e-6 and abs(ny - 70) < 1e-6


def test_offsets_are_exact_for_any_motion():
    """At high declination and a long track, the offset is the true projection."""
    eph = _eph(rate=(3600.0, 1800.0), dec=80.0)  # 1 deg/h, near the pole
    grid = TargetFrame(eph, T0, (51, 51), 1 * u.arcsec)
    times = T0 + np.linspace(-2, 2, 9) * u.hour
    dx, dy = grid.offset(times)
    x, y = grid.wcs.world_to_pixel(eph.at(times))
    assert np.allclose(dx, x - 25, atol=1e-9) and np.allclose(dy, y - 25, atol=1e-9)
    # and each epoch's grid puts the target on the centre pixel
    for t in times:
        tx, ty = grid.wcs_at(t).world_to_pixel(eph.at(t))
        assert abs(tx - 25) < 1e-6 and abs(ty - 25) < 1e-6
    # the same plane: only CRPIX moves
    assert np.allclose(grid.wcs_at(times[0]).wcs.crval, grid.wcs.wcs.crval)
    assert np.allclose(grid.wcs_at(times[0]).wcs.cd, grid.wcs.wcs.cd)


def test_small_offsets_match_rates():
    grid = TargetFrame(_eph(), T0, (11, 11), 0.5 * u.arcsec)
    dx, dy = grid.offset(T0 + 10 * u.min)
    # 36"/h east for 10 min = 6" = 12 px to the left; 18"/h south = 3" = 6 px down
    assert abs(dx + 12) < 1e-3 and abs(dy + 6) < 1e-3


def test_for_frames_defaults():
    sim = ss.simulate_observation(n_frames=4, shape=(64, 80), seed=1)
    grid = TargetFrame.for_frames(sim.frames, sim.ephemeris)
    times = Time(sim.truth["time"])
    assert abs((grid.reference_time - Time(times.mjd.mean(), format="mjd")).to_value(u.s)) < 1e-3
    assert grid.pixel_scale.to_value(u.arcsec) == pytest.approx(0.5, rel=1e-6)
    ny, nx = grid.shape
    assert ny == nx and ny % 2 == 1
    # every corner of every frame falls on its epoch's grid
    for frame, t in zip(sim.frames, times):
        wcs = grid.wcs_at(t)
        h, w = frame.shape
        corners = frame.wcs.pixel_to_world([-0.5, w - 0.5, -0.5, w - 0.5],
                                           [-0.5, -0.5, h - 0.5, h - 0.5])
        x, y = wcs.world_to_pixel(corners)
        assert np.all((x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5))
    assert TargetFrame.for_frames(sim.frames, sim.ephemeris, size=31).shape == (31, 31)
    assert TargetFrame.for_frames(sim.frames, sim.ephemeris, size=(21, 41)).shape == (21, 41)
    assert TargetFrame.for_frames(sim.frames, sim.ephemeris, size=10 * u.arcsec).shape == (21, 21)


def test_orientation_first_keeps_the_frame_rotation():
    sim = ss.simulate_observation(n_frames=2, shape=(64, 64), seed=2, max_rotation=20 * u.deg)
    grid = TargetFrame.for_frames(sim.frames, sim.ephemeris, orientation="first",
                                  pixel_scale=1 * u.arcsec)
    m_frame = sim.frames[0].wcs.pixel_scale_matrix
    m_grid = grid.wcs.pixel_scale_matrix
    assert np.allclose(m_grid / np.sqrt(abs(np.linalg.det(m_grid))),
                       m_frame / np.sqrt(abs(np.linalg.det(m_frame))), atol=1e-12)
    assert np.allclose(proj_plane_pixel_scales(grid.wcs), 1 / 3600)


def test_target_off_frame():
    sim = ss.simulate_observation(n_frames=2, shape=(64, 64), seed=3)
    grid = TargetFrame.for_frames(sim.frames, sim.ephemeris)
    x, y = grid.check_on_frame(sim.frames[0], label="a.fits")
    assert abs(x - sim.truth["x"][0]) < 1e-6 and abs(y - sim.truth["y"][0]) < 1e-6
    far = ss.Ephemeris.linear(SkyCoord(10, 10, unit="deg"), T0, 0 * u.arcsec / u.hour,
                              0 * u.arcsec / u.hour)
    grid_far = TargetFrame(far, T0, (11, 11), 1 * u.arcsec)
    with pytest.raises(ss.FrameError, match="a.fits: the target is off the frame"):
        grid_far.check_on_frame(sim.frames[0], label="a.fits")


def test_bad_shape():
    with pytest.raises(ValueError, match="shape must be"):
        TargetFrame(_eph(), T0, (0, 5), 1 * u.arcsec)
