"""The command line's default output size around the target, --size full, the preview zoom."""

import re

import numpy as np
import pytest
from astropy import units as u
from astropy.time import Time
from astropy.wcs.utils import proj_plane_pixel_scales
from matplotlib.image import imread

import shiftstack_ccd as ss
from shiftstack_ccd._auto_size import MARGIN_FWHM, MIN_SIZE
from shiftstack_ccd._cutout import zoom_cut
from shiftstack_ccd.cli import main
from shiftstack_ccd.stars import stellar_fwhm
from shiftstack_ccd.visualization import write_preview


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """Six 300x300 frames; the target moves ~30 px across them."""
    folder = tmp_path_factory.mktemp("field")
    sim = ss.simulate_observation(n_frames=6, shape=(300, 300), n_stars=60, target_snr=30,
                                  fwhm=3.0, seed=21,
                                  target_rate=(60.0, -40.0) * u.arcsec / u.hour)
    paths = [str(p) for p in sim.write(folder / "frames")]
    eph = folder / "eph.ecsv"
    sim.ephemeris.write(eph)
    return sim, paths, eph


def test_default_size_follows_the_path_and_the_psf(field, tmp_path, capsys):
    sim, paths, eph = field
    out = tmp_path / "stack.fits"
    assert main(["stack", *paths, "--ephemeris", str(eph), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    n = int(re.search(r"output size: (\d+) x \1 px", text).group(1))
    # the rule, computed here from the frames themselves
    frames = [ss.read_frame(p) for p in paths]
    times = Time([ss.mid_exposure_time(f) for f in frames])
    ends = sim.ephemeris.at(Time([times.min(), times.max()]))
    scale = np.mean(proj_plane_pixel_scales(frames[len(frames) // 2].wcs)) * 3600
    path_px = ends[0].separation(ends[1]).arcsec / scale
    fwhm = stellar_fwhm(frames[len(frames) // 2])
    expected = max(MIN_SIZE, int(np.ceil(path_px + 2 * MARGIN_FWHM * fwhm)))
    expected += 1 - expected % 2
    assert path_px > 20  # the path counts: a moving target, not a fixed margin
    assert n == expected and n < 300
    result = ss.StackResult.read(out)
    assert result.stack.shape == (n, n)
    x, y = ss.centroid_target(result.stack, ((n - 1) / 2, (n - 1) / 2))
    assert abs(x - (n - 1) / 2) < 0.1 and abs(y - (n - 1) / 2) < 0.1


def test_size_full_is_every_pixel_of_every_frame(field, tmp_path, capsys):
    sim, paths, eph = field
    out = tmp_path / "full.fits"
    assert main(["stack", *paths, "--ephemeris", str(eph), "--size", "full", "--no-sky",
                 "-o", str(out), "-q"]) == 0
    assert "output size" not in capsys.readouterr().out
    full = ss.shift_and_stack(paths, sim.ephemeris, size=None, sky_stack=False)
    assert ss.StackResult.read(out).stack.shape == full.stack.shape
    assert full.stack.shape[0] > 300  # the frames' footprints around the moving target


@pytest.mark.parametrize("value", ["0", "-5", "big", "3.5"])
def test_bad_size_is_a_usage_error(field, tmp_path, capsys, value):
    _, paths, eph = field
    assert main(["stack", *paths, "--ephemeris", str(eph), "--size", value,
                 "-o", str(tmp_path / "x.fits")]) == 2
    err = capsys.readouterr().err
    assert "--size" in err and "'full'" in err
    assert not (tmp_path / "x.fits").exists()


def test_help_states_the_size_rule(capsys):
    assert main(["stack", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "'full'" in text and f"{MARGIN_FWHM} stellar FWHM" in text


def test_zoom_cut_and_mark():
    image = np.zeros((80, 120))
    yy, xx = np.mgrid[:80, :120]
    image += np.exp(-((xx - 60.3) ** 2 + (yy - 40.7) ** 2) / 4)
    cut, mark = zoom_cut(image, (60.3, 40.7), 10)
    assert cut.shape == (21, 21)
    assert mark == pytest.approx((10.3, 9.7))  # centred on the nearest pixel, (60, 41)
    assert np.unravel_index(np.argmax(cut), cut.shape) == (10, 10)  # (y, x) of the peak
    cut, mark = zoom_cut(image, (3.0, 75.0), 10)  # clipped at the edges, the mark follows
    assert cut.shape == (15, 14) and mark == pytest.approx((3.0, 10.0))


def test_preview_gets_a_zoom_panel(tmp_path):
    image = np.random.default_rng(2).normal(size=(101, 101))
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    write_preview(one, [image, image], marks=[(50, 50), None])
    write_preview(two, [image, image], marks=[(50, 50), None], zoom=20)
    # panels are 4 inches wide each: a third panel, the zoom
    assert imread(two).shape[1] == pytest.approx(imread(one).shape[1] * 3 / 2, abs=2)
