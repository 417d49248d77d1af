"""Reprogramming (Chen & Lerch 2023; docs/methods.md §1): a frozen backbone with a small trainable input
transform and output mapping, trained on the backbone front end's cached frames.

Settings: params.yaml `reprogram:` (`mirops.config.ReprogramParams`); registered model: `registry.model_name`;
grid `paper`: the paper's ablation (`mirops.train.grid`).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import pandas as pd
import torch

from mirops.config import Settings
from mirops.data.cache import ArrayCache
from mirops.data.dataset import DatasetVersion
from mirops.data.manifest import TEST, TRAIN, VALID
from mirops.families.base import GridVariant, ModelFamily, OnEpoch, Prepared, Trained, VariantOutcome, score
from mirops.features.dataset_clips import DatasetClips
from mirops.features.logmel import SAMPLE_RATE, YamnetLogMel
from mirops.models.backbone import SpectrogramPool, build_backbone
from mirops.models.mappings import SETTING, UnmappedClassError, check_label_map, merged_label_map, resolve_label_map
from mirops.models.reprogram import ReprogrammedClassifier
from mirops.models.serving import ServingSpec
from mirops.plots import grid_per_class
from mirops.progress import console
from mirops.train import grid as grids
from mirops.train.loop import resolve_device
from mirops.train.reprogram import SpecSet, fit, predict_probs


def training_frontend(settings: Settings):
    """The front end of `reprogram.backbone`, without loading its weights (AST: only the checkpoint's config),
    so precompute tasks fill exactly the frames training will read."""
    p = settings.reprogram
    if p.backbone == "ast":
        from transformers import ASTConfig  # heavy, and only for AST: loaded when asked for

        from mirops.features.fbank import AstFbank
        from mirops.models.ast import DEFAULT_AST

        config = ASTConfig.from_pretrained(p.backbone_source or DEFAULT_AST)
        return AstFbank(config.max_length, config.num_mel_bins, normalize=p.normalize)
    return YamnetLogMel()


@functools.cache
def _backbone(name: str, source: str | None, normalize: bool):
    options = {"normalize": normalize} if name == "ast" else {}
    return build_backbone(name, source, **options)


def backbone(settings: Settings):
    """The frozen backbone `reprogram.backbone` names, from `reprogram.backbone_source` (or its default)."""
    p = settings.reprogram
    return _backbone(p.backbone, p.backbone_source, p.normalize)


def dataset_clips(settings: Settings, ds: DatasetVersion) -> DatasetClips:
    return DatasetClips(ds.folder, ArrayCache(settings.cache_dir), settings.ingest.crop)


def split_sets(settings: Settings, ds: DatasetVersion, frontend, splits: tuple[str, ...], seconds: float,
               max_clips: int | None, make_set) -> tuple[dict, dict, int]:
    """Per split: `make_set(frames, labels, rows)`, the rows kept and the clips skipped as unusable.
    `max_clips` caps train and valid, never test (every family is scored on the whole test split)."""
    clips = dataset_clips(settings, ds)
    sets, parts, skipped = {}, {}, 0
    for s in splits:
        frames, kept, n_bad = clips.frames(ds.split(s, max_clips if s != TEST else None), frontend, seconds,
                                           f"{s} split")
        sets[s] = make_set(torch.from_numpy(frames), torch.from_numpy(ds.labels(kept)), kept)
        parts[s], skipped = kept, skipped + n_bad
    return sets, parts, skipped


def fixed_label_map(settings: Settings, net, classes: list[str], required: bool) -> tuple[dict, str | None]:
    """The fixed AudioSet map of these classes (the built-in OpenMIC map with `reprogram.audioset_labels` on
    top) and why it cannot be built, if it cannot (None: it can).

    The setting's entries are checked against the backbone's labels here, before any frame is computed: an
    unknown name or an out-of-range index is an error naming the class, the entry and the nearest valid name.
    `required` (the model to train is the fixed map): a class without labels is an error naming the setting.
    """
    user = settings.reprogram.audioset_labels
    label_map = merged_label_map(user)
    names = net.label_names
    if not names:
        if required:
            raise ValueError(f"reprogram.mapping=audioset: the backbone {settings.reprogram.backbone!r} has no named "
                             "logits (no AudioSet classification head) to map from; use mapping linear")
        return label_map, "the backbone has no AudioSet classification head (no named logits) to map from"
    if user:
        check_label_map(user, names, SETTING)
    try:
        resolve_label_map(classes, names, label_map)
    except UnmappedClassError as exc:
        if required:
            raise
        plural = "es" if len(exc.classes) > 1 else ""
        return label_map, (f"no AudioSet labels for class{plural} {', '.join(exc.classes)} (not in the built-in "
                           f"OpenMIC map): set `{SETTING}`")
    except ValueError as exc:  # a built-in entry this backbone lacks (the setting's own were checked above)
        if required:
            raise
        return label_map, str(exc)
    return label_map, None


def fold_valid_into_train(sets: dict, parts: dict) -> tuple[dict, dict]:
    """Train on train + valid and leave valid empty (`reprogram.fold_valid`): the split a dataset carved for
    validation goes back to training, as the reference trains on all of OpenMIC's split01 train."""
    train, valid = sets[TRAIN], sets[VALID]
    sets = sets | {TRAIN: SpecSet(torch.cat([train.specs, valid.specs]), torch.cat([train.labels, valid.labels])),
                   VALID: SpecSet(valid.specs[:0], valid.labels[:0])}
    parts = parts | {TRAIN: pd.concat([parts[TRAIN], parts[VALID]], ignore_index=True), VALID: parts[VALID].iloc[:0]}
    return sets, parts


class Reprogramming(ModelFamily):
    name = "reprogram"
    section = "reprogram"
    grid_prefix = "grid"
    run_file = "run.json"
    grids = tuple(grids.GRIDS)

    def model_name(self, settings: Settings) -> str:
        return settings.registry.model_name

    def run_name(self, settings: Settings) -> str:
        p = settings.reprogram
        return f"reprogram-{p.backbone}-{p.transform}-{p.mapping}"

    def checkpoint_config(self, settings: Settings) -> dict[str, Any]:
        config = super().checkpoint_config(settings)
        if config.get("audioset_labels") is None:  # unset: the folders of runs from before the setting existed
            config.pop("audioset_labels", None)
        if config.get("select") == "valid" and not config.get("fold_valid"):  # likewise, the defaults
            config.pop("select", None)
            config.pop("fold_valid", None)
        return config

    def prepare(self, settings: Settings, ds: DatasetVersion, grid: str | None = None) -> Prepared:
        p = settings.reprogram
        net = backbone(settings)
        fixed_only = not grid and p.mapping == "audioset"  # one model, and it is the fixed map
        label_map, no_fixed_map = fixed_label_map(settings, net, ds.classes, required=fixed_only)
        splits = (TRAIN, VALID, TEST) if grid else (TRAIN, VALID)
        sets, parts, skipped = split_sets(settings, ds, net.frontend, splits, p.clip_seconds, p.max_clips,
                                          lambda frames, labels, _rows: SpecSet(frames, labels))
        if p.fold_valid:  # the reference trains on the whole original train split, valid clips included
            sets, parts = fold_valid_into_train(sets, parts)
        return Prepared(sets, parts, skipped, ds.classes, {"backbone": net, "label_map": label_map,
                                                           "no_fixed_map": no_fixed_map})

    def build(self, settings: Settings, prepared: Prepared, transform: str, mapping: str,
              use_backbone: bool = True) -> ReprogrammedClassifier:
        """A reprogrammed classifier around the backbone (or, `use_backbone=False`, its pooled front end)."""
        net = prepared.extra["backbone"]
        torch.manual_seed(settings.seed)
        core = net if use_backbone else SpectrogramPool.like(net)
        return ReprogrammedClassifier(core, prepared.classes, transform=transform,
                                      final_relu=settings.reprogram.final_relu, mapping=mapping,
                                      label_map=prepared.extra.get("label_map"),
                                      input_frames=prepared.sets[TRAIN].specs.shape[1])

    def _fit(self, settings: Settings, model, prepared: Prepared, checkpoints, resume: bool,
             on_epoch: OnEpoch) -> Trained:
        model.to(resolve_device(settings.reprogram.device))
        started = time.perf_counter()
        result = fit(model, prepared.sets[TRAIN], prepared.sets[VALID], settings.reprogram, settings.seed,
                     on_epoch=on_epoch, checkpoints=checkpoints, resume=resume)
        return Trained(model, result, time.perf_counter() - started)

    def train(self, settings: Settings, prepared: Prepared, checkpoints, resume: bool, on_epoch: OnEpoch,
              run) -> Trained:
        p = settings.reprogram
        model = self.build(settings, prepared, p.transform, p.mapping)
        return self._fit(settings, model, prepared, checkpoints, resume, on_epoch)

    def count_parameters(self, model) -> tuple[int, int]:
        counts = model.count_parameters()
        return counts["trainable"], counts["total"]

    def serving(self, settings: Settings, prepared: Prepared, model) -> ServingSpec:
        return ServingSpec(int(model.frontend.config().get("sample_rate", SAMPLE_RATE)),
                           settings.reprogram.clip_seconds, settings.reprogram.threshold, tuple(prepared.classes))

    # ------------------------------------------------------------ the paper's ablation
    def grid_name(self, settings: Settings, grid: str) -> str:
        return f"{self.grid_prefix}-{grid}-{settings.reprogram.backbone}"

    def grid_variants(self, settings: Settings, grid: str) -> list[GridVariant]:
        self.check_grid(grid)
        return [GridVariant(v.name, {"reprogram.transform": v.transform, "reprogram.mapping": v.mapping,
                                     "backbone_used": v.backbone}, {}, v)
                for v in grids.grid_variants(grid)]

    def grid_skip_reason(self, settings: Settings, prepared: Prepared, variant: GridVariant) -> str | None:
        """The fixed-map variant needs AudioSet labels for every class (`reprogram.audioset_labels`)."""
        return prepared.extra.get("no_fixed_map") if variant.spec.mapping == "audioset" else None

    def skipped_row(self, settings: Settings, variant: GridVariant, reason: str) -> dict[str, Any]:
        return grids.skipped_row(variant.spec, reason)

    def train_variant(self, settings: Settings, prepared: Prepared, variant: GridVariant, checkpoints,
                      resume: bool, on_epoch: OnEpoch, run) -> tuple[Trained, VariantOutcome]:
        spec: grids.Variant = variant.spec
        model = self.build(settings, prepared, spec.transform, spec.mapping, use_backbone=spec.backbone)
        trainable, total = self.count_parameters(model)
        run.log_metrics({"params_trainable": trainable, "params_total": total})
        trained = self._fit(settings, model, prepared, checkpoints, resume, on_epoch)
        test_set = prepared.sets[TEST]
        test, per_class = score(predict_probs(model, test_set.specs, precision=settings.reprogram.precision),
                                test_set.labels.numpy(), prepared.classes, settings.reprogram.threshold)
        row = grids.summary_row(spec, trainable, trained.result.best_epoch, trained.result.best_valid, test,
                                trained.seconds)
        console.print(f"{variant.name}: test mAP {test['mAP']:.3f}, F1 (OpenMIC) {test['F1_openmic']:.3f}, "
                      f"{trainable:,} trainable parameters")
        # The trainable part only (KB): the frozen backbone is named by the run's parameters.
        state = {k: v.cpu() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
        return trained, VariantOutcome(row, per_class, {f"test_{k}": v for k, v in test.items()}, state,
                                       "trainable_state.pt")

    def grid_summary(self, settings: Settings, grid: str, rows: list[dict], per_class: dict[str, dict]
                     ) -> tuple[pd.DataFrame, str, dict[str, Any]]:
        f1 = {name: {c: m["F1_openmic"] for c, m in classes.items()} for name, classes in per_class.items()}
        figure = grid_per_class(f1, "F1 (OpenMIC macro avg), test split")
        return grids.summary_table(rows), "grid_summary", {"plots/grid_per_class_f1.png": figure}


REPROGRAMMING = Reprogramming()
