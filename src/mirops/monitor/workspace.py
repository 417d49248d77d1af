"""The local Evidently workspace under `dashboards/`: open it, find projects by name, list their runs.

A folder of JSON files, no server; `evidently ui --workspace DIR` serves it offline. Evidently is
imported inside the functions so importing mirops stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_workspace(path: Path) -> Any:
    """The local workspace at `path` (an `evidently.ui.workspace.Workspace`), created if missing."""
    from evidently.ui.workspace import Workspace

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return Workspace.create(str(path))


def find_project(ws: Any, name: str) -> Any | None:
    """The project called `name`, or None."""
    matches = ws.search_project(name)
    # Two processes racing on a fresh workspace can both create it: always pick the same one.
    return min(matches, key=lambda project: str(project.id)) if matches else None


def get_or_create_project(ws: Any, name: str, description: str) -> Any:
    """The project called `name`, created on first use so later runs land in the same project."""
    return find_project(ws, name) or ws.create_project(name, description=description)


def project_runs(ws: Any, name: str) -> list[str]:
    """Snapshot (run) ids stored in project `name`; empty if there is no such project."""
    project = find_project(ws, name)
    return [] if project is None else [str(run_id) for run_id in ws.list_runs(project.id)]
