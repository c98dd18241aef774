"""TOML pipeline files: validation with line numbers, ccdproc calibration, the Lowell example."""

import doctest
import re
import hashlib
import shutil
import sys
import textwrap
from pathlib import Path

import ccdproc
import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.time import Time

import shiftstack_ccd as ss
from shiftstack_ccd.cli import main
from shiftstack_ccd.stars import measure_fwhm
from shiftstack_ccd.pipeline import PipelineError, load_pipeline, run_pipeline
from shiftstack_ccd.steps import ENTRY_POINT_GROUP

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "lowell.toml"


def write_toml(folder, text, name="pipeline.toml"):
    path = Path(folder) / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def sim_dir(tmp_path):
    """Four calibrated simulated frames and their ephemeris table, in tmp_path."""
    sim = ss.simulate_observation(n_frames=4, shape=(96, 96), n_stars=15, target_snr=40,
                                  seed=11)
    sim.write(tmp_path / "frames")
    sim.ephemeris.write(tmp_path / "eph.ecsv")
    return sim, tmp_path


SIM_PIPELINE = """
    [inputs]
    files = "frames/*.fits"

    [[steps]]
    step = "clean_cosmic_rays"
    method = "median"
    threshold = 5

    [motion]
    ephemeris = "eph.ecsv"

    [stack]
    method = "median"
    size = 41

    [output]
    stack = "out/stack.fits"
    preview = "out/stack.png"
"""


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------
def test_cli_run_relative_paths_inputs_untouched(sim_dir, tmp_path, monkeypatch, capsys,
                                                 digests):
    sim, folder = sim_dir
    toml = write_toml(folder, SIM_PIPELINE)
    inputs = sorted((folder / "frames").glob("*.fits")) + [folder / "eph.ecsv"]
    before = digests(inputs)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # paths in the file are relative to the file, not the cwd
    assert main(["run", str(toml)]) == 0
    out = capsys.readouterr().out
    assert "4 frames stacked" in out and "wrote" in out
    assert digests(inputs) == before
    assert list(elsewhere.iterdir()) == []
    result = ss.StackResult.read(folder / "out" / "stack.fits")
    assert (folder / "out" / "stack.png").stat().st_size > 0
    h = result.stack.meta
    assert h["NCOMBINE"] == 4 and h["SSCOMB"] == "median" and h["SSPIPE"] == "pipeline.toml"
    assert any("clean_cosmic_rays(method='median', threshold=5.0)" in str(line)
               for line in h["HISTORY"])
    # the step ran on every frame: each recorded its count of flagged pixels
    assert np.all(np.isfinite(result.table["cr_flagged"]))
    assert result.table["cr_flagged"].sum() > 0
    x, y = ss.centroid_target(result.stack, (20, 20))
    assert abs(x - 20) < 0.1 and abs(y - 20) < 0.1
    # a second run refuses to overwrite, before any work, and leaves the file as it was
    stack_bytes = (folder / "out" / "stack.fits").read_bytes()
    assert main(["run", str(toml)]) == 1
    err = capsys.readouterr().err
    assert "line 17: stack = 'out/stack.fits' exists" in err and "--overwrite" in err
    assert (folder / "out" / "stack.fits").read_bytes() == stack_bytes
    assert main(["run", str(toml), "--overwrite"]) == 0


def test_cli_run_check_validates_only(sim_dir, capsys):
    sim, folder = sim_dir
    toml = write_toml(folder, SIM_PIPELINE)
    assert main(["run", str(toml), "--check"]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "4 input frames" in out
    assert "step: clean_cosmic_rays(method='median', threshold=5.0)" in out
    assert not (folder / "out").exists()


def test_image_file_collection_filters(sim_dir):
    """``directory`` + ``filters``: only the frames whose header cards match are used."""
    sim, folder = sim_dir
    frames = folder / "frames"
    # a frame of another object in the same folder, which the filter must leave out
    with fits.open(frames / "sim_000.fits") as hdul:
        hdul[0].header["OBJECT"] = "SOMETHING ELSE"
        hdul.writeto(frames / "other.fits")
    toml = write_toml(folder, """
        [inputs]
        directory = "frames"
        filters = { imagetyp = "object", object = "SIMULATED TARGET" }

        [motion]
        ephemeris = "eph.ecsv"

        [stack]
        size = 31
        sky_stack = false

        [output]
        stack = "stack.fits"
    """)
    pipeline = load_pipeline(toml)
    assert [p.name for p in pipeline.files] == [f"sim_{i:03d}.fits" for i in range(4)]
    run = pipeline.run()
    assert run.result.stack.meta["NCOMBINE"] == 4 and run.result.sky_stack is None
    toml.write_text(toml.read_text().replace('"SIMULATED TARGET"', '"NOBODY"'))
    with pytest.raises(PipelineError, match="line 3: no file in 'frames' has imagetyp = "
                                            "'object', object = 'NOBODY'"):
        load_pipeline(toml)


def test_linear_motion_and_environment_variables(sim_dir, monkeypatch):
    """A TOML date-time epoch, ``${VAR}`` in paths; the stack equals the table's."""
    sim, folder = sim_dir
    monkeypatch.setenv("SS_TEST_FRAMES", str(folder / "frames"))
    ra, dec = float(sim.target_position.ra.deg), float(sim.target_position.dec.deg)
    ra_rate = float(sim.ra_rate.to_value(u.arcsec / u.hour))
    dec_rate = float(sim.dec_rate.to_value(u.arcsec / u.hour))
    linear = (f"ra = {ra!r}, dec = {dec!r}, epoch = {sim.epoch.isot}Z, ra_rate = {ra_rate!r}, "
              f"dec_rate = {dec_rate!r}")  # a TOML date-time, with its Z
    toml = write_toml(folder, f"""
        [inputs]
        files = ["${{SS_TEST_FRAMES}}/sim_00[0-1].fits", "${{SS_TEST_FRAMES}}/sim_00[2-3].fits"]

        [motion]
        linear = {{ {linear} }}

        [stack]
        size = 31
        pixel_scale = "0.5 arcsec"
        reference_time = "{sim.epoch.isot}"

        [output]
        stack = "linear.fits"
    """)
    run = run_pipeline(toml)
    eph = load_pipeline(toml, overwrite=True).motion["ephemeris"]
    times = sim.truth["time"]
    assert np.all(eph.at(times).separation(sim.target_at(times)) < 1e-4 * u.arcsec)
    table_run = ss.shift_and_stack(sim.frames, sim.ephemeris, size=31,
                                   pixel_scale=0.5 * u.arcsec, reference_time=sim.epoch)
    assert np.allclose(run.result.stack.data, table_run.stack.data, rtol=0, atol=1e-4,
                       equal_nan=True)
    monkeypatch.delenv("SS_TEST_FRAMES")
    with pytest.raises(PipelineError, match="line 2: .*the environment variable "
                                            "SS_TEST_FRAMES is not set"):
        load_pipeline(toml, overwrite=True)


def test_horizons_motion_one_request(shared_data, transport, tmp_path, monkeypatch):
    """``horizons = {...}``: asked once, for the frames' times (HTTP mocked, recorded reply)."""
    monkeypatch.setenv("SHIFTSTACK_CCD_CACHE", str(tmp_path / "cache"))
    recorded = shared_data("ephemerides/astroquery_jplhorizons/ceres_ephemerides_range.txt")
    transport.answer = Path(recorded).read_text()
    start = Time("2022-06-20T02:00:00", scale="utc")
    sim = ss.simulate_observation(n_frames=3, shape=(64, 64), n_stars=5, seed=2, start=start,
                                  center=ss.Ephemeris.from_table(recorded).at(start + 5 * u.min))
    sim.write(tmp_path / "frames")
    toml = write_toml(tmp_path, """
        [inputs]
        files = "frames/*.fits"

        [motion]
        horizons = { target = "Ceres", location = "688", id_type = "smallbody" }

        [stack]
        size = 21

        [output]
        stack = "ceres.fits"
    """)
    pipeline = load_pipeline(toml)
    assert transport.urls == []  # validation asks nothing
    run = pipeline.run()
    assert len(transport.urls) == 1 and transport.params()["CENTER"] == "'688'"
    h = run.result.stack.meta
    assert h["EPHKIND"] == "horizons" and h["EPHLOC"] == "688" and h["NCOMBINE"] == 3


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------
def test_every_problem_reported_with_its_line_before_any_work(sim_dir, monkeypatch):
    sim, folder = sim_dir

    def no_reading(*args, **kwargs):
        raise AssertionError("a frame was read before the file was validated")

    monkeypatch.setattr(ss.frames, "read_frame", no_reading)
    toml = write_toml(folder, """
        [inputs]
        files = ["frames/*.fits", "frames/missing.fits"]
        hdu = 0.5

        [calibration]
        overscan = "header:BIASSEC"
        trim = "[1:10, 1:x]"
        bias = "zero.fits"
        gain = 2

        [[steps]]
        step = "clean_cosmic_ray"

        [[steps]]
        step = "clean_cosmic_rays"
        treshold = 5
        method = "lacosmik"
        min_fwhm = "1.5"
        gain = "four"

        [[steps]]
        step = "combine_frames"

        [motion]
        ephemeris = "eph.ecsv"
        linear = { ra = 1, dec = 2 }

        [stack]
        sigma_clip = 1
        orientation = "nort"
        pixel_scale = 0.5
        frames = "x"

        [output]
        stack = "out/stack.png"
        extra = 1

        [unknown]
        a = 1
    """)
    with pytest.raises(PipelineError) as info:
        load_pipeline(toml)
    problems = dict(info.value.problems)
    expected = {
        2: "files: 'frames/missing.fits' does not exist",
        3: "hdu must be an integer or an extension name, not the number 0.5",
        6: "overscan = 'header:BIASSEC': 4 file(s) have no BIASSEC card",
        7: "trim = '[1:10, 1:x]' is not a FITS section",
        8: "bias: 'zero.fits' does not exist",
        9: "gain needs read_noise too",
        12: "no step named 'clean_cosmic_ray'; did you mean 'clean_cosmic_rays'?",
        16: "clean_cosmic_rays has no parameter 'treshold'; did you mean 'threshold'?",
        17: "method must be one of 'median', 'lacosmic', not 'lacosmik'; did you mean "
            "'lacosmic'?",
        18: "clean_cosmic_rays: min_fwhm must be a number, not the string '1.5'",
        19: "clean_cosmic_rays: gain = 'four' is not a quantity",
        22: "combine_frames is a stack step, not a per-frame step",
        24: "[motion] needs exactly one of ephemeris",
        29: "[stack]: sigma_clip must be a boolean, not the integer 1",
        30: "[stack]: orientation must be one of 'north', 'first', not 'nort'",
        31: "[stack]: pixel_scale must be a quantity such as '1.5 arcsec' or 'none' (for None), "
            "not the number 0.5",
        32: "frames is set by [inputs], not in [stack]",
        35: "stack = 'out/stack.png' should end in .fits",
        36: "unknown key 'extra' in [output]",
        38: "unknown section [unknown]",
    }
    for line, text in expected.items():
        assert line in problems, (line, text, problems)
        assert text in problems[line], (line, problems[line])
    assert sorted(problems) == sorted(expected)
    # one message holds them all, each on its own line
    message = str(info.value)
    assert message.startswith(f"{toml}: 20 problems (nothing was run):")
    assert message.count("\n  line ") == 20
    assert not (folder / "out").exists()


def test_parameter_types_are_the_steps_annotations(sim_dir, tmp_path, monkeypatch):
    """--check takes each parameter's type from the step's annotations: a union with None,
    a Literal of strings, a Literal beside an array; a plug-in's too."""
    sim, folder = sim_dir
    plugin = tmp_path / "annotated_step.py"
    plugin.write_text(textwrap.dedent("""
        from typing import Literal

        def tilt(ccd, axis: Literal["x", "y"] = "x", amount: float | None = None,
                 label: str = "tilt"):
            \"\"\"Add a gradient (a test step).\"\"\"
            return ccd.copy()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(ss.steps.BUILTIN_STEPS, "tilt", ("annotated_step:tilt", "frame"))
    toml = write_toml(folder, """
        [inputs]
        files = "frames/*.fits"

        [[steps]]
        step = "tilt"
        axis = "z"
        amount = "lots"
        label = 3

        [[steps]]
        step = "clean_cosmic_rays"
        iterations = 2.5
        sharpness = true

        [motion]
        ephemeris = "eph.ecsv"

        [stack]
        weights = "exptime"
        frame_weights = "inverse-variance"

        [output]
        stack = "out/stack.fits"
    """)
    with pytest.raises(PipelineError) as info:
        load_pipeline(toml)
    problems = dict(info.value.problems)
    expected = {
        6: "tilt: axis must be one of 'x', 'y', not 'z'",
        7: "tilt: amount must be a number or 'none' (for None), not the string 'lots'",
        8: "tilt: label must be a string, not the integer 3",
        12: "clean_cosmic_rays: iterations must be an integer or 'none' (for None), not the "
            "number 2.5",
        13: "clean_cosmic_rays: sharpness must be a number or 'none' (for None), not a boolean",
        20: "[stack]: frame_weights must be one of 'exptime', 'none', not 'inverse-variance'",
    }
    assert sorted(problems) == sorted(expected)  # weights = "exptime" (line 19) is fine
    for line, text in expected.items():
        assert text in problems[line], (line, problems[line])


def test_toml_syntax_error_names_its_line(tmp_path):
    toml = write_toml(tmp_path, """
        [inputs]
        files = "a.fits
    """)
    with pytest.raises(PipelineError, match=r"not valid TOML: .*line 2"):
        load_pipeline(toml)


def test_missing_sections_and_motion_problems(sim_dir):
    sim, folder = sim_dir
    toml = write_toml(folder, """
        [inputs]
        files = "frames/*.fits"

        [motion]
        linear = { ra = 10.0, dec = "north", epoch = "yesterday", ra_rate = 1, speed = 3 }
    """)
    with pytest.raises(PipelineError) as info:
        load_pipeline(toml)
    problems = info.value.problems
    assert (None, "the section [output] is missing (where to write the stack (FITS) and a "
                  "preview (PNG)).") in problems
    texts = [msg for line, msg in problems if line == 5]
    assert any("unknown key 'speed' in linear" in t for t in texts)
    assert any("linear: dec must be a number, not the string 'north'" in t for t in texts)
    assert any("linear: dec_rate is missing" in t for t in texts)
    assert any("epoch = 'yesterday' is not a time" in t for t in texts)
    # a missing ephemeris table, and a Horizons target checked without any query
    toml.write_text('[inputs]\nfiles = "frames/*.fits"\n[motion]\nephemeris = "nope.ecsv"\n'
                    '[output]\nstack = "s.fits"\n')
    with pytest.raises(PipelineError, match="line 4: ephemeris table 'nope.ecsv' does not "
                                            "exist"):
        load_pipeline(toml)
    toml.write_text('[inputs]\nfiles = "frames/*.fits"\n[motion]\nhorizons = { target = '
                    '"5945", location = 688, id_type = "smallbody" }\n[output]\n'
                    'stack = "s.fits"\n')
    with pytest.raises(PipelineError, match="line 4: horizons: location must be a string, "
                                            "not the integer 688"):
        load_pipeline(toml)
    toml.write_text(toml.read_text().replace("688", '"688"'))
    pipeline = load_pipeline(toml)
    assert pipeline.motion == {"horizons": {"target": "5945", "location": "688",
                                            "id_type": "smallbody"}}


# --------------------------------------------------------------------------------------
# A third-party step, found through its distribution's entry point
# --------------------------------------------------------------------------------------
PLUGIN = '''
    from astropy.nddata import StdDevUncertainty


    def scale_frame(ccd, factor: float = 2.0):
        """Multiply a frame by a factor (a test step)."""
        out = ccd.copy()
        out.data = ccd.data * factor
        if ccd.uncertainty is not None:
            out.uncertainty = StdDevUncertainty(ccd.uncertainty.array * factor)
        out.meta["SCALEFAC"] = factor
        return out
'''


def test_third_party_step_in_a_pipeline(sim_dir, tmp_path, monkeypatch):
    sim, folder = sim_dir
    site = tmp_path / "site"
    (site / "ss_pipeline_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "ss_pipeline_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (site / "ss_pipeline_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ss-pipeline-plugin\nVersion: 0.1\n")
    (site / "ss_pipeline_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nscale_frame = ss_pipeline_plugin:scale_frame\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "ss_pipeline_plugin", raising=False)
    text = """
        [inputs]
        files = "frames/*.fits"

        [[steps]]
        step = "scale_frame"
        factor = FACTOR

        [motion]
        ephemeris = "eph.ecsv"

        [stack]
        size = 31
        sky_stack = false

        [output]
        stack = "scaled.fits"
    """
    toml = write_toml(folder, text.replace("FACTOR", '"three"'))
    # its parameter's type comes from its annotation
    with pytest.raises(PipelineError, match="line 6: scale_frame: factor must be a number, "
                                            "not the string 'three'"):
        load_pipeline(toml)
    toml = write_toml(folder, text.replace("FACTOR", "3"))
    run = run_pipeline(toml)
    assert all(f.meta["SCALEFAC"] == 3.0 for f in run.pipeline.frames())
    # the files hold no uncertainty: each frame gets its sky noise, three times larger
    plain = ss.shift_and_stack(ss.read_frames(folder / "frames"), sim.ephemeris, size=31,
                               sky_stack=False)
    good = np.isfinite(plain.stack.data)
    assert np.allclose(run.result.stack.data[good], 3 * plain.stack.data[good], rtol=1e-5,
                       atol=1e-3)
    assert np.allclose(run.result.stack.uncertainty.array[good],
                       3 * plain.stack.uncertainty.array[good], rtol=1e-5)


# --------------------------------------------------------------------------------------
# ccdproc calibration, on raw frames made from simulated ones
# --------------------------------------------------------------------------------------
PRESCAN, OVERSCAN, FLAT_COUNTS = 5, 10, 20000.0


def _flat_pattern(shape):
    ny, nx = shape
    y, x = np.indices(shape)
    flat = 1 + 0.15 * (x - nx / 2) / nx + 0.05 * (y - ny / 2) / ny
    r = np.hypot(x - 20, y - 44)
    flat *= 1 - 0.06 * np.exp(-((r - 6) / 1.5) ** 2)  # a dust ring
    return flat / flat.mean()


def _raw(image, level, bias_pattern):
    """An image with a prescan, an overscan and a per-row overscan level, like a CCD."""
    ny, nx = image.shape
    raw = np.zeros((ny, PRESCAN + nx + OVERSCAN), dtype=np.float32)
    raw[:] = level[:, None]
    raw[:, PRESCAN:PRESCAN + nx] += image + bias_pattern
    return raw


@pytest.fixture
def raw_dir(tmp_path):
    sim = ss.simulate_observation(n_frames=4, shape=(64, 64), n_stars=10, target_snr=40,
                                  gain=2.0, read_noise=5.0, cosmic_rays=False, seed=3)
    ny, nx = sim.frames[0].shape
    flat = _flat_pattern((ny, nx))
    bias_pattern = np.broadcast_to(3.0 * np.sin(np.arange(nx) / 3.0), (ny, nx))
    rows = np.arange(ny)
    sections = {"BIASSEC": f"[{PRESCAN + nx + 1}:{PRESCAN + nx + OVERSCAN},1:{ny}]",
                "TRIMSEC": f"[{PRESCAN + 1}:{PRESCAN + nx},1:{ny}]"}
    (tmp_path / "raw").mkdir()
    for i, frame in enumerate(sim.frames):
        header = fits.Header(frame.meta)
        del header["SSFILE"]
        header.update(frame.wcs.to_header())
        header["CRPIX1"] += PRESCAN  # the sky is where it was: the pixels moved right
        header.update(sections)
        header["BUNIT"] = "adu"
        raw = _raw(frame.data * flat, 500 + 0.2 * rows + 3 * i, bias_pattern)
        fits.writeto(tmp_path / "raw" / f"raw_{i}.fits", raw, header)
    # the bias says nothing of when it was taken: read as a plain calibration frame
    header = fits.Header(sections)
    header["BUNIT"] = "adu"
    fits.writeto(tmp_path / "bias.fits", _raw(np.zeros((ny, nx)), 480 + 0.2 * rows,
                                              bias_pattern), header)
    header["DATE-OBS"], header["EXPTIME"] = "2024-03-01T01:00:00", 5.0
    fits.writeto(tmp_path / "flat.fits", _raw(FLAT_COUNTS * flat, 490 + 0.1 * rows,
                                              bias_pattern), header)
    sim.ephemeris.write(tmp_path / "eph.ecsv")
    return sim, flat, bias_pattern, tmp_path


def test_ccdproc_calibration_recovers_the_frames(raw_dir, digests, caplog):
    sim, flat, bias_pattern, folder = raw_dir
    toml = write_toml(folder, """
        [inputs]
        files = "raw/raw_*.fits"

        [calibration]
        overscan = "header:BIASSEC"
        trim = "header:TRIMSEC"
        bias = "bias.fits"
        flat = "flat.fits"
        gain = "header:GAIN"
        read_noise = 5.0

        [motion]
        ephemeris = "eph.ecsv"

        [stack]
        size = 31

        [output]
        stack = "stack.fits"
    """)
    inputs = sorted(folder.glob("raw/*.fits")) + [folder / "bias.fits", folder / "flat.fits"]
    before = digests(inputs)
    # the message comes from shiftstack_ccd.calibration: the package logger's level, set here
    # (it passed only when an earlier CLI test had left the package logger at INFO)
    with caplog.at_level("INFO", logger="shiftstack_ccd"):
        run = run_pipeline(toml)
    assert digests(inputs) == before
    # the bias, which tells no time, was read as plain pixels; the flat, which does, was not
    plain = [r.getMessage() for r in caplog.records if "plain calibration frame" in r.getMessage()]
    assert len(plain) == 1 and "bias.fits" in plain[0]
    for frame, truth in zip(run.pipeline.frames(), sim.frames):
        # overscan (row by row), trim, bias and flat undone: the simulated frame again
        assert frame.shape == truth.shape
        assert np.max(np.abs(frame.data - truth.data)) < 2e-3  # ADU, float32 rounding
        # the uncertainty is ccdproc.create_deviation's, divided by the flat
        level = truth.data * flat + bias_pattern
        expected = np.sqrt(np.clip(2.0 * level, 0, None) + 5.0 ** 2) / 2.0 / flat
        assert np.allclose(frame.uncertainty.array, expected, rtol=1e-4)
        # the trim moved CRPIX with the pixels: every pixel sees the sky it saw before
        y, x = np.mgrid[0:64:7, 0:64:7]
        sep = frame.wcs.pixel_to_world(x, y).separation(truth.wcs.pixel_to_world(x, y))
        assert np.max(sep.to_value(u.arcsec)) < 1e-6
    h = run.result.stack.meta
    assert h["NCOMBINE"] == 4
    # ccdproc's own keywords, then ours with the values used
    assert "fits_section=[70:79,1:64]" in h["SUBOSCAN"] and "median=True" in h["SUBOSCAN"]
    assert "fits_section=[6:69,1:64]" in h["TRIMIM"]
    assert "gain=2.0 electron / adu" in h["CREATVAR"] and "readnoise=5.0 electron" in h["CREATVAR"]
    assert "SUBBIAS" in h and "FLATCOR" in h
    assert h["SSOSCAN"] == "[70:79,1:64]" and h["SSTRIM"] == "[6:69,1:64]"
    assert h["SSBIAS"] == "bias.fits" and h["SSFLAT"] == "flat.fits"
    assert h["SSGAIN"] == 2.0 and h["SSRDNOIS"] == 5.0
    # the same stack as from the simulated (already calibrated) frames
    plain = ss.shift_and_stack(sim.frames, sim.ephemeris, size=31)
    assert np.allclose(run.result.stack.data, plain.stack.data, rtol=0, atol=5e-3,
                       equal_nan=True)
    x, y = ss.centroid_target(run.result.stack, run.result.target_pixel)
    assert abs(x - 15) < 0.1 and abs(y - 15) < 0.1


def test_calibration_sections_checked_in_every_header(raw_dir):
    sim, flat, bias_pattern, folder = raw_dir
    with fits.open(folder / "raw" / "raw_2.fits", mode="update") as hdul:
        hdul[0].header["TRIMSEC"] = "[6:69;1:64]"
    toml = write_toml(folder, """
        [inputs]
        files = "raw/raw_*.fits"
        [calibration]
        overscan = "header:BIASSEC"
        trim = "header:TRIMSEC"
        gain = "header:EGAIN"
        read_noise = "header:RDNOISE"
        [motion]
        ephemeris = "eph.ecsv"
        [output]
        stack = "stack.fits"
    """)
    with pytest.raises(PipelineError) as info:
        load_pipeline(toml)
    problems = dict(info.value.problems)
    assert "TRIMSEC = '[6:69;1:64]' in" in problems[5] and "raw_2.fits" in problems[5]
    assert "gain = 'header:EGAIN': 4 frame(s) have no EGAIN card" in problems[6]
    assert sorted(problems) == [5, 6]


# --------------------------------------------------------------------------------------
# The example: the real Lowell frames, raw, calibrated and stacked on the asteroid
# --------------------------------------------------------------------------------------
# Dust rings of the flat (trimmed pixels, 0-based): in the raw frames the sky inside the
# ring at radius 12-17 pixels is 2.5 to 4.6 % below the sky inside and outside it.
DUST_RINGS = [(795.2, 271.0), (1042.9, 280.0), (1015.6, 857.9), (459.7, 1219.0)]


def _ring_contrast(image, x0, y0):
    yy, xx = np.indices(image.shape)
    r = np.hypot(xx - x0, yy - y0)
    inner = sigma_clipped_stats(image[r < 7])[1]
    ring = sigma_clipped_stats(image[(r >= 12) & (r < 17)])[1]
    outer = sigma_clipped_stats(image[(r >= 24) & (r < 32)])[1]
    return ring / (0.5 * (inner + outer)) - 1


@pytest.fixture(scope="module")
def lowell_run(tmp_path_factory, shared_data):
    """The example pipeline file, run on the real frames (skipped without them)."""
    folder = shared_data("lowell42-5945")
    tmp = tmp_path_factory.mktemp("lowell")
    shutil.copy(EXAMPLE, tmp / "lowell.toml")
    inputs = sorted(Path(folder).glob("*/*.fits"))
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs}
    run = run_pipeline(tmp / "lowell.toml")
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs}
    # the frames as the stack got them (the run keeps none in memory)
    frames = list(run.pipeline.frames())
    return Path(folder), tmp, run, before == after, frames


def test_lowell_example_pipeline(lowell_run):
    folder, tmp, run, inputs_untouched, frames = lowell_run
    assert inputs_untouched
    result = run.result
    assert run.outputs == {"stack": tmp / "out" / "roachapproach.fits",
                           "preview": tmp / "out" / "roachapproach.png"}

    # the asteroid is on the centre pixel of the stack, as compact as in one frame
    cx, cy = result.target_pixel
    x, y = ss.centroid_target(result.stack, (cx, cy))
    assert abs(x - cx) < 0.15 and abs(y - cy) < 0.15, (x, y)
    grid = result.target_frame
    single = [measure_fwhm(f, grid.target_pixel_in(f, t))
              for f, t in zip(frames, result.table["mid_time"])]
    stacked = measure_fwhm(result.stack, (cx, cy))
    assert abs(stacked / np.median(single) - 1) < 0.10, (stacked, np.median(single))

    # the flat took the dust rings away; in the raw frame they are plain to see
    raw = ss.read_frame(sorted(folder.glob("5945/*.fits"))[0])
    trimmed = ccdproc.trim_image(ccdproc.subtract_overscan(raw, fits_section=raw.meta[
        "BIASSEC"], median=True), fits_section=raw.meta["TRIMSEC"])
    for x0, y0 in DUST_RINGS:
        before_flat = _ring_contrast(trimmed.data, x0, y0)
        after_flat = _ring_contrast(frames[0].data, x0, y0)
        assert before_flat < -0.02 and abs(after_flat) < 0.005, (x0, y0, before_flat,
                                                                 after_flat)
    # the trim moved the WCS with the pixels: a star is where it was on the sky
    star = raw.wcs.pixel_to_world(512.3 + 17, 640.7)
    assert frames[0].wcs.pixel_to_world(512.3, 640.7).separation(star) < 1e-6 * u.arcsec

    # the header says what was done
    with fits.open(run.outputs["stack"]) as hdul:
        h = hdul[0].header
    assert h["NCOMBINE"] == 10 and h["SSPIPE"] == "lowell.toml"
    assert "[1388:1432,1:1370]" in h["SUBOSCAN"] and "[18:1382,1:1370]" in h["TRIMIM"]
    assert "gain=4.95 electron / adu" in h["CREATVAR"] and "SUBBIAS" in h and "FLATCOR" in h
    assert h["SSBIAS"] == "20190326.0001.fits" and h["SSFLAT"] == "20190326.0111.fits"
    assert any("clean_cosmic_rays" in line for line in h["HISTORY"])
    # cosmic rays were found in every frame
    assert np.all(result.table["cr_flagged"] > 100)


def test_lowell_python_script_in_the_docs_gives_the_same_stack(lowell_run, tmp_path,
                                                               monkeypatch):
    """The plain ccdproc script of docs/pipelines.rst is the pipeline file, step for step."""
    folder, _, run, _, frames = lowell_run
    text = (EXAMPLE.parents[1] / "pipelines.rst").read_text()
    section = text[text.index("The same reduction as a Python script"):]
    script = section[section.index(".. doctest-skip::"):]
    examples = doctest.DocTestParser().get_examples(script)
    assert len(examples) > 10
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for example in examples:
        exec(compile(example.source, "pipelines.rst", "exec"), namespace)
    script_result = namespace["result"]
    assert (tmp_path / "roachapproach.fits").is_file()
    assert len(namespace["frames"]) == len(frames) == 10
    for mine, theirs in zip(namespace["frames"], frames):
        assert np.array_equal(mine.data, theirs.data)
        assert np.array_equal(mine.uncertainty.array, theirs.uncertainty.array)
    assert np.array_equal(script_result.stack.data, run.result.stack.data, equal_nan=True)


# ----------------------------------------------------------------------------------------
# A dark, and the sky kept (background = "none"), on the Lowell frames
# ----------------------------------------------------------------------------------------
_LOWELL_MOTION = ('linear = { ra = 124.6279549, dec = 25.3402805, epoch = '
                  '"2019-03-26T03:40:00", ra_rate = 3.7678, dec_rate = -8.2601 }')


def _lowell_dark(folder, path, level, exptime):
    """The night has no dark: the bias frame plus ``level`` adu outside its overscan
    (BIASSEC [1388:1432,1:1370]), which the dark's own overscan subtraction would remove."""
    with fits.open(folder / "zero" / "20190326.0001.fits") as hdul:
        data = hdul[0].data.astype(np.float32)
        header = hdul[0].header.copy()
    data[:, :1387] += level
    for key in ("BZERO", "BSCALE"):
        header.remove(key, ignore_missing=True)
    header["EXPTIME"] = exptime
    header["IMAGETYP"] = header["OBSTYPE"] = "DARK"
    fits.writeto(path, data, header)
    return path


def _lowell_toml(tmp, folder, name, dark=None, stack_extra=""):
    files = ", ".join(f'"{folder}/5945/20190326.{n:04d}.fits"' for n in (135, 136, 137))
    dark_line = f'dark = "{dark}"' if dark else ""
    return write_toml(tmp, f"""
        [inputs]
        files = [{files}]

        [calibration]
        overscan = "header:BIASSEC"
        trim = "header:TRIMSEC"
        bias = "{folder}/zero/20190326.0001.fits"
        {dark_line}

        [motion]
        {_LOWELL_MOTION}

        [stack]
        size = 41
        sky_stack = false
        background = "none"
        {stack_extra}

        [output]
        stack = "{name}.fits"
    """, name=f"{name}.toml")


def test_lowell_dark_scaled_by_exposure_and_sky_kept(shared_data, tmp_path):
    """A 150 s dark of +10 adu takes 20 adu off every pixel of the 300 s frames' stack when
    the sky is kept (background = "none"); the header names the dark."""
    folder = Path(shared_data("lowell42-5945"))
    dark = _lowell_dark(folder, tmp_path / "dark.fits", 10.0, 150.0)
    with_dark = load_pipeline(_lowell_toml(tmp_path, folder, "with", dark=dark))
    assert with_dark.stack_options["background"] is None
    assert "dark (1 file(s), scaled by EXPTIME)" in " ".join(with_dark.describe())
    darker = with_dark.run().result.stack
    plain = run_pipeline(_lowell_toml(tmp_path, folder, "without")).result.stack
    difference = plain.data - darker.data
    covered = np.isfinite(difference)
    assert covered.mean() > 0.9
    assert np.allclose(difference[covered], 20.0, atol=0.01)
    assert darker.meta["SSDARK"] == "dark.fits" and "SSDARK" not in plain.meta
    assert darker.meta["SSBKG"] == "none"


def test_dark_and_none_checked_before_any_work(shared_data, tmp_path):
    """Darks of different or zero exposure times, and a background or a flux scaling that
    shift_and_stack does not know, are refused by --check, each by name."""
    folder = Path(shared_data("lowell42-5945"))
    one = _lowell_dark(folder, tmp_path / "d150.fits", 10.0, 150.0)
    other = _lowell_dark(folder, tmp_path / "d300.fits", 20.0, 300.0)
    bias_like = _lowell_dark(folder, tmp_path / "d0.fits", 0.0, 0.0)
    for dark, words in (([one, other], "the darks have different EXPTIME ([150.0, 300.0] s)"),
                        (bias_like, "EXPTIME = 0 in the dark")):
        toml = _lowell_toml(tmp_path, folder, "bad", dark=dark)
        if isinstance(dark, list):
            text = toml.read_text().replace(f'dark = "{dark}"',
                                            f'dark = ["{one}", "{other}"]')
            toml.write_text(text)
        with pytest.raises(PipelineError, match=re.escape(words)):
            load_pipeline(toml)
    toml = _lowell_toml(tmp_path, folder, "bad", stack_extra='scale = "star"')
    text = toml.read_text().replace('background = "none"', 'background = "nothing"')
    toml.write_text(text)
    with pytest.raises(PipelineError) as info:
        load_pipeline(toml)
    message = str(info.value)
    assert "background must be one of 'model', 'none', not 'nothing'" in message
    assert "scale must be one of 'stars', 'none', not 'star'; did you mean 'stars'?" in message
    toml.write_text(text.replace('"nothing"', '"model"').replace('"star"', '"stars"'))
    options = load_pipeline(toml).stack_options
    assert options["background"] == "model" and options["scale"] == "stars"


def test_memory_budget_as_text_like_the_command_line(sim_dir, tmp_path, monkeypatch, caplog):
    """``[stack] mem_limit = "10kB"`` is the command line's --mem-limit: the tiny budget
    spills the products to a temporary folder (gone afterwards) and the stack is the one the
    default budget gives; a size that is not one is refused with its line."""
    import logging
    import tempfile
    sim, folder = sim_dir
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    text = SIM_PIPELINE.replace('size = 41', 'size = 41\n    mem_limit = "10kB"')
    with caplog.at_level(logging.INFO, logger="shiftstack_ccd.stack"):
        spilled = run_pipeline(write_toml(folder, text), overwrite=True).result.stack
    assert "over the memory budget of 0 MB" in caplog.text  # 10 kB, not 10 bytes or refused
    assert list((tmp_path / "tmp").iterdir()) == []
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shiftstack_ccd.stack"):
        plain = run_pipeline(write_toml(folder, SIM_PIPELINE, "plain.toml"),
                             overwrite=True).result.stack
    assert "over the memory budget" not in caplog.text
    np.testing.assert_allclose(spilled.data, plain.data, rtol=0, atol=1e-6)
    assert load_pipeline(write_toml(folder, SIM_PIPELINE.replace(
        'size = 41', 'size = 41\n    mem_limit = "2 GiB"'), "gib.toml"), overwrite=True)
    with pytest.raises(ss.PipelineError,
                       match=r"line 15: \[stack\] mem_limit: 'lots' is not a size"):
        load_pipeline(write_toml(folder, SIM_PIPELINE.replace(
            'size = 41', 'size = 41\n    mem_limit = "lots"'), "bad.toml"), overwrite=True)
