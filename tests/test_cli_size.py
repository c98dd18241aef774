"""The command line's default output size around the target, --size full, the preview zoom."""

import re

import numpy as np
import pytest
from astropy import units as u
from astropy.time import Time
from astropy.wcs.utils import proj_plane_pixel_scales
from matplotlib.image import imread

import shiftstack_ccd as ss
from shiftstack_ccd._auto_size import (MARGIN_FWHM, MIN_NSIGMA, MIN_SIZE, PSF_STAR_NSIGMA,
                                       PSF_STARS)
from shiftstack_ccd._cutout import zoom_cut
from shiftstack_ccd.cli import main
from shiftstack_ccd.pipeline import PipelineError, load_pipeline
from shiftstack_ccd.stars import detect_stars, stellar_fwhm
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
    middle = frames[len(frames) // 2]
    fwhm = stellar_fwhm(middle)
    by_path = int(np.ceil(path_px + 2 * MARGIN_FWHM * fwhm))
    # grown to hold PSF_STARS stars bright enough in the stack for the PSF fit, with their
    # fit boxes: the PSF_STARS-th nearest (square distance) from the target on the middle frame
    stars = detect_stars(middle, threshold=max(MIN_NSIGMA, PSF_STAR_NSIGMA / np.sqrt(6)),
                         fwhm=fwhm, max_stars=10 ** 6)
    cx, cy = middle.wcs.world_to_pixel(sim.ephemeris.at(ss.mid_exposure_time(middle)))
    reach = np.sort(np.maximum(np.abs(stars["x"] - cx), np.abs(stars["y"] - cy)))
    by_stars = int(np.ceil(2 * (reach[PSF_STARS - 1] + 3 * fwhm))) + 1
    expected = max(MIN_SIZE, by_path, by_stars)
    expected += 1 - expected % 2
    assert path_px > 20  # the path counts: a moving target, not a fixed margin
    assert n == expected and n < 300
    assert f"grown to hold {PSF_STARS} PSF stars" in text
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


# ---------------------------------------------------------------------------------------
# Pipeline files: the same default when [stack] has no size, size = "full" for the field
# ---------------------------------------------------------------------------------------
def _pipeline(folder, paths, eph, size_line=""):
    files = ", ".join(repr(str(p)) for p in paths)
    path = folder / "pipeline.toml"
    path.write_text(f'[inputs]\nfiles = [{files}]\n\n[motion]\nephemeris = {str(eph)!r}\n\n'
                    f'[stack]\nmethod = "mean"\n{size_line}\n\n'
                    f'[output]\nstack = "out/stack.fits"\n')
    return path


def _cli_default_size(paths, eph, folder, capsys):
    """The size `shiftstack-ccd stack` chooses without --size (and checks it made it)."""
    out = folder / "cli.fits"
    assert main(["stack", *paths, "--ephemeris", str(eph), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    n = int(re.search(r"output size: (\d+) x \1 px", text).group(1))
    assert ss.StackResult.read(out).stack.shape == (n, n)
    return n, _verdict(text)


def _verdict(text):
    """The command's last word on the target ('target: detected at ...', or why not)."""
    return [line for line in text.splitlines() if line.startswith("target")]


def test_run_without_size_uses_the_stack_default(field, tmp_path, capsys):
    sim, paths, eph = field
    n, verdict = _cli_default_size(paths, eph, tmp_path, capsys)
    toml = _pipeline(tmp_path, paths, eph)
    assert main(["run", str(toml), "--check"]) == 0
    checked = " ".join(capsys.readouterr().out.split())
    assert f"output size (no [stack] size): the target's path across the frames plus " \
           f"{MARGIN_FWHM} stellar FWHM" in checked
    assert main(["run", str(toml)]) == 0
    text = capsys.readouterr().out
    assert f"output size: {n} x {n} px (no [stack] size: path " in text
    assert len(verdict) == 1 and _verdict(text) == verdict  # the same stack, the same line
    stack = ss.StackResult.read(tmp_path / "out" / "stack.fits").stack
    assert stack.shape == (n, n) and n < 300  # a cut-out, not the 300 x 300+ field
    # on the target, as the command line's stack: the centroid on the centre pixel
    x, y = ss.centroid_target(stack, ((n - 1) / 2, (n - 1) / 2))
    assert abs(x - (n - 1) / 2) < 0.1 and abs(y - (n - 1) / 2) < 0.1
    # and from Python the same (run_pipeline is what the command runs)
    pipeline = load_pipeline(toml, overwrite=True)
    size, why = pipeline.output_size()
    assert size == n and why.startswith("no [stack] size: path ")


def test_run_size_full_is_every_pixel_of_every_frame(field, tmp_path, capsys):
    sim, paths, eph = field
    toml = _pipeline(tmp_path, paths, eph, 'size = "Full"')
    assert main(["run", str(toml)]) == 0
    assert 'output size: the whole field ([stack] size = "full")' in capsys.readouterr().out
    full = ss.shift_and_stack(paths, sim.ephemeris, size=None, sky_stack=False)
    stack = ss.StackResult.read(tmp_path / "out" / "stack.fits").stack
    assert stack.shape == full.stack.shape and stack.shape[0] > 300
    # the same stack, to float32 rounding (the file's data are float32)
    np.testing.assert_allclose(stack.data, full.stack.data, rtol=0, atol=1e-5)


def test_run_size_given_is_used_as_it_is(field, tmp_path, capsys):
    _, paths, eph = field
    toml = _pipeline(tmp_path, paths, eph, "size = 51")
    assert main(["run", str(toml)]) == 0
    assert "output size: 51 x 51 px ([stack] size)" in capsys.readouterr().out
    assert ss.StackResult.read(tmp_path / "out" / "stack.fits").stack.shape == (51, 51)


@pytest.mark.parametrize("line", ['size = "fulll"', "size = 0", 'size = "3 m"'])
def test_run_bad_size_is_refused_before_any_work(field, tmp_path, capsys, line):
    _, paths, eph = field
    toml = _pipeline(tmp_path, paths, eph, line)
    with pytest.raises(PipelineError, match=r"line 9: \[stack\] size: .*size = \"full\""):
        load_pipeline(toml)
    assert main(["run", str(toml)]) == 1
    err = capsys.readouterr().err
    assert "[stack] size" in err and '"full"' in err
    assert not (tmp_path / "out").exists()


def test_help_of_run_states_the_size_rule_and_main_help_points_to_the_demo(capsys):
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"{MARGIN_FWHM} stellar FWHM" in text and 'size = "full"' in text
    assert main(["--help"]) == 0
    assert "'shiftstack-ccd demo' runs the whole chain offline" in \
        " ".join(capsys.readouterr().out.split())


def test_run_size_none_is_the_whole_field_too(field, tmp_path):
    """"none" gives any parameter of a pipeline file its None; shift_and_stack's size=None
    is the whole field, so it means "full"."""
    _, paths, eph = field
    size, why = load_pipeline(_pipeline(tmp_path, paths, eph, 'size = "none"')).output_size()
    assert size is None and why == '[stack] size = "full"'


def test_check_says_where_the_motion_comes_from(field, tmp_path):
    _, paths, _ = field
    files = ", ".join(repr(str(p)) for p in paths)
    toml = tmp_path / "linear.toml"
    toml.write_text(f'[inputs]\nfiles = [{files}]\n\n[motion]\nlinear = {{ ra = 150.0, '
                    'dec = 20.0, epoch = "2026-03-01T04:00:00", ra_rate = 60.0, '
                    'dec_rate = -40.0 }\n\n[output]\nstack = "out/stack.fits"\n')
    assert "motion: linear motion from linear.toml" in load_pipeline(toml).describe()
