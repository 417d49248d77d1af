"""The paper's ablation as one command, and a killed training run resumed to the same result, through the CLI."""

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mirops import lineage
from mirops.config import Settings
from mirops.features.logmel import YamnetLogMel
from mirops.registry import tracking
from tests.conftest import needs_soundfonts
from tests.test_cli import BIN, mirops

CLASSES = 4  # TINY's demo classes
PAPER_VARIANTS = ["backbone-map", "backbone-ln-linear", "noise-backbone-fc", "cnn-only", "unet-only",
                  "cnn-backbone-fc", "unet-backbone-fc"]


def head(dim: int) -> int:
    """LayerNorm + Linear on a `dim`-d embedding (docs/methods.md §1.5: 16,916 for 768 → 20)."""
    return 2 * dim + dim * CLASSES + CLASSES


def grid_runs(root: Path, parent_id: str) -> dict[str, object]:
    tracking.setup(Settings.load(root))
    client = MlflowClient()
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return {"parent": parent, "children": {run.info.run_name: run for run in children}, "client": client}


@needs_soundfonts
def test_paper_grid_on_yamnet_logs_a_parent_run_with_a_child_per_variant(demo_project):
    done = mirops(demo_project, "train", "reprogram", "--grid", "paper", "--set", "reprogram.epochs=2", "--json")
    summary = json.loads(done.stdout)
    rows = {row["variant"]: row for row in summary["rows"]}
    assert list(rows) == PAPER_VARIANTS
    # trainable parameters as the paper's table counts them: transform + mapping, never the backbone
    assert rows["backbone-map"]["trainable_params"] == 0  # the fixed AudioSet map has nothing to train
    assert rows["backbone-ln-linear"]["trainable_params"] == head(1024)  # AST-BS: the head alone
    import torch

    seconds = Settings.load(demo_project).reprogram.clip_seconds
    frames = YamnetLogMel()(torch.zeros(1, int(seconds * 16000))).shape[1]
    padded = frames + (-frames) % 8  # the length the backbone pads its input to
    assert rows["noise-backbone-fc"]["trainable_params"] == padded * 64 + head(1024)  # one delta per log-mel bin
    assert rows["cnn-only"]["trainable_params"] == 20 + head(2 * 64)  # pooled 64-band log-mel
    assert rows["unet-only"]["trainable_params"] == 1285 + head(2 * 64)
    assert rows["cnn-backbone-fc"]["trainable_params"] == 20 + head(1024)
    assert rows["unet-backbone-fc"]["trainable_params"] == 1285 + head(1024)
    for row in rows.values():
        assert 0.0 <= row["test_mAP"] <= 1.0 and 0.0 <= row["test_F1_openmic"] <= 1.0
    # the paper's side of each row, with where its number comes from
    assert [(round(rows[v]["paper_F1_openmic"], 4), rows[v]["paper_params_M"]) for v in PAPER_VARIANTS[1:]] == [
        (0.6203, 0.017), (0.68, 0.148), (0.6077, 0.017), (0.6273, None), (0.7808, 0.017), (0.816, 0.018)]
    assert [rows[v]["paper_source"] for v in PAPER_VARIANTS] == ["ours", "table", "figure median"] + ["table"] * 4
    assert rows["backbone-map"]["paper_F1_openmic"] is None and rows["backbone-map"]["paper_params_M"] == 0.0

    runs = grid_runs(demo_project, summary["run_id"])
    assert sorted(runs["children"]) == sorted(PAPER_VARIANTS)
    parent_files = {f.path for f in runs["client"].list_artifacts(summary["run_id"])}
    assert {"grid_summary.md", "grid_summary.csv", "plots"} <= parent_files
    assert [f.path for f in runs["client"].list_artifacts(summary["run_id"], "plots")] == [
        "plots/grid_per_class_f1.png"]
    table = runs["client"].download_artifacts(summary["run_id"], "grid_summary.md")
    assert "| unet-backbone-fc   | U-Net + backbone + FC (AST-URP)" in Path(table).read_text()
    for name, child in runs["children"].items():
        assert child.data.metrics["params_trainable"] == rows[name]["trainable_params"]
        assert child.data.metrics["test_mAP"] == pytest.approx(rows[name]["test_mAP"])
        assert child.data.tags[lineage.TAG_DATASET_VERSION] == summary["dataset_version"]
    trained = runs["children"]["unet-backbone-fc"]
    assert "valid_mAP" in trained.data.metrics and "best_valid_mAP" in trained.data.metrics
    assert "trainable_state.pt" in {f.path for f in runs["client"].list_artifacts(trained.info.run_id)}

    again = json.loads(mirops(demo_project, "train", "reprogram", "--grid", "paper", "--resume",
                              "--set", "reprogram.epochs=2", "--json").stdout)
    assert again["run_id"] == summary["run_id"] and again["rows"] == summary["rows"]  # nothing retrained
    assert len(grid_runs(demo_project, summary["run_id"])["children"]) == len(PAPER_VARIANTS)


@needs_soundfonts
def test_the_reference_preset_trains_the_reference_unet_on_the_whole_train_split(demo_project):
    import pandas as pd

    done = mirops(demo_project, "train", "reprogram", "--preset", "reference", "--set", "reprogram.epochs=2",
                  "--json")
    run_id = json.loads(done.stdout)["run_id"]
    tracking.setup(Settings.load(demo_project))
    run = MlflowClient().get_run(run_id)
    manifest = pd.read_parquet(demo_project / "data" / "manifest.parquet")
    counts = manifest["split"].value_counts()
    params = run.data.params
    assert params["reprogram.final_relu"] == "True" and params["reprogram.select"] == "last"
    assert int(params["train_clips"]) == counts["train"] + counts["valid"] and int(params["valid_clips"]) == 0
    assert run.data.metrics["best_epoch"] == 2  # the last epoch, not one chosen on held-out clips
    assert not any(key.startswith("best_valid_") for key in run.data.metrics)
    assert "epoch 2 kept (no valid clips to choose with)" in " ".join(done.stderr.split())  # the console wraps


@needs_soundfonts
def test_a_killed_training_resumes_from_its_last_epoch_to_the_same_result(demo_project):
    args = ["train", "reprogram", "--set", "reprogram.epochs=4", "--set", "reprogram.patience=null"]
    straight = json.loads(mirops(demo_project, *args, "--json").stdout)["run_id"]
    folder = next((demo_project / "artifacts" / "train" / "checkpoints").glob("reprogram-yamnet-unet-linear-*"))
    shutil.rmtree(folder)  # so the checkpoints polled for below are the new run's

    killed = subprocess.Popen([str(BIN / "mirops"), *args, "--root", str(demo_project)], cwd=demo_project,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (folder / "epoch-001.pt").exists() and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    epochs_left = sorted(p.name for p in folder.glob("epoch-*.pt"))
    assert epochs_left and len(epochs_left) < 4, f"the run was not interrupted mid-way: {epochs_left}"
    killed_run = json.loads((folder / "meta.json").read_text())["run_id"]

    done = mirops(demo_project, *args, "--resume", "--json")
    resumed = json.loads(done.stdout)["run_id"]
    assert resumed == killed_run != straight and "resumed after epoch" in done.stderr
    tracking.setup(Settings.load(demo_project))
    client = MlflowClient()
    want, got = client.get_run(straight).data.metrics, client.get_run(resumed).data.metrics
    for key in ("best_epoch", "best_valid_mAP", "best_valid_ROC_AUC", "best_valid_F1_openmic"):
        assert got[key] == want[key], key
    history = [client.get_metric_history(run, "valid_mAP") for run in (straight, resumed)]
    assert [(m.step, m.value) for m in history[0]] == [(m.step, m.value) for m in history[1]]

    again = mirops(demo_project, *args, "--resume", "--json")  # a finished run has nothing to resume
    assert json.loads(again.stdout)["run_id"] == resumed and "nothing to resume" in again.stderr


@pytest.fixture(scope="module")
def tiny_audioset_ast(tmp_path_factory) -> Path:
    """A random 2-layer AST with the 527 AudioSet labels, so the fixed label map resolves as with the real one."""
    import torch
    from transformers import ASTConfig, ASTForAudioClassification

    from mirops.models.yamnet import yamnet_class_names

    torch.manual_seed(0)
    names = yamnet_class_names()
    config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    folder = tmp_path_factory.mktemp("tiny-audioset-ast")
    ASTForAudioClassification(config).save_pretrained(folder)
    return folder


@needs_soundfonts
def test_paper_grid_on_a_tiny_ast(demo_project, tiny_audioset_ast):
    done = mirops(demo_project, "train", "reprogram", "--grid", "paper", "--set", "reprogram.backbone=ast",
                  "--set", f"reprogram.backbone_source={tiny_audioset_ast}", "--set", "reprogram.epochs=1",
                  "--set", "reprogram.batch_size=4", "--set", "reprogram.freq_mask=24", "--json")
    rows = {row["variant"]: row for row in json.loads(done.stdout)["rows"]}
    assert list(rows) == PAPER_VARIANTS
    assert rows["backbone-map"]["trainable_params"] == 0
    assert rows["cnn-only"]["trainable_params"] == 20 + head(2 * 128)  # AST's 128-bin fbank, pooled
    assert rows["unet-backbone-fc"]["trainable_params"] == 1285 + head(32)  # the tiny AST's 32-d pooled tokens
    assert all(0.0 <= row["test_mAP"] <= 1.0 for row in rows.values())
