"""The step registry: built-in steps, entry points of other distributions, the contract."""

import configparser
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning

import shiftstack_ccd as ss
from shiftstack_ccd.cli import main
from shiftstack_ccd.exceptions import ShiftStackError
from shiftstack_ccd.steps import (BUILTIN_STEPS, ENTRY_POINT_GROUP, UnknownStepError,
                                  available_steps, get_step)

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"


def make_distribution(root, name, module, source, entry_points):
    """An installed distribution, as pip leaves one: a module and its ``.dist-info``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "\n".join(f"{key} = {value}" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}\n")
    return root


PLUGIN_SOURCE = '''
    """A third-party step package for the tests."""
    import numpy as np


    def scale_frame(ccd, factor: float = 2.0, note: str = "scaled"):
        """Multiply a frame by a factor (a test step)."""
        out = ccd.multiply(factor, handle_meta="first_found")
        out.meta = ccd.meta.copy()
        out.meta["SCALEFAC"] = (factor, note)
        return out


    def stack_sum(frames):
        """Add frames (a test stack step)."""
        return sum(f.data for f in frames)


    stack_sum.step_kind = "stack"
    not_a_function = 42
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A third-party distribution with a good step, a stack step and three broken entries."""
    root = make_distribution(
        tmp_path / "site", "ss-test-plugin", "ss_test_plugin", PLUGIN_SOURCE,
        {"scale_frame": "ss_test_plugin:scale_frame",
         "stack_sum": "ss_test_plugin:stack_sum",
         "missing_module": "ss_test_plugin_nowhere:step",
         "not_callable": "ss_test_plugin:not_a_function",
         "clean_cosmic_rays": "ss_test_plugin:scale_frame"})
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(__import__("sys").modules, "ss_test_plugin", raising=False)
    return root


def test_builtin_table_matches_setup_cfg():
    """Our steps are found without installing; the table and the entry points agree."""
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    declared = {}
    for line in parser["options.entry_points"][ENTRY_POINT_GROUP].strip().splitlines():
        name, _, value = line.partition("=")
        declared[name.strip()] = value.strip()
    assert declared == {name: value for name, (value, _) in BUILTIN_STEPS.items()}


def test_available_steps_lists_ours_with_kind_and_summary():
    steps = available_steps()
    assert set(BUILTIN_STEPS) <= set(steps)
    assert steps["clean_cosmic_rays"].function is ss.clean_cosmic_rays
    assert steps["shift_and_stack"].function is ss.shift_and_stack
    assert steps["clean_cosmic_rays"].kind == "frame"
    assert steps["combine_frames"].kind == "stack"
    assert steps["subtract_static_sky"].kind == "grid"
    assert steps["clean_cosmic_rays"].distribution == "shiftstack_ccd"
    # the one-line description is the docstring's first line, roles reduced to text
    assert steps["read_frames"].summary == "Read frames into CCDData, nothing guessed silently."
    assert {"clean_cosmic_rays", "correct_wcs"} <= set(available_steps(kind="frame"))
    assert "combine_frames" not in available_steps(kind="frame")
    with pytest.raises(ValueError, match="kind"):
        available_steps(kind="frames")


def test_get_step_and_unknown_name():
    assert get_step("correct_wcs") is ss.correct_wcs
    with pytest.raises(UnknownStepError) as info:
        get_step("clean_cosmic_ray")
    message = str(info.value)
    assert "did you mean 'clean_cosmic_rays'?" in message
    assert "combine_frames" in message and "shift_and_stack" in message
    # both a ShiftStackError and a KeyError, and its message is not quoted like a KeyError's
    assert isinstance(info.value, ShiftStackError) and isinstance(info.value, KeyError)
    assert not message.startswith("'")


def test_third_party_distribution_is_discovered(plugin):
    with pytest.warns(AstropyUserWarning) as record:
        steps = available_steps()
    messages = [str(w.message) for w in record]
    # the good ones are there, with their distribution and kind
    assert steps["scale_frame"].distribution == "ss-test-plugin"
    assert steps["scale_frame"].kind == "frame"
    assert steps["scale_frame"].summary == "Multiply a frame by a factor (a test step)."
    assert steps["stack_sum"].kind == "stack"
    # a broken entry point is named in a warning and skipped, the rest still listed
    assert "missing_module" not in steps and "not_callable" not in steps
    assert any("'missing_module'" in m and "ss-test-plugin" in m and "ModuleNotFoundError" in m
               for m in messages)
    assert any("'not_callable'" in m and "not callable" in m for m in messages)
    # a third-party step cannot take the name of one of ours
    assert steps["clean_cosmic_rays"].function is ss.clean_cosmic_rays
    assert any("'clean_cosmic_rays'" in m and "is ignored" in m for m in messages)
    # and get_step finds the plug-in's step, which works on a frame
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        scale = get_step("scale_frame")
    frame = CCDData(np.ones((4, 4), dtype=np.float32), unit="adu")
    assert float(scale(frame, factor=3.0).data.sum()) == 48.0


def test_third_party_step_gone_once_uninstalled(tmp_path, monkeypatch):
    """Discovery follows what is installed now, not what was seen before."""
    root = make_distribution(tmp_path / "site2", "ss-test-plugin2", "ss_test_plugin2",
                             PLUGIN_SOURCE, {"scale_twice": "ss_test_plugin2:scale_frame"})
    with monkeypatch.context() as m:
        m.syspath_prepend(str(root))
        assert "scale_twice" in available_steps()
    assert "scale_twice" not in available_steps()


def test_cli_steps_lists_every_step_with_a_description(plugin, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        assert main(["steps"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert main(["steps", "--kind", "stack"]) == 0
        names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    by_name = {line.split()[0]: line for line in lines}
    for name in BUILTIN_STEPS:
        assert name in by_name
    assert "Find cosmic-ray hits" in by_name["clean_cosmic_rays"]
    assert "frame" in by_name["clean_cosmic_rays"].split()
    assert by_name["scale_frame"].endswith("[ss-test-plugin]")
    assert names == ["combine_frames", "shift_and_stack", "stack_sum", "static_sky_template"]


# Arguments that make each built-in per-frame step do something on a simulated frame. A new
# per-frame step must be added here, which puts it under the contract test below.
CONTRACT_ARGS = {
    "clean_cosmic_rays": {"method": "median"},
    "correct_wcs": {"offset": (1.5, -0.5)},
}


def test_every_builtin_frame_step_is_contract_tested():
    ours = {name for name, info in available_steps(kind="frame").items()
            if info.distribution == "shiftstack_ccd"}
    assert ours == set(CONTRACT_ARGS)


@pytest.mark.parametrize("name", sorted(CONTRACT_ARGS))
def test_frame_step_contract(name):
    """New CCDData, input untouched, unit/mask/uncertainty/WCS carried, header records it."""
    sim = ss.simulate_observation(n_frames=1, shape=(64, 64), n_stars=10, seed=5)
    frame = sim.frames[0]
    data, unc = frame.data.copy(), frame.uncertainty.array.copy()
    meta = frame.meta.copy()
    crval = frame.wcs.wcs.crval.copy()
    out = get_step(name)(frame, **CONTRACT_ARGS[name])
    assert isinstance(out, CCDData) and out is not frame
    # the input is as it was
    assert np.array_equal(frame.data, data) and np.array_equal(frame.uncertainty.array, unc)
    assert dict(frame.meta) == dict(meta) and np.array_equal(frame.wcs.wcs.crval, crval)
    # what it carries
    assert out.unit == frame.unit and out.shape == frame.shape
    assert out.uncertainty is not None and out.wcs is not None and out.wcs.has_celestial
    assert out.meta["SSFILE"] == frame.meta["SSFILE"]
    # what it records: new cards or HISTORY
    added = set(out.meta.keys()) - set(frame.meta.keys())
    assert added, f"{name} recorded nothing in the header"
    assert all(len(key) <= 8 for key in added)


def _grid_step_args(sim):
    """What the stack stage gives each grid step: an output grid, a static-sky template."""
    grid = ss.TargetFrame.for_frames(sim.frames, sim.ephemeris, size=41)
    times = sim.truth["time"]
    on_sky = [ss.resample_to_target(f, grid.wcs, grid.shape) for f in sim.frames]
    template = get_step("static_sky_template")(
        on_sky, [grid.target_pixel_in(f, t) for f, t in zip(on_sky, times)])
    position = grid.target_pixel_in(sim.frames[0], times[0])
    return {"resample_to_target": ((grid.wcs, grid.shape), {}),
            "subtract_static_sky": ((template, position), {})}


def test_grid_step_contract():
    """Grid steps keep the per-frame contract; every built-in one is tested here."""
    sim = ss.simulate_observation(n_frames=3, shape=(64, 64), n_stars=10, seed=6)
    calls = _grid_step_args(sim)
    ours = {name for name, info in available_steps(kind="grid").items()
            if info.distribution == "shiftstack_ccd"}
    assert ours == set(calls)
    frame = sim.frames[0]
    data, meta = frame.data.copy(), frame.meta.copy()
    for name, (args, kwargs) in calls.items():
        out = get_step(name)(frame, *args, **kwargs)
        assert isinstance(out, CCDData) and out is not frame, name
        assert np.array_equal(frame.data, data) and dict(frame.meta) == dict(meta), name
        assert out.unit == frame.unit and out.uncertainty is not None, name
        added = set(out.meta.keys()) - set(frame.meta.keys())
        assert added and all(len(key) <= 8 for key in added), (name, added)


# --- the step runner and the provenance helper --------------------------------------------
def _mutating_steps():
    def adds_in_place(ccd):
        ccd.data[0, 0] += 1.0
        return ccd.copy()

    def masks_in_place(ccd):
        ccd.mask = np.zeros(ccd.shape, bool)
        ccd.mask[1, 1] = True
        return ccd.copy()

    def writes_header_in_place(ccd):
        ccd.meta["TOUCHED"] = True
        return ccd.copy()

    def returns_input(ccd):
        return ccd

    return [adds_in_place, masks_in_place, writes_header_in_place, returns_input]


@pytest.mark.parametrize("step", _mutating_steps(), ids=lambda f: f.__name__)
def test_runner_refuses_a_step_that_changes_its_input(step):
    frame = ss.simulate_observation(n_frames=1, shape=(32, 32), n_stars=3, seed=1).frames[0]
    with pytest.raises(ShiftStackError, match=f"step '{step.__name__}' changed its input"):
        ss.run_steps(frame, [step])


def test_runner_refuses_a_step_that_returns_no_ccddata():
    frame = ss.simulate_observation(n_frames=1, shape=(32, 32), n_stars=3, seed=1).frames[0]
    with pytest.raises(ShiftStackError, match="returned ndarray, not a CCDData"):
        ss.run_steps(frame, [("as_array", lambda ccd: np.asarray(ccd.data), {})])


def test_shift_and_stack_runs_its_steps_through_the_runner():
    """shift_and_stack and pipeline files share the runner: a bad step is caught in both."""
    sim = ss.simulate_observation(n_frames=2, shape=(48, 48), n_stars=5, seed=2)
    with pytest.raises(ShiftStackError, match="step 'adds_in_place' changed its input"):
        ss.shift_and_stack(sim.frames, sim.ephemeris, size=21,
                           per_frame_steps=[_mutating_steps()[0]])


def test_runner_result_and_call_recorded_in_the_header():
    sim = ss.simulate_observation(n_frames=1, shape=(64, 64), n_stars=5, seed=3)
    out = ss.run_steps(sim.frames[0], [(ss.clean_cosmic_rays, {"threshold": 6.0})])
    history = [str(line) for line in out.meta["HISTORY"]]
    # the step's own result (long lines continue on more cards), then the call as the
    # decorator records it
    assert "clean_cosmic_rays: method=median, threshold=6.0" in "".join(history[:-1])
    assert history[-1] == "clean_cosmic_rays(threshold=6.0)"
    assert out.meta["CRTHRESH"] == 6.0


def test_provenance_header_keys_and_plain_dict_meta():
    with pytest.raises(ValueError, match="longer than 8 characters"):
        ss.provenance_header({}, [("TOOLONGKEY", 1, "")])
    # a dict that FITS cannot hold stays a dict, its values and HISTORY added
    meta = {"OBSERVER": "Ana Mar\u00eda", "HISTORY": "read"}  # not ASCII: no FITS card
    out = ss.provenance_header(meta, [("CRNFLAG", 3, "pixels")], "step: done")
    assert isinstance(out, dict) and out["CRNFLAG"] == 3
    assert out["HISTORY"] == ["read", "step: done"] and meta["HISTORY"] == "read"


def test_run_step_says_nothing_of_a_card_it_cannot_format():
    """The runner's before/after checksum formats the header; a long value and comment (an
    input file's path) must not make astropy warn "Card is too long" to the user."""
    from astropy.io import fits

    from shiftstack_ccd.steps import run_step

    header = fits.Header()
    header["SSF001"] = ("/work/shared/data/lowell42-5945/5945/20190326.0135.fits", "input frame")
    ccd = CCDData(np.ones((4, 4)), unit="adu", meta=header)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = run_step(lambda frame: frame.multiply(2.0), ccd)
    assert out.data[0, 0] == 2.0 and ccd.data[0, 0] == 1.0
