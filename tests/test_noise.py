"""The noise model of frames without an uncertainty (shiftstack_ccd.noise), alone and in stacks.

Truth: simulated raw frames (known gain, read noise, bias and sky) and the ten shared raw
Lowell 42-inch frames, whose reported stack uncertainties are checked against the scatter
of empty-sky aperture sums.
"""

import glob

import numpy as np
import pytest
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning

import shiftstack_ccd as ss
from shiftstack_ccd.exceptions import FrameError
from shiftstack_ccd.noise import (add_uncertainty, header_number, mask_outside_trimsec,
                                  noise_model, overscan_level, pixel_noise)

from nights_helpers import aperture_ratio, simulated_night

EPHEMERIS = "tests/data/ephemerides/lowell5945_linear.ecsv"


@pytest.fixture(scope="module")
def raw():
    """One raw simulated frame (gain 2, read noise 6 e-, bias 500 ADU, sky 800 e-) and the
    true per-pixel sigma of its data region, ADU."""
    sim = ss.simulate_observation(n_frames=1, shape=(200, 200), sky=800.0, gain=2.0,
                                  read_noise=6.0, bias_level=500.0, with_uncertainty=False,
                                  n_stars=0, cosmic_rays=False, seed=4)
    truth = np.sqrt(800.0 + 6.0 ** 2) / 2.0
    return sim.frames[0], truth


@pytest.mark.parametrize("value", [0, -2.0, "fast", float("nan"), True])
def test_nonsense_gain_card_is_an_error_naming_frame_and_card(value):
    with pytest.raises(FrameError, match=r"raw\.fits: header card EGAIN = .* not a usable gain"):
        header_number({"EGAIN": value}, ss.GAIN_KEYS, "raw.fits", "gain")


def test_nonsense_gain_card_stops_the_stack_with_the_file_name():
    sim = ss.simulate_observation(n_frames=3, shape=(64, 64), n_stars=3, seed=1,
                                  with_uncertainty=False, cosmic_rays=False)
    frames = [f.copy() for f in sim.frames]
    frames[1].meta["GAIN"] = "unknown"
    with pytest.raises(FrameError, match=r"sim_001\.fits: header card GAIN = 'unknown'"):
        ss.shift_and_stack(frames, sim.ephemeris, sky_stack=False)
    frames[1].meta["GAIN"] = -1.0
    with pytest.raises(FrameError, match=r"sim_001\.fits: header card GAIN = -1\.0"):
        ss.shift_and_stack(frames, sim.ephemeris, sky_stack=False)


def test_zero_read_noise_is_allowed_negative_is_not():
    assert header_number({"RDNOISE": 0}, ss.READ_NOISE_KEYS, "f", "read noise",
                         allow_zero=True) == ("RDNOISE", 0.0)
    with pytest.raises(FrameError, match="RDNOISE"):
        header_number({"RDNOISE": -3}, ss.READ_NOISE_KEYS, "f", "read noise", allow_zero=True)


def test_bias_from_overscan_and_data_region(raw):
    frame, _ = raw
    assert frame.shape == (200, 216)
    assert overscan_level(frame) == pytest.approx(500.0, abs=0.1)
    masked = mask_outside_trimsec(frame)
    assert masked.mask[:, 200:].all() and not masked.mask[:, :200].any()
    assert frame.mask is None  # the input is untouched
    trimmed = CCDData(frame.data[:, :200], unit="adu", meta=frame.meta)
    assert overscan_level(trimmed) is None  # BIASSEC no longer in the frame


def test_detector_model_matches_the_true_noise(raw):
    frame, truth = raw
    model = noise_model(frame)
    assert (model.kind, model.gain, model.read_noise, model.bias_source) == \
        ("detector", 2.0, 6.0, "overscan")
    out, info = add_uncertainty(mask_outside_trimsec(frame), model)
    sky = np.asarray(out.uncertainty.array)[:, :200]
    assert np.median(sky) == pytest.approx(truth, rel=0.02)
    assert info["noise_ratio"] == pytest.approx(1.0, abs=0.03)
    assert frame.uncertainty is None


def test_wrong_gain_card_is_measured_warned_and_corrected(raw):
    frame, truth = raw
    wrong = frame.copy()
    wrong.meta["GAIN"] = 8.0  # four times the truth: the model's noise is half the data's
    with pytest.warns(AstropyUserWarning, match="measured pixel noise .* 2.0. times"):
        out, info = add_uncertainty(mask_outside_trimsec(wrong), noise_model(wrong))
    assert info["noise_ratio"] == pytest.approx(2.0, rel=0.05)
    assert np.median(out.uncertainty.array[:, :200]) == pytest.approx(truth, rel=0.03)


def test_local_model_without_gain_follows_a_sky_gradient():
    rng = np.random.default_rng(3)
    level = np.add.outer(np.linspace(100, 1600, 256), np.zeros(256))  # electrons
    data = rng.poisson(level).astype(float)
    frame = CCDData(data, unit="adu")  # no gain anywhere: a local estimate
    model = noise_model(frame)
    assert model.kind == "local"
    out, info = add_uncertainty(frame, model)
    sigma = np.asarray(out.uncertainty.array)
    for row in (30, 128, 220):
        assert np.median(sigma[row]) == pytest.approx(np.sqrt(level[row, 0]), rel=0.07)
    assert info["noise_ratio"] == pytest.approx(1.0, abs=0.05)


def test_pixel_noise_ignores_smooth_structure():
    rng = np.random.default_rng(0)
    rings = 50 * np.sin(np.hypot(*np.mgrid[-128:128, -128:128]) / 9.0)  # dust-ring-like
    data = np.round(2000 + rings + rng.normal(0, 17.8, rings.shape))  # integers, like ADU
    assert pixel_noise(data, np.ones(data.shape, bool)) == pytest.approx(17.8, rel=0.03)


@pytest.mark.parametrize("kind", ["gaussian", "integer with outliers", "constant"])
def test_pixel_noise_is_astropys_biweight_scale(kind):
    """pixel_noise computes the biweight scale itself (for speed): the same number as
    astropy's biweight_scale of the neighbour differences, whatever the data."""
    from astropy.stats import biweight_scale
    rng = np.random.default_rng(3)
    data = rng.normal(100.0, 7.5, (120, 90))
    if kind == "integer with outliers":
        data = np.round(data)
        data[rng.random(data.shape) < 0.03] += rng.uniform(-500, 5000, 1)
    elif kind == "constant":
        data = np.full((120, 90), 42.0)
    good = rng.random(data.shape) > 0.1
    pairs = good[:, 1:] & good[:, :-1]
    expected = biweight_scale((data[:, 1:] - data[:, :-1])[pairs]) / np.sqrt(2)
    assert pixel_noise(data, good) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_lowell_raw_frames_stack_uncertainty_is_honest(shared_data):
    """Ten raw frames, default options plus static-sky subtraction, 301-pixel stacks: the
    scatter of random r = 3 px aperture sums over their reported uncertainty is within
    0.8-1.2 for the mean and the median (0.21 and 0.19 with the global-scatter noise)."""
    paths = sorted(glob.glob(str(shared_data("lowell42-5945/5945") / "*.fits")))
    eph = ss.Ephemeris.from_table(EPHEMERIS)
    for method in ("mean", "median"):
        result = ss.shift_and_stack(paths, eph, method=method, size=301, subtract_static=True)
        ratio = aperture_ratio(result)
        assert 0.8 <= ratio <= 1.2, (method, ratio)
    table = result.table
    assert set(table["noise_model"]) == {"detector"}
    assert np.all(table["gain"] == 4.95) and np.all(table["read_noise"] == 9.3)
    assert set(table["bias_source"]) == {"overscan"}
    # the header gain predicts less noise than there is (DESIGN.md): 1.05-1.2 measured/model
    assert np.all((table["noise_ratio"] > 1.05) & (table["noise_ratio"] < 1.2))
    assert np.all(table["noise_scale"] == table["noise_ratio"])
    assert result.stack.meta["SSNOISE"] == "detector"


def test_simulated_night_stack_uncertainty_is_honest():
    """Raw frames of a whole night (sky x4 at dusk, x3 at dawn, seeing 2.5-4 px,
    transparency 0.7-1): the same aperture test, mean and median, with static-sky
    subtraction and photometric scaling."""
    sim = simulated_night()
    sky = np.asarray(sim.truth["sky"])
    assert sky[0] > 3 * sky.min() and sky[-1] > 2.5 * sky.min()
    for method in ("mean", "median"):
        result = ss.shift_and_stack(sim.frames, sim.ephemeris, method=method,
                                    subtract_static=True, scale="stars")
        ratio = aperture_ratio(result)
        assert 0.8 <= ratio <= 1.2, (method, ratio)
    assert np.allclose(result.table["bias"], 500.0, atol=0.3)
    assert np.allclose(result.table["noise_ratio"], 1.0, atol=0.04)
