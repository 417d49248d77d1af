"""Training loop of a reprogrammed classifier, in plain sight.

Front-end frames are computed once (the front ends have no parameters), SpecAugment is applied per
batch, the loss is BCE-with-logits on soft labels over annotated entries only, and the epoch with the
best validation mAP is kept (never the test split). bf16 autocast on CUDA, fp32 on CPU; every epoch can
be checkpointed and resumed (`mirops.train.checkpoint`). The epoch bookkeeping, device, precision, loss and
augmentation are the ones EAsT uses too (`mirops.train.loop`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mirops.config import ReprogramParams
from mirops.models.reprogram import ReprogrammedClassifier
from mirops.train.checkpoint import Checkpoints
from mirops.train.loop import FitResult, SpecAugment, autocast, batched_probs, masked_bce, model_device, run_epochs
from mirops.train.loop import resolve_device as resolve_device  # re-exported: the pipeline takes it from here
from mirops.train.metrics import evaluate_probs


@dataclass
class SpecSet:
    """Log-mel spectrograms [N, T, 64] and soft labels [N, C] (NaN = not annotated)."""

    specs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.specs)


def predict_probs(
    model: ReprogrammedClassifier, specs: torch.Tensor, batch_size: int = 16, precision: str = "fp32"
) -> np.ndarray:
    """Class probabilities [N, C] of a reprogrammed classifier on front-end frames (eval mode, no gradients)."""
    return batched_probs(model, specs, len(model.classes), batch_size=batch_size, precision=precision)


def validate(model: ReprogrammedClassifier, valid: SpecSet, params: ReprogramParams) -> tuple[dict[str, float], float]:
    """Valid metrics and masked BCE; none (an empty dict and NaN) when there are no valid clips."""
    if not len(valid):
        return {}, float("nan")
    probs = predict_probs(model, valid.specs, precision=params.precision)
    metrics, _ = evaluate_probs(probs, valid.labels.numpy(), model.classes, params.threshold)
    logits = torch.logit(torch.from_numpy(probs).clamp(1e-6, 1 - 1e-6))
    return metrics, masked_bce(logits, valid.labels).item()


def fit(
    model: ReprogrammedClassifier,
    train: SpecSet,
    valid: SpecSet,
    params: ReprogramParams,
    seed: int,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
) -> FitResult:
    """Train in place; on return `model` holds the weights of the best validation epoch (`params.select`
    "valid") or of the last epoch ("last", the reference's fixed-length recipe).

    Model selection and early stopping (`params.patience`) use the valid split's mAP. An empty `valid` set
    (the reference trains on the whole train split) is allowed with `select="last"`: nothing is validated.
    With `checkpoints` every finished epoch is saved; `resume=True` continues from the newest one, and the run
    ends exactly as the uninterrupted run would have. A model with nothing to train (the fixed AudioSet map without a
    transform) is only validated.
    """
    device = model_device(model)
    if not len(valid) and params.select != "last":
        raise ValueError("no valid clips to choose the epoch with: set reprogram.select=last (a fixed-length "
                         "recipe), or give the dataset a valid split")
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

    def one_epoch(epoch: int) -> tuple[dict[str, float], dict[str, float], float]:
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
        row = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        if len(valid):  # nothing to report without valid clips (fold_valid: they are trained on)
            row |= {"valid_loss": valid_loss, **{f"valid_{k}": v for k, v in valid_metrics.items()}}
        return row, valid_metrics, valid_loss

    calibrate = (lambda: model.calibrate_transform(train.specs)) if params.calibrate else None
    return run_epochs(model, optimiser, scheduler, order_rng, epochs=params.epochs, patience=params.patience,
                      one_epoch=one_epoch, checkpoints=checkpoints, resume=resume, on_epoch=on_epoch,
                      fresh_start=calibrate, select=params.select)
