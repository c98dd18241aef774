"""The axis-by-axis zoom of a background mesh gives scipy's (and photutils') numbers."""

import numpy as np
import pytest
from astropy.nddata import CCDData
from astropy.stats import SigmaClip
from scipy.ndimage import zoom

from shiftstack_ccd._zoom import zoom_grid
from shiftstack_ccd.background import background_model


@pytest.mark.parametrize("mesh, factor, order, mode", [
    ((6, 6), 64, 3, "reflect"), ((22, 23), 64, 3, "reflect"), ((2, 2), 40, 3, "reflect"),
    ((1, 5), 32, 3, "reflect"), ((3, 1), 32, 1, "nearest"), ((6, 6), 64, 1, "nearest")])
def test_zoom_grid_is_scipys_zoom(mesh, factor, order, mode):
    rng = np.random.default_rng(3)
    grid = rng.normal(5000.0, 30.0, mesh)
    shape = (mesh[0] * factor - 7, mesh[1] * factor - 3)  # cropped, as a padded mesh is
    expected = zoom(grid, factor, order=order, mode=mode, grid_mode=True)[:shape[0], :shape[1]]
    assert np.abs(zoom_grid(grid, factor, shape, order, mode) - expected).max() < 1e-9


def test_background_model_is_photutils_background():
    from photutils.background import Background2D, MedianBackground
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:331, 0:332]
    sky = 2700.0 + 0.05 * xx - 0.03 * yy + 1e-4 * (xx - 160.0) ** 2
    data = sky + rng.normal(0.0, 17.0, sky.shape)
    data[100:104, 200:204] += 5000.0  # a star, masked
    mask = np.zeros(sky.shape, bool)
    mask[96:108, 196:208] = True
    model, cards = background_model(CCDData(data, unit="adu"), mask=mask)
    expected = Background2D(np.where(mask, 0.0, data), 64, mask=mask, filter_size=1,
                            exclude_percentile=50, sigma_clip=SigmaClip(sigma=3.0, maxiters=5),
                            bkg_estimator=MedianBackground()).background
    assert np.abs(model - expected).max() < 1e-9 * 2700
    assert dict((key, value) for key, value, _ in cards)["SSBKGBOX"] == 64
    # and it is the sky: the model follows the gradient to well under the noise
    assert np.abs(model - sky)[32:-32, 32:-32].max() < 5.0
