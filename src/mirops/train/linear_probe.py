"""The "teacher + logistic regression" baseline of EAsT (docs/methods.md §3.4): a linear probe on a frozen
teacher's time-mean embedding. Its logits on the train split are the KD targets (`train.east`), as the
reference's linear probe teacher gives them.

Two ways to fit it: `fit_probe`, scikit-learn's L2 logistic regression per class (ours), and `fit_probe_sgd`,
the reference's own recipe (`PretrainedFeatureClassifier` trained as its `config/*/lr_*.json` say).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mirops.train.loop import masked_bce
from mirops.train.metrics import evaluate_probs


@dataclass
class LinearProbe:
    """logits = mean_t(embedding) @ weight.T + bias: the reference's `PretrainedFeatureClassifier`
    (docs/methods.md §3.4), fitted by scikit-learn's logistic regression (`fit_probe`) or by the reference's
    SGD recipe (`fit_probe_sgd`)."""

    weight: np.ndarray  # [C, D]
    bias: np.ndarray    # [C]

    def logits(self, embeddings: Tensor | np.ndarray) -> Tensor:
        """[N, T, D] sequences (or [N, D] clip vectors) -> logits [N, C], float32 on the CPU."""
        pooled = _time_mean(embeddings)
        return torch.from_numpy((pooled @ self.weight.T + self.bias).astype(np.float32))

    def probs(self, embeddings: Tensor | np.ndarray) -> np.ndarray:
        return torch.sigmoid(self.logits(embeddings)).numpy()


def _time_mean(embeddings: Tensor | np.ndarray) -> np.ndarray:
    array = embeddings.detach().cpu().numpy() if isinstance(embeddings, Tensor) else np.asarray(embeddings)
    if array.ndim == 3:
        array = array.mean(axis=1)
    if array.ndim != 2:
        raise ValueError(f"expected embeddings [N, T, D] or [N, D], got shape {array.shape}")
    return array.astype(np.float64)


def fit_probe(train_embeddings: Tensor | np.ndarray, train_labels: Tensor | np.ndarray, threshold: float = 0.5,
              c: float = 1.0, max_iter: int = 2000) -> LinearProbe:
    """The "teacher + logistic regression" baseline: one L2 logistic regression per class on the time-mean
    embedding, fitted on that class's annotated clips (labels >= threshold are positive).

    Features are standardised for the solver and the scaling folded back into the weights, so the probe
    stays one linear map of the embedding. A class whose annotated clips are all of one kind (or that has
    none) gets a constant: the logit of its smoothed positive rate (pos + 0.5) / (n + 1), 0 without labels.
    """
    from sklearn.linear_model import LogisticRegression  # scikit-learn only where a probe is fitted

    x = _time_mean(train_embeddings)
    labels = train_labels.numpy() if isinstance(train_labels, Tensor) else np.asarray(train_labels)
    if len(x) != len(labels):
        raise ValueError(f"{len(x)} embeddings but {len(labels)} label rows")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    weight = np.zeros((labels.shape[1], x.shape[1]))
    bias = np.zeros(labels.shape[1])
    for k in range(labels.shape[1]):
        annotated = ~np.isnan(labels[:, k])
        y = (labels[annotated, k] >= threshold).astype(int)
        if 0 < y.sum() < len(y):
            model = LogisticRegression(C=c, max_iter=max_iter).fit(z[annotated], y)
            weight[k] = model.coef_[0] / scale
            bias[k] = model.intercept_[0] - weight[k] @ mean
        else:
            rate = (y.sum() + 0.5) / (len(y) + 1.0)
            bias[k] = np.log(rate / (1.0 - rate))
    return LinearProbe(weight, bias)


# --------------------------------------------------------------------------- the reference's SGD recipe


def fit_probe_sgd(*args, **options) -> LinearProbe:
    """The probe as the reference trains it: `fit_probe_sgd_with_history`'s arguments, without the epochs."""
    return fit_probe_sgd_with_history(*args, **options)[0]


def fit_probe_sgd_with_history(
    train_embeddings: Tensor | np.ndarray, train_labels: Tensor | np.ndarray,
    valid_embeddings: Tensor | np.ndarray, valid_labels: Tensor | np.ndarray,
    lr: float = 0.1, batch_size: int = 16, patience: int = 3, lr_patience: int = 1, lr_factor: float = 0.1,
    max_steps: int = 80_000, seed: int = 1223, threshold: float = 0.5, grad_clip: float | None = 1.0,
    keep: str = "mAP",
) -> tuple[LinearProbe, list[dict[str, float]]]:
    """Mean over time -> Linear(D -> C), trained as the reference's `lr_*.json` configs run it -> (probe, one
    history row per epoch: epoch, steps, lr, train_loss, valid_loss, valid_mAP).

    Followed from the configs: plain SGD (no momentum, weight decay 0) at `lr` (0.1; the reference uses 0.2
    for VGGish on OpenMIC and PaSST on MTAT), shuffled batches of 16 (the last one short), gradient norm
    clipped to 1.0 (Lightning's `gradient_clip_val`), masked BCE on the annotated entries (NaN = not
    annotated; soft labels are used as they are, as `masked_bce` does), then after each epoch on the valid
    loss: ReduceLROnPlateau (factor 0.1, patience 1, torch's defaults otherwise) and early stopping once it
    has not fallen (strictly) for `patience` epochs or is not finite; at most `max_steps` steps, the epoch in
    which they run out is validated too. The valid loss is the batch-size-weighted mean of per-batch masked
    BCE over unshuffled batches, as Lightning averages the logged per-batch loss. Init: torch's nn.Linear
    default right after `torch.manual_seed(seed)` (the reference seeds 1223 before building the model); the
    global RNG is left as it was, and shuffling draws from its own generator seeded with `seed`, so the
    batch order is not the reference's.

    Kept weights (`keep`): "mAP", the reference's — its checkpoint monitors `val/mAP` (max, top 1) while
    early stopping and the scheduler watch the loss, and the test runs on that checkpoint; the first epoch
    is kept, then any epoch with a strictly higher valid mAP (labels >= `threshold` positive, `evaluate_probs`).
    "loss" keeps the lowest valid loss instead.

    Where we differ: the reference applies BCE to sigmoid outputs (we use logits, the same loss, stabler),
    and its masked mean is NaN for a batch without any annotated entry (here a zero loss, no update). Its
    OpenMIC targets are hard (relevance > 0.5, 0.5 masked; `metrics.reference_openmic_scores`): pass labels
    made that way to train on what it trained on.
    """
    if keep not in ("mAP", "loss"):
        raise ValueError(f"keep is 'mAP' (the reference's checkpoint) or 'loss', got {keep!r}")
    if batch_size < 1 or max_steps < 1 or patience < 1:
        raise ValueError(f"batch_size, max_steps and patience must be positive, got {batch_size}, {max_steps}, "
                         f"{patience}")
    x_train, y_train = _as_tensors(train_embeddings, train_labels)
    x_valid, y_valid = _as_tensors(valid_embeddings, valid_labels)
    if x_train.shape[1] != x_valid.shape[1] or y_train.shape[1] != y_valid.shape[1]:
        raise ValueError(f"train and valid differ: embeddings of dim {x_train.shape[1]} vs {x_valid.shape[1]}, "
                         f"{y_train.shape[1]} vs {y_valid.shape[1]} classes")
    classes = [str(k) for k in range(y_train.shape[1])]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = nn.Linear(x_train.shape[1], y_train.shape[1])
    optimiser = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="min", factor=lr_factor,
                                                           patience=lr_patience)
    shuffle = torch.Generator().manual_seed(seed)

    history: list[dict[str, float]] = []
    best_state, best_score, best_loss, bad_epochs, steps = None, None, math.inf, 0, 0
    while steps < max_steps:
        layer.train()
        order = torch.randperm(len(x_train), generator=shuffle)
        train_losses = []
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = masked_bce(layer(x_train[batch]), y_train[batch])
            optimiser.zero_grad()
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(layer.parameters(), grad_clip)
            optimiser.step()
            train_losses.append(loss.item())
            steps += 1
            if steps >= max_steps:
                break

        valid_loss, valid_probs = _validate(layer, x_valid, y_valid, batch_size)
        valid_map = evaluate_probs(valid_probs, y_valid.numpy(), classes, threshold)[0]["mAP"]
        history.append({"epoch": len(history) + 1, "steps": steps, "lr": optimiser.param_groups[0]["lr"],
                        "train_loss": float(np.mean(train_losses)), "valid_loss": valid_loss,
                        "valid_mAP": valid_map})
        score = valid_map if keep == "mAP" else -valid_loss
        score = -math.inf if math.isnan(score) else score  # as Lightning ranks a NaN monitor
        if best_state is None or score > best_score:
            best_state, best_score = {k: v.detach().clone() for k, v in layer.state_dict().items()}, score
        if not math.isfinite(valid_loss):
            break
        if valid_loss < best_loss:
            best_loss, bad_epochs = valid_loss, 0
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                break
        scheduler.step(valid_loss)

    return LinearProbe(best_state["weight"].double().numpy(), best_state["bias"].double().numpy()), history


def _as_tensors(embeddings: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Time-mean embeddings [N, D] and labels [N, C], float32 (the reference's precision)."""
    x = torch.from_numpy(_time_mean(embeddings)).float()
    y = (labels.detach().cpu() if isinstance(labels, Tensor) else torch.as_tensor(np.asarray(labels))).float()
    if y.dim() != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"expected labels [N, C] for N = {len(x)} > 0 embeddings, got shape {tuple(y.shape)}")
    return x, y


@torch.no_grad()
def _validate(layer: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> tuple[float, np.ndarray]:
    """(batch-size-weighted mean of the per-batch masked BCE, probabilities [N, C])."""
    layer.eval()
    logits = layer(x)
    total = sum(masked_bce(logits[i : i + batch_size], y[i : i + batch_size]).item() * len(y[i : i + batch_size])
                for i in range(0, len(y), batch_size))
    return total / len(y), torch.sigmoid(logits).numpy()
