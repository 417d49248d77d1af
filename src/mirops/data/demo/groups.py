"""Groups of the demo (recording sessions, artists) and their splits: how many groups each split gets, which
clips a group holds, and each group's session (SoundFont, key, tempo, GM programs, drum kit)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mirops.data.compositions import Style, random_key, random_tempo
from mirops.data.demo.plans import DOMAINS, LABELLED, SESSIONS, SPLITS, Session, stream
from mirops.data.gm import DRUM_KITS, GM_INSTRUMENTS
from mirops.data.manifest import LABELLED_SPLITS


def split_fractions(split: dict[str, float]) -> dict[str, float]:
    """Validated, normalised split fractions in train/valid/test order, zero fractions dropped."""
    unknown = sorted(set(split) - set(LABELLED_SPLITS))
    if unknown:
        raise ValueError(f"demo.split: unknown splits {unknown}; expected some of {list(LABELLED_SPLITS)}")
    if any(v < 0 for v in split.values()) or sum(split.values()) <= 0:
        raise ValueError(f"demo.split: fractions must be non-negative and sum to more than 0, got {split}")
    total = sum(split.values())
    return {s: split[s] / total for s in LABELLED_SPLITS if split.get(s, 0) > 0}


def allocate_groups(n_groups: int, fractions: dict[str, float]) -> list[str]:
    """How many groups each split gets (largest remainder, at least one each), as one split name per group."""
    if n_groups < len(fractions):
        raise ValueError(f"demo.groups={n_groups} is fewer than the {len(fractions)} splits: each split needs a group")
    exact = {s: f * n_groups for s, f in fractions.items()}
    counts = {s: max(1, int(np.floor(v))) for s, v in exact.items()}
    while sum(counts.values()) < n_groups:  # the largest shortfall gets the next group
        counts[max(fractions, key=lambda s: exact[s] - counts[s])] += 1
    while sum(counts.values()) > n_groups:  # the minimum of one pushed us over: take from the largest excess
        counts[max((s for s in counts if counts[s] > 1), key=lambda s: counts[s] - exact[s])] -= 1
    return [s for s in fractions for _ in range(counts[s])]


def group_splits(seed: int, n_groups: int, split: dict[str, float]) -> list[str]:
    """The split of each labelled group, in a seeded random order."""
    splits = allocate_groups(n_groups, split_fractions(split))
    return [splits[i] for i in stream(seed, LABELLED, SPLITS).permutation(n_groups)]


def group_members(n_clips: int, n_groups: int) -> list[np.ndarray]:
    """Clip indices of each group: consecutive, sizes differing by at most one."""
    return np.array_split(np.arange(n_clips), n_groups)


def rows_by_split(sessions_of_clips: Sequence[Session]) -> dict[str, np.ndarray]:
    splits = np.array([s.split for s in sessions_of_clips])
    return {s: np.flatnonzero(splits == s) for s in dict.fromkeys(splits)}


def make_sessions(
    seed: int,
    batch: int,
    splits: list[str],
    classes: list[str],
    soundfonts: Sequence[str],
    drum_kits: Sequence[str],
    real_drums: float,
    prefix: str,
    styles: Sequence[Style | None] | None = None,
) -> list[Session]:
    """One session per group. Within each split the groups cycle through the SoundFonts (from a random
    start), so every split holds every timbre domain; a `real_drums` share plays a hydrogen kit."""
    offsets = stream(seed, batch, DOMAINS).integers(len(soundfonts), size=len(LABELLED_SPLITS) + 1)
    seen: dict[str, int] = {}
    sessions = []
    for g, split in enumerate(splits):
        style = styles[g] if styles else None
        rng = stream(seed, batch, SESSIONS, g)
        kits = style.kits if style else DRUM_KITS
        kit = int(rng.choice(kits))  # drums and cymbals play one kit on one channel
        programs = {}
        for c in classes:
            inst = GM_INSTRUMENTS[c]
            options = (style.programs.get(c) if style else None) or inst.programs
            programs[c] = kit if inst.is_drum_kit else int(rng.choice(options))
        key, tempo = random_key(rng), random_tempo(rng)
        real = bool(rng.random() < real_drums)  # drawn last, and always: the rest never depends on the kits
        real = real and (style is None or style.acoustic_drums)
        drum_kit = drum_kits[int(rng.integers(len(drum_kits)))] if real and drum_kits else None
        domain_index = (offsets[_split_index(split)] + seen.get(split, 0)) % len(soundfonts)
        seen[split] = seen.get(split, 0) + 1
        sessions.append(
            Session(f"{prefix}-{g + 1:03d}", split, soundfonts[domain_index], key, tempo, programs, drum_kit,
                    style.name if style else None)
        )
    return sessions


def _split_index(split: str) -> int:
    return LABELLED_SPLITS.index(split) if split in LABELLED_SPLITS else len(LABELLED_SPLITS)
