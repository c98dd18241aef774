"""Tests of shiftstack_ccd.calibration: ccdproc calibration as plain functions (the
pipeline-file tests run them on raw frames made from simulated ones)."""

import numpy as np
import pytest
from astropy.nddata import CCDData

from shiftstack_ccd.calibration import (calibrate_frame, combine_bias, combine_flat,
                                        subtract_overscan_and_trim)


def _raw(level, rng, shape=(20, 30), overscan=5.0):
    data = rng.normal(level, 1.0, shape)
    data[:, 25:] = rng.normal(overscan, 1.0, (shape[0], 5))  # overscan columns 26-30
    return CCDData(data, unit="adu", meta={"EXPTIME": 10.0})


def test_calibration_undoes_a_known_detector():
    """Overscan, bias and a flat with a 20 % gradient: the sky comes back flat and right."""
    rng = np.random.default_rng(3)
    gradient = np.linspace(0.9, 1.1, 25)[None, :] * np.ones((20, 1))
    bias_pattern = 50.0 + np.arange(20)[:, None] * 0.5 * np.ones((1, 25))
    raws = []
    for _ in range(3):
        frame = _raw(0.0, rng)
        frame.data[:, :25] += bias_pattern
        raws.append(frame)
    sections = {"overscan": "[26:30, 1:20]", "trim": "[1:25, 1:20]"}
    bias = combine_bias([subtract_overscan_and_trim(b, **sections) for b in raws])
    flats = []
    for level in (8000.0, 12000.0):  # two flats of different levels, each scaled to 1
        flat = _raw(0.0, rng)
        flat.data[:, :25] += bias_pattern + level * gradient
        flats.append(subtract_overscan_and_trim(flat, **sections))
    flat = combine_flat(flats, bias=bias)
    science = _raw(0.0, rng)
    science.data[:, :25] += bias_pattern + 1000.0 * gradient
    before = science.data.copy()
    out = calibrate_frame(science, **sections, gain=2.0, read_noise=3.0, bias=bias,
                          flat=flat)
    assert np.array_equal(science.data, before)  # the input is as it was
    assert out.shape == (20, 25)
    # flat_correct scales by the flat's mean: the sky is 1000 adu times a constant
    sky = out.data / np.mean(out.data)
    assert np.std(sky) < 0.01 and abs(np.mean(out.data) - 1000.0) < 15.0
    # the error is that of the counts after the overscan, sqrt(counts * gain + rn**2) / gain,
    # divided by the flat like the data (the master bias adds under 0.1 %)
    counts = before[:, :25] - np.median(before[:, 25:], axis=1, keepdims=True)
    flat_scale = (counts - bias.data) / out.data
    expected = np.sqrt(counts * 2.0 + 9.0) / 2.0 / flat_scale
    assert np.median(out.uncertainty.array / expected) == pytest.approx(1.0, abs=0.005)


def test_nothing_to_do_is_still_a_new_frame():
    """The step contract: a new CCDData even when no calibration is asked for."""
    frame = CCDData(np.ones((4, 4)), unit="adu")
    for out in (calibrate_frame(frame), subtract_overscan_and_trim(frame)):
        assert out is not frame and not np.shares_memory(out.data, frame.data)
        assert np.array_equal(out.data, frame.data)
