"""The EAsT reference's recipe per task (docs/methods.md §3.7-3.9) and what a run resolves from it: values left
`None` in `east:` are the task's."""

from __future__ import annotations

from dataclasses import dataclass

from mirops.config import EastParams
from mirops.train.east_losses import REG_LOSS_WEIGHTS


@dataclass(frozen=True)
class TaskRecipe:
    """What the reference does differently on its two datasets (docs/methods.md §3.7-3.9)."""

    dataset: str      # key of REG_LOSS_WEIGHTS
    patience: int     # early-stopping epochs
    lr_patience: int  # ReduceLROnPlateau epochs
    freq_mask: int    # SpecAugment, mel bins
    time_mask: int    # SpecAugment, frames
    mixup: float      # Beta(a, a); 0: off
    max_steps: int    # the trainer's step budget
    mel_jitter: bool  # per-clip mel-band jitter of the front end in training


TASK_RECIPES = {
    "instruments": TaskRecipe("openmic", patience=15, lr_patience=8, freq_mask=48, time_mask=192, mixup=0.3,
                              max_steps=80_000, mel_jitter=True),
    "tagging": TaskRecipe("mtat", patience=12, lr_patience=5, freq_mask=0, time_mask=0, mixup=0.0,
                          max_steps=100_000, mel_jitter=False),
}


def reference_lam(task: str, teacher: str | None) -> float:
    """The reference's lam for a task and teacher (docs/methods.md §3.7): OpenMIC 0.8 (PaSST, PANNs 0.9), MTAT 0.6.

    Teachers the reference did not use (YAMNet, AST, any precomputed folder) get the VGGish/OpenL3 value.
    """
    weights = REG_LOSS_WEIGHTS[TASK_RECIPES[task].dataset]
    return weights.get(teacher or "", weights["vggish"])


def resolved(params: EastParams, name: str) -> float:
    """`params.<name>`, or the reference's value for the task where it is None."""
    value = getattr(params, name)
    return getattr(TASK_RECIPES[params.task], name) if value is None else value


def reference_probe_lr(task: str, teacher: str | None) -> float:
    """The SGD probe's learning rate in the reference's `lr_*.json`: 0.1, but 0.2 for VGGish on OpenMIC and
    PaSST on MTAT (docs/methods.md §3.4)."""
    return 0.2 if (TASK_RECIPES[task].dataset, teacher) in {("openmic", "vggish"), ("mtat", "passt")} else 0.1


def step_budget(params: EastParams) -> int | None:
    """`east.max_steps`: None (no cap), a number, or "reference" (the task's: 80k OpenMIC, 100k MTAT)."""
    if params.max_steps == "reference":
        return TASK_RECIPES[params.task].max_steps
    return params.max_steps


def loss_weight(params: EastParams, mode: str, teacher: str | None) -> float:
    """lam for `mode`: 0 for the student alone, else params.lam or the reference's."""
    if mode == "student":
        return 0.0
    return params.lam if params.lam is not None else reference_lam(params.task, teacher)


def effective_recipe(params: EastParams, mode: str, teacher: str | None) -> dict[str, float]:
    """The values a run actually uses where `params` leaves them to the reference (for logging)."""
    names = ("patience", "lr_patience", "freq_mask", "time_mask", "mixup", "mel_jitter")
    return {"lam": loss_weight(params, mode, teacher), "kd_share": kd_share(mode, params),
            "max_steps": step_budget(params) or 0, **{name: resolved(params, name) for name in names}}


def kd_share(mode: str, params: EastParams) -> float:
    # KD alone is the reference's KDLoss as the whole regulariser; KD + EAsT mixes 0.3 KD + 0.7 dCor.
    return {"student": 0.0, "east": 0.0, "kd": 1.0, "kd+east": params.kd_weight}[mode]
