"""The linear probe fitted by the EAsT reference's SGD recipe (`fit_probe_sgd`, docs/methods.md §3.4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mirops.train.linear_probe import LinearProbe, fit_probe_sgd, fit_probe_sgd_with_history
from mirops.train.metrics import evaluate_probs


def separable(n: int, seed: int, classes: int = 3, dim: int = 8, steps: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Sequences [n, steps, dim] whose time mean decides each class linearly, with some labels not annotated."""
    rng = np.random.default_rng(seed)
    directions = np.random.default_rng(99).normal(size=(classes, dim))
    clip = rng.normal(size=(n, dim))
    labels = (clip @ directions.T > 0).astype(np.float32)
    labels[rng.uniform(size=labels.shape) < 0.3] = np.nan
    return (clip[:, None, :] + rng.normal(scale=0.3, size=(n, steps, dim))).astype(np.float32), labels


def valid_map(probe: LinearProbe, embeddings: np.ndarray, labels: np.ndarray) -> float:
    return evaluate_probs(probe.probs(embeddings), labels, [str(k) for k in range(labels.shape[1])])[0]["mAP"]


def test_it_learns_a_separable_problem():
    (x, y), (xv, yv) = separable(320, 0), separable(160, 1)
    probe = fit_probe_sgd(x, y, xv, yv, max_steps=400)  # separable: the loss keeps falling, so cap it
    assert probe.weight.shape == (3, 8) and probe.bias.shape == (3,)
    assert valid_map(probe, xv, yv) > 0.9


def test_it_is_deterministic_under_the_seed_and_starts_from_torchs_linear_init():
    (x, y), (xv, yv) = separable(160, 0), separable(80, 1)
    a, b = fit_probe_sgd(x, y, xv, yv, seed=5, max_steps=200), fit_probe_sgd(x, y, xv, yv, seed=5, max_steps=200)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
    assert not np.allclose(fit_probe_sgd(x, y, xv, yv, seed=6, max_steps=200).weight, a.weight)

    state = torch.random.get_rng_state()
    untrained = fit_probe_sgd(x, y, xv, yv, lr=0.0, max_steps=1, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    torch.manual_seed(5)
    init = nn.Linear(8, 3)
    np.testing.assert_array_equal(untrained.weight, init.weight.detach().double().numpy())
    np.testing.assert_array_equal(untrained.bias, init.bias.detach().double().numpy())


def test_it_stops_once_the_valid_loss_stops_falling_and_steps_the_lr_down_on_plateaus():
    rng = np.random.default_rng(0)
    x, xv = rng.normal(size=(160, 4, 8)), rng.normal(size=(80, 4, 8))
    y, yv = (rng.uniform(size=(160, 3)) < 0.5).astype(float), (rng.uniform(size=(80, 3)) < 0.5).astype(float)
    _, history = fit_probe_sgd_with_history(x, y, xv, yv, lr=0.5, patience=3, max_steps=10_000)
    losses = [row["valid_loss"] for row in history]
    assert len(history) < 10_000 // 10  # labels are noise: it stops long before the cap
    assert int(np.argmin(losses)) == len(history) - 4  # the best epoch, then 3 that did not beat it
    assert all(loss >= min(losses[:-3]) for loss in losses[-3:])
    lrs = [row["lr"] for row in history]
    assert lrs[0] == 0.5 and all(b in (a, pytest.approx(a * 0.1)) for a, b in zip(lrs, lrs[1:], strict=False))
    assert history[-1]["steps"] == 10 * len(history)  # 160 clips in batches of 16


def test_it_keeps_the_best_valid_map_epoch_as_the_reference_or_the_best_loss():
    (x, y), (xv, yv) = separable(160, 0), separable(80, 1)
    y = np.where(np.random.default_rng(2).uniform(size=y.shape) < 0.25, 1.0 - y, y)  # label noise: epochs differ
    by_map, history = fit_probe_sgd_with_history(x, y, xv, yv, lr=0.5)
    assert valid_map(by_map, xv, yv) == pytest.approx(max(row["valid_mAP"] for row in history), abs=1e-6)
    by_loss, history = fit_probe_sgd_with_history(x, y, xv, yv, lr=0.5, keep="loss")
    best = int(np.argmin([row["valid_loss"] for row in history]))
    assert valid_map(by_loss, xv, yv) == pytest.approx(history[best]["valid_mAP"], abs=1e-6)
    assert best != int(np.argmax([row["valid_mAP"] for row in history]))  # the two choices differ here
    assert not np.allclose(by_loss.weight, by_map.weight)
    with pytest.raises(ValueError, match="keep"):
        fit_probe_sgd(x, y, xv, yv, keep="last")


def test_unannotated_labels_are_ignored_and_a_class_without_any_keeps_its_init():
    (x, y), (xv, yv) = separable(160, 0), separable(80, 1)
    y[:, 1], yv[:, 1] = np.nan, np.nan
    probe, history = fit_probe_sgd_with_history(x, y, xv, yv, seed=3, max_steps=300)
    assert np.isfinite(probe.weight).all() and np.isfinite(probe.bias).all()
    assert all(np.isfinite(row["valid_loss"]) and np.isfinite(row["train_loss"]) for row in history)
    torch.manual_seed(3)
    init = nn.Linear(8, 3)
    np.testing.assert_array_equal(probe.weight[1], init.weight[1].detach().double().numpy())  # no gradient, ever
    assert not np.allclose(probe.weight[0], init.weight[0].detach().double().numpy())


def test_sequences_and_clip_vectors_give_the_same_probe():
    (x, y), (xv, yv) = separable(160, 0), separable(80, 1)
    from_sequences = fit_probe_sgd(x, y, xv, yv, max_steps=50)
    from_vectors = fit_probe_sgd(x.astype(np.float64).mean(axis=1), torch.from_numpy(y),
                                 torch.from_numpy(xv.astype(np.float64).mean(axis=1)), yv, max_steps=50)
    np.testing.assert_allclose(from_vectors.weight, from_sequences.weight, rtol=1e-6)
    np.testing.assert_allclose(from_vectors.bias, from_sequences.bias, rtol=1e-6)
    with pytest.raises(ValueError, match="dim"):
        fit_probe_sgd(x, y, xv[:, :, :4], yv)
