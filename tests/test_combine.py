"""Combining: values, propagated uncertainty, weights, clipping, blocks, running stack."""

import sys
import tracemalloc
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.modeling.functional_models import Moffat2D
from astropy.nddata import CCDData, StdDevUncertainty, VarianceUncertainty
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS
from photutils.aperture import CircularAperture, aperture_photometry

from shiftstack_ccd import FrameError
from shiftstack_ccd._median import median_variance_factor as _median_variance_factor
from shiftstack_ccd.combine import (RunningStack, combine_frames, exposure_header_cards,
                                    exposure_weighted_mid_time)


def _frames(values, sigmas=None, masks=None, shape=(4, 5)):
    sigmas = sigmas or [1.0] * len(values)
    masks = masks or [None] * len(values)
    return [CCDData(np.full(shape, v, dtype=np.float32), unit="electron", mask=m,
                    uncertainty=StdDevUncertainty(np.full(shape, s, dtype=np.float32)))
            for v, s, m in zip(values, sigmas, masks)]


def _noisy_frames(n, shape, sigmas, rng, masks=None, exptimes=None):
    frames = []
    for k in range(n):
        data = (100 + sigmas[k] * rng.standard_normal(shape)).astype(np.float32)
        meta = {}
        if exptimes is not None:
            meta = {"EXPTIME": exptimes[k], "DATE-OBS": f"2024-03-01T03:{2 * k:02d}:00"}
        frames.append(CCDData(data, unit="electron", meta=meta,
                              mask=None if masks is None else masks[k],
                              uncertainty=StdDevUncertainty(
                                  np.full(shape, sigmas[k], dtype=np.float32))))
    return frames


def test_mean_value_and_propagated_uncertainty():
    result = combine_frames(_frames([1.0, 2.0, 6.0], sigmas=[1.0, 2.0, 2.0]))
    image = result.image
    assert np.allclose(image.data, 3.0)
    assert np.allclose(image.uncertainty.array, np.sqrt(1 + 4 + 4) / 3)
    assert image.meta["NCOMBINE"] == 3 and image.meta["SSCOMB"] == "mean"
    assert image.meta["SSWEIGHT"] == "equal"
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


def test_inverse_variance_weights_where_a_frame_is_masked_unlike_ccdproc():
    """A flat 1000 e- sky seen by four frames of different depth, one with a bad column.

    ccdproc 2.5.1's ``average_combine`` divides the weighted sum over the unmasked frames
    by the weights summed over all frames (``_weighted_sum`` then ``sum_func(weights)``),
    so on the bad column the sky comes out low by the masked frame's share of the weight.
    """
    from ccdproc import Combiner
    shape = (6, 8)
    sigmas = [10.0, 20.0, 30.0, 40.0]
    bad_column = np.zeros(shape, bool)
    bad_column[:, 3] = True
    frames = _frames([1000.0] * 4, sigmas=sigmas, masks=[bad_column, None, None, None],
                     shape=shape)
    ivar = np.array([1 / s ** 2 for s in sigmas])
    ours = combine_frames(frames, weights="inverse-variance")
    assert np.allclose(ours.image.data, 1000.0)  # the column included
    assert ours.image.meta["SSWEIGHT"] == "inverse-variance"
    # propagated: 1 / sqrt(sum of 1/var) over the frames that contribute
    assert np.isclose(ours.image.uncertainty.array[0, 0], 1 / np.sqrt(ivar.sum()))
    assert np.isclose(ours.image.uncertainty.array[0, 3], 1 / np.sqrt(ivar[1:].sum()))

    combiner = Combiner(frames)
    combiner.weights = np.broadcast_to(ivar[:, None, None], (4,) + shape).copy()
    theirs = combiner.average_combine()
    assert np.allclose(theirs.data[:, [0, 1, 2, 4, 5, 6, 7]], 1000.0)
    # biased: the first frame holds 1/1.42 of the weight, so the sky there is 30 % low
    expected_bias = ivar[1:].sum() / ivar.sum()
    assert np.allclose(theirs.data[:, 3], 1000.0 * expected_bias)
    assert theirs.data[0, 3] < 710


def test_inverse_variance_mean_is_less_noisy_and_its_uncertainty_is_right():
    rng = np.random.default_rng(11)
    sigmas = [5.0, 10.0, 20.0]
    frames = _noisy_frames(3, (200, 200), sigmas, rng)
    equal = combine_frames(frames).image
    ivar = combine_frames(frames, weights="inverse-variance").image
    # measured scatter = reported uncertainty (2 %: 40000 independent pixels)
    for image in (equal, ivar):
        assert abs(np.std(image.data) / np.median(image.uncertainty.array) - 1) < 0.02
    expected_ivar = 1 / np.sqrt(sum(1 / s ** 2 for s in sigmas))
    assert np.isclose(np.median(ivar.uncertainty.array), expected_ivar, rtol=1e-5)
    assert np.std(ivar.data) < 0.6 * np.std(equal.data)  # 4.36 against 7.64


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
    # the variance of the median of 7 Gaussian values is 1.4731 times their mean's
    assert np.allclose(median.uncertainty.array, np.sqrt(1.4731 / 7), rtol=1e-4)
    plain = combine_frames(frames, method="mean").image
    assert plain.data[5, 5] > 700
    clipped = combine_frames(frames, method="mean", sigma_clip=True)
    assert abs(clipped.image.data[5, 5] - 100) < 2
    assert clipped.coverage[5, 5] == 6
    assert clipped.rejected_fraction[3] >= 1 / 400
    assert clipped.image.meta["SSCLIP"] is True


@pytest.mark.parametrize("n", [3, 5, 9, 10])
def test_median_uncertainty_matches_its_scatter_for_few_frames(n):
    """Uncorrelated pixels: the finite-n factor, not pi/2, is the median's variance."""
    rng = np.random.default_rng(n)
    frames = _noisy_frames(n, (150, 200), [3.0] * n, rng)
    median = combine_frames(frames, method="median").image
    ratio = np.std(median.data) / np.median(median.uncertainty.array)
    assert abs(ratio - 1) < 0.02, ratio  # 30000 pixels: 0.4 % statistical
    # pi/2, the large-n value, would have been off by more than that
    large_n_ratio = ratio * np.sqrt(_median_variance_factor(n) / (np.pi / 2))
    assert abs(large_n_ratio - 1) > 0.02, large_n_ratio


def _moffat(shape, x0, y0, fwhm, flux, beta=3.0, oversample=5):
    """A Moffat PSF integrated over pixels (by oversampling), ``flux`` in total."""
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    ny, nx = shape
    yy, xx = np.mgrid[0:ny * oversample, 0:nx * oversample]
    yy = (yy + 0.5) / oversample - 0.5
    xx = (xx + 0.5) / oversample - 0.5
    image = Moffat2D(1, x0, y0, alpha, beta)(xx, yy)
    image = image.reshape(ny, oversample, nx, oversample).mean(axis=(1, 3))
    return flux * image / image.sum()


def test_clipping_keeps_a_bright_core_and_rejects_cosmic_rays():
    """Five frames of a bright target, FWHM 2.76 to 3.3 pixels, misregistered by 0.05 px.

    Peak 23000 e- over a 200 e- sky (S/N 150 a pixel): the frames' cores differ by tens
    of sigma. One frame has two cosmic rays of hundreds of sigma, one on the sky and one
    on the target's wing.
    """
    from ccdproc import Combiner
    rng = np.random.default_rng(1)
    shape, sky, read_noise = (48, 48), 200.0, 5.0
    fwhms = 3.0 * np.array([1.0, 0.92, 1.1, 0.97, 1.05])
    x0, y0 = 24.2, 23.7
    clean, with_cr = [], []
    for k, fwhm in enumerate(fwhms):
        dx, dy = rng.normal(0, 0.05, 2)
        model = sky + _moffat(shape, x0 + dx, y0 + dy, fwhm, 3e5)
        data = rng.poisson(model) + rng.normal(0, read_noise, shape)
        sigma = StdDevUncertainty(np.sqrt(model + read_noise ** 2).astype(np.float32))
        clean.append(CCDData(data.astype(np.float32), unit="electron", uncertainty=sigma))
        hit = data.copy()
        if k == 2:
            hit[10, 30] += 5000.0    # ~350 sigma on the sky
            hit[27, 24] += 20000.0   # on the wing, 3.3 pixels from the centre
        with_cr.append(CCDData(hit.astype(np.float32), unit="electron", uncertainty=sigma))
    reference = combine_frames(clean).image  # no cosmic ray, no clipping
    result = combine_frames(with_cr, sigma_clip=True)
    core = np.hypot(*(np.mgrid[0:48, 0:48] - np.array([y0, x0])[:, None, None])) < 3
    # the core is kept: every frame contributes to every pixel within 3 pixels
    assert np.all(result.coverage[core] == 5)
    # the cosmic rays are rejected, and only from the frame they hit
    assert result.coverage[10, 30] == 4 and result.coverage[27, 24] == 4
    for y, x in ((10, 30), (27, 24)):
        error = reference.uncertainty.array[y, x]
        assert abs(result.image.data[y, x] - reference.data[y, x]) < 3 * error
    assert result.rejected_fraction[2] > 0
    # the flux in a 3-pixel aperture is the cosmic-ray-free stack's to 0.02 %
    aperture = CircularAperture((x0, y0), 3.0)

    def flux(image):
        return aperture_photometry(image - sky, aperture)["aperture_sum"][0]
    assert abs(flux(result.image.data) / flux(reference.data) - 1) < 2e-4
    # what clipping on the scatter of five values alone does (ccdproc's sigma_clipping
    # with median and mad_std): it eats part of the core
    combiner = Combiner(with_cr)
    combiner.sigma_clipping(low_thresh=3, high_thresh=3, func="median", dev_func="mad_std")
    assert (combiner.data_arr.mask[:, core]).sum() >= 5


@pytest.mark.parametrize("method", ["mean", "median"])
def test_aperture_uncertainty_matches_empty_sky_scatter(method):
    """Nine rotated frames (warp path, bicubic) of empty sky, stacked on the target.

    Aperture sums of radius 1.5 and 4 pixels on a grid of places where all nine frames
    overlap, the known sky (200 e-) subtracted: their scatter agrees with the reported
    ``sqrt(sum of the stack variance over the aperture)`` within 15 %, though a single
    pixel's scatter is well below its reported uncertainty (resampled noise is correlated).
    """
    import shiftstack_ccd as ss
    n, size = 9, 320
    sim = ss.simulate_observation(n_frames=n, shape=(size, size), n_stars=0,
                                  cosmic_rays=False, seed=21, target_snr=3.0)
    result = ss.shift_and_stack(sim.frames, sim.ephemeris, method=method, sky_stack=False)
    assert set(result.table["resample"]) == {"warp"}
    data = np.nan_to_num(result.stack.data - 200.0)
    var = np.nan_to_num(result.stack.uncertainty.array ** 2)
    full = result.coverage == n
    cx, cy = result.target_pixel
    ratios = {}
    for r in (0.5, 1.5, 4.0):
        step = int(2 * r + 3)
        ys, xs = np.mgrid[step:size - step:step, step:size - step:step]
        places = np.c_[xs.ravel() + 0.3, ys.ravel() + 0.2]
        keep = [full[int(y - r - 1):int(y + r + 2), int(x - r - 1):int(x + r + 2)].all()
                and np.hypot(x - cx, y - cy) > 6 * r + 10 for x, y in places]
        aperture = CircularAperture(places[np.array(keep)], r)
        assert len(aperture) > 250
        sums = aperture_photometry(data, aperture, method="center")["aperture_sum"]
        reported = aperture_photometry(var, aperture, method="center")["aperture_sum"]
        ratios[r] = np.std(sums) / np.sqrt(np.mean(reported))
    assert abs(ratios[1.5] - 1) < 0.15, ratios
    assert abs(ratios[4.0] - 1) < 0.15, ratios
    assert ratios[0.5] < 0.95, ratios  # one pixel: below, the noise is correlated (0.90)


def test_median_correlation_factor_follows_the_resampling():
    """kappa from the frames' resampling cards: 1 without interpolation, < 1 with it."""
    from shiftstack_ccd._median import median_correlation_factor as _median_correlation_factor
    assert abs(_median_correlation_factor("bicubic") - 0.916) < 1e-3
    assert abs(_median_correlation_factor("bilinear") - 0.805) < 1e-3
    cards = {"none": {}, "whole": {"SSRESAMP": "shift", "SSINTERP": "bicubic",
                                   "SSSHIFTX": 3.0, "SSSHIFTY": -2.0},
             "sub": {"SSRESAMP": "shift", "SSINTERP": "bicubic", "SSSHIFTX": 3.25,
                     "SSSHIFTY": -2.0},
             "warp": {"SSRESAMP": "warp", "SSINTERP": "bilinear"}}
    expected = {"none": 1.0, "whole": 1.0, "sub": 0.9157, "warp": 0.8055}
    for name, meta in cards.items():
        frames = _frames([1.0, 2.0, 3.0, 4.0, 5.0])
        for frame in frames:
            frame.meta.update(meta)
        std = combine_frames(frames, method="median").image.uncertainty.array[0, 0]
        assert np.isclose(std ** 2, expected[name] * 1.4342 / 5, rtol=1e-3), name
    forced = combine_frames(frames, method="median", median_correlation=1.0)
    assert np.isclose(forced.image.uncertainty.array[0, 0] ** 2, 1.4342 / 5, rtol=1e-4)


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


def _rich_frames(rng, n=7, shape=(60, 40)):
    """Noisy frames with masked edges, a NaN, a cosmic ray and a variance uncertainty."""
    frames = []
    for k in range(n):
        data = (50 + 4 * rng.standard_normal(shape)).astype(np.float32)
        data[20:23, 10:13] += 400  # a source, in every frame
        mask = np.zeros(shape, bool)
        mask[:, :k] = True
        if k == 2:
            data[30, 30] = 3000  # cosmic ray
            data[5, 35] = np.nan
        unc = VarianceUncertainty(np.full(shape, 16 + k, dtype=np.float32))
        frames.append(CCDData(data, unit="electron", mask=mask, uncertainty=unc,
                              meta={"EXPTIME": 30.0 + k,
                                    "DATE-OBS": f"2024-03-01T03:0{k}:00"}))
    return frames


@pytest.mark.parametrize("method,clip", [("median", True), ("mean", True), ("sum", False)])
def test_blocks_and_files_give_the_same_stack(tmp_path, method, clip):
    rng = np.random.default_rng(5)
    frames = _rich_frames(rng)
    whole = combine_frames(frames, method=method, sigma_clip=clip, mem_limit=1e9)
    assert whole.rows_per_block == 60
    small = combine_frames(frames, method=method, sigma_clip=clip, mem_limit=30e3)
    assert small.rows_per_block < 10  # many blocks, each with its halo rows
    paths = []
    for k, frame in enumerate(frames):
        paths.append(tmp_path / f"f{k}.fits")
        frame.write(paths[-1], hdu_mask="MASK", hdu_uncertainty="UNCERT")
    from_files = combine_frames([str(p) for p in paths], method=method, sigma_clip=clip,
                                mem_limit=30e3)
    for other in (small, from_files):
        assert np.array_equal(other.coverage, whole.coverage)
        assert np.array_equal(other.image.data, whole.image.data, equal_nan=True)
        assert np.array_equal(other.image.uncertainty.array, whole.image.uncertainty.array,
                              equal_nan=True)
        assert np.array_equal(other.rejected_fraction, whole.rejected_fraction)
    assert from_files.image.unit == "electron"
    if method == "sum":  # a running stack reads files too
        running = RunningStack(method="sum")
        for path in paths:
            running.add(str(path))
        assert np.allclose(running.image.data, whole.image.data, rtol=1e-6, equal_nan=True)
    if clip:
        assert whole.coverage[30, 30] == 6  # the cosmic ray went, the 6 others stay
        assert whole.rejected_fraction[2] > 0


def test_memory_stays_under_the_limit():
    """Traced peak of a median with clipping: the block budget plus the output images."""
    rng = np.random.default_rng(2)
    shape = (300, 200)
    frames = _noisy_frames(30, shape, [2.0] * 30, rng)
    limit = 2e6
    tracemalloc.start()
    try:
        result = combine_frames(frames, method="median", sigma_clip=True, mem_limit=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    outputs = shape[0] * shape[1] * (4 + 4 + 2 + 1) * 2  # data, std, coverage, mask (+copy)
    cube = 30 * shape[0] * shape[1] * 9  # what the frames' data+var+mask cube would take
    assert result.rows_per_block < 20
    assert peak < limit + outputs, (peak, limit + outputs)
    assert peak < cube / 2


def test_running_stack_equals_combine_after_each_frame():
    rng = np.random.default_rng(8)
    frames = _rich_frames(rng, n=5)
    for weights, frame_weights in ((None, None), ("inverse-variance", [1.0, 2.0, 1.5, 1, 3])):
        running = RunningStack(weights=weights)
        for k, frame in enumerate(frames):
            w = 1.0 if frame_weights is None else frame_weights[k]
            image = running.add(frame, weight=w).image
            expected = combine_frames(frames[:k + 1], weights=weights,
                                      frame_weights=None if frame_weights is None
                                      else frame_weights[:k + 1]).image
            assert np.allclose(image.data, expected.data, rtol=1e-6, equal_nan=True)
            assert np.allclose(image.uncertainty.array, expected.uncertainty.array,
                               rtol=1e-6, equal_nan=True)
            assert np.array_equal(image.mask, expected.mask)
            assert np.array_equal(running.coverage, combine_frames(frames[:k + 1]).coverage)
            assert image.meta["NCOMBINE"] == k + 1
            assert image.meta["EXPTOTAL"] == pytest.approx(sum(30.0 + i for i in range(k + 1)))
    total = RunningStack(method="sum")
    for frame in frames:
        total.add(frame)
    assert np.allclose(total.image.data, combine_frames(frames, method="sum").image.data,
                       rtol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match="median is not incremental"):
        RunningStack(method="median")


def test_exposure_weights_total_and_mid_time():
    rng = np.random.default_rng(3)
    exptimes = [60.0, 120.0, 300.0]
    frames = _noisy_frames(3, (10, 10), [1.0, 1.0, 1.0], rng, exptimes=exptimes)
    for frame, value in zip(frames, (10.0, 20.0, 40.0)):
        frame.data[...] = value
    result = combine_frames(frames, weights="exptime")
    assert np.allclose(result.image.data, (60 * 10 + 120 * 20 + 300 * 40) / 480)
    assert result.image.meta["SSWEIGHT"] == "exptime"
    h = result.image.meta
    assert h["EXPTOTAL"] == 480.0
    # mid-exposures 03:00:30, 03:03:00, 03:06:30; weighted by 60, 120, 300 s
    starts = Time(["2024-03-01T03:00:00", "2024-03-01T03:02:00", "2024-03-01T03:04:00"])
    mids = starts + np.array(exptimes) / 2 * u.s
    expected = mids[0] + np.sum(np.array(exptimes) * (mids - mids[0]).to_value(u.s)) / 480 * u.s
    assert abs((Time(h["MJD-AVG"], format="mjd") - expected).to_value(u.s)) < 1e-3
    assert Time(h["DATE-AVG"]).isot == expected.isot == "2024-03-01T03:04:52.500"
    assert abs((exposure_weighted_mid_time(frames) - expected).to_value(u.s)) < 1e-6
    # with extra weights
    t = exposure_weighted_mid_time(frames, weights=[0, 0, 1])
    assert abs((t - mids[2]).to_value(u.s)) < 1e-6
    both = combine_frames(frames, weights="inverse-variance", frame_weights="exptime")
    assert both.image.meta["SSWEIGHT"] == "inverse-variance*exptime"
    keys = [c[0] for c in exposure_header_cards(frames)]
    assert keys == ["EXPTOTAL", "MJD-AVG", "DATE-AVG", "TIMESYS"]


def test_errors():
    with pytest.raises(FrameError, match="shapes differ"):
        combine_frames(_frames([1.0]) + _frames([1.0], shape=(3, 3)))
    with pytest.raises(FrameError, match="no frames"):
        combine_frames([])
    with pytest.raises(ValueError, match="method must be"):
        combine_frames(_frames([1.0]), method="mode")
    with pytest.raises(ValueError, match="weights must be"):
        combine_frames(_frames([1.0, 2.0]), weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="weights must be"):
        combine_frames(_frames([1.0, 2.0]), weights="snr")
    bare = [CCDData(np.ones((2, 2)), unit="adu")]
    with pytest.raises(FrameError, match="no uncertainty"):
        combine_frames(bare)
    other_unit = _frames([1.0, 2.0])
    other_unit[1].unit = "adu"
    with pytest.raises(FrameError, match="unit"):
        combine_frames(other_unit)
    no_exptime = _frames([1.0, 2.0])
    no_exptime[1].meta["SSFILE"] = "night1/f002.fits"
    no_exptime[0].meta["EXPTIME"] = 10.0
    with pytest.raises(FrameError, match="night1/f002.fits: has no exposure time"):
        combine_frames(no_exptime, weights="exptime")
    with pytest.warns(AstropyUserWarning, match="median ignores weights"):
        combine_frames(_frames([1.0, 2.0, 3.0]), method="median", weights=[1, 2, 3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        combine_frames(_frames([1.0, 2.0, 3.0]), method="median")


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="counts the open files in /proc/self/fd (Linux)")
def test_many_files_combine_within_a_small_open_file_limit(tmp_path):
    """A combine of files holds none open between blocks: 80 frames combine in blocks with
    the process allowed only 30 more open files than it has (each frame's file stayed open
    before, and hundreds of spilled frames came near the usual limit of 1024)."""
    import os
    import resource
    rng = np.random.default_rng(8)
    paths = []
    for k in range(80):
        frame = CCDData(rng.normal(100, 4, (40, 30)).astype(np.float32), unit="electron",
                        uncertainty=VarianceUncertainty(np.full((40, 30), 16, np.float32)))
        paths.append(str(tmp_path / f"f{k}.fits"))
        frame.write(paths[-1], hdu_uncertainty="UNCERT")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 30, hard))
    try:
        result = combine_frames(paths, method="median", mem_limit=200e3)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert result.rows_per_block < 40  # read in several blocks
    assert np.all(result.coverage == 80)
    # the median of 80 frames of sigma 4 about 100, to 5 sigma of its noise
    assert abs(float(np.mean(result.image.data)) - 100) < 5 * 4 * 1.25 / np.sqrt(80 * 1200)


def test_file_without_uncertainty_is_refused_by_name(tmp_path):
    frame = CCDData(np.ones((5, 5), np.float32), unit="adu", wcs=WCS(naxis=2))
    path = tmp_path / "bare.fits"
    frame.write(path)
    with pytest.raises(FrameError, match="bare.fits: has no UNCERT extension"):
        combine_frames([str(path)])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 16, 24])
def test_median_of_few_frames_by_sorting_network(n):
    """With every value valid and few frames, the median comes from a sorting network of
    minima and maxima: the planes come out exactly np.sort's, and the median np.median's,
    ties and all; a NaN (an invalid value) takes the sort."""
    from shiftstack_ccd._combine_block import median_of_valid, sorted_planes
    rng = np.random.default_rng(n)
    cube = np.round(rng.normal(0, 3, (n, 40, 50))).astype(np.float32)  # many ties
    ordered = np.sort(cube, axis=0)
    assert all(np.array_equal(a, b) for a, b in zip(sorted_planes(cube), ordered))
    count = np.full((40, 50), n)
    median = median_of_valid(cube, count)
    assert median.dtype == np.float32
    np.testing.assert_array_equal(median, np.median(cube, axis=0))
    cube[0, 3, 4] = np.nan
    count[3, 4] -= 1
    median = median_of_valid(cube, count)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # n = 1: an all-NaN pixel
        expected = np.nanmedian(cube, axis=0)
    np.testing.assert_array_equal(median, expected)
