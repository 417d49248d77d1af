"""The training loop both model families share (reprogramming in `train.reprogram`, EAsT in `train.east`).

What is the same for every family lives here: the device and precision (bf16 autocast on CUDA, fp32 on CPU),
the loss on partially annotated labels (`masked_bce`), SpecAugment, batched prediction, and the epoch
bookkeeping of `run_epochs`: model selection on the valid split's mAP (never test), early stopping, a
checkpoint per finished epoch and a resume that ends exactly as the uninterrupted run would have.

A family brings what differs: its optimiser and scheduler, and one epoch (`one_epoch(epoch)`: train, step the
scheduler, validate) that returns the epoch's history row with the valid metrics and loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.transforms as T
from torch import nn

from mirops.features.logmel import LOG_OFFSET
from mirops.train.checkpoint import Checkpoints


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0          # the checkpoint epoch a resumed run started after (0: from scratch)
    stopped_early: bool = False


# --------------------------------------------------------------------------- device and precision


def resolve_device(name: str) -> torch.device:
    """"auto": CUDA where there is one, else the CPU; any other name as torch spells it ("cpu", "cuda:1")."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (of its first buffer for a model without parameters)."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers())
    return tensor.device


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked for ("auto": on CUDA only; bf16 needs no loss scaling, unlike fp16)."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)


# --------------------------------------------------------------------------- loss, augmentation, prediction


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits over annotated entries; a batch with none contributes a zero (finite) loss."""
    mask = ~torch.isnan(labels)
    if not mask.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[mask], labels[mask])


class SpecAugment(nn.Module):
    """One frequency and one time mask per example, filled with `fill_value`: what silence looks like in
    the backbone's frames (by default YAMNet's log floor, `models.reprogram.LOG_FLOOR`; 0 for AST's
    unnormalised fbank, as in the reference)."""

    def __init__(self, freq_mask: int, time_mask: int, fill_value: float = math.log(LOG_OFFSET)) -> None:
        super().__init__()
        self.freq = T.FrequencyMasking(freq_mask, iid_masks=True) if freq_mask else None
        self.time = T.TimeMasking(time_mask, iid_masks=True) if time_mask else None
        self.fill_value = fill_value

    def forward(self, spec: torch.Tensor) -> torch.Tensor:  # [B, T, F]
        x = spec.transpose(1, 2).unsqueeze(1)  # torchaudio masks want [B, C, F, T]
        if self.freq is not None:
            x = self.freq(x, mask_value=self.fill_value)
        if self.time is not None:
            x = self.time(x, mask_value=self.fill_value)
        return x.squeeze(1).transpose(1, 2)


@torch.no_grad()
def batched_probs(
    model: nn.Module, frames: torch.Tensor, num_classes: int, batch_size: int = 16, precision: str = "fp32"
) -> np.ndarray:
    """Sigmoid of `model.forward_spectrogram` on front-end frames [N, T, F], in eval mode and batches of
    `batch_size` on the model's device -> float32 [N, num_classes] on the CPU."""
    model.eval()
    device = model_device(model)
    out = []
    for i in range(0, len(frames), batch_size):
        with autocast(device, precision):
            logits = model.forward_spectrogram(frames[i : i + batch_size].to(device))
        out.append(torch.sigmoid(logits.float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, num_classes), dtype=np.float32)


# --------------------------------------------------------------------------- epochs, model selection, checkpoints


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # Everything but a frozen backbone: transform, mapping or student weights and BatchNorm statistics.
    return {k: v.detach().clone().cpu() for k, v in model.state_dict().items() if not k.startswith("backbone.")}


@dataclass
class _LoopState:
    """What the loop carries from epoch to epoch (all of it goes into a checkpoint)."""

    best_score: float = -np.inf
    best_state: dict | None = None
    since_best: int = 0
    best_loss: float = np.inf      # for early stopping on the valid loss (`stop_on="loss"`, EAsT's reference)
    since_best_loss: int = 0
    result: FitResult = field(default_factory=lambda: FitResult(best_epoch=0, best_valid={}))

    def waited(self, stop_on: str) -> int:
        """Epochs since the last improvement of what early stopping watches."""
        return self.since_best_loss if stop_on == "loss" else self.since_best

    def keep_if_best(self, model: nn.Module, epoch: int, metrics: dict[str, float], loss: float,
                     select: str = "valid") -> None:
        """Model selection on valid mAP (on the loss only while no class has both label kinds); `select="last"`
        keeps every new epoch instead (a fixed-length recipe without a valid split)."""
        if loss < self.best_loss:
            self.best_loss, self.since_best_loss = loss, 0
        else:
            self.since_best_loss += 1
        if select == "last":
            self.result.best_epoch, self.result.best_valid = epoch, metrics
            self.best_state = _trainable_state(model)
            return
        score = metrics["mAP"] if not np.isnan(metrics["mAP"]) else -loss
        if score > self.best_score:
            self.best_score, self.since_best = score, 0
            self.result.best_epoch, self.result.best_valid = epoch, metrics
            self.best_state = _trainable_state(model)
        else:
            self.since_best += 1


def _snapshot(model, optimiser, scheduler, order_rng: np.random.Generator, state: _LoopState) -> dict:
    return {
        "model": _trainable_state(model), "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
        "order_rng": order_rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "best_score": state.best_score, "best_state": state.best_state, "since_best": state.since_best,
        "best_loss": state.best_loss, "since_best_loss": state.since_best_loss,
        "best_epoch": state.result.best_epoch, "best_valid": state.result.best_valid,
        "history": state.result.history,
    }


def _restore(saved: dict, model, optimiser, scheduler, order_rng: np.random.Generator, state: _LoopState) -> int:
    """Put the loop back where checkpoint `saved` left it; returns the next epoch to run."""
    model.load_state_dict(saved["model"], strict=False)
    optimiser.load_state_dict(saved["optimiser"])
    scheduler.load_state_dict(saved["scheduler"])
    order_rng.bit_generator.state = saved["order_rng"]
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    state.best_score, state.best_state, state.since_best = saved["best_score"], saved["best_state"], saved["since_best"]
    # checkpoints written before early stopping could watch the loss lack these; then it starts afresh
    state.best_loss, state.since_best_loss = saved.get("best_loss", np.inf), saved.get("since_best_loss", 0)
    state.result = FitResult(best_epoch=saved["best_epoch"], best_valid=saved["best_valid"],
                             history=list(saved["history"]), resumed_from=saved["epoch"])
    return saved["epoch"] + 1


EpochFn = Callable[[int], tuple[dict[str, float], dict[str, float], float]]


def run_epochs(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    scheduler,
    order_rng: np.random.Generator,
    *,
    epochs: int,
    patience: int,
    one_epoch: EpochFn,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    fresh_start: Callable[[], None] | None = None,
    select: str = "valid",
    stop_on: str = "mAP",
) -> FitResult:
    """Run epochs 1..`epochs` of `one_epoch(epoch) -> (history row, valid metrics, valid loss)`; on return
    `model` holds the weights of the best epoch by valid mAP (`select="valid"`) or of the last (`"last"`).

    Stops early once `patience` epochs (0: never) went by without a better valid mAP (`stop_on="mAP"`) or a
    lower valid loss (`"loss"`, the EAsT reference's EarlyStopping on val/loss/total). Each row gets the learning rate
    after the epoch and the epoch's wall-clock seconds. With `checkpoints` every finished epoch is saved (the
    trainable weights, optimiser, scheduler, `order_rng`, torch's random streams and the bookkeeping);
    `resume=True` continues after the newest one. `fresh_start` runs once before the first epoch of a run
    that is not resumed (e.g. calibrating a transform).
    """
    state, first_epoch = _LoopState(), 1
    saved = checkpoints.latest() if (checkpoints and resume) else None
    if saved is not None:
        first_epoch = _restore(saved, model, optimiser, scheduler, order_rng, state)
    elif fresh_start is not None:
        fresh_start()
    for epoch in range(first_epoch, epochs + 1):
        if patience and state.waited(stop_on) >= patience:
            state.result.stopped_early = True
            break
        started = time.perf_counter()
        row, metrics, loss = one_epoch(epoch)
        row |= {"lr": optimiser.param_groups[0]["lr"], "epoch_seconds": time.perf_counter() - started}
        state.result.history.append(row)
        state.keep_if_best(model, epoch, metrics, loss, select)
        if checkpoints is not None:
            checkpoints.save(epoch, _snapshot(model, optimiser, scheduler, order_rng, state))
        if on_epoch:
            on_epoch(row)
    if state.best_state is not None:
        model.load_state_dict(state.best_state, strict=False)
    return state.result
