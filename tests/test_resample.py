"""Resampling: both paths, subpixel accuracy, flux, variance and mask together."""

import numpy as np
import pytest
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.wcs import WCS

from shiftstack_ccd import FrameError
from shiftstack_ccd.resample import find_translation, resample_to_target


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


def _frame(data, wcs, sigma=1.0, mask=None):
    return CCDData(data.astype(np.float32), unit="electron", wcs=wcs, mask=mask,
                   uncertainty=StdDevUncertainty(np.full(data.shape, sigma, dtype=np.float32)))


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
    # surface brightness is conserved: flux scales with the pixel area ratio
    assert abs(np.nansum(out.data) * 0.9 ** 2 / flux - 1) < 0.01


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
    no_unc = CCDData(np.ones((10, 10)), unit="adu", wcs=_wcs(crpix=(5, 5)), meta={"SSFILE": "a.fits"})
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
    a = np.zeros((4, 4)); b = np.zeros((4, 4))
    a[2, 0], a[0, 2], a[3, 0] = 2e-5, -1e-5, 3e-7
    b[0, 2], b[1, 1] = 1.5e-5, 1e-5
    w_in.sip = Sip(a, b, None, None, w_in.wcs.crpix)
    w_in.wcs.set()
    data = rng.normal(100, 5, (100, 120)) + _gaussian((100, 120), 61.3, 48.2, 5e3)
    frame = _frame(data, w_in, sigma=5.0)
    w_out = _wcs(crpix=(70.0, 64.0), rotation_deg=12.0, scale_arcsec=0.8)
    out = resample_to_target(frame, w_out, (130, 150), interpolation=interpolation)
    assert out.meta["SSRESAMP"] == "warp"
    reference, footprint = reproject_interp((data.astype(np.float32), w_in), w_out,
                                            shape_out=(130, 150), order=interpolation)
    assert np.array_equal(out.mask, ~np.isfinite(reference))
    good = ~out.mask
    assert np.max(np.abs(out.data[good] - reference[good])) < 1e-3  # of data ~100
