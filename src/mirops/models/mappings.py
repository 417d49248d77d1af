"""Output mappings of reprogramming: from what the frozen backbone gives to the target classes.

* `OutputMapping`: LayerNorm + Linear on the clip embedding, trained (the reference head, docs/methods.md §1.5;
  16,916 parameters for 768 -> 20).
* `AudioSetLabelMap`: a fixed many-to-one map from the backbone's AudioSet logits to the target classes
  (the "simple output mapping"): no trainable parameter, only the input transform learns. Which AudioSet labels
  a class reads: the built-in `OPENMIC_AUDIOSET_MAP`, with the setting `reprogram.audioset_labels` on top
  (`merged_label_map`); entries are display names or indices, checked by `check_label_map`.

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


LabelRef = str | int
"""An AudioSet label as a label map names it: its display name (matched ignoring case) or its index among the
backbone's logits."""

SETTING = "reprogram.audioset_labels"  # where a user gives the map (params.yaml), named in the errors below


class UnmappedClassError(ValueError):
    """Target classes the label map gives no AudioSet label: the fixed map cannot be built for them."""

    def __init__(self, classes: Sequence[str], label_names: Sequence[str] = ()) -> None:
        self.classes = list(classes)
        example = {cls: (nearest_labels(cls.replace("_", " "), label_names, always=False) or ["<AudioSet name>"])
                   for cls in self.classes}
        shown = ", ".join(f"{cls}: [{names[0]!r}]" for cls, names in example.items())
        super().__init__(
            f"no AudioSet labels given for target class{'es' if len(self.classes) > 1 else ''} "
            f"{', '.join(repr(c) for c in self.classes)}: add {'them' if len(self.classes) > 1 else 'it'} to "
            f"`{SETTING}` in params.yaml, e.g. `audioset_labels: {{{shown}}}` (AudioSet display names or "
            f"indices; the built-in map covers OpenMIC's classes only: {sorted(OPENMIC_AUDIOSET_MAP)})")


def nearest_labels(name: str, label_names: Sequence[str], n: int = 3, always: bool = True) -> list[str]:
    """Up to `n` of the backbone's label names close to `name` (difflib, ignoring case; a label such as "Wind
    instrument, woodwind instrument" is matched whole, by its parts and by its words), closest first; with
    `always`, the single nearest one when none is close."""
    forms: dict[str, str] = {}
    for label in label_names:
        parts = [p.strip() for p in label.split(",")]
        for form in (label, *parts, *(w for p in parts for w in p.split() if len(w) >= 4)):
            forms.setdefault(form.casefold(), label)
    query = name.strip().casefold()
    close = difflib.get_close_matches(query, list(forms), n=4 * n)
    if not close and always:
        close = difflib.get_close_matches(query, list(forms), n=1, cutoff=0.0)
    return list(dict.fromkeys(forms[c] for c in close))[:n]


def is_close(name: str, label: str) -> bool:
    return label in nearest_labels(name, [label], always=False)


def merged_label_map(overrides: Mapping[str, Sequence[LabelRef]] | None = None) -> dict[str, list[LabelRef]]:
    """The built-in OpenMIC map with `overrides` (the setting `reprogram.audioset_labels`) on top: a class the
    overrides name gets exactly their labels; the other classes keep the built-in ones."""
    return {cls: list(names) for cls, names in OPENMIC_AUDIOSET_MAP.items()} | {
        cls: list(names) for cls, names in (overrides or {}).items()}


def label_index(cls: str, ref: LabelRef, label_names: Sequence[str], source: str = "the label map") -> int:
    """The logit index of AudioSet label `ref` (a display name, ignoring case, or an index) for target class `cls`.

    An unknown name or an index out of range is a ValueError naming `source`, the class, the entry and the
    nearest valid name."""
    if isinstance(ref, bool) or not isinstance(ref, str | int):
        raise ValueError(f"{source}: class {cls!r}: {ref!r} is neither an AudioSet display name nor an index")
    if isinstance(ref, int):
        if not 0 <= ref < len(label_names):
            raise ValueError(f"{source}: class {cls!r}: AudioSet index {ref} is out of range: this backbone has "
                             f"{len(label_names)} labels, indices 0..{len(label_names) - 1}")
        return ref
    for i, name in enumerate(label_names):
        if name.casefold() == ref.casefold():
            return i
    near = nearest_labels(ref, label_names)
    if not near:
        raise ValueError(f"{source}: class {cls!r}: the backbone has no AudioSet label {ref!r}: it has no named "
                         "logits at all (no classification head)")
    hint = (f" (also close: {near[1:]})" if len(near) > 1 else "") if is_close(ref, near[0]) else (
        ", though nothing is close: AudioSet may have no such class, and a broader one can stand in")
    raise ValueError(f"{source}: class {cls!r}: the backbone has no AudioSet label {ref!r}; nearest valid name: "
                     f"{near[0]!r}{hint}")


def check_label_map(label_map: Mapping[str, Sequence[LabelRef]], label_names: Sequence[str],
                    source: str = SETTING) -> None:
    """Every entry of `label_map` names one of the backbone's labels, and every class has one: the check of the
    setting before anything trains (its first bad entry is the error)."""
    for cls, refs in label_map.items():
        if not refs:
            raise ValueError(f"{source}: class {cls!r} is mapped to no AudioSet label")
        for ref in refs:
            label_index(cls, ref, label_names, source)


def resolve_label_map(
    classes: Sequence[str], label_names: Sequence[str], label_map: Mapping[str, Sequence[LabelRef]] | None = None
) -> list[list[int]]:
    """For each target class, the indices of its AudioSet labels among `label_names` (names matched ignoring
    case, or given as indices).

    Fails with a clear error on a class the map does not cover (`UnmappedClassError`, naming the setting that
    adds it), a class mapped to nothing, or a label the backbone does not have (with the nearest name it has).
    """
    label_map = OPENMIC_AUDIOSET_MAP if label_map is None else label_map
    if not label_names:
        raise ValueError("the backbone has no named logits (no classification head): an AudioSet label map "
                         "needs one; use the LayerNorm + Linear mapping instead")
    missing = [cls for cls in classes if cls not in label_map]
    if missing:
        raise UnmappedClassError(missing, label_names)
    resolved = []
    for cls in classes:
        refs = list(label_map[cls])
        if not refs:
            raise ValueError(f"target class {cls!r} is mapped to no AudioSet label")
        resolved.append(sorted({label_index(cls, ref, label_names) for ref in refs}))
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
        label_map: Mapping[str, Sequence[LabelRef]] | None = None,
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
