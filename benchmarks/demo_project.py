"""A demo project for a benchmark: the repository's params.yaml with a benchmark's changes, rendered and versioned
once under `root` (a rerun in the same folder reuses it)."""

from __future__ import annotations

from pathlib import Path

import yaml

from mirops.config import Settings
from mirops.pipeline import ingest, version

REPO = Path(__file__).resolve().parents[1]


def demo_project(root: Path, changes: dict[str, dict]) -> Settings:
    """`changes`: {section: {key: value}} merged into params.yaml's sections (e.g. {"demo": {"clips": 2000}})."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in changes.items():
        params[section] = (params.get(section) or {}) | values
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    settings = Settings.load(root)
    if not (root / "data.dvc").exists():
        ingest.demo(settings)
        version.version(settings)
    return settings
