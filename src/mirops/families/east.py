"""EAsT (Ding & Lerch, ISMIR 2023; docs/methods.md §3): a small student CNN whose time-pooled features are tied
to frozen teacher embeddings, with the paper's baselines (student alone, teacher + probe, KD, KD + EAsT).

Settings: params.yaml `east:` (`mirops.config.EastParams`); registered model: `east.model_name`; grid
`paper`: the student alone, then per teacher the probe, KD, EAsT and KD + EAsT. Teacher embedding sequences
are computed once per clip and cached by content (`teacher_sequences`, also the precompute flow's work).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mirops.config import Settings
from mirops.data.cache import ArrayCache, file_digest
from mirops.data.dataset import DatasetVersion
from mirops.data.manifest import LABELLED_SPLITS, TEST, TRAIN, VALID
from mirops.families.base import GridVariant, ModelFamily, OnEpoch, Prepared, Trained, VariantOutcome, score
from mirops.features.clips import ClipResults, per_clip
from mirops.features.dataset_clips import DatasetClips
from mirops.lineage import TAG_TEACHER
from mirops.models.serving import ServingSpec
from mirops.models.students import build_student
from mirops.models.teachers import AudioTeacher, build_teacher, stack_sequences
from mirops.plots import metric_bars
from mirops.progress import console
from mirops.train.east import fit_probe, fit_student, inference_ms_per_clip, predict_student
from mirops.train.east_data import ClipWaves, EastSet, TeacherCache
from mirops.train.east_recipe import effective_recipe, reference_probe_lr, resolved
from mirops.train.linear_probe import fit_probe_sgd
from mirops.train.loop import resolve_device
from mirops.train.metrics import reference_openmic_scores

GRID_MODES = ("student", "probe", "kd", "east", "kd+east")  # the paper's comparison, per teacher
REFERENCE_SCORES = ("ref_mAP", "ref_F1_macro", "ref_F1_openmic")  # reference_openmic_scores (instruments only)
EAST_COLUMNS = ["variant", "teacher", "mode", "params", "best_epoch", "valid_mAP", "test_mAP", "test_ROC_AUC",
                "test_F1_macro", "test_F1_openmic", *(f"test_{k}" for k in REFERENCE_SCORES), "inference_ms_per_clip",
                "train_seconds"]


@functools.cache
def _teacher(name: str, source: str | None):
    return build_teacher(name, source)


def teacher_key(settings: Settings, name: str) -> dict[str, Any]:
    """What a cached teacher sequence depends on besides the audio: the teacher, its weights, the crop."""
    source = settings.east.teacher_sources.get(name)
    if source and Path(source).is_file():  # a weights file: its content, not its path, names it
        source = file_digest(Path(source))
    return {"teacher": name, "source": source, "seconds": settings.east.clip_seconds, "crop": settings.ingest.crop,
            "v": 1}


def teacher_sequences(settings: Settings, ds: DatasetVersion, name: str, paths: list[str],
                      cache: ArrayCache | None = None) -> tuple[ClipResults, float]:
    """Teacher embedding sequences [T, D] of clips of `ds` (decoded at the teacher's own rate, cropped like the
    student's), computed once and cached by content; returns (ClipResults, hop_s). Precomputed teachers read
    their own files."""
    teacher = _teacher(name, settings.east.teacher_sources.get(name))
    if not isinstance(teacher, AudioTeacher):  # already on disk, one .npy per clip id
        ids = dict(zip(ds.manifest["path"], ds.manifest["clip_id"], strict=True))
        out = ClipResults()
        for rel in paths:
            out.paths.append(rel)
            out.arrays.append(teacher.teach(clip_ids=[ids[rel]]).embeddings[0].numpy())
        return out, teacher.hop_s

    def compute(wave: np.ndarray) -> np.ndarray:
        return teacher.teach(audio=torch.from_numpy(wave)[None]).embeddings[0].float().numpy()

    clips = DatasetClips(ds.folder, cache or ArrayCache(settings.cache_dir), settings.ingest.crop)
    loader = clips.loader(settings.east.clip_seconds, teacher.sample_rate)
    return per_clip(loader, paths, "teacher", teacher_key(settings, name), compute), teacher.hop_s


def train_waves(clips: DatasetClips, frontend, seconds: float, rows: pd.DataFrame) -> ClipWaves:
    """The train clips' audio at the front end's rate, read per batch from the decoded-audio cache, so training
    can apply the front end's mel-band jitter (`east.mel_jitter`) afresh at every step."""
    loader = clips.loader(seconds, frontend.config()["sample_rate"])
    paths = list(rows["path"])
    return ClipWaves(lambda i: loader.wave(paths[i]), np.arange(len(paths)))


def build(settings: Settings, classes: list[str]):
    torch.manual_seed(settings.seed)
    return build_student(settings.east.student, len(classes), **settings.east.student_options)


def fitted_probe(settings: Settings, sets: dict[str, EastSet], teacher: str):
    """The teacher + linear probe on the train split (`east.probe`): scikit-learn's logistic regression, or SGD
    as the reference trains it (its learning rate for the task and teacher, early stopping on valid)."""
    p, train, valid = settings.east, sets[TRAIN], sets[VALID]
    if p.probe == "sgd":
        return fit_probe_sgd(train.teachers[teacher].embeddings, train.labels, valid.teachers[teacher].embeddings,
                             valid.labels, lr=reference_probe_lr(p.task, teacher), seed=settings.seed,
                             threshold=p.threshold)
    return fit_probe(train.teachers[teacher].embeddings, train.labels, p.threshold, p.probe_c)


def with_probe_logits(sets: dict[str, EastSet], probes: dict) -> dict[str, EastSet]:
    """KD targets: each teacher's probe logits on every split."""
    out = {}
    for split, data in sets.items():
        for name, probe in probes.items():
            data = data.with_teacher_logits(name, probe.logits(data.teachers[name].embeddings))
        out[split] = data
    return out


class East(ModelFamily):
    name = "east"
    section = "east"
    grid_prefix = "east-grid"
    run_file = "east-run.json"
    grids = ("paper",)

    def model_name(self, settings: Settings) -> str:
        return settings.east.model_name

    def first_teacher(self, settings: Settings) -> str | None:
        p = settings.east
        teacher = p.teachers[0] if p.teachers else None
        if teacher is None and p.mode != "student":
            raise ValueError(f"east.mode {p.mode} needs a teacher: set east.teachers (e.g. [yamnet])")
        return teacher

    def run_name(self, settings: Settings) -> str:
        p = settings.east
        return f"east-{p.student}-{p.mode}-{self.first_teacher(settings)}"

    def run_tags(self, settings: Settings) -> dict[str, str]:
        return {TAG_TEACHER: str(self.first_teacher(settings))}

    def prepare(self, settings: Settings, ds: DatasetVersion, grid: str | None = None) -> Prepared:
        """Per split: the student's frames, labels and every teacher's sequences; KD targets from probes
        fitted on train where a mode needs them."""
        p = settings.east
        teacher = None if grid else self.first_teacher(settings)
        teachers = list(p.teachers) if grid else ([teacher] if teacher else [])
        frontend = build(settings, ds.classes).frontend.eval()
        clips = DatasetClips(ds.folder, ArrayCache(settings.cache_dir), settings.ingest.crop)
        sets, parts, skipped = {}, {}, 0
        for s in LABELLED_SPLITS:
            frames, kept, n_bad = clips.frames(ds.split(s, p.max_clips if s != TEST else None), frontend,
                                               p.clip_seconds, f"{s} split")
            caches = {}
            for name in teachers:
                seqs, hop = teacher_sequences(settings, ds, name, list(kept["path"]))
                if seqs.failed:
                    raise ValueError(f"teacher {name} could not embed {len(seqs.failed)} clips of the {s} split; "
                                     f"first: {next(iter(seqs.failed.values()))}")
                caches[name] = TeacherCache(torch.from_numpy(stack_sequences(seqs.arrays, seqs.paths)), hop)
            waves = train_waves(clips, frontend, p.clip_seconds, kept) if s == TRAIN and resolved(p, "mel_jitter") \
                else None
            sets[s] = EastSet(torch.from_numpy(frames), torch.from_numpy(ds.labels(kept)), caches, waves)
            parts[s], skipped = kept, skipped + n_bad
        probes = {}
        if grid or p.mode in ("kd", "kd+east"):
            probes = {t: fitted_probe(settings, sets, t) for t in teachers}
            sets = with_probe_logits(sets, probes)
        return Prepared(sets, parts, skipped, ds.classes, {"probes": probes, "teacher": teacher})

    def _fit(self, settings: Settings, prepared: Prepared, mode: str, teacher: str | None, checkpoints,
             resume: bool, on_epoch: OnEpoch, run, regulariser: str | None = None) -> Trained:
        p = settings.east
        if regulariser is not None:
            p = p.model_copy(update={"regulariser": regulariser})
        student = build(settings, prepared.classes).to(resolve_device(p.device))
        run.log_params({f"recipe.{k}": v for k, v in effective_recipe(p, mode, teacher).items()})
        started = time.perf_counter()
        result = fit_student(student, prepared.sets[TRAIN], prepared.sets[VALID], p, settings.seed, mode=mode,
                             teacher=teacher, on_epoch=on_epoch, checkpoints=checkpoints, resume=resume)
        return Trained(student, result, time.perf_counter() - started)

    def train(self, settings: Settings, prepared: Prepared, checkpoints, resume: bool, on_epoch: OnEpoch,
              run) -> Trained:
        return self._fit(settings, prepared, settings.east.mode, prepared.extra["teacher"], checkpoints, resume,
                         on_epoch, run)

    def count_parameters(self, model) -> tuple[int, int]:
        n = sum(x.numel() for x in model.parameters())  # the whole student trains
        return n, n

    def serving(self, settings: Settings, prepared: Prepared, model) -> ServingSpec:
        p = settings.east
        return ServingSpec(int(model.sample_rate), p.clip_seconds, p.threshold, tuple(prepared.classes))

    # ------------------------------------------------------------ the paper's comparison
    def grid_name(self, settings: Settings, grid: str) -> str:
        return f"{self.grid_prefix}-{grid}-{settings.east.student}"

    def grid_variants(self, settings: Settings, grid: str) -> list[GridVariant]:
        self.check_grid(grid)
        p = settings.east
        rows = [("student", None, "student", p.regulariser)]
        for t in p.teachers:
            rows += [(f"{mode}-{t}", t, mode, p.regulariser) for mode in GRID_MODES if mode != "student"]
            if p.grid_cosine:  # the paper's second distance measure, beside distance correlation
                rows.append((f"east-cdd-{t}", t, "east", "cosine_distance_difference"))
        return [GridVariant(name, {"east.mode": mode, "teacher": str(teacher), "east.regulariser": reg},
                            {TAG_TEACHER: str(teacher)}, (teacher, mode, reg)) for name, teacher, mode, reg in rows]

    def train_variant(self, settings: Settings, prepared: Prepared, variant: GridVariant, checkpoints,
                      resume: bool, on_epoch: OnEpoch, run) -> tuple[Trained, VariantOutcome]:
        p, test_set = settings.east, prepared.sets[TEST]
        teacher, mode, regulariser = variant.spec
        if mode == "probe":
            probe = prepared.extra["probes"][teacher]
            trained = Trained.unfitted(probe)
            n_params = int(probe.weight.size + probe.bias.size)
            probs, ms, state = probe.probs(test_set.teachers[teacher].embeddings), float("nan"), None
        else:
            trained = self._fit(settings, prepared, mode, teacher, checkpoints, resume, on_epoch, run, regulariser)
            student = trained.model
            n_params = sum(x.numel() for x in student.parameters())
            probs = predict_student(student, test_set.frames, batch_size=p.batch_size, precision=p.precision)
            ms = inference_ms_per_clip(student, test_set.frames[:32], batch_size=1)
            state = student.state_dict()
        test, per_class = score(probs, test_set.labels.numpy(), prepared.classes, p.threshold)
        if p.task == "instruments":  # beside ours, the reference's OpenMIC evaluation (hard labels, F1 at > 0.4)
            test |= reference_openmic_scores(probs, test_set.labels.numpy())
        result = trained.result
        row = {"variant": variant.name, "teacher": teacher or "", "mode": mode, "params": n_params,
               "best_epoch": result.best_epoch, "valid_mAP": result.best_valid.get("mAP", np.nan),
               "test_mAP": test["mAP"], "test_ROC_AUC": test["ROC_AUC"], "test_F1_macro": test["F1_macro"],
               "test_F1_openmic": test["F1_openmic"], **{f"test_{k}": test.get(k, np.nan) for k in REFERENCE_SCORES},
               "inference_ms_per_clip": ms, "train_seconds": trained.seconds}
        console.print(f"{variant.name}: test mAP {test['mAP']:.3f}, ROC-AUC {test['ROC_AUC']:.3f}, "
                      f"{n_params:,} parameters")
        metrics = {f"test_{k}": v for k, v in test.items()} | {"params_trainable": n_params,
                                                               "inference_ms_per_clip": ms}
        return trained, VariantOutcome(row, per_class, metrics, state, "student_state.pt")

    def grid_summary(self, settings: Settings, grid: str, rows: list[dict], per_class: dict[str, dict]
                     ) -> tuple[pd.DataFrame, str, dict[str, Any]]:
        table = pd.DataFrame(rows, columns=EAST_COLUMNS)
        figure = metric_bars(table, "variant", ("test_mAP", "test_ROC_AUC"),
                             f"EAsT comparison ({settings.east.student}), test split")
        return table, "east_summary", {"plots/east_comparison.png": figure}


EAST = East()
