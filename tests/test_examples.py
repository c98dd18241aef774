"""The examples: the gallery scripts of examples/ and the README's "Use it".

Running the gallery is the docs build's job (``tox -e build_docs``: sphinx-gallery executes
every ``examples/plot_*.py``, see docs/install.rst); here only what is cheap is checked, so
that a broken header or a syntax error is caught by the default test run. The README's
example is run on the real Lowell frames and must print what the README says it prints.
"""

import ast
import re
from pathlib import Path

import pytest
from astropy import units as u

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(EXAMPLES.glob("plot_*.py"))


def test_gallery_has_the_examples_of_a_newcomers_path():
    assert (EXAMPLES / "GALLERY_HEADER.rst").is_file()
    names = {path.stem for path in SCRIPTS}
    for topic in ("quick_start", "lowell_night", "hst_migration", "pipeline_file"):
        assert any(name.endswith(topic) for name in names), (topic, names)
    # the docs build runs them: the gallery is configured on this folder and in the toctree
    conf = (ROOT / "docs" / "conf.py").read_text()
    assert "sphinx_gallery.gen_gallery" in conf and '"../examples"' in conf
    assert "generated/examples/index" in (ROOT / "docs" / "index.rst").read_text()


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_example_compiles_and_has_a_gallery_header(path):
    source = path.read_text(encoding="utf-8")
    compile(source, str(path), "exec")  # a SyntaxError names the file and line
    module = ast.parse(source)
    docstring = ast.get_docstring(module, clean=False)
    assert docstring is not None and isinstance(module.body[0], ast.Expr), (
        f"{path.name}: sphinx-gallery needs a module docstring first")
    lines = docstring.strip("\n").splitlines()
    title, underline = lines[0], lines[1]
    # a reST title: text, then '=' at least as long, then a paragraph of description
    assert title.strip() and re.fullmatch(r"=+", underline), (path.name, lines[:2])
    assert len(underline) >= len(title), f"{path.name}: title underline too short"
    assert any(line.strip() for line in lines[2:]), f"{path.name}: no description"
    # every code cell after the header is introduced by a '# %%' separator with text
    assert source.count("\n# %%\n") >= 2, f"{path.name}: no '# %%' text cells"


def _readme_use_it():
    """The README's "Use it" Python block and the output it says the block prints."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Use it"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    printed = re.search(r"It prints\n\n```\n(.*?)```", section, re.S).group(1)
    return code, printed


def test_readme_use_it_prints_what_the_readme_says(shared_data, tmp_path, monkeypatch,
                                                   capsys):
    shared_data("lowell42-5945/5945")
    code, printed = _readme_use_it()
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert capsys.readouterr().out == printed
    # the asteroid is detected where the ephemeris puts it (the stack is on its motion),
    # and the stack was written where the README says
    row = namespace["m"][0]
    assert row["detected"] and row["snr"] > 50
    assert row["offset"].to_value(u.arcsec) < 0.25
    assert (tmp_path / "roachapproach.fits").is_file()
