"""The instruments variant (OpenMIC-like): the labelled batch, soft labels with a share not annotated, and
the production batch (the same kind of music through another SoundFont, exact labels, for drift monitoring).

Planning only: no audio is rendered here."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mirops.config import DemoParams, Settings
from mirops.data.demo.draws import class_weights, draw_sets, plan_hint
from mirops.data.demo.groups import group_members, group_splits, make_sessions, rows_by_split
from mirops.data.demo.plans import (
    INSTRUMENTS,
    LABELLED,
    LABELS,
    MAX_PITCHED_PARTS,
    PRODUCTION,
    Batch,
    ClipPlan,
    Session,
    stream,
    truth_matrix,
)
from mirops.data.gm import check_classes

PRESENT_CONFIDENCE = (0.6, 1.0)  # annotators agree an instrument is there, not all of them
ABSENT_CONFIDENCE = (0.0, 0.35)  # ... and a few hear one that is not


def plan_clips(
    seed: int, batch: int, params: DemoParams, sessions: list[Session], n_clips: int, prefix: str, quota: int
) -> list[ClipPlan]:
    """Clips spread evenly over the sessions; instrument sets long-tailed, with `quota` clips per class
    and split."""
    if n_clips == 0:
        return []
    classes = params.classes
    session_of = [sessions[g] for g, members in enumerate(group_members(n_clips, len(sessions))) for _ in members]
    rng = stream(seed, batch, INSTRUMENTS)
    top = min(params.max_instruments, len(classes), MAX_PITCHED_PARTS)
    sizes = rng.integers(1, top + 1, size=n_clips)
    weights = class_weights(classes, params.zipf_exponent)
    chosen = np.zeros((n_clips, len(classes)), dtype=bool)
    advice = "raise demo.clips or demo.max_instruments, or lower demo.min_positives or the number of classes"
    with plan_hint(advice):
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
    label_rng = stream(seed, LABELLED, LABELS)
    labels = soft_labels(label_rng, truth)
    strata = np.array([p.session.split for p in clips])
    labels = hide_labels(label_rng, labels, truth, strata, params.missing_fraction, params.min_positives)
    labelled = Batch("labelled", "instruments", clips, list(params.classes), labels, params.clip_seconds)
    return labelled, plan_production(settings, n_groups, drum_kits)


def plan_production(settings: Settings, n_groups: int, drum_kits: Sequence[str] = ()) -> Batch:
    """The production batch: `demo.production_clips` unlabelled clips through `demo.production_soundfont`,
    in about as many sessions per clip as the `n_groups` labelled groups have."""
    params, seed = settings.demo, settings.seed
    n_prod = max(params.production_clips, 0)
    prod_groups = min(n_prod, max(1, round(n_groups * n_prod / params.clips)))
    prod_sessions = make_sessions(seed, PRODUCTION, ["unlabeled"] * prod_groups, params.classes,
                                  [params.production_soundfont], drum_kits, params.real_drums, "prod-session")
    prod = plan_clips(seed, PRODUCTION, params, prod_sessions, n_prod, "prod", quota=0)
    # The production batch keeps the exact truth: the drift monitor may score models on it.
    prod_labels = truth_matrix(prod, params.classes).astype(float)
    return Batch("production", "instruments", prod, list(params.classes), prod_labels, params.clip_seconds)
