"""The Prefect flow files (flows/ at the repository's top level), loaded by entrypoint path, never imported.

An entrypoint is `FILE.py:NAME`, relative to the flows folder, as `prefect deploy` and
`prefect.flows.load_flow_from_entrypoint` write them. The folder is `MIROPS_FLOWS_DIR`, else the project's own
`flows/` (a project may carry its own flows), else the one beside this package's source (an editable install
of the repository), else the copy a wheel ships inside the package. Nothing installs a top-level `flows`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

FLOWS_DIR_ENV = "MIROPS_FLOWS_DIR"
_PACKAGE = Path(__file__).resolve().parent
_CANDIDATES = (_PACKAGE.parents[1] / "flows", _PACKAGE / "prefect_flows")  # repository checkout, wheel copy


def flows_dir(root: Path | None = None) -> Path:
    """The folder the flow files are loaded from (see the module docstring for the order)."""
    if os.environ.get(FLOWS_DIR_ENV):
        folder = Path(os.environ[FLOWS_DIR_ENV])
        if not (folder / "retrain.py").is_file():
            raise FileNotFoundError(f"{FLOWS_DIR_ENV}={folder}: no retrain.py there (expected mirops' flow files)")
        return folder
    for folder in ((Path(root) / "flows",) if root else ()) + _CANDIDATES:
        if (folder / "retrain.py").is_file():
            return folder
    raise FileNotFoundError(f"mirops' Prefect flow files are not found (looked in {root and Path(root) / 'flows'}, "
                            f"{', '.join(map(str, _CANDIDATES))}); set {FLOWS_DIR_ENV} to the repository's flows/")


def load(entrypoint: str, root: Path | None = None) -> Any:
    """The object `NAME` of flow file `FILE.py` (entrypoint `FILE.py:NAME`), the file loaded once per process."""
    file, sep, name = entrypoint.partition(":")
    if not sep or not file.endswith(".py") or not name:
        raise ValueError(f"flow entrypoint {entrypoint!r}: expected FILE.py:NAME, e.g. retrain.py:retrain")
    module = load_path(flows_dir(root) / file)
    if not hasattr(module, name):
        raise LookupError(f"{module.__file__} has no {name!r} (entrypoint {entrypoint})")
    return getattr(module, name)


def load_path(path: Path) -> Any:
    """The flow file at `path` as a module, loaded once per process (flow files load their siblings so)."""
    path = Path(path).resolve()
    module_name = f"mirops_flow_{path.stem}_{abs(hash(str(path))):x}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise FileNotFoundError(f"{path}: not a Python file that can be loaded")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # before exec: dataclasses and pickling look the module up
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
    return module
