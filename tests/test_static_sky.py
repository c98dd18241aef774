"""Static-sky subtraction on simulated data: star trails gone, the target's flux kept."""

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import StdDevUncertainty
from astropy.utils.exceptions import AstropyUserWarning
from scipy.special import erf

import shiftstack_ccd as ss
from shiftstack_ccd.photometry import aperture_flux
from shiftstack_ccd.static_sky import static_sky_template


def _add_star(sim, sky_position, flux, rng):
    """A bright star (pixel-integrated Gaussian of the PSF's FWHM) added to every frame."""
    sigma = sim.psf_fwhm / 2.3548
    for frame in sim.frames:
        x0, y0 = (float(v) for v in frame.wcs.world_to_pixel(sky_position))
        yy, xx = np.indices(frame.shape)

        def integral(edges, centre):
            return 0.5 * (erf((edges + 0.5 - centre) / (np.sqrt(2) * sigma))
                          - erf((edges - 0.5 - centre) / (np.sqrt(2) * sigma)))
        star = flux * integral(xx, x0) * integral(yy, y0) / sim.gain  # ADU
        frame.data += (rng.poisson(star * sim.gain) / sim.gain).astype(frame.data.dtype)
        variance = frame.uncertainty.array.astype(float) ** 2 + star / sim.gain
        frame.uncertainty = StdDevUncertainty(np.sqrt(variance).astype(frame.data.dtype))


def _crossing(seed=4):
    """A target at S/N 100 per frame crossing a star 30 times brighter, mid-sequence.

    It moves 60"/h, 5 pixels between frames: 40 pixels over the nine frames.
    """
    sim = ss.simulate_observation(n_frames=9, shape=(160, 160), n_stars=15, target_snr=100,
                                  target_rate=(-57.0, 18.0) * u.arcsec / u.hour, seed=seed)
    star_at = sim.ephemeris.at(sim.epoch)
    _add_star(sim, star_at, 30 * sim.truth["flux"][0], np.random.default_rng(seed))
    return sim


def test_target_crossing_a_bright_star_keeps_its_flux():
    sim = _crossing()
    plain = ss.shift_and_stack(sim.frames, sim.ephemeris, method="mean", size=81,
                               sky_stack=False)
    subtracted = ss.shift_and_stack(sim.frames, sim.ephemeris, method="mean", size=81,
                                    sky_stack=False, subtract_static=True)
    truth = sim.truth["flux"][0] / sim.gain
    radius = 3 * sim.psf_fwhm
    flux, _ = aperture_flux(subtracted.stack, subtracted.target_pixel, radius)
    assert abs(flux / truth - 1) < 0.05, flux / truth
    # without subtraction the star's trail runs through the target: far off
    polluted, _ = aperture_flux(plain.stack, plain.target_pixel, radius)
    assert polluted / truth > 1.5
    assert subtracted.stack.meta["SSSTATIC"] is True
    assert np.all(subtracted.table["static_masked"] >= 0)


def test_template_excludes_the_target():
    """The template holds the sky, not the target (its track is masked); noiseless frames."""
    sim = ss.simulate_observation(n_frames=7, shape=(128, 128), n_stars=0, target_snr=50,
                                  target_rate=(-40.0, 0.0) * u.arcsec / u.hour, seed=6,
                                  cosmic_rays=False, noise=False)
    with pytest.warns(AstropyUserWarning, match="7 of 7 frames .* noise of the sky is 0.00"):
        result = ss.shift_and_stack(sim.frames, sim.ephemeris, size=101, background=None)
    grid = result.target_frame
    from astropy.time import Time
    times = Time(sim.truth["time"])
    on_sky = [ss.resample_to_target(f, grid.wcs, grid.shape) for f in sim.frames]
    dx, dy = grid.offset(times)
    cx, cy = grid.center_pixel
    template = static_sky_template(on_sky, [(cx + a, cy + b) for a, b in zip(dx, dy)],
                                   track_radius=4 * sim.psf_fwhm)
    # along the target's track, the template is sky, while the sky stack shows the target
    for a, b in zip(dx, dy):
        x, y = int(round(cx + a)), int(round(cy + b))
        box = np.s_[y - 1:y + 2, x - 1:x + 2]
        sky = sim.sky / sim.gain
        assert np.nanmean(template.data[box]) - sky < \
            0.01 * (np.nanmean(result.sky_stack.data[box]) - sky)
