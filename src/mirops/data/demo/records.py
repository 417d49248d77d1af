"""What the demo writes beside the audio: one manifest row per clip (the contract's columns, the labels and
the generation truth: instruments, programs, tempo, key, SoundFont, drum source) and the batch's LabelSpec."""

from __future__ import annotations

import pandas as pd

from mirops.config import DemoParams, Settings
from mirops.data.compositions import TEMPO_BANDS, TEMPO_TAGS, tempo_tag
from mirops.data.demo.plans import Batch, ClipPlan
from mirops.data.manifest import BASE_COLUMNS, LabelSpec, label_column, label_columns


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
