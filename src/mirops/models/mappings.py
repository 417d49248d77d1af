"""Output mappings of reprogramming: from what the frozen backbone gives to the target classes.

* `OutputMapping`: LayerNorm + Linear on the clip embedding, trained (the reference head, docs/methods.md §1.5;
  16,916 parameters for 768 -> 20).
* `AudioSetLabelMap`: a fixed many-to-one map from the backbone's AudioSet logits to the target classes
  (the "simple output mapping"): no trainable parameter, only the input transform learns.

Each mapping says which backbone output it reads in `source` ("embedding" or "logits").
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

# OpenMIC-2018's 20 instruments -> AudioSet ontology display names (as in AudioSet's class_labels_indices.csv,
# AST's id2label and YAMNet's class map). Children of an AudioSet class are listed with it because AudioSet
# tags them separately (a drum kit clip may score high on "Snare drum" and lower on "Drum kit").
OPENMIC_AUDIOSET_MAP: dict[str, list[str]] = {
    "accordion": ["Accordion"],
    "banjo": ["Banjo"],
    "bass": ["Bass guitar", "Double bass"],
    "cello": ["Cello"],
    "clarinet": ["Clarinet"],
    "cymbals": ["Cymbal", "Hi-hat"],
    "drums": ["Drum kit", "Drum", "Snare drum", "Bass drum"],
    "flute": ["Flute"],
    "guitar": ["Guitar", "Electric guitar", "Acoustic guitar"],
    "mallet_percussion": ["Mallet percussion", "Marimba, xylophone", "Vibraphone", "Glockenspiel"],
    "mandolin": ["Mandolin"],
    "organ": ["Organ", "Electronic organ", "Hammond organ"],
    "piano": ["Piano", "Electric piano"],
    "saxophone": ["Saxophone"],
    "synthesizer": ["Synthesizer"],
    "trombone": ["Trombone"],
    "trumpet": ["Trumpet"],
    "ukulele": ["Ukulele"],
    "violin": ["Violin, fiddle"],
    "voice": ["Singing", "Choir", "Child singing", "Synthetic singing", "Rapping"],
}

REDUCTIONS = ("max", "mean")


class OutputMapping(nn.Module):
    """LayerNorm + Linear on the clip embedding (the reference head; 16,916 parameters for 768 → 20)."""

    source = "embedding"

    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embedding_dim)
        self.linear = nn.Linear(embedding_dim, num_classes)

    def forward(self, embedding: Tensor) -> Tensor:
        return self.linear(self.norm(embedding))


def resolve_label_map(
    classes: Sequence[str], label_names: Sequence[str], label_map: Mapping[str, Sequence[str]] | None = None
) -> list[list[int]]:
    """For each target class, the indices of its AudioSet labels among `label_names` (matched ignoring case).

    Fails with a clear error on a class the map does not cover, a class mapped to nothing, or a label name
    the backbone does not have (with the closest names it does have).
    """
    label_map = OPENMIC_AUDIOSET_MAP if label_map is None else label_map
    if not label_names:
        raise ValueError("the backbone has no named logits (no classification head): an AudioSet label map "
                         "needs one; use the LayerNorm + Linear mapping instead")
    index = {name.casefold(): i for i, name in enumerate(label_names)}
    resolved = []
    for cls in classes:
        if cls not in label_map:
            raise ValueError(f"no AudioSet labels given for target class {cls!r}: add it to the label map "
                             f"(known classes: {sorted(label_map)})")
        names = list(label_map[cls])
        if not names:
            raise ValueError(f"target class {cls!r} is mapped to no AudioSet label")
        unknown = [name for name in names if name.casefold() not in index]
        if unknown:
            hints = {name: difflib.get_close_matches(name, label_names, n=3) for name in unknown}
            raise ValueError(f"target class {cls!r}: the backbone has no label {unknown[0]!r} "
                             f"(close: {hints[unknown[0]] or 'none'}; all unknown: {unknown})")
        resolved.append(sorted({index[name.casefold()] for name in names}))
    return resolved


class AudioSetLabelMap(nn.Module):
    """Fixed many-to-one map: logits [B, L] over the backbone's labels -> logits [B, C] over target classes.

    A target class's logit is the **max** of its AudioSet labels' logits by default: the class is there if
    any of its AudioSet labels is, and max of logits is max of probabilities (sigmoid is monotone), so the
    result stays a calibrated-as-AudioSet logit of the most confident label. A mean would dilute a
    confident "Drum kit" with the near-zero scores of its untagged siblings (AudioSet labels children and
    parents separately). `reduce="mean"` is there for comparison. Nothing here trains.
    """

    source = "logits"

    def __init__(
        self,
        classes: Sequence[str],
        label_names: Sequence[str],
        label_map: Mapping[str, Sequence[str]] | None = None,
        reduce: str = "max",
    ) -> None:
        super().__init__()
        if reduce not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduce!r}; choose one of {list(REDUCTIONS)}")
        self.reduce = reduce
        self.classes = list(classes)
        groups = resolve_label_map(classes, label_names, label_map)
        self.labels = {cls: [label_names[i] for i in group] for cls, group in zip(self.classes, groups, strict=True)}
        width = max(len(group) for group in groups)
        # Rows padded to one width by repeating their first index, which changes no max (the mean uses `weights`).
        members = torch.tensor([group + group[:1] * (width - len(group)) for group in groups])
        weights = torch.zeros(len(groups), len(label_names))
        for row, group in enumerate(groups):
            weights[row, group] = 1.0 / len(group)
        self.register_buffer("members", members)
        self.register_buffer("weights", weights)

    def forward(self, logits: Tensor) -> Tensor:
        if logits.shape[-1] != self.weights.shape[1]:
            raise ValueError(f"label map built for {self.weights.shape[1]} logits, got {tuple(logits.shape)}")
        if self.reduce == "max":
            return logits[:, self.members].amax(dim=-1)
        return logits @ self.weights.T


MAPPINGS = ("linear", "audioset")
