"""One settings object for the whole pipeline: params.yaml, overridden by MIROPS_* environment variables.

Paths are resolved against the project root (the folder holding params.yaml), so the same code runs
from the repository, from a DVC stage or from a test's temporary project.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEMO_CLASSES = [  # the 18 OpenMIC-2018 classes General MIDI can play (it has no mandolin or ukulele)
    "accordion", "banjo", "bass", "cello", "clarinet", "cymbals", "drums", "flute", "guitar", "mallet_percussion",
    "organ", "piano", "saxophone", "synthesizer", "trombone", "trumpet", "violin", "voice",
]


class Section(BaseModel):
    """A params.yaml section: a key it does not declare is an error (a typo must not train the default)."""

    model_config = ConfigDict(extra="forbid")


class DemoParams(Section):
    """The demo dataset (`mirops data demo`, src/mirops/data/demo/)."""

    variant: str = Field("instruments", pattern="^(instruments|tagging)$")  # tagging: 30 s clips, MTAT-style tags
    clips: int = 200               # labelled clips of the instruments variant
    production_clips: int = 40     # the production batch (instruments variant), through production_soundfont
    clip_seconds: float = 10.0
    sample_rate: int = 16000
    groups: int = 40               # recording sessions; a group never straddles splits
    missing_fraction: float = Field(0.4, ge=0.0, lt=1.0)  # (clip, class) pairs left unannotated (instruments)
    classes: list[str] = Field(default_factory=lambda: list(DEMO_CLASSES))
    max_instruments: int = Field(4, ge=1)
    zipf_exponent: float = Field(1.0, ge=0.0)  # class weight 1 / rank**exponent, rank by gm.PREVALENCE; 0: balanced
    min_positives: int = Field(3, ge=0)        # annotated positives of every class (tag) in every split
    # Training SoundFonts, one per session: timbre domains. `soundfont: NAME` (one domain) is read as well.
    soundfonts: list[str] = Field(
        default_factory=lambda: ["FluidR3_GM.sf2", "MuseScore_General_Lite.sf3"],
        min_length=1,
        validation_alias=AliasChoices("soundfonts", "soundfont"),
    )
    production_soundfont: str = "TimGM6mb.sf2"
    real_drums: float = Field(0.4, ge=0.0, le=1.0)  # share of sessions whose drums/cymbals are real one-shots
    require_real_drums: bool = False               # fail, rather than fall back, without hydrogen-drumkits
    split: dict[str, float] = Field(default_factory=lambda: {"train": 0.6, "valid": 0.2, "test": 0.2})
    tagging_clips: int = 120
    tagging_groups: int = 24       # artists: one style, SoundFont and drum kit each
    tagging_clip_seconds: float = 30.0
    styles: list[str] = Field(  # tagging presets (mirops.data.compositions.STYLES), most common first
        default_factory=lambda: ["classical", "electronic", "rock", "jazz", "folk"])

    @field_validator("soundfonts", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class IngestParams(Section):
    """How datasets come in: importers, the audio check that quarantines bad clips, the decoded-audio cache."""

    valid_fraction: float = Field(0.15, gt=0.0, lt=1.0)  # carved from train, by group, when a source has no valid
    split: dict[str, float] = Field(default_factory=lambda: {"train": 0.7, "valid": 0.15, "test": 0.15})
    min_seconds: float = Field(0.5, ge=0.0)     # shorter clips are quarantined as too_short
    short_fraction: float = Field(0.5, ge=0.0, le=1.0)  # ... as are clips under this share of the expected length
    workers: int = Field(2, ge=1)                # threads decoding audio during checks and imports
    link: str = "hardlink"                       # how audio enters data/: hardlink (falls back to copy) or copy
    crop: str = "centre"                         # longer clips: keep the centre ("start": the beginning)


class AuditParams(Section):
    min_positives_per_class: int = 3
    max_group_splits: int = 1
    split_fraction_bounds: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {"train": (0.4, 0.85), "valid": (0.05, 0.35), "test": (0.05, 0.35)}
    )
    duration_bounds_s: tuple[float, float] = (1.0, 60.0)
    # amount & balance
    positive_rate_bounds: tuple[float, float] = (0.005, 0.995)  # per class and split, of annotated labels
    max_imbalance_ratio: float = 50.0           # most frequent class's positives / this class's positives
    # missing labels
    min_annotated_fraction: float = 0.2         # per class and split
    # subjectivity
    ambiguous_band: tuple[float, float] = (0.3, 0.7)  # soft labels in here are "unsure"
    max_ambiguous_share: float = 0.5            # per class, of its annotated labels
    min_mean_responses: float = 2.0             # annotators per label, where the source says (OpenMIC)
    # diversity & representativeness
    min_effective_groups: float = 3.0           # exp(entropy) of the groups behind a class's positives
    max_prevalence_js: float = 0.15             # Jensen-Shannon divergence (bits) of class prevalence vs train
    max_descriptor_shift: float = 1.0           # |median(split) - median(train)| in train IQRs, per descriptor
    # integrity
    max_clipping_ratio: float = 0.01
    max_silence_ratio: float = 0.9
    loudness_bounds_lufs: tuple[float, float] = (-50.0, 0.0)
    min_sample_rate: int = 16000                # source rate; lower rates lose what the backbone hears
    max_quarantined_fraction: float = 0.05
    duplicate_similarity: float = 0.5           # fingerprint similarity from which two clips are the same audio


class ReprogramParams(Section):
    """Reprogramming (`mirops train reprogram`, params.yaml `reprogram:`): backbone, trainable parts and the
    training recipe.

    The recipe values are the "tuned" preset; `TRAIN_PRESETS["reference"]` holds Chen & Lerch's
    (docs/methods.md §1.7), selected with `--preset reference`.
    """

    backbone: str = Field("yamnet", pattern="^(yamnet|ast)$")
    backbone_source: str | None = None  # AST: hub id or save_pretrained folder; YAMNet: ONNX file (default: shipped)
    normalize: bool = False        # AST only: AudioSet mean/std normalisation (the reference feeds raw fbank)
    transform: str = Field("unet", pattern="^(none|noise|cnn|unet)$")
    mapping: str = Field("linear", pattern="^(linear|audioset)$")  # audioset: fixed map from AudioSet logits
    # The fixed map's AudioSet labels per target class, {class: [display names or indices]} (several: many-to-one),
    # on top of the built-in OpenMIC map (None: that map alone); checked against the backbone's labels at prepare.
    audioset_labels: dict[str, list[int | str]] | None = None
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = 3e-3
    weight_decay: float = 5e-7
    lr_milestones: list[int] = Field(default_factory=list)  # MultiStepLR epochs (the reference: 5..25)
    lr_gamma: float = Field(0.85, gt=0.0, le=1.0)
    patience: int | None = Field(None, ge=1)  # early stopping: epochs without a better valid mAP
    freq_mask: int = 8
    time_mask: int = 96
    threshold: float = 0.5
    clip_seconds: float = 10.0     # every clip is centre-cropped or zero-padded to this length
    final_relu: bool = False       # keep the reference U-Net's last ReLU (see models/transforms.py)
    # Which epoch's weights are kept: "valid" the best valid mAP (early stopping with `patience`), "last" the
    # last one, as the reference does (it has no valid split and trains a fixed number of epochs).
    select: str = Field("valid", pattern="^(valid|last)$")
    fold_valid: bool = False       # train on train + valid (the whole original train split); needs select=last
    calibrate: bool = True         # start the U-Net near the identity on the data's log-mel scale
    device: str = "auto"           # "auto": CUDA when there is a GPU, else CPU
    precision: str = Field("auto", pattern="^(auto|fp32|bf16)$")  # auto: bf16 autocast on CUDA, fp32 on CPU
    max_clips: int | None = None  # cap on training clips (tests, smoke runs)

    @model_validator(mode="after")
    def _selection(self) -> ReprogramParams:
        if self.fold_valid and self.select != "last":
            raise ValueError("reprogram.fold_valid trains on the valid clips, so they cannot choose the epoch: "
                             "set reprogram.select=last (or fold_valid=false)")
        if self.select == "last" and self.patience is not None:
            raise ValueError("reprogram.patience stops early on valid mAP, which select=last does not look at: "
                             "set reprogram.patience=null (or select=valid)")
        return self

    @field_validator("audioset_labels", mode="before")
    @classmethod
    def _audioset_labels(cls, value: Any) -> Any:
        """The shape only (names and indices are checked against the backbone's labels once it is loaded): a
        non-empty list of AudioSet display names or indices ≥ 0 per class; one name alone is a list of one."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"expected {{target class: [AudioSet display names or indices]}}, e.g. "
                             f"{{french_horn: [French horn, Brass instrument]}}; got {value!r}")
        out = {}
        for name, refs in value.items():
            refs = [refs] if isinstance(refs, str | int) and not isinstance(refs, bool) else refs
            if not isinstance(refs, list) or not refs:
                raise ValueError(f"class {name!r}: expected a non-empty list of AudioSet display names or indices, "
                                 f"got {refs!r}")
            for ref in refs:
                if isinstance(ref, bool) or not isinstance(ref, str | int) or (
                        isinstance(ref, int) and ref < 0) or (isinstance(ref, str) and not ref.strip()):
                    raise ValueError(f"class {name!r}: {ref!r} is neither an AudioSet display name nor an index ≥ 0")
            out[str(name)] = refs
        return out


class EastParams(Section):
    """EAsT (`mirops train east`): a student CNN tied to frozen teacher embeddings (docs/methods.md §3).

    Values left `None` are the reference's for the task (`mirops.train.east.TASK_RECIPES`): instruments =
    OpenMIC / CP-ResNet, tagging = MagnaTagATune / Mobile FCN. lam: 0.8 instruments (0.9 for PaSST and
    PANNs), 0.6 tagging (docs/methods.md §3.7); patience 15 / 12 and LR patience 8 / 5 epochs (§3.9);
    SpecAugment 48 bins / 192 frames and mixup Beta(0.3, 0.3) for instruments, none for tagging (§3.8).
    """

    task: str = Field("instruments", pattern="^(instruments|tagging)$")
    student: str = Field("cp_resnet", pattern="^(cp_resnet|mobile_fcn)$")
    student_options: dict[str, Any] = Field(default_factory=dict)  # e.g. rho, base_channels (build_student)
    mode: str = Field("east", pattern="^(student|kd|east|kd\\+east)$")  # `mirops train east` without --grid
    teachers: list[str] = Field(default_factory=lambda: ["yamnet"])
    teacher_sources: dict[str, str] = Field(default_factory=dict)  # teacher -> ONNX file, hub id or .npy folder
    lam: float | None = Field(None, ge=0.0, le=1.0)  # weight of the regulariser; None: the reference's
    kd_weight: float = Field(0.3, ge=0.0, le=1.0)  # share of KD in the KD + EAsT regulariser
    tau: float = Field(2.0, gt=0.0)                # KD temperature
    epochs: int = Field(30, ge=1)                  # the reference caps steps instead: max_steps
    # Optimiser steps at most (the last epoch is cut short); "reference": the task's (80k OpenMIC, 100k MTAT).
    max_steps: int | Literal["reference"] | None = Field(None)
    batch_size: int = Field(16, ge=2)              # the regulariser is computed across the batch
    lr: float = 1e-4
    weight_decay: float = 1e-4
    patience: int | None = Field(None, ge=0)      # early stopping (on `stop_on`); 0: never stop early
    stop_on: str = Field("mAP", pattern="^(mAP|loss)$")  # what early stopping watches: valid mAP or total loss
    # Per-clip mel-band jitter of the student's front end in training, computed on the fly from the cached
    # audio (None: the task's reference, on for instruments/OpenMIC, off for tagging).
    mel_jitter: bool | None = None
    lr_patience: int | None = Field(None, ge=0)   # ReduceLROnPlateau on the valid total loss
    lr_factor: float = Field(0.2, gt=0.0, lt=1.0)
    grad_clip: float | None = Field(1.0, gt=0.0)  # gradient-norm clipping (None: off)
    freq_mask: int | None = Field(None, ge=0)     # SpecAugment, mel bins
    time_mask: int | None = Field(None, ge=0)     # SpecAugment, frames (10 ms)
    mixup: float | None = Field(None, ge=0.0)     # Beta(a, a) mixup of frames, labels and teacher embeddings; 0: off
    probe_c: float = Field(1.0, gt=0.0)           # inverse L2 strength of the teacher + logistic regression probe
    # How the teacher + linear probe is fitted: scikit-learn's L2 logistic regression, or SGD as the reference
    # trains its PretrainedFeatureClassifier (lr 0.1, 0.2 for VGGish-OpenMIC and PaSST-MTAT; docs/methods.md §3.4)
    probe: str = Field("logistic", pattern="^(logistic|sgd)$")
    # The EAsT term: distance correlation (every final reference config) or the cosine-distance difference
    regulariser: str = Field("distance_correlation", pattern="^(distance_correlation|cosine_distance_difference)$")
    grid_cosine: bool = False  # --grid paper: also an EAsT row per teacher with the cosine-distance difference
    clip_seconds: float = 10.0
    threshold: float = 0.5
    device: str = "auto"
    precision: str = Field("auto", pattern="^(auto|fp32|bf16)$")
    max_clips: int | None = None
    model_name: str = "mirops-east"


# Training recipes by family section and name (`mirops train FAMILY --preset NAME`); --set wins over them.
TRAIN_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "reprogram": {
        # Chen & Lerch's recipe (docs/methods.md §1.7): 30 epochs on the whole split01 train (~15k OpenMIC clips,
        # no validation), Adam 1e-5, batch 4, MultiStepLR from epoch 5 to 25 (gamma 0.85), SpecAugment 24 bins /
        # 96 frames, the U-Net's final ReLU, no early stopping, the last epoch kept.
        "reference": {"epochs": 30, "batch_size": 4, "lr": 1e-5, "weight_decay": 5e-7,
                      "lr_milestones": list(range(5, 26)), "lr_gamma": 0.85, "patience": None,
                      "freq_mask": 24, "time_mask": 96, "calibrate": False, "final_relu": True,
                      "select": "last", "fold_valid": True},
        # What works on a few hundred clips: a larger step, fewer epochs, early stopping on valid mAP.
        "tuned": {"epochs": 8, "batch_size": 8, "lr": 3e-3, "weight_decay": 5e-7, "lr_milestones": [],
                  "patience": 4, "freq_mask": 8, "time_mask": 96, "calibrate": True, "final_relu": False,
                  "select": "valid", "fold_valid": False},
    },
    "east": {
        # Ding & Lerch's recipe per task (docs/methods.md §3.8-3.9): the task's step budget, early stopping on
        # the valid total loss with the task's patience (15 / 12), best valid mAP kept, mel-band jitter in
        # training (OpenMIC), the SGD-trained probe, seed 1223. The epoch cap only has to stay out of the way of
        # the step budget.
        "reference": {"epochs": 1000, "max_steps": "reference", "stop_on": "loss", "patience": None,
                      "lr_patience": None, "mel_jitter": None, "probe": "sgd", "seed": 1223},
    },
}
PRESET_NAMES = sorted({name for presets in TRAIN_PRESETS.values() for name in presets})


TOP_LEVEL_PRESET_KEYS = ("seed",)  # a preset may set these settings outside its section


def preset_overrides(name: str, section: str = "reprogram") -> dict[str, Any]:
    """`<section>__<field>` overrides of a family's preset (and top-level ones, e.g. the seed), for
    `Settings.load(**overrides)`."""
    presets = TRAIN_PRESETS.get(section, {})
    if name not in presets:
        raise ValueError(f"unknown {section} training preset {name!r}; choose one of {sorted(presets)}")
    return {key if key in TOP_LEVEL_PRESET_KEYS else f"{section}__{key}": value
            for key, value in presets[name].items()}


class RegistryParams(Section):
    model_name: str = "mirops-instruments"
    primary_metric: str = Field("test_mAP", pattern="^test_(mAP|ROC_AUC)$")
    # The promotion gate (docs/registry.md#the-gate): the challenger's gain over the champion on the same test
    # clips must have a paired-bootstrap (1 - alpha) interval (`bootstrap_samples` resamples) whose lower end
    # lies above `min_gain`: a one-sided test at alpha / 2, which benchmarks/gate_calibration.py measured to
    # promote at most alpha of no-better challengers (seed-retrained ones double the nominal rate).
    min_gain: float = 0.0
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    bootstrap_samples: int = Field(2000, ge=100)
    require_audit: bool = True          # the challenger's dataset audit must have passed (not just "not run")
    block_on_critical_drift: bool = True
    # Where promotions take their lock (registry/lock.py): null = the store's own (PostgreSQL advisory lock, or a
    # file lock beside an SQLite store / in the project); a postgresql:// URL shares it across machines.
    lock_url: str | None = None


class MonitorParams(Section):
    """The drift verdict (docs/monitoring.md#the-decision): a permutation test over files at level `alpha`."""

    alpha: float = Field(0.05, gt=0.0, lt=1.0)        # false-alarm rate of the verdict on an undrifted batch
    permutations: int = Field(1999, ge=99)            # random relabellings of files (p-value resolution 1/2000)
    windows_per_file: int | None = Field(8, ge=1)     # clip-length windows read per file, spread over it
    # A verdict is "critical" (it blocks promotion, see registry.block_on_critical_drift) when this share
    # of compared columns drifts, or when the embedding domain classifier's ROC AUC reaches `critical_auc`.
    critical_drift_share: float = Field(0.6, gt=0.0, le=1.0)
    critical_auc: float = Field(0.9, gt=0.5, le=1.0)


class ScheduleParams(Section):
    """Prefect deployments served by `mirops serve` (cron in the server's time zone, `timezone`)."""

    timezone: str = "UTC"
    retrain_cron: str = "0 3 * * 1"     # weekly, Monday 03:00
    monitor_cron: str = "0 6 * * *"     # daily, 06:00
    source: str | None = None           # retraining data: null = data/ as it is (the demo when empty)
    family: str = Field("reprogram", pattern="^(reprogram|east|both)$")
    grid: str | None = None             # e.g. "paper": train the ablation grid instead of one model
    current: str | None = None          # the batch the daily monitor checks (null: production/)
    retrain_on_drift: bool = True       # a drifted monitor verdict starts the retraining deployment
    # Prefect task timeouts (s): a hung step fails the run instead of blocking the next schedule.
    train_timeout_s: int = Field(6 * 3600, gt=0)       # each training (and grid) task
    evaluate_timeout_s: int = Field(3600, gt=0)        # scoring the test split
    precompute_timeout_s: int = Field(3600, gt=0)      # each mapped chunk of the precomputation
    lock_wait_s: int = Field(2 * 3600, ge=0)           # a retraining waits this long for another of the
                                                       # same project to finish, then is skipped


class DvcParams(Section):
    """What DVC tracks beside data/ (docs/pipeline.md#dvc): the per-family stages of dvc.yaml and the remote."""

    # dvc.yaml runs train/evaluate/register/promote once per family listed here (`foreach: ${dvc.families}`);
    # keep it to what `mirops pipeline run --family` trains, so `dvc status` is clean after a run.
    families: list[Literal["reprogram", "east"]] = Field(default_factory=lambda: ["reprogram"], min_length=1)
    # Where dataset versions are pushed: null = a per-project folder outside the project
    # ($XDG_DATA_HOME/mirops/dvc-remote/<project>-<hash>); or a path, s3://..., ssh://... as DVC takes it.
    remote: str | None = None

    @field_validator("families")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"dvc.families {value}: a family is listed twice")
        return value


# Settings that were removed, with what replaced them (an unknown key would only get the nearest spelling).
RETIRED_KEYS = {
    "registry.confidence": "the gate's interval is at 1 - `registry.alpha`, the share of no-better challengers it "
                           "may promote (default 0.05, i.e. a 95 % interval; docs/registry.md#the-gate)",
    "monitor.drift_share_threshold": "the drift verdict is a permutation test over files at `monitor.alpha` "
                                     "(a false-alarm rate, default 0.05; docs/monitoring.md#the-decision)",
}


def _accepted_names(model: type[BaseModel]) -> dict[str, Any]:
    """Key -> field annotation of a settings model, aliases included (`demo.soundfont`)."""
    names: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        names[name] = info.annotation
        alias = info.validation_alias
        for choice in getattr(alias, "choices", [alias] if isinstance(alias, str) else []):
            if isinstance(choice, str):
                names[choice] = info.annotation
    return names


def nearest(key: str, choices: list[str]) -> str | None:
    """The valid key a typo most likely meant: one the typo begins (`alph` -> `alpha`),
    else the closest spelling; None when nothing is close."""
    started = sorted((c for c in choices if c.startswith(key) or key.startswith(c)), key=len)
    if started:
        return started[0]
    near = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    return near[0] if near else None


def unknown_keys(values: dict[str, Any], model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """What in `values` (params.yaml-shaped) no settings field declares, each with the nearest valid key.

    Sections are checked key by key; a field that is itself a mapping (e.g. `demo.split`) takes any key.
    """
    model = model or Settings
    accepted = {k: v for k, v in _accepted_names(model).items() if k != "root" or model is not Settings}
    problems = []
    for key, value in values.items():
        where = f"{prefix}{key}"
        if where in RETIRED_KEYS:
            problems.append(f"`{where}` is no longer a setting: {RETIRED_KEYS[where]}")
        elif key not in accepted:
            near = nearest(str(key), list(accepted))
            hint = f"did you mean `{prefix}{near}`?" if near else f"expected one of {sorted(accepted)}"
            problems.append(f"unknown key `{where}`: {hint}")
        elif isinstance(accepted[key], type) and issubclass(accepted[key], BaseModel) and isinstance(value, dict):
            problems += unknown_keys(value, accepted[key], f"{where}.")
    return problems


def _canonical_field(section: str, key: str) -> str:
    """The field name behind `key` in `section` (an alias such as `demo.soundfont` -> `soundfonts`)."""
    info = Settings.model_fields.get(section)
    model = info.annotation if info else None
    if isinstance(model, type) and issubclass(model, BaseModel):
        for name, field in model.model_fields.items():
            alias = field.validation_alias
            if key == name or key in getattr(alias, "choices", [alias] if isinstance(alias, str) else []):
                return name
    return key


def _nest(key: str, value: Any) -> dict[str, Any]:
    """`section__field` (what `--set section.field=...` becomes) as `{section: {field: value}}`."""
    section, _, field = key.partition("__")
    return {section: {field: value}} if field else {key: value}


def _setting_env_vars() -> dict[str, str]:
    """MIROPS_SECTION__FIELD variables (name -> `section__field`). Single-underscore MIROPS_* variables
    (MIROPS_ROOT, MIROPS_CACHE_DIR, ...) are not settings and are left alone."""
    return {name: name.removeprefix("MIROPS_").lower() for name in os.environ
            if name.startswith("MIROPS_") and "__" in name}


class Settings(BaseSettings):
    """Everything the pipeline needs to know; `Settings.load(root)` is the one way to build it."""

    model_config = SettingsConfigDict(env_prefix="MIROPS_", env_nested_delimiter="__", extra="ignore")

    root: Path = Path(".")
    seed: int = 2022
    demo: DemoParams = Field(default_factory=DemoParams)
    ingest: IngestParams = Field(default_factory=IngestParams)
    audit: AuditParams = Field(default_factory=AuditParams)
    reprogram: ReprogramParams = Field(default_factory=ReprogramParams)
    east: EastParams = Field(default_factory=EastParams)
    registry: RegistryParams = Field(default_factory=RegistryParams)
    monitor: MonitorParams = Field(default_factory=MonitorParams)
    schedule: ScheduleParams = Field(default_factory=ScheduleParams)
    dvc: DvcParams = Field(default_factory=DvcParams)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (params.yaml content passed by `load`) < environment: env vars win over the file.
        return (env_settings, init_settings)

    @classmethod
    def load(cls, root: str | Path | None = None, **overrides: Any) -> Settings:
        root = Path(root or os.environ.get("MIROPS_ROOT", ".")).resolve()
        params_file = root / "params.yaml"
        values: dict[str, Any] = {}
        if params_file.exists():
            loaded = yaml.safe_load(params_file.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{params_file}: expected a mapping of sections, got {type(loaded).__name__}")
            values.update(loaded)
        renamed = [where for where, keys in ((str(params_file), values), ("--set", overrides),
                                             ("environment", {k.lower(): v for k, v in os.environ.items()}))
                   if "train" in keys or any(k.startswith(("train__", "mirops_train__")) for k in keys)]
        if renamed:
            old_keys = {*((values.get("train") or {}) if isinstance(values.get("train"), dict) else {}),
                        *(k.partition("__")[2] for k in overrides if k.startswith("train__")),
                        *(k.lower().removeprefix("mirops_train__") for k in os.environ
                          if k.lower().startswith("mirops_train__"))}
            fields = list(_accepted_names(ReprogramParams))
            hints = [f"`{key}` -> `reprogram.{near}`" if (near := nearest(key, fields))
                     else f"`{key}`: no such reprogramming setting" for key in sorted(old_keys)]
            raise ValueError(f"{', '.join(renamed)}: the settings section `train` is now `reprogram` (the "
                             "reprogramming family's settings; EAsT's are `east`): rename `train:` to `reprogram:` "
                             "in params.yaml, `--set train.X=...` to `--set reprogram.X=...` and MIROPS_TRAIN__X "
                             "to MIROPS_REPROGRAM__X" + (f" ({'; '.join(hints)})" if hints else ""))
        unknown = [f"{params_file}: {problem}" for problem in unknown_keys(values)]
        unknown += [f"--set {key.replace('__', '.', 1)}: {problem}"
                    for key, value in overrides.items() for problem in unknown_keys(_nest(key, value))]
        unknown += [f"environment {name}: {problem}" for name, key in _setting_env_vars().items()
                    for problem in unknown_keys(_nest(key, None))]
        if unknown:
            raise ValueError("unknown settings (see params.yaml for every key):\n  " + "\n  ".join(unknown))
        for key, value in overrides.items():
            section, _, field = key.partition("__")
            if field:
                merged = values.setdefault(section, {})
                canonical = _canonical_field(section, field)
                for alias in [k for k in merged if _canonical_field(section, k) == canonical]:
                    del merged[alias]  # `--set demo.soundfont=X` replaces params.yaml's `soundfonts`
                merged[canonical] = value
            else:
                values[key] = value
        values["root"] = root
        return cls(**values)

    # Where things live, all under the project root.
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def production_dir(self) -> Path:
        return self.root / "production"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def cache_dir(self) -> Path:
        """Content-addressed decoded audio and front-end features (safe to delete, refilled on demand)."""
        return self.artifacts_dir / "cache"

    @property
    def dashboards_dir(self) -> Path:
        return self.root / "dashboards"

    @property
    def expectations_dir(self) -> Path:
        own = self.root / "expectations"
        return own if own.is_dir() else Path(__file__).resolve().parents[2] / "expectations"

    @property
    def tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.root / 'mlruns.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.root / "mlartifacts"
