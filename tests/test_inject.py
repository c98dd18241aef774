"""Fake moving sources injected into frames: flux, position, trail, PSF and noise are right."""

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import CCDData
from astropy.table import Table
from photutils.aperture import CircularAperture, aperture_photometry

from shiftstack_ccd.datasets import inject_moving_source, simulate_observation
from shiftstack_ccd.exceptions import FrameError

RATE = u.arcsec / u.hour


@pytest.fixture
def blank():
    """Noiseless frames of flat sky (200 ADU), rotated and dithered WCS, no stars."""
    return simulate_observation(n_frames=5, shape=(128, 128), n_stars=0, target_flux=0,
                                noise=False, cosmic_rays=False, sky=200.0, seed=3)


def _moments(image, x, y, radius):
    """Centroid and second moments (along x and y) of a background-free image near (x, y)."""
    yy, xx = np.indices(image.shape)
    near = np.hypot(xx - x, yy - y) < radius
    w = np.where(near, image, 0.0)
    cx, cy = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
    vxx = (w * (xx - cx) ** 2).sum() / w.sum()
    vyy = (w * (yy - cy) ** 2).sum() / w.sum()
    vxy = (w * (xx - cx) * (yy - cy)).sum() / w.sum()
    return cx, cy, np.array([[vxx, vxy], [vxy, vyy]])


def test_flux_position_and_trail(blank):
    frames, truth = inject_moving_source(blank.frames, blank.target_position, blank.epoch,
                                         90 * RATE, -40 * RATE, flux=5000.0, fwhm=3.0)
    assert len(frames) == len(truth) == 5
    # 98.5"/h over 120 s at 0.5"/px: a 6.57-pixel trail
    expected_trail = np.hypot(90, 40) / 3600 * 120 / 0.5
    assert np.allclose(truth["trail"], expected_trail, rtol=1e-3)
    for frame, original, row in zip(frames, blank.frames, truth):
        added = frame.data.astype(float) - original.data
        x, y = row["x"], row["y"]
        flux = aperture_photometry(added, CircularAperture((x, y), 15))["aperture_sum"][0]
        assert abs(flux / 5000.0 - 1) < 0.01, flux
        cx, cy, cov = _moments(added, x, y, 20)
        assert abs(cx - x) < 0.02 and abs(cy - y) < 0.02, (cx - x, cy - y)
        # a trail of length L on a round PSF: variance L^2/12 more along the motion than across
        across, along = np.linalg.eigvalsh(cov)
        assert abs(np.sqrt(12 * (along - across)) / row["trail"] - 1) < 0.03
        # the truth position is where the fake is on the sky, through this frame's WCS
        sky = frame.wcs.pixel_to_world(x, y)
        assert sky.separation(SkyCoord(row["ra"], row["dec"])) < 1e-4 * u.arcsec
    # the motion between frames follows the rates
    first, last = (SkyCoord(truth["ra"][i], truth["dec"][i]) for i in (0, -1))
    dra, ddec = first.spherical_offsets_to(last)
    hours = (truth["time"][-1] - truth["time"][0]).to_value(u.hour)
    assert abs(dra.to_value(u.arcsec) / hours - 90) < 1e-3
    assert abs(ddec.to_value(u.arcsec) / hours + 40) < 1e-3


def test_inputs_untouched_and_header_records_fakes(blank):
    before = [f.data.copy() for f in blank.frames]
    headers = [f.meta.copy() for f in blank.frames]
    frames, _ = inject_moving_source(blank.frames, blank.target_position, blank.epoch,
                                     10 * RATE, 0 * RATE, flux=100.0, fwhm=3.0)
    for frame, original, data, header in zip(frames, blank.frames, before, headers):
        assert np.array_equal(original.data, data)
        assert "SSNFAKE" not in original.meta and len(original.meta) == len(header)
        assert frame.meta["SSNFAKE"] == 1
        history = "\n".join(frame.meta["HISTORY"])
        assert "fake injected" in history and "flux 100" in history
        assert frame.unit == original.unit and frame.wcs is not original.wcs


def test_several_fakes_from_a_table_and_magnitudes(blank):
    centre = blank.target_position
    fakes = Table({"ra": [centre.ra.deg, centre.ra.deg + 0.004] * u.deg,
                   "dec": [centre.dec.deg, centre.dec.deg - 0.003] * u.deg,
                   "ra_rate": [5.0, -20.0] * RATE, "dec_rate": [0.0, 12.0] * RATE,
                   "mag": [20.0, 21.0]})
    frames, truth = inject_moving_source(blank.frames, fakes, blank.epoch, zero_point=25.0,
                                         fwhm=3.0)
    assert len(truth) == 2 * len(frames)
    assert set(truth["fake"]) == {0, 1}
    expected = {0: 10 ** (0.4 * 5), 1: 10 ** (0.4 * 4)}
    for row in truth:
        assert row["flux"] == pytest.approx(expected[row["fake"]])
    added = frames[2].data.astype(float) - blank.frames[2].data
    for row in truth[truth["frame"] == 2]:
        flux = aperture_photometry(added, CircularAperture((row["x"], row["y"]), 14))
        assert abs(flux["aperture_sum"][0] / row["flux"] - 1) < 0.01
    assert frames[0].meta["SSNFAKE"] == 2


def test_poisson_noise_and_uncertainty(blank):
    frames, truth = inject_moving_source(blank.frames, blank.target_position, blank.epoch,
                                         0 * RATE, 0 * RATE, flux=2e5, fwhm=3.0, poisson=True,
                                         gain=2.0, seed=1)
    for frame, original in zip(frames, blank.frames):
        variance = frame.uncertainty.array.astype(float) ** 2 - original.uncertainty.array ** 2
        # the added variance is the fake's model over the gain; it holds the whole flux
        assert variance.sum() == pytest.approx(2e5 / 2.0, rel=1e-3)
    # the noise drawn has that variance: pooled over frames and bright pixels
    noise, predicted = [], []
    for frame, original in zip(frames, blank.frames):
        noiseless, _ = inject_moving_source([original], blank.target_position, blank.epoch,
                                            0 * RATE, 0 * RATE, flux=2e5, fwhm=3.0)
        model = noiseless[0].data.astype(float) - original.data
        bright = model > 100
        noise.append((frame.data - original.data - model)[bright])
        predicted.append(model[bright] / 2.0)
    chi2 = np.sum(np.concatenate(noise) ** 2 / np.concatenate(predicted))
    dof = sum(len(n) for n in noise)
    assert abs(chi2 / dof - 1) < 4 * np.sqrt(2 / dof)
    assert "Poisson noise" in "\n".join(frames[0].meta["HISTORY"])


def test_psf_fitted_from_the_stars():
    sim = simulate_observation(n_frames=2, shape=(200, 200), n_stars=40, target_flux=0,
                               fwhm=3.4, psf_beta=2.8, cosmic_rays=False, seed=7,
                               star_flux_range=(2e4, 2e5))
    frames, truth = inject_moving_source(sim.frames, sim.target_position, sim.epoch,
                                         0 * RATE, 0 * RATE, flux=1000.0)
    assert np.allclose(truth["fwhm"], 3.4, rtol=0.02), truth["fwhm"]
    assert np.allclose(truth["beta"], 2.8, rtol=0.1), truth["beta"]
    # the fake has the stars' profile: same FWHM to a couple of percent
    from photutils.psf import fit_fwhm
    added = frames[0].data.astype(float) - sim.frames[0].data
    fake_width = fit_fwhm(added, xypos=[(truth["x"][0], truth["y"][0])], fit_shape=9)[0]
    noiseless = simulate_observation(n_frames=2, shape=(200, 200), n_stars=0, target_flux=5e4,
                                     fwhm=3.4, psf_beta=2.8, noise=False, cosmic_rays=False,
                                     target_rate=(0, 0) * RATE, seed=7, sky=0.0)
    star_width = fit_fwhm(noiseless.frames[0].data,
                          xypos=[tuple(noiseless.truth[["x", "y"]][0].values())], fit_shape=9)[0]
    assert abs(fake_width / star_width - 1) < 0.02


def test_empirical_psf_from_the_stars():
    """psf='empirical': each frame's ePSF (photutils EPSFBuilder on the stars fit_psf picks).
    On Moffat stars it must give back the Moffat: the fakes' flux, position and width, as
    the package's PSF fit (the one measure_target's model comes from) sees them."""
    from astropy.nddata import CCDData
    from shiftstack_ccd._psf import fit_psf
    sim = simulate_observation(n_frames=1, shape=(200, 200), n_stars=40, target_flux=0,
                               fwhm=3.0, psf_beta=2.5, cosmic_rays=False, seed=7,
                               star_flux_range=(2e4, 2e5))
    wcs = sim.frames[0].wcs
    spots = wcs.pixel_to_world([40.2, 150.1, 60.1, 140.2], [50.1, 40.2, 160.2, 150.1])
    fakes = Table({"ra": spots.ra, "dec": spots.dec, "ra_rate": [0.0] * 4 * RATE,
                   "dec_rate": [0.0] * 4 * RATE, "flux": [8000.0] * 4})
    frames, truth = inject_moving_source(sim.frames, fakes, sim.epoch, psf="empirical")
    assert truth.meta["psf"] == "empirical"
    assert "empirical (ePSF of" in str(frames[0].meta["HISTORY"])
    added = frames[0].data.astype(float) - sim.frames[0].data
    # all the light within the ePSF's footprint, none lost or added
    assert added.sum() == pytest.approx(4 * 8000.0, rel=1e-6)
    # a little noise, as any image has (the star finder's threshold is a multiple of it)
    noisy = added + np.random.default_rng(4).normal(0.0, 1.0, added.shape)
    fitted = fit_psf(CCDData(noisy, unit="adu"), saturation=np.inf)
    assert fitted["n_stars"] == 4
    order = np.argsort(fitted["stars"]["x"])
    x, y = fitted["stars"]["x"][order], fitted["stars"]["y"][order]
    expected = np.argsort(truth["x"])
    assert np.all(np.hypot(x - truth["x"][expected], y - truth["y"][expected]) < 0.06), \
        (x - truth["x"][expected], y - truth["y"][expected])
    assert fitted["fwhm"] == pytest.approx(3.0, rel=0.03)
    assert fitted["beta"] == pytest.approx(2.5, rel=0.15)
    # with the fakes' photon noise (Poisson needs a model without negative light)
    noisy_frames, _ = inject_moving_source(sim.frames, fakes, sim.epoch, psf="empirical",
                                           poisson=True, gain=1.0, seed=1)
    total = float(np.sum(noisy_frames[0].data.astype(float) - sim.frames[0].data))
    assert abs(total - 4 * 8000.0) < 5 * np.sqrt(4 * 8000.0), total


def test_paths_are_read(blank, tmp_path):
    paths = blank.write(tmp_path)
    frames, truth = inject_moving_source(paths, blank.target_position, blank.epoch,
                                         0 * RATE, 0 * RATE, flux=500.0, fwhm=2.5)
    assert len(frames) == 5 and str(truth["file"][0]).endswith("sim_000.fits")


def test_bad_input(blank):
    args = (blank.target_position, blank.epoch, 1 * RATE, 1 * RATE)
    with pytest.raises(ValueError, match="exactly one of flux and mag"):
        inject_moving_source(blank.frames, *args)
    with pytest.raises(ValueError, match="zero_point"):
        inject_moving_source(blank.frames, *args, mag=20.0)
    with pytest.raises(ValueError, match="frame's unit"):
        inject_moving_source(blank.frames, *args, flux=10 * u.electron, fwhm=3.0)
    with pytest.raises(ValueError, match="angular rate"):
        inject_moving_source(blank.frames, blank.target_position, blank.epoch, 1 * u.s,
                             1 * RATE, flux=1.0)
    no_wcs = CCDData(blank.frames[0].data, unit="adu", meta=blank.frames[0].meta)
    with pytest.raises(FrameError, match="no celestial WCS"):
        inject_moving_source([no_wcs], *args, flux=1.0, fwhm=3.0)
    empty = simulate_observation(n_frames=1, shape=(64, 64), n_stars=0, seed=1)
    with pytest.raises(FrameError, match="give the FWHM"):
        inject_moving_source(empty.frames, *args, flux=1.0)
    with pytest.raises(ValueError, match="psf must be 'moffat', 'empirical'"):
        inject_moving_source(blank.frames, *args, flux=1.0, psf="gaussian")
