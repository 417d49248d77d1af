"""What a demo is made of before any audio is rendered: sessions (the manifest's groups), clip plans and
batches (one per output folder), and the independent random streams every draw comes from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mirops.data.compositions import Key
from mirops.data.gm import GM_INSTRUMENTS

# Independent random streams, so changing one aspect (e.g. the labels) leaves the others as they were.
SESSIONS, SPLITS, INSTRUMENTS, LABELS, NOTES, DOMAINS, STYLE_CHOICE, TEMPI = range(8)
LABELLED, PRODUCTION = 0, 1  # the batches: first key of every stream
MAX_PITCHED_PARTS = 15  # MIDI channels left beside the drum channel


def stream(seed: int, *ids: int) -> np.random.Generator:
    """The random stream of one aspect (`ids`: batch, aspect, and e.g. a group or clip index) of a seed."""
    return np.random.default_rng([seed & 0xFFFF_FFFF_FFFF_FFFF, *ids])


@dataclass(frozen=True)
class Session:
    """A group of the manifest: a recording session (instruments) or an artist (tagging)."""

    group: str
    split: str
    soundfont: str  # the timbre domain: every clip of the group renders through it
    key: Key  # the session's key and tempo (the instruments variant plays every clip in them)
    tempo: float
    programs: dict[str, int]  # class -> GM program (the bank-128 kit for drums and cymbals)
    drum_kit: str | None = None  # hydrogen kit playing drums and cymbals; None: the SoundFont's kit
    style: str | None = None  # tagging: the generation preset (compositions.STYLES)


@dataclass(frozen=True)
class ClipPlan:
    index: int
    clip_id: str
    session: Session
    instruments: tuple[str, ...]  # in class order
    key: Key
    tempo: float

    @property
    def has_drum_channel(self) -> bool:
        return any(GM_INSTRUMENTS[name].is_drum_kit for name in self.instruments)

    @property
    def real_drums(self) -> bool:
        return self.has_drum_channel and self.session.drum_kit is not None


@dataclass(frozen=True)
class Batch:
    """What one output folder will hold, decided before any audio is rendered."""

    name: str  # "labelled" or "production"
    variant: str
    clips: list[ClipPlan]
    classes: list[str]  # label columns
    labels: np.ndarray  # (clips, classes) float, NaN = not annotated
    clip_seconds: float


def truth_matrix(plans: Sequence[ClipPlan], classes: list[str]) -> np.ndarray:
    """Which instruments each clip plays (bool, clips x classes)."""
    return np.array([[c in p.instruments for c in classes] for p in plans], dtype=bool).reshape(-1, len(classes))
