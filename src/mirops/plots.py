"""Figures people would rather see than read (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def close(fig) -> None:
    plt.close(fig)


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
    history = [row for row in history if "train_loss" in row]  # epoch 0: a model with nothing to train
    epochs = [row["epoch"] for row in history]
    validated = all("valid_loss" in row for row in history)  # not when the valid clips are trained on
    fig, axes = plt.subplots(1, 2 if validated else 1, figsize=(9 if validated else 4.5, 3.2), squeeze=False)
    left = axes[0, 0]
    left.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    if validated:
        left.plot(epochs, [r["valid_loss"] for r in history], label="valid loss")
        right = axes[0, 1]
        right.plot(epochs, [r["valid_mAP"] for r in history], label="valid mAP")
        right.plot(epochs, [r["valid_ROC_AUC"] for r in history], label="valid ROC-AUC")
        right.set_xlabel("epoch")
        right.legend()
    left.set_xlabel("epoch")
    left.legend()
    fig.tight_layout()
    return fig


def grid_per_class(per_class: dict[str, dict[str, float]], title: str = ""):
    """{variant: {class: value}} as grouped horizontal bars, one group per class (the paper's per-instrument
    F1 figure): where each variant wins and loses."""
    variants = list(per_class)
    classes = list(next(iter(per_class.values()))) if per_class else []
    fig, ax = plt.subplots(figsize=(8, max(3.5, 0.45 * len(classes) * max(1, len(variants)) / 3)))
    height = 0.8 / max(1, len(variants))
    for i, variant in enumerate(variants):
        ax.barh([y + i * height for y in range(len(classes))], [per_class[variant][c] for c in classes], height,
                label=variant)
    ax.set_yticks([y + height * (len(variants) - 1) / 2 for y in range(len(classes))], classes)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def metric_bars(table, label: str, metrics: tuple[str, ...], title: str = ""):
    """One group of bars per row of `table` (e.g. per model variant), one bar per metric."""
    names = list(table[label])
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names)), 3.5))
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        ax.bar([x + i * width for x in range(len(names))], table[metric], width, label=metric)
    ax.set_xticks([x + width * (len(metrics) - 1) / 2 for x in range(len(names))], names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def _class_bars(ax, table, column: str, by: str = "split") -> None:
    classes = list(dict.fromkeys(table["class"]))
    groups = list(dict.fromkeys(table[by])) if by in table else [None]
    width = 0.8 / len(groups)
    for i, group in enumerate(groups):
        part = table if group is None else table[table[by] == group]
        values = part.set_index("class").reindex(classes)[column]
        ax.bar([x + i * width for x in range(len(classes))], values.fillna(0), width, label=group)
    ax.set_xticks([x + width * (len(groups) - 1) / 2 for x in range(len(classes))], classes, rotation=60, ha="right")
    if groups != [None]:
        ax.legend(fontsize=8)


def audit_plots(tables: dict) -> dict[str, object]:
    """The audit's figures: label prevalence per split, missing and unsure labels, groups per class, and
    descriptor histograms per split (from `mirops.audit.tables.derived_tables`)."""
    balance, classes, audio = tables["balance"], tables["classes"], tables["audio"]
    figs = {}
    width = max(6, 0.45 * len(classes))
    fig, ax = plt.subplots(figsize=(width, 3.5))
    _class_bars(ax, balance, "positive_rate")
    ax.set_ylabel("positive rate (annotated)")
    ax.set_title("label prevalence per split")
    fig.tight_layout()
    figs["prevalence_per_split.png"] = fig

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 5.5), sharex=True)
    missing = balance.assign(missing_rate=1 - balance["annotated_fraction"])
    _class_bars(top, missing, "missing_rate")
    top.set_ylabel("not annotated")
    _class_bars(bottom, classes, "ambiguous_share", by="-")
    bottom.set_ylabel("unsure labels")
    top.set_title("missing and ambiguous labels per class")
    fig.tight_layout()
    figs["missing_and_ambiguous.png"] = fig

    fig, ax = plt.subplots(figsize=(width, 3.2))
    _class_bars(ax, classes, "effective_groups", by="-")
    ax.set_ylabel("effective groups")
    ax.set_title("how many groups (sessions, artists) the positives of each class come from")
    fig.tight_layout()
    figs["groups_per_class.png"] = fig

    names = [c for c in ("rms_db", "loudness_lufs", "spectral_centroid_hz", "spectral_flatness", "silence_ratio",
                         "duration_s") if c in audio.columns]
    if len(audio) and names:
        fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 2.8))
        for ax, name in zip(axes, names, strict=True):
            for split in audio["split"].dropna().unique():  # in the table's order: the manifest's splits
                values = audio.loc[audio["split"] == split, name].dropna()
                if len(values):
                    ax.hist(values, bins=20, alpha=0.5, density=True, label=split)
            ax.set_title(name, fontsize=9)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        figs["descriptors_per_split.png"] = fig
    return figs
