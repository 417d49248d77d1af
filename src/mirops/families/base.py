"""A model family: what is trained, on which sets, how it is fitted, scored and served — declared once.

`mirops.pipeline.train` runs the training-run lifecycle (audit gate → sets → checkpoints → reopen run →
params → fit → log model → run file) and the grid lifecycle (a parent run, a child per variant, resume
skipping finished variants, a summary table) for every family alike. A family supplies the parts that
differ: its settings section, registered model name, data sets, model builder, fit, serving spec and grids.
Families know nothing of MLflow: the pipeline hands them a run to write to (`mirops.registry.tracking.Run`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from mirops.config import Settings
from mirops.data.dataset import DatasetVersion
from mirops.models.serving import ServingSpec
from mirops.train.loop import FitResult
from mirops.train.metrics import evaluate_probs

OnEpoch = Callable[[dict[str, float]], None]


@dataclass
class Prepared:
    """A dataset version's splits as the family trains on them (frames, labels, teacher sequences)."""

    sets: dict[str, Any]            # split -> the family's set (SpecSet, EastSet)
    parts: dict[str, pd.DataFrame]  # split -> the manifest rows kept (unusable clips dropped)
    skipped: int                    # clips skipped as unusable
    classes: list[str]
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the backbone, the teachers' probes


@dataclass
class Trained:
    model: Any                      # an nn.Module, or a fitted probe
    result: FitResult               # best epoch, valid metrics, history (empty for a model with nothing to fit)
    seconds: float = 0.0            # wall time of the fit

    @classmethod
    def unfitted(cls, model: Any) -> Trained:
        return cls(model, FitResult(best_epoch=0, best_valid={}))


@dataclass(frozen=True)
class GridVariant:
    """One row of a grid: its run name, what differs (logged as params and tags), and how to build it."""

    name: str
    params: dict[str, Any]
    tags: dict[str, str]
    spec: Any = None                # the family's own description of the variant


@dataclass
class VariantOutcome:
    """What a trained grid variant adds to the summary table (and what else to keep on its run)."""

    row: dict[str, Any]
    per_class: dict[str, dict[str, float]]
    metrics: dict[str, float] = field(default_factory=dict)
    state: dict[str, Any] | None = None   # a state dict to keep on the child run
    state_file: str = ""


class ModelFamily(ABC):
    name: str                # "reprogram", "east": the CLI's and the lineage's name
    section: str             # the settings section (params.yaml) the family reads
    run_file: str            # artifacts/train/<run_file>: the last training run, for evaluate/register
    grids: tuple[str, ...]   # grid names `mirops train FAMILY --grid` accepts
    grid_prefix: str         # a grid's summary is artifacts/train/<grid_prefix>-<grid>.md/.json

    def params(self, settings: Settings) -> BaseModel:
        return getattr(settings, self.section)

    @abstractmethod
    def model_name(self, settings: Settings) -> str:
        """The registered model this family's models go to (each family has its own champion)."""

    def logged_params(self, settings: Settings) -> dict[str, Any]:
        """What a training run logs as parameters: the family's section, prefixed, and the seed."""
        return {f"{self.section}.{k}": v for k, v in self.params(settings).model_dump().items()} | {
            "seed": settings.seed, "family": self.name}

    def checkpoint_config(self, settings: Settings) -> dict[str, Any]:
        """What a checkpoint folder depends on (same settings and data: same folder, so --resume finds it)."""
        return self.params(settings).model_dump(exclude={"device"}) | {"seed": settings.seed}

    # ------------------------------------------------------------ one model
    @abstractmethod
    def run_name(self, settings: Settings) -> str: ...

    @abstractmethod
    def prepare(self, settings: Settings, ds: DatasetVersion, grid: str | None = None) -> Prepared:
        """The sets to train on: train and valid (a grid also scores test)."""

    @abstractmethod
    def train(self, settings: Settings, prepared: Prepared, checkpoints, resume: bool, on_epoch: OnEpoch,
              run) -> Trained:
        """Build and fit the model the settings describe; `run` gets the recipe's own parameters."""

    @abstractmethod
    def serving(self, settings: Settings, prepared: Prepared, model) -> ServingSpec: ...

    def run_tags(self, settings: Settings) -> dict[str, str]:
        return {}

    def count_parameters(self, model) -> tuple[int, int]:
        """(trainable, total) parameters of a trained model."""
        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return n_trainable, sum(p.numel() for p in model.parameters())

    def epochs(self, settings: Settings) -> int:
        return int(self.params(settings).epochs)

    # ------------------------------------------------------------ grids
    @abstractmethod
    def grid_name(self, settings: Settings, grid: str) -> str: ...

    @abstractmethod
    def grid_variants(self, settings: Settings, grid: str) -> list[GridVariant]: ...

    @abstractmethod
    def train_variant(self, settings: Settings, prepared: Prepared, variant: GridVariant, checkpoints,
                      resume: bool, on_epoch: OnEpoch, run) -> tuple[Trained, VariantOutcome]:
        """Fit (or fit nothing, for a probe) and score on test one variant; the outcome's row is its table line."""

    @abstractmethod
    def grid_summary(self, settings: Settings, grid: str, rows: list[dict], per_class: dict[str, dict]
                     ) -> tuple[pd.DataFrame, str, dict[str, Any]]:
        """(summary table, its stem, {artifact file: matplotlib figure}) of a finished grid."""

    def grid_skip_reason(self, settings: Settings, prepared: Prepared, variant: GridVariant) -> str | None:
        """Why `variant` cannot be built for these data (the grid then skips it, saying so), or None."""
        return None

    def skipped_row(self, settings: Settings, variant: GridVariant, reason: str) -> dict[str, Any]:
        """The summary table's line of a skipped variant."""
        return {"variant": variant.name, "skipped": reason}

    def check_grid(self, grid: str) -> None:
        if grid not in self.grids:
            raise ValueError(f"unknown {self.name} grid {grid!r}; choose one of {sorted(self.grids)}")


def score(probs: np.ndarray, labels: np.ndarray, classes: list[str], threshold: float
          ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Test metrics over annotated entries: summary (mAP, ROC-AUC, F1 both conventions) and per class."""
    return evaluate_probs(probs, labels, classes, threshold)
