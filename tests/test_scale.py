"""Per-frame work through dask, a work folder for bounded memory, running stacks."""

import numpy as np
import pytest
from astropy import units as u

import shiftstack_ccd as ss


@pytest.fixture(scope="module")
def sim():
    return ss.simulate_observation(n_frames=6, shape=(96, 96), n_stars=12, target_snr=30,
                                   seed=21)


def _same(a, b):
    assert np.array_equal(a.stack.mask, b.stack.mask)
    good = ~a.stack.mask
    assert np.array_equal(a.stack.data[good], b.stack.data[good])
    assert np.array_equal(a.stack.uncertainty.array[good], b.stack.uncertainty.array[good])
    assert np.array_equal(a.coverage, b.coverage)
    assert list(a.table["resample"]) == list(b.table["resample"])


def test_threads_and_work_folder_give_identical_results(sim, tmp_path):
    serial = ss.shift_and_stack(sim.frames, sim.ephemeris, size=61, method="median")
    threads = ss.shift_and_stack(sim.frames, sim.ephemeris, size=61, method="median",
                                 scheduler="threads")
    _same(serial, threads)
    paths = [str(p) for p in sim.write(tmp_path / "frames")]
    from_files = ss.shift_and_stack(paths, sim.ephemeris, size=61, method="median")
    streamed = ss.shift_and_stack(paths, sim.ephemeris, size=61, method="median",
                                  workdir=tmp_path, mem_limit=2e6)
    _same(from_files, streamed)
    # the files hold the frames to the precision of the WCS cards written (1e-12 deg); the
    # sky is subtracted, so values sit near zero: float32 rounding, within 1e-5 of the noise
    good = ~serial.stack.mask
    noise = float(np.median(serial.stack.uncertainty.array[good]))
    assert np.allclose(from_files.stack.data[good], serial.stack.data[good], rtol=1e-6,
                       atol=1e-5 * noise)
    # the work folder is emptied afterwards: only the input frames remain
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_local_cluster_on_loopback_is_bit_identical(sim, tmp_path):
    distributed = pytest.importorskip("distributed")
    paths = [str(p) for p in sim.write(tmp_path / "frames")]
    serial = ss.shift_and_stack(paths, sim.ephemeris, size=61, subtract_static=True,
                                workdir=tmp_path)
    in_memory = ss.shift_and_stack(paths, sim.ephemeris, size=61, subtract_static=True)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        parallel = ss.shift_and_stack(paths, sim.ephemeris, size=61, subtract_static=True,
                                      scheduler=cluster.scheduler_address,
                                      workdir=tmp_path)
    _same(serial, parallel)
    # through the work folder the frames' WCS is written at 1e-12 deg: float tolerance
    good = ~in_memory.stack.mask
    noise = np.median(in_memory.stack.uncertainty.array[good])
    assert np.max(np.abs(parallel.stack.data[good] - in_memory.stack.data[good])) < 1e-4 * noise


def test_intermediate_stacks_are_running_means(sim):
    seen = []
    result = ss.shift_and_stack(sim.frames, sim.ephemeris, size=41, sky_stack=False,
                                intermediate=lambda k, image: seen.append((k, image)))
    assert [k for k, _ in seen] == list(range(1, 7))
    final = seen[-1][1]
    good = ~result.stack.mask
    assert np.allclose(final.data[good], result.stack.data[good], rtol=1e-5)
    # after 3 frames: the mean stack of the first three
    first3 = ss.shift_and_stack(sim.frames[:3], sim.ephemeris, size=41, sky_stack=False,
                                reference_time=result.target_frame.reference_time)
    both = ~first3.stack.mask & ~seen[2][1].mask
    assert np.allclose(seen[2][1].data[both], first3.stack.data[both], rtol=1e-5)


def test_progress_is_logged(sim, caplog):
    with caplog.at_level("INFO", logger="shiftstack_ccd.progress"):
        ss.shift_and_stack(sim.frames, sim.ephemeris, size=31, sky_stack=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "shiftstack_ccd.progress"]
    # one pass over the frames: nothing needs them all before the target grids
    assert "preparing frames: 6/6" in lines
    assert not any(line.startswith("resampling on the target") for line in lines)
    caplog.clear()
    with caplog.at_level("INFO", logger="shiftstack_ccd.progress"):
        ss.shift_and_stack(sim.frames, sim.ephemeris, size=31, sky_stack=False,
                           subtract_static=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "shiftstack_ccd.progress"]
    assert "preparing frames: 6/6" in lines and "resampling on the target: 6/6" in lines


def test_exposure_weights_and_header(sim):
    result = ss.shift_and_stack(sim.frames, sim.ephemeris, size=31, weights="exptime")
    h = result.stack.meta
    assert h["EXPTOTAL"] == pytest.approx(6 * sim.exptime.to_value(u.s))
    assert np.allclose(result.table["weight"], 1 / 6)
    times = result.table["mid_time"]
    assert abs(h["MJD-AVG"] - np.mean(times.mjd)) * 86400 < 1e-3
