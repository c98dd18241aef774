"""Nothing lost, nothing silently wrong: the command line and the API on bad input.

Every case runs the command line (in-process through ``cli.main``, a few as real
subprocesses) and asserts the exit status, one line on stderr naming the problem, no
traceback, and inputs byte-identical before and after.
"""

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

import shiftstack_ccd as ss
from shiftstack_ccd import cli
from shiftstack_ccd.cli import main
from shiftstack_ccd.exceptions import FrameError, OutputError, ParameterError
from shiftstack_ccd.frames import expand_files


@pytest.fixture
def night(tmp_path):
    """Four simulated frames in ``night/``, their ephemeris table, and the simulation."""
    sim = ss.simulate_observation(n_frames=4, shape=(96, 96), n_stars=15, target_snr=40,
                                  seed=11)
    paths = [str(p) for p in sim.write(tmp_path / "night")]
    eph = tmp_path / "eph.ecsv"
    sim.ephemeris.write(eph)
    return sim, paths, str(eph)


def run(argv, capsys):
    """(status, stdout, stderr) of ``shiftstack-ccd argv``, in this process."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(err, *words):
    """stderr is one error line (progress lines aside) holding every word, no traceback."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


# ----------------------------------------------------------------------------------------
# Silently wrong or data lost
# ----------------------------------------------------------------------------------------
def test_electron_frames_are_written_and_read_back(tmp_path, capsys):
    sim = ss.simulate_observation(n_frames=3, shape=(64, 64), n_stars=8, target_snr=30,
                                  seed=2, unit="electron")
    paths = [str(p) for p in sim.write(tmp_path / "frames")]
    assert fits.getheader(paths[0])["BUNIT"].lower().startswith("electron")
    sim.ephemeris.write(tmp_path / "eph.ecsv")
    out = tmp_path / "stack.fits"
    status, _, err = run(["stack", *paths, "--ephemeris", tmp_path / "eph.ecsv", "--size", 31,
                          "-o", out], capsys)
    assert status == 0, err
    result = ss.StackResult.read(out)
    assert result.stack.unit == u.electron
    assert result.sky_stack.unit == u.electron
    with fits.open(out) as hdul:
        assert hdul["SKY"].header["BUNIT"] == "electron"


def test_second_run_does_not_stack_the_first_runs_output(night, tmp_path, capsys, digests):
    sim, paths, eph = night
    folder = Path(paths[0]).parent
    first = folder / "stack.fits"
    assert run(["stack", folder / "*.fits", "--ephemeris", eph, "--size", 31, "-o", first],
               capsys)[0] == 0
    before = digests(paths + [first])
    status, _, err = run(["stack", folder / "*.fits", "--ephemeris", eph, "--size", 31,
                          "-o", folder / "again.fits"], capsys)
    assert status == 0
    assert "stack.fits: a stack written by shiftstack_ccd" in err and "left out" in err
    assert fits.getheader(folder / "again.fits")["NCOMBINE"] == 4
    # the same result both times: the first run's output was not an 11th (5th) frame
    assert np.array_equal(fits.getdata(first), fits.getdata(folder / "again.fits"))
    # ... and with --overwrite it does not replace the file it would have read
    status, _, err = run(["stack", folder / "*.fits", "--ephemeris", eph, "--size", 31,
                          "-o", first, "--overwrite"], capsys)
    assert status == 0 and fits.getheader(first)["NCOMBINE"] == 4
    assert digests(paths) == {p: before[p] for p in paths}


def test_a_stack_named_alone_is_a_frame(night, tmp_path):
    sim, paths, eph = night
    result = ss.shift_and_stack(paths, ss.Ephemeris.from_table(eph), size=31)
    result.write(tmp_path / "s.fits")
    with pytest.warns(AstropyUserWarning, match="left out"):
        kept = expand_files([*paths, str(tmp_path / "s.fits")])
    assert kept == paths
    assert expand_files(str(tmp_path / "s.fits")) == [str(tmp_path / "s.fits")]


@pytest.mark.parametrize("link", [False, True])
def test_output_that_is_an_input_is_refused_even_with_overwrite(night, tmp_path, capsys,
                                                                digests, link):
    sim, paths, eph = night
    before = digests(paths)
    target = paths[1]
    if link:  # a symbolic link to an input is the input
        target = tmp_path / "alias.fits"
        os.symlink(paths[1], target)
    status, _, err = run(["stack", *paths, "--ephemeris", eph, "--size", 31, "-o", target,
                          "--overwrite"], capsys)
    assert status == 1
    assert_one_line_error(err, str(target), "is one of the input files", "never replaced")
    assert digests(paths) == before


def test_output_that_is_a_master_or_the_ephemeris_is_refused(night, tmp_path, capsys, digests):
    sim, paths, eph = night
    bias = tmp_path / "bias.fits"
    fits.writeto(bias, np.zeros((96, 96), np.float32))
    before = digests(paths + [eph, bias])
    for target in (bias, eph):
        status, _, err = run(["stack", *paths, "--ephemeris", eph, "--bias", bias,
                              "-o", target, "--overwrite"], capsys)
        assert status == 1
        assert_one_line_error(err, str(target), "is one of the input files")
    assert digests(paths + [eph, bias]) == before


def test_api_write_refuses_an_input(night, tmp_path, digests):
    sim, paths, eph = night
    before = digests(paths)
    result = ss.shift_and_stack(paths, ss.Ephemeris.from_table(eph), size=31)
    with pytest.raises(OutputError, match="one of the input files"):
        result.write(paths[0], overwrite=True)
    assert digests(paths) == before


def test_duplicate_inputs_are_stacked_once(night, tmp_path, capsys):
    sim, paths, eph = night
    out = tmp_path / "dup.fits"
    status, _, err = run(["stack", *paths, paths[0], str(Path(paths[2]).resolve()),
                          "--ephemeris", eph, "--size", 31, "-o", out], capsys)
    assert status == 0
    assert err.count("given twice") == 2
    assert fits.getheader(out)["NCOMBINE"] == 4
    assert "warning:" in err and "Warning" not in err  # warnings on one line each


# ----------------------------------------------------------------------------------------
# Errors instead of tracebacks: one line, exit 1 (2 for usage), inputs untouched
# ----------------------------------------------------------------------------------------
def _bad_stack_cases(tmp_path, paths, eph):
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    return [
        (["--size", 100000], 1, ["--size", "needs about", "available", "smaller size"]),
        (["--size", 0], 2, ["--size", "give a number of pixels (> 0) or 'full'"]),
        (["-o", a_file / "out.fits"], 1, ["a_file.txt is a file, not a folder"]),
        (["-o", tmp_path], 1, ["is a folder"]),
        (["--workdir", a_file], 1, ["--workdir", "is a file, not a folder"]),
        (["--workdir", tmp_path / "missing"], 1, ["--workdir", "does not exist"]),
        (["--scheduler", "bogus"], 1, ["--scheduler", "bogus"]),
        (["--refine-max-shift", -1], 1, ["--refine-max-shift", "above 0"]),
        (["--size", "x"], 2, ["--size", "'x': give a number of pixels (> 0) or 'full'"]),
        (["--method", "average"], 2, ["--method", "invalid choice"]),
    ]


def test_bad_stack_options(night, tmp_path, capsys, digests):
    sim, paths, eph = night
    before = digests(paths + [eph])
    for extra, status, words in _bad_stack_cases(tmp_path, paths, eph):
        argv = ["stack", *paths, "--ephemeris", eph, "-o", tmp_path / "out.fits", *extra]
        if "-o" in map(str, extra):
            argv = ["stack", *paths, "--ephemeris", eph, *extra]
        got, _, err = run(argv, capsys)
        assert got == status, (extra, err)
        assert_one_line_error(err, *words)
        assert not (tmp_path / "out.fits").exists()
    assert digests(paths + [eph]) == before


def test_unwritable_folder_is_found_before_computing(night, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root can write in a read-only folder")
    sim, paths, eph = night
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        status, _, err = run(["stack", *paths, "--ephemeris", eph, "-o", locked / "s.fits"],
                             capsys)
    finally:
        locked.chmod(0o700)
    assert status == 1
    line = assert_one_line_error(err, "s.fits", "cannot write")
    assert "preparing frames" not in err, line  # refused before any frame was read


@pytest.mark.parametrize("motion, status, words", [
    (["--rates", 1, 2, "--position", 150, 95, "--epoch", "2024-03-01"], 2,
     ["--position", "-90 deg <= angle <= 90 deg"]),
    (["--rates", 1, 2, "--position", 150, 2, "--epoch", "notatime"], 2,
     ["--epoch 'notatime'", "not a time"]),
    (["--rates", 1, 2, "--position", "1", "2", "3", "--epoch", "2024-03-01"], 2,
     ["--position", "give RA and Dec"]),
    (["--rates", 1, 2], 2, ["--rates needs --position"]),
    (["--position", 150, 2], 2, ["exactly one motion model"]),
])
def test_bad_motion_options(night, tmp_path, capsys, motion, status, words):
    sim, paths, eph = night
    got, _, err = run(["stack", *paths, *motion, "-o", tmp_path / "o.fits"], capsys)
    assert got == status
    line = assert_one_line_error(err, *words)
    assert "see shiftstack-ccd stack --help" in line


@pytest.mark.parametrize("content, words", [
    ("", ["ephemeris"]),
    ("time,ra,dec\n", ["ephemeris"]),
])
def test_bad_ephemeris_tables(night, tmp_path, capsys, content, words):
    sim, paths, eph = night
    table = tmp_path / "bad.csv"
    table.write_text(content)
    status, _, err = run(["stack", *paths, "--ephemeris", table, "-o", tmp_path / "o.fits"],
                         capsys)
    assert status == 1
    assert_one_line_error(err, *words)
    assert "unexpected" not in err


def test_zero_exposure_time_with_exptime_weights(night, tmp_path, capsys, digests):
    sim, paths, eph = night
    frames = []
    for i, path in enumerate(paths):
        with fits.open(path) as hdul:
            if i == 2:
                hdul[0].header["EXPTIME"] = 0.0
            copy = tmp_path / f"copy{i}.fits"
            hdul.writeto(copy)
        frames.append(str(copy))
    before = digests(frames)
    status, _, err = run(["stack", *frames, "--ephemeris", eph, "--weights", "exptime",
                          "-o", tmp_path / "o.fits"], capsys)
    assert status == 1
    assert_one_line_error(err, "copy2.fits", "EXPTIME = 0", "weights='exptime'")
    assert digests(frames) == before


def test_unknown_time_scale_is_named(night, tmp_path, capsys):
    sim, paths, eph = night
    with fits.open(paths[0]) as hdul:
        hdul[0].header["TIMESYS"] = "MARS"
        hdul.writeto(tmp_path / "mars.fits")
    status, _, err = run(["stack", tmp_path / "mars.fits", *paths[1:], "--ephemeris", eph,
                          "-o", tmp_path / "o.fits"], capsys)
    assert status == 1
    assert_one_line_error(err, "mars.fits", "TIMESYS = 'MARS'", "not a time scale")


@pytest.mark.parametrize("argv, words", [
    (["demo", "--n-frames", 0], ["--n-frames", "at least 2"]),
    (["demo", "--snr", -1], ["--snr", "above 0"]),
    (["demo", "--seed", -3], ["--seed", "at least 0"]),
])
def test_bad_demo_options(tmp_path, capsys, argv, words):
    status, _, err = run([*argv, "--output-dir", tmp_path / "demo"], capsys)
    assert status == 1
    assert_one_line_error(err, *words)
    assert not (tmp_path / "demo").exists() or not any((tmp_path / "demo").iterdir())


def test_demo_error_names_the_option(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "stack.fits").write_bytes(b"keep")
    status, _, err = run(["demo", "--output-dir", out, "--n-frames", 3], capsys)
    assert status == 1
    line = assert_one_line_error(err, "stack.fits", "--overwrite")
    assert "overwrite=True" not in line
    assert (out / "stack.fits").read_bytes() == b"keep"
    assert not (out / "frames").exists()  # refused before simulating anything


def test_run_on_a_folder_and_a_binary_file(tmp_path, capsys):
    status, _, err = run(["run", tmp_path], capsys)
    assert status == 1
    assert_one_line_error(err, str(tmp_path), "is a folder")
    binary = tmp_path / "x.toml"
    binary.write_bytes(bytes(range(256)))
    status, _, err = run(["run", binary], capsys)
    assert status == 1
    assert_one_line_error(err, "x.toml", "not a text file")


def test_unexpected_errors_are_one_line_and_traceback_with_v(night, tmp_path, capsys,
                                                             monkeypatch):
    sim, paths, eph = night

    def broken(*args, **kwargs):
        raise KeyError("a bug")
    monkeypatch.setattr("shiftstack_ccd.stack.shift_and_stack", broken)
    argv = ["stack", *paths, "--ephemeris", eph, "-o", tmp_path / "o.fits"]
    status, _, err = run(argv, capsys)
    assert status == 1
    assert_one_line_error(err, "unexpected KeyError", "run with -v for the traceback")
    status, _, err = run([*argv, "-v"], capsys)
    assert status == 1 and "Traceback" in err and "a bug" in err


# ----------------------------------------------------------------------------------------
# Global options, warnings, help, positions, permissions (issue 12's CLI points)
# ----------------------------------------------------------------------------------------
def _no_bunit_frames(paths, tmp_path):
    out = []
    for i, path in enumerate(paths):
        with fits.open(path) as hdul:
            del hdul[0].header["BUNIT"]
            copy = tmp_path / f"nobunit{i}.fits"
            hdul.writeto(copy)
        out.append(str(copy))
    return out


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_before_or_after_the_subcommand_silences_warnings(night, tmp_path, capsys, where):
    sim, paths, eph = night
    frames = _no_bunit_frames(paths, tmp_path)
    argv = ["stack", *frames, "--ephemeris", eph, "--size", 31, "-o", tmp_path / "q.fits"]
    status, out, err = run(argv, capsys)
    assert status == 0 and "no BUNIT" in err and "preparing frames" in err
    (tmp_path / "q.fits").unlink()
    argv = ["-q", *argv] if where == "before" else [*argv, "-q"]
    status, out, err = run(argv, capsys)
    assert status == 0
    assert err == ""
    assert "wrote" in out


def test_verbose_after_the_subcommand(night, tmp_path, capsys):
    sim, paths, eph = night
    status, _, err = run(["stack", *paths, "--ephemeris", eph, "--size", 31,
                          "-o", tmp_path / "v.fits", "-vv"], capsys)
    assert status == 0 and "mid-exposure" in err  # a debug message
    status, _, err = run(["-q", "stack", *paths, "--ephemeris", eph, "-v"], capsys)
    assert status == 2 and "-q and -v together" in err


def test_every_option_has_help():
    parser = cli.build_parser()
    subparsers = parser._subparsers._group_actions[0].choices
    assert {"stack", "demo", "ephemeris", "steps", "run"} <= set(subparsers)
    for name, sub in [("shiftstack-ccd", parser), *subparsers.items()]:
        for action in sub._actions:
            if action.dest in ("help", "command"):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help"


def test_sexagesimal_position_equals_decimal(night, tmp_path, capsys):
    sim, paths, eph = night
    p = sim.target_position
    rates = [sim.ra_rate.to_value(u.arcsec / u.hour), sim.dec_rate.to_value(u.arcsec / u.hour)]
    sexagesimal = p.to_string("hmsdms", sep=":", precision=4).split()
    outputs = []
    for i, position in enumerate([[p.ra.deg, p.dec.deg], sexagesimal, [" ".join(sexagesimal)]]):
        out = tmp_path / f"p{i}.fits"
        status, _, err = run(["stack", *paths, "--rates", *rates, "--position", *position,
                              "--epoch", sim.epoch.isot, "--size", 31, "--no-sky", "-o", out],
                             capsys)
        assert status == 0, err
        outputs.append(fits.getdata(out))
    # 1e-4 s of RA is 1.5 mas: far below a pixel, so the stacks agree to float rounding
    assert np.allclose(outputs[0], outputs[1], atol=1e-3 * np.abs(outputs[0]).max())
    assert np.allclose(outputs[1], outputs[2])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_outputs_honour_the_umask(night, tmp_path, capsys, umask, mode):
    sim, paths, eph = night
    old = os.umask(umask)
    try:
        out, png = tmp_path / "m.fits", tmp_path / "m.png"
        assert run(["stack", *paths, "--ephemeris", eph, "--size", 31, "-o", out,
                    "--preview", png], capsys)[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert stat.S_IMODE(png.stat().st_mode) == mode


def test_overwriting_keeps_the_mode(night, tmp_path, capsys):
    sim, paths, eph = night
    out = tmp_path / "keep.fits"
    assert run(["stack", *paths, "--ephemeris", eph, "--size", 31, "-o", out], capsys)[0] == 0
    out.chmod(0o604)
    assert run(["stack", *paths, "--ephemeris", eph, "--size", 21, "-o", out, "--overwrite"],
               capsys)[0] == 0
    assert fits.getdata(out).shape == (21, 21)
    assert stat.S_IMODE(out.stat().st_mode) == 0o604


def test_pixel_convention_is_stated(night, tmp_path, capsys):
    sim, paths, eph = night
    out = tmp_path / "c.fits"
    status, stdout, _ = run(["stack", *paths, "--ephemeris", eph, "--size", 31, "-o", out],
                            capsys)
    assert "(15.0, 15.0) (0-based; (16.0, 16.0) in FITS/ds9 1-based)" in stdout
    with fits.open(out) as hdul:
        frames = hdul["FRAMES"]
        columns = {frames.header[f"TTYPE{i}"]: i for i in range(1, frames.header["TFIELDS"] + 1)}
        comment = frames.header.comments[f"TTYPE{columns['x_frame']}"]
    assert "0-based" in comment


# ----------------------------------------------------------------------------------------
# The API validates its parameters on entry, with messages naming them
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    ({"sigma_clip": True, "sigma_low": -1.0}, "sigma_low"),
    ({"sigma_high": 0}, "sigma_high"),
    ({"static_k": -1}, "static_k"),
    ({"subtract_static": True, "track_radius": -5}, "track_radius"),
    ({"subtract_static": True, "track_radius": 0.5}, "track_radius"),
    ({"pixel_scale": -0.5 * u.arcsec}, "pixel_scale"),
    ({"pixel_scale": "0.5 m"}, "pixel_scale"),
    ({"size": True}, "size"),
    ({"size": 101.7}, "size"),
    ({"size": 3 * u.m}, "size"),
    ({"size": (10, 0)}, "size"),
    ({"refine_size": 0}, "refine_size"),
    ({"intermediate": "os.system"}, "intermediate"),
    ({"scheduler": "bogus"}, "scheduler"),
    ({"weights": [1.0, 2.0]}, "weights"),
    ({"weights": [1.0, np.nan, 1.0, 1.0]}, "weights"),
    ({"weights": "exposure"}, "weights"),
    ({"method": "average"}, "method"),
    ({"resample": "nearest"}, "resample"),
    ({"reference_time": "notatime"}, "reference_time"),
    ({"orientation": "south"}, "orientation"),
    ({"sky_stack": "no"}, "sky_stack"),
    ({"per_frame_steps": ["clean_cosmic_rays"]}, "per_frame_steps"),
    ({"mem_limit": -5}, "mem_limit"),
])
def test_shift_and_stack_refuses_nonsense(night, kwargs, name):
    sim, paths, eph = night
    with pytest.raises(ParameterError, match=rf"^{name}: ") as info:
        ss.shift_and_stack(paths, ss.Ephemeris.from_table(eph), **kwargs)
    assert info.value.parameter == name


def test_memory_estimate_names_the_way_out(night, tmp_path, monkeypatch):
    """Refused in memory, the same stack runs with a work folder and gives the same result."""
    sim, paths, eph = night
    ephemeris = ss.Ephemeris.from_table(eph)
    # 61 x 61 pixels: 33 kB per frame on the grid; 4 frames, target and sky: 8 grids + 4
    monkeypatch.setattr("shiftstack_ccd._validate.available_memory", lambda: 9 * 61 * 61 * 9)
    with pytest.raises(ParameterError, match="workdir") as info:
        ss.shift_and_stack(paths, ephemeris, size=61)
    assert "61 x 61 pixels needs about 401.9 kB" in str(info.value)  # 61 * 61 * 9 * 12
    work = tmp_path / "work"
    work.mkdir()
    result = ss.shift_and_stack(paths, ephemeris, size=61, workdir=work)
    monkeypatch.undo()
    expected = ss.shift_and_stack(paths, ephemeris, size=61)
    assert np.array_equal(result.stack.data, expected.stack.data)
    assert list(work.iterdir()) == []


def test_workdir_only_helps_when_one_frame_fits():
    from shiftstack_ccd._validate import check_stack_memory
    with pytest.raises(ParameterError) as info:
        check_stack_memory((100000, 100000), 10, 2, None, available=16 * 10**9)
    assert "smaller size" in str(info.value) and "workdir" not in str(info.value)
    assert "2.2 TB" in str(info.value)  # 1e10 pixels x 9 bytes x (10 x 2 + 4) grids
    assert check_stack_memory((101, 101), 10, 2, None, available=16 * 10**9) == \
        101 * 101 * 9 * 24


def test_frame_errors_are_frame_errors(night, tmp_path):
    sim, paths, eph = night
    with fits.open(paths[0]) as hdul:
        hdul[0].header["DATE-OBS"] = "2024-03-01 03:00:00"  # a space, not T
        hdul[0].header["TIME-OBS"] = "04:00:00"  # disagrees
        hdul.writeto(tmp_path / "t.fits")
    with pytest.raises(FrameError, match="give different start times"):
        ss.read_frames(str(tmp_path / "t.fits"))


# ----------------------------------------------------------------------------------------
# Real processes: exit codes, stderr, signals
# ----------------------------------------------------------------------------------------
def _cli(*argv, **kwargs):
    env = {**os.environ, "MPLBACKEND": "agg"}
    return subprocess.run([sys.executable, "-m", "shiftstack_ccd.cli", *map(str, argv)],
                          capture_output=True, text=True, env=env, timeout=120, **kwargs)


def test_subprocess_errors(night, tmp_path, digests):
    sim, paths, eph = night
    before = digests(paths)
    done = _cli("stack", *paths, "--ephemeris", eph, "-o", paths[0], "--overwrite")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "is one of the input files" in done.stderr
    done = _cli("stack", *paths, "--ephemeris", eph, "--size", "100000")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    done = _cli("stack", *paths, "--nonsense")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "unrecognized arguments: --nonsense" in done.stderr
    assert digests(paths) == before


def _watchdog(proc, seconds=180, group=False):
    """Kill a process (or its group) that hangs, so that the test fails instead."""
    import threading

    def kill():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
    timer = threading.Timer(seconds, kill)
    timer.start()
    return timer


def _interrupted_stack(tmp_path, n_frames, signum, *options, group=False):
    """Run ``shiftstack-ccd stack`` on simulated frames with a work folder, send ``signum``
    once the frames are being prepared (to the whole process group with ``group``, as a
    terminal's Ctrl-C does), and return (exit status, stderr after the signal, work folder
    contents at the signal, work folder)."""
    sim = ss.simulate_observation(n_frames=n_frames, shape=(200, 200), n_stars=30,
                                  target_snr=10, seed=5, cosmic_rays=False)
    paths = sim.write(tmp_path / "frames")
    sim.ephemeris.write(tmp_path / "eph.ecsv")
    work = tmp_path / "work"
    work.mkdir()
    argv = ["stack", *paths, "--ephemeris", tmp_path / "eph.ecsv", *options, "--workdir", work,
            "--clean-cosmic-rays", "-o", tmp_path / "s.fits"]
    env = {**os.environ, "MPLBACKEND": "agg"}
    # the context closes the stderr pipe and waits for the process
    with subprocess.Popen([sys.executable, "-m", "shiftstack_ccd.cli", *map(str, argv)],
                          stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=group) as proc:
        watchdog = _watchdog(proc, group=group)
        try:
            for line in proc.stderr:  # wait until frames are being prepared in the work folder
                if "preparing frames: " in line:  # the first progress line: a tenth done
                    break
            busy = list(work.iterdir())
            if group:
                os.killpg(proc.pid, signum)
            else:
                proc.send_signal(signum)
            rest = proc.stderr.read()
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
    return proc.returncode, rest, busy, work


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_cleans_the_work_folder(tmp_path, signum, status):
    returncode, rest, busy, work = _interrupted_stack(tmp_path, 40, signum)
    assert busy  # it was working there
    assert returncode == status, rest
    assert "Traceback" not in rest
    assert list(work.iterdir()) == []
    assert not (tmp_path / "s.fits").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------------------
# Horizons cache entries checked on read; offline errors name the offline alternatives
# ----------------------------------------------------------------------------------------
def _recorded(shared_data, name):
    return Path(shared_data(f"ephemerides/astroquery_jplhorizons/{name}")).read_text()


def _without_rows(text, n):
    """A Horizons answer with its first ``n`` rows removed."""
    head, rest = text.split("$$SOE\n", 1)
    return head + "$$SOE\n" + rest.split("\n", n)[n]


@pytest.mark.parametrize("mangle, reason", [
    (lambda entry: [entry], "JSON list"),
    (lambda entry: None, "JSON NoneType"),
    (lambda entry: 42, "JSON int"),
    (lambda entry: {k: v for k, v in entry.items() if k != "url"}, "no 'url'"),
    (lambda entry: {**entry, "text": entry["text"][:entry["text"].index("$$EOE")]},
     "cut short"),
    (lambda entry: {**entry, "text": _without_rows(entry["text"], 2)}, "covers"),
    (lambda entry: {**entry, "format": 99}, "format 99"),
])
def test_malformed_cache_entries_are_named_and_fetched_again(shared_data, transport, tmp_path,
                                                             mangle, reason):
    import json
    from astropy.time import Time
    transport.answer = _recorded(shared_data, "ceres_ephemerides_range.txt")
    frames = Time("2022-06-20T02:00:00", scale="utc") + np.arange(50) * 6 * u.min
    first = ss.Ephemeris.from_horizons("Ceres", "688", times=frames, id_type="smallbody",
                                       cache_dir=tmp_path)
    (path,) = (tmp_path / "horizons").glob("*.json")
    path.write_text(json.dumps(mangle(json.loads(path.read_text()))))
    with pytest.warns(AstropyUserWarning, match="malformed Horizons cache entry") as caught:
        again = ss.Ephemeris.from_horizons("Ceres", "688", times=frames, id_type="smallbody",
                                           cache_dir=tmp_path)
    message = str(caught[0].message)
    assert str(path) in message and reason in message
    assert len(transport.urls) == 2  # fetched again ...
    assert again.meta["from_cache"] is False
    assert again.at(frames).separation(first.at(frames)).max() == 0 * u.deg
    entry = json.loads(path.read_text())  # ... and the entry replaced by a sound one
    assert entry["url"] == transport.urls[-1] and "$$EOE" in entry["text"]
    ss.Ephemeris.from_horizons("Ceres", "688", times=frames, id_type="smallbody",
                               cache_dir=tmp_path)
    assert len(transport.urls) == 2


def test_offline_horizons_names_the_command_line_alternatives(night, transport, tmp_path, capsys,
                                                              monkeypatch):
    import requests
    sim, paths, eph = night
    monkeypatch.setenv("SHIFTSTACK_CCD_CACHE", str(tmp_path / "cache"))
    transport.error = requests.exceptions.ConnectionError("Name or service not known")
    status, _, err = run(["stack", *paths, "--target", "Ceres", "-o", tmp_path / "o.fits"],
                         capsys)
    assert status == 1
    assert_one_line_error(err, "No network?", "--ephemeris TABLE", "--rates DRA DDEC")


def test_fetch_example_data_offline(tmp_path, monkeypatch):
    import urllib.error

    from shiftstack_ccd.datasets import fetch_example_data
    from shiftstack_ccd.exceptions import DownloadError

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setenv("SHIFTSTACK_CCD_DATA", str(tmp_path))
    monkeypatch.setattr("astropy.utils.data.download_file", offline)
    with pytest.raises(DownloadError) as info:
        fetch_example_data("lowell42-5945")
    text = str(info.value)
    assert "No network?" in text and "SHIFTSTACK_CCD_DATA" in text and "\n" not in text
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert isinstance(info.value, OSError)


# ----------------------------------------------------------------------------------------
# Pipeline files: --check refuses what would crash or harm; what passes it runs
# ----------------------------------------------------------------------------------------
def _pipeline(folder, stack="", output='stack = "out/stack.fits"', extra=""):
    import textwrap
    path = Path(folder) / "p.toml"
    path.write_text(textwrap.dedent(f"""
        [inputs]
        files = "night/*.fits"
        {extra}
        [motion]
        ephemeris = "eph.ecsv"

        [stack]
        {stack if "size" in stack else "size = 31"}
        {"" if "size" in stack else stack}

        [output]
        {output}
        """))
    return path


@pytest.mark.parametrize("stack, words", [
    ("size = 0", ["size", "at least 1"]),
    ("weights = [1.0, 2.0]", ["weights", "one weight per frame (4)"]),
    ('pixel_scale = "0.5 m"', ["pixel_scale"]),
    ("refine_size = 0", ["refine_size", "at least 8"]),
    ('intermediate = "os.system"', ["intermediate"]),
    ('scheduler = "bogus"', ["scheduler", "bogus"]),
    ("sigma_low = -1.0", ["sigma_low", "above 0"]),
    ("static_k = -1", ["static_k"]),
    ("track_radius = 0.5", ["track_radius", "at least 2"]),
    ('scheduler = "tcp://203.0.113.5:8786"', ["--allow-scheduler"]),
])
def test_check_refuses_what_would_crash(night, tmp_path, capsys, stack, words):
    sim, paths, eph = night
    toml = _pipeline(tmp_path, stack)
    status, _, err = run(["run", toml, "--check"], capsys)
    assert status == 1, err
    line = assert_one_line_error(err, "p.toml", *words)
    assert "line " in line  # the line of the file
    status, _, err = run(["run", toml], capsys)  # and run refuses the same, before any work
    assert status == 1 and "preparing" not in err
    assert not (tmp_path / "out").exists()


def test_check_refuses_an_output_that_is_an_input(night, tmp_path, capsys, digests):
    sim, paths, eph = night
    before = digests(paths + [eph])
    for output in (f'stack = "{paths[0]}"', 'stack = "eph.ecsv.fits"\npreview = "eph.ecsv"'):
        toml = _pipeline(tmp_path, output=output + "\noverwrite = true")
        status, _, err = run(["run", toml, "--check"], capsys)
        assert status == 1
        assert "is one of the input files" in err or "should end in" in err, err
        assert run(["run", toml, "--overwrite"], capsys)[0] == 1
    assert digests(paths + [eph]) == before


def test_check_refuses_a_3d_bias(night, tmp_path, capsys):
    sim, paths, eph = night
    fits.writeto(tmp_path / "bias.fits", np.zeros((2, 96, 96), np.float32))
    toml = _pipeline(tmp_path, extra='\n[calibration]\nbias = "bias.fits"\n')
    status, _, err = run(["run", toml, "--check"], capsys)
    assert status == 1
    assert_one_line_error(err, "bias", "not a 2-D image (NAXIS = 3)")


def test_a_file_that_passes_check_runs(night, tmp_path, capsys):
    sim, paths, eph = night
    toml = _pipeline(tmp_path, 'scheduler = "threads"\nweights = [1.0, 1.0, 2.0, 1.0]')
    assert run(["run", toml, "--check"], capsys)[0] == 0
    status, out, err = run(["run", toml], capsys)
    assert status == 0, err
    assert fits.getheader(tmp_path / "out" / "stack.fits")["NCOMBINE"] == 4


def test_allow_scheduler_lets_an_address_through(night, tmp_path, capsys):
    sim, paths, eph = night
    toml = _pipeline(tmp_path, 'scheduler = "tcp://127.0.0.1:8786"')
    status, out, err = run(["run", toml, "--check", "--allow-scheduler"], capsys)
    assert status == 0, err
    assert "valid" in out


@pytest.mark.parametrize("step, words", [("0", ["--step", "above 0"]),
                                         ("nan", ["--step", "finite"]),
                                         ("0.2", ["at least 1 minute"])])
def test_ephemeris_step_is_checked_before_any_request(night, transport, tmp_path, capsys,
                                                      step, words):
    sim, paths, eph = night
    status, _, err = run(["ephemeris", *paths, "--target", "Ceres", "--step", step,
                          "-o", tmp_path / "e.ecsv"], capsys)
    assert status == 1
    assert_one_line_error(err, *words)
    assert transport.urls == []


def test_ctrl_c_with_processes_prints_no_worker_tracebacks(tmp_path):
    """SIGINT to the whole process group, as a terminal sends it: one line, exit 130."""
    returncode, rest, busy, work = _interrupted_stack(tmp_path, 30, signal.SIGINT,
                                                      "--scheduler", "processes", group=True)
    assert returncode == 130, rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
    assert [line for line in rest.splitlines() if "preparing" not in line] == \
        ["shiftstack-ccd: interrupted; no partial output was left"]
    assert list(work.iterdir()) == []
    assert not (tmp_path / "s.fits").exists()


def test_writing_a_stack_warns_nothing(night, tmp_path):
    """Header comments are cut to fit their card by us, not by astropy with a warning."""
    import warnings
    sim, paths, eph = night
    result = ss.shift_and_stack(paths, ss.Ephemeris.from_table(eph), size=21)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result.write(tmp_path / "quiet.fits")
    with fits.open(tmp_path / "quiet.fits") as hdul:
        for hdu in hdul:
            assert all(len(card.image) == 80 for card in hdu.header.cards)
