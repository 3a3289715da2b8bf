"""The architecture, enforced: who may import what under remoteexec/.

- No module reaches another module's private name (``from x import _y``, or
  ``x._y`` on an imported remoteexec module): make it public or move it.
- remoteexec/target/ runs on the host's Python: stdlib, psutil and
  remoteexec.target only (plus mitogen, which carries it there).
- The library does not import the command line (remoteexec.cli); the
  ``__main__`` modules are command-line entry points, so they may.
"""

from __future__ import annotations

import ast
import pathlib
import sys
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "remoteexec"
#: What target-side code may import besides the stdlib and remoteexec.target.
TARGET_EXTRA = {"psutil", "mitogen"}
STDLIB = getattr(sys, "stdlib_module_names", None)


def modules() -> Iterator[Tuple[str, pathlib.Path]]:
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


MODULES = dict(modules())


def absolute(module: str, path: pathlib.Path, node: ast.ImportFrom) -> str:
    """The absolute module name an ``from ... import`` names."""
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: pathlib.Path) -> List[Tuple[int, str, Optional[str]]]:
    """(line, module, name or None) for each import of ``module``'s source."""
    found: List[Tuple[int, str, Optional[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = absolute(module, path, node)
            for alias in node.names:
                if source + "." + alias.name in MODULES:
                    found.append((node.lineno, source + "." + alias.name, None))
                else:
                    found.append((node.lineno, source, alias.name))
    return found


def private_uses(module: str, path: pathlib.Path) -> List[str]:
    """Private names of other remoteexec modules that ``module`` uses."""
    tree = ast.parse(path.read_text(), str(path))
    bound: Dict[str, str] = {}  # local name -> remoteexec module
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("remoteexec"):
                    bound[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
        elif isinstance(node, ast.ImportFrom):
            source = absolute(module, path, node)
            if not source.startswith("remoteexec"):
                continue
            for alias in node.names:
                full = source + "." + alias.name
                if full in MODULES:
                    bound[alias.asname or alias.name] = full
                elif alias.name.startswith("_") and source != module:
                    problems.append(
                        "line %d: from %s import %s" % (node.lineno, source, alias.name)
                    )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and bound[node.value.id] != module
        ):
            problems.append("line %d: %s.%s" % (node.lineno, bound[node.value.id], node.attr))
    return problems


def test_the_tree_is_found() -> None:
    assert "remoteexec.target.supervisor" in MODULES
    assert "remoteexec.executors.base" in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_of_another_module(module: str) -> None:
    assert private_uses(module, MODULES[module]) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("remoteexec.target")))
def test_target_side_imports_stdlib_only(module: str) -> None:
    if STDLIB is None:
        pytest.skip("sys.stdlib_module_names needs Python 3.10+")
    outside = [
        "line %d: %s" % (line, name)
        for line, name, _ in imports(module, MODULES[module])
        if not name.startswith("remoteexec.target")
        and name != "remoteexec.target"
        and name.split(".")[0] not in STDLIB
        and name.split(".")[0] not in TARGET_EXTRA
        and name != "__future__"
    ]
    assert outside == []


LIBRARY = sorted(
    m for m in MODULES if not m.startswith("remoteexec.cli") and not m.endswith("__main__")
)


@pytest.mark.parametrize("module", LIBRARY)
def test_the_library_does_not_import_the_command_line(module: str) -> None:
    found = [
        "line %d: %s" % (line, name)
        for line, name, _ in imports(module, MODULES[module])
        if name == "remoteexec.cli" or name.startswith("remoteexec.cli.")
    ]
    assert found == []


def test_the_checks_catch_what_they_are_for(tmp_path: pathlib.Path) -> None:
    """Each check on a module written to break it."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from remoteexec.target.supervisor import _hidden\n"
        "from remoteexec.target import procs\n"
        "import remoteexec.cli.main\n"
        "import yaml\n"
        "procs._private(1)\n"
    )
    assert private_uses("remoteexec.target.bad", bad) == [
        "line 1: from remoteexec.target.supervisor import _hidden",
        "line 5: remoteexec.target.procs._private",
    ]
    names = [name for _, name, _ in imports("remoteexec.target.bad", bad)]
    assert "yaml" in names and "remoteexec.cli.main" in names
