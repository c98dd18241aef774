"""measure_target on simulated stacks: detections, errors that match the scatter, limits,
zero points and the errors a user meets."""

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import CCDData
from astropy.table import Table

import shiftstack_ccd as ss
from shiftstack_ccd.exceptions import FrameError, MeasurementError
from shiftstack_ccd.measure import summary_line

RATE = u.arcsec / u.hour


@pytest.fixture(scope="module")
def field():
    """Nine frames of a star field (target S/N 1 per frame), fakes on the target's motion.

    Fourteen fakes at stack S/N 6 to 40 sit on a grid away from the stars; one
    stack holds them all, so each is measured at its known position.
    """
    sim = ss.simulate_observation(n_frames=9, shape=(300, 300), target_snr=1.0, n_stars=40,
                                  cosmic_rays=False, seed=28, star_flux_range=(3e3, 1e5))
    first = ss.shift_and_stack(sim.frames, sim.ephemeris, size=241)
    tref = first.target_frame.reference_time
    busy = ss.source_mask(first.sky_stack, nsigma=2.0, npixels=5, dilate=10) \
        | ss.source_mask(first.stack, nsigma=2.0, npixels=5, dilate=6)
    rng = np.random.default_rng(5)
    cx, cy = first.target_pixel
    spots = []
    while len(spots) < 14:
        x, y = rng.uniform(25, 216, 2)
        if busy[int(y) - 6:int(y) + 7, int(x) - 6:int(x) + 7].any() or \
                np.hypot(x - cx, y - cy) < 20 or \
                any(np.hypot(x - a, y - b) < 20 for a, b in spots):
            continue
        spots.append((x, y))
    spots = np.array(spots)
    positions = first.stack.wcs.pixel_to_world(spots[:, 0], spots[:, 1])
    # the flux noise there, measured (forced photometry): the fakes' S/N in the stack
    noise = ss.measure_target(first, position=positions, snr_threshold=np.inf)["flux_err"]
    fluxes = np.geomspace(6, 40, len(spots)) * np.median(noise.value)
    frames, truth = ss.inject_moving_source(sim.frames, positions, tref, sim.ra_rate,
                                            sim.dec_rate, flux=fluxes, fwhm=sim.psf_fwhm,
                                            psf_beta=sim.psf_beta, poisson=True, gain=1.0,
                                            seed=3)
    result = ss.shift_and_stack(frames, sim.ephemeris, size=241)
    return sim, result, positions, fluxes


def test_fakes_recovered_with_honest_errors(field):
    sim, result, positions, fluxes = field
    m = ss.measure_target(result, position=positions, wcs_error=0 * u.arcsec)
    assert len(m) == len(positions)
    expected_snr = np.geomspace(6, 40, len(positions))
    assert np.all(m["detected"][expected_snr >= 8])
    m, positions, fluxes = m[m["detected"]], positions[m["detected"]], fluxes[m["detected"]]
    assert len(m) >= 12
    dra, ddec = positions.spherical_offsets_to(SkyCoord(m["ra"], m["dec"]))
    chi_ra = (dra / m["ra_err"]).decompose().value
    chi_dec = (ddec / m["dec_err"]).decompose().value
    chi_flux = ((m["flux"].value - fluxes) / m["flux_err"].value)
    for chi in (chi_ra, chi_dec, chi_flux):
        assert np.mean(chi ** 2) < 2.0, chi
    assert abs(np.mean(chi_flux)) < 3 / np.sqrt(len(chi_flux))  # no bias beyond the noise
    # S/N as reported follows the injected flux
    assert np.all(np.diff(np.asarray(m["snr"])[[0, -1]]) > 0)
    assert m["snr"][-1] > 25
    # the PSF is the simulation's: 3 px FWHM at 0.5"/px, slightly broadened by resampling
    assert np.all(abs(m["fwhm"].to_value(u.arcsec) / 1.5 - 1) < 0.05)
    assert m.meta["psf_stars"] >= 3 and 0.98 < m.meta["aperture_correction"] < 1.02


def test_the_target_and_its_epoch(field):
    sim, result, _, _ = field
    m = ss.measure_target(result)
    row = m[0]
    assert row["time"].isot == result.target_frame.reference_time.isot
    # target flux of 1 per frame S/N: about 3 in the stack, so likely below the 5-sigma line
    truth = sim.truth["flux"][0]
    assert abs(row["flux"].value - truth) < 4 * row["flux_err"].value
    assert np.isclose(row["flux_limit"].value, 5 * row["flux_err"].value, rtol=0.3)
    assert row["predicted_ra"].to_value(u.deg) == pytest.approx(result.target_frame.center.ra.deg)
    assert np.isnan(row["mag"].value)


def test_empty_sky_not_detected_with_a_limit(field):
    sim, result, _, _ = field
    empty = ss.simulate_observation(n_frames=9, shape=(300, 300), target_flux=0, n_stars=40,
                                    cosmic_rays=False, seed=28, star_flux_range=(3e3, 1e5))
    stack = ss.shift_and_stack(empty.frames, empty.ephemeris, size=241)
    m = ss.measure_target(stack)
    row = m[0]
    assert not row["detected"] and abs(row["snr"]) < 4
    assert np.all(np.isnan(m["ra_err"]))
    line = summary_line(row, m.meta)
    assert line.startswith(f"not detected (S/N {row['snr']:.1f}); 5-sigma limit")


def test_zero_point_from_a_catalogue(field):
    sim, result, positions, fluxes = field
    stars = sim.stars.copy()
    stars["V"] = 25.0 - 2.5 * np.log10(stars["flux"].value)  # 1 e- (1 ADU at gain 1) is V 25
    m = ss.measure_target(result, position=positions[-3:], catalog=stars, band="V")
    assert m.meta["band"] == "V" and abs(m.meta["zero_point"] - 25.0) < 0.02
    expected = 25.0 - 2.5 * np.log10(fluxes[-3:])
    assert np.all(abs(m["mag"].value - expected) < 4 * m["mag_err"].value + 0.01)
    assert np.all(m["mag_limit"].value > m["mag"].value)
    # a zero point given directly needs its band
    with pytest.raises(MeasurementError, match="band"):
        ss.measure_target(result, zero_point=25.0)
    m2 = ss.measure_target(result, position=positions[-1:], zero_point=25.0, band="V")
    assert m2["mag"][0].value == pytest.approx(25.0 - 2.5 * np.log10(m2["flux"][0].value))


def test_catalogue_of_another_field_is_refused(field):
    sim, result, _, _ = field
    elsewhere = Table({"ra": [10.0, 10.01] * u.deg, "dec": [-30.0, -30.01] * u.deg,
                       "V": [15.0, 16.0]})
    with pytest.raises(MeasurementError, match="no star in the field"):
        ss.measure_target(result, catalog=elsewhere, band="V")
    with pytest.raises(MeasurementError, match="magnitude column"):
        ss.measure_target(result, catalog=Table({"ra": [1.0], "dec": [1.0]}), band="V")


def test_bad_stacks_are_refused(field):
    sim, result, positions, _ = field
    far = SkyCoord(positions[0].ra + 1 * u.deg, positions[0].dec)
    with pytest.raises(FrameError, match="not on the stack"):
        ss.measure_target(result, position=far)
    no_wcs = ss.StackResult(CCDData(result.stack.data, unit=result.stack.unit,
                                    uncertainty=result.stack.uncertainty, meta={}),
                            result.sky_stack, result.coverage, result.table, None)
    with pytest.raises(FrameError, match="no celestial WCS"):
        ss.measure_target(no_wcs)


def test_read_back_from_file(field, tmp_path):
    sim, result, positions, fluxes = field
    path = tmp_path / "stack.fits"
    result.write(path)
    direct = ss.measure_target(result, position=positions[-1:])
    again = ss.measure_target(str(path), position=positions[-1:])
    assert again["time"][0].isot == direct["time"][0].isot
    assert again["flux"][0].value == pytest.approx(direct["flux"][0].value, rel=1e-3)
    assert again["ra"][0].value == pytest.approx(direct["ra"][0].value, abs=1e-7)


def test_gaia_answers_are_cached(tmp_path, monkeypatch):
    """The Gaia query is asked once; the second time the disk answers (no network here:
    astroquery's job is replaced by a recorded one)."""
    from astroquery.gaia import Gaia
    asked = []

    class Job:
        def get_results(self):
            return Table({"ra": [150.0, 150.01], "dec": [2.0, 2.01],
                          "phot_g_mean_mag": [15.0, 16.5]})

    def launch(query):
        asked.append(query)
        return Job()

    monkeypatch.setattr(Gaia, "launch_job_async", launch)
    centre = SkyCoord(150.0 * u.deg, 2.0 * u.deg)
    first = ss.gaia_catalog(centre, 0.1 * u.deg, cache_dir=tmp_path)
    assert len(asked) == 1 and "gaiadr3.gaia_source" in asked[0]
    assert first.meta["band"] == "G" and list(first["G"].value) == [15.0, 16.5]

    def offline(query):
        raise ConnectionError("no network")

    monkeypatch.setattr(Gaia, "launch_job_async", offline)
    again = ss.gaia_catalog(centre, 0.1 * u.deg, cache_dir=tmp_path)
    assert list(again["ra"].value) == [150.0, 150.01]
    with pytest.raises(FrameError, match="Gaia: the query failed"):
        ss.gaia_catalog(centre, 0.2 * u.deg, cache_dir=tmp_path)


def test_zero_point_from_gaia_offline(field, tmp_path, monkeypatch):
    """``catalog='gaia'`` end to end without the network: the first answer (a recorded one:
    the field's own stars) is cached, and the second measurement, offline, reads the cache."""
    from astroquery.gaia import Gaia
    sim, result, positions, fluxes = field
    stars = sim.stars
    asked = []

    class Job:
        def get_results(self):
            return Table({"ra": u.Quantity(stars["ra"], u.deg).value,
                          "dec": u.Quantity(stars["dec"], u.deg).value,
                          "phot_g_mean_mag": 25.0 - 2.5 * np.log10(stars["flux"].value)})

    def launch(query):
        asked.append(query)
        return Job()

    monkeypatch.setenv("SHIFTSTACK_CCD_CACHE", str(tmp_path))
    monkeypatch.setattr(Gaia, "launch_job_async", launch)
    online = ss.measure_target(result, position=positions[-2:], catalog="gaia")
    assert len(asked) == 1 and list((tmp_path / "gaia").glob("*.ecsv"))
    assert online.meta["band"] == "G" and abs(online.meta["zero_point"] - 25.0) < 0.02

    def offline(query):
        raise ConnectionError("no network")

    monkeypatch.setattr(Gaia, "launch_job_async", offline)
    again = ss.measure_target(result, position=positions[-2:], catalog="gaia")
    assert again.meta["zero_point"] == pytest.approx(online.meta["zero_point"], abs=1e-9)
    expected = 25.0 - 2.5 * np.log10(fluxes[-2:])
    assert np.all(abs(again["mag"].value - expected) < 4 * again["mag_err"].value + 0.01)
    # a cold cache and no network: one clear error saying what to do instead
    monkeypatch.setenv("SHIFTSTACK_CCD_CACHE", str(tmp_path / "cold"))
    with pytest.raises(FrameError, match="Give the catalogue as a table"):
        ss.measure_target(result, position=positions[-2:], catalog="gaia")


def test_honest_stacks_do_not_warn(field):
    """The simulated stacks (stars from one Moffat, fakes on the right motion): neither the
    aperture correction's stars disagree nor is any target elongated, so no warning."""
    import warnings
    sim, result, positions, fluxes = field
    for stack in (result, ss.shift_and_stack(sim.frames, sim.ephemeris, size=241)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = ss.measure_target(stack, position=positions)
        assert not [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        assert not np.any(m["elongated"])
        assert m.meta["aperture_correction_err"] < 2 * m.meta["aperture_correction_err_formal"]
