"""Training loop of a reprogrammed classifier, in plain sight.

Front-end frames are computed once (the front ends have no parameters), SpecAugment is applied per
batch, the loss is BCE-with-logits on soft labels over annotated entries only, and the epoch with the
best validation mAP is kept (never the test split). bf16 autocast on CUDA, fp32 on CPU; every epoch can
be checkpointed and resumed (`mirops.train.checkpoint`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.transforms as T

from mirops.config import TrainParams
from mirops.models.reprogram import LOG_FLOOR, ReprogrammedClassifier
from mirops.train.checkpoint import Checkpoints
from mirops.train.metrics import evaluate_probs


@dataclass
class SpecSet:
    """Log-mel spectrograms [N, T, 64] and soft labels [N, C] (NaN = not annotated)."""

    specs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.specs)


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0          # the checkpoint epoch a resumed run started after (0: from scratch)
    stopped_early: bool = False


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits over annotated entries; a batch with none contributes a zero (finite) loss."""
    mask = ~torch.isnan(labels)
    if not mask.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[mask], labels[mask])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _device(model: torch.nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers())
    return tensor.device


@torch.no_grad()
def predict_probs(
    model: ReprogrammedClassifier, specs: torch.Tensor, batch_size: int = 16, precision: str = "fp32"
) -> np.ndarray:
    model.eval()
    device = _device(model)
    out = []
    for i in range(0, len(specs), batch_size):
        with autocast(device, precision):
            logits = model.forward_spectrogram(specs[i : i + batch_size].to(device))
        out.append(torch.sigmoid(logits.float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(model.classes)), dtype=np.float32)


class SpecAugment(torch.nn.Module):
    """One frequency and one time mask per example, filled with `fill_value`: what silence looks like in
    the backbone's frames (YAMNet's log floor; 0 for AST's unnormalised fbank, as in the reference)."""

    def __init__(self, freq_mask: int, time_mask: int, fill_value: float = LOG_FLOOR) -> None:
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


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked for ("auto": on CUDA only; bf16 needs no loss scaling, unlike fp16)."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)


def _trainable_state(model: ReprogrammedClassifier) -> dict[str, torch.Tensor]:
    # Everything but the frozen backbone: transform and mapping weights and BatchNorm statistics.
    return {k: v.detach().clone().cpu() for k, v in model.state_dict().items() if not k.startswith("backbone.")}


@dataclass
class _Progress:
    """What the loop carries from epoch to epoch (all of it goes into a checkpoint)."""

    best_score: float = -np.inf
    best_state: dict | None = None
    since_best: int = 0
    result: FitResult = field(default_factory=lambda: FitResult(best_epoch=0, best_valid={}))


def validate(model: ReprogrammedClassifier, valid: SpecSet, params: TrainParams) -> tuple[dict[str, float], float]:
    probs = predict_probs(model, valid.specs, precision=params.precision)
    metrics, _ = evaluate_probs(probs, valid.labels.numpy(), model.classes, params.threshold)
    logits = torch.logit(torch.from_numpy(probs).clamp(1e-6, 1 - 1e-6))
    return metrics, masked_bce(logits, valid.labels).item()


def fit(
    model: ReprogrammedClassifier,
    train: SpecSet,
    valid: SpecSet,
    params: TrainParams,
    seed: int,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
) -> FitResult:
    """Train in place; on return `model` holds the weights of the best validation epoch.

    Model selection and early stopping (`params.patience`) use the valid split's mAP. With `checkpoints`
    every finished epoch is saved; `resume=True` continues from the newest one, and the run ends exactly
    as the uninterrupted run would have. A model with nothing to train (the fixed AudioSet map without a
    transform) is only validated.
    """
    device = _device(model)
    if not model.trainable_parameters():
        metrics, valid_loss = validate(model, valid, params)
        row = {"epoch": 0, "valid_loss": valid_loss, **{f"valid_{k}": v for k, v in metrics.items()}}
        return FitResult(best_epoch=0, best_valid=metrics, history=[row])
    torch.manual_seed(seed)
    order_rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(
        model.trainable_parameters(), lr=params.lr, betas=(0.95, 0.999), weight_decay=params.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, params.lr_milestones, params.lr_gamma)
    augment = SpecAugment(params.freq_mask, params.time_mask, model.fill_value)
    state, first_epoch = _Progress(), 1
    saved = checkpoints.latest() if (checkpoints and resume) else None
    if saved is not None:
        first_epoch = _restore(saved, model, optimiser, scheduler, order_rng, state)
    elif params.calibrate:
        model.calibrate_transform(train.specs)
    for epoch in range(first_epoch, params.epochs + 1):
        if params.patience and state.since_best >= params.patience:
            state.result.stopped_early = True
            break
        started = time.perf_counter()
        model.train()
        order = order_rng.permutation(len(train))
        losses = []
        for step, start in enumerate(range(0, len(order), params.batch_size), start=1):
            idx = torch.from_numpy(order[start : start + params.batch_size])
            specs, labels = train.specs[idx].to(device), train.labels[idx].to(device)
            with autocast(device, params.precision):
                logits = model.forward_spectrogram(augment(specs))
            loss = masked_bce(logits.float(), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            if on_batch:
                on_batch(step, -(-len(order) // params.batch_size))
        scheduler.step()
        valid_metrics, valid_loss = validate(model, valid, params)
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "valid_loss": valid_loss,
            **{f"valid_{k}": v for k, v in valid_metrics.items()},
            "lr": optimiser.param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - started,
        }
        state.result.history.append(row)
        score = valid_metrics["mAP"] if not np.isnan(valid_metrics["mAP"]) else -valid_loss
        if score > state.best_score:
            state.best_score, state.since_best = score, 0
            state.result.best_epoch, state.result.best_valid = epoch, valid_metrics
            state.best_state = _trainable_state(model)
        else:
            state.since_best += 1
        if checkpoints is not None:
            checkpoints.save(epoch, _snapshot(model, optimiser, scheduler, order_rng, state))
        if on_epoch:
            on_epoch(row)
    if state.best_state is not None:
        model.load_state_dict(state.best_state, strict=False)
    return state.result


def _snapshot(model, optimiser, scheduler, order_rng: np.random.Generator, state: _Progress) -> dict:
    return {
        "model": _trainable_state(model), "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
        "order_rng": order_rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "best_score": state.best_score, "best_state": state.best_state, "since_best": state.since_best,
        "best_epoch": state.result.best_epoch, "best_valid": state.result.best_valid,
        "history": state.result.history,
    }


def _restore(saved: dict, model, optimiser, scheduler, order_rng: np.random.Generator, state: _Progress) -> int:
    """Put the loop back where checkpoint `saved` left it; returns the next epoch to run."""
    model.load_state_dict(saved["model"], strict=False)
    optimiser.load_state_dict(saved["optimiser"])
    scheduler.load_state_dict(saved["scheduler"])
    order_rng.bit_generator.state = saved["order_rng"]
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    state.best_score, state.best_state, state.since_best = saved["best_score"], saved["best_state"], saved["since_best"]
    state.result = FitResult(best_epoch=saved["best_epoch"], best_valid=saved["best_valid"],
                             history=list(saved["history"]), resumed_from=saved["epoch"])
    return saved["epoch"] + 1
