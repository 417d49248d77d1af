"""EAsT training (Ding & Lerch, ISMIR 2023; docs/methods.md §3), in plain sight.

A student CNN learns from log-mel frames with masked BCE, optionally tied to one frozen teacher:

    student   L = BCE
    kd        L = (1 - lam) BCE + lam KD                        (KD on the teacher probe's logits)
    east      L = (1 - lam) BCE + lam (1 - dCor)                (the EAsT regulariser)
    kd+east   L = (1 - lam) BCE + lam (0.3 KD + 0.7 (1 - dCor))

(`mirops.train.east_losses`). Front-end frames and teacher embeddings are computed once, outside this
module, and kept in an `EastSet`. The recipe is the reference's (docs/methods.md §3.8-3.9): Adam 1e-4 with weight
decay 1e-4, batch 16, gradient-norm clipping at 1, ReduceLROnPlateau (factor 0.2) on the valid total loss,
and for instruments (OpenMIC) SpecAugment plus mixup of frames, labels and teacher embeddings, and the front
end's per-clip mel-band jitter, computed from the audio batch by batch (`ClipWaves`; eval frames stay cached).
Model selection uses the valid split's mAP (never test); early stopping watches valid mAP or, as the reference
does, the valid total loss (`east.stop_on`); `east.max_steps` is the reference's step budget. bf16 autocast on
CUDA, checkpoints and resume: the epoch bookkeeping, device, precision and augmentation are those reprogramming uses too
(`mirops.train.loop`).

`fit_probe` (`mirops.train.linear_probe`) is the "teacher + logistic regression" baseline; its logits on the
train split are the KD targets, as the reference's linear probe teacher gives them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from mirops.config import EastParams
from mirops.models.students import NORM_MEAN, NORM_STD
from mirops.train.checkpoint import Checkpoints
from mirops.train.east_data import ClipWaves as ClipWaves  # re-exported: the data EAsT trains on
from mirops.train.east_data import EastSet as EastSet
from mirops.train.east_data import TeacherCache as TeacherCache
from mirops.train.east_losses import east_loss_parts
from mirops.train.east_recipe import TASK_RECIPES as TASK_RECIPES  # re-exported: the reference's recipe
from mirops.train.east_recipe import effective_recipe as effective_recipe
from mirops.train.east_recipe import kd_share, loss_weight, resolved, step_budget
from mirops.train.east_recipe import reference_lam as reference_lam
from mirops.train.east_recipe import reference_probe_lr as reference_probe_lr
from mirops.train.linear_probe import LinearProbe as LinearProbe  # re-exported: EAsT's baseline, beside fit_student
from mirops.train.linear_probe import fit_probe as fit_probe
from mirops.train.loop import (
    FitResult,
    SpecAugment,
    autocast,
    batched_probs,
    masked_bce,
    model_device,
    run_epochs,
)
from mirops.train.metrics import evaluate_probs

MODES = ("student", "kd", "east", "kd+east")
TEACHER_MODES = ("kd", "east", "kd+east")  # the modes that train against a teacher


# --------------------------------------------------------------------------- batches and losses


@dataclass
class Batch:
    frames: Tensor
    labels: Tensor
    teacher_seq: Tensor | None = None
    teacher_logits: Tensor | None = None


def batch_slices(n: int, size: int) -> list[slice]:
    """Consecutive batches of `size`; a last batch of one clip joins the one before: a distance correlation
    over one clip is undefined (docs/methods.md §3.6 computes it across the batch)."""
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [slice(start, end) for start, end in zip(starts, [*starts[1:], n], strict=True)]


def gather(data: EastSet, index: Tensor, teacher: str | None, device: torch.device,
           frontend: nn.Module | None = None) -> Batch:
    """The clips `index` of `data` on `device`; with `frontend` (in training mode) their frames are computed from
    `data.waves` at this step, with the front end's augmentation, instead of read from the eval-mode cache."""
    cache = data.teachers[teacher] if teacher else None
    if frontend is not None:
        with torch.no_grad():  # the front end has no parameters
            frames = frontend(data.waves.batch(index).to(device))
    else:
        frames = data.frames[index].to(device)
    return Batch(
        frames, data.labels[index].to(device),
        None if cache is None else cache.embeddings[index].to(device),
        None if cache is None or cache.logits is None else cache.logits[index].to(device),
    )


def mix_labels(first: Tensor, second: Tensor, weight: Tensor) -> Tensor:
    """The reference's mixup of masked labels (docs/methods.md §3.8): unannotated entries count as 0 and an entry
    is annotated when it is in either clip (the union of the masks)."""
    annotated = ~torch.isnan(first) | ~torch.isnan(second)
    mixed = weight * first.nan_to_num(0.0) + (1.0 - weight) * second.nan_to_num(0.0)
    return torch.where(annotated, mixed, torch.full_like(mixed, float("nan")))


def mixup(batch: Batch, partner: Batch, weight: Tensor) -> Batch:
    """Mix each clip with a partner by its own weight in [0.5, 1]: frames, labels, teacher embeddings and,
    since the probe is linear in the time-mean embedding, exactly its logits on the mixed embedding."""

    def mix(a: Tensor | None, b: Tensor | None) -> Tensor | None:
        if a is None or b is None:
            return None
        w = weight.view(-1, *([1] * (a.dim() - 1)))
        return w * a + (1.0 - w) * b

    return Batch(mix(batch.frames, partner.frames), mix_labels(batch.labels, partner.labels, weight[:, None]),
                 mix(batch.teacher_seq, partner.teacher_seq), mix(batch.teacher_logits, partner.teacher_logits))


def loss_parts(student: nn.Module, batch: Batch, mode: str, lam: float, params: EastParams,
               teacher_hop: float | None) -> tuple[dict[str, Tensor], Tensor]:
    """Forward the student and compose the loss of `mode` -> (parts, logits).

    With a teacher in "student" or "kd" mode, the EAsT term is still computed, on detached features, so its
    value can be watched without pulling on the student.
    """
    with autocast(batch.frames.device, params.precision):
        logits, features = student.forward_features(batch.frames)
    logits, features = logits.float(), features.float()
    if batch.teacher_seq is None:
        bce = masked_bce(logits, batch.labels)
        return {"prediction": bce, "total": bce}, logits
    tied = features if mode in ("east", "kd+east") else features.detach()
    parts = east_loss_parts(logits, batch.labels, tied, batch.teacher_seq, lam,
                            teacher_logits=batch.teacher_logits, kd_weight=kd_share(mode, params), tau=params.tau,
                            student_hop=student.feature_hop_s, teacher_hop=teacher_hop, regulariser=params.regulariser)
    return parts, logits


# --------------------------------------------------------------------------- validation


@torch.no_grad()
def evaluate_student(student: nn.Module, data: EastSet, mode: str, teacher: str | None, lam: float,
                     params: EastParams) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, mean loss parts) on a split, in fixed batches of `batch_size` with no augmentation.

    `dcor` is the mean student-teacher distance correlation across those batches (1 - the EAsT term).
    """
    student.eval()
    device = model_device(student)
    hop = data.teachers[teacher].hop_s if teacher else None
    sums: dict[str, float] = {}
    probs = []
    for part in batch_slices(len(data), params.batch_size):
        index = torch.arange(part.start, part.stop)
        parts, logits = loss_parts(student, gather(data, index, teacher, device), mode, lam, params, hop)
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value.item() * len(index)
        probs.append(torch.sigmoid(logits).cpu())
    losses = {key: total / len(data) for key, total in sums.items()}
    if "east" in losses and params.regulariser == "distance_correlation":
        losses["dcor"] = 1.0 - losses["east"]
    classes = [str(k) for k in range(data.num_classes)]
    metrics, _ = evaluate_probs(torch.cat(probs).numpy(), data.labels.numpy(), classes, params.threshold)
    return metrics, losses


# --------------------------------------------------------------------------- training


def _check_inputs(student: nn.Module, train: EastSet, valid: EastSet, mode: str, teacher: str | None) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
    if mode in TEACHER_MODES and teacher is None:
        raise ValueError(f"mode {mode!r} trains against a teacher: pass teacher=<name>")
    if student.head.out_features != train.num_classes or valid.num_classes != train.num_classes:
        raise ValueError(f"the student predicts {student.head.out_features} classes; train has "
                         f"{train.num_classes}, valid {valid.num_classes}")
    if len(train) < 2 or len(valid) < 2:
        raise ValueError(f"need at least 2 clips per split (the regulariser compares clips), got "
                         f"{len(train)} train and {len(valid)} valid")
    if teacher is None:
        return
    for split, data in (("train", train), ("valid", valid)):
        cache = data._cache(teacher)
        if mode in ("kd", "kd+east") and cache.logits is None:
            raise ValueError(
                f"mode {mode!r} distils the teacher's logits on the target classes, but the {split} split has "
                f"none for {teacher!r}: fit a probe (fit_probe) and attach its logits with "
                f"{split}.with_teacher_logits({teacher!r}, probe.logits(...)), for train and valid")


class _Epoch:
    """One pass over the training split: shuffled batches, SpecAugment, mixup, clipped Adam steps."""

    def __init__(self, student, train: EastSet, mode: str, teacher: str | None, lam: float, params: EastParams,
                 optimiser: torch.optim.Optimizer, rng: np.random.Generator) -> None:
        self.student, self.train, self.mode, self.teacher = student, train, mode, teacher
        self.lam, self.params, self.optimiser, self.rng = lam, params, optimiser, rng
        self.device = model_device(student)
        self.hop = train.teachers[teacher].hop_s if teacher else None
        # The reference masks the log-mel with 0 before normalising it (docs/methods.md §3.8): (0 - mean) / std here.
        fill = (0.0 - NORM_MEAN) / NORM_STD
        self.augment = SpecAugment(int(resolved(params, "freq_mask")), int(resolved(params, "time_mask")), fill)
        self.mixup_alpha = float(resolved(params, "mixup"))
        # The mel-band jitter needs the audio: the student's own front end, in training mode, batch by batch.
        self.frontend = student.frontend if resolved(params, "mel_jitter") and train.waves is not None else None

    def gather(self, index: np.ndarray) -> Batch:
        return gather(self.train, torch.from_numpy(index), self.teacher, self.device, self.frontend)

    def batch(self, index: np.ndarray) -> Batch:
        batch = self.gather(index)
        if not self.mixup_alpha:
            return replace(batch, frames=self.augment(batch.frames))
        # Per clip, as the reference's dataset does: a partner drawn from the whole split, weight max(l, 1 - l).
        partner = self.gather(self.rng.integers(0, len(self.train), len(index)))
        weight = self.rng.beta(self.mixup_alpha, self.mixup_alpha, len(index))
        weight = torch.from_numpy(np.maximum(weight, 1.0 - weight)).float().to(self.device)
        both = self.augment(torch.cat([batch.frames, partner.frames]))  # masks per clip, before mixing
        batch, partner = replace(batch, frames=both[: len(index)]), replace(partner, frames=both[len(index):])
        return mixup(batch, partner, weight)

    def run(self, max_batches: int | None = None) -> dict[str, float]:
        """One epoch, or its first `max_batches` batches (the step budget ends mid-epoch)."""
        self.student.train()
        order = self.rng.permutation(len(self.train))
        sums: dict[str, float] = {}
        parts_of_epoch = batch_slices(len(order), self.params.batch_size)[:max_batches]
        order = order[: parts_of_epoch[-1].stop]
        for part in parts_of_epoch:
            parts, _ = loss_parts(self.student, self.batch(order[part]), self.mode, self.lam, self.params, self.hop)
            self.optimiser.zero_grad(set_to_none=True)
            parts["total"].backward()
            if self.params.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.params.grad_clip)
            self.optimiser.step()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value.item() * (part.stop - part.start)
        return {key: total / len(order) for key, total in sums.items()}


def fit_student(
    student: nn.Module,
    train: EastSet,
    valid: EastSet,
    params: EastParams,
    seed: int,
    mode: str = "east",
    teacher: str | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
) -> FitResult:
    """Train `student` (already on its device) in place; on return it holds the best valid-mAP epoch's weights.

    `mode`: "student" (BCE), "kd", "east" or "kd+east" (see the module docstring); `teacher` names the
    `EastSet.teachers` entry to learn from; in "student" mode it is only watched (history's east/dcor). KD
    needs the teacher's logits on train and valid (`fit_probe`, `EastSet.with_teacher_logits`). Each
    history row holds the train and valid loss terms (`*_loss` is the total, `*_regulariser` what lam
    weighs, `*_east` 1 - dCor, `*_kd`), `valid_dcor`, the valid metrics, lr and seconds. With `checkpoints`
    every finished epoch is saved; `resume=True` continues from the newest and ends exactly as the
    uninterrupted run would have.
    """
    _check_inputs(student, train, valid, mode, teacher)
    lam = loss_weight(params, mode, teacher)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)  # batch order and mixup; torch's stream drives SpecAugment and dropout
    optimiser = torch.optim.Adam(student.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, mode="min", factor=params.lr_factor, patience=int(resolved(params, "lr_patience")))
    patience = int(resolved(params, "patience"))
    epoch_pass = _Epoch(student, train, mode, teacher, lam, params, optimiser, rng)
    per_epoch = len(batch_slices(len(train), params.batch_size))
    budget = step_budget(params)
    epochs = params.epochs if budget is None else min(params.epochs, -(-budget // per_epoch))

    def one_epoch(epoch: int) -> tuple[dict[str, float], dict[str, float], float]:
        left = None if budget is None else budget - (epoch - 1) * per_epoch
        train_losses = epoch_pass.run(max_batches=left if left is not None and left < per_epoch else None)
        valid_metrics, valid_losses = evaluate_student(student, valid, mode, teacher, lam, params)
        scheduler.step(valid_losses["total"])  # the reference's monitor: val/loss/total
        return _history_row(epoch, train_losses, valid_losses, valid_metrics), valid_metrics, valid_losses["total"]

    return run_epochs(student, optimiser, scheduler, rng, epochs=epochs, patience=patience, one_epoch=one_epoch,
                      checkpoints=checkpoints, resume=resume, on_epoch=on_epoch, stop_on=params.stop_on)


def _history_row(epoch: int, train: dict[str, float], valid: dict[str, float], metrics: dict[str, float]) -> dict:
    def named(split: str, losses: dict[str, float]) -> dict[str, float]:
        return {f"{split}_{'loss' if key == 'total' else key}": value for key, value in losses.items()}

    return {"epoch": epoch, **named("train", train), **named("valid", valid),
            **{f"valid_{key}": value for key, value in metrics.items()}}


# --------------------------------------------------------------------------- inference


def predict_student(student: nn.Module, frames: Tensor, batch_size: int = 16, precision: str = "fp32") -> np.ndarray:
    """Class probabilities [N, C] of a student on front-end frames [N, T, F] (eval mode, no gradients)."""
    if len(frames) == 0:
        return np.zeros((0, student.head.out_features), dtype=np.float32)
    return batched_probs(student, frames, student.head.out_features, batch_size=batch_size, precision=precision)


@torch.inference_mode()
def inference_ms_per_clip(model: nn.Module, frames: Tensor, batch_size: int = 1, precision: str = "fp32",
                          warmup: int = 2) -> float:
    """Wall-clock milliseconds per clip of `model.forward_spectrogram` on `frames`, on the model's device.

    `warmup` batches run first and are not timed (allocator, cuDNN autotuning); CUDA is synchronised around
    the timed loop, so the figure is the whole forward pass, not its launch.
    """
    if len(frames) == 0:
        raise ValueError("no clips to time")
    model.eval()
    device = model_device(model)
    batches = [frames[i : i + batch_size].to(device) for i in range(0, len(frames), batch_size)]
    with autocast(device, precision):
        for batch in batches[:warmup]:
            model.forward_spectrogram(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for batch in batches:
            model.forward_spectrogram(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - started) * 1000.0 / len(frames)
