"""The model card of a registered version: what it was trained on, how it scored, what it is for.

Plain markdown from what the training run recorded; it is logged beside the model and shown as the
version's description in the MLflow UI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

USES = {
    "reprogram": (
        "Multi-label instrument (or tag) recognition on music clips: a frozen pre-trained audio network "
        "with a small trained input transform and output mapping (model reprogramming).",
        ["Trained on few labelled clips: expect its probabilities to be less calibrated than its ranking "
         "(compare mAP with F1 at the threshold).",
         "Audio is centre-cropped or zero-padded to the clip length it was trained on; longer recordings "
         "are scored window by window by `mirops predict`.",
         "The backbone's pre-training data (AudioSet) shapes what it hears; timbres far from it (other "
         "SoundFonts, other recording chains) drift: watch `mirops monitor`."],
    ),
    "east": (
        "Multi-label instrument or tag recognition with a small student network trained with pre-trained "
        "teacher embeddings as a regulariser (EAsT); cheap enough for batch tagging on CPU.",
        ["The teacher shaped its features during training only; at inference the student runs alone.",
         "Audio is centre-cropped or zero-padded to the clip length it was trained on.",
         "A student of a few hundred thousand to a few million parameters trained on a small dataset: "
         "check the per-class table before trusting rare classes."],
    ),
}


@dataclass
class CardFacts:
    name: str
    version: str
    family: str
    dataset_version: str
    training_run_id: str
    git_commit: str
    audit: str                      # e.g. "passed: 24 checks, 1 failed (warnings only)" or "not run"
    audit_run_id: str
    drift: str                      # the newest drift verdict on this data, or "none recorded"
    metrics: dict[str, float]       # test_* summary
    per_class: dict[str, dict]      # class -> {AP, ROC_AUC, F1, F1_openmic, positives, annotated}
    params_trainable: int | None
    params_total: int | None
    classes: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)  # backbone, transform, student, teacher, ...


def _num(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def render(facts: CardFacts) -> str:
    use, limits = USES.get(facts.family, USES["reprogram"])
    lines = [
        f"# {facts.name} v{facts.version}",
        "",
        f"**Family:** {facts.family}" + "".join(f" · **{k}:** {v}" for k, v in facts.details.items()),
        "",
        "## Lineage",
        f"- dataset version: `{facts.dataset_version}`",
        f"- audit: {facts.audit} (run `{facts.audit_run_id}`)",
        f"- drift: {facts.drift}",
        f"- training run: `{facts.training_run_id}`",
        f"- code: git `{facts.git_commit}`",
        "",
        "## Size",
        f"- trainable parameters: {_num(facts.params_trainable)}",
        f"- total parameters (frozen backbone included): {_num(facts.params_total)}",
        "",
        "## Test metrics (annotated entries only, macro over classes)",
        "| metric | value |",
        "|---|---|",
        *[f"| {k.removeprefix('test_')} | {_num(v)} |" for k, v in sorted(facts.metrics.items())],
        "",
        "### Per class",
        "| class | AP | ROC-AUC | F1 | positives / annotated |",
        "|---|---|---|---|---|",
        *[f"| {c} | {_num(m.get('AP'))} | {_num(m.get('ROC_AUC'))} | {_num(m.get('F1'))} | "
          f"{m.get('positives', '–')} / {m.get('annotated', '–')} |" for c, m in facts.per_class.items()],
        "",
        "## Intended use",
        use,
        "",
        "Input: mono audio (any length, any sample rate through `mirops predict`); output: one probability "
        f"per class: {', '.join(facts.classes) or 'see the signature'}.",
        "",
        "## Limits",
        *[f"- {item}" for item in limits],
        "- Classes whose test split has no annotated positive have no AP here (shown as –): "
        "this card cannot vouch for them.",
    ]
    return "\n".join(lines) + "\n"
