"""What the command line writes to stderr: progress per stage, -q, no duplicates, summary."""

import io
import logging
import re
import textwrap
from collections import Counter

import pytest

import shiftstack_ccd as ss
from shiftstack_ccd._cli_output import STEPS_PER_STAGE, CLIHandler
from shiftstack_ccd.cli import main


def _frames(tmp_path, n_frames, shape=(64, 64)):
    sim = ss.simulate_observation(n_frames=n_frames, shape=shape, n_stars=8, target_snr=40,
                                  seed=5)
    paths = [str(p) for p in sim.write(tmp_path / "frames")]
    eph = tmp_path / "eph.ecsv"
    sim.ephemeris.write(eph)
    return paths, eph


@pytest.fixture
def root_handler():
    """A handler on the root logger, as ``logging.basicConfig`` (which ccdproc's
    ImageFileCollection triggers with a module-level ``logging.debug``) installs one."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    yield stream
    logging.getLogger().removeHandler(handler)


def test_quiet_after_the_subcommand_prints_nothing_on_stderr(tmp_path, capsys):
    paths, eph = _frames(tmp_path, 4)
    out = tmp_path / "stack.fits"
    assert main(["stack", *paths, "--ephemeris", str(eph), "--size", "31", "-o", str(out),
                 "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert f"wrote {out}" in captured.out
    assert main(["demo", "--output-dir", str(tmp_path / "demo"), "--n-frames", "3", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_plain_progress_is_bounded_and_not_duplicated(tmp_path, capsys, root_handler):
    """30 frames, stderr not a terminal: at most ten lines per stage, each once, the last
    one n/n, and nothing leaks to the root logger's handler (the 'INFO:...' duplicates)."""
    paths, eph = _frames(tmp_path, 30, shape=(48, 48))
    out = tmp_path / "stack.fits"
    assert main(["stack", *paths, "--ephemeris", str(eph), "--size", "21", "-o", str(out),
                 "--no-sky", "--background", "none"]) == 0
    err = capsys.readouterr().err.splitlines()
    progress = [line for line in err if re.search(r": \d+/\d+$", line)]
    assert progress, err
    counts = Counter(err)
    assert max(counts.values()) == 1, [line for line, n in counts.items() if n > 1]
    stages = Counter(line.rsplit(":", 1)[0] for line in progress)
    # without a sky stack the frames are resampled while prepared (one pass): one stage or two
    assert "shiftstack-ccd: preparing frames" in stages
    assert set(stages) <= {"shiftstack-ccd: preparing frames",
                           "shiftstack-ccd: resampling on the target"}
    assert all(n <= STEPS_PER_STAGE for n in stages.values()), stages
    assert all(f"{stage}: 30/30" in progress for stage in stages)
    assert root_handler.getvalue() == ""


def test_summary_line_of_stack(tmp_path, capsys):
    paths, eph = _frames(tmp_path, 4)
    out, png = tmp_path / "s.fits", tmp_path / "s.png"
    assert main(["stack", *paths, "--ephemeris", str(eph), "--size", "31", "-o", str(out),
                 "--preview", str(png)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    match = re.fullmatch(r"done: 4 of 4 frames stacked; ([\d.]+) s; outputs: (.*)", last)
    assert match, last
    assert 0 < float(match.group(1)) < 600
    assert match.group(2) == f"{out}, {png}"


def test_run_prints_each_line_once_and_a_summary(tmp_path, capsys, root_handler):
    paths, eph = _frames(tmp_path, 4)
    toml = tmp_path / "p.toml"
    toml.write_text(textwrap.dedent("""
        [inputs]
        files = "frames/*.fits"
        [motion]
        ephemeris = "eph.ecsv"
        [stack]
        size = 31
        [output]
        stack = "out/stack.fits"
        """))
    assert main(["run", str(toml)]) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert "shiftstack-ccd: preparing frames: 4/4" in err
    assert max(Counter(err).values()) == 1
    assert not any(line.startswith("INFO:") for line in err)
    assert root_handler.getvalue() == ""
    assert re.fullmatch(r"done: 4 of 4 frames stacked; [\d.]+ s; outputs: .*out/stack.fits",
                        captured.out.splitlines()[-1])
    # the package's logger is as it was: the tests' (and a script's) handlers see it again
    assert logging.getLogger("shiftstack_ccd").propagate


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _record(stage, done, total):
    record = logging.LogRecord("shiftstack_ccd.progress", logging.INFO, __file__, 0,
                               "%s: %d/%d", (stage, done, total), None)
    record.progress = (stage, done, total)
    return record


def test_terminal_gets_one_bar_per_stage():
    stream = _Terminal()
    handler = CLIHandler(stream, logging.WARNING, logging.INFO)
    assert handler.tty
    for stage in ("preparing frames", "resampling on the target"):
        for done in range(1, 31):
            handler.handle(_record(stage, done, 30))
    handler.handle(logging.LogRecord("shiftstack_ccd.x", logging.WARNING, __file__, 0,
                                     "a message", (), None))
    handler.close()
    text = stream.getvalue()
    finished = [line for line in text.split("\n") if "30/30" in line]
    assert len(finished) == 2  # one bar per stage, each left on its own line when done
    assert "preparing frames" in finished[0] and "resampling on the target" in finished[1]
    assert "\r" in text  # redrawn in place, not one line per frame
    assert len(text.split("\n")) == 4  # two bars, the message, the final newline
    assert "shiftstack-ccd: a message" in text


def test_quiet_handler_drops_progress_and_messages():
    stream = _Terminal()
    handler = CLIHandler(stream, logging.ERROR, logging.ERROR)
    handler.handle(_record("preparing frames", 1, 2))
    handler.handle(logging.LogRecord("shiftstack_ccd.x", logging.WARNING, __file__, 0,
                                     "a warning", (), None))
    assert stream.getvalue() == ""


def test_a_warning_is_printed_once(tmp_path, capsys):
    """The median's note on weights comes from both the target and the sky stack: once."""
    paths, eph = _frames(tmp_path, 4)
    assert main(["stack", *paths, "--ephemeris", str(eph), "--size", "31", "--method",
                 "median", "--weights", "exptime", "-o", str(tmp_path / "m.fits")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert warnings.count("shiftstack-ccd: warning: the median ignores weights; use "
                          "method='mean' for weighted combining.") == 1
    assert len(warnings) == len(set(warnings))


def test_a_failed_stack_leaves_no_output_folder(tmp_path, capsys):
    """The output's folder is made when the output is written, not by the checks before."""
    paths, eph = _frames(tmp_path, 4)
    out = tmp_path / "new" / "sub" / "stack.fits"
    # a linear motion whose target is nowhere near the frames: refused while stacking
    assert main(["stack", *paths, "--rates", "10", "0", "--position", "10", "-60",
                 "--epoch", "2024-01-01T00:00:00", "--size", "31", "-o", str(out),
                 "--preview", str(tmp_path / "new2" / "p.png")]) == 1
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and not (tmp_path / "new2").exists()
    # and a run that succeeds makes it
    assert main(["stack", *paths, "--ephemeris", str(eph), "--size", "31", "-o", str(out),
                 "-q"]) == 0
    assert out.is_file()
