"""Resampling: both paths, subpixel accuracy, flux, variance and mask together."""

import numpy as np
import pytest
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.wcs import WCS

from shiftstack_ccd import FrameError
from shiftstack_ccd.resample import (find_translation, flux_convention, pixel_area_ratio,
                                     resample_to_grids, resample_to_target)


def _wcs(crpix=(50.0, 40.0), rotation_deg=0.0, scale_arcsec=1.0, crval=(150.0, 2.0)):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = list(crpix)
    s = scale_arcsec / 3600
    c, sn = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    w.wcs.cd = np.array([[-s * c, s * sn], [s * sn, s * c]])
    w.wcs.set()
    return w


def _gaussian(shape, x0, y0, flux, sigma=1.5):
    """A pixel-integrated circular Gaussian (exact subpixel centroid)."""
    from scipy.special import erf
    y, x = np.indices(shape)

    def integral(edges, center):
        return 0.5 * (erf((edges + 0.5 - center) / (np.sqrt(2) * sigma))
                      - erf((edges - 0.5 - center) / (np.sqrt(2) * sigma)))
    return flux * integral(x, x0) * integral(y, y0)


def _frame(data, wcs, sigma=1.0, mask=None, unit="electron"):
    return CCDData(data.astype(np.float32), unit=unit, wcs=wcs, mask=mask,
                   uncertainty=StdDevUncertainty(np.full(data.shape, sigma, dtype=np.float32)))


def _sip_wcs():
    from astropy.wcs import Sip
    w = _wcs(crpix=(60, 50))
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[2, 0], a[0, 2], a[3, 0] = 2e-5, -1e-5, 3e-7
    b[0, 2], b[1, 1] = 1.5e-5, 1e-5
    w.sip = Sip(a, b, None, None, w.wcs.crpix)
    w.wcs.set()
    return w


def _numerical_area_ratio(w_in, w_out, y, x, h=1e-3):
    """|det| of d(input pixel)/d(output pixel) by central differences of the WCS itself."""
    from astropy.wcs.utils import pixel_to_pixel
    y, x = np.asarray(y, float), np.asarray(x, float)

    def to_in(yy, xx):
        px, py = pixel_to_pixel(w_out, w_in, xx, yy)
        return np.asarray(px), np.asarray(py)
    xr, yr = to_in(y, x + h)
    xl, yl = to_in(y, x - h)
    xu, yu = to_in(y + h, x)
    xd, yd = to_in(y - h, x)
    return np.abs((xr - xl) * (yu - yd) - (yr - yl) * (xu - xd)) / (2 * h) ** 2


def _centroid(image, x0, y0, half=8):
    sub = image[int(y0) - half:int(y0) + half + 1, int(x0) - half:int(x0) + half + 1]
    y, x = np.indices(sub.shape)
    return ((x * sub).sum() / sub.sum() + int(x0) - half,
            (y * sub).sum() / sub.sum() + int(y0) - half)


def test_find_translation():
    w = _wcs()
    shifted = _wcs(crpix=(53.25, 38.5))
    assert np.allclose(find_translation(w, shifted, (80, 100)), (3.25, -1.5), atol=1e-6)
    assert find_translation(w, _wcs(rotation_deg=0.1), (80, 100)) is None
    assert find_translation(w, _wcs(scale_arcsec=1.001), (80, 100)) is None


@pytest.mark.parametrize("tx, ty", [(3.27, -1.53), (0.41, 0.62), (-7.9, 12.1)])
def test_shift_path_equals_warp_path(tx, ty):
    rng = np.random.default_rng(2)
    data = rng.normal(10, 2, (80, 100))
    mask = np.zeros(data.shape, bool)
    mask[30, 40] = True
    frame = _frame(data, _wcs(), sigma=2.0, mask=mask)
    out_wcs = _wcs(crpix=(50 + tx, 40 + ty))
    fast = resample_to_target(frame, out_wcs, (90, 110), method="shift")
    slow = resample_to_target(frame, out_wcs, (90, 110), method="warp")
    assert fast.meta["SSRESAMP"] == "shift" and slow.meta["SSRESAMP"] == "warp"
    assert np.array_equal(fast.mask, slow.mask)
    good = ~fast.mask
    assert np.allclose(fast.data[good], slow.data[good], atol=1e-4)
    assert np.allclose(fast.uncertainty.array[good], slow.uncertainty.array[good], atol=1e-5)
    assert fast.data.dtype == np.float32 and slow.data.dtype == np.float32
    # outside the frame: masked and NaN, never zero
    assert fast.mask[-1, -1] and np.isnan(fast.data[-1, -1])


def test_whole_pixel_shift_is_exact():
    rng = np.random.default_rng(4)
    data = rng.normal(10, 2, (30, 40))
    mask = np.zeros(data.shape, bool)
    mask[10, 12] = True
    frame = _frame(data, _wcs(crpix=(20, 15)), mask=mask)
    out = resample_to_target(frame, _wcs(crpix=(23, 13)), (30, 40))
    assert out.meta["SSSHIFTX"] == 3 and out.meta["SSSHIFTY"] == -2
    assert np.array_equal(out.data[0:28, 3:40][~out.mask[0:28, 3:40]],
                          data.astype(np.float32)[2:30, 0:37][~mask[2:30, 0:37]])
    assert out.mask[8, 15] and out.mask.sum() == 1 + 2 * 40 + 3 * 28


def test_subpixel_position_and_flux_on_shift_path():
    x0, y0, flux = 40.3, 35.7, 1e4
    frame = _frame(_gaussian((80, 100), x0, y0, flux), _wcs())
    tx, ty = 4.37, -2.81
    out = resample_to_target(frame, _wcs(crpix=(50 + tx, 40 + ty)), (80, 100))
    cx, cy = _centroid(out.data, x0 + tx, y0 + ty)
    assert abs(cx - (x0 + tx)) < 0.01 and abs(cy - (y0 + ty)) < 0.01
    assert abs(np.nansum(out.data) / flux - 1) < 1e-3


def test_subpixel_position_and_flux_on_warp_path():
    """Rotated, rescaled output grid: the source lands where the output WCS says."""
    x0, y0, flux = 47.3, 38.6, 1e4
    w_in = _wcs()
    frame = _frame(_gaussian((80, 100), x0, y0, flux, sigma=2.0), w_in)
    w_out = _wcs(crpix=(45.0, 41.0), rotation_deg=17.0, scale_arcsec=0.9)
    out = resample_to_target(frame, w_out, (90, 100))
    assert out.meta["SSRESAMP"] == "warp"
    ex, ey = w_out.world_to_pixel(w_in.pixel_to_world(x0, y0))
    cx, cy = _centroid(out.data, float(ex), float(ey), half=10)
    assert abs(cx - ex) < 0.02 and abs(cy - ey) < 0.02
    # counts per pixel: the flux is conserved (pixels 0.81 times the area hold 0.81 times
    # the counts) ...
    assert out.meta["SSFLUXC"] == "per-pixel" and out.meta["SSPIXAR"] == pytest.approx(0.81)
    assert abs(np.nansum(out.data) / flux - 1) < 0.01
    # ... a surface brightness is not scaled: its sum grows with the number of pixels
    surface = resample_to_target(frame, w_out, (90, 100), conserve="surface")
    assert surface.meta["SSFLUXC"] == "surface"
    assert abs(np.nansum(surface.data) * 0.9 ** 2 / flux - 1) < 0.01


def test_mask_propagates_and_outside_is_masked():
    data = np.ones((40, 40))
    mask = np.zeros(data.shape, bool)
    mask[20, 20] = True
    frame = _frame(data, _wcs(crpix=(20, 20)), mask=mask)
    out = resample_to_target(frame, _wcs(crpix=(20.5, 20.0)), (40, 50))
    # input pixel 20 contributes to output pixels x=20 and x=21 with weight 1/2 each
    assert out.mask[20, 20] and out.mask[20, 21] and not out.mask[20, 19]
    assert not out.mask[20, 22]
    assert np.isnan(out.data[20, 20])
    assert out.mask[:, 45:].all()  # beyond the frame
    assert np.allclose(out.data[~out.mask], 1.0)


@pytest.mark.parametrize("interpolation, pixel_scatter", [("bilinear", 0.5),
                                                          ("bicubic", 0.757)])
def test_variance_is_carried_for_aperture_sums(interpolation, pixel_scatter):
    """Carried variance gives the right noise for aperture sums of correlated pixels."""
    rng = np.random.default_rng(7)
    data = rng.normal(0, 1, (400, 400))
    frame = _frame(data, _wcs(crpix=(200, 200)), sigma=1.0)
    out = resample_to_target(frame, _wcs(crpix=(200.5, 200.5)), (400, 400),
                             interpolation=interpolation)
    inner = out.data[5:-5, 5:-5]
    # a half-pixel shift correlates neighbours: the pixel scatter drops (bilinear: to 0.5,
    # the root of the sum of squared weights 4 x 1/16; the cubic spline: to about 0.76) ...
    assert abs(np.std(inner) - pixel_scatter) < 0.02
    # ... but the carried uncertainty stays 1, which is what 10x10 box sums need
    assert np.allclose(out.uncertainty.array[5:-5, 5:-5], 1.0, atol=1e-6)
    boxes = inner[:380, :380].reshape(38, 10, 38, 10).sum(axis=(1, 3))
    predicted = np.sqrt(100 * 1.0)
    assert abs(np.std(boxes) / predicted - 1) < 0.1


def test_bicubic_keeps_an_undersampled_psf_sharp():
    """A 2-pixel FWHM star shifted by half a pixel: the spline widens it far less."""
    x0, y0 = 40.0, 35.0
    frame = _frame(_gaussian((80, 100), x0, y0, 1e4, sigma=2.0 / 2.3548), _wcs())
    widths = {}
    for interpolation in ("bilinear", "bicubic"):
        out = resample_to_target(frame, _wcs(crpix=(50.5, 40.5)), (80, 100),
                                 interpolation=interpolation)
        sub = out.data[30:42, 35:47]
        y, x = np.indices(sub.shape)
        cx = (x * sub).sum() / sub.sum()
        widths[interpolation] = np.sqrt(((x - cx) ** 2 * sub).sum() / sub.sum())
        assert abs(cx + 35 - (x0 + 0.5)) < 0.01
    # second moment of the pixel-integrated input: sigma^2 + 1/12; a half-pixel bilinear
    # shift adds the kernel's variance 1/4 per axis
    before = (2.0 / 2.3548) ** 2 + 1 / 12
    assert widths["bilinear"] ** 2 == pytest.approx(before + 0.25, rel=0.01)
    assert widths["bicubic"] ** 2 < 1.06 * before


def test_errors():
    frame = _frame(np.ones((10, 10)), _wcs(crpix=(5, 5)))
    no_unc = CCDData(np.ones((10, 10)), unit="adu", wcs=_wcs(crpix=(5, 5)),
                     meta={"SSFILE": "a.fits"})
    with pytest.raises(FrameError, match="a.fits: has no uncertainty"):
        resample_to_target(no_unc, _wcs(), (10, 10))
    no_wcs = CCDData(np.ones((10, 10)), unit="adu", meta={"SSFILE": "b.fits"})
    with pytest.raises(FrameError, match="b.fits: has no celestial WCS"):
        resample_to_target(no_wcs, _wcs(), (10, 10))
    with pytest.raises(FrameError, match="no part of the frame"):
        resample_to_target(frame, _wcs(crpix=(5000, 5)), (10, 10))
    with pytest.raises(FrameError, match="not the output grid up to a translation"):
        resample_to_target(frame, _wcs(rotation_deg=5), (10, 10), method="shift")
    with pytest.raises(ValueError, match="method must be"):
        resample_to_target(frame, _wcs(), (10, 10), method="reproject")


def test_input_untouched():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(30, 30)).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    mask[3, 3] = True
    frame = _frame(data, _wcs(crpix=(15, 15)), mask=mask)
    before = (frame.data.copy(), frame.mask.copy(), frame.uncertainty.array.copy(),
              frame.wcs.wcs.crpix.copy())
    resample_to_target(frame, _wcs(crpix=(15.3, 14.2)), (30, 30))
    assert np.array_equal(frame.data, before[0]) and np.array_equal(frame.mask, before[1])
    assert np.array_equal(frame.uncertainty.array, before[2])
    assert np.array_equal(frame.wcs.wcs.crpix, before[3])


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_warp_equals_reproject_with_distortion(interpolation):
    """The warp path reproduces reproject_interp (the reference) on a SIP-distorted frame."""
    from reproject import reproject_interp
    rng = np.random.default_rng(5)
    w_in = _wcs(crpix=(60, 50))
    w_in.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    from astropy.wcs import Sip
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[2, 0], a[0, 2], a[3, 0] = 2e-5, -1e-5, 3e-7
    b[0, 2], b[1, 1] = 1.5e-5, 1e-5
    w_in.sip = Sip(a, b, None, None, w_in.wcs.crpix)
    w_in.wcs.set()
    data = rng.normal(100, 5, (100, 120)) + _gaussian((100, 120), 61.3, 48.2, 5e3)
    frame = _frame(data, w_in, sigma=5.0)
    w_out = _wcs(crpix=(70.0, 64.0), rotation_deg=12.0, scale_arcsec=0.8)
    # reproject interpolates a surface brightness: compare like with like
    out = resample_to_target(frame, w_out, (130, 150), interpolation=interpolation,
                             conserve="surface")
    assert out.meta["SSRESAMP"] == "warp"
    reference, footprint = reproject_interp((data.astype(np.float32), w_in), w_out,
                                            shape_out=(130, 150), order=interpolation)
    assert np.array_equal(out.mask, ~np.isfinite(reference))
    good = ~out.mask
    assert np.max(np.abs(out.data[good] - reference[good])) < 1e-3  # of data ~100
    # counts per pixel: the same times the local pixel-area ratio (distortion included)
    counts = resample_to_target(frame, w_out, (130, 150), interpolation=interpolation)
    ratio = _numerical_area_ratio(w_in, w_out, *np.nonzero(good))
    assert np.max(np.abs(counts.data[good] - reference[good] * ratio)) < 2e-3


def test_pixel_area_ratio_with_distortion_matches_numerical_derivative():
    """The coarse-grid Jacobian (SIP distortion, rotation, scale) against the WCS itself."""
    w_in = _sip_wcs()
    w_out = _wcs(crpix=(70.0, 64.0), rotation_deg=12.0, scale_arcsec=0.8)
    ratio = pixel_area_ratio(w_in, w_out, (130, 150))
    rng = np.random.default_rng(11)
    y, x = rng.integers(0, 130, 300), rng.integers(0, 150, 300)
    truth = _numerical_area_ratio(w_in, w_out, y, x)
    assert truth.max() - truth.min() > 0.005  # the distortion makes it vary (0.64 +- 1%)
    assert np.max(np.abs(ratio[y, x] / truth - 1)) < 1e-5
    # an output too small for the coarse grid takes the exact path: same answer
    small = pixel_area_ratio(w_in, w_out, (20, 30))
    yy, xx = np.mgrid[0:20, 0:30]
    assert np.allclose(small, _numerical_area_ratio(w_in, w_out, yy, xx), rtol=1e-5)


def test_flux_convention_from_units():
    from astropy import units as u
    for unit in ("adu", "electron", "count", "photon", "electron/s", u.adu / u.s, "ct / s"):
        assert flux_convention(unit) == "per-pixel", unit
    for unit in ("MJy/sr", "erg/(s cm2 Angstrom arcsec2)", u.electron / u.arcsec ** 2):
        assert flux_convention(unit) == "surface", unit
    for unit in (None, "", u.dimensionless_unscaled, "Jy", "K"):
        assert flux_convention(unit) is None, unit


def test_unknown_unit_is_treated_as_counts_and_warned_once():
    import uuid

    from astropy import units as u
    from astropy.utils.exceptions import AstropyUserWarning

    # a unit this process has not met before (the warning is given once per unit)
    unit = u.def_unit(f"tick{uuid.uuid4().hex[:8]}")
    frame = _frame(_gaussian((60, 60), 30.2, 29.7, 1e3), _wcs(crpix=(30, 30)), unit=unit)
    coarse = _wcs(crpix=(15, 15), scale_arcsec=2.0)
    with pytest.warns(AstropyUserWarning, match=f"'{unit}' does not say.*counts per pixel"):
        out = resample_to_target(frame, coarse, (30, 30), interpolation="bilinear")
    assert out.meta["SSFLUXC"] == "per-pixel"
    assert "assumed" in out.header.comments["SSFLUXC"]
    assert abs(np.nansum(out.data) / 1e3 - 1) < 0.01
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the second time: no warning
        resample_to_target(frame, coarse, (30, 30), interpolation="bilinear")


@pytest.mark.filterwarnings("ignore:.*larger than the input's")  # the noise, not the flux
@pytest.mark.parametrize("method", ["warp", "drizzle"])
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_flux_kept_when_pixels_change_size(method, scale):
    """A star's counts are the same on output pixels 0.5, 1 and 2 times the input's."""
    x0, y0, flux = 60.3, 49.6, 1e4
    frame = _frame(_gaussian((100, 120), x0, y0, flux, sigma=1.5), _wcs(crpix=(60, 50)))
    n = int(round(100 / scale))
    w_out = _wcs(crpix=(n / 2, n / 2), scale_arcsec=scale, rotation_deg=7.0)
    out = resample_to_target(frame, w_out, (n, n), method=method)
    assert out.meta["SSPIXAR"] == pytest.approx(scale ** 2, rel=1e-6)
    ex, ey = (float(v) for v in w_out.world_to_pixel(frame.wcs.pixel_to_world(x0, y0)))
    y, x = np.indices(out.shape)
    near = np.hypot(x - ex, y - ey) < 8 / scale
    assert abs(np.nansum(out.data[near]) / flux - 1) < 0.01


@pytest.mark.parametrize("method, interpolation, scale", [
    ("warp", "bilinear", 0.5), ("warp", "bilinear", 1.0), ("warp", "bilinear", 2.0),
    ("warp", "bicubic", 0.5), ("warp", "bicubic", 1.0),
    ("drizzle", None, 0.5), ("drizzle", None, 1.0), ("drizzle", None, 2.0)])
def test_carried_variance_gives_aperture_noise_at_any_scale(method, interpolation, scale):
    """Box sums over the resampled noise scatter as the carried variance says.

    Not for a cubic spline onto larger pixels: its samples are noisier than the bilinear
    weights that carry the variance say (12-19% in sigma at 2x, 35% at 3x), which is warned
    about (test_spline_onto_larger_pixels_is_warned_about).
    """
    rng = np.random.default_rng(8)
    frame = _frame(rng.normal(0, 1, (300, 300)), _wcs(crpix=(150, 150)), sigma=1.0)
    n = int(round(260 / scale))
    w_out = _wcs(crpix=(n / 2 + 0.3, n / 2 - 0.2), scale_arcsec=scale, rotation_deg=3.0)
    out = resample_to_target(frame, w_out, (n, n), method=method,
                             interpolation=interpolation or "bicubic")
    box = int(round(12 / scale))  # 12 input pixels on a side
    k = (n - 4) // box
    data = out.data[2:2 + k * box, 2:2 + k * box]
    var = out.uncertainty.array[2:2 + k * box, 2:2 + k * box] ** 2
    assert np.isfinite(data).all()
    sums = data.reshape(k, box, k, box).sum(axis=(1, 3))
    predicted = np.sqrt(var.reshape(k, box, k, box).sum(axis=(1, 3)).mean())
    assert abs(np.std(sums) / predicted - 1) < 0.12  # k*k ~ 400 boxes: ~4% scatter


def test_drizzle_masks_what_no_good_pixel_reaches():
    data = np.full((40, 40), 5.0)
    mask = np.zeros(data.shape, bool)
    mask[20, 20] = True
    frame = _frame(data, _wcs(crpix=(20, 20)), mask=mask)
    out = resample_to_target(frame, _wcs(crpix=(20.0, 20.0)), (40, 50), method="drizzle",
                             pixfrac=1.0)
    assert out.meta["SSRESAMP"] == "drizzle" and out.meta["SSPIXFRC"] == 1.0
    assert out.mask[20, 20] and np.isnan(out.data[20, 20])  # its only input pixel is bad
    assert out.mask[:, 41:].all()  # beyond the frame
    assert np.allclose(out.data[~out.mask], 5.0)
    # half a pixel off: the neighbours of the bad pixel come from the good halves
    shifted = resample_to_target(frame, _wcs(crpix=(20.5, 20.0)), (40, 50), method="drizzle")
    assert not shifted.mask[20, 20] and not shifted.mask[20, 21]
    assert np.allclose(shifted.data[~shifted.mask], 5.0)


def test_drizzle_errors(monkeypatch):
    import sys
    frame = _frame(np.ones((10, 10)), _wcs(crpix=(5, 5)))
    with pytest.raises(ValueError, match="pixfrac must be in"):
        resample_to_target(frame, _wcs(), (10, 10), method="drizzle", pixfrac=0)
    with pytest.raises(ValueError, match="kernel must be one of"):
        resample_to_target(frame, _wcs(), (10, 10), method="drizzle", kernel="box")
    with pytest.raises(ValueError, match="conserve must be"):
        resample_to_target(frame, _wcs(), (10, 10), conserve="flux")
    monkeypatch.setitem(sys.modules, "drizzle.resample", None)
    with pytest.raises(ImportError, match="needs STScI's drizzle package"):
        resample_to_target(frame, _wcs(), (10, 10), method="drizzle")


def test_spline_onto_larger_pixels_is_warned_about():
    from astropy.utils.exceptions import AstropyUserWarning
    frame = _frame(np.ones((60, 60)), _wcs(crpix=(30, 30)))
    coarse = _wcs(crpix=(15, 15), scale_arcsec=2.0)
    with pytest.warns(AstropyUserWarning, match="larger than the input's.*drizzle"):
        resample_to_target(frame, coarse, (30, 30))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resample_to_target(frame, coarse, (30, 30), interpolation="bilinear")
        resample_to_target(frame, coarse, (30, 30), method="drizzle")
        resample_to_target(frame, _wcs(crpix=(30, 30), scale_arcsec=0.5), (60, 60))


def test_warp_between_sky_frames_equals_reproject():
    """A frame whose WCS is in FK5 (B1950 here) onto an ICRS grid: the frames are converted
    (through SkyCoord) as reproject does; the same-frame shortcut is not taken."""
    from reproject import reproject_interp
    rng = np.random.default_rng(6)
    w_in = _wcs(crpix=(60, 50))
    w_in.wcs.radesys, w_in.wcs.equinox = "FK4", 1950.0
    w_in.wcs.set()
    data = rng.normal(100, 5, (100, 120)).astype(np.float32)
    frame = _frame(data, w_in, sigma=5.0)
    # the grid where the frame's centre is in ICRS
    centre = w_in.pixel_to_world(60, 50).icrs
    w_out = _wcs(crpix=(60, 50), crval=(centre.ra.deg, centre.dec.deg), rotation_deg=3.0)
    out = resample_to_target(frame, w_out, (100, 120), conserve="surface")
    reference, _ = reproject_interp((data, w_in), w_out, shape_out=(100, 120), order="bicubic")
    good = ~out.mask & np.isfinite(reference)
    assert good.sum() > 0.9 * good.size
    assert np.max(np.abs(out.data[good] - reference[good])) < 1e-3


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_resample_to_grids_is_resample_to_target_on_each_grid(interpolation):
    """One frame onto a fixed grid (warp: rotated), a shifted one (shift path) and a coarser
    one (area ratio): resample_to_grids shares the frame's preparation (bad-pixel filling,
    the spline's coefficients) but gives every product bit for bit, HISTORY included."""
    rng = np.random.default_rng(7)
    data = 100 + _gaussian((80, 100), 47.3, 38.6, 5000.0) + rng.normal(0, 1, (80, 100))
    mask = np.zeros(data.shape, bool)
    mask[20:23, 60:62] = True  # bad pixels: filled before the spline, masked after
    frame = _frame(data, _wcs(), sigma=1.0, mask=mask)
    grids = [_wcs(crpix=(45.0, 41.0), rotation_deg=7.0), _wcs(crpix=(50.4, 39.7)),
             _wcs(crpix=(30.0, 25.0), scale_arcsec=1.3)]
    options = dict(interpolation=interpolation, method="auto")
    together = resample_to_grids(frame, grids, (60, 70), **options)
    for grid, product in zip(grids, together):
        alone = resample_to_target(frame, grid, (60, 70), **options)
        np.testing.assert_array_equal(product.data, alone.data)
        np.testing.assert_array_equal(product.uncertainty.array, alone.uncertainty.array)
        np.testing.assert_array_equal(product.mask, alone.mask)
        assert list(product.meta.items()) == list(alone.meta.items())
    assert [p.meta["SSRESAMP"] for p in together] == ["warp", "shift", "warp"]
    assert together[1].meta["SSSHIFTX"] == pytest.approx(0.4)
    assert together[0].mask.sum() > 0  # the bad pixels' footprint
    with pytest.raises(TypeError, match="unexpected options"):
        resample_to_grids(frame, grids, (60, 70), interpolaton="bicubic")
