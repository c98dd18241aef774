"""Combining: values, propagated uncertainty, masks, clipping, coverage."""

import numpy as np
import pytest
from astropy.nddata import CCDData, StdDevUncertainty

from shiftstack_ccd import FrameError
from shiftstack_ccd.combine import combine_frames


def _frames(values, sigmas=None, masks=None, shape=(4, 5)):
    sigmas = sigmas or [1.0] * len(values)
    masks = masks or [None] * len(values)
    return [CCDData(np.full(shape, v, dtype=np.float32), unit="electron", mask=m,
                    uncertainty=StdDevUncertainty(np.full(shape, s, dtype=np.float32)))
            for v, s, m in zip(values, sigmas, masks)]


def test_mean_value_and_propagated_uncertainty():
    result = combine_frames(_frames([1.0, 2.0, 6.0], sigmas=[1.0, 2.0, 2.0]))
    image = result.image
    assert np.allclose(image.data, 3.0)
    assert np.allclose(image.uncertainty.array, np.sqrt(1 + 4 + 4) / 3)
    assert image.meta["NCOMBINE"] == 3 and image.meta["SSCOMB"] == "mean"
    assert np.all(result.coverage == 3)
    assert image.unit == "electron" and image.data.dtype == np.float32


def test_weighted_mean_with_masked_pixel_renormalises():
    mask = np.zeros((4, 5), bool)
    mask[1, 2] = True
    frames = _frames([1.0, 2.0, 10.0], masks=[None, None, mask])
    result = combine_frames(frames, weights=[1.0, 2.0, 3.0])
    assert np.isclose(result.image.data[1, 2], (1 * 1 + 2 * 2) / 3)
    assert np.isclose(result.image.data[0, 0], (1 + 4 + 30) / 6)
    assert np.isclose(result.image.uncertainty.array[1, 2], np.sqrt(1 + 4) / 3)
    assert result.coverage[1, 2] == 2 and result.coverage[0, 0] == 3


def test_sum_is_not_biased_low_by_masks():
    mask = np.zeros((4, 5), bool)
    mask[0, 0] = True
    result = combine_frames(_frames([2.0, 2.0, 2.0, 2.0], masks=[mask, None, None, None]),
                            method="sum")
    assert np.allclose(result.image.data, 8.0)
    assert np.isclose(result.image.uncertainty.array[0, 0], 4 * np.sqrt(3) / 3)
    assert np.isclose(result.image.uncertainty.array[1, 1], 2.0)


def test_median_resists_an_outlier_and_mean_clipping_rejects_it():
    rng = np.random.default_rng(0)
    shape = (20, 20)
    frames = [CCDData(rng.normal(100, 1, shape).astype(np.float32), unit="adu",
                      uncertainty=StdDevUncertainty(np.ones(shape, np.float32)))
              for _ in range(7)]
    frames[3].data[5, 5] = 5000.0  # a cosmic ray
    median = combine_frames(frames, method="median").image
    assert abs(median.data[5, 5] - 100) < 2
    assert np.allclose(median.uncertainty.array, np.sqrt(np.pi / 2 / 7), rtol=1e-5)
    plain = combine_frames(frames, method="mean").image
    assert plain.data[5, 5] > 700
    clipped = combine_frames(frames, method="mean", sigma_clip=True)
    assert abs(clipped.image.data[5, 5] - 100) < 2
    assert clipped.coverage[5, 5] == 6
    assert clipped.rejected_fraction[3] >= 1 / 400
    assert clipped.image.meta["SSCLIP"] is True


def test_pixels_no_frame_covers_are_masked_nan():
    mask = np.zeros((4, 5), bool)
    mask[2, 2] = True
    result = combine_frames(_frames([1.0, 3.0], masks=[mask, mask.copy()]))
    assert result.image.mask[2, 2] and np.isnan(result.image.data[2, 2])
    assert result.coverage[2, 2] == 0
    assert result.image.mask.sum() == 1


def test_unmasked_nan_is_not_used():
    frames = _frames([1.0, 3.0])
    frames[0].data[0, 0] = np.nan
    result = combine_frames(frames)
    assert result.image.data[0, 0] == 3.0 and result.coverage[0, 0] == 1


def test_errors():
    with pytest.raises(FrameError, match="shapes differ"):
        combine_frames(_frames([1.0]) + _frames([1.0], shape=(3, 3)))
    with pytest.raises(FrameError, match="no frames"):
        combine_frames([])
    with pytest.raises(ValueError, match="method must be"):
        combine_frames(_frames([1.0]), method="mode")
    with pytest.raises(ValueError, match="weights must be"):
        combine_frames(_frames([1.0, 2.0]), weights=[1.0, -1.0])
    bare = [CCDData(np.ones((2, 2)), unit="adu")]
    with pytest.raises(FrameError, match="no uncertainty"):
        combine_frames(bare)
