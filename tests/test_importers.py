"""The three importers on small trees in each official layout, written here: real (tiny) audio, the real files'
quirks, broken clips that must end in the quarantine, bad label files that must fail naming the line, and a
failed import that must leave the existing dataset folder byte for byte as it was."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mirops.cli import main
from mirops.config import Settings
from mirops.data.importers import folder_table, import_folder, import_mtat, import_openmic, mtat_table, openmic_table
from mirops.data.importers.common import assign_splits, carve_valid
from mirops.data.manifest import ManifestError, read_manifest
from mirops.data.quarantine import read_quarantine

SR = 8000
CLASS_MAP = {"accordion": 0, "guitar": 1, "mallet_percussion": 2, "piano": 3, "voice": 4}


def tone(seconds: float, freq: float = 440.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_text(path: Path, lines: list[str], bom: bool = False, crlf: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("\r\n" if crlf else "\n").join(lines) + ("\r\n" if crlf else "\n")
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())


def settings(tmp_path: Path, **ingest) -> Settings:
    return Settings.load(tmp_path / "project", **{f"ingest__{k}": v for k, v in ingest.items()}, seed=5)


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- OpenMIC-2018

TRAIN_KEYS = ["000046_3840", "000135_30720", "000139_119040", "000190_72960", "000193_149760", "000194_166080",
              "000255_1920", "000256_0"]
TEST_KEYS = ["001039_61440", "001040_0"]
BROKEN = {"000256_0": "empty_file", "001040_0": "too_short", "000255_1920": "missing_file"}


def openmic_tree(root: Path, sep: str = ",", bom: bool = False, crlf: bool = False) -> Path:
    """The official layout: labels CSV, class-map.json, split01 partitions, audio/<key[:3]>/<key>.ogg."""
    rows = ["sample_key", "instrument", "relevance", "num_responses", "note"]  # 'note': an extra column
    lines = [sep.join(rows)]
    for i, key in enumerate(TRAIN_KEYS + TEST_KEYS):
        lines.append(sep.join([key, "piano", f"{0.1 * (i % 10):.5f}", "3", "x"]))
        if i % 2 == 0:
            lines.append(sep.join([key, "mallet_percussion", "0.85714", "7", ""]))
    write_text(root / "openmic-2018-aggregated-labels.csv", lines, bom, crlf)
    (root / "class-map.json").write_text(json.dumps(CLASS_MAP))
    write_text(root / "partitions" / "split01_train.csv", TRAIN_KEYS, bom, crlf)
    write_text(root / "partitions" / "split01_test.csv", TEST_KEYS, bom, crlf)
    for i, key in enumerate(TRAIN_KEYS + TEST_KEYS):
        path = root / "audio" / key[:3] / f"{key}.ogg"
        path.parent.mkdir(parents=True, exist_ok=True)
        if BROKEN.get(key) == "empty_file":
            path.write_bytes(b"")
        elif BROKEN.get(key) != "missing_file":
            sf.write(path, tone(2.0 if BROKEN.get(key) == "too_short" else 10.0, 220 + 30 * i), SR, format="OGG")
    return root


@pytest.fixture(scope="module")
def openmic_root(tmp_path_factory) -> Path:
    return openmic_tree(tmp_path_factory.mktemp("openmic"))


@pytest.mark.parametrize("quirks", [{"sep": ",", "bom": True, "crlf": True}, {"sep": "\t"}], ids=["bom-crlf", "tab"])
def test_openmic_table_reads_the_real_files_quirks(tmp_path, quirks):
    root = tmp_path / "om"
    root.mkdir()
    openmic_tree(root, **quirks)
    table = openmic_table(root, valid_fraction=0.3, seed=1)
    df = table.frame.set_index("clip_id")
    assert sorted(df.index) == sorted(TRAIN_KEYS + TEST_KEYS)
    assert df.loc["000135_30720", "label:piano"] == pytest.approx(0.1)
    assert df.loc["000046_3840", "label:mallet_percussion"] == pytest.approx(0.85714)
    assert np.isnan(df.loc["000135_30720", "label:mallet_percussion"])  # never annotated: missing, not negative
    assert df["label:guitar"].isna().all()
    assert df.loc["000046_3840", "responses:mallet_percussion"] == 7
    assert df.loc["000046_3840", "path"] == "audio/000/000046_3840.ogg"
    assert df.loc["000046_3840", "group"] == "000046"
    assert set(df.loc[TEST_KEYS, "split"]) == {"test"}
    assert set(df.loc[TRAIN_KEYS, "split"]) == {"train", "valid"} and (df["split"] == "valid").sum() >= 2
    assert table.spec.classes == list(CLASS_MAP) and table.spec.threshold == 0.5


def test_openmic_import_writes_the_contract_and_quarantines_bad_audio(tmp_path, openmic_root):
    out = tmp_path / "data"
    summary = import_openmic(openmic_root, out, settings(tmp_path))
    df, spec = read_manifest(out)
    quarantine = read_quarantine(out).set_index("clip_id")
    assert dict(quarantine["reason"]) == BROKEN
    assert summary.quarantined == 3 and summary.quarantine_reasons == {"empty_file": 1, "missing_file": 1,
                                                                       "too_short": 1}
    assert quarantine.loc["000256_0", "source"] == "audio/000/000256_0.ogg"
    assert len(df) == 7 and sum(summary.clips.values()) == 7
    assert (df["duration_s"].round(2) == 10.0).all() and (df["sample_rate"] == SR).all()
    assert all((out / p).is_file() for p in df["path"])
    good = out / "audio" / "000" / "000046_3840.ogg"
    assert good.stat().st_ino == (openmic_root / "audio" / "000" / "000046_3840.ogg").stat().st_ino  # hardlinked
    assert summary.linked == {"hardlink": 7}
    labels = json.loads((out / "labels.json").read_text())
    assert labels["source"] == "openmic-2018" and labels["import"]["seed"] == 5
    assert df.groupby("group")["split"].nunique().max() == 1


def test_copy_mode_copies(tmp_path, openmic_root):
    out = tmp_path / "data"
    summary = import_openmic(openmic_root, out, settings(tmp_path, link="copy"))
    copied = out / "audio" / "000" / "000046_3840.ogg"
    assert summary.linked == {"copy": 7}
    assert copied.stat().st_ino != (openmic_root / "audio" / "000" / "000046_3840.ogg").stat().st_ino


@pytest.mark.parametrize(("row", "message"), [
    ("000046_3840,banjo,0.5,3", r"line 3: instrument 'banjo' is not in class-map.json"),
    ("000046_3840,piano,1.5,3", r"line 3: relevance=1.5: outside \[0, 1\]"),
    ("000046_3840,piano,yes,3", r"line 3: relevance='yes': expected a number"),
    ("../../etc_1,piano,0.5,3", r"line 3: sample_key '../../etc_1'"),
])
def test_openmic_bad_label_rows_are_named(tmp_path, row, message):
    root = openmic_tree(tmp_path / "om", sep=",")
    csv = root / "openmic-2018-aggregated-labels.csv"
    lines = csv.read_text().splitlines()
    write_text(csv, [lines[0], lines[1], row, *lines[2:]])
    with pytest.raises(ManifestError, match=message):
        openmic_table(root, 0.2, 1)


def test_openmic_unannotated_and_unpartitioned_keys(tmp_path):
    root = openmic_tree(tmp_path / "om")
    csv = root / "openmic-2018-aggregated-labels.csv"
    lines = csv.read_text().splitlines()
    write_text(csv, [*lines, lines[1], "999999_0,piano,1.0,3"])  # a repeated identical row; a key in no partition
    write_text(root / "partitions" / "split01_train.csv", [*TRAIN_KEYS, "000777_960"])  # listed, never annotated
    table = openmic_table(root, 0.3, 1)
    split = dict(zip(table.frame["clip_id"], table.frame["split"], strict=True))
    assert split["000777_960"] == "unlabeled" and "999999_0" not in split
    assert table.excluded == {"labelled_but_in_no_partition": 1}


def test_openmic_missing_columns_and_conflicting_duplicates(tmp_path):
    root = openmic_tree(tmp_path / "om")
    csv = root / "openmic-2018-aggregated-labels.csv"
    lines = csv.read_text().splitlines()
    write_text(csv, [lines[0], *lines[1:], "000046_3840,piano,0.9,2"])
    with pytest.raises(ManifestError, match=r"has two different relevances \(also on line 2\)"):
        openmic_table(root, 0.2, 1)
    write_text(csv, ["sample_key,instrument,num_responses", "000046_3840,piano,3"])
    with pytest.raises(ManifestError, match=r"line 1: missing columns \['relevance'\]"):
        openmic_table(root, 0.2, 1)
    (root / "class-map.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing class-map.json"):
        openmic_table(root, 0.2, 1)


# ---------------------------------------------------------------- MagnaTagATune

TAGS = ["guitar", "classical", "slow", "techno", "no voice"]
MTAT_CLIPS = [  # clip_id, mp3_path, tags
    (2, "f/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-30-59.mp3", [1, 1, 1, 0, 0]),
    (6, "f/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-59-88.mp3", [0, 1, 1, 0, 1]),
    (10, "0/jackalopes-jacknuggets-05-ivan-30-59.mp3", [1, 0, 0, 1, 0]),
    (11, "0/jackalopes-jacknuggets-05-ivan-59-88.mp3", [1, 0, 1, 0, 0]),
    (15, "3/kitka-nectar-07-kaval-0-29.mp3", [1, 1, 0, 0, 0]),
    (20, "c/rocket_city_riot-last_of_the_pleasure_seekers-02-lock-0-29.mp3", [0, 1, 0, 1, 0]),
    (21, "c/rocket_city_riot-last_of_the_pleasure_seekers-02-lock-29-58.mp3", [1, 0, 1, 0, 0]),
    (30, "d/drop_trio-cezanne-03-wreck-117-146.mp3", [0, 0, 1, 0, 0]),
    (31, "e/zilla-egg-01-velvet_pony-0-29.mp3", [1, 1, 0, 0, 0]),
]
MTAT_BROKEN = {10: "truncated", 31: "undecodable"}


def mtat_tree(root: Path) -> Path:
    """annotations_final.csv as it ships (tab-separated, every field quoted) and the mp3 folders."""
    header = ["clip_id", *TAGS, "mp3_path"]
    lines = ["\t".join(f'"{h}"' for h in header)]
    for clip_id, path, tags in MTAT_CLIPS:
        lines.append("\t".join(f'"{v}"' for v in [clip_id, *tags, path]))
    write_text(root / "annotations_final.csv", lines)
    for clip_id, path, _ in MTAT_CLIPS:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if MTAT_BROKEN.get(clip_id) == "undecodable":
            target.write_text("<html>404 not found</html>")
            continue
        sf.write(target, tone(16.0, 200 + clip_id * 10), SR, format="MP3")
        if MTAT_BROKEN.get(clip_id) == "truncated":
            target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])
    return root


@pytest.fixture(scope="module")
def mtat_root(tmp_path_factory) -> Path:
    return mtat_tree(tmp_path_factory.mktemp("mtat"))


def test_mtat_directory_split_top_tags_and_songs(tmp_path, mtat_root):
    out = tmp_path / "data"
    summary = import_mtat(mtat_root, out, settings(tmp_path), split="directory", n_tags=3)
    df, spec = read_manifest(out)
    assert spec.classes == ["guitar", "classical", "slow"]  # by frequency over all clips (6, 5, 5: file order)
    assert spec.extra["import"]["split"] == "directory"
    by_id = df.set_index("clip_id")
    assert by_id.loc["2", "split"] == "test" and by_id.loc["15", "split"] == "train"
    assert by_id.loc["20", "split"] == "valid"
    song = "american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria"
    assert by_id.loc["2", "group"] == by_id.loc["6", "group"] == song
    assert by_id.loc["2", "path"] == f"audio/f/{song}-30-59.mp3"
    assert set(np.unique(df[["label:guitar", "label:classical", "label:slow"]])) == {0.0, 1.0}  # hard, complete
    assert by_id.loc["6", "label:slow"] == 1 and by_id.loc["6", "label:guitar"] == 0
    assert dict(read_quarantine(out).set_index("clip_id")["reason"]) == {str(k): v for k, v in MTAT_BROKEN.items()}
    assert summary.clips == {"train": 2, "valid": 2, "test": 3}


def test_mtat_cleaned_split_from_npy_and_from_pickled_lists(tmp_path, mtat_root):
    lists = {"train": [0, 2, 3], "valid": [5], "test": [7, 1]}  # rows of annotations_final; clip 15 (row 4) left out
    npy_dir, cp_dir, tsv_dir = tmp_path / "split" / "mtat", tmp_path / "MTAT_split", tmp_path / "tsv"
    for folder in (npy_dir, cp_dir, tsv_dir):
        folder.mkdir(parents=True)
    for name, rows in lists.items():
        np.save(npy_dir / f"{name}.npy", np.array([f"{r}\t{MTAT_CLIPS[r][1]}" for r in rows]))
        paths = [MTAT_CLIPS[r][1].replace(".mp3", ".npy") for r in rows]  # Lee et al. list the .npy features
        (cp_dir / f"{name}_list_pub.cP").write_bytes(pickle.dumps(paths, protocol=2))
        write_text(tsv_dir / f"{name}.tsv", [MTAT_CLIPS[r][1] for r in rows], crlf=True)
    for split_dir in (npy_dir, cp_dir, tsv_dir):
        table = mtat_table(mtat_root, "cleaned", 50, split_dir)
        split = dict(zip(table.frame["clip_id"], table.frame["split"], strict=True))
        assert split == {"2": "train", "10": "train", "11": "train", "20": "valid", "30": "test", "6": "test"}
        assert table.excluded == {"not_in_cleaned_split": 3}
        assert table.spec.classes == TAGS  # all five when asked for 50


def test_mtat_cleaned_split_missing_files_say_what_is_expected(mtat_root):
    with pytest.raises(FileNotFoundError, match=r"train\.npy, valid\.npy, test\.npy.*--split directory"):
        mtat_table(mtat_root, "cleaned", 50)


def test_mtat_bad_rows_are_named(tmp_path):
    root = mtat_tree(tmp_path / "mtat")
    csv = root / "annotations_final.csv"
    lines = csv.read_text().splitlines()
    bad = lines[3].replace('"1"', '"2"', 1)
    write_text(csv, [*lines[:3], bad, *lines[4:]])
    with pytest.raises(ManifestError, match=r"line 4: tag 'guitar' = '2': expected 0 or 1"):
        mtat_table(root, "directory")
    write_text(csv, [*lines, lines[2]])
    with pytest.raises(ManifestError, match=r"line 11: duplicate clip_id '6' \(also on line 3\)"):
        mtat_table(root, "directory")


# ---------------------------------------------------------------- a folder + CSV

def folder_tree(root: Path, n: int = 12) -> Path:
    for i in range(n):
        fmt = "FLAC" if i % 2 else "WAV"
        path = root / f"session{i // 3}" / f"take{i}.{fmt.lower()}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(3.0, 300 + 20 * i), SR, format=fmt)
    (root / "session0" / "take0.wav").write_bytes(np.zeros(4000, dtype=np.int16).tobytes())  # no header
    return root


def folder_csv(path: Path, rows: list[str], header: str = "path,kick,snare") -> Path:
    write_text(path, [header, *rows])
    return path


def folder_rows(n: int = 12) -> list[str]:
    rows = []
    for i in range(n):
        ext = "flac" if i % 2 else "wav"
        kick = "" if i % 4 == 1 else f"{(i % 3) / 2:.1f}"  # blank = not annotated
        snare = "" if i >= 9 else str(i % 2)  # session3: no label at all
        rows.append(f"session{i // 3}/take{i}.{ext},{kick if i < 9 else ''},{snare}")
    return rows


def test_folder_generated_splits_are_group_aware_and_unlabelled_groups_stay_out(tmp_path):
    root = folder_tree(tmp_path / "audio")
    csv = folder_csv(tmp_path / "labels.csv", folder_rows(), "path,kick,snare")
    out = tmp_path / "data"
    summary = import_folder(root, csv, out, settings(tmp_path, split={"train": 0.5, "valid": 0.25, "test": 0.25}),
                            group_by="folder")
    df, spec = read_manifest(out)
    assert spec.classes == ["kick", "snare"]
    assert df.groupby("group")["split"].nunique().max() == 1
    assert set(df.loc[df["group"] == "session3", "split"]) == {"unlabeled"}
    assert set(df["split"]) == {"train", "valid", "test", "unlabeled"}
    assert np.isnan(df.set_index("clip_id").loc["session0/take1", "label:kick"])
    assert dict(read_quarantine(out).set_index("clip_id")["reason"]) == {"session0/take0": "undecodable"}
    assert summary.quarantined == 1 and df["path"].str.startswith("audio/session").all()


def test_folder_with_split_and_group_columns_carves_valid_when_absent(tmp_path):
    root = folder_tree(tmp_path / "audio")
    rows = [f"{r},{'test' if i >= 8 else 'train'},artist{i // 2},x" for i, r in enumerate(folder_rows())]
    csv = folder_csv(tmp_path / "labels.csv", rows, "path,label:kick,label:snare,split,group,comment")
    table = folder_table(root, csv, {"train": 0.7, "valid": 0.15, "test": 0.15}, valid_fraction=0.3, seed=3)
    df = table.frame
    assert table.spec.classes == ["kick", "snare"]  # label:* columns given: 'comment' is extra, ignored
    assert set(df["split"]) == {"train", "valid", "test"}
    assert df.groupby("group")["split"].nunique().max() == 1
    assert table.spec.extra["import"]["valid_carved"] == {"fraction": 0.3}


@pytest.mark.parametrize(("header", "row", "classes", "message"), [
    ("path,kick", "a.wav,0.5", ["kick", "snare"], r"line 1: missing columns for classes \['snare'\]"),
    ("path,kick,snare,tom", "a.wav,0,1,0", ["kick", "snare"], r"line 1: unknown classes \['tom'\]"),
    ("path,kick,snare", "a.wav,1.2,0", None, r"line 2: kick=1.2: outside \[0, 1\]"),
    ("path,kick,snare", "a.wav,high,0", None, r"line 2: kick='high': expected a number in \[0, 1\] or blank"),
    ("path,kick,snare", "/data/a.wav,1,0", None, r"line 2: path '/data/a.wav': expected a path relative"),
    ("path,kick,snare", "../a.wav,1,0", None, r"line 2: path '../a.wav': expected a path relative"),
    ("path,kick,snare", "C:\\audio\\a.wav,1,0", None, r"line 2: path 'C:\\\\audio\\\\a.wav'"),
    ("path,kick,snare,split", "a.wav,1,0,holdout", None, r"line 2: split 'holdout': expected one of"),
    ("clip_id,path,kick,snare", "b,a.wav,1,0", None, r"line 3: duplicate clip_id 'b' \(also on line 2\)"),
    ("file,kick,snare", "a.wav,1,0", None, r"line 1: missing columns \['path'\]"),
])
def test_folder_bad_label_files_name_the_line(tmp_path, header, row, classes, message):
    extra = "b,c.wav,1,0" if header.startswith("clip_id") else None
    csv = folder_csv(tmp_path / "labels.csv", [row] + ([extra] if extra else []), header)
    with pytest.raises(ManifestError, match=message):
        folder_table(tmp_path, csv, {"train": 0.7, "valid": 0.15, "test": 0.15}, 0.15, 1, classes=classes)


def test_failed_imports_leave_the_existing_dataset_byte_identical(tmp_path):
    root = folder_tree(tmp_path / "audio")
    good = folder_csv(tmp_path / "good.csv", folder_rows())
    out = tmp_path / "data"
    import_folder(root, good, out, settings(tmp_path))
    before = tree_digest(out)
    with pytest.raises(FileExistsError, match="--overwrite"):
        import_folder(root, good, out, settings(tmp_path))
    bad = folder_csv(tmp_path / "bad.csv", [*folder_rows()[:3], "session1/take3.flac,0.5,7"])
    with pytest.raises(ManifestError, match="line 5: snare=7.0"):
        import_folder(root, bad, out, settings(tmp_path), overwrite=True)
    nothing = folder_csv(tmp_path / "nothing.csv", ["gone1.wav,1,0", "gone2.wav,0,1", "gone3.wav,0,1"])
    with pytest.raises(ValueError, match="none of the 3 clips is usable"):  # fails after the audio check began
        import_folder(root, nothing, out, settings(tmp_path, split={"train": 0.34, "valid": 0.33, "test": 0.33}),
                      overwrite=True)
    assert tree_digest(out) == before
    assert not [name for name in os.listdir(tmp_path) if name.startswith((".data", "data."))]  # no staged leftovers


# ---------------------------------------------------------------- splits and the CLI

def test_group_splits_never_share_a_group():
    group = pd.Series([f"g{i // 3}" for i in range(300)])
    split = assign_splits(group, {"train": 0.7, "valid": 0.15, "test": 0.15}, seed=0)
    assert pd.DataFrame({"g": group, "s": split}).groupby("g")["s"].nunique().max() == 1
    assert split.value_counts()["train"] == pytest.approx(210, abs=15)
    carved = carve_valid(pd.Series(["train"] * 201 + ["test"] * 99), group, 0.2, seed=0)  # 67 train groups
    assert (carved[201:] == "test").all() and (carved[:201] == "valid").sum() == 3 * 14  # ceil(0.2 * 67) groups
    assert pd.DataFrame({"g": group, "s": carved}).groupby("g")["s"].nunique().max() == 1
    with pytest.raises(ValueError, match="need at least 2 groups"):
        carve_valid(pd.Series(["train"] * 3), pd.Series(["g"] * 3), 0.2, seed=0)


def test_cli_import_prints_json_and_exits_2_on_a_bad_label_file(tmp_path, capsys):
    root = folder_tree(tmp_path / "audio")
    csv = folder_csv(tmp_path / "labels.csv", folder_rows())
    project = tmp_path / "project"
    project.mkdir()
    main(["data", "import", "folder", str(root), "--labels", str(csv), "--root", str(project), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["source"] == "folder" and summary["quarantined"] == 1
    assert summary["data_dir"] == str(project / "data") and (project / "data" / "manifest.parquet").exists()

    bad = folder_csv(tmp_path / "bad.csv", ["session0/take1.flac,0.5,-1"])
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "import", "folder", str(root), "--labels", str(bad), "--root", str(project), "--overwrite"])
    assert exit_info.value.code == 2
    assert "bad.csv: line 2: snare=-1.0: outside [0, 1]" in capsys.readouterr().err
