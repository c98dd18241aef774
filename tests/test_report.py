"""ADES and MPC 80-column reports: valid by the IAU's own tools, out-of-range refused."""

import re
import subprocess
import sys

import numpy as np
import pytest
from astropy import units as u
from astropy.table import QTable
from astropy.time import Time

import shiftstack_ccd as ss
from shiftstack_ccd.exceptions import MeasurementError, OutputExistsError

pytest.importorskip("ades", reason="the iau-ades package (test extra) validates the output")

CONTEXT = dict(stn="688", submitter="B. Skiff", observers=["B. Skiff"],
               measurers=["A. Measurer", "B. Measurer"], ast_cat="Gaia2",
               telescope={"design": "Reflector", "aperture": 1.07, "detector": "CCD"})


def _table(detected=(True, False)):
    n = len(detected)
    table = QTable()
    table["time"] = Time(["2019-03-26T03:39:33.091"] * n)
    table["ra"] = np.linspace(124.62794503, 124.63, n) * u.deg
    table["dec"] = np.linspace(25.34029997, 25.341, n) * u.deg
    table["ra_err"] = [0.0312] * n * u.arcsec
    table["dec_err"] = [0.0291] * n * u.arcsec
    table["mag"] = [16.812] * n * u.mag
    table["mag_err"] = [0.0213] * n * u.mag
    table["snr"] = [306.2] * n
    table["detected"] = list(detected)
    table["fwhm"] = [1.80] * n * u.arcsec
    table.meta.update(band="R", n_frames=10, exptime=300.0)
    return table


def _run(args, cwd):
    """Run one of iau-ades' tools; return what it printed (it exits 0 even on failure)."""
    done = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    return done.stdout + done.stderr


@pytest.mark.parametrize("suffix", [".psv", ".xml"])
def test_ades_validates_with_the_iau_tools(tmp_path, suffix):
    path = tmp_path / f"obs{suffix}"
    with pytest.warns(UserWarning, match="1 undetected row"):
        ss.write_ades(_table(), path, obj=5945, phot_cat="Gaia2", **CONTEXT)
    xml = path
    if suffix == ".psv":
        xml = tmp_path / "converted.xml"
        out = _run(["ades.psvtoxml", str(path), str(xml)], tmp_path)
        assert xml.is_file(), out
    out = _run(["ades.valsubmit", str(xml)], tmp_path)
    assert re.search(r"^submit is OK$", out, re.M), out
    assert "failed" not in out
    text = xml.read_text()
    # one observation (the undetected row left out), every field as given
    assert text.count("<optical>") == 1
    for field in ("<permID>5945</permID>", "<mode>CCD</mode>", "<stn>688</stn>",
                  "<obsTime>2019-03-26T03:39:33.09Z</obsTime>", "<ra>124.6279450</ra>",
                  "<dec>+25.3403000</dec>", "<rmsRA>0.031</rmsRA>", "<rmsDec>0.029</rmsDec>",
                  "<astCat>Gaia2</astCat>", "<mag>16.81</mag>", "<rmsMag>0.021</rmsMag>",
                  "<band>R</band>", "<photCat>Gaia2</photCat>", "<logSNR>2.49</logSNR>",
                  "<seeing>1.80</seeing>", "<exp>3000.0</exp>"):
        assert field in text, field
    assert "shift-and-stack of 10 frames of 300 s" in text


def test_the_validator_does_fail_on_an_invalid_file(tmp_path):
    """So that 'submit is OK' above means something: a broken file is caught."""
    path = tmp_path / "obs.xml"
    ss.write_ades(_table((True,)), path, obj="2019 AB12", **CONTEXT)
    assert "<provID>2019 AB12</provID>" in path.read_text()
    broken = tmp_path / "broken.xml"
    broken.write_text(path.read_text().replace("<mode>CCD</mode>", "<mode>CCD-X</mode>"))
    out = _run(["ades.valsubmit", str(broken)], tmp_path)
    assert "submit has failed" in out and "submit is OK" not in out


def test_trksub_and_ades_refusals(tmp_path):
    path = tmp_path / "obs.psv"
    ss.write_ades(_table((True,)), path, obj="C0X1a", **CONTEXT)
    assert "trkSub" in path.read_text()
    bad = [({"obj": "not a name!"}, "obj="),
           ({"stn": "68"}, "stn"),
           ({"ast_cat": "Gaia DR3 (2022)"}, "astCat"),
           ({"telescope": {"design": "Reflector", "aperture": -1, "detector": "CCD"}},
            "aperture"),
           ({"telescope": {"design": "Reflector"}}, "missing")]
    for change, message in bad:
        args = {**CONTEXT, "obj": 5945, **change}
        target = tmp_path / "refused.psv"
        with pytest.raises(MeasurementError, match=message):
            ss.write_ades(_table((True,)), target, **args)
        assert not target.exists()  # refused before writing
    table = _table((True,))
    table["ra_err"] = [np.nan] * u.arcsec
    with pytest.raises(MeasurementError, match="rmsRA"):
        ss.write_ades(table, tmp_path / "nan.psv", obj=5945, **CONTEXT)
    table = _table((True,))
    table["mag"] = [40.0] * u.mag
    with pytest.raises(MeasurementError, match="mag"):
        ss.write_ades(table, tmp_path / "faint.psv", obj=5945, **CONTEXT)
    table = _table((True,))
    table.meta["band"] = "VRI4"
    with pytest.raises(MeasurementError, match="band"):
        ss.write_ades(table, tmp_path / "band.psv", obj=5945, **CONTEXT)
    with pytest.raises(MeasurementError, match="no detected target"):
        ss.write_ades(_table((False,)), tmp_path / "none.psv", obj=5945, **CONTEXT)
    with pytest.raises(MeasurementError, match=".psv or .xml"):
        ss.write_ades(_table((True,)), tmp_path / "obs.txt", obj=5945, **CONTEXT)
    with pytest.raises(OutputExistsError):
        ss.write_ades(_table((True,)), path, obj=5945, **CONTEXT)
    assert not list(tmp_path.glob(".*.part"))


def test_mpc80(tmp_path):
    path = tmp_path / "obs.txt"
    ss.write_mpc80(_table((True, True)), path, stn="688", obj=123456)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(len(line) == 80 for line in lines)
    line = lines[0]
    assert line[0:5] == "C3456"          # packed number 123456
    assert line[14] == "C"               # CCD
    assert line[15:32] == "2019 03 26.152466"
    assert line[32:44] == "08 18 30.707"
    assert line[44:56] == "+25 20 25.08"
    assert line[65:71] == "16.8 R" and line[77:80] == "688"
    ss.write_mpc80(_table((True,)), tmp_path / "prov.txt", stn="688", obj="2019 AB12")
    assert (tmp_path / "prov.txt").read_text()[5:12] == "K19A12B"
    with pytest.raises(MeasurementError, match="3-character"):
        ss.write_mpc80(_table((True,)), tmp_path / "x.txt", stn="68", obj=5945)


def test_completeness_and_its_plot(tmp_path):
    rng = np.random.default_rng(4)
    mag = rng.uniform(18, 23, 400)
    # a smooth detection probability: 50 % at 21.0
    detected = rng.uniform(size=mag.size) < 1 / (1 + np.exp((mag - 21.0) / 0.3))
    table = ss.completeness(mag * u.mag, detected, bins=10)
    assert table["n"].sum() == 400 and table["mag"].unit == u.mag
    assert table["fraction"][0] > 0.95 and table["fraction"][-1] < 0.05
    assert abs(table.meta["mag_50"] - 21.0) < 0.25
    assert np.all(table["fraction_lo"] <= table["fraction"])
    assert np.all(table["fraction"] <= table["fraction_hi"])
    import matplotlib
    matplotlib.use("agg")
    ax = ss.plot_completeness(table, label="test")
    ax.figure.savefig(tmp_path / "completeness.png")
    assert (tmp_path / "completeness.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="same"):
        ss.completeness([1, 2], [True])
