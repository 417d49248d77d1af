"""Any class set: a folder import whose classes are outside OpenMIC (bassoon, french horn) trains the paper grid
with the fixed AudioSet map skipped and the reason stated, `reprogram.audioset_labels` gives that map its labels
(display names or indices, several per class), and a misspelt label is an error naming the nearest valid one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from mlflow import MlflowClient

from mirops.cli import main
from mirops.config import Settings
from mirops.data.dataset import open_version
from mirops.families.reprogram import REPROGRAMMING
from mirops.lineage import TAG_SKIPPED
from mirops.models.yamnet import yamnet_class_names
from mirops.registry import tracking
from tests.conftest import make_project

SR = 16000
CLASSES = ["bassoon", "french_horn"]
TRAINED = ["backbone-ln-linear", "noise-backbone-fc", "cnn-only", "unet-only", "cnn-backbone-fc", "unet-backbone-fc"]
# (bassoon, french_horn) of each clip of a split: every split has positives and negatives of both classes.
PATTERN = [(1, 0), (0, 1), (1, 1), (0, 0)]
SPLITS = {"train": 2, "valid": 1, "test": 1}  # sessions of four clips each
PARAMS = {"seed": 3, "audit": {"min_positives_per_class": 1},
          "reprogram": {"epochs": 1, "batch_size": 8, "clip_seconds": 1.0, "patience": None}}
USER_MAP = {"bassoon": ["Wind instrument, woodwind instrument"], "french_horn": ["French horn", 180]}


def clip(bassoon: int, horn: int, seed: int) -> np.ndarray:
    """A low reed-like tone for the bassoon, a mid one for the horn, a little noise always."""
    t = np.arange(SR) / SR
    rng = np.random.default_rng(seed)
    wave = 0.01 * rng.standard_normal(t.size)
    if bassoon:
        wave += sum(0.2 / k * np.sin(2 * np.pi * 98.0 * k * t) for k in range(1, 6))
    if horn:
        wave += 0.3 * np.sin(2 * np.pi * 349.2 * t) + 0.1 * np.sin(2 * np.pi * 698.4 * t)
    return wave.astype(np.float32)


def write_params(root: Path, **reprogram) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["reprogram"].update(reprogram)
    path.write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def horn_project(tmp_path_factory) -> Path:
    """A folder of audio + CSV with two classes OpenMIC lacks, imported and versioned through the CLI."""
    base = tmp_path_factory.mktemp("any-classes")
    audio, lines, n = base / "audio", ["path,bassoon,french_horn,split,group"], 0
    for split, sessions in SPLITS.items():
        for session in range(sessions):
            for bassoon, horn in PATTERN:
                path = audio / f"{split}{session}" / f"take{n}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, clip(bassoon, horn, n), SR)
                lines.append(f"{path.relative_to(audio)},{bassoon},{horn},{split},{split}{session}")
                n += 1
    (base / "labels.csv").write_text("\n".join(lines) + "\n")
    root = make_project(base / "project", PARAMS)
    main(["data", "import", "folder", str(audio), "--labels", str(base / "labels.csv"), "--root", str(root)])
    main(["data", "version", "--no-commit", "--root", str(root)])
    return root


def train_grid(root: Path, capsys) -> tuple[dict, str]:
    capsys.readouterr()
    main(["train", "reprogram", "--grid", "paper", "--json", "--root", str(root)])
    out = capsys.readouterr()
    return json.loads(out.out), out.err


def test_paper_grid_skips_the_fixed_map_of_classes_it_has_no_labels_for(horn_project, capsys):
    summary, err = train_grid(horn_project, capsys)
    rows = {row["variant"]: row for row in summary["rows"]}
    assert list(rows) == ["backbone-map", *TRAINED]  # the skipped variant keeps its line in the table
    reason = summary["skipped"]["backbone-map"]
    assert "bassoon, french_horn" in reason and "reprogram.audioset_labels" in reason
    assert rows["backbone-map"]["skipped"] == reason and rows["backbone-map"]["test_mAP"] is None
    assert "warning" in err and "variant backbone-map skipped" in err
    for name in TRAINED:
        assert rows[name]["skipped"] == "" and 0.0 <= rows[name]["test_mAP"] <= 1.0
        assert rows[name]["trainable_params"] > 0
    table = Path(summary["summary"]).read_text()
    assert "| backbone-map" in table and "OpenMIC map): set `reprogram.audioset_labels`" in table

    tracking.setup(Settings.load(horn_project))
    client = MlflowClient()
    parent = client.get_run(summary["run_id"])
    assert parent.data.tags[f"{TAG_SKIPPED}.backbone-map"] == reason
    assert parent.data.params["variants_skipped"] == "backbone-map"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{summary['run_id']}'")
    assert sorted(run.info.run_name for run in children) == sorted(TRAINED)

    # one fixed-map model, not a grid: still an error, and it names the setting that fixes it
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "reprogram", "--set", "reprogram.transform=none", "--set", "reprogram.mapping=audioset",
              "--root", str(horn_project)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'bassoon', 'french_horn'" in err and "reprogram.audioset_labels" in err and "'French horn'" in err


def test_audioset_labels_build_the_fixed_map_many_to_one(horn_project, capsys):
    write_params(horn_project, audioset_labels=USER_MAP)
    try:
        settings = Settings.load(horn_project)
        with open_version(settings.root) as ds:
            prepared = REPROGRAMMING.prepare(settings, ds, grid="paper")
        fixed_map = REPROGRAMMING.grid_variants(settings, "paper")[0]
        assert fixed_map.spec.mapping == "audioset"
        assert REPROGRAMMING.grid_skip_reason(settings, prepared, fixed_map) is None
        model = REPROGRAMMING.build(settings, prepared, "none", "audioset")
        names = yamnet_class_names()
        assert model.head.labels == {"bassoon": ["Wind instrument, woodwind instrument"],
                                     "french_horn": [names[180], "French horn"]}  # 180: "Brass instrument"
        logits = torch.randn(3, len(names))
        wind, horn, brass = (names.index(n) for n in ("Wind instrument, woodwind instrument", "French horn",
                                                      "Brass instrument"))
        out = model.head(logits)
        assert torch.equal(out[:, 0], logits[:, wind])
        assert torch.equal(out[:, 1], torch.maximum(logits[:, horn], logits[:, brass]))  # both labels count

        summary, err = train_grid(horn_project, capsys)
        rows = {row["variant"]: row for row in summary["rows"]}
        assert summary["skipped"] == {} and "variant backbone-map skipped" not in err
        assert list(rows) == ["backbone-map", *TRAINED] and "skipped" not in rows["backbone-map"]
        assert rows["backbone-map"]["trainable_params"] == 0 and 0.0 <= rows["backbone-map"]["test_mAP"] <= 1.0
    finally:
        write_params(horn_project, audioset_labels=None)


@pytest.mark.parametrize(("labels", "message"), [
    ({"french_horn": ["French hron"]}, r"class 'french_horn'.*'French hron'.*nearest valid name: 'French horn'"),
    ({"french_horn": ["French horn", 5000]}, r"class 'french_horn': AudioSet index 5000 is out of range.*0\.\.520"),
])
def test_a_bad_audioset_label_stops_before_training_naming_class_and_nearest_name(horn_project, capsys, labels,
                                                                                  message):
    write_params(horn_project, audioset_labels=labels)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "reprogram", "--grid", "paper", "--root", str(horn_project)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "reprogram.audioset_labels" in err
        assert re.search(message, err), err
    finally:
        write_params(horn_project, audioset_labels=None)
