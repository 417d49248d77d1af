"""The local Evidently workspace under `dashboards/`: open it, find projects by name, list, add and replace their
runs, and set their dashboards.

A folder of JSON files, no server; `evidently ui --workspace DIR` serves it offline (`mirops ui` starts it) and
picks up new runs as they are written. Evidently is imported inside the functions so importing mirops stays fast.

Dashboards are defined in code (`mirops.monitor.projects`) and written with `set_dashboard`, which gives every
panel an id derived from its project and title and writes the dashboard only when it differs from the stored one:
a running UI sees the same panels, a changed definition replaces them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PLOTTABLE_PREFIX = "evidently:metric_v2:"  # dashboard panels can only name metric types under this prefix


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


def run_metadata(ws: Any, project: Any) -> dict[str, dict[str, Any]]:
    """Snapshot id -> its metadata, for every run of `project` (runs that cannot be read are left out)."""
    out: dict[str, dict[str, Any]] = {}
    for run_id in ws.list_runs(project.id):
        try:
            snapshot = ws.get_run(project.id, run_id)
        except (OSError, ValueError):  # half-written by another process, or from an unknown Evidently
            continue
        if snapshot is not None:
            out[str(run_id)] = dict(snapshot.metadata)
    return out


def matching_runs(ws: Any, project: Any, metadata: Mapping[str, str]) -> list[str]:
    """Runs of `project` whose metadata hold every key/value of `metadata`."""
    wanted = {k: str(v) for k, v in metadata.items()}
    return [run_id for run_id, meta in run_metadata(ws, project).items()
            if all(str(meta.get(k)) == v for k, v in wanted.items())]


def add_run(ws: Any, project: Any, snapshot: Any, replace: Mapping[str, str] | None = None) -> str:
    """Store `snapshot` in `project`; with `replace`, first delete the runs whose metadata match it (the same
    dataset version recorded again replaces its run instead of adding a second one). Returns the run id."""
    stale = matching_runs(ws, project, replace) if replace else []
    run_id = str(ws.add_run(project.id, snapshot).id)
    for old in stale:  # after the new one is in: a reader never sees neither
        ws.delete_run(project.id, old)
    return run_id


def panel_id(project: Any, key: str) -> uuid.UUID:
    """A stable id for a panel or tab: the same definition keeps its id across writes."""
    return uuid.uuid5(uuid.UUID(str(project.id)), key)


def set_dashboard(ws: Any, project: Any, panels: Iterable[Any], tab: str) -> bool:
    """Make `project`'s dashboard exactly `panels` (`evidently.sdk.models.DashboardPanelPlot`, in order) on one
    tab called `tab`; returns whether anything was written. Panel titles must be unique within the dashboard."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel

    panels = list(panels)
    titles = [p.title for p in panels]
    if len(set(titles)) != len(titles):
        raise ValueError(f"dashboard of {project.name!r}: panel titles repeat: {sorted(titles)}")
    for panel in panels:
        panel.id = panel_id(project, f"panel:{panel.title}")
    model = DashboardModel(
        tabs=[DashboardTabModel(id=panel_id(project, f"tab:{tab}"), title=tab, panels=[p.id for p in panels])],
        panels=panels,
    )
    if ws.get_dashboard(project.id).dict() == model.dict():
        return False
    ws.save_dashboard(project.id, model)
    return True


def plottable(metric_type: str) -> bool:
    """Whether a dashboard panel can show values of this metric type (Evidently prefixes every panel's metric
    with `evidently:metric_v2:`, so metrics registered under another namespace never match a panel)."""
    return metric_type.startswith(PLOTTABLE_PREFIX)
