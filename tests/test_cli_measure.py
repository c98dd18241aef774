"""The command line's verdict on a stack: `stack` ends with one summary line, `measure`
measures a stack file and writes the reports."""

import re

import pytest
from astropy.table import QTable

import shiftstack_ccd as ss
from shiftstack_ccd.cli import main


def _frames(tmp_path, snr, name):
    sim = ss.simulate_observation(n_frames=6, shape=(200, 200), n_stars=30, target_snr=snr,
                                  cosmic_rays=False, seed=32, star_flux_range=(3e3, 1e5))
    paths = sim.write(tmp_path / name)
    eph = tmp_path / f"{name}.ecsv"
    sim.ephemeris.write(eph)
    return sim, [str(p) for p in paths], str(eph)


def test_stack_prints_the_verdict_and_measure_reports(tmp_path, capsys):
    sim, paths, eph = _frames(tmp_path, 8.0, "bright")
    out = tmp_path / "stack.fits"
    assert main(["stack", *paths, "--ephemeris", eph, "--size", "151", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    line = re.search(r"^target: detected at S/N ([\d.]+), ([\d.]+)\" from the prediction",
                     text, re.M)
    assert line, text
    assert float(line.group(1)) > 10 and float(line.group(2)) < 0.5

    table, ades = tmp_path / "m.ecsv", tmp_path / "obs.psv"
    assert main(["measure", str(out), "-o", str(table), "--ades", str(ades), "--stn", "688",
                 "--object", "C0X1a", "--ast-cat", "Gaia3", "--submitter", "A. Observer",
                 "--telescope", "Reflector", "1.0", "CCD"]) == 0
    text = capsys.readouterr().out
    assert "detected at S/N" in text and f"wrote {ades}" in text
    measured = QTable.read(table)
    assert measured["detected"][0]
    truth = sim.truth["flux"][0]
    assert abs(measured["flux"][0].value - truth) < 4 * measured["flux_err"][0].value
    assert "trkSub" in ades.read_text() and "C0X1a" in ades.read_text()
    # outputs are not overwritten silently
    assert main(["measure", str(out), "-o", str(table)]) == 1
    assert "exists" in capsys.readouterr().err


def test_empty_sky_says_not_detected(tmp_path, capsys):
    _, paths, eph = _frames(tmp_path, 0.0, "empty")
    out = tmp_path / "stack.fits"
    assert main(["stack", *paths, "--ephemeris", eph, "--size", "151", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^target: not detected \(S/N -?\d+\.\d\); 5-sigma limit [\d.]+ adu$",
                     text, re.M), text
    # a zero point without its band is one clear error
    assert main(["measure", str(out), "--zero-point", "25"]) == 1
    assert "band" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--ades", "x.psv"], "--ades needs"),
])
def test_measure_option_errors(tmp_path, capsys, args, message):
    assert main(["measure", str(tmp_path / "missing.fits"), *args]) == 1
    assert message in capsys.readouterr().err
