"""`mirops data demo`: OpenMIC- and MagnaTagATune-style datasets rendered offline through General-MIDI SoundFonts.

Each clip mixes instruments whose notes are generated in code, so its labels are known exactly.

- `instruments` (default, OpenMIC-like): 10 s clips of 1..max_instruments of the 18 OpenMIC classes
  General MIDI can play. Class frequencies are long-tailed (Zipf weights over `gm.PREVALENCE`), yet
  every class keeps `min_positives` annotated positives in every split. Labels are soft confidences
  with a share of (clip, class) pairs unannotated (NaN). A group is a recording session (tempo, key,
  GM programs, drum kit and SoundFont shared); splits are drawn by group.
- `tagging` (MTAT-like, for EAsT): 30 s clips, hard 0/1 tags: instruments, tempo (slow/medium/fast,
  from the generated tempo) and style (classical, electronic, rock, jazz, folk: the generation
  presets in scores.py). A group is an artist: one style, SoundFont and drum kit, songs in any key.

Each group is rendered through one of the training SoundFonts (a timbre domain, the manifest's
`domain` column); some groups play their drums and cymbals with real one-shots from hydrogen-drumkits.
The instruments variant also renders a "production" batch through another SoundFont: the same music
in another timbre, for drift monitoring.

Everything is a function of `Settings.seed` (and of which drum kits are installed): the same seed
gives byte-identical files. Plans are cheap (no audio); rendering comes after planning.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mirops.config import DemoParams, Settings
from mirops.data.audio import write_wav
from mirops.data.gm import DRUM_BANK, DRUM_CHANNEL, DRUM_KITS, GM_INSTRUMENTS, check_classes, prevalence_rank
from mirops.data.manifest import BASE_COLUMNS, LabelSpec, label_column, label_columns, write_manifest
from mirops.data.oneshots import DrumKit, DrumKitsNotFoundError, OneShotPlayer, find_kits, missing_kits_message
from mirops.data.scores import (
    STYLES,
    TEMPO_BANDS,
    TEMPO_TAGS,
    Key,
    Style,
    drum_kit_part,
    part_for,
    random_key,
    random_song,
    random_tempo,
    tempo_in,
    tempo_tag,
)
from mirops.data.staging import swap_into_place
from mirops.data.synth import Part, SoundFontRenderer, find_soundfont

VARIANTS = ("instruments", "tagging")
LABELLED_SPLITS = ("train", "valid", "test")
PRESENT_CONFIDENCE = (0.6, 1.0)  # annotators agree an instrument is there, not all of them
ABSENT_CONFIDENCE = (0.0, 0.35)  # ... and a few hear one that is not
PEAK_RANGE = (0.3, 0.9)  # clips come at different levels, never clipped
MIX_RANGE_DB = (-8.0, 0.0)  # each instrument's level in the mix, relative to equal loudness
MAX_PITCHED_PARTS = 15  # MIDI channels left beside the drum channel

# Independent random streams, so changing one aspect (e.g. the labels) leaves the others as they were.
SESSIONS, SPLITS, INSTRUMENTS, LABELS, NOTES, DOMAINS, STYLE_CHOICE, TEMPI = range(8)
LABELLED, PRODUCTION = 0, 1


class PlanError(ValueError):
    """The configuration cannot give every class its positives in every split; the message says what to change."""


@dataclass(frozen=True)
class DemoSummary:
    data_dir: Path
    production_dir: Path | None  # None for the tagging variant (no production batch)
    variant: str
    n_clips: dict[str, int]  # labelled clips per split
    n_production: int
    classes: list[str]  # label columns: instrument classes, or tags
    domains: dict[str, int]  # labelled clips per SoundFont
    real_drum_clips: int  # labelled clips whose drums/cymbals are hydrogen one-shots
    seconds: float  # wall-clock time of the build
    clip_seconds: float


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
    style: str | None = None  # tagging: the generation preset (scores.STYLES)


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


# -- planning: shared pieces ---------------------------------------------------------------------------


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFF_FFFF_FFFF_FFFF, *stream])


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
    splits = allocate_groups(n_groups, split_fractions(split))
    return [splits[i] for i in _rng(seed, LABELLED, SPLITS).permutation(n_groups)]


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Weights of ranks 0..n-1 falling as 1 / (rank + 1) ** exponent: a long tail (exponent 0: uniform)."""
    return 1.0 / np.arange(1, n + 1, dtype=float) ** exponent


def class_weights(classes: list[str], exponent: float) -> np.ndarray:
    """Zipf weights of `classes` ranked by how common each is in music (gm.PREVALENCE)."""
    return zipf_weights(len(classes), exponent)[prevalence_rank(classes)]


def draw_sets(
    rng: np.random.Generator,
    weights: np.ndarray,
    sizes: np.ndarray,
    max_size: int,
    quota: int,
    required: np.ndarray | None = None,
    names: Sequence[str] = (),
    what: str = "",
) -> np.ndarray:
    """One set of options per row (e.g. the instruments of each clip of a split), as a bool matrix.

    `weights` (rows x options, 0 = not allowed) set how often each option is drawn, so frequent options
    stay frequent; but first every option gets `quota` rows (in rows with room, growing a row up to
    `max_size` if it must), so rare options never vanish from a split. `required` options come
    before everything."""
    n_rows, n_options = weights.shape
    required = np.zeros((n_rows, n_options), dtype=bool) if required is None else required
    chosen = required.copy()
    sizes = np.maximum(sizes, chosen.sum(axis=1))
    pending = [o for o in range(n_options) if chosen[:, o].sum() < quota]
    while pending:
        filled = chosen.sum(axis=1)
        free = (weights > 0) & ~chosen & (filled < max_size)[:, None]
        slack = free.sum(axis=0) - (quota - chosen.sum(axis=0))
        # The option closest to running out of rows goes first (e.g. an instrument one style alone
        # plays), then the rarest; each takes the rows with the most room left.
        option = min(pending, key=lambda o: (slack[o], weights[:, o].sum()))
        pending.remove(option)
        need = quota - int(chosen[:, option].sum())
        candidates = rng.permutation(np.flatnonzero(free[:, option]))
        rows = candidates[np.argsort(filled[candidates] - sizes[candidates], kind="stable")][:need]
        if len(rows) < need:
            more = _make_room(chosen, required, weights, option, need - len(rows), quota, max_size)
            rows = np.concatenate([rows, more])
        if len(rows) < need:
            name = names[option] if names else f"option {option}"
            raise PlanError(f"{what}: {name!r} fits in only {len(rows) + quota - need} of the {quota} it needs")
        chosen[rows, option] = True
    for row in range(n_rows):
        free = np.flatnonzero((weights[row] > 0) & ~chosen[row])
        extra = min(int(sizes[row] - chosen[row].sum()), len(free))
        if extra > 0:
            p = weights[row, free] / weights[row, free].sum()
            chosen[row, rng.choice(free, size=extra, replace=False, p=p)] = True
    return chosen


def _make_room(
    chosen: np.ndarray, required: np.ndarray, weights: np.ndarray, option: int, need: int, quota: int, max_size: int
) -> np.ndarray:
    """Full rows open to `option` that give up an option they can spare (above its quota, not required),
    the most common first; returns up to `need` rows, emptied by one slot each (modifies `chosen`)."""
    rows = []
    full = chosen.sum(axis=1) >= max_size
    for row in np.flatnonzero((weights[:, option] > 0) & ~chosen[:, option] & full):
        if len(rows) == need:
            break
        spare = np.flatnonzero(chosen[row] & ~required[row] & (chosen.sum(axis=0) > quota))
        if len(spare):
            chosen[row, spare[np.argmax(chosen.sum(axis=0)[spare])]] = False
            rows.append(row)
    return np.array(rows, dtype=int)


def draw_choices(
    rng: np.random.Generator, weights: np.ndarray, quota: int, names: Sequence[str] = (), what: str = ""
) -> np.ndarray:
    """One option per row (index array): `quota` rows for every option first, the rest by weight."""
    ones = np.ones(len(weights), dtype=int)
    return draw_sets(rng, weights, ones, 1, quota, names=names, what=what).argmax(axis=1)


@contextmanager
def _hint(advice: str) -> Iterator[None]:
    """Add what to change to a PlanError raised inside."""
    try:
        yield
    except PlanError as exc:
        raise PlanError(f"{exc}; {advice}") from None


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
    offsets = _rng(seed, batch, DOMAINS).integers(len(soundfonts), size=len(LABELLED_SPLITS) + 1)
    seen: dict[str, int] = {}
    sessions = []
    for g, split in enumerate(splits):
        style = styles[g] if styles else None
        rng = _rng(seed, batch, SESSIONS, g)
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


def group_members(n_clips: int, n_groups: int) -> list[np.ndarray]:
    """Clip indices of each group: consecutive, sizes differing by at most one."""
    return np.array_split(np.arange(n_clips), n_groups)


def rows_by_split(sessions_of_clips: Sequence[Session]) -> dict[str, np.ndarray]:
    splits = np.array([s.split for s in sessions_of_clips])
    return {s: np.flatnonzero(splits == s) for s in dict.fromkeys(splits)}


def truth_matrix(plans: Sequence[ClipPlan], classes: list[str]) -> np.ndarray:
    return np.array([[c in p.instruments for c in classes] for p in plans], dtype=bool).reshape(-1, len(classes))


# -- planning: the instruments variant -----------------------------------------------------------------


def plan_clips(
    seed: int, batch: int, params: DemoParams, sessions: list[Session], n_clips: int, prefix: str, quota: int
) -> list[ClipPlan]:
    """Clips spread evenly over the sessions; instrument sets long-tailed, with `quota` clips per class
    and split."""
    if n_clips == 0:
        return []
    classes = params.classes
    session_of = [sessions[g] for g, members in enumerate(group_members(n_clips, len(sessions))) for _ in members]
    rng = _rng(seed, batch, INSTRUMENTS)
    top = min(params.max_instruments, len(classes), MAX_PITCHED_PARTS)
    sizes = rng.integers(1, top + 1, size=n_clips)
    weights = class_weights(classes, params.zipf_exponent)
    chosen = np.zeros((n_clips, len(classes)), dtype=bool)
    advice = "raise demo.clips or demo.max_instruments, or lower demo.min_positives or the number of classes"
    with _hint(advice):
        for split, rows in rows_by_split(session_of).items():
            what = f"demo: {len(rows)} {split} clips of up to {top} instruments, {quota} clips per class"
            tiled = np.tile(weights, (len(rows), 1))
            chosen[rows] = draw_sets(rng, tiled, sizes[rows], top, quota, names=classes, what=what)
    return [
        ClipPlan(i, f"{prefix}-{i + 1:05d}", s, tuple(c for c, on in zip(classes, chosen[i], strict=True) if on),
                 s.key, s.tempo)
        for i, s in enumerate(session_of)
    ]


def soft_labels(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    present = rng.uniform(*PRESENT_CONFIDENCE, size=truth.shape)
    absent = rng.uniform(*ABSENT_CONFIDENCE, size=truth.shape)
    return np.round(np.where(truth, present, absent), 3)


def hide_labels(
    rng: np.random.Generator,
    labels: np.ndarray,
    truth: np.ndarray,
    strata: np.ndarray,
    fraction: float,
    keep_positives: int = 0,
) -> np.ndarray:
    """NaN out `fraction` of all (clip, class) pairs, stratified by (split, class, polarity).

    Positives first: a stratum never loses more than its share, nor goes below `keep_positives`
    annotated positives (what the audit asks of every split). Negatives make up the difference, so the
    overall share stays at `fraction`. Every clip keeps at least one annotated class, as in OpenMIC."""
    hidden = labels.copy()
    cells = [(np.flatnonzero((strata == s) & (truth[:, c] == polarity)), c)
             for polarity in (True, False) for s in np.unique(strata) for c in range(truth.shape[1])]
    n_negatives = int((~truth).sum())
    budget = fraction * truth.size
    for rows, c in cells:
        if len(rows) == 0:
            continue
        if truth[rows[0], c]:
            n_hide = min(int(np.floor(fraction * len(rows))), max(0, len(rows) - keep_positives))
        else:  # random rounding keeps the expected total exact
            share = min(1.0, max(0.0, budget / n_negatives)) if n_negatives else 0.0
            n_hide = int(np.floor(share * len(rows) + rng.random()))
        hidden[rng.choice(rows, size=min(n_hide, len(rows)), replace=False), c] = np.nan
        if truth[rows[0], c]:
            budget -= min(n_hide, len(rows))  # what the positives could not take, the negatives take
    for row in np.flatnonzero(np.isnan(hidden).all(axis=1)):
        c = int(np.argmax(truth[row])) if truth[row].any() else int(rng.integers(truth.shape[1]))
        hidden[row, c] = labels[row, c]
    return hidden


def plan_batches(settings: Settings, drum_kits: Sequence[str] = ()) -> tuple[Batch, Batch]:
    """The instruments variant: the labelled batch and the production batch (no audio is rendered)."""
    params, seed = settings.demo, settings.seed
    check_classes(params.classes)
    if params.clips < 1:
        raise ValueError(f"demo.clips={params.clips}: need at least one clip")
    n_groups = min(params.groups, params.clips)
    splits = group_splits(seed, n_groups, params.split)
    sessions = make_sessions(seed, LABELLED, splits, params.classes, params.soundfonts, drum_kits, params.real_drums,
                             "demo-session")
    clips = plan_clips(seed, LABELLED, params, sessions, params.clips, "demo", params.min_positives)
    truth = truth_matrix(clips, params.classes)
    label_rng = _rng(seed, LABELLED, LABELS)
    labels = soft_labels(label_rng, truth)
    strata = np.array([p.session.split for p in clips])
    labels = hide_labels(label_rng, labels, truth, strata, params.missing_fraction, params.min_positives)
    labelled = Batch("labelled", "instruments", clips, list(params.classes), labels, params.clip_seconds)

    n_prod = max(params.production_clips, 0)
    prod_groups = min(n_prod, max(1, round(n_groups * n_prod / params.clips)))
    prod_sessions = make_sessions(seed, PRODUCTION, ["unlabeled"] * prod_groups, params.classes,
                                  [params.production_soundfont], drum_kits, params.real_drums, "prod-session")
    prod = plan_clips(seed, PRODUCTION, params, prod_sessions, n_prod, "prod", quota=0)
    # The production batch keeps the exact truth: the drift monitor may score models on it.
    prod_labels = truth_matrix(prod, params.classes).astype(float)
    production = Batch("production", "instruments", prod, list(params.classes), prod_labels, params.clip_seconds)
    return labelled, production


# -- planning: the tagging variant ---------------------------------------------------------------------


def tagging_styles(params: DemoParams) -> list[Style]:
    unknown = [s for s in params.styles if s not in STYLES]
    if unknown or not params.styles:
        raise ValueError(f"demo.styles: unknown {unknown}; pick some of {sorted(STYLES)}")
    styles = [STYLES[s] for s in params.styles]
    for style in styles:
        if not set(style.instruments) & set(params.classes):
            raise ValueError(f"demo.styles: {style.name!r} plays {list(style.instruments)}, none of demo.classes")
    unplayed = [c for c in params.classes if not any(c in s.instruments for s in styles)]
    if unplayed:
        raise ValueError(f"demo.classes {unplayed}: no style of {params.styles} plays them, so no clip could be "
                         "tagged with them; drop them or add a style")
    return styles


def tag_names(params: DemoParams) -> list[str]:
    """The tagging variant's label columns: instruments, then tempo, then style."""
    return [*params.classes, *TEMPO_TAGS, *params.styles]


def _style_instrument_weights(style: Style, classes: list[str], exponent: float) -> np.ndarray:
    """Per class: 0 if the style never plays it, else Zipf by its place in the style's palette."""
    out = np.zeros(len(classes))
    for rank, name in enumerate(style.instruments):
        if name in classes:
            out[classes.index(name)] = 1.0 / (rank + 1) ** exponent
    return out


def _styles_of_groups(
    rng: np.random.Generator, styles: list[Style], splits: list[str], members: list[np.ndarray], quota: int,
    exponent: float,
) -> list[Style]:
    """A style per group, Zipf-weighted in `styles` order, with enough groups of every style in every
    split for `quota` clips."""
    out: list[Style] = [styles[0]] * len(splits)
    weights = zipf_weights(len(styles), exponent)
    with _hint("raise demo.tagging_groups, or lower demo.min_positives or the number of styles"):
        for split in dict.fromkeys(splits):
            groups = [g for g, s in enumerate(splits) if s == split]
            group_quota = math.ceil(quota / min(len(members[g]) for g in groups)) if quota else 0
            what = f"demo: {len(groups)} {split} groups, {group_quota} per style"
            picks = draw_choices(rng, np.tile(weights, (len(groups), 1)), group_quota,
                                 names=[st.name for st in styles], what=what)
            for g, pick in zip(groups, picks, strict=True):
                out[g] = styles[pick]
    return out


def _tempi(rng: np.random.Generator, style_of: list[Style], by_split: dict[str, np.ndarray], quota: int) -> list[float]:
    """A tempo per clip: first a band the clip's style plays in (`quota` clips per band and split),
    then a tempo inside the band, so the tempo tag is exact."""
    weights = np.array([[s.tempo_weights.get(t, 0.0) for t in TEMPO_TAGS] for s in style_of])
    bands = np.zeros(len(style_of), dtype=int)
    with _hint("raise demo.tagging_clips or lower demo.min_positives"):
        for split, rows in by_split.items():
            what = f"demo: {len(rows)} {split} clips, {quota} per tempo tag"
            bands[rows] = draw_choices(rng, weights[rows], quota, names=TEMPO_TAGS, what=what)
    return [tempo_in(rng, TEMPO_TAGS[b]) for b in bands]


def _instruments_by_style(
    rng: np.random.Generator, params: DemoParams, style_of: list[Style], by_split: dict[str, np.ndarray], quota: int
) -> np.ndarray:
    """Each clip's instruments (bool, clips x classes): the style's core, then its extras by Zipf
    weight, `quota` clips per class and split."""
    classes = params.classes
    weights = np.array([_style_instrument_weights(s, classes, params.zipf_exponent) for s in style_of])
    required = np.array([[c in s.core for c in classes] for s in style_of])
    top = min(params.max_instruments, MAX_PITCHED_PARTS)
    low = np.maximum(1, required.sum(axis=1))
    sizes = np.array([rng.integers(lo, max(lo, top) + 1) for lo in low])
    chosen = np.zeros_like(required)
    with _hint("raise demo.tagging_clips or demo.max_instruments, or lower demo.min_positives"):
        for split, rows in by_split.items():
            what = f"demo: {len(rows)} {split} clips of up to {top} instruments, {quota} clips per class"
            chosen[rows] = draw_sets(rng, weights[rows], sizes[rows], max(top, int(low.max())), quota,
                                     required[rows], names=classes, what=what)
    return chosen


def plan_tagging(settings: Settings, drum_kits: Sequence[str] = ()) -> Batch:
    """The tagging variant: groups are artists with one style each; every clip is its own song (key,
    tempo). Styles, tempo tags and instruments each get `min_positives` clips in every split."""
    params, seed = settings.demo, settings.seed
    check_classes(params.classes)
    styles, quota, n_clips = tagging_styles(params), params.min_positives, params.tagging_clips
    if n_clips < 1:
        raise ValueError(f"demo.tagging_clips={n_clips}: need at least one clip")
    n_groups = min(params.tagging_groups, n_clips)
    splits = group_splits(seed, n_groups, params.split)
    members = group_members(n_clips, n_groups)
    group_styles = _styles_of_groups(_rng(seed, LABELLED, STYLE_CHOICE), styles, splits, members, quota,
                                     params.zipf_exponent)
    sessions = make_sessions(seed, LABELLED, splits, params.classes, params.soundfonts, drum_kits, params.real_drums,
                             "tag-artist", group_styles)
    session_of = [sessions[g] for g, m in enumerate(members) for _ in m]
    style_of = [group_styles[g] for g, m in enumerate(members) for _ in m]
    by_split = rows_by_split(session_of)

    rng = _rng(seed, LABELLED, TEMPI)
    tempi = _tempi(rng, style_of, by_split, quota)
    keys = [random_key(rng) for _ in range(n_clips)]
    chosen = _instruments_by_style(_rng(seed, LABELLED, INSTRUMENTS), params, style_of, by_split, quota)
    clips = [
        ClipPlan(i, f"tag-{i + 1:05d}", s, tuple(c for c, on in zip(params.classes, chosen[i], strict=True) if on),
                 keys[i], tempi[i])
        for i, s in enumerate(session_of)
    ]
    labels = np.array([[t in clip_tags(p) for t in tag_names(params)] for p in clips], dtype=float)
    return Batch("labelled", "tagging", clips, tag_names(params), labels, params.tagging_clip_seconds)


def clip_tags(plan: ClipPlan) -> set[str]:
    """What a clip of the tagging variant is tagged with: its instruments, tempo band and style."""
    return {*plan.instruments, tempo_tag(plan.tempo), *([plan.session.style] if plan.session.style else [])}


# -- rendering -----------------------------------------------------------------------------------------


def clip_parts(plan: ClipPlan, classes: list[str], rng: np.random.Generator, seconds: float) -> list[Part]:
    """One MIDI part per instrument of the clip, in `plan.instruments` order (drums and cymbals share
    the drum channel: they are rendered as separate stems, so they never collide)."""
    style = STYLES[plan.session.style] if plan.session.style else None
    song = random_song(rng, plan.key, plan.tempo, seconds)
    pitched = (c for c in range(16) if c != DRUM_CHANNEL)
    parts: list[Part] = []
    for name in plan.instruments:
        inst, program = GM_INSTRUMENTS[name], plan.session.programs[name]
        if inst.is_drum_kit:
            # Without a 'cymbals' class, the drummer plays the whole kit, cymbals included.
            if name == "drums" and "cymbals" not in classes:
                notes = drum_kit_part(rng, song, groove=style.groove if style else "backbeat")
            else:
                notes = part_for(inst.role, rng, song, inst.low, inst.high, style)
            parts.append(Part(DRUM_CHANNEL, program, notes, bank=DRUM_BANK))
        else:
            notes = part_for(inst.role_for(program), rng, song, inst.low, inst.high, style)
            parts.append(Part(next(pitched), program, notes))
    return parts


def mix(plan: ClipPlan, stems: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Level each stem to equal loudness, then a random gain within MIX_RANGE_DB: presets differ by
    30 dB or more, and a label must not claim an instrument buried under the others."""
    out = np.zeros_like(stems[0], dtype=np.float64)
    for name, stem in zip(plan.instruments, stems, strict=True):
        rms = float(np.sqrt(np.mean(np.square(stem, dtype=np.float64))))
        if not np.isfinite(rms) or rms == 0.0:
            raise RuntimeError(f"{plan.clip_id}: {name} (program {plan.session.programs[name]}) rendered silence")
        out += stem * (10 ** (rng.uniform(*MIX_RANGE_DB) / 20) / rms)
    return out


def render_clip(
    renderer: SoundFontRenderer,
    plan: ClipPlan,
    classes: list[str],
    seed: int,
    batch: int,
    seconds: float,
    drums: OneShotPlayer | None = None,
) -> np.ndarray:
    """The clip's mix, float32 mono; drum-channel parts of a session with a hydrogen kit play its one-shots."""
    rng = _rng(seed, batch, NOTES, plan.index)
    n_samples = int(round(seconds * renderer.sample_rate))
    stems = []
    for part in clip_parts(plan, classes, rng, seconds):
        if part.is_drums and plan.session.drum_kit is not None and drums is not None:
            stems.append(drums.render(plan.session.drum_kit, part.notes, n_samples))
        else:
            stems.append(renderer.render([part], n_samples))  # alone: the stems sum to the mix
    wave = mix(plan, stems, rng)
    return (wave * (rng.uniform(*PEAK_RANGE) / np.abs(wave).max())).astype(np.float32)


def _drum_source(plan: ClipPlan) -> str:
    if not plan.has_drum_channel:
        return ""
    return f"hydrogen:{plan.session.drum_kit}" if plan.session.drum_kit else "soundfont"


def manifest_frame(batch: Batch, params: DemoParams) -> pd.DataFrame:
    extra = ["instruments", "programs", "tempo", "key", "domain", "drum_samples"]
    extra += ["style", "tempo_tag"] if batch.variant == "tagging" else []
    rows = []
    for plan, labels in zip(batch.clips, batch.labels, strict=True):
        s = plan.session
        row = {
            "clip_id": plan.clip_id,
            "path": f"audio/{plan.clip_id}.wav",
            "split": s.split,
            "group": s.group,
            "duration_s": float(batch.clip_seconds),
            "sample_rate": int(params.sample_rate),
            **{label_column(c): float(v) for c, v in zip(batch.classes, labels, strict=True)},
            "instruments": "|".join(plan.instruments),
            "programs": "|".join(f"{n}={s.programs[n]}" for n in plan.instruments),
            "tempo": plan.tempo,
            "key": plan.key.name,
            "domain": s.soundfont,  # the SoundFont: the timbre domain of the clip
            "drum_samples": _drum_source(plan),
        }
        if batch.variant == "tagging":
            row |= {"style": s.style, "tempo_tag": tempo_tag(plan.tempo)}
        rows.append(row)
    if rows:
        return pd.DataFrame(rows)
    return pd.DataFrame(columns=[*BASE_COLUMNS, *label_columns(batch.classes), *extra])


def label_spec(batch: Batch, settings: Settings) -> LabelSpec:
    params = settings.demo
    extra = {
        "source": "demo",
        "variant": batch.variant,
        "batch": batch.name,
        "soundfonts": sorted({p.session.soundfont for p in batch.clips}),
        "domain_column": "domain",
        "seed": settings.seed,
        "missing_fraction": params.missing_fraction if (batch.name, batch.variant) == ("labelled", "instruments")
        else 0.0,
        "clip_seconds": batch.clip_seconds,
        "truth_columns": ["instruments", "programs"],
    }
    if batch.variant == "tagging":
        extra["tag_groups"] = {"instrument": list(params.classes), "tempo": list(TEMPO_TAGS),
                               "style": list(params.styles)}
        extra["tempo_bands_bpm"] = {t: list(b) for t, b in TEMPO_BANDS.items()}
        extra["truth_columns"] += ["tempo", "style"]
    return LabelSpec(classes=list(batch.classes), threshold=0.5, extra=extra)


def write_batch(
    batch: Batch, out_dir: Path, settings: Settings, progress: _Progress, drums: OneShotPlayer | None
) -> None:
    """Render every clip and write the manifest. One synth per SoundFont (loading one takes seconds),
    released before the next is loaded."""
    params = settings.demo
    batch_id = LABELLED if batch.name == "labelled" else PRODUCTION
    by_font: dict[str, list[ClipPlan]] = {}
    for plan in batch.clips:
        by_font.setdefault(plan.session.soundfont, []).append(plan)
    for font, plans in by_font.items():
        progress.describe(f"rendering {batch.name} clips ({font})")
        renderer = SoundFontRenderer(find_soundfont(font), params.sample_rate)
        for plan in plans:
            wave = render_clip(renderer, plan, params.classes, settings.seed, batch_id, batch.clip_seconds, drums)
            write_wav(out_dir / "audio" / f"{plan.clip_id}.wav", wave, params.sample_rate)
            progress.advance()
        del renderer
    write_manifest(out_dir, manifest_frame(batch, params), label_spec(batch, settings))


class _Progress:
    """A rich progress bar on stderr (human output never goes to stdout)."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._task = self._bar.add_task("rendering demo clips", total=total)

    def __enter__(self) -> _Progress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def describe(self, text: str) -> None:
        self._bar.update(self._task, description=text)

    def advance(self) -> None:
        self._bar.advance(self._task)


# -- putting it in place -------------------------------------------------------------------------------


def _check_targets(targets: Sequence[Path], overwrite: bool) -> None:
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{', '.join(existing)} already exist(s); pass overwrite=True (`mirops data demo --overwrite`) "
            "to replace them"
        )


def output_dirs(settings: Settings, variant: str, out: str | Path | None) -> tuple[Path, Path | None]:
    """Where the labelled data goes (`out`, default data/ under the project root) and the production
    batch: production/ beside data/, `<out>-production` beside another folder, none for tagging."""
    data_dir = settings.data_dir if out is None else Path(out).resolve()
    if variant == "tagging":
        return data_dir, None
    if data_dir == settings.data_dir.resolve():
        return settings.data_dir, settings.production_dir
    return data_dir, data_dir.with_name(f"{data_dir.name}-production")


def available_kits(params: DemoParams) -> dict[str, DrumKit]:
    """The installed hydrogen kits, or {} with one line on stderr (an error when they are required)."""
    kits = find_kits()
    if kits or not (params.real_drums > 0 or params.require_real_drums):
        return kits
    if params.require_real_drums:
        raise DrumKitsNotFoundError(f"demo.require_real_drums: {missing_kits_message()}")
    print(f"mirops demo: drums and cymbals come from the SoundFonts only; {missing_kits_message()}", file=sys.stderr)
    return {}


def build_demo(
    settings: Settings, overwrite: bool = False, variant: str | None = None, out: str | Path | None = None
) -> DemoSummary:
    """Render the demo (`variant`, default `demo.variant`) into `out` (default data/), and for the
    instruments variant the production batch beside it.

    Every folder is rendered into a temporary sibling and renamed into place only when all are
    complete, so a failure leaves any existing folders as they were."""
    started = time.perf_counter()
    params = settings.demo
    variant = variant or params.variant
    if variant not in VARIANTS:
        raise ValueError(f"demo variant {variant!r}: expected one of {list(VARIANTS)}")
    check_classes(params.classes)  # a class GM cannot play fails before anything is touched
    data_dir, production_dir = output_dirs(settings, variant, out)
    fonts = [*params.soundfonts, *([params.production_soundfont] if production_dir else [])]
    for font in fonts:
        find_soundfont(font)  # a missing SoundFont names its Debian package before anything is touched
    targets = [data_dir, *([production_dir] if production_dir else [])]
    _check_targets(targets, overwrite)
    kits = available_kits(params)
    if variant == "tagging":
        batches: list[Batch] = [plan_tagging(settings, sorted(kits))]
    else:
        batches = list(plan_batches(settings, sorted(kits)))
    drums = OneShotPlayer(kits, params.sample_rate) if kits else None

    staged: list[Path] = []
    try:
        with _Progress(sum(len(b.clips) for b in batches)) as progress:
            for batch, final in zip(batches, targets, strict=True):
                final.parent.mkdir(parents=True, exist_ok=True)
                staged.append(Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=final.parent)))
                write_batch(batch, staged[-1], settings, progress, drums)
        for tmp, final in zip(staged, targets, strict=True):
            swap_into_place(tmp, final)
    finally:
        for tmp in staged:
            shutil.rmtree(tmp, ignore_errors=True)

    labelled = batches[0].clips
    domains: dict[str, int] = {}
    for plan in labelled:
        domains[plan.session.soundfont] = domains.get(plan.session.soundfont, 0) + 1
    return DemoSummary(
        data_dir=data_dir,
        production_dir=production_dir,
        variant=variant,
        n_clips={s: sum(p.session.split == s for p in labelled) for s in LABELLED_SPLITS},
        n_production=len(batches[1].clips) if len(batches) > 1 else 0,
        classes=list(batches[0].classes),
        domains=domains,
        real_drum_clips=sum(p.real_drums for p in labelled),
        seconds=time.perf_counter() - started,
        clip_seconds=batches[0].clip_seconds,
    )
