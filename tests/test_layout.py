"""The package's layout rules (DESIGN.md), checked on the source itself.

* no module over 800 lines;
* no private name (``_x``) imported from a public module (private modules ``_name.py`` are
  where shared private helpers live);
* no import cycle between the package's modules, counting imports inside functions too;
* ``import shiftstack_ccd`` imports none of the heavy libraries.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import shiftstack_ccd

PACKAGE = Path(shiftstack_ccd.__file__).parent
MAX_LINES = 800
# Modules still over the limit, each with the work that splits it. Remove an entry when it
# lands (the test then checks that module too).
BEING_SPLIT = {}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(name, path):
    """(imported module, names, line) of every import of a shiftstack_ccd module."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "shiftstack_ccd":
                yield target, [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "shiftstack_ccd":
                    yield alias.name, [], node.lineno


def test_no_module_over_800_lines():
    long = {name: n for name, path in _modules()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
            and name not in BEING_SPLIT}
    assert long == {}


def test_no_private_name_from_a_public_module():
    offences = []
    for name, path in _modules():
        for target, names, line in _imports(name, path):
            if target.split(".")[-1].startswith("_"):
                continue  # a private module: its names are for the package
            offences += [f"{name}:{line} imports {n} from {target}" for n in names
                         if n.startswith("_") and n != "__version__"]
    assert offences == []


def _is_private(dotted):
    return any(part.startswith("_") for part in dotted.split("."))


def _private_uses(path):
    """Private names of the package's public modules that a test or benchmark file uses:
    ``from shiftstack_ccd.mod import _x``, ``mod._x`` on an imported public module and
    ``monkeypatch.setattr("shiftstack_ccd.mod._x", ...)``. Private modules
    (``shiftstack_ccd._x``, ``shiftstack_ccd.pkg._y``) and their names are allowed."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = {}  # local name -> public module of the package it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shiftstack_ccd"):
            for alias in node.names:
                if _is_private(node.module):
                    continue
                if alias.name.startswith("_") and alias.name != "__version__":
                    found.append(f"{node.lineno}: {alias.name} from {node.module}")
                else:
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("shiftstack_ccd") and not _is_private(alias.name):
                    modules[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            found.append(f"{node.lineno}: {modules[node.value.id]}.{node.attr}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and node.value.startswith("shiftstack_ccd.")):
            module, _, attr = node.value.rpartition(".")
            if attr.startswith("_") and not _is_private(module) and " " not in node.value:
                found.append(f"{node.lineno}: {node.value}")
    return found


def test_tests_and_benchmarks_use_no_private_name():
    """Tests and benchmarks use the public API, or private modules (``shiftstack_ccd._x``),
    never a private name of a public module (which may change without notice)."""
    root = PACKAGE.parent
    offences = [f"{path.relative_to(root)}:{use}"
                for folder in ("tests", "benchmarks")
                for path in sorted((root / folder).glob("*.py")) for use in _private_uses(path)]
    assert offences == []


def test_no_import_cycle():
    modules = dict(_modules())
    graph = {}
    for name, path in modules.items():
        deps = set()
        for target, names, _ in _imports(name, path):
            # "from .pkg import module" imports a module; "from .mod import name" the module
            for n in names:
                if f"{target}.{n}" in modules:
                    deps.add(f"{target}.{n}")
                    break
            else:
                if target in modules:
                    deps.add(target)
        graph[name] = deps - {name}
    # The top-level package only gathers the public names; modules import it for nothing.
    graph = {k: {d for d in v if d != "shiftstack_ccd"} for k, v in graph.items()}

    cycles = []
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


HEAVY = ("matplotlib", "photutils", "skimage", "astroquery", "dask", "drizzle",
         "scipy.ndimage", "scipy.interpolate", "ccdproc", "astroscrappy", "reproject")


def test_import_is_light():
    """``import shiftstack_ccd`` leaves the heavy libraries to the functions that use them."""
    code = ("import json, sys, shiftstack_ccd; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_public_names_load_on_first_use():
    """The package's names (``ss.shift_and_stack``, ``from shiftstack_ccd import *``) are the
    step modules' public names, loaded when first asked for."""
    from shiftstack_ccd import stack, steps
    assert shiftstack_ccd.shift_and_stack is stack.shift_and_stack
    assert set(steps.__all__) <= set(shiftstack_ccd.__all__)
    assert "describe_steps" in dir(shiftstack_ccd)
    namespace = {}
    exec("from shiftstack_ccd import *", namespace)
    assert namespace["read_frames"] is shiftstack_ccd.read_frames


def test_steps_listing_matches_the_loaded_steps():
    """``shiftstack-ccd steps`` reads the docstrings from the source, not by importing them:
    it must say what the imported functions' docstrings say."""
    from shiftstack_ccd.steps import available_steps, describe_steps
    loaded = {name: (info.kind, info.summary, info.distribution)
              for name, info in available_steps().items()}
    assert describe_steps() == loaded


def test_cli_help_and_steps_import_no_step_module():
    code = ("import sys; from shiftstack_ccd.cli import main; main(['steps']); "
            "print([m for m in sys.modules if m.startswith('astropy.nddata') "
            "or m.startswith('scipy')][:3])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert "shift_and_stack" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_every_public_module_is_gathered():
    """Every public module's (or subpackage's) names are the package's names (the
    command-line modules excepted): a new module goes into ``_PUBLIC_MODULES`` in
    ``__init__.py``, or its names would be missing from ``shiftstack_ccd``."""
    import importlib

    public = {p.stem if p.suffix == ".py" else p.name for p in PACKAGE.iterdir()
              if not p.name.startswith(("_", ".")) and
              (p.suffix == ".py" or (p / "__init__.py").is_file())}
    missing = {}
    for name in sorted(public - {"cli", "demo"}):
        module = importlib.import_module(f"shiftstack_ccd.{name}")
        names = getattr(module, "__all__", None)  # else its names not starting with "_"
        if names is None:
            names = [n for n in vars(module) if not n.startswith("_")]
        if set(names) - set(shiftstack_ccd.__all__):
            missing[name] = sorted(set(names) - set(shiftstack_ccd.__all__))
    assert missing == {}
