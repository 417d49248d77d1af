"""Training loop of a reprogrammed classifier, in plain sight.

Log-mel spectrograms are computed once (the front end has no parameters), SpecAugment is applied per
batch, the loss is BCE-with-logits on soft labels over annotated entries only, and the epoch with the
best validation mAP is kept (never the test split).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.transforms as T

from mirops.config import TrainParams
from mirops.models.reprogram import LOG_FLOOR, ReprogrammedClassifier
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
    return next(model.parameters()).device


@torch.no_grad()
def compute_spectrograms(model: ReprogrammedClassifier, waves: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    """Log-mels on the model's device, kept on the CPU (the dataset stays in host memory)."""
    device = _device(model)
    chunks = [model.spectrogram(torch.from_numpy(waves[i : i + batch_size]).to(device)).cpu()
              for i in range(0, len(waves), batch_size)]
    return torch.cat(chunks)


@torch.no_grad()
def predict_probs(model: ReprogrammedClassifier, specs: torch.Tensor, batch_size: int = 16) -> np.ndarray:
    model.eval()
    device = _device(model)
    batches = (specs[i : i + batch_size].to(device) for i in range(0, len(specs), batch_size))
    return torch.cat([torch.sigmoid(model.forward_spectrogram(b)).cpu() for b in batches]).numpy()


class SpecAugment(torch.nn.Module):
    """One frequency and one time mask per example, filled with the log-mel of silence."""

    def __init__(self, freq_mask: int, time_mask: int) -> None:
        super().__init__()
        self.freq = T.FrequencyMasking(freq_mask, iid_masks=True) if freq_mask else None
        self.time = T.TimeMasking(time_mask, iid_masks=True) if time_mask else None

    def forward(self, spec: torch.Tensor) -> torch.Tensor:  # [B, T, F]
        x = spec.transpose(1, 2).unsqueeze(1)  # torchaudio masks want [B, C, F, T]
        if self.freq is not None:
            x = self.freq(x, mask_value=LOG_FLOOR)
        if self.time is not None:
            x = self.time(x, mask_value=LOG_FLOOR)
        return x.squeeze(1).transpose(1, 2)


def fit(
    model: ReprogrammedClassifier,
    train: SpecSet,
    valid: SpecSet,
    params: TrainParams,
    seed: int,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Train in place; on return `model` holds the weights of the best validation epoch."""
    torch.manual_seed(seed)
    if params.calibrate:
        model.calibrate_transform(train.specs)
    order_rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(
        model.trainable_parameters(), lr=params.lr, betas=(0.95, 0.999), weight_decay=params.weight_decay
    )
    device = _device(model)
    augment = SpecAugment(params.freq_mask, params.time_mask)
    best_state, best_map, result = None, -np.inf, FitResult(best_epoch=0, best_valid={})
    for epoch in range(1, params.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = order_rng.permutation(len(train))
        losses = []
        for step, start in enumerate(range(0, len(order), params.batch_size), start=1):
            idx = torch.from_numpy(order[start : start + params.batch_size])
            specs, labels = train.specs[idx].to(device), train.labels[idx].to(device)
            loss = masked_bce(model.forward_spectrogram(augment(specs)), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            if on_batch:
                on_batch(step, -(-len(order) // params.batch_size))
        probs = predict_probs(model, valid.specs)
        valid_metrics, _ = evaluate_probs(probs, valid.labels.numpy(), model.classes, params.threshold)
        with torch.no_grad():
            valid_loss = masked_bce(torch.logit(torch.from_numpy(probs).clamp(1e-6, 1 - 1e-6)), valid.labels).item()
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "valid_loss": valid_loss,
            **{f"valid_{k}": v for k, v in valid_metrics.items()},
            "epoch_seconds": time.perf_counter() - started,
        }
        result.history.append(row)
        score = valid_metrics["mAP"] if not np.isnan(valid_metrics["mAP"]) else -valid_loss
        if score > best_map:
            best_map, result.best_epoch, result.best_valid = score, epoch, valid_metrics
            best_state = copy.deepcopy({k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")})
        if on_epoch:
            on_epoch(row)
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    return result
