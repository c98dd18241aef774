"""The command line: demo, stack, ephemeris; inputs untouched, outputs atomic."""

import re
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.time import Time

import shiftstack_ccd as ss
from shiftstack_ccd._utils import atomic_output
from shiftstack_ccd.cli import main


@pytest.fixture
def sim_files(tmp_path):
    sim = ss.simulate_observation(n_frames=4, shape=(96, 96), n_stars=15, target_snr=40,
                                  seed=11)
    paths = sim.write(tmp_path / "frames")
    eph = tmp_path / "eph.ecsv"
    sim.ephemeris.write(eph)
    return sim, [str(p) for p in paths], eph


def test_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out)]) == 0
    text = capsys.readouterr().out
    single = float(re.search(r"S/N in one frame: ([\d.]+)", text).group(1))
    stacked = float(re.search(r"S/N in the mean stack: ([\d.]+)", text).group(1))
    assert stacked > 2 * single  # nine frames: about three times, measured the same way
    assert (out / "stack.fits").is_file() and (out / "stack.png").is_file()
    assert len(list((out / "frames").glob("sim_*.fits"))) == 9
    with fits.open(out / "stack.fits") as hdul:
        assert hdul[0].header["NCOMBINE"] == 9
    # a second run refuses to overwrite, and leaves the first run's files as they were
    before = (out / "stack.fits").read_bytes()
    assert main(["demo", "--output-dir", str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    assert (out / "stack.fits").read_bytes() == before
    assert main(["demo", "--output-dir", str(out), "--overwrite"]) == 0


def test_stack_from_files_leaves_inputs_untouched(sim_files, tmp_path, capsys, digests):
    sim, paths, eph = sim_files
    before = digests(paths + [str(eph)])
    out, png = tmp_path / "stack.fits", tmp_path / "stack.png"
    assert main(["stack", *paths, "--ephemeris", str(eph), "--method", "median",
                 "--size", "41", "-o", str(out), "--preview", str(png)]) == 0
    assert digests(paths + [str(eph)]) == before
    assert "wrote" in capsys.readouterr().out
    result = ss.StackResult.read(out)
    assert result.stack.shape == (41, 41)
    assert result.stack.meta["SSCOMB"] == "median" and result.stack.meta["NCOMBINE"] == 4
    x, y = ss.centroid_target(result.stack, (20, 20))
    assert abs(x - 20) < 0.1 and abs(y - 20) < 0.1
    assert png.stat().st_size > 0
    # no temporary file is left beside the outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eph.ecsv", "frames", "stack.fits",
                                                          "stack.png"]


def test_stack_with_linear_rates_and_glob(sim_files, tmp_path):
    sim, paths, _ = sim_files
    out = tmp_path / "linear.fits"
    p = sim.target_position
    assert main(["stack", str(Path(paths[0]).parent / "sim_*.fits"),
                 "--rates", str(sim.ra_rate.to_value(u.arcsec / u.hour)),
                 str(sim.dec_rate.to_value(u.arcsec / u.hour)),
                 "--position", str(p.ra.deg), str(p.dec.deg), "--epoch", sim.epoch.isot,
                 "--size", "31", "-o", str(out), "--no-sky"]) == 0
    with fits.open(out) as hdul:
        assert hdul[0].header["EPHKIND"] == "linear"
        assert "SKY" not in hdul
        data = hdul[0].data
    x, y = ss.centroid_target(data, (15, 15))
    assert abs(x - 15) < 0.1 and abs(y - 15) < 0.1


def test_stack_errors_are_one_line(sim_files, tmp_path, capsys):
    sim, paths, eph = sim_files
    assert main(["stack", *paths, "-o", str(tmp_path / "x.fits")]) == 2  # usage
    assert "give exactly one motion model" in capsys.readouterr().err
    assert main(["stack", str(tmp_path / "nope.fits"), "--ephemeris", str(eph)]) == 1
    err = capsys.readouterr().err
    assert "nope.fits: no such file" in err and "Traceback" not in err
    existing = tmp_path / "exists.fits"
    existing.write_bytes(b"keep me")
    assert main(["stack", *paths, "--ephemeris", str(eph), "-o", str(existing)]) == 1
    assert "exists" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"
    assert main(["stack", *paths, "--rates", "1", "2", "-o", str(tmp_path / "y.fits")]) == 2
    assert "--rates needs --position" in capsys.readouterr().err


def test_ephemeris_command_one_request(shared_data, transport, tmp_path, monkeypatch,
                                       capsys):
    """Frames within the recorded Ceres range; Horizons mocked at the HTTP level."""
    monkeypatch.setenv("SHIFTSTACK_CCD_CACHE", str(tmp_path / "cache"))
    transport.answer = Path(shared_data(
        "ephemerides/astroquery_jplhorizons/ceres_ephemerides_range.txt")).read_text()
    sim = ss.simulate_observation(n_frames=5, shape=(32, 32), n_stars=2, seed=1,
                                  start=Time("2022-06-20T02:00:00", scale="utc"))
    paths = [str(p) for p in sim.write(tmp_path / "frames")]
    out = tmp_path / "eph.ecsv"
    assert main(["ephemeris", *paths, "--target", "Ceres", "--location", "688",
                 "--id-type", "smallbody", "-o", str(out)]) == 0
    assert len(transport.urls) == 1
    assert transport.params()["CENTER"] == "'688'"
    eph = ss.Ephemeris.from_table(out)
    assert eph.kind == "horizons"
    times = Time([ss.mid_exposure_time(f) for f in sim.frames])
    assert eph.time_range[0] <= times.min() and times.max() <= eph.time_range[1]
    # again: answered from the cache, no request
    assert main(["ephemeris", *paths, "--target", "Ceres", "--location", "688",
                 "--id-type", "smallbody", "-o", str(out), "--overwrite"]) == 0
    assert len(transport.urls) == 1


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.fits"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target, overwrite=True) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_stack_write_interrupted_keeps_old_file(sim_files, tmp_path, monkeypatch):
    sim, _, _ = sim_files
    result = ss.shift_and_stack(sim.frames, sim.ephemeris, size=21)
    out = tmp_path / "stack.fits"
    out.write_bytes(b"previous")

    def broken(self, name, **kwargs):
        Path(name).write_bytes(b"partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(fits.HDUList, "writeto", broken)
    with pytest.raises(KeyboardInterrupt):
        result.write(out, overwrite=True)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".stack", "stack"))] \
        == ["stack.fits"]


def test_stack_with_horizons_inline(shared_data, transport, tmp_path, monkeypatch):
    """``stack --target --location``: one Horizons request for the frames' times, then stack."""
    monkeypatch.setenv("SHIFTSTACK_CCD_CACHE", str(tmp_path / "cache"))
    transport.answer = Path(shared_data(
        "ephemerides/astroquery_jplhorizons/ceres_ephemerides_range.txt")).read_text()
    start = Time("2022-06-20T02:00:00", scale="utc")
    recorded = ss.Ephemeris.from_table(shared_data(
        "ephemerides/astroquery_jplhorizons/ceres_ephemerides_range.txt"))
    # frames centred on where Ceres is, so that it is on them
    sim = ss.simulate_observation(n_frames=3, shape=(64, 64), n_stars=5, seed=2, start=start,
                                  center=recorded.at(start + 5 * u.min))
    paths = [str(p) for p in sim.write(tmp_path / "frames")]
    out = tmp_path / "ceres.fits"
    assert main(["stack", *paths, "--target", "Ceres", "--location", "688", "--id-type",
                 "smallbody", "--size", "21", "-o", str(out)]) == 0
    assert len(transport.urls) == 1
    with fits.open(out) as hdul:
        assert hdul[0].header["EPHKIND"] == "horizons"
        assert hdul[0].header["EPHLOC"] == "688"


def test_stack_options_for_scale_and_quality(sim_files, tmp_path, capsys):
    sim, paths, eph = sim_files
    out = tmp_path / "full.fits"
    assert main(["stack", *paths, "--ephemeris", str(eph), "--size", "41", "-o", str(out),
                 "--clean-cosmic-rays", "--subtract-static", "--refine", "--weights",
                 "inverse-variance", "--scheduler", "threads", "--workdir",
                 str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "resampling on the target: 4/4" in err  # progress, shown by default
    with fits.open(out) as hdul:
        h = hdul[0].header
        assert h["SSSTATIC"] and h["SSREFINE"] and h["SSWEIGHT"] == "inverse-variance"
        table = hdul["FRAMES"].data
        assert np.all(table["cr_flagged"] >= 0) and "refine_dx" in table.names
    # the work folder holds nothing afterwards
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("shiftstack-")]


def test_stack_memory_limit_and_drizzle(sim_files, tmp_path, capsys, monkeypatch):
    """--mem-limit reaches the stack (a tiny budget spills products to a temporary folder,
    which is gone afterwards); --resample drizzle --pixfrac are recorded; bad sizes are
    refused in one line."""
    import tempfile
    sim, paths, eph = sim_files
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "drizzled.fits"
    assert main(["-v", "stack", *paths, "--ephemeris", str(eph), "--size", "31", "-o",
                 str(out), "--mem-limit", "10kB", "--resample", "drizzle", "--pixfrac",
                 "0.8"]) == 0
    assert "over the memory budget of 0 MB" in capsys.readouterr().err
    assert list((tmp_path / "tmp").iterdir()) == []
    with fits.open(out) as hdul:
        assert hdul[0].header["SSRESMP"] == "drizzle"
        assert set(hdul["FRAMES"].data["resample"]) == {"drizzle"}
    assert main(["stack", *paths, "--ephemeris", str(eph), "--mem-limit", "lots"]) == 2
    assert "'lots' is not a size" in capsys.readouterr().err
