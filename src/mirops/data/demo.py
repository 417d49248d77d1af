"""`mirops data demo`: an OpenMIC-style dataset rendered offline through General-MIDI SoundFonts.

Each clip mixes 1..max_instruments instruments whose notes are generated in code, so its instrument
set is known exactly. Labels then look like OpenMIC's: soft confidences (annotators are unsure) with
a share of (clip, class) pairs left unannotated (NaN). Clips of a group are one recording session
(same tempo, key and GM program per instrument); splits are drawn by group. A second, "production"
batch uses the same generator through another SoundFont: same music, another timbre, for drift.

Everything is a function of `Settings.seed`: the same seed gives byte-identical files.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mirops.config import DemoParams, Settings
from mirops.data.audio import write_wav
from mirops.data.gm import DRUM_BANK, DRUM_CHANNEL, DRUM_KITS, GM_INSTRUMENTS, check_classes
from mirops.data.manifest import BASE_COLUMNS, LabelSpec, label_column, label_columns, write_manifest
from mirops.data.scores import Key, drum_kit_part, part_for, random_key, random_song, random_tempo
from mirops.data.synth import Part, SoundFontRenderer, find_soundfont

LABELLED_SPLITS = ("train", "valid", "test")
PRESENT_CONFIDENCE = (0.6, 1.0)  # annotators agree an instrument is there, not all of them
ABSENT_CONFIDENCE = (0.0, 0.35)  # ... and a few hear one that is not
PEAK_RANGE = (0.3, 0.9)  # clips come at different levels, never clipped
MIX_RANGE_DB = (-8.0, 0.0)  # each instrument's level in the mix, relative to equal loudness
MAX_PITCHED_PARTS = 15  # MIDI channels left beside the drum channel

# Independent random streams, so changing one aspect (e.g. the labels) leaves the others as they were.
SESSIONS, SPLITS, INSTRUMENTS, LABELS, NOTES = range(5)
LABELLED, PRODUCTION = 0, 1


@dataclass(frozen=True)
class DemoSummary:
    data_dir: Path
    production_dir: Path
    n_clips: dict[str, int]  # labelled clips per split
    n_production: int
    classes: list[str]
    seconds: float  # wall-clock time of the build
    clip_seconds: float


@dataclass(frozen=True)
class Session:
    """A recording session (the manifest's `group`): shared tempo, key and program per instrument."""

    group: str
    split: str
    key: Key
    tempo: float
    programs: dict[str, int]  # class -> GM program (the bank-128 kit for drums and cymbals)


@dataclass(frozen=True)
class ClipPlan:
    index: int
    clip_id: str
    session: Session
    instruments: tuple[str, ...]  # in class order


@dataclass(frozen=True)
class Batch:
    """What one output folder will hold, decided before any audio is rendered."""

    name: str  # "labelled" or "production"
    soundfont: Path
    clips: list[ClipPlan]
    labels: np.ndarray  # (clips, classes) float, NaN = not annotated


# -- planning ------------------------------------------------------------------------------------------


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


def make_sessions(
    seed: int, batch: int, n_groups: int, splits: list[str], classes: list[str], prefix: str
) -> list[Session]:
    sessions = []
    for g in range(n_groups):
        rng = _rng(seed, batch, SESSIONS, g)
        kit = int(rng.choice(DRUM_KITS))  # drums and cymbals play one kit on one channel
        programs = {
            c: kit if GM_INSTRUMENTS[c].is_drum_kit else int(rng.choice(GM_INSTRUMENTS[c].programs)) for c in classes
        }
        sessions.append(
            Session(f"{prefix}-session-{g + 1:03d}", splits[g], random_key(rng), random_tempo(rng), programs)
        )
    return sessions


def choose_instruments(
    rng: np.random.Generator, counts: np.ndarray, max_instruments: int, classes: list[str]
) -> tuple[str, ...]:
    """1..max instruments, rarely used classes first: weights fall with the square of past use."""
    top = min(max_instruments, len(classes), MAX_PITCHED_PARTS)
    k = int(rng.integers(1, top + 1))
    weights = 1.0 / (1.0 + counts) ** 2
    picked = np.sort(rng.choice(len(classes), size=k, replace=False, p=weights / weights.sum()))
    counts[picked] += 1
    return tuple(classes[i] for i in picked)


def plan_clips(
    seed: int, batch: int, params: DemoParams, n_clips: int, n_groups: int, splits: list[str], prefix: str
) -> list[ClipPlan]:
    """Clips spread evenly over groups; instrument sets balanced within each split."""
    if n_clips == 0:
        return []
    sessions = make_sessions(seed, batch, n_groups, splits, params.classes, prefix)
    rng = _rng(seed, batch, INSTRUMENTS)
    counts = {s: np.zeros(len(params.classes)) for s in set(splits)}
    plans = []
    for g, members in enumerate(np.array_split(np.arange(n_clips), n_groups)):
        session = sessions[g]
        for i in members:
            chosen = choose_instruments(rng, counts[session.split], params.max_instruments, params.classes)
            plans.append(ClipPlan(int(i), f"{prefix}-{int(i) + 1:05d}", session, chosen))
    return plans


def truth_matrix(plans: Sequence[ClipPlan], classes: list[str]) -> np.ndarray:
    return np.array([[c in p.instruments for c in classes] for p in plans], dtype=bool).reshape(-1, len(classes))


def soft_labels(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    present = rng.uniform(*PRESENT_CONFIDENCE, size=truth.shape)
    absent = rng.uniform(*ABSENT_CONFIDENCE, size=truth.shape)
    return np.round(np.where(truth, present, absent), 3)


def hide_labels(
    rng: np.random.Generator, labels: np.ndarray, truth: np.ndarray, strata: np.ndarray, fraction: float
) -> np.ndarray:
    """NaN out `fraction` of the pairs within every (stratum, class, polarity), so each split keeps its
    share of annotated positives; every clip keeps at least one annotated class, as in OpenMIC."""
    hidden = labels.copy()
    for stratum in np.unique(strata):
        for c in range(truth.shape[1]):
            for polarity in (True, False):
                rows = np.flatnonzero((strata == stratum) & (truth[:, c] == polarity))
                # Positives round down (a split never loses more of a class than asked), negatives
                # round at random, so the overall share stays close to `fraction`.
                n_hide = int(np.floor(fraction * len(rows) + (0.0 if polarity else rng.random())))
                hidden[rng.choice(rows, size=min(n_hide, len(rows)), replace=False), c] = np.nan
    for row in np.flatnonzero(np.isnan(hidden).all(axis=1)):
        c = int(np.argmax(truth[row])) if truth[row].any() else int(rng.integers(truth.shape[1]))
        hidden[row, c] = labels[row, c]
    return hidden


def plan_batches(settings: Settings, soundfont: Path, production_soundfont: Path) -> tuple[Batch, Batch]:
    params, seed = settings.demo, settings.seed
    if params.clips < 1:
        raise ValueError(f"demo.clips={params.clips}: need at least one clip")
    n_groups = min(params.groups, params.clips)
    splits = allocate_groups(n_groups, split_fractions(params.split))
    splits = [splits[i] for i in _rng(seed, LABELLED, SPLITS).permutation(n_groups)]
    clips = plan_clips(seed, LABELLED, params, params.clips, n_groups, splits, "demo")
    truth = truth_matrix(clips, params.classes)
    label_rng = _rng(seed, LABELLED, LABELS)
    labels = soft_labels(label_rng, truth)
    strata = np.array([p.session.split for p in clips])
    labels = hide_labels(label_rng, labels, truth, strata, params.missing_fraction)

    n_prod = max(params.production_clips, 0)
    prod_groups = min(n_prod, max(1, round(n_groups * n_prod / params.clips)))
    prod = plan_clips(seed, PRODUCTION, params, n_prod, prod_groups, ["unlabeled"] * prod_groups, "prod")
    # The production batch keeps the exact truth: the drift monitor may score models on it.
    prod_labels = truth_matrix(prod, params.classes).astype(float)
    return Batch("labelled", soundfont, clips, labels), Batch("production", production_soundfont, prod, prod_labels)


# -- rendering -----------------------------------------------------------------------------------------


def clip_parts(plan: ClipPlan, classes: list[str], rng: np.random.Generator, seconds: float) -> list[Part]:
    """One MIDI part per instrument of the clip, in `plan.instruments` order (drums and cymbals share
    the drum channel: they are rendered as separate stems, so they never collide)."""
    song = random_song(rng, plan.session.key, plan.session.tempo, seconds)
    pitched = (c for c in range(16) if c != DRUM_CHANNEL)
    parts: list[Part] = []
    for name in plan.instruments:
        inst, program = GM_INSTRUMENTS[name], plan.session.programs[name]
        if inst.is_drum_kit:
            # Without a 'cymbals' class, the drummer plays the whole kit, cymbals included.
            full_kit = name == "drums" and "cymbals" not in classes
            notes = drum_kit_part(rng, song) if full_kit else part_for(inst.role, rng, song, inst.low, inst.high)
            parts.append(Part(DRUM_CHANNEL, program, notes, bank=DRUM_BANK))
        else:
            notes = part_for(inst.role_for(program), rng, song, inst.low, inst.high)
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
    renderer: SoundFontRenderer, plan: ClipPlan, classes: list[str], seed: int, batch: int, seconds: float
) -> np.ndarray:
    rng = _rng(seed, batch, NOTES, plan.index)
    n_samples = int(round(seconds * renderer.sample_rate))
    stems = renderer.render_stems(clip_parts(plan, classes, rng, seconds), n_samples)
    wave = mix(plan, stems, rng)
    return (wave * (rng.uniform(*PEAK_RANGE) / np.abs(wave).max())).astype(np.float32)


def manifest_frame(batch: Batch, params: DemoParams) -> pd.DataFrame:
    rows = []
    for plan, labels in zip(batch.clips, batch.labels, strict=True):
        s = plan.session
        rows.append(
            {
                "clip_id": plan.clip_id,
                "path": f"audio/{plan.clip_id}.wav",
                "split": s.split,
                "group": s.group,
                "duration_s": float(params.clip_seconds),
                "sample_rate": int(params.sample_rate),
                **{label_column(c): float(v) for c, v in zip(params.classes, labels, strict=True)},
                "instruments": "|".join(plan.instruments),
                "programs": "|".join(f"{n}={s.programs[n]}" for n in plan.instruments),
                "tempo": s.tempo,
                "key": s.key.name,
                "soundfont": batch.soundfont.name,
            }
        )
    if rows:
        return pd.DataFrame(rows)
    return pd.DataFrame(columns=[*BASE_COLUMNS, *label_columns(params.classes), "instruments", "programs"])


def label_spec(batch: Batch, settings: Settings) -> LabelSpec:
    params = settings.demo
    extra = {
        "source": "demo",
        "batch": batch.name,
        "soundfont": batch.soundfont.name,
        "seed": settings.seed,
        "missing_fraction": params.missing_fraction if batch.name == "labelled" else 0.0,
        "clip_seconds": params.clip_seconds,
        "truth_columns": ["instruments", "programs"],
    }
    return LabelSpec(classes=list(params.classes), threshold=0.5, extra=extra)


def write_batch(batch: Batch, out_dir: Path, settings: Settings, progress: _Progress) -> None:
    params = settings.demo
    renderer = SoundFontRenderer(batch.soundfont, params.sample_rate)
    batch_id = LABELLED if batch.name == "labelled" else PRODUCTION
    for plan in batch.clips:
        wave = render_clip(renderer, plan, params.classes, settings.seed, batch_id, params.clip_seconds)
        write_wav(out_dir / "audio" / f"{plan.clip_id}.wav", wave, params.sample_rate)
        progress.advance()
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


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished folder over `final`; the old one is moved aside first and removed last."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{final.name}.old-", dir=final.parent))
        old.rmdir()
        final.rename(old)
    try:
        tmp.rename(final)
    except BaseException:
        if old is not None:
            old.rename(final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_demo(settings: Settings, overwrite: bool = False) -> DemoSummary:
    """Render the demo into `settings.data_dir` and the production batch into `settings.production_dir`.

    Both are rendered into temporary sibling folders and renamed into place only when complete, so a
    failure leaves any existing data/ and production/ as they were.
    """
    started = time.perf_counter()
    params = settings.demo
    check_classes(params.classes)  # a class GM cannot play fails before anything is touched
    soundfont = find_soundfont(params.soundfont)
    production_soundfont = find_soundfont(params.production_soundfont)
    targets = (settings.data_dir, settings.production_dir)
    _check_targets(targets, overwrite)
    batches = plan_batches(settings, soundfont, production_soundfont)

    settings.root.mkdir(parents=True, exist_ok=True)
    staged: list[Path] = []
    try:
        with _Progress(sum(len(b.clips) for b in batches)) as progress:
            for batch, final in zip(batches, targets, strict=True):
                staged.append(Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=final.parent)))
                progress.describe(f"rendering {batch.name} clips ({batch.soundfont.name})")
                write_batch(batch, staged[-1], settings, progress)
        for tmp, final in zip(staged, targets, strict=True):
            _swap_into_place(tmp, final)
    finally:
        for tmp in staged:
            shutil.rmtree(tmp, ignore_errors=True)

    labelled = batches[0].clips
    return DemoSummary(
        data_dir=settings.data_dir,
        production_dir=settings.production_dir,
        n_clips={s: sum(p.session.split == s for p in labelled) for s in LABELLED_SPLITS},
        n_production=len(batches[1].clips),
        classes=list(params.classes),
        seconds=time.perf_counter() - started,
        clip_seconds=params.clip_seconds,
    )
