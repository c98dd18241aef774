"""Shared measurements for the noise, background and scaling tests (not a test module)."""

import numpy as np
from astropy import units as u
from astropy.stats import mad_std

import shiftstack_ccd as ss


def aperture_ratio(result, radius=3.0, n_places=400, seed=1):
    """Robust scatter of random empty-sky aperture sums over their reported uncertainty.

    ``n_places`` apertures of ``radius`` at random places of the stack where every frame
    contributes, no pixel is masked and the target is more than 15 pixels away; the
    reported uncertainty of a sum is sqrt(sum of the stack's variance over the aperture).
    """
    from photutils.aperture import CircularAperture, aperture_photometry
    stack = result.stack
    data = np.asarray(stack.data, dtype=float)
    var = np.asarray(stack.uncertainty.array, dtype=float) ** 2
    bad = stack.mask | ~np.isfinite(data) | (result.coverage < result.coverage.max())
    cx, cy = result.target_pixel
    rng = np.random.default_rng(seed)
    ny, nx = data.shape
    places = []
    for _ in range(100 * n_places):
        x, y = rng.uniform(radius + 2, nx - radius - 3), rng.uniform(radius + 2, ny - radius - 3)
        box = bad[int(y - radius - 1):int(y + radius + 2), int(x - radius - 1):int(x + radius + 2)]
        if np.hypot(x - cx, y - cy) > 15 and not box.any():
            places.append((x, y))
            if len(places) == n_places:
                break
    aperture = CircularAperture(places, radius)
    sums = np.asarray(aperture_photometry(np.nan_to_num(data), aperture)["aperture_sum"])
    reported = np.sqrt(np.asarray(aperture_photometry(np.nan_to_num(var), aperture)
                                  ["aperture_sum"]))
    return float(mad_std(sums) / np.median(reported))


def simulated_night(n_frames=15, seed=2, **overrides):
    """Raw frames of a whole night: twilight at both ends (sky x4 / x3 the dark sky), seeing
    2.5-4 px and transparency 0.7-1 varying per frame, bias 500 ADU with an overscan strip,
    no uncertainty."""
    rng = np.random.default_rng(seed)
    options = dict(n_frames=n_frames, shape=(300, 300),
                   sky=ss.night_sky(n_frames, dark=300.0),
                   fwhm=rng.uniform(2.5, 4.0, n_frames),
                   transparency=np.linspace(1.0, 0.7, n_frames)[rng.permutation(n_frames)],
                   bias_level=500.0, with_uncertainty=False, gain=2.0, read_noise=6.0,
                   n_stars=150, star_flux_range=(5e3, 5e5), target_flux=2e4,
                   cosmic_rays=False, seed=seed, max_rotation=0.5 * u.deg,
                   target_rate=(20, -10) * u.arcsec / u.hour)
    options.update(overrides)
    return ss.simulate_observation(**options)
