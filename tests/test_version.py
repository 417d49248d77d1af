"""Dataset versions are DVC's md5 of data/, pushed to a local remote and stable for unchanged data."""

import shutil
import subprocess

import pytest
import yaml

from mirops.data.version import (
    DirtyDataError,
    checkout_version,
    default_remote,
    list_versions,
    make_version,
    read_version,
    version_data,
)


def write_dataset(root, payload: bytes = b"clip") -> None:
    (root / "data" / "audio").mkdir(parents=True, exist_ok=True)
    (root / "data" / "audio" / "a.wav").write_bytes(payload)
    (root / "data" / "manifest.parquet").write_bytes(b"not really parquet, DVC does not care")


def test_version_is_the_md5_in_data_dvc_and_is_pushed(tmp_path):
    write_dataset(tmp_path)
    v = version_data(tmp_path)
    recorded = yaml.safe_load((tmp_path / "data.dvc").read_text())["outs"][0]["md5"]
    assert recorded == f"{v.version}.dir" and v.files == 2
    remote = default_remote(tmp_path)  # outside the project: under $XDG_DATA_HOME (a temporary one in tests)
    assert not remote.is_relative_to(tmp_path) and not (tmp_path / "dvc-remote").exists()
    remote_files = [p for p in remote.rglob("*") if p.is_file()]
    assert len(remote_files) == 3  # two files and the directory listing


def test_unchanged_data_keeps_its_version_and_a_change_makes_a_new_one(tmp_path):
    write_dataset(tmp_path)
    first = version_data(tmp_path).version
    assert version_data(tmp_path).version == first
    write_dataset(tmp_path, b"another clip")
    second = version_data(tmp_path).version
    assert second != first and read_version(tmp_path).version == second


def snapshot(root) -> dict[str, bytes]:
    data = root / "data"
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}


def test_versions_round_trip_version_change_version_checkout_first(tmp_path):
    write_dataset(tmp_path)
    first_files = snapshot(tmp_path)
    first, _ = make_version(tmp_path, "first")
    (tmp_path / "data" / "audio" / "a.wav").write_bytes(b"edited")
    (tmp_path / "data" / "audio" / "new.wav").write_bytes(b"added")
    second, _ = make_version(tmp_path, "second")
    second_files = snapshot(tmp_path)
    assert [(r.version, r.message) for r in list_versions(tmp_path)] == [(first.version, "first"),
                                                                         (second.version, "second")]
    checkout_version(tmp_path, first.version[:7])
    assert snapshot(tmp_path) == first_files and read_version(tmp_path).version == first.version
    shutil.rmtree(tmp_path / ".dvc" / "cache")  # a fresh clone: only the remote has the data
    checkout_version(tmp_path, second.version)
    assert snapshot(tmp_path) == second_files


def test_checkout_refuses_to_drop_unversioned_changes(tmp_path):
    write_dataset(tmp_path)
    first, _ = make_version(tmp_path, "first")
    (tmp_path / "data" / "audio" / "a.wav").write_bytes(b"not versioned yet")
    with pytest.raises(DirtyDataError, match="changes no version records"):
        checkout_version(tmp_path, first.version)
    assert (tmp_path / "data" / "audio" / "a.wav").read_bytes() == b"not versioned yet"
    checkout_version(tmp_path, first.version, force=True)
    assert (tmp_path / "data" / "audio" / "a.wav").read_bytes() == b"clip"


def test_unknown_or_ambiguous_versions_are_named(tmp_path):
    write_dataset(tmp_path)
    make_version(tmp_path)
    with pytest.raises(LookupError, match="no dataset version starts with 'zzz'"):
        checkout_version(tmp_path, "zzz")


def test_inside_git_the_version_is_committed_with_its_message_and_nothing_else(tmp_path):
    git = ["git", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "init"],
                   check=True)
    (tmp_path / "unrelated.txt").write_text("staged by the user, not part of the version")
    subprocess.run([*git, "add", "unrelated.txt"], check=True)
    write_dataset(tmp_path)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        record, sha = make_version(tmp_path, "first clips", commit=True)
    files = subprocess.run([*git, "show", "--name-only", "--format=%s", sha], capture_output=True, text=True).stdout
    assert files.splitlines()[0] == f"data: first clips ({record.version[:8]})"
    assert {"data.dvc", "data.versions.jsonl", ".gitignore"} <= set(files.split()) and "unrelated.txt" not in files
