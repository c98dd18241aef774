"""End to end on simulated data: S/N gain, position and flux against injected truth."""

import re
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning

import shiftstack_ccd as ss
from shiftstack_ccd.photometry import aperture_snr, centroid_target


def _stack_noiseless(frames, ephemeris, **kwargs):
    """`shift_and_stack` of noiseless frames (exact fluxes and positions). Their uncertainty
    is the noise they would have; the stack says, once, that their pixels show none of it."""
    n = len(frames)
    with pytest.warns(AstropyUserWarning, match=rf"^{n} of {n} frames .*: the measured pixel "
                                                "noise of the sky is 0.00 times"):
        return ss.shift_and_stack(frames, ephemeris, **kwargs)


def _gain(method, sigma_clip, seed=0):
    """S/N of the stack over the S/N of one frame, both with empirical noise.

    Signal: measured on the noiseless twin of the simulation (same geometry, same stacking),
    so that the ratio is not at the mercy of one noise draw at S/N 3. Noise: measured on the
    noisy frames and the noisy stack from the empty-sky autocovariance (``aperture_snr``),
    which includes the correlation that resampling introduces; in the stack, only where all
    nine frames overlap, as at the target.
    """
    kwargs = dict(n_frames=9, target_snr=3.0, seed=seed)  # rotations up to 1 deg, dithers
    noisy = ss.simulate_observation(**kwargs)
    clean = ss.simulate_observation(noise=False, cosmic_rays=False, **kwargs)
    radius = float(noisy.psf_fwhm)
    stack = ss.shift_and_stack(noisy.frames, noisy.ephemeris, method=method,
                               sigma_clip=sigma_clip, sky_stack=False)
    model = _stack_noiseless(clean.frames, noisy.ephemeris, method=method, sky_stack=False)
    centre = stack.target_pixel
    assert stack.coverage[int(centre[1]), int(centre[0])] == 9
    measured = aperture_snr(stack.stack, centre, radius, region=stack.coverage == 9)
    signal = aperture_snr(model.stack, centre, radius)["flux"]
    # the noisy stack's own flux agrees with the noiseless one within its noise
    assert abs(measured["flux"] - signal) < 3 * measured["noise"]
    single = [(aperture_snr(c, (row["x"], row["y"]), radius)["flux"],
               aperture_snr(f, (row["x"], row["y"]), radius)["noise"])
              for f, c, row in zip(noisy.frames, clean.frames, noisy.truth)]
    snr_single = np.mean([s for s, _ in single]) / np.mean([n for _, n in single])
    # the simulation's promise is kept: S/N 3 in one frame, as measured here
    assert abs(snr_single / 3.0 - 1) < 0.1, snr_single
    return (signal / measured["noise"]) / snr_single


def test_mean_stack_reaches_sqrt_n_gain():
    """Sigma-clipped mean (the cosmic rays of the simulation are not left in)."""
    gain = _gain("mean", sigma_clip=True)
    assert 0.9 * np.sqrt(9) <= gain <= 1.05 * np.sqrt(9), gain


def test_median_stack_gain():
    gain = _gain("median", sigma_clip=False)
    assert 0.75 * np.sqrt(9) <= gain <= np.sqrt(9), gain


def test_median_with_weights_warns_once_a_call():
    """The median ignores weights: said once for the call, not once per stack (target, sky)."""
    sim = ss.simulate_observation(n_frames=3, shape=(64, 64), n_stars=5, seed=14)
    with pytest.warns(AstropyUserWarning, match="median ignores weights") as record:
        result = ss.shift_and_stack(sim.frames, sim.ephemeris, method="median",
                                    weights="exptime", size=31)
    assert result.sky_stack is not None
    assert sum("median ignores weights" in str(w.message) for w in record) == 1


def test_noise_off_the_model_is_said_once_for_the_stack():
    """A gain card four times too high: the detector model predicts about half the measured
    sky noise in every frame; one warning names the frames, the table holds each ratio."""
    sim = ss.simulate_observation(n_frames=4, shape=(96, 96), n_stars=5, seed=15, gain=2.0,
                                  with_uncertainty=False)
    frames = [f.copy() for f in sim.frames]
    for frame in frames:
        frame.meta["GAIN"] = 8.0
    with pytest.warns(AstropyUserWarning) as record:
        result = ss.shift_and_stack(frames, sim.ephemeris, size=41)
    said = [str(w.message) for w in record if "measured pixel noise" in str(w.message)]
    assert len(said) == 1, said
    assert re.match(r"4 of 4 frames \(sim_000.fits, sim_001.fits, sim_002.fits and 1 more\): "
                    r"the measured pixel noise of the sky is 2\.\d\d to 2\.\d\d times", said[0])
    assert "gain 8 e-/unit (GAIN)" in said[0] and "check the gain card" in said[0]
    # sky 100 adu, read noise 5 e-: the true over the model's variance per pixel
    sky = sim.sky / 2.0
    expected = np.sqrt((sky / 2.0 + (5 / 2.0) ** 2) / (sky / 8.0 + (5 / 8.0) ** 2))
    assert np.allclose(result.table["noise_ratio"], expected, rtol=0.05)
    assert record[0].filename == __file__  # it points at the call


def test_bright_target_position_and_flux():
    sim = ss.simulate_observation(n_frames=9, target_snr=80.0, seed=5)
    result = ss.shift_and_stack(sim.frames, sim.ephemeris, method="mean")
    x, y = centroid_target(result.stack, result.target_pixel)
    assert abs(x - result.target_pixel[0]) < 0.1 and abs(y - result.target_pixel[1]) < 0.1
    # the stack's WCS puts the target's reference-time position on that pixel
    wx, wy = result.stack.wcs.world_to_pixel(sim.ephemeris.at(result.target_frame.reference_time))
    assert abs(wx - result.target_pixel[0]) < 1e-6 and abs(wy - result.target_pixel[1]) < 1e-6
    flux = aperture_snr(result.stack, result.target_pixel, radius=4 * sim.psf_fwhm)["flux"]
    assert abs(flux / sim.truth["flux"][0] - 1) < 0.03
    # the per-frame table: target pixel in each frame equals the simulation's truth
    assert np.allclose(result.table["x_frame"], sim.truth["x"], atol=0.01)
    assert np.allclose(result.table["y_frame"], sim.truth["y"], atol=0.01)
    assert set(result.table["resample"]) == {"warp"}  # rotated frames


def test_fast_path_on_unrotated_frames_matches_reproject():
    sim = ss.simulate_observation(n_frames=5, target_snr=50.0, max_rotation=0 * u.deg, seed=2,
                                  cosmic_rays=False)
    fast = ss.shift_and_stack(sim.frames, sim.ephemeris, orientation="first", size=101,
                              sky_stack=False)
    slow = ss.shift_and_stack(sim.frames, sim.ephemeris, orientation="first", size=101,
                              sky_stack=False, resample="warp")
    assert set(fast.table["resample"]) == {"shift"}
    assert np.array_equal(fast.stack.mask, slow.stack.mask)
    good = ~fast.stack.mask
    scale = np.nanmax(np.abs(slow.stack.data))
    assert np.max(np.abs(fast.stack.data[good] - slow.stack.data[good])) < 1e-4 * scale
    x, y = centroid_target(fast.stack, fast.target_pixel)
    assert abs(x - 50) < 0.1 and abs(y - 50) < 0.1


def test_provenance_header_and_table_and_roundtrip(tmp_path):
    sim = ss.simulate_observation(n_frames=4, seed=3, shape=(128, 128))
    result = ss.shift_and_stack(sim.frames, sim.ephemeris, method="median", size=63)
    h = result.stack.meta
    assert h["NCOMBINE"] == 4 and h["SSCOMB"] == "median" and h["SSKIND"] == "target"
    times = Time(sim.truth["time"])
    assert abs(h["SSREFMJD"] - times.mjd.mean()) * 86400 < 1e-3
    assert h["EPHKIND"] == "linear"
    for i in range(4):
        assert h[f"SSF{i + 1:03d}"] == f"sim_{i:03d}.fits"
        assert abs(h[f"SST{i + 1:03d}"] - times[i].mjd) * 86400 < 1e-3
        assert h[f"SSX{i + 1:03d}"] == pytest.approx(result.table["dx"][i], abs=1e-4)
    # target offsets are the linear motion projected on the plane
    dt = (times - times.mean()).to_value(u.hour)
    expected_dx = -sim.ra_rate.to_value(u.arcsec / u.hour) * dt / 0.5  # east is -x, 0.5"/px
    assert np.allclose(result.table["dx"], expected_dx, atol=1e-3)
    assert result.stack.shape == (63, 63) and result.target_pixel == (31.0, 31.0)
    path = tmp_path / "stack.fits"
    result.write(path)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "MASK", "UNCERT", "COVERAGE", "SKY",
                                          "SKYUNC", "FRAMES"]
        assert hdul[0].header["BUNIT"] == "adu"
    back = ss.StackResult.read(path)
    assert np.array_equal(back.stack.mask, result.stack.mask)
    assert np.allclose(back.stack.data[~back.stack.mask], result.stack.data[~result.stack.mask])
    assert np.allclose(back.table["mjd_mid"], result.table["mjd_mid"])
    assert back.target_pixel == result.target_pixel == (31.0, 31.0)  # from the WCS
    with pytest.raises(ss.OutputExistsError, match="exists"):
        result.write(path)
    result.write(path, overwrite=True)


def test_target_off_frame_is_refused_by_name():
    sim = ss.simulate_observation(n_frames=3, seed=4, shape=(64, 64))
    far = ss.Ephemeris.linear(sim.ephemeris.at(sim.epoch).spherical_offsets_by(
        0 * u.deg, 0.5 * u.deg), sim.epoch, 0 * u.arcsec / u.hour, 0 * u.arcsec / u.hour)
    with pytest.raises(ss.FrameError, match="sim_000.fits: the target is off the frame"):
        ss.shift_and_stack(sim.frames, far)


def test_frames_without_uncertainty_get_sky_noise():
    sim = ss.simulate_observation(n_frames=3, seed=6, with_uncertainty=False)
    assert all(f.uncertainty is None for f in sim.frames)
    result = ss.shift_and_stack(sim.frames, sim.ephemeris, size=41)
    # background-limited: sky 200 e- + read noise 5 e- per frame, 3 frames averaged
    expected = np.sqrt(200 + 25) / np.sqrt(3)
    assert abs(np.nanmedian(result.stack.uncertainty.array) / expected - 1) < 0.1
    assert all(f.uncertainty is None for f in sim.frames)  # inputs untouched


def test_frame_without_wcs_is_refused():
    sim = ss.simulate_observation(n_frames=2, seed=7, shape=(64, 64))
    frames = [f.copy() for f in sim.frames]
    frames[1].wcs = None
    with pytest.raises(ss.FrameError, match="sim_001.fits: has no celestial WCS"):
        ss.shift_and_stack(frames, sim.ephemeris)


def test_epoch_outside_table_ephemeris_is_refused():
    sim = ss.simulate_observation(n_frames=3, seed=8, shape=(64, 64))
    t = Time(sim.truth["time"])
    table = sim.ephemeris.to_table(times=t[:2])
    with pytest.raises(ss.EphemerisError):
        ss.shift_and_stack(sim.frames, ss.Ephemeris.from_table(table))


def test_per_frame_steps_run_before_resampling():
    """Cosmic rays cleaned per frame: an unclipped mean stack loses their residue."""
    sim = ss.simulate_observation(n_frames=5, seed=9, shape=(128, 128), n_stars=20)
    plain = ss.shift_and_stack(sim.frames, sim.ephemeris, size=101, sky_stack=False)
    cleaned = ss.shift_and_stack(sim.frames, sim.ephemeris, size=101, sky_stack=False,
                                 per_frame_steps=[(ss.clean_cosmic_rays, {})])
    assert np.all(cleaned.table["cr_flagged"] > 0)
    assert "cr_flagged" not in plain.table.colnames
    # residue of a cosmic ray: a pixel far above the noiseless, cosmic-ray-free model stack
    twin = ss.simulate_observation(n_frames=5, seed=9, shape=(128, 128), n_stars=20,
                                   noise=False, cosmic_rays=False)
    model = _stack_noiseless(twin.frames, sim.ephemeris, size=101, sky_stack=False).stack

    def outliers(result):
        chi = (result.stack.data - model.data) / result.stack.uncertainty.array
        return int(np.sum(np.nan_to_num(chi) > 5))
    assert outliers(plain) > 10
    assert outliers(cleaned) <= outliers(plain) / 10
    assert all(f.mask is None for f in sim.frames)  # the inputs were not touched


def test_refinement_recovers_per_frame_ephemeris_errors():
    """An ephemeris wrong by up to 0.6 pixel per epoch, measured back on the target.

    The stacking ephemeris is a table of the true positions, each moved at random by up to
    0.3" (0.6 pixel) in each axis, as a poor orbit would be; the stars stay aligned. The
    target (S/N 50 per frame) moves 21"/h, 15 pixels over the sequence.
    """
    from astropy.coordinates import SkyCoord
    from astropy.table import Table
    sim = ss.simulate_observation(n_frames=9, target_snr=50, seed=12, shape=(128, 128),
                                  n_stars=20, target_rate=(-20.0, 8.0) * u.arcsec / u.hour)
    rng = np.random.default_rng(12)
    times = Time(sim.truth["time"])
    truth = SkyCoord(sim.truth["ra"], sim.truth["dec"], unit="deg")
    wrong = truth.spherical_offsets_by(*(rng.uniform(-0.3, 0.3, (2, 9)) * u.arcsec))
    eph = ss.Ephemeris.from_table(Table({"time": times, "ra": wrong.ra.deg,
                                         "dec": wrong.dec.deg}))
    options = dict(size=65, sky_stack=False, subtract_static=True,
                   per_frame_steps=[ss.clean_cosmic_rays])  # a cosmic ray pulls the peak
    plain = ss.shift_and_stack(sim.frames, eph, **options)
    refined = ss.shift_and_stack(sim.frames, eph, refine=True, refine_max_shift=2.0, **options)
    grid = refined.target_frame
    expected = np.array([[float(v) - 32 for v in grid.wcs_at(t).world_to_pixel(position)]
                         for t, position in zip(times, truth)])
    expected -= expected.mean(axis=0)  # the gauge: the mean correction is zero
    assert refined.stack.meta["SSREFINE"] is True
    assert np.all(refined.table["refine_ok"])
    measured = np.column_stack([refined.table["refine_dx"], refined.table["refine_dy"]])
    error = measured - expected
    assert np.sqrt(np.mean(error ** 2)) < 0.05, error
    # the target is sharper once the frames are re-aligned
    from shiftstack_ccd.stars import measure_fwhm
    assert measure_fwhm(refined.stack, refined.target_pixel) < \
        measure_fwhm(plain.stack, plain.target_pixel)


def test_refinement_refuses_offsets_beyond_the_bound():
    sim = ss.simulate_observation(n_frames=6, target_snr=50, seed=13, shape=(96, 96),
                                  n_stars=8)
    frames = [f.copy() for f in sim.frames]
    frames[2].wcs = sim.frames[2].wcs.deepcopy()
    frames[2].wcs.wcs.crval = frames[2].wcs.wcs.crval + [3.0 / 3600, 0]  # 6 pixels
    frames[2].wcs.wcs.set()
    result = ss.shift_and_stack(frames, sim.ephemeris, size=65, sky_stack=False, refine=True,
                                refine_max_shift=1.5)
    ok = np.asarray(result.table["refine_ok"])
    assert not ok[2] and ok.sum() == 5
    assert result.table["refine_dx"][2] == 0 and "max_shift" in result.table["refine_note"][2]


# ---- flux on any pixel scale (issue 9 item 4) ------------------------------------------
_FLUX = 2e4  # electrons per frame
_START = Time("2024-03-01T03:00:00", scale="utc")


def _flux_frames(pixel_scale, fwhm_arcsec=2.0, n_frames=4, start=_START, position=None,
                 seed=1):
    """Noiseless frames without stars (a flat sky and the target), the PSF fixed in arcsec."""
    scale = u.Quantity(pixel_scale, u.arcsec)
    n = int(round(64 * u.arcsec / scale))
    return ss.simulate_observation(
        n_frames=n_frames, shape=(n, n), pixel_scale=scale, start=start, n_stars=0,
        noise=False, cosmic_rays=False, target_flux=_FLUX, fwhm=fwhm_arcsec / scale.value,
        max_rotation=0 * u.deg, dither=3.0, unit="electron", target_position=position,
        seed=seed)


def _target_flux(result, radius_arcsec=10.0):
    """Sky-subtracted sum within 10 arcsec of the target (the whole PSF stamp)."""
    image = result.stack.data
    scale = result.stack.meta["SSPIXSC"]
    cx, cy = result.target_pixel
    y, x = np.indices(image.shape)
    r = np.hypot(x - cx, y - cy) * scale
    assert np.isfinite(image[r < 18]).all()
    sky = np.median(image[(r > 12) & (r < 18)])
    return float(np.sum(image[r < radius_arcsec] - sky))


@pytest.mark.parametrize("resample", ["shift", "warp", "drizzle"])
@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_target_flux_kept_at_any_output_pixel_scale(resample, factor):
    """0.5"/px frames stacked onto pixels of 0.25", 0.5" and 1": the flux stays (was x3.97
    and x0.25 before the pixel-area ratio)."""
    if resample == "shift" and factor != 1.0:
        pytest.skip("a translation keeps the pixel size")
    sim = _flux_frames(0.5)
    scale = 0.5 * factor * u.arcsec
    size = 2 * int(round(20 / scale.value)) + 1
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*larger than the input")  # the noise, not the flux
        result = _stack_noiseless(sim.frames, sim.ephemeris, method="mean", size=size,
                                  pixel_scale=scale, resample=resample, sky_stack=False)
    assert set(result.table["resample"]) == {resample}
    assert np.allclose(result.table["pixel_area_ratio"], factor ** 2, rtol=1e-6)
    assert result.stack.meta["SSFLUXC"] == "per-pixel"
    assert abs(_target_flux(result) / _FLUX - 1) < 0.02


@pytest.mark.parametrize("resample", ["warp", "drizzle"])
@pytest.mark.parametrize("pixel_scale", [None, 0.5, 1.0])
def test_target_flux_kept_for_mixed_scale_inputs(resample, pixel_scale):
    """Frames of 0.5"/px and 1"/px interleaved in time: every frame gives the same flux,
    on the median scale (0.75") and on either input's."""
    fine = _flux_frames(0.5)
    cadence = (fine.truth["time"][1] - fine.truth["time"][0])
    start = _START + cadence / 2
    epoch = start + 2 * cadence + fine.exptime / 2  # mid-exposure of the middle of four
    coarse = _flux_frames(1.0, start=start, position=fine.target_at(epoch), seed=2)
    frames = [f for pair in zip(fine.frames, coarse.frames) for f in pair]
    scale = None if pixel_scale is None else pixel_scale * u.arcsec
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*larger than the input")  # the noise, not the flux
        result = _stack_noiseless(frames, fine.ephemeris, method="mean", size=None,
                                  pixel_scale=scale, resample=resample, sky_stack=False)
    out_scale = result.stack.meta["SSPIXSC"]
    assert out_scale == pytest.approx(0.75 if pixel_scale is None else pixel_scale)
    ratios = np.asarray(result.table["pixel_area_ratio"])
    assert np.allclose(ratios[0::2], (out_scale / 0.5) ** 2, rtol=1e-5)
    assert np.allclose(ratios[1::2], (out_scale / 1.0) ** 2, rtol=1e-5)
    assert abs(_target_flux(result) / _FLUX - 1) < 0.02
    # and each kind of frame alone gives the same: neither is weighted by its pixel area
    for part in (frames[0::2], frames[1::2]):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*output pixels .* larger than the input")
            alone = _stack_noiseless(part, fine.ephemeris, method="mean",
                                     size=result.stack.shape[0],
                                     pixel_scale=out_scale * u.arcsec,
                                     reference_time=result.target_frame.reference_time,
                                     resample=resample, sky_stack=False)
        assert abs(_target_flux(alone) / _FLUX - 1) < 0.02


def test_products_over_the_memory_budget_go_to_a_temporary_folder(tmp_path, monkeypatch,
                                                                  caplog):
    """No workdir, products over mem_limit: spilled to a temporary folder (then removed),
    and the stack is the same as with everything in memory."""
    import logging
    import tempfile
    sim = ss.simulate_observation(n_frames=4, shape=(96, 96), n_stars=10, seed=4)
    kwargs = dict(method="median", size=41)
    in_memory = ss.shift_and_stack(sim.frames, sim.ephemeris, **kwargs)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen = []
    original = tempfile.TemporaryDirectory

    def recording(*args, **kw):
        folder = original(*args, **kw)
        seen.append(folder.name)
        return folder
    monkeypatch.setattr(tempfile, "TemporaryDirectory", recording)
    with caplog.at_level(logging.INFO, logger="shiftstack_ccd.stack"):
        spilled = ss.shift_and_stack(sim.frames, sim.ephemeris, mem_limit=1e4, **kwargs)
    assert "over the memory budget" in caplog.text
    assert len(seen) == 1 and seen[0].startswith(str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # removed afterwards
    # through files, as with a named workdir (test_scale): equal to float precision
    good = ~in_memory.stack.mask
    assert np.array_equal(spilled.stack.mask, in_memory.stack.mask)
    noise = np.median(in_memory.stack.uncertainty.array[good])
    assert np.max(np.abs(spilled.stack.data[good] - in_memory.stack.data[good])) < 1e-4 * noise
    assert np.allclose(spilled.stack.uncertainty.array[good],
                       in_memory.stack.uncertainty.array[good], rtol=1e-5)
    assert np.array_equal(spilled.coverage, in_memory.coverage)


def test_drizzle_options_are_checked_before_any_frame_is_read():
    sim = ss.simulate_observation(n_frames=2, shape=(48, 48), n_stars=0, seed=5)
    with pytest.raises(ss.ParameterError, match="pixfrac: must be a number in"):
        ss.shift_and_stack(sim.frames, sim.ephemeris, resample="drizzle", pixfrac=1.5)
    with pytest.raises(ss.ParameterError, match="drizzle_kernel: must be one of"):
        ss.shift_and_stack(sim.frames, sim.ephemeris, resample="drizzle",
                           drizzle_kernel="box")
