"""Figures people would rather see than read (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def per_class_bars(per_class: dict[str, dict[str, float]], keys: tuple[str, ...] = ("AP", "F1"), title: str = ""):
    names = list(per_class)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 3.5))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        ax.bar([x + i * width for x in range(len(names))], [per_class[n][key] for n in names], width, label=key)
    ax.set_xticks([x + width * (len(keys) - 1) / 2 for x in range(len(names))], names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def training_curves(history: list[dict[str, float]]):
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    left.plot(epochs, [r["valid_loss"] for r in history], label="valid loss")
    left.set_xlabel("epoch")
    left.legend()
    right.plot(epochs, [r["valid_mAP"] for r in history], label="valid mAP")
    right.plot(epochs, [r["valid_ROC_AUC"] for r in history], label="valid ROC-AUC")
    right.set_xlabel("epoch")
    right.legend()
    fig.tight_layout()
    return fig
