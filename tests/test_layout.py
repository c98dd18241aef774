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
