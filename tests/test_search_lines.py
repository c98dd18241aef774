"""The search's mask of the row and column segments the background model misses."""

import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import CCDData
from astropy.time import Time

import shiftstack_ccd as ss
from shiftstack_ccd.search._lines import bad_lines

RATE = u.arcsec / u.hour


def _noise(shape=(1024, 1024), seed=1):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


def test_white_noise_is_left_alone_and_lines_are_masked():
    z = _noise()
    ones, none = np.ones_like(z), np.zeros(z.shape, bool)
    assert bad_lines(z, ones, none).mean() < 1e-3  # a false segment now and then at most
    z[100, 256:512] += 0.5  # half a sigma along one row segment
    z[:, 700] += 0.6        # a bad column
    z[:, 900] -= 0.6        # a dead-ish one
    mask = bad_lines(z, ones, none)
    assert mask[100, 256:512].all() and mask[:, 700].all() and mask[:, 900].all()
    assert not mask[100, :256].any()  # the segment, not the whole row
    others = np.ones(z.shape, bool)
    others[100], others[:, [700, 900]] = False, False
    assert mask[others].mean() < 1e-3


def test_a_crowded_field_is_not_masked_whole():
    """Sources raise every segment's median alike: the comparison is with the others."""
    z = _noise() + 0.4
    assert bad_lines(z, np.ones_like(z), np.zeros(z.shape, bool)).mean() < 1e-3


def test_masked_pixels_and_noise_units():
    z = _noise(seed=2) * 10.0  # noise of 10 units
    z[50, :] += 3.0            # 0.3 sigma: at the threshold's edge, not masked at 0.2
    z[60, :] += 6.0            # 0.6 sigma: masked
    bad = np.zeros(z.shape, bool)
    bad[:, :600] = True  # masked pixels are left out of the medians
    z[:, :600] = 1e6
    mask = bad_lines(z, np.full(z.shape, 10.0, np.float32), bad)
    assert mask[60, 600:].all() and not mask[200, 600:].any()


@pytest.fixture(scope="module")
def dithered_raw():
    """Dithered frames (40 px rms) whose sky is vignetted and falls steeply over the first
    rows and the last columns, fixed on the detector as a raw frame's is; a target at
    (20, -10) arcsec/h."""
    sim = ss.simulate_observation(n_frames=10, shape=(512, 512), cadence=300 * u.s,
                                  exptime=300 * u.s, n_stars=150, seed=2, dither=40.0,
                                  sky=1000.0, target_rate=(20, -10) * RATE, target_snr=3.5,
                                  with_uncertainty=False)
    ny, nx = sim.frames[0].shape
    y, x = np.mgrid[:ny, :nx]
    r2 = ((x - nx / 2) ** 2 + (y - ny / 2) ** 2) / (0.75 * nx) ** 2
    vignetting = (1 - 0.35 * r2) * (1 - 0.6 * np.exp(-y / 4.0)) \
        * (1 - 0.2 * np.exp(-(nx - 1 - x) / 20.0))
    frames = [CCDData((np.asarray(f.data) - 1000.0 + 1000.0 * vignetting).astype(np.float32),
                      unit=f.unit, wcs=f.wcs, meta=f.meta.copy()) for f in sim.frames]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the simulated frames' noise is not calibrated
        found = ss.search_motion(frames, ra_rate=(-40, 40) * RATE, dec_rate=(-40, 40) * RATE)
    return sim, found


def test_dithered_raw_frames_make_no_false_lines(dithered_raw):
    """Without the mask, the frames' edge residuals made 19 candidates above 7 sigma here
    (every RA rate, no Dec rate: a row of the grid); with it the target alone."""
    sim, found = dithered_raw
    strong = found[found["snr"] >= 7]
    truth = sim.ephemeris.at(Time(found.meta["reference_time"]))
    assert len(strong) == 1, strong
    assert SkyCoord(strong["ra"][0], strong["dec"][0]).separation(truth).arcsec < 1.5
    assert abs(strong["ra_rate"][0].to_value(RATE) - 20) < 4
    assert abs(strong["dec_rate"][0].to_value(RATE) + 10) < 4


def test_guided_frames_are_not_dithered_and_dithered_ones_are():
    """The Lowell-like case (guided, one pointing to a fraction of a pixel) masks nothing:
    the static sky cancels the detector's lines there."""
    from shiftstack_ccd.search._lines import frames_dithered
    still = ss.simulate_observation(n_frames=4, shape=(128, 128), n_stars=5, dither=0.0,
                                    max_rotation=0 * u.deg, seed=3)
    moved = ss.simulate_observation(n_frames=4, shape=(128, 128), n_stars=5, dither=10.0,
                                    seed=3)
    assert not frames_dithered([f.wcs for f in still.frames], [f.shape for f in still.frames])
    assert frames_dithered([f.wcs for f in moved.frames], [f.shape for f in moved.frames])
