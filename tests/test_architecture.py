"""The layering holds by construction: every module imports on its own, and no two modules import each other
(directly or round a loop), not even through a function-local import that would hide the loop until run time.

The import-linter contracts in pyproject.toml (`make lint`) check which layer may import which."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MODULES = sorted(".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
                 for p in (SRC / "mirops").rglob("*.py") if p.name != "__main__.py")  # __main__ runs the CLI


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    # One interpreter per module would take minutes (torch); a fresh interpreter per module *group* still
    # catches an import that only works because another module was imported first: each import below runs
    # with sys.modules emptied of mirops.
    script = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for key in [k for k in sys.modules if k == 'mirops' or k.startswith('mirops.')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc(limit=3))\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *MODULES], capture_output=True, text=True)
    assert done.returncode == 0, f"modules that do not import on their own:\n{done.stdout}{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("mirops", cache_dir=None)


def test_no_import_cycle_between_modules(graph):
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported == importer or imported.startswith(importer + ".") or importer.startswith(imported + "."):
                continue  # a package and its own modules
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.append(" -> ".join((importer, *back)))
    assert not cycles, "import cycles (each a module importing one that imports it back):\n" + "\n".join(cycles)


def test_no_private_name_is_imported_from_another_module():
    offenders = []
    for path in [*(SRC / "mirops").rglob("*.py"), *(SRC.parent / "flows").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mirops"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    offenders.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: {', '.join(private)}")
    assert not offenders, "private names imported across modules:\n" + "\n".join(offenders)


def test_flows_are_not_an_installed_package():
    # Run outside the repository, as a user's script would: `flows` must not be importable from site-packages.
    done = subprocess.run([sys.executable, "-c", "import flows"], capture_output=True, text=True, cwd="/")
    assert done.returncode != 0 and "No module named 'flows'" in done.stderr, done.stderr
