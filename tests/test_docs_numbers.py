"""The numbers of the documentation come from running the code.

A figure about one run (an S/N, an offset, a chi-square, a speed ratio) is printed by a
gallery example, checked by a doctest, or kept in ``benchmarks/results/<name>.txt`` (the
verbatim output of ``python benchmarks/run_all.py <name>``) and included by
``literalinclude``. These tests check that every included file exists, that every results
file says which command made it and that run_all.py can remake it, and that the prose of
the pages and of the README holds no measured-looking number typed by hand (a decimal
number, a percentage, "S/N" followed by a number, "N times" or "N x") outside code,
literals and included files, but for the few listed in ``ALLOWED`` with the reason.
"""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# the pages written by hand (sphinx-gallery writes sg_execution_times.rst at each build)
PAGES = sorted(p for p in DOCS.glob("*.rst") if p.name != "sg_execution_times.rst")
RESULTS = ROOT / "benchmarks" / "results"

# Decimal numbers, percentages, an S/N, a ratio ("3 times", "0.3x"); not parts of words,
# versions or dates (the look-behind), nor of numbers in code.
NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?\s?(?:times|x)\b|\d+\s?%|S/N\s+\d[\d.]*"
                    r"|\d+\.\d+)")

# (file, the number as matched, the text that follows it): why it may be typed.
ALLOWED = {
    ("install.rst", "3.10", " or later"): "python_requires in setup.cfg",
    ("README.md", "3.10", "+)"): "python_requires in setup.cfg",
    ("getting_started.rst", "11 x", " 11 pixel cutout"): "the doctest's own cutout size",
    ("getting_started.rst", "0.3", " pixel"): "asserted by the doctest that follows",
    ("getting_started.rst", "1.5", " pixels between"): "the doctest's rates times its cadence",
    ("measuring.rst", "0.25", " arcsec)"): "the tolerance tests/test_measure_lowell.py asserts",
    ("measuring.rst", "S/N 5", " to 50"): "bench_measure.py's fakes (np.geomspace(5, 50, 30))",
    ("measuring.rst", "S/N 8", " or more"): "the column bench_measure.py prints (S/N>=8)",
    ("measuring.rst", "S/N 1.5", " to 12"): "bench_measure.py's faint fakes",
    ("measuring.rst", "S/N 10", " or more"): "the shape test's rule (measure/_shape.py "
                                            "ELONGATION_MIN_SNR)",
    ("measuring.rst", "18.4", " is"): "the shape test's threshold (measure/_shape.py "
                                      "ELONGATION_CHI2)",
    ("searching.rst", "0.9", " to 1.1"): "the range tests/test_search.py asserts",
    ("searching.rst", "1.1", " on the"): "the range tests/test_search.py asserts",
    ("searching.rst", "90 %", " of its"): "max_loss=0.1, the parameter's default",
    ("searching.rst", "420 x", " 420 sub"): "the sub-field of tests/test_search.py",
    ("searching.rst", "S/N 8", " or more"): "the fakes tests/test_search.py checks",
    ("searching.rst", "1.5", "\" and 4"): "the tolerance tests/test_search.py asserts",
    ("searching.rst", "0.01", " pixel (checked thro"): "search/_resample.translations' "
                                                       "tolerance parameter",
}


def _numbers_in_rst(text):
    """(number, following text) of the prose of an rst page: Text nodes outside literal
    blocks, ``literals``, math, doctests, comments and directives docutils does not know
    (doctest-skip, literalinclude ... are Sphinx's: their content is not prose)."""
    docutils_core = pytest.importorskip("docutils.core")
    import docutils.nodes as nodes
    skip = (nodes.literal_block, nodes.literal, nodes.math, nodes.math_block,
            nodes.doctest_block, nodes.raw, nodes.comment, nodes.system_message,
            nodes.problematic, nodes.target, nodes.substitution_definition)
    tree = docutils_core.publish_doctree(text, settings_overrides={
        "report_level": 5, "halt_level": 5, "file_insertion_enabled": False})
    found = []

    def walk(node):
        if isinstance(node, skip):
            return
        if isinstance(node, nodes.Text):
            text = str(node).replace("\n", " ")
            found.extend((m.group(0), text[m.end():m.end() + 20]) for m in NUMBER.finditer(text))
            return
        for child in node.children:
            walk(child)

    walk(tree)
    return found


def _numbers_in_markdown(text):
    """The same for the README: outside fenced code blocks and `code` spans."""
    text = re.sub(r"`[^`]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
    text = text.replace("\n", " ")
    return [(m.group(0), text[m.end():m.end() + 20]) for m in NUMBER.finditer(text)]


def _unexplained(name, found):
    return [f"{name}: {number!r} (followed by {after!r})" for number, after in found
            if not any(name == page and number == allowed and after.startswith(start)
                       for page, allowed, start in ALLOWED)]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_no_number_typed_in_the_prose_of_a_page(page):
    typed = _unexplained(page.name, _numbers_in_rst(page.read_text(encoding="utf-8")))
    assert not typed, ("numbers typed by hand; print them from a gallery example, a doctest "
                       "or a benchmark included with literalinclude (or, for a parameter "
                       "or a tested tolerance, add them to ALLOWED with the reason): "
                       + "; ".join(typed))


def test_no_number_typed_in_the_prose_of_the_readme():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    typed = _unexplained("README.md", _numbers_in_markdown(text))
    assert not typed, "; ".join(typed)


def test_the_checker_finds_typed_numbers():
    """What the two tests above must catch, and what they must leave alone."""
    page = ("The asteroid is at S/N 320, 0.008 arcsec from its line; the search runs 0.3x\n"
            "as fast, 3 times slower, 90 % found. Python 3.10, on 2019-03-26, in\n"
            "``0.5 arcsec``, :math:`1.25 \\log N`::\n\n    S/N 99.9 in a code block\n\n"
            ">>> 1.5 + 1\n2.5\n")
    assert [number for number, _ in _numbers_in_rst(page)] == [
        "S/N 320", "0.008", "0.3x", "3 times", "90 %", "3.10"]
    markdown = "S/N 3.1 here, `2.5` and\n```\n7.5 %\n```\n4-5 times\n"
    assert [number for number, _ in _numbers_in_markdown(markdown)] == ["S/N 3.1", "5 times"]


def _includes(page):
    """Files a page includes: literalinclude, include, image and figure targets."""
    text = page.read_text(encoding="utf-8")
    return re.findall(r"^\s*\.\. (?:literalinclude|include|image|figure):: (\S+)", text, re.M)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_included_file_exists(page):
    for target in _includes(page):
        path = (DOCS / target.lstrip("/")) if target.startswith("/") else page.parent / target
        assert path.is_file(), f"{page.name} includes {target}, which does not exist"


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_and_results_file_goes_through_run_all():
    run_all = _run_all()
    benchmarks = {path.stem for path in (ROOT / "benchmarks").glob("bench_*.py")}
    assert benchmarks <= set(run_all.RUNS), ("benchmarks that run_all.py does not run: "
                                             f"{sorted(benchmarks - set(run_all.RUNS))}")
    for name in run_all.RUNS:
        assert (ROOT / run_all.script(name)).is_file(), name
    for path in sorted(RESULTS.glob("*.txt")):
        assert path.stem in run_all.RUNS, f"{path.name}: no run in run_all.py makes it"
        first = path.read_text(encoding="utf-8").splitlines()[0]
        # the command, the date (UTC) and the machine, as run_all.run writes them
        assert re.match(rf"\$ python {re.escape(run_all.script(path.stem))}\b.*"
                        r"# \d{4}-\d\d-\d\d \d\d:\d\d UTC; .+ cores.*; load average ", first), (
            path.name, first)


def test_performance_page_includes_every_results_file():
    text = (DOCS / "performance.rst").read_text(encoding="utf-8")
    for path in sorted(RESULTS.glob("*.txt")):
        assert f"../benchmarks/results/{path.name}" in text, path.name
