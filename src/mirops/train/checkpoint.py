"""Per-epoch training checkpoints that a later process can resume from, bit for bit.

A checkpoint holds everything the rest of the run depends on: the trainable weights (and BatchNorm
statistics), the optimiser and scheduler, both random streams (batch order, SpecAugment), the best epoch so
far and the history. It only holds the trainable part of the model: the frozen backbone comes from its own
source. Files are written to a temporary name and renamed, so an interrupted write never leaves a
half-written checkpoint; `key` guards against resuming a run with other settings or data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mirops.atomic import atomic_write

_EPOCH_FILE = re.compile(r"^epoch-(\d{3,})\.pt$")


class CheckpointMismatch(ValueError):
    """A checkpoint folder belongs to a run with other settings, model or data."""


@dataclass
class Checkpoints:
    """`folder/epoch-NNN.pt`, one per finished epoch, and `folder/meta.json` (key, MLflow run id)."""

    folder: Path
    key: str

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)

    @property
    def meta_path(self) -> Path:
        return self.folder / "meta.json"

    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_path.read_text()) if self.meta_path.exists() else {}

    def write_meta(self, **values: Any) -> None:
        meta = self.meta() | values | {"key": self.key}
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)), fsync=True)

    def epochs(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _EPOCH_FILE.match(p.name)))

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch:03d}.pt"

    def save(self, epoch: int, state: dict[str, Any]) -> Path:
        path = self.path(epoch)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: torch.save({"key": self.key, "epoch": epoch, **state}, tmp), fsync=True)
        return path

    def clear(self) -> None:
        """Forget an earlier run of this configuration (a fresh start must not resume into its leftovers)."""
        for epoch in self.epochs():
            self.path(epoch).unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)

    def begin(self, resume: bool) -> dict[str, Any]:
        """The meta of the run to resume ({} if none); a fresh start (`resume=False`) forgets any leftovers."""
        if not resume:
            self.clear()
        return self.meta()

    def run_to_reopen(self) -> str | None:
        """The MLflow run an interrupted training left, if it saved an epoch (before that, nothing to resume)."""
        return self.meta().get("run_id") if self.epochs() else None

    def latest(self) -> dict[str, Any] | None:
        """The newest checkpoint of this run, or None; refuses one written by another run."""
        epochs = self.epochs()
        if not epochs:
            return None
        path = self.path(epochs[-1])
        # weights_only=False: the state holds numpy RNG state and plain Python values we wrote ourselves.
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("key") != self.key:
            raise CheckpointMismatch(
                f"{path} was written by a run with other settings, model or data (key {state.get('key')}, "
                f"this run {self.key}); start afresh without --resume or remove {self.folder}")
        return state
