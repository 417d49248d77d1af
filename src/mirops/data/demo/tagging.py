"""The tagging variant (MagnaTagATune-like, for EAsT): groups are artists with one style each, every clip is
its own song, and its hard tags (instruments, tempo band, style) are true of the generated music.

Planning only: no audio is rendered here."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mirops.config import DemoParams, Settings
from mirops.data.compositions import STYLES, TEMPO_TAGS, Style, random_key, tempo_in, tempo_tag
from mirops.data.demo.draws import draw_choices, draw_sets, plan_hint, zipf_weights
from mirops.data.demo.groups import group_members, group_splits, make_sessions, rows_by_split
from mirops.data.demo.plans import (
    INSTRUMENTS,
    LABELLED,
    MAX_PITCHED_PARTS,
    STYLE_CHOICE,
    TEMPI,
    Batch,
    ClipPlan,
    stream,
)
from mirops.data.gm import check_classes


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
    with plan_hint("raise demo.tagging_groups, or lower demo.min_positives or the number of styles"):
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
    with plan_hint("raise demo.tagging_clips or lower demo.min_positives"):
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
    with plan_hint("raise demo.tagging_clips or demo.max_instruments, or lower demo.min_positives"):
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
    group_styles = _styles_of_groups(stream(seed, LABELLED, STYLE_CHOICE), styles, splits, members, quota,
                                     params.zipf_exponent)
    sessions = make_sessions(seed, LABELLED, splits, params.classes, params.soundfonts, drum_kits, params.real_drums,
                             "tag-artist", group_styles)
    session_of = [sessions[g] for g, m in enumerate(members) for _ in m]
    style_of = [group_styles[g] for g, m in enumerate(members) for _ in m]
    by_split = rows_by_split(session_of)

    rng = stream(seed, LABELLED, TEMPI)
    tempi = _tempi(rng, style_of, by_split, quota)
    keys = [random_key(rng) for _ in range(n_clips)]
    chosen = _instruments_by_style(stream(seed, LABELLED, INSTRUMENTS), params, style_of, by_split, quota)
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
