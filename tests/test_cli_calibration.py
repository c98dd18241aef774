"""``shiftstack-ccd stack`` on raw frames: --bias/--dark/--flat, --gain/--read-noise,
--background, --scale and --weights snr (the same calibration functions as pipeline files)."""

import glob

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table

import shiftstack_ccd as ss
from shiftstack_ccd.calibration import calibrate_from_header, read_masters
from shiftstack_ccd.cli import main

EPHEMERIS = "tests/data/ephemerides/lowell5945_linear.ecsv"


def test_stack_calibrates_raw_lowell_frames(shared_data, tmp_path, digests):
    folder = shared_data("lowell42-5945")
    raws = sorted(glob.glob(str(folder / "5945" / "*.fits")))
    bias = glob.glob(str(folder / "zero" / "*.fits"))
    flat = glob.glob(str(folder / "flat" / "*.fits"))
    before = digests(raws + bias + flat)
    out = tmp_path / "stack.fits"
    assert main(["stack", *raws, "--ephemeris", EPHEMERIS, "--size", "101", "--bias", *bias,
                 "--flat", *flat, "--gain", "4.95", "--read-noise", "9.3", "-o",
                 str(out)]) == 0
    assert digests(raws + bias + flat) == before
    table = Table.read(out, hdu="FRAMES")
    # overscan, bias and flat applied by the step: no bias left for the noise model, and the
    # sky is the raw sky minus the bias level, divided by the normalised flat
    assert set(table["bias_source"]) == {"none"} and np.all(table["bias"] == 0)
    raw = fits.getdata(raws[0]).astype(float)
    overscan = np.median(raw[:, 1387:1432])
    masters = read_masters(bias=bias, flat=flat)
    expected = calibrate_from_header(CCDData(raw, unit="adu", meta=fits.getheader(raws[0])),
                                     bias=masters["bias"], flat=masters["flat"])
    assert expected.shape == (1370, 1365)
    assert float(table["sky_level"][0]) == pytest.approx(np.median(expected.data[600:800,
                                                                                 600:800]),
                                                         rel=0.03)
    assert float(table["sky_level"][0]) < np.median(raw[600:800, 600:800]) - 0.8 * overscan
    assert np.all((table["noise_ratio"] > 0.9) & (table["noise_ratio"] < 1.2))
    header = fits.getheader(out)
    assert header["SSBKG"] == "Background2D" and header["SSNOISE"] == "detector"


def test_stack_background_none_scale_and_snr_weights(tmp_path):
    sim = ss.simulate_observation(n_frames=5, shape=(160, 160), n_stars=80,
                                  star_flux_range=(5e3, 5e5), transparency=[1, .8, .9, .7, 1],
                                  with_uncertainty=False, cosmic_rays=False, seed=5)
    paths = sim.write(tmp_path / "frames")
    sim.ephemeris.write(tmp_path / "eph.ecsv")
    out = tmp_path / "stack.fits"
    assert main(["stack", *map(str, paths), "--ephemeris", str(tmp_path / "eph.ecsv"),
                 "--background", "none", "--scale", "stars", "--weights", "snr", "-o",
                 str(out)]) == 0
    header = fits.getheader(out)
    assert header["SSBKG"] == "none" and header["SSSCALE"] == "stars"
    table = Table.read(out, hdu="FRAMES")
    truth = np.array([1, .8, .9, .7, 1]) / 0.9
    assert np.allclose(table["flux_scale"], truth, rtol=0.01)
