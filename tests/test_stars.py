"""Tests of shiftstack_ccd.stars: the one stellar FWHM of the package (detection itself is
tested with the WCS correction it serves, in test_astrometry.py)."""

from pathlib import Path

import numpy as np
import pytest

import shiftstack_ccd as ss
from shiftstack_ccd.stars import detect_stars, measure_fwhm, stellar_fwhm


@pytest.mark.parametrize("fwhm", [2.0, 3.0, 4.5])
def test_stellar_fwhm_of_known_stars(fwhm):
    """Near-Gaussian stars (Moffat beta = 20) of known FWHM: recovered within 3 %."""
    frame = ss.simulate_observation(n_frames=1, shape=(256, 256), fwhm=fwhm, psf_beta=20,
                                    n_stars=80, seed=4).frames[0]
    assert stellar_fwhm(frame) == pytest.approx(fwhm, rel=0.03)
    # detect_stars uses the same estimate when given none
    assert detect_stars(frame).meta["fwhm"] == pytest.approx(stellar_fwhm(frame), rel=1e-6)


def test_saturated_stars_are_left_out():
    """Stars with flat tops (clipped at SATURATE) would read wide; they do not count."""
    sim = ss.simulate_observation(n_frames=1, shape=(256, 256), fwhm=2.0, psf_beta=20,
                                  n_stars=80, star_flux_range=(2e3, 2e6), seed=4)
    frame = sim.frames[0]
    level = float(np.percentile(frame.data, 99.9))
    clipped = frame.copy()
    clipped.data = np.minimum(clipped.data, level)
    clipped.meta["SATURATE"] = level
    y, x = np.unravel_index(np.argmax(frame.data), frame.shape)
    assert measure_fwhm(clipped, (x, y)) > 1.3 * measure_fwhm(frame, (x, y))  # a flat top
    assert stellar_fwhm(clipped) == pytest.approx(2.0, rel=0.03)


def test_no_stars_no_fwhm():
    rng = np.random.default_rng(1)
    assert stellar_fwhm(rng.normal(100.0, 5.0, (128, 128))) is None


def test_lowell_frame_fwhm_agrees_with_single_unsaturated_stars(shared_data):
    """On a raw Lowell frame (bright stars saturated at 65535 ADU) the estimate is the
    FWHM that single unsaturated, isolated stars give."""
    path = sorted(Path(shared_data("lowell42-5945/5945")).glob("*.fits"))[0]
    frame = ss.read_frames([path])[0]
    found = detect_stars(frame, max_stars=40)
    peaks = found["peak"] + np.median(frame.data)  # DAOStarFinder's peak is above the sky
    single = [measure_fwhm(frame, (x, y)) for x, y, p in zip(found["x"], found["y"], peaks)
              if p < 40000]
    assert len(single) >= 20
    estimate = found.meta["fwhm"]  # stellar_fwhm, as detect_stars used it
    assert 1.4 < estimate < 2.2
    assert estimate == pytest.approx(np.median(single), rel=0.15)
