"""The EAsT steps (`mirops train east`): teacher embeddings through the cache, one student, or the paper's grid.

Kept apart from `mirops.steps` (which it builds on: data, audit gate, checkpoints, MLflow runs) so each
family's glue stays readable. The training itself is `mirops.train.east`.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mirops.config import Settings
from mirops.data.manifest import read_manifest
from mirops.steps import (
    _audit_outcome,
    _cache,
    _checkpoints,
    _fit_logged,
    _log_figure,
    _split,
    clip_loader,
    console,
    current_version,
    log_summary_table,
    split_frames,
    write_grid_summary,
)

SPLITS = ("train", "valid", "test")
GRID_MODES = ("student", "probe", "kd", "east", "kd+east")  # the paper's comparison, per teacher


def teacher_source(settings: Settings, name: str) -> str | None:
    return settings.east.teacher_sources.get(name)


@functools.cache
def _teacher(name: str, source: str | None):
    from mirops.models.teachers import build_teacher

    return build_teacher(name, source)


def teacher_key(settings: Settings, name: str) -> dict[str, Any]:
    """What a cached teacher sequence depends on besides the audio: the teacher, its weights, the crop."""
    source = teacher_source(settings, name)
    if source and Path(source).is_file():  # a weights file: its content, not its path, names it
        from mirops.data.cache import file_digest

        source = file_digest(Path(source))
    return {"teacher": name, "source": source, "seconds": settings.east.clip_seconds, "crop": settings.ingest.crop,
            "v": 1}


def teacher_sequences(settings: Settings, name: str, paths: list[str], cache=None):
    """Teacher embedding sequences [T, D] of clips of data/ (16 kHz, cropped like the student's), computed
    once and cached by content; returns (ClipResults, hop_s). Precomputed teachers read their own files."""
    import torch

    from mirops.features.clips import ClipResults, per_clip
    from mirops.models.teachers import AudioTeacher

    teacher = _teacher(name, teacher_source(settings, name))
    if not isinstance(teacher, AudioTeacher):  # already on disk, one .npy per clip id
        df, _ = read_manifest(settings.data_dir)
        ids = dict(zip(df["path"], df["clip_id"], strict=True))
        out = ClipResults()
        for rel in paths:
            out.paths.append(rel)
            out.arrays.append(teacher.teach(clip_ids=[ids[rel]]).embeddings[0].numpy())
        return out, teacher.hop_s

    def compute(wave: np.ndarray) -> np.ndarray:
        return teacher.teach(audio=torch.from_numpy(wave)[None]).embeddings[0].float().numpy()

    loader = clip_loader(settings, settings.data_dir, settings.east.clip_seconds, cache)
    return per_clip(loader, paths, "teacher", teacher_key(settings, name), compute), teacher.hop_s


def precompute_teacher(settings: Settings, name: str, paths: list[str]) -> dict[str, Any]:
    """One mapped task of the precompute flow: fill the cache with `name`'s sequences of `paths`."""
    cache = _cache(settings)
    done, _ = teacher_sequences(settings, name, paths, cache)
    return {"teacher": name, "clips": len(paths), "ok": len(done.paths), "cache_hits": cache.hits,
            "cache_misses": cache.misses, "failed": {p: e.reason for p, e in done.failed.items()}}


def east_sets(settings: Settings, frontend, teachers: list[str]) -> tuple[dict, dict, int]:
    """Per split: the student's frames, labels and every teacher's sequences ({split: EastSet}), the rows
    kept and the clips skipped as unusable."""
    import torch

    from mirops.data.manifest import label_matrix
    from mirops.train.east import EastSet, TeacherCache

    df, spec = read_manifest(settings.data_dir)
    p = settings.east
    sets, parts, skipped = {}, {}, 0
    for s in SPLITS:
        part = _split(df, s, p.max_clips if s != "test" else None)
        frames, kept, n_bad = split_frames(settings, part, frontend, f"{s} split", seconds=p.clip_seconds)
        caches = {}
        for name in teachers:
            seqs, hop = teacher_sequences(settings, name, list(kept["path"]))
            if seqs.failed:
                raise ValueError(f"teacher {name} could not embed {len(seqs.failed)} clips of the {s} split; "
                                 f"first: {next(iter(seqs.failed.values()))}")
            caches[name] = TeacherCache(torch.from_numpy(np.stack(seqs.arrays)), hop)
        sets[s] = EastSet(torch.from_numpy(frames), torch.from_numpy(label_matrix(kept, spec)), caches)
        parts[s], skipped = kept, skipped + n_bad
    return sets, parts, skipped


def _student(settings: Settings, classes: list[str]):
    import torch

    from mirops.models.students import build_student

    torch.manual_seed(settings.seed)
    student = build_student(settings.east.student, len(classes), **settings.east.student_options)
    student.classes = list(classes)  # what a served model answers with (`mirops predict`, evaluate)
    return student


def _with_probe_logits(sets: dict, probes: dict) -> dict:
    """KD targets: each teacher's probe logits on every split."""
    out = {}
    for split, data in sets.items():
        for name, probe in probes.items():
            data = data.with_teacher_logits(name, probe.logits(data.teachers[name].embeddings))
        out[split] = data
    return out


def _east_params(settings: Settings, extra: dict[str, Any]) -> dict[str, Any]:
    return {f"east.{k}": v for k, v in settings.east.model_dump().items()} | {"seed": settings.seed} | extra


def _fit_one(settings: Settings, sets: dict, classes: list[str], mode: str, teacher: str | None, checkpoints,
             resume: bool, what: str):
    """Train one student in the active MLflow run; returns (student, FitResult, seconds)."""
    import mlflow

    from mirops.train.east import effective_recipe, fit_student
    from mirops.train.reprogram import resolve_device

    p = settings.east
    student = _student(settings, classes).to(resolve_device(p.device))
    mlflow.log_params({f"recipe.{k}": v for k, v in effective_recipe(p, mode, teacher).items()})
    result, seconds = _fit_logged(
        lambda on_epoch: fit_student(student, sets["train"], sets["valid"], p, settings.seed, mode=mode,
                                     teacher=teacher, on_epoch=on_epoch, checkpoints=checkpoints, resume=resume),
        p.epochs, checkpoints, what)
    return student, result, seconds


def _test_row(student_or_probe, sets: dict, classes: list[str], settings: Settings, teacher: str | None,
              mode: str) -> tuple[dict, dict, float]:
    from mirops.train.east import inference_ms_per_clip, predict_student
    from mirops.train.metrics import evaluate_probs

    p, test = settings.east, sets["test"]
    if mode == "probe":
        probs, ms = student_or_probe.probs(test.teachers[teacher].embeddings), float("nan")
    else:
        probs = predict_student(student_or_probe, test.frames, batch_size=p.batch_size, precision=p.precision)
        ms = inference_ms_per_clip(student_or_probe, test.frames[:32], batch_size=1)
    summary, per_class = evaluate_probs(probs, test.labels.numpy(), classes, p.threshold)
    return summary, per_class, ms


def train_east(settings: Settings, dataset_version: str | None = None, audit_run_id: str | None = None,
               resume: bool = False) -> str:
    """Train the EAsT student `east` describes (mode `east.mode`, the first of `east.teachers`) and log it as a
    model; returns the MLflow run id (also in artifacts/train/east-run.json)."""
    import mlflow

    from mirops.registry import models, tracking

    p = settings.east
    teacher = p.teachers[0] if p.teachers else None
    if teacher is None and p.mode != "student":
        raise ValueError(f"east.mode {p.mode} needs a teacher: set east.teachers (e.g. [yamnet])")
    dataset_version = dataset_version or current_version(settings)
    audit_tags = _audit_outcome(settings, dataset_version, audit_run_id)
    _, spec = read_manifest(settings.data_dir)
    sets, parts, skipped = east_sets(settings, _student(settings, spec.classes).frontend.eval(),
                                     [teacher] if teacher else [])
    if p.mode in ("kd", "kd+east"):
        from mirops.train.east import fit_probe

        probe = fit_probe(sets["train"].teachers[teacher].embeddings, sets["train"].labels, p.threshold, p.probe_c)
        sets = _with_probe_logits(sets, {teacher: probe})
    name = f"east-{p.student}-{p.mode}-{teacher}"
    checkpoints = _checkpoints(settings, name, dataset_version, classes=spec.classes, params=p)
    meta = checkpoints.begin(resume)
    if meta.get("finished"):
        console.print(f"[bold]train east[/] {name}: this configuration finished in run {meta['run_id']}")
        return meta["run_id"]
    reopen = checkpoints.run_to_reopen()
    with tracking.run(settings, name, "train", dataset_version, run_id=reopen) as active:
        if reopen is None:
            mlflow.log_params(_east_params(settings, {"family": "east", "classes": ",".join(spec.classes)}
                                           | {f"{s}_clips": len(parts[s]) for s in parts}))
            mlflow.set_tags(audit_tags | {"mirops.family": "east", "mirops.teacher": str(teacher)})
        checkpoints.write_meta(run_id=active.info.run_id)
        student, result, _ = _fit_one(settings, sets, spec.classes, p.mode, teacher, checkpoints, resume, name)
        n_params = sum(x.numel() for x in student.parameters())  # the whole student trains
        mlflow.log_metrics({"params_trainable": n_params, "params_total": n_params, "clips_skipped": skipped})
        # What evaluation crops to, what `mirops predict` windows by, and its default threshold.
        student.clip_seconds, student.threshold = p.clip_seconds, p.threshold
        model_uri = models.log_model(student.cpu(), len(spec.classes), student.sample_rate)
        run_id = active.info.run_id
    checkpoints.write_meta(finished=True)
    tracking.write_json(settings.artifacts_dir / "train" / "east-run.json",
                        {"run_id": run_id, "model_uri": model_uri, "dataset_version": dataset_version})
    console.print(f"[bold]train east[/] run {run_id}: {p.student} ({p.mode}, teacher {teacher}), best epoch "
                  f"{result.best_epoch}, valid mAP {result.best_valid.get('mAP', float('nan')):.3f}")
    return run_id


EAST_COLUMNS = ["variant", "teacher", "mode", "params", "best_epoch", "valid_mAP", "test_mAP", "test_ROC_AUC",
                "test_F1_macro", "test_F1_openmic", "inference_ms_per_clip", "train_seconds"]


def train_east_grid(settings: Settings, grid: str = "paper", dataset_version: str | None = None,
                    audit_run_id: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Ding & Lerch's comparison: the student alone, then per teacher the teacher + logistic regression probe,
    KD, EAsT and KD + EAsT; one MLflow parent run, a child per variant, a summary table and a bar chart.
    `resume` skips finished variants and resumes the interrupted one."""
    import mlflow
    import torch

    from mirops import plots
    from mirops.registry import tracking
    from mirops.train.east import fit_probe

    if grid != "paper":
        raise ValueError(f"unknown grid {grid!r}; choose one of ['paper']")
    p = settings.east
    dataset_version = dataset_version or current_version(settings)
    audit_tags = _audit_outcome(settings, dataset_version, audit_run_id)
    _, spec = read_manifest(settings.data_dir)
    sets, parts, skipped = east_sets(settings, _student(settings, spec.classes).frontend.eval(), p.teachers)
    probes = {t: fit_probe(sets["train"].teachers[t].embeddings, sets["train"].labels, p.threshold, p.probe_c)
              for t in p.teachers}
    sets = _with_probe_logits(sets, probes)
    variants = [("student", None, "student")] + [(f"{mode}-{t}", t, mode) for t in p.teachers
                                                   for mode in GRID_MODES if mode != "student"]
    name = f"east-grid-{grid}-{p.student}"
    parent_ckpt = _checkpoints(settings, name, dataset_version, classes=spec.classes, params=p)
    reopen = parent_ckpt.begin(resume).get("run_id")
    rows = []
    with tracking.run(settings, name, "train-grid", dataset_version, run_id=reopen) as parent:
        if reopen is None:
            mlflow.log_params(_east_params(settings, {"grid": grid, "family": "east",
                                                      "variants": ",".join(v[0] for v in variants)}))
            mlflow.log_metrics({"clips_skipped": skipped} | {f"{s}_clips": len(parts[s]) for s in parts})
            mlflow.set_tags(audit_tags | {"mirops.grid": grid, "mirops.family": "east"})
        parent_ckpt.write_meta(run_id=parent.info.run_id)
        for variant, teacher, mode in variants:
            ckpt = _checkpoints(settings, f"{name}-{variant}", dataset_version, classes=spec.classes,
                                params=p, variant=variant)
            done = ckpt.begin(resume)
            if done.get("finished"):
                console.print(f"{variant}: finished in an earlier run ({done['run_id']}), not retrained")
                rows.append(done["row"])
                continue
            with tracking.run(settings, variant, "train", dataset_version, nested=True,
                              run_id=ckpt.run_to_reopen()) as child:
                mlflow.set_tags({"mirops.grid": grid, "mirops.variant": variant, "mirops.family": "east",
                                 "mirops.parent_run_id": parent.info.run_id, "mirops.teacher": str(teacher)})
                ckpt.write_meta(run_id=child.info.run_id)
                if mode == "probe":
                    model, best_epoch, valid, seconds = probes[teacher], 0, {}, 0.0
                    n_params = int(model.weight.size + model.bias.size)
                else:
                    model, result, seconds = _fit_one(settings, sets, spec.classes, mode, teacher, ckpt, resume,
                                                      variant)
                    best_epoch, valid = result.best_epoch, result.best_valid
                    n_params = sum(x.numel() for x in model.parameters())
                    with tempfile.TemporaryDirectory() as tmp:
                        torch.save(model.state_dict(), Path(tmp) / "student_state.pt")
                        mlflow.log_artifact(str(Path(tmp) / "student_state.pt"))
                test, per_class, ms = _test_row(model, sets, spec.classes, settings, teacher, mode)
                mlflow.log_metrics({f"test_{k}": v for k, v in test.items() if np.isfinite(v)}
                                   | {"params_trainable": n_params}
                                   | ({"inference_ms_per_clip": ms} if np.isfinite(ms) else {}))
                mlflow.log_dict(per_class, "test_per_class.json")
            row = {"variant": variant, "teacher": teacher or "", "mode": mode, "params": n_params,
                   "best_epoch": best_epoch, "valid_mAP": valid.get("mAP", np.nan), "test_mAP": test["mAP"],
                   "test_ROC_AUC": test["ROC_AUC"], "test_F1_macro": test["F1_macro"],
                   "test_F1_openmic": test["F1_openmic"], "inference_ms_per_clip": ms, "train_seconds": seconds}
            ckpt.write_meta(finished=True, row=row)
            rows.append(row)
            console.print(f"{variant}: test mAP {test['mAP']:.3f}, ROC-AUC {test['ROC_AUC']:.3f}, "
                          f"{n_params:,} parameters")
        table = pd.DataFrame(rows, columns=EAST_COLUMNS)
        markdown = log_summary_table(table, "east_summary")
        _log_figure(plots.metric_bars(table, "variant", ("test_mAP", "test_ROC_AUC"),
                                      f"EAsT comparison ({p.student}), test split"), "plots/east_comparison.png")
        parent_id = parent.info.run_id
    return write_grid_summary(settings, f"east-grid-{grid}", parent_id, grid, dataset_version, table, markdown)
