import numpy as np
import pandas as pd
import pytest

from mirops.data.manifest import LabelSpec, ManifestError, read_manifest, write_manifest

SPEC = LabelSpec(classes=["piano", "drums"])


def manifest(**changes) -> pd.DataFrame:
    df = pd.DataFrame({
        "clip_id": ["a", "b", "c"], "path": ["audio/a.wav", "audio/b.wav", "audio/c.wav"],
        "split": ["train", "valid", "test"], "group": ["g1", "g2", "g3"], "duration_s": [10.0] * 3,
        "sample_rate": [16000] * 3, "label:piano": [1.0, np.nan, 0.2], "label:drums": [0.0, 0.9, np.nan],
    })
    for column, (row, value) in changes.items():
        df.loc[row, column] = value
    return df


def test_round_trip_keeps_missing_labels_missing(tmp_path):
    write_manifest(tmp_path, manifest(), SPEC)
    df, spec = read_manifest(tmp_path)
    assert spec.classes == ["piano", "drums"]
    assert np.isnan(df.loc[1, "label:piano"]) and df.loc[0, "label:piano"] == 1.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"clip_id": (2, "a")}, "row 2: duplicate clip_id 'a'"),
        ({"label:drums": (1, 1.5)}, "row 1 (b): label:drums=1.5 outside [0, 1]"),
        ({"path": (0, "../escape.wav")}, "row 0 (a): path '../escape.wav' must be relative"),
        ({"path": (2, "/abs/c.wav")}, "row 2 (c): path '/abs/c.wav' must be relative"),
        ({"split": (1, "dev")}, "row 1 (b): split 'dev'"),
    ],
)
def test_bad_rows_are_named(tmp_path, changes, message):
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        write_manifest(tmp_path, manifest(**changes), SPEC)
    assert not (tmp_path / "manifest.parquet").exists()  # nothing half-written


def test_missing_and_unknown_columns(tmp_path):
    with pytest.raises(ManifestError, match="missing columns"):
        write_manifest(tmp_path, manifest().drop(columns=["group"]), SPEC)
    extra = manifest().assign(**{"label:mandolin": 0.0})
    with pytest.raises(ManifestError, match="label:mandolin"):
        write_manifest(tmp_path, extra, SPEC)
