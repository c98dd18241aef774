"""StackResult.write / read round trip for data in electrons (HST, JWST) as well as ADU."""

import numpy as np
import pytest
from astropy import units as u

import shiftstack_ccd as ss
from shiftstack_ccd.stack import StackResult


@pytest.mark.parametrize("unit", ["adu", "electron"])
def test_write_read_keeps_the_unit_of_both_stacks(tmp_path, unit):
    sim = ss.datasets.simulate_observation(n_frames=3, shape=(64, 64), n_stars=5,
                                           target_snr=10.0, unit=unit, cosmic_rays=False,
                                           seed=4)
    frames = sim.frames
    if unit == "electron":  # count rates, as in HST drizzled products
        frames = [f.divide(f.header["EXPTIME"] * u.s, handle_meta="first_found") for f in frames]
    result = ss.shift_and_stack(frames, sim.ephemeris, method="mean", size=31)
    path = tmp_path / "stack.fits"
    result.write(path)
    back = StackResult.read(path)
    expected = u.Unit(unit) if unit == "adu" else u.electron / u.s
    assert back.stack.unit == expected and back.sky_stack.unit == expected
    np.testing.assert_allclose(back.sky_stack.data, result.sky_stack.data, rtol=1e-6)
