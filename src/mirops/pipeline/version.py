"""Version: check the audio, then DVC-version data/; every later stage opens the version it is given.

The version id is DVC's md5 of data/ (`mirops.data.version`); `open` gives the handle every stage reads
(`mirops.data.dataset.DatasetVersion`): data/ when it holds that version, else a read-only view of DVC's store.
`record_pipeline` ends a Prefect run: dvc.lock records the dvc.yaml stages the run did, and git commits it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from mirops.config import Settings
from mirops.data.dataset import DatasetVersion, open_version
from mirops.data.git import git_commit, git_tracked_outputs, in_git_repo
from mirops.data.version import VERSIONS_FILE, commit_stages, make_version, pipeline_stages, read_version
from mirops.pipeline.ingest import check_data
from mirops.progress import console, warn


def version(settings: Settings, message: str = "", commit: bool = False, check: bool = True) -> str:
    """Check the audio (quarantine; skip with `check=False` when just done), then DVC-version data/.

    Returns the version id; `commit` also commits the pointer files when the project is a git repository.
    """
    if check:
        check_data(settings)
    record, sha = make_version(settings.root, message, commit=commit, remote=settings.dvc.remote)
    console.print(f"[bold]dataset version[/] {record.version} ({record.files} files, {record.size_bytes / 1e6:.1f} MB,"
                  f" {record.clips} clips, {record.quarantined} quarantined)"
                  + (f", committed as {sha[:8]}" if sha else ""))
    return record.version


def current_version(settings: Settings) -> str:
    """The version data/ holds (data.dvc); FileNotFoundError saying how to make one when there is none."""
    return read_version(settings.root).version


@contextmanager
def open_dataset(settings: Settings, dataset_version: str | None = None) -> Iterator[DatasetVersion]:
    """Dataset version `dataset_version` (default: what data/ holds), readable inside the `with` block."""
    with open_version(settings.root, dataset_version, settings.data_dir) as ds:
        yield ds


# ---------------------------------------------------------------- the Prefect run, recorded for DVC

# The stages of dvc.yaml (see there) that one run of the retraining flow performs, per family `F` it trains.
FLOW_STAGES = ("precompute", "audit", "monitor")
FAMILY_STAGES = ("train@{}", "evaluate@{}", "register@{}", "promote@{}")


@dataclass
class PipelineRecord:
    committed: list[str] = field(default_factory=list)    # stages dvc.lock now records as run
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> why dvc.lock was not updated for it
    not_run: list[str] = field(default_factory=list)       # stages of dvc.yaml this run did not perform
    git_commit: str | None = None                          # the commit of data.dvc, dvc.lock and the metrics

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def overridden_keys(overrides: dict[str, Any] | None) -> list[str]:
    """Settings this run took from `--set` / overrides or MIROPS_* rather than params.yaml, as `section.field`."""
    keys = [k.replace("__", ".", 1) for k in overrides or {}]
    keys += [k[len("MIROPS_"):].lower().replace("__", ".", 1) for k in os.environ
             if k.startswith("MIROPS_") and ("__" in k or k == "MIROPS_SEED")]
    return sorted(set(keys))


def _touches(key: str, param: str) -> bool:
    return key == param or key.startswith(param + ".") or param.startswith(key + ".")


def record_pipeline(settings: Settings, families: list[str], overrides: dict[str, Any] | None = None,
                    current: str | None = None) -> PipelineRecord:
    """After a run of the retraining flow: `dvc commit` the stages of dvc.yaml it performed (the flow calls the
    same functions as their commands, writing the same outputs), so `dvc status` says the pipeline is up to date
    and `dvc repro` does not redo it; then, in a git repository, commit data.dvc, the version list, dvc.lock and
    the metrics and plots DVC declares.

    A stage whose parameters this run overrode (`--set`, MIROPS_*) is left out: its outputs do not match
    params.yaml, and dvc.lock must not say they do. So is the monitor when it checked another batch (`current`).
    """
    out = PipelineRecord()
    root = settings.root
    if not (root / "dvc.yaml").exists():
        console.print(f"[bold]dvc[/] no dvc.yaml in {root}: nothing to record in dvc.lock")
        return out
    stages = {s.name: s for s in pipeline_stages(root)}
    ran = [*FLOW_STAGES, *(name.format(f) for f in families for name in FAMILY_STAGES)]
    keys = overridden_keys(overrides)
    todo = []
    for name in ran:
        if name not in stages:
            continue  # a family dvc.yaml does not list (dvc.families): nothing to record
        touched = [k for k in keys if any(_touches(k, p) for p in stages[name].params)]
        if touched:
            out.skipped[name] = f"ran with {', '.join(touched)} not from params.yaml"
        elif name == "monitor" and current:
            out.skipped[name] = f"checked {current}, not the batch dvc.yaml names"
        else:
            todo.append(name)
    out.committed, failed = commit_stages(root, todo)
    out.skipped |= failed
    out.not_run = [name for name in stages if name not in ran]
    for name, why in out.skipped.items():
        warn(f"dvc.lock: {name} not recorded ({why}); `dvc status` lists it, `dvc repro` redoes it")
    if out.not_run:
        warn(f"dvc.lock: {', '.join(out.not_run)} did not run in this flow (dvc.families: "
             f"{settings.dvc.families}; run `mirops pipeline run --family both` or `dvc repro`)")
    console.print(f"[bold]dvc[/] dvc.lock records {', '.join(out.committed) or 'no stage'}")
    if not in_git_repo(root):
        console.print(f"[bold]dvc[/] {root} is not a git repository: data.dvc and dvc.lock are not committed")
        return out
    tracked = git_tracked_outputs(root, sorted({o for n in out.committed for o in stages[n].outs}))
    try:
        out.git_commit = git_commit(
            root, ["data.dvc", VERSIONS_FILE, ".gitignore", "dvc.lock", *tracked],
            f"pipeline: dataset {current_version(settings)[:8]}, {', '.join(out.committed) or 'no stage'}",
            "data.dvc, dvc.lock and the metrics and plots of the stages `mirops pipeline run` performed")
    except RuntimeError as exc:  # the models are trained and registered: say what is left to do, do not fail
        warn(f"{exc}; commit data.dvc and dvc.lock yourself")
        return out
    console.print("[bold]dvc[/] " + (f"committed data.dvc, dvc.lock and {len(tracked)} metrics/plots files as "
                                     f"{out.git_commit[:8]}" if out.git_commit else "git already has this run"))
    return out
