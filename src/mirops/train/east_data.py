"""What EAsT trains on: a split's cached student frames, labels and teacher sequences (`EastSet`), and the audio
behind them where training augments the front end (`ClipWaves`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor


@dataclass
class TeacherCache:
    """One teacher's precomputed outputs for every clip of a split."""

    embeddings: Tensor           # [N, T, D]; never modified by training
    hop_s: float | None          # seconds between steps; None for one clip-level vector (T = 1)
    logits: Tensor | None = None  # [N, C] on the target classes (the probe's), needed for KD


@dataclass
class ClipWaves:
    """A split's waveforms, read per batch (the decoded-audio cache holds them), so the front end can run in
    training mode: its augmentation (the mel-band jitter) differs at every step and is never cached."""

    read: Callable[[int], np.ndarray]  # clip number -> waveform [samples] at the student's rate, cropped
    index: np.ndarray                  # the clip numbers of this set, in order

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, positions: Tensor) -> Tensor:
        return torch.from_numpy(np.stack([self.read(int(self.index[int(i)])) for i in positions])).float()

    def subset(self, positions: Tensor) -> ClipWaves:
        return ClipWaves(self.read, self.index[positions.numpy()])


@dataclass
class EastSet:
    """Student front-end frames [N, T, F], soft labels [N, C] (NaN = not annotated) and teacher caches;
    `waves`, where given, are the same clips' audio for front-end augmentation in training."""

    frames: Tensor
    labels: Tensor
    teachers: dict[str, TeacherCache] = field(default_factory=dict)
    waves: ClipWaves | None = None

    def __post_init__(self) -> None:
        if self.frames.dim() != 3 or self.labels.dim() != 2 or len(self.frames) != len(self.labels):
            raise ValueError(f"expected frames [N, T, F] and labels [N, C] for the same N, got "
                             f"{tuple(self.frames.shape)} and {tuple(self.labels.shape)}")
        for name, cache in self.teachers.items():
            if cache.embeddings.dim() != 3 or len(cache.embeddings) != len(self):
                raise ValueError(f"teacher {name!r}: expected embeddings [{len(self)}, T, D], "
                                 f"got {tuple(cache.embeddings.shape)}")
            if cache.logits is not None and cache.logits.shape != self.labels.shape:
                raise ValueError(f"teacher {name!r}: expected logits {tuple(self.labels.shape)} (clips x classes), "
                                 f"got {tuple(cache.logits.shape)}")
        if self.waves is not None and len(self.waves) != len(self):
            raise ValueError(f"{len(self.waves)} waveforms for {len(self)} clips")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def num_classes(self) -> int:
        return self.labels.shape[1]

    def subset(self, index: Sequence[int] | Tensor) -> EastSet:
        index = torch.as_tensor(index, dtype=torch.long)
        teachers = {name: TeacherCache(c.embeddings[index], c.hop_s, None if c.logits is None else c.logits[index])
                    for name, c in self.teachers.items()}
        return EastSet(self.frames[index], self.labels[index], teachers,
                       None if self.waves is None else self.waves.subset(index))

    def with_teacher_logits(self, teacher: str, logits: Tensor) -> EastSet:
        """A copy whose `teacher` carries `logits` (e.g. `probe.logits(...)`); this set is left as it is."""
        self._cache(teacher)
        teachers = dict(self.teachers)
        teachers[teacher] = replace(self.teachers[teacher], logits=torch.as_tensor(logits, dtype=torch.float32))
        return EastSet(self.frames, self.labels, teachers, self.waves)

    def _cache(self, teacher: str) -> TeacherCache:
        if teacher not in self.teachers:
            raise KeyError(f"no embeddings of teacher {teacher!r} in this split (it has {sorted(self.teachers)})")
        return self.teachers[teacher]
