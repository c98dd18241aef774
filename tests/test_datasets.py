"""Tests of shiftstack_ccd.datasets: the simulated observations and the example-data locator."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.time import Time
from astropy.utils.exceptions import AstropyUserWarning
from photutils.aperture import CircularAperture
from scipy import ndimage

from shiftstack_ccd.datasets import (DATA_ENV, fetch_example_data, get_data_path,
                                     simulate_observation)
from shiftstack_ccd.exceptions import OutputExistsError

LOWELL_FILES = [f"20190326.{n:04d}.fits" for n in range(135, 145)]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def moments(image, x, y, half):
    """Flux, centroid and second moments of ``image`` in a box of +/- half around (x, y)."""
    ix, iy = int(round(x)), int(round(y))
    cut = image[iy - half:iy + half + 1, ix - half:ix + half + 1]
    yy, xx = np.mgrid[iy - half:iy + half + 1, ix - half:ix + half + 1]
    flux = cut.sum()
    cx, cy = (cut * xx).sum() / flux, (cut * yy).sum() / flux
    cov = np.array([[(cut * (xx - cx) ** 2).sum(), (cut * (xx - cx) * (yy - cy)).sum()],
                    [(cut * (xx - cx) * (yy - cy)).sum(), (cut * (yy - cy) ** 2).sum()]])
    return flux, cx, cy, cov / flux


def aperture_sum(image, x, y, radius):
    mask = CircularAperture((x, y), r=radius).to_mask(method="exact")
    return float(np.sum(mask.multiply(image)))


@pytest.fixture(scope="module")
def sim():
    return simulate_observation(seed=11)


# --------------------------------------------------------------------------------------
# PSF, positions, fluxes
# --------------------------------------------------------------------------------------
def test_star_centroids_and_fluxes_noiseless():
    sim = simulate_observation(n_stars=12, target_flux=0, noise=False, cosmic_rays=False,
                               unit="electron", seed=3)
    half = 18  # a star's stamp is +/- 17 px for FWHM 3: the whole flux is in the box
    checked = 0
    for frame in sim.frames:
        image = frame.data.astype(float) - sim.sky
        sx, sy = frame.wcs.wcs_world2pix(sim.stars["ra"], sim.stars["dec"], 0)
        ny, nx = image.shape
        for k in range(len(sim.stars)):
            inside = half <= sx[k] < nx - half - 1 and half <= sy[k] < ny - half - 1
            others = np.delete(np.arange(len(sx)), k)
            # no other stamp reaches this box (Chebyshev distance > box + stamp)
            isolated = np.all(np.maximum(abs(sx[others] - sx[k]),
                                         abs(sy[others] - sy[k])) > half + 18)
            if not (inside and isolated):
                continue
            flux, cx, cy, _ = moments(image, sx[k], sy[k], half)
            # float32 data: a 1e-6 relative rounding on 1e5 e- pixels; < 0.01 px asked
            assert abs(cx - sx[k]) < 0.01 and abs(cy - sy[k]) < 0.01
            assert flux == pytest.approx(sim.stars["flux"][k], rel=0.01)
            checked += 1
    assert checked >= 5


def test_target_centroid_flux_and_trail_noiseless():
    rate = (60.0, 30.0) * u.arcsec / u.hour  # 2.2 arcsec = 4.5 px trail in 120 s
    sim = simulate_observation(n_stars=0, target_flux=3e4, target_rate=rate, noise=False,
                               cosmic_rays=False, unit="electron", seed=5)
    for i, frame in enumerate(sim.frames):
        image = frame.data.astype(float) - sim.sky
        row = sim.truth[i]
        flux, cx, cy, cov = moments(image, row["x"], row["y"], 26)
        assert abs(cx - row["x"]) < 0.01 and abs(cy - row["y"]) < 0.01
        assert flux == pytest.approx(row["flux"], rel=0.01)
        # Trailed: the second moment grows along the motion by trail^2/12 (a uniform
        # segment), and not across it.
        ends = sim.target_at(row["time"] + [-60, 60] * u.s)
        ex, ey = frame.wcs.wcs_world2pix(ends.ra.deg, ends.dec.deg, 0)
        along = np.array([ex[1] - ex[0], ey[1] - ey[0]])
        length = np.hypot(*along)
        assert length == pytest.approx(4.47, rel=0.01)
        along /= length
        across = np.array([-along[1], along[0]])
        var_along, var_across = along @ cov @ along, across @ cov @ across
        assert var_along - var_across == pytest.approx(length ** 2 / 12, rel=0.05)


def test_noise_matches_uncertainty_in_adu():
    kwargs = dict(n_frames=3, shape=(128, 128), n_stars=20, gain=2.5, cosmic_rays=False,
                  seed=7)
    noisy = simulate_observation(**kwargs)
    model = simulate_observation(noise=False, **kwargs)
    for frame, clean in zip(noisy.frames, model.frames):
        assert frame.unit == u.adu and frame.data.dtype == np.float32
        assert isinstance(frame.uncertainty, StdDevUncertainty)
        pull = (frame.data - clean.data) / frame.uncertainty.array
        # 16384 pixels: the standard deviation of the pull is known to ~0.6 %
        assert np.std(pull) == pytest.approx(1.0, abs=0.03)
        assert abs(np.mean(pull)) < 0.03
        # the uncertainty is the exact model noise: sqrt(e- + RN^2) / gain
        expected = np.sqrt(clean.data * 2.5 + 5.0 ** 2) / 2.5
        np.testing.assert_allclose(frame.uncertainty.array, expected, rtol=1e-5)


def test_electron_unit_is_adu_times_gain():
    kwargs = dict(n_frames=2, shape=(64, 64), gain=3.0, seed=2)
    adu = simulate_observation(unit="adu", **kwargs)
    electron = simulate_observation(unit="electron", **kwargs)
    assert electron.frames[0].unit == u.electron
    assert electron.frames[0].header["GAIN"] == 1.0 and adu.frames[0].header["GAIN"] == 3.0
    for a, e in zip(adu.frames, electron.frames):
        np.testing.assert_allclose(a.data * 3.0, e.data, rtol=1e-6, atol=1e-3)


# --------------------------------------------------------------------------------------
# signal-to-noise
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("target_snr", [3.0, 10.0])
def test_target_snr_is_true(target_snr):
    """The per-frame S/N, measured over noise realisations, is the one asked for."""
    center = SkyCoord(150.0, 2.0, unit="deg")
    kwargs = dict(n_frames=20, shape=(48, 48), n_stars=0, dither=0.0, max_rotation=0.0,
                  cosmic_rays=False, target_snr=target_snr, gain=1.7,
                  target_position=center.spherical_offsets_by(1.3 * u.arcsec, -0.8 * u.arcsec))
    # with no stars, dithers or rotations the geometry is the same for every seed
    clean = simulate_observation(noise=False, seed=0, **kwargs)
    radius = clean.aperture_radius
    assert radius == clean.psf_fwhm == 3.0
    expected = [aperture_sum(f.data, x, y, radius)
                for f, x, y in zip(clean.frames, clean.truth["x"], clean.truth["y"])]
    sky_in_aperture = clean.sky / 1.7 * np.pi * radius ** 2
    signal = (np.array(expected) - sky_in_aperture) * 1.7
    # A Moffat (beta 3) holds 76 % of its light within one FWHM; pixel integration and the
    # 0.2 px trail spread it a little.
    fraction = signal / clean.truth["flux"]
    assert np.all((fraction > 0.72) & (fraction < 0.76))
    # the stated S/N is signal / sqrt(sum(w^2 sigma^2)) with the frames' own uncertainty
    for i, frame in enumerate(clean.frames):
        aperture = CircularAperture((clean.truth["x"][i], clean.truth["y"][i]), r=radius)
        weights = aperture.to_mask(method="exact")
        noise_i = np.sqrt(np.sum(weights.multiply(frame.uncertainty.array ** 2) * weights.data))
        assert signal[i] / (noise_i * 1.7) == pytest.approx(clean.truth["snr"][i], rel=1e-4)
    residuals = []
    for seed in range(1, 41):
        noisy = simulate_observation(seed=seed, **kwargs)
        residuals.append([aperture_sum(f.data, x, y, radius) - e for f, x, y, e in
                          zip(noisy.frames, noisy.truth["x"], noisy.truth["y"], expected)])
    noise = np.std(np.array(residuals) * 1.7)  # 800 samples: std known to 2.5 %
    measured = np.mean(signal) / noise
    assert measured == pytest.approx(target_snr, rel=0.10)
    # Every frame's stated S/N is the asked one (no star in the aperture), up to the pixel
    # phase of the aperture (sum(w^2) and the enclosed fraction change by ~1 %).
    np.testing.assert_allclose(clean.truth["snr"], target_snr, rtol=0.02)
    assert clean.truth["snr"][10] == pytest.approx(target_snr, rel=1e-9)


# --------------------------------------------------------------------------------------
# headers, times, WCS, motion
# --------------------------------------------------------------------------------------
def test_header_and_times(sim):
    for i, frame in enumerate(sim.frames):
        header = frame.header
        start = Time(header["DATE-OBS"], scale="utc")
        mid = start + header["EXPTIME"] / 2 * u.s
        assert abs((mid - sim.truth["time"][i]).to_value(u.s)) < 1e-6
        assert header["EXPTIME"] == 120.0 and header["GAIN"] == 1.0
        assert header["RDNOISE"] == 5.0
        assert header["TELESCOP"] == header["INSTRUME"] == "shiftstack_ccd simulation"
        assert header["OBJECT"] == "SIMULATED TARGET"
        assert frame.meta["SSFILE"] == sim.truth["file"][i] == f"sim_{i:03d}.fits"
    starts = Time([f.header["DATE-OBS"] for f in sim.frames], scale="utc")
    np.testing.assert_allclose(np.diff(starts.mjd) * 86400, 150.0, atol=1e-6)
    assert sim.epoch == sim.truth["time"][len(sim.frames) // 2]


def test_wcs_dither_and_rotation(sim):
    center = SkyCoord(150.0, 2.0, unit="deg")
    rotations = []
    for i, frame in enumerate(sim.frames):
        wcs = frame.wcs
        assert list(wcs.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
        cd = wcs.wcs.cd
        scale = np.sqrt(abs(np.linalg.det(cd))) * 3600
        assert scale == pytest.approx(0.5, rel=1e-9)
        rotation = np.degrees(np.arctan2(cd[1, 0], cd[1, 1]))
        assert rotation == pytest.approx(sim.truth["rotation"][i], abs=1e-9)
        assert abs(rotation) <= 1.0
        rotations.append(rotation)
        # CRVAL is the nominal centre offset by the recorded dither
        pointing = SkyCoord(*wcs.wcs.crval, unit="deg")
        dra, ddec = center.spherical_offsets_to(pointing)
        assert dra.to_value(u.arcsec) == pytest.approx(sim.truth["dither_ra"][i], abs=1e-6)
        assert ddec.to_value(u.arcsec) == pytest.approx(sim.truth["dither_dec"][i], abs=1e-6)
        # the stars move with the pointing: a star's pixel position follows the WCS
    dithers = np.hypot(sim.truth["dither_ra"], sim.truth["dither_dec"]) / 0.5  # pixels
    assert 1.0 < np.median(dithers) < 15.0  # normal, 5 px per axis: median radius 5.9 px
    assert np.ptp(rotations) > 0.1  # the rotations really differ


def test_target_follows_linear_ephemeris(sim):
    dt = (sim.truth["time"] - sim.epoch).to(u.hour)
    rate = (3.0, -1.5) * u.arcsec / u.hour
    expected = sim.target_position.spherical_offsets_by(rate[0] * dt, rate[1] * dt)
    truth = SkyCoord(sim.truth["ra"], sim.truth["dec"], unit="deg")
    assert np.all(truth.separation(expected).to_value(u.arcsec) < 1e-6)
    # the target sits off pixel centres near the field centre, and x/y follow each WCS
    for i, frame in enumerate(sim.frames):
        x, y = frame.wcs.world_to_pixel(truth[i])
        assert abs(x - sim.truth["x"][i]) < 1e-6 and abs(y - sim.truth["y"][i]) < 1e-6
        assert abs(x - 127.5) < 40 and abs(y - 127.5) < 40
    phases = np.concatenate([sim.truth["x"] % 1, sim.truth["y"] % 1])
    assert np.ptp(phases) > 0.05  # sub-pixel positions vary
    # the motion over the sequence is the rate times the span (3.35 arcsec/h, 20 min)
    span = truth[0].separation(truth[-1]).to_value(u.arcsec)
    assert span == pytest.approx(np.hypot(3.0, 1.5) * 20 / 60, rel=1e-3)


def test_ephemeris_property_matches_truth(sim):
    pytest.importorskip("shiftstack_ccd.ephemeris")
    positions = sim.ephemeris.at(sim.truth["time"])
    truth = SkyCoord(sim.truth["ra"], sim.truth["dec"], unit="deg")
    assert np.all(truth.separation(positions).to_value(u.arcsec) < 1e-6)


def test_ephemeris_property_is_lazy_and_passes_the_model(monkeypatch):
    """sim.ephemeris imports shiftstack_ccd.ephemeris only when asked, with the true model."""
    import sys
    import types

    calls = []

    class Ephemeris:
        @classmethod
        def linear(cls, position, epoch, ra_rate, dec_rate):
            calls.append((position, epoch, ra_rate, dec_rate))
            return "linear ephemeris"

    fake = types.ModuleType("shiftstack_ccd.ephemeris")
    fake.Ephemeris = Ephemeris
    sim = simulate_observation(n_frames=3, shape=(32, 32), n_stars=0, seed=2)
    monkeypatch.setitem(sys.modules, "shiftstack_ccd.ephemeris", fake)
    assert sim.ephemeris == "linear ephemeris"
    (position, epoch, ra_rate, dec_rate), = calls
    assert epoch == sim.truth["time"][1]
    assert ra_rate == 3.0 * u.arcsec / u.hour and dec_rate == -1.5 * u.arcsec / u.hour
    truth = SkyCoord(sim.truth["ra"][1], sim.truth["dec"][1], unit="deg")
    assert truth.separation(position).to_value(u.arcsec) < 1e-6  # epoch = middle frame


def test_sky_per_frame():
    sky = np.linspace(150.0, 250.0, 4)
    sim = simulate_observation(n_frames=4, shape=(64, 64), n_stars=0, sky=sky,
                               cosmic_rays=False, seed=4)
    np.testing.assert_allclose(sim.truth["sky"], sky)
    for frame, level in zip(sim.frames, sky):
        assert np.median(frame.data) == pytest.approx(level, abs=1.0)  # ~15 e- noise, 4096 px


# --------------------------------------------------------------------------------------
# cosmic rays, reproducibility
# --------------------------------------------------------------------------------------
def test_cosmic_rays_recorded():
    kwargs = dict(n_frames=9, shape=(256, 256), n_stars=30, seed=8)
    with_cr = simulate_observation(noise=False, **kwargs)
    without = simulate_observation(noise=False, cosmic_rays=False, **kwargs)
    sigma = np.sqrt(200.0 + 5.0 ** 2)
    events = np.sum(with_cr.truth["n_cosmic_rays"])
    # 2 events per 1e4 px per 100 s: 15.7 per frame, 141.6 in all (Poisson, +/- 4 sigma)
    assert abs(events - 141.6) < 4 * np.sqrt(141.6)
    sizes = []
    for i, (a, b, mask) in enumerate(zip(with_cr.frames, without.frames,
                                         with_cr.cosmic_ray_masks)):
        assert mask.any() and mask.sum() == with_cr.truth["n_cr_pixels"][i]
        extra = a.data.astype(float) - b.data
        np.testing.assert_array_equal(extra[~mask], 0.0)
        # at least 5 sigma each, at most 100 sigma (200 where two events share a pixel)
        assert extra[mask].min() >= 5 * sigma * (1 - 1e-5)
        assert extra[mask].max() <= 200 * sigma
        rows = with_cr.cosmic_rays[with_cr.cosmic_rays["frame"] == i]
        np.testing.assert_allclose(extra[rows["y"], rows["x"]], rows["electrons"], rtol=1e-5)
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        sizes.extend(np.bincount(labels.ravel())[1:])
    sizes = np.array(sizes)
    assert np.any(sizes == 1) and np.any((sizes >= 2) & (sizes <= 6))
    assert np.median(sizes) <= 6
    # the median amplitude of a log-uniform 5-100 sigma law is ~22 sigma
    allextra = np.array(with_cr.cosmic_rays["electrons"]) / sigma
    assert 10 < np.median(allextra) < 40


def test_same_seed_same_frames():
    a = simulate_observation(n_frames=3, shape=(64, 64), seed=21)
    b = simulate_observation(n_frames=3, shape=(64, 64), seed=21)
    c = simulate_observation(n_frames=3, shape=(64, 64), seed=22)
    for fa, fb, fc in zip(a.frames, b.frames, c.frames):
        np.testing.assert_array_equal(fa.data, fb.data)
        np.testing.assert_array_equal(fa.uncertainty.array, fb.uncertainty.array)
        assert not np.array_equal(fa.data, fc.data)
    for name in ("x", "y", "flux", "snr", "rotation", "n_cosmic_rays"):
        np.testing.assert_array_equal(a.truth[name], b.truth[name])
    for ma, mb in zip(a.cosmic_ray_masks, b.cosmic_ray_masks):
        np.testing.assert_array_equal(ma, mb)


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def test_write_reads_back_and_refuses_overwrite(tmp_path):
    sim = simulate_observation(n_frames=2, shape=(40, 50), n_stars=3, seed=9)
    paths = sim.write(tmp_path / "out")
    assert [p.name for p in paths] == ["sim_000.fits", "sim_001.fits"]
    for path, frame in zip(paths, sim.frames):
        back = CCDData.read(path)
        assert back.unit == u.adu and back.shape == (40, 50)
        np.testing.assert_array_equal(back.data, frame.data)
        np.testing.assert_array_equal(back.uncertainty.array, frame.uncertainty.array)
        assert back.header["DATE-OBS"] == frame.header["DATE-OBS"]
        x, y = back.wcs.world_to_pixel(SkyCoord(*frame.wcs.wcs.crval, unit="deg"))
        assert abs(x - 24.5) < 1e-6 and abs(y - 19.5) < 1e-6  # header digits
        with fits.open(path) as hdul:
            assert hdul[0].header["EXPTIME"] == 120.0
    before = [p.read_bytes() for p in paths]
    other = simulate_observation(n_frames=2, shape=(40, 50), n_stars=3, seed=10)
    with pytest.raises(OutputExistsError, match="sim_000.fits: exists"):
        other.write(tmp_path / "out")
    assert [p.read_bytes() for p in paths] == before
    assert not list((tmp_path / "out").glob(".*part"))
    other.write(tmp_path / "out", overwrite=True)
    assert paths[0].read_bytes() != before[0]


# --------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(exptime=200 * u.s, cadence=150 * u.s), "exptime <= cadence"),
    (dict(unit="Jy"), "unit must be 'adu' or 'electron'"),
    (dict(target_rate=[1.0, 2.0, 3.0] * u.arcsec / u.hour), "two rates"),
    (dict(target_rate=(1.0, 2.0) * u.arcsec), "target_rate must be a quantity"),
    (dict(star_flux_range=(10.0, 1.0)), "star_flux_range"),
    (dict(sky=[1.0, 2.0]), "one per frame"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate_observation(n_frames=3, shape=(32, 32), **kwargs)


def test_target_leaving_the_field_warns():
    with pytest.warns(AstropyUserWarning, match="outside frames"):
        simulate_observation(n_frames=5, shape=(32, 32), n_stars=0, cosmic_rays=False,
                             target_rate=(300.0, 0.0) * u.arcsec / u.hour, target_flux=100.0)


def test_target_flux_given():
    sim = simulate_observation(n_frames=3, shape=(64, 64), n_stars=0, target_flux=1234.0,
                               seed=1)
    np.testing.assert_allclose(sim.truth["flux"], 1234.0)
    assert np.all(sim.truth["snr"] > 3.0)


# --------------------------------------------------------------------------------------
# real example data
# --------------------------------------------------------------------------------------
def test_fetch_example_data_local(shared_data):
    shared_data("lowell42-5945/5945")
    paths = fetch_example_data("lowell42-5945", download=False)
    assert [p.name for p in paths] == LOWELL_FILES
    assert paths[0] == get_data_path("lowell42-5945/5945/20190326.0135.fits")
    (bias,) = fetch_example_data("lowell42-5945", subset="zero", download=False)
    assert fits.getheader(bias)["OBSTYPE"].strip().lower() in ("bias", "zero")


def test_fetch_example_data_digests_are_the_local_copies(shared_data, monkeypatch):
    """A "download" that hands back the local copies passes the SHA-256 check (the recorded
    digests are theirs); any other file is refused."""
    from shiftstack_ccd.exceptions import DownloadError

    folder = Path(shared_data("lowell42-5945"))
    urls = []

    def download_file(url, **kwargs):
        urls.append(url)
        return str(folder / "/".join(url.split("/")[-2:]))  # <subset>/<file>

    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setattr("astropy.utils.data.download_file", download_file)
    for subset, n in (("5945", 10), ("zero", 1), ("flat", 1)):
        paths = fetch_example_data("lowell42-5945", subset=subset)
        assert len(paths) == n and all(p.parent.name == subset for p in paths)
    assert len(urls) == 12
    assert all(url.startswith("https://raw.githubusercontent.com/LowellObservatory/DeadParrots/"
                              "1306ec5e") for url in urls)

    def wrong_file(url, **kwargs):
        return str(folder / "zero" / "20190326.0001.fits")

    monkeypatch.setattr("astropy.utils.data.download_file", wrong_file)
    with pytest.raises(DownloadError, match="20190326.0111.fits.*SHA-256 differs"):
        fetch_example_data("lowell42-5945", subset="flat")


def test_fetch_example_data_missing(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=DATA_ENV):
        fetch_example_data(download=False)
    with pytest.raises(ValueError, match="unknown example data set"):
        fetch_example_data("nonexistent")
    with pytest.raises(ValueError, match="no subset"):
        fetch_example_data(subset="dark")


@pytest.mark.remote_data
def test_fetch_example_data_download(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    paths = fetch_example_data("lowell42-5945")
    assert len(paths) == 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Lowell headers carry non-standard WCS cards
        header = fits.getheader(paths[0])
    assert header["OBJECT"] == "5945 Roachapproach"
    assert header["FILENAME"].endswith("20190326.0135.fits")
