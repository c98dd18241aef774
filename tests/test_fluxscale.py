"""Photometric scales from common stars, and what they do to the stacked target flux;
S/N weights."""

import numpy as np
import pytest
from astropy import units as u

import shiftstack_ccd as ss
from shiftstack_ccd.exceptions import FrameError
from shiftstack_ccd.fluxscale import photometric_scales
from shiftstack_ccd.photometry import aperture_flux, aperture_snr

from nights_helpers import simulated_night


def _frames(transparency, fwhm=3.0, seed=1, **options):
    kwargs = dict(n_frames=len(transparency), shape=(240, 240), n_stars=120,
                  star_flux_range=(5e3, 5e5), sky=300.0, cosmic_rays=False, target_flux=3e4,
                  target_rate=(20, -10) * u.arcsec / u.hour, fwhm=fwhm,
                  transparency=transparency, seed=seed)
    kwargs.update(options)
    return ss.simulate_observation(**kwargs)


def test_scales_recover_transparency_whatever_the_seeing():
    transparency = np.array([1.0, 0.7, 0.85, 0.95, 0.75])
    fwhm = np.array([2.5, 4.0, 3.0, 3.5, 2.8])
    sim = _frames(transparency, fwhm=fwhm, dither=0, max_rotation=0)
    frames = [f.subtract(300.0 * f.unit) for f in sim.frames]  # the known sky (gain 1)
    for frame in frames:  # as subtract_background leaves them (sky gone, card written)
        frame.meta["SSBKG"] = "Background2D"
    table = photometric_scales(frames, frames[2])
    truth = transparency / np.median(transparency)
    # 1%: seeing from 2.5 to 4 px moves that much of the stars' and their neighbours' light
    # across the 4-FWHM apertures of a crowded field (0.1% at equal seeing)
    assert np.allclose(table["flux_scale"], truth, rtol=0.01), (table["flux_scale"], truth)
    assert np.all(table["scale_stars"] >= 20)
    # the share of a star's light within 1.5 FWHM of the reference falls as the seeing widens
    fraction = np.asarray(table["aperture_fraction"])
    assert np.all(np.diff(fraction[np.argsort(fwhm)]) < 0)


def test_too_few_stars_is_a_clear_error():
    sim = _frames([1.0, 0.8, 0.9], n_stars=0)
    with pytest.raises(FrameError, match="at least 3 stars"):
        ss.shift_and_stack(sim.frames, sim.ephemeris, scale="stars", size=101)


def test_stacked_target_flux_right_to_one_percent_with_star_scales():
    """Transparency varying by 30%: with scale='stars' the stacked target flux equals that of
    the median frame to 1% (checked against the same frames at constant transparency)."""
    transparency = np.array([1.0, 0.7, 0.9, 0.8, 0.75, 0.95, 0.85, 1.0, 0.72])
    # a bright target: the two runs draw different noise, which must stay well under 1%
    # (at 3e4 e- it alone made 0.75%)
    varied = _frames(transparency, seed=3, target_flux=2e5)
    steady = _frames(np.ones(len(transparency)), seed=3, target_flux=2e5)
    reference = np.median(transparency)
    radius = 4 * 3.0
    flux = {}
    for name, sim, scale in (("steady", steady, None), ("stars", varied, "stars"),
                             ("none", varied, None)):
        result = ss.shift_and_stack(sim.frames, sim.ephemeris, method="mean", size=151,
                                    subtract_static=True, scale=scale)
        flux[name], _ = aperture_flux(result.stack, result.target_pixel, radius)
        if scale == "stars":
            assert result.stack.meta["SSSCALE"] == "stars"
            truth = transparency / reference
            assert np.allclose(result.table["flux_scale"], truth, rtol=0.01)
    assert flux["stars"] == pytest.approx(reference * flux["steady"], rel=0.01)


def test_user_scales_are_applied_and_recorded():
    sim = _frames([1.0, 1.0, 1.0], n_stars=10)
    factors = [1.0, 2.0, 0.5]
    result = ss.shift_and_stack(sim.frames, sim.ephemeris, scale=factors, size=101,
                                sky_stack=False)
    assert list(result.table["flux_scale"]) == factors
    assert result.stack.meta["SSSCALE"] == "factors"
    with pytest.raises(ValueError, match="scale must be None, 'stars' or 3 positive"):
        ss.shift_and_stack(sim.frames, sim.ephemeris, scale=[1.0, -1.0, 1.0], size=101)


def test_snr_weights_beat_equal_weights_on_a_night():
    """On a night with twilight, seeing and clouds, weights='snr' gives the stacked target a
    higher measured S/N than equal weights (inverse-variance weights: see
    benchmarks/bench_noise.py weights)."""
    sim = simulated_night(n_frames=12, seed=7)
    snr = {}
    for weights in (None, "inverse-variance", "snr"):
        result = ss.shift_and_stack(sim.frames, sim.ephemeris, method="mean", scale="stars",
                                    subtract_static=True, weights=weights, size=151)
        region = result.coverage == result.coverage.max()
        snr[weights] = aperture_snr(result.stack, result.target_pixel, 4.0,
                                    region=region)["snr"]
    assert snr["snr"] > 1.08 * snr[None]
    weights = np.asarray(result.table["weight"])
    fwhm = np.asarray(sim.truth["fwhm"])  # per-frame factor (times 1 / variance): seeing
    assert weights[np.argmax(fwhm)] < weights[np.argmin(fwhm)]
    assert result.stack.meta["SSWEIGHT"] == "inverse-variance*frame"
