"""Per-frame background (shiftstack_ccd.background) alone and in shift_and_stack."""

import numpy as np
import pytest
from astropy.nddata import CCDData

import shiftstack_ccd as ss
from shiftstack_ccd.background import background_box_size, subtract_background
from shiftstack_ccd.exceptions import FrameError
from shiftstack_ccd.photometry import aperture_flux

from nights_helpers import simulated_night


def test_gradient_and_level_removed_sources_kept():
    sim = ss.simulate_observation(n_frames=1, shape=(256, 256), n_stars=30, sky=500.0,
                                  cosmic_rays=False, seed=8)
    frame = sim.frames[0]
    ramp = np.add.outer(np.linspace(0, 200, 256), np.linspace(0, 100, 256)).astype(np.float32)
    tilted = CCDData(frame.data + ramp, unit=frame.unit, uncertainty=frame.uncertainty,
                     wcs=frame.wcs, meta=frame.meta)
    from shiftstack_ccd.photometry import source_mask
    sources = source_mask(frame)
    flat = subtract_background(tilted, mask=sources, box_size=32)
    residual = np.asarray(flat.data)[~sources]
    sigma = np.median(frame.uncertainty.array)
    assert abs(np.median(residual)) < 0.05 * sigma
    # what is left of the ramp in 32-pixel blocks: under a tenth of the pixel noise a block
    # away from the edges, under a fifth next to them
    blocks = np.where(sources, np.nan, np.asarray(flat.data)).reshape(8, 32, 8, 32)
    left = np.abs(np.nanmedian(blocks, axis=(1, 3)))
    assert left[1:-1, 1:-1].max() < 0.1 * sigma
    assert left.max() < 0.2 * sigma
    assert flat.meta["SSBKG"] == "Background2D" and flat.meta["SSBKGBOX"] == 32
    assert np.allclose(frame.data, sim.frames[0].data)  # input untouched
    assert flat.uncertainty is tilted.uncertainty or np.array_equal(
        flat.uncertainty.array, tilted.uncertainty.array)


def test_box_size_from_the_frame():
    assert background_box_size((100, 100)) == 32
    assert background_box_size((137, 137)) == 34
    assert background_box_size((4096, 4096)) == 64


def test_frame_without_usable_background_is_refused_by_name():
    frame = CCDData(np.ones((64, 64)), unit="adu", mask=np.ones((64, 64), bool),
                    meta={"SSFILE": "cloudy_042.fits"})
    with pytest.raises(FrameError, match=r"cloudy_042\.fits: no usable background"):
        subtract_background(frame)


def test_all_masked_frame_stops_the_stack_with_its_name():
    sim = ss.simulate_observation(n_frames=3, shape=(96, 96), n_stars=5, seed=2,
                                  cosmic_rays=False)
    frames = [f.copy() for f in sim.frames]
    frames[2].mask = np.ones(frames[2].shape, bool)
    with pytest.raises(FrameError, match=r"sim_002\.fits: no usable background"):
        ss.shift_and_stack(frames, sim.ephemeris, sky_stack=False)


def test_background_leaves_the_target_flux_on_a_flat_sky():
    """Flat sky: the stack with the per-frame background model subtracted and the stack
    without give the target the same flux to 1%."""
    sim = ss.simulate_observation(n_frames=9, shape=(200, 200), n_stars=20, sky=400.0,
                                  target_snr=40.0, cosmic_rays=False, seed=11)
    radius = 3 * sim.psf_fwhm
    fluxes = {}
    for background in ("model", None):
        result = ss.shift_and_stack(sim.frames, sim.ephemeris, background=background,
                                    size=121, sky_stack=False)
        fluxes[background], _ = aperture_flux(result.stack, result.target_pixel, radius)
        expected = "Background2D" if background else "none"
        assert result.stack.meta["SSBKG"] == expected
    assert fluxes["model"] == pytest.approx(fluxes[None], rel=0.01)
    assert np.isfinite(result.table["noise_ratio"]).all()


def test_night_median_stack_has_no_sky_left():
    """Over a night whose sky changes fourfold the median of the background-subtracted
    frames has a sky of zero (within a tenth of its noise) without any annulus."""
    sim = simulated_night(n_frames=9, n_stars=20)
    result = ss.shift_and_stack(sim.frames, sim.ephemeris, method="median", size=151,
                                sky_stack=False)
    stack = result.stack
    good = ~stack.mask & (result.coverage == 9)
    assert abs(np.median(stack.data[good])) < 0.1 * np.median(stack.uncertainty.array[good])
    levels = np.asarray(result.table["sky_level"]) - 500.0  # the frames' skies, ADU
    assert levels.max() > 3 * levels.min()
