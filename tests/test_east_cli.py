"""EAsT through the CLI: teacher embeddings precomputed once, the paper's comparison, a served student."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from mirops.config import Settings
from mirops.models.students import build_student
from mirops.registry import models, tracking
from tests.conftest import needs_soundfonts
from tests.test_cli import mirops

# A small CP-ResNet on 3 s clips: the loop and the bookkeeping are what is under test, not the accuracy.
SMALL = ["--set", 'east.student_options={"rho": 2, "base_channels": 16}', "--set", "east.clip_seconds=3",
         "--set", "east.epochs=2"]
CLASSES = 4


def teacher_files(root: Path) -> set[Path]:
    return set((root / "artifacts" / "cache" / "teacher").rglob("*.npy"))


@needs_soundfonts
def test_teacher_embeddings_are_precomputed_as_mapped_tasks_then_reused(demo_project):
    done = json.loads(mirops(demo_project, "data", "precompute", "--teachers", "yamnet", *SMALL[2:4],
                             "--json").stdout)
    assert done["teacher_ok"] == {"yamnet": done["clips"]} and done["ok"] == done["clips"] > 0
    cached = teacher_files(demo_project)
    assert len(cached) == done["clips"]
    one = np.load(next(iter(cached)))
    assert one.shape == (6, 1024)  # 3 s = 300 frames: 0.96 s patches every 0.48 s, the last one padded

    run_id = json.loads(mirops(demo_project, "train", "east", *SMALL, "--json").stdout)["run_id"]
    assert teacher_files(demo_project) == cached  # training read them, computed nothing new

    tracking.setup(Settings.load(demo_project))
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["mirops.family"] == "east" and run.data.params["east.mode"] == "east"
    assert run.data.params["recipe.lam"] == "0.8"  # the reference's lambda for instruments
    student = models.load_model(models.model_uri_of_run(run_id))
    assert run.data.metrics["params_trainable"] == sum(
        p.numel() for p in build_student("cp_resnet", CLASSES, rho=2, base_channels=16).parameters())
    with torch.no_grad():
        logits = student(torch.zeros(2, student.sample_rate * 3))
    assert logits.shape == (2, CLASSES)
    serving = models.serving_spec(models.model_uri_of_run(run_id))  # how it is fed, stored with the model
    assert list(serving.classes) == Settings.load(demo_project).demo.classes
    assert (serving.sample_rate, serving.clip_seconds) == (student.sample_rate, 3.0)


@needs_soundfonts
def test_ragged_precomputed_teacher_files_train(demo_project, tmp_path):
    """VGGish files extracted elsewhere, 29 or 30 frames per clip as real MTAT clips give: they train."""
    import pandas as pd

    folder = tmp_path / "vggish"
    folder.mkdir()
    rng = np.random.default_rng(0)
    clip_ids = pd.read_parquet(demo_project / "data" / "manifest.parquet")["clip_id"]
    for i, clip_id in enumerate(clip_ids):
        np.save(folder / f"{clip_id}.npy", rng.integers(0, 256, size=(29 + i % 2, 128)).astype(np.uint8))
    done = mirops(demo_project, "train", "east", *SMALL, "--set", "east.teachers=[\"vggish\"]",
                  "--set", f'east.teacher_sources={{"vggish": "{folder}"}}', "--set", "east.epochs=1", "--json")
    run_id = json.loads(done.stdout)["run_id"]
    tracking.setup(Settings.load(demo_project))
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["mirops.teacher"] == "vggish" and "valid_dcor" in run.data.metrics


@needs_soundfonts
def test_east_paper_grid_compares_student_probe_kd_east(demo_project):
    summary = json.loads(mirops(demo_project, "train", "east", "--grid", "paper", *SMALL, "--set", "east.probe=sgd",
                                "--set", "east.grid_cosine=true", "--json").stdout)
    rows = {row["variant"]: row for row in summary["rows"]}
    assert list(rows) == ["student", "probe-yamnet", "kd-yamnet", "east-yamnet", "kd+east-yamnet", "east-cdd-yamnet"]
    # the reference's OpenMIC evaluation (hard labels, relevance 0.5 masked, F1 at > 0.4) beside ours
    assert all(0.0 <= row["test_ref_mAP"] <= 1.0 and 0.0 <= row["test_ref_F1_openmic"] <= 1.0 for row in rows.values())
    assert rows["probe-yamnet"]["params"] == 1024 * CLASSES + CLASSES  # logistic regression on the embedding
    students = [rows[v] for v in ("student", "kd-yamnet", "east-yamnet", "kd+east-yamnet", "east-cdd-yamnet")]
    assert len({row["params"] for row in students}) == 1  # the same student, four ways of training it
    assert all(row["inference_ms_per_clip"] > 0 for row in students)
    assert all(0.0 <= row["test_mAP"] <= 1.0 for row in rows.values())

    tracking.setup(Settings.load(demo_project))
    client = MlflowClient()
    parent = client.get_run(summary["run_id"])
    files = {f.path for f in client.list_artifacts(summary["run_id"])}
    assert {"east_summary.md", "east_summary.csv"} <= files
    assert [f.path for f in client.list_artifacts(summary["run_id"], "plots")] == ["plots/east_comparison.png"]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{summary['run_id']}'")
    assert sorted(run.info.run_name for run in children) == sorted(rows)
    east = next(run for run in children if run.info.run_name == "east-yamnet")
    assert "valid_dcor" in east.data.metrics and "train_east" in east.data.metrics  # the regulariser is logged
    cosine = next(run for run in children if run.info.run_name == "east-cdd-yamnet")
    assert cosine.data.params["east.regulariser"] == "cosine_distance_difference"
    assert "train_east" in cosine.data.metrics and "valid_dcor" not in cosine.data.metrics


@pytest.mark.parametrize("mode", ["kd", "east", "kd+east"])
def test_a_teacher_mode_without_a_teacher_is_refused_before_any_work(tmp_path, mode):
    from mirops.pipeline.train import train
    from tests.conftest import make_project

    root = make_project(tmp_path / "p", {"east": {"mode": mode, "teachers": []}})
    with pytest.raises(ValueError, match=re.escape(f"east.mode {mode} needs a teacher")):
        train(Settings.load(root), "east")


@needs_soundfonts
def test_a_paper_teacher_is_computed_in_project_from_its_official_checkpoint(demo_project, tmp_path):
    """PANNs CNN14 at full size, random weights in the official file layout: precompute embeds every clip at
    32 kHz into one 2048-d vector, and a student trains against it."""
    from mirops.models.teacher_nets.panns import CHECKPOINT_NAME, Cnn14

    torch.manual_seed(0)
    checkpoint = tmp_path / CHECKPOINT_NAME
    torch.save({"iteration": 0, "model": Cnn14().state_dict()}, checkpoint)
    teacher = ["--set", f'east.teacher_sources={{"panns": "{checkpoint}"}}', "--set", "east.clip_seconds=3"]
    before = teacher_files(demo_project)
    done = json.loads(mirops(demo_project, "data", "precompute", "--teachers", "panns", *teacher, "--json").stdout)
    assert done["teacher_ok"] == {"panns": done["clips"]}
    added = teacher_files(demo_project) - before
    assert len(added) == done["clips"] and np.load(next(iter(added))).shape == (1, 2048)

    run_id = json.loads(mirops(demo_project, "train", "east", *SMALL, *teacher, "--set", 'east.teachers=["panns"]',
                               "--set", "east.epochs=1", "--json").stdout)["run_id"]
    assert teacher_files(demo_project) - before == added  # training read the precomputed vectors
    tracking.setup(Settings.load(demo_project))
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["mirops.teacher"] == "panns" and run.data.params["recipe.lam"] == "0.9"  # §3.7
