"""Dataset versions are DVC's md5 of data/, pushed to a local remote and stable for unchanged data."""

import yaml

from mirops.data.version import read_version, version_data


def write_dataset(root, payload: bytes = b"clip") -> None:
    (root / "data" / "audio").mkdir(parents=True, exist_ok=True)
    (root / "data" / "audio" / "a.wav").write_bytes(payload)
    (root / "data" / "manifest.parquet").write_bytes(b"not really parquet, DVC does not care")


def test_version_is_the_md5_in_data_dvc_and_is_pushed(tmp_path):
    write_dataset(tmp_path)
    v = version_data(tmp_path)
    recorded = yaml.safe_load((tmp_path / "data.dvc").read_text())["outs"][0]["md5"]
    assert recorded == f"{v.version}.dir" and v.files == 2
    remote_files = [p for p in (tmp_path / "dvc-remote").rglob("*") if p.is_file()]
    assert len(remote_files) == 3  # two files and the directory listing


def test_unchanged_data_keeps_its_version_and_a_change_makes_a_new_one(tmp_path):
    write_dataset(tmp_path)
    first = version_data(tmp_path).version
    assert version_data(tmp_path).version == first
    write_dataset(tmp_path, b"another clip")
    second = version_data(tmp_path).version
    assert second != first and read_version(tmp_path).version == second
