"""Tests of shiftstack_ccd.register: sign conventions, accuracy, refusals, the gauge."""

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData
from scipy.ndimage import shift as ndi_shift
from scipy.special import erf

from shiftstack_ccd.register import (center_cutout, measure_offset, refine_offsets,
                                     shift_bound, shifted_wcs)

FWHM = 3.0
SKY = 200.0       # electrons per pixel
READ_NOISE = 5.0  # electrons


def gaussian(shape, x0, y0, fwhm=FWHM):
    """A unit-flux Gaussian integrated exactly over each pixel (0-based pixel centres)."""
    sigma = fwhm / np.sqrt(8 * np.log(2))

    def profile(n, c):
        edges = np.arange(n + 1) - 0.5
        return np.diff(0.5 * erf((edges - c) / (np.sqrt(2) * sigma)))
    return np.outer(profile(shape[0], y0), profile(shape[1], x0))


def flux_for_snr(snr, size, fwhm=FWHM):
    """Flux (electrons) whose S/N is ``snr`` in a radius-FWHM aperture of pixel centres.

    S/N = aperture flux / sqrt(aperture flux + npix * (sky + read_noise**2)), solved for the
    total flux of a centred source.
    """
    c = (size - 1) / 2
    psf = gaussian((size, size), c, c, fwhm)
    yy, xx = np.mgrid[0:size, 0:size]
    aperture = np.hypot(xx - c, yy - c) <= fwhm
    f = psf[aperture].sum()
    background = aperture.sum() * (SKY + READ_NOISE ** 2)
    return (snr ** 2 * f + np.sqrt(snr ** 4 * f ** 2 + 4 * f ** 2 * snr ** 2 * background)) \
        / (2 * f ** 2)


def noisy_cutouts(rng, offsets, snr, size=48):
    """Cutouts of a target at the centre plus ``offsets``, with Poisson and read noise."""
    flux = flux_for_snr(snr, size)
    c = (size - 1) / 2
    cuts = []
    for dx, dy in offsets:
        model = SKY + flux * gaussian((size, size), c + dx, c + dy)
        cuts.append(rng.poisson(model) + rng.normal(0, READ_NOISE, model.shape))
    return cuts


def relative_errors(dx, dy, true, ok):
    """Recovered minus injected offsets, both relative to the accepted frames' mean."""
    tx = true[:, 0] - true[ok, 0].mean()
    ty = true[:, 1] - true[ok, 1].mean()
    return np.r_[dx[ok] - tx[ok], dy[ok] - ty[ok]]


# ------------------------------------------------------------------ sign conventions
@pytest.mark.parametrize("size", [32, 33])
@pytest.mark.parametrize("shift", [(3, 0), (0, -2), (-4, 5), (0.3, 0), (0, -0.7),
                                   (1.25, -2.5)])
def test_sign_convention_known_shifts(size, shift):
    """The feature in `image` sits at its reference position plus (dx, dy); x is columns."""
    c = (size - 1) / 2
    # the reference feature off-centre too, so nothing depends on the cutout centre
    x_ref, y_ref = c - 1.5, c + 1.0
    reference = gaussian((size, size), x_ref, y_ref)
    image = gaussian((size, size), x_ref + shift[0], y_ref + shift[1])
    off = measure_offset(image, reference)
    assert off.accepted, off.reason
    # 1/upsample = 0.01 px resolution; the Tukey window's flat centre holds both features
    assert off.dx == pytest.approx(shift[0], abs=0.01)
    assert off.dy == pytest.approx(shift[1], abs=0.01)
    # the operational meaning: image shifted by (-dx, -dy) lines up with the reference
    aligned = ndi_shift(image, (-off.dy, -off.dx), order=3, mode="constant")
    inner = (slice(6, -6), slice(6, -6))
    assert np.max(np.abs(aligned - reference)[inner]) < 0.01 * reference.max()


def test_axes_not_swapped_for_elongated_feature():
    """An x-only shift of an elongated, asymmetric feature is reported on x only."""
    yy, xx = np.mgrid[0:40, 0:41]
    feature = lambda x0, y0: (np.exp(-((xx - x0) ** 2 / 18 + (yy - y0) ** 2 / 2))
                              + 0.5 * np.exp(-((xx - x0 - 3) ** 2 + (yy - y0 - 2) ** 2) / 2))
    off = measure_offset(feature(22.0, 19.5), feature(20.0, 19.5))
    assert (off.dx, off.dy) == (pytest.approx(2.0, abs=0.01), pytest.approx(0.0, abs=0.01))
    off = measure_offset(feature(20.0, 18.0), feature(20.0, 19.5))
    assert (off.dx, off.dy) == (pytest.approx(0.0, abs=0.01), pytest.approx(-1.5, abs=0.01))


@pytest.mark.parametrize("shift", [(0, 5), (2.3, -1.6)])
def test_star_field_with_sources_in_the_window_taper(shift):
    """Sources all over the cutout, some entering or leaving it: the second pass (image
    window moved by the first estimate) removes the pull of a common window towards 0."""
    rng = np.random.default_rng(8)
    size = 64
    xs, ys = rng.uniform(-8, size + 8, 40), rng.uniform(-8, size + 8, 40)
    fluxes = rng.uniform(100, 1000, 40)
    scene = lambda dx, dy: sum(f * gaussian((size, size), x + dx, y + dy)
                               for x, y, f in zip(xs, ys, fluxes))
    off = measure_offset(scene(*shift), scene(0, 0))
    assert (off.dx, off.dy) == (pytest.approx(shift[0], abs=0.02),
                                pytest.approx(shift[1], abs=0.02))


def test_masked_and_nan_pixels_are_ignored():
    size = 40
    c = (size - 1) / 2
    reference = 1000 * gaussian((size, size), c, c)
    image = 1000 * gaussian((size, size), c + 0.4, c - 0.6)
    image[5, 30] = 1e6                 # a hot pixel, masked
    image[20:22, 3:6] = np.nan         # a dead patch
    mask = np.zeros(image.shape, dtype=bool)
    mask[5, 30] = True
    off = measure_offset(image, reference, mask=mask, max_shift=3)
    assert off.accepted, off.reason
    assert (off.dx, off.dy) == (pytest.approx(0.4, abs=0.01), pytest.approx(-0.6, abs=0.01))
    # unmasked, the hot pixel dominates the correlation: its peak is refused, not applied
    off = measure_offset(image, reference, max_shift=3)
    assert not off.accepted
    assert "beyond max_shift" in off.reason


# ------------------------------------------------------------------ refusals
def test_refused_beyond_max_shift_circle_and_ellipse():
    size = 48
    c = (size - 1) / 2
    reference = gaussian((size, size), c, c)
    off = measure_offset(gaussian((size, size), c + 4, c), reference, max_shift=2.0)
    assert not off.accepted
    assert off.dx == pytest.approx(4.0, abs=0.01)  # the measured peak is still reported
    assert "4.00 px away, beyond max_shift 2.00 px" in off.reason
    ellipse = (5.0, 1.0)                           # (max_dx, max_dy)
    assert measure_offset(gaussian((size, size), c + 3, c), reference,
                          max_shift=ellipse).accepted
    off = measure_offset(gaussian((size, size), c, c + 2), reference, max_shift=ellipse)
    assert not off.accepted and "outside the max_shift ellipse" in off.reason


def test_refused_when_not_significant_or_anticorrelated():
    rng = np.random.default_rng(11)
    size = 48
    c = (size - 1) / 2
    template = 1000 * gaussian((size, size), c, c)
    refused = [measure_offset(rng.normal(0, 15, (size, size)), template)
               for _ in range(20)]
    assert not any(off.accepted for off in refused)
    assert all(("not significant" in off.reason or "negative" in off.reason)
               for off in refused)
    off = measure_offset(-template, template)
    assert not off.accepted and "anti-correlation" in off.reason


def test_significance_is_background_matched_filter_snr():
    """For a point source against a noiseless template the significance is the
    background-limited matched-filter S/N, F * sqrt(sum P^2) / sigma_sky, within 5%."""
    rng = np.random.default_rng(3)
    size = 48
    c = (size - 1) / 2
    psf = gaussian((size, size), c, c)
    for snr in (20, 10):
        flux = flux_for_snr(snr, size)
        expected = flux * np.sqrt(np.sum(psf ** 2)) / np.sqrt(SKY + READ_NOISE ** 2)
        measured = [measure_offset(rng.poisson(SKY + flux * psf)
                                   + rng.normal(0, READ_NOISE, psf.shape),
                                   flux * psf).significance for _ in range(30)]
        assert np.mean(measured) == pytest.approx(expected, rel=0.05)


def test_plain_correlation_beats_phase_correlation_at_low_snr():
    """Why normalization=None is the default: at S/N 20 it is several times more accurate."""
    rng = np.random.default_rng(5)
    size = 48
    c = (size - 1) / 2
    flux = flux_for_snr(20, size)
    template = flux * gaussian((size, size), c, c)
    errors = {None: [], "phase": []}
    for true in rng.uniform(-1.5, 1.5, (30, 2)):
        image = noisy_cutouts(rng, [true], 20, size)[0]
        for norm in errors:
            off = measure_offset(image, template, normalization=norm, min_significance=0)
            errors[norm] += [off.dx - true[0], off.dy - true[1]]
    rms = {k: np.sqrt(np.mean(np.square(v))) for k, v in errors.items()}
    assert rms[None] < 0.1
    assert rms["phase"] > 2 * rms[None]


# ------------------------------------------------------------------ refinement accuracy
@pytest.mark.parametrize("snr", [50, 20, 10])
def test_refine_recovers_injected_offsets(snr):
    """Uniform +/-1.5 px offsets on 3 sequences of 10 frames (48 x 48, FWHM 3 px).

    Required: < 0.05 px rms at S/N 50. At every S/N the error scales as 1/SNR: measured
    rms * SNR is 1.5, 1.5 and 1.7 px at S/N 50, 20, 10; asserted below 2.
    """
    rng = np.random.default_rng(100 + snr)
    errors = []
    for _ in range(3):
        true = rng.uniform(-1.5, 1.5, (10, 2))
        dx, dy, ok, table = refine_offsets(noisy_cutouts(rng, true, snr))
        assert ok.all(), list(table["refine_note"])
        assert table.meta["converged"]
        errors.append(relative_errors(dx, dy, true, ok))
    errors = np.concatenate(errors)
    rms = np.sqrt(np.mean(errors ** 2))
    assert rms * snr < 2.0
    if snr == 50:
        assert rms < 0.05
        assert np.max(np.abs(errors)) < 0.15


def test_refine_on_simulated_observation_and_correction_sign():
    """The whole chain: simulated frames, per-frame WCS errors, the target grid, refinement,
    then the corrected grids (`shifted_wcs`) put the target back on the centre."""
    import shiftstack_ccd as ss
    sim = ss.simulate_observation(n_frames=9, shape=(96, 96), n_stars=0, cosmic_rays=False,
                                  max_rotation=0 * u.deg, dither=2.0, target_snr=50, seed=5)
    rng = np.random.default_rng(7)
    wcs_error = rng.uniform(-1.5, 1.5, (9, 2))
    frames = []
    for frame, error in zip(sim.frames, wcs_error):
        frame = frame.copy()
        frame.wcs = frame.wcs.deepcopy()
        frame.wcs.wcs.crpix = frame.wcs.wcs.crpix + error  # the WCS now misplaces the target
        frame.wcs.wcs.set()
        frames.append(frame)
    grid = ss.TargetFrame.for_frames(frames, sim.ephemeris, size=65)
    times = sim.truth["time"]
    grids = [grid.wcs_at(t) for t in times]
    cuts = [ss.resample_to_target(f, w, grid.shape) for f, w in zip(frames, grids)]
    dx, dy, ok, table = refine_offsets(cuts, size=49)
    # CRPIX + e moves the target to the grid's centre - e
    true = -wcs_error
    errors = relative_errors(dx, dy, true, ok)
    assert ok.all()
    assert np.sqrt(np.mean(errors ** 2)) < 0.05
    assert np.max(np.abs(errors)) < 0.15
    # apply the corrections: the residual offsets vanish
    corrected = [ss.resample_to_target(f, shifted_wcs(w, x, y), grid.shape)
                 for f, w, x, y in zip(frames, grids, dx, dy)]
    rdx, rdy, rok, _ = refine_offsets(corrected, size=49)
    assert rok.all()
    assert np.sqrt(np.mean(np.r_[rdx, rdy] ** 2)) < 0.05


# ------------------------------------------------------------------ refusals in refine
def test_refine_refuses_frame_beyond_bound_and_reports_it():
    rng = np.random.default_rng(21)
    true = rng.uniform(-0.5, 0.5, (8, 2))
    true[3] = (4.0, 0.5)
    cuts = noisy_cutouts(rng, true, 50)
    dx, dy, ok, table = refine_offsets(cuts, max_shift=2.0)
    assert list(ok) == [i != 3 for i in range(8)]
    assert dx[3] == 0 and dy[3] == 0                       # refused: nothing applied
    assert "beyond max_shift 2.00 px" in table["refine_note"][3]
    assert table["measured_dx"][3] == pytest.approx(4.0 - true[ok, 0].mean(), abs=0.1)
    assert np.sqrt(np.mean(relative_errors(dx, dy, true, ok) ** 2)) < 0.05
    # a per-frame bound that allows it: accepted
    bounds = np.full(8, 2.0)
    bounds[3] = 6.0
    dx, dy, ok, table = refine_offsets(cuts, max_shift=bounds)
    assert ok.all()
    assert dx[3] - dx.mean() == pytest.approx(4.0 - true[:, 0].mean(), abs=0.05)
    assert table["max_shift"][3] == 6.0


def test_refine_refuses_cosmic_ray_dominated_frame():
    rng = np.random.default_rng(31)
    size = 48
    c = (size - 1) // 2
    true = rng.uniform(-1.0, 1.0, (8, 2))
    cuts = noisy_cutouts(rng, true, 50, size)
    cuts[5][c + 4, c + 11] += 2 * flux_for_snr(50, size)  # one pixel, twice the target
    dx, dy, ok, table = refine_offsets(cuts, max_shift=3.0)
    assert list(ok) == [i != 5 for i in range(8)]
    assert "beyond max_shift" in table["refine_note"][5]
    assert table["measured_dx"][5] > 5
    assert np.sqrt(np.mean(relative_errors(dx, dy, true, ok) ** 2)) < 0.05


def test_refine_gauge_weights_masks_and_table():
    rng = np.random.default_rng(41)
    true = rng.uniform(-1.5, 1.5, (6, 2))
    cuts = noisy_cutouts(rng, true, 50)
    weights = np.array([1, 2, 3, 1, 2, 3], dtype=float)
    masks = [np.zeros(cuts[0].shape, dtype=bool) for _ in cuts]
    masks[2][10:14, 30:40] = True
    cuts[2][10:14, 30:40] = 1e5                    # masked junk
    frames = [CCDData(c, unit="electron", mask=m) for c, m in zip(cuts, masks)]
    dx, dy, ok, table = refine_offsets(frames, weights=weights)
    assert ok.all()
    # gauge: the weighted mean correction is zero
    assert np.average(dx, weights=weights) == pytest.approx(0, abs=1e-12)
    assert np.average(dy, weights=weights) == pytest.approx(0, abs=1e-12)
    wx = true[:, 0] - np.average(true[:, 0], weights=weights)
    wy = true[:, 1] - np.average(true[:, 1], weights=weights)
    assert np.sqrt(np.mean(np.r_[dx - wx, dy - wy] ** 2)) < 0.05
    assert table.colnames == ["frame", "refine_dx", "refine_dy", "measured_dx",
                              "measured_dy", "refine_snr", "refine_ok", "refine_note",
                              "max_shift", "refine_weight", "refine_noise"]
    assert np.allclose(table["refine_weight"], weights / weights.sum())
    # each cutout's noise (the masked junk left out): sqrt(sky + read noise**2) electrons
    assert np.allclose(table["refine_noise"], np.sqrt(SKY + READ_NOISE ** 2), rtol=0.05)
    assert table["refine_dx"].unit == u.pix
    assert list(table["refine_dx"]) == list(dx)
    assert all(note == "" for note in table["refine_note"])
    assert np.all(table["refine_snr"] > 50)


def test_refine_warns_when_not_converged():
    from astropy.utils.exceptions import AstropyUserWarning
    rng = np.random.default_rng(61)
    true = rng.uniform(-1.5, 1.5, (5, 2))
    with pytest.warns(AstropyUserWarning, match="not converged after 1 passes"):
        dx, dy, ok, table = refine_offsets(noisy_cutouts(rng, true, 50), iterations=1)
    assert table.meta["converged"] is False and table.meta["iterations"] == 1
    assert table.meta["last_update"] > 0.01


def test_refine_median_template_and_size():
    rng = np.random.default_rng(51)
    true = rng.uniform(-1.5, 1.5, (7, 2))
    cuts = noisy_cutouts(rng, true, 50, size=64)
    dx, dy, ok, table = refine_offsets(cuts, template="median", size=41)
    assert ok.all()
    assert np.sqrt(np.mean(relative_errors(dx, dy, true, ok) ** 2)) < 0.05
    assert table.meta["template"] == "median"


# ------------------------------------------------------------------ helpers and errors
def test_center_cutout_keeps_the_centre():
    image = np.zeros((65, 65))
    image[32, 32] = 1
    cut = center_cutout(image, 21)
    assert cut.shape == (21, 21) and cut[10, 10] == 1
    with pytest.raises(ValueError, match="does not fit"):
        center_cutout(image, 70)


def test_shift_bound_from_ephemeris_uncertainty():
    ra, dec = [0.2, 1.0, 0.01] * u.arcsec, [0.1, 2.0, 0.01] * u.arcsec
    # 3 * max(ra, dec) / scale, never below 1 px
    np.testing.assert_allclose(shift_bound(ra, dec, 0.5 * u.arcsec), [1.2, 12.0, 1.0])
    np.testing.assert_allclose(shift_bound(ra, dec, 0.5 * u.arcsec / u.pix), [1.2, 12.0, 1.0])
    np.testing.assert_allclose(shift_bound(ra, dec, 0.5 * u.arcsec, nsigma=1, minimum=0),
                               [0.4, 4.0, 0.02])


def test_shifted_wcs_moves_crpix_only():
    from astropy.wcs import WCS
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [33, 33]
    wcs.wcs.crval = [150, 2]
    wcs.wcs.cdelt = [-1 / 3600, 1 / 3600]
    out = shifted_wcs(wcs, 0.5, -1.25)
    np.testing.assert_allclose(out.wcs.crpix, [32.5, 34.25])
    np.testing.assert_allclose(wcs.wcs.crpix, [33, 33])  # input untouched
    # the sky position at the old pixel (x, y) is at (x - dx, y - dy) in the new WCS
    x, y = out.world_to_pixel(wcs.pixel_to_world(40.0, 20.0))
    assert (float(x), float(y)) == (pytest.approx(39.5), pytest.approx(21.25))


def test_input_errors():
    a = np.zeros((10, 10))
    with pytest.raises(ValueError, match="same shape|one shape"):
        measure_offset(a, np.zeros((10, 11)))
    with pytest.raises(ValueError, match="normalization"):
        measure_offset(a, a, normalization="full")
    with pytest.raises(ValueError, match="at least 2"):
        refine_offsets([a])
    with pytest.raises(ValueError, match="template"):
        refine_offsets([a, a], template="mode")
    with pytest.raises(ValueError, match="max_shift"):
        refine_offsets([a, a, a], max_shift=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="share one shape"):
        refine_offsets([a, np.zeros((11, 10))])
    off = measure_offset(np.full((10, 10), np.nan), a)
    assert not off.accepted and "too few usable pixels" in off.reason


def test_refinement_shift_error_matches_monte_carlo():
    """refinement_shift on corrections made as refine_offsets makes them (zero mean over
    the accepted frames), for a track error linear in time, unequal combine weights and a
    refused frame: its shift is unbiased and its error is the scatter of the truth."""
    from astropy.table import Table
    from shiftstack_ccd.register import refinement_shift
    rng = np.random.default_rng(11)
    n, sigma, rate = 10, 0.15, 24.0  # frames; per-frame error (px); track error, px/day
    t = 60000.0 + np.arange(n) * 300.0 / 86400.0
    t_ref = t[0]  # the first frame: far from the mean time
    v = np.linspace(1.0, 2.0, n)
    v /= v.sum()
    ok = np.ones(n, dtype=bool)
    ok[3] = False
    errors, reported, shifts = [], [], []
    for _ in range(2000):
        track = 0.4 + rate * (t - t[0])  # the target's true offset from the ephemeris
        e = rng.normal(0.0, sigma, n)
        d = np.where(ok, track - track[ok].mean() + e - e[ok].mean(), 0.0)
        stacked = np.sum(v * (track - d))  # where the combine puts the target
        truth = 0.4 + rate * (t_ref - t[0]) - stacked
        table = Table({"mjd_mid": t, "refine_dx": d, "refine_dy": np.zeros(n),
                       "refine_ok": ok, "weight": v})
        info = refinement_shift(table, t_ref)
        errors.append(info["shift"][0] - truth)
        reported.append(info["shift_err"][0])
        shifts.append(info["shift"][0])
    errors = np.array(errors)
    assert abs(errors.mean()) < 3 * errors.std() / np.sqrt(len(errors))
    assert np.std(errors) == pytest.approx(np.sqrt(np.mean(np.square(reported))), rel=0.05)
    # and it matters: the stacked target is 0.37 px, over 4 sigma, from its place at t_ref
    assert abs(np.mean(shifts)) > 3 * np.std(errors), (np.mean(shifts), np.std(errors))


def refined_epoch_errors(rng, gauge, v, sigma, ok, t, t_ref, rate, trials):
    """Monte Carlo of refinement_shift: corrections with the weighted gauge ``gauge``
    (zero weighted mean over the accepted frames, as refine_offsets makes them) for a track
    error linear in time and per-frame errors ``sigma``; the combine weighs by ``v``.
    Returns (estimated - true shift, reported error) of each trial, x axis."""
    from astropy.table import Table
    from shiftstack_ccd.register import refinement_shift
    n = len(t)
    u_a = np.where(ok, gauge, 0.0) / gauge[ok].sum()
    errors, reported = [], []
    for _ in range(trials):
        track = 0.4 + rate * (t - t[0])  # the target's true offset from the ephemeris
        e = rng.normal(0.0, sigma, n)
        d = np.where(ok, track + e - np.sum(u_a * (track + e)), 0.0)
        stacked = np.sum(v * (track - d))  # where the combine puts the target
        truth = 0.4 + rate * (t_ref - t[0]) - stacked
        table = Table({"mjd_mid": t, "refine_dx": d, "refine_dy": np.zeros(n),
                       "refine_ok": ok, "weight": v, "refine_weight": gauge / gauge.sum(),
                       "refine_noise": sigma / sigma.mean()})
        info = refinement_shift(table, t_ref, weights=v)
        errors.append(info["shift"][0] - truth)
        reported.append(info["shift_err"][0])
    return np.array(errors), np.array(reported)


def test_refinement_with_the_combines_weights_unequal_noise():
    """Four of ten frames three times as noisy, an inverse-variance combine, the epoch at
    the first frame, one refused frame. With the gauge weighted as the combine
    (refine_offsets given its weights, as shift_and_stack now does) the error refinement_shift
    reports still matches the scatter of the truth, and both are smaller than with the
    equal-weight gauge of before (which the reported error also describes)."""
    rng = np.random.default_rng(12)
    n, rate = 10, 24.0  # frames; track error, px/day
    t = 60000.0 + np.arange(n) * 300.0 / 86400.0
    sigma = np.where(np.arange(n) % 3 == 0, 0.3, 0.1)  # per-frame error of a correction, px
    v = 1.0 / sigma ** 2
    v /= v.sum()
    ok = np.ones(n, dtype=bool)
    ok[4] = False
    spread = {}
    for name, gauge in (("equal", np.ones(n)), ("combine", v)):
        errors, reported = refined_epoch_errors(rng, gauge, v, sigma, ok, t, t[0], rate,
                                                3000)
        assert abs(errors.mean()) < 3 * errors.std() / np.sqrt(len(errors)), name
        assert np.std(errors) == pytest.approx(np.sqrt(np.mean(reported ** 2)), rel=0.05), name
        spread[name] = np.std(errors)
    # 0.069 against 0.085 px (seed 12): a fifth less
    assert spread["combine"] < 0.87 * spread["equal"], spread
    # at the combine's mean epoch, all frames accepted, the refinement adds no error at all
    ok[:] = True
    t_mean = np.sum(v * t)
    errors, reported = refined_epoch_errors(rng, v, v, sigma, ok, t, t_mean, rate, 200)
    assert np.max(np.abs(errors)) < 1e-9 and np.max(reported) < 1e-9


def test_shift_and_stack_refines_with_the_combines_weights():
    """An inverse-variance stack whose frames 0, 3 and 6 are noisier (a brighter sky): the
    refinement weighs each frame as the combine does at the target (one over its variance
    there), so its gauge is the combine's and the noisy frames count for less."""
    import shiftstack_ccd as ss
    from astropy.nddata import StdDevUncertainty
    sim = ss.simulate_observation(n_frames=9, shape=(96, 96), n_stars=0, cosmic_rays=False,
                                  target_snr=40, seed=8)
    rng = np.random.default_rng(8)
    frames = []
    for k, frame in enumerate(sim.frames):
        frame = frame.copy()
        if k % 3 == 0:  # twice the noise: add three times the variance
            sigma = frame.uncertainty.array
            frame.data = frame.data + rng.normal(0.0, np.sqrt(3) * sigma)
            frame.uncertainty = StdDevUncertainty(2 * sigma)
        frames.append(frame)
    result = ss.shift_and_stack(frames, sim.ephemeris, size=65, sky_stack=False, refine=True,
                                weights="inverse-variance")
    table = result.table
    assert np.all(table["refine_ok"])
    w = np.asarray(table["refine_weight"])
    noisy = np.arange(9) % 3 == 0
    assert np.allclose(w[noisy] / w[~noisy].mean(), 0.25, rtol=0.05), w
    assert np.isclose(w.sum(), 1.0)
    # the refine noise is what was measured in the cutouts: twice as high in the noisy ones
    noise = np.asarray(table["refine_noise"])
    assert np.allclose(noise[noisy] / noise[~noisy].mean(), 2.0, rtol=0.15), noise
    # the gauge: the combine-weighted mean correction is zero
    assert abs(np.sum(w * table["refine_dx"])) < 1e-9
    assert abs(np.sum(w * table["refine_dy"])) < 1e-9
    # a plain mean (no weights) refines with equal weights, as before
    plain = ss.shift_and_stack(frames, sim.ephemeris, size=65, sky_stack=False, refine=True)
    assert np.allclose(plain.table["refine_weight"], 1 / 9)
