"""Real-audio acceptance of the drift monitor: Debian game soundtracks as reference and production traffic.

Reference: half of the tracks of `wesnoth-1.16-music` (orchestral/folk). The monitor must flag
`warzone2100-music` (electronic) as drift, and must not flag the other, disjoint half of wesnoth's tracks.
Each track is cut into 10 s clips (the clip length the models train on), written as 16 kHz WAV files with a
manifest naming each clip's track as its group (clips of one track resemble each other more than clips of
two tracks; the monitor keeps a group on one side of its embedding classifier's split), and the comparison
goes through the CLI as a user runs it: `mirops monitor --current DIR --reference DIR --json`.

The packages are installed when missing (as root or with password-less sudo; MIROPS_NO_APT=1 forbids it);
without them the test skips and says why. Slow: ~240 MB to download the first time, then about a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.conftest import make_project
from tests.test_cli import mirops

REFERENCE_PACKAGE, DIFFERENT_PACKAGE = "wesnoth-1.16-music", "warzone2100-music"
CLIP_SECONDS, RATE = 10.0, 16000
# Clips per track, evenly spaced over it (the whole track is represented, not only its intro): about 70
# reference clips from 18 tracks, 34 "same" clips from 17 others, 30 "different" clips from 30 tracks.
REFERENCE_PER_TRACK, BATCH_PER_TRACK = 4, 2


def _installed(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip().endswith("installed")


def _apt_prefix() -> list[str] | None:
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def ensure_packages(packages: list[str]) -> str | None:
    """Install the Debian packages that are missing; None when all are there, else why they cannot be."""
    missing = [p for p in packages if not _installed(p)]
    if not missing:
        return None
    if not shutil.which("apt-get") or not shutil.which("dpkg-query"):
        return f"needs the Debian packages {' '.join(missing)} and this is not a Debian/Ubuntu machine"
    if os.environ.get("MIROPS_NO_APT") == "1":
        return f"needs the Debian packages {' '.join(missing)} (MIROPS_NO_APT=1 forbids installing them)"
    prefix = _apt_prefix()
    if prefix is None:
        return f"needs the Debian packages {' '.join(missing)}: run `sudo apt-get install {' '.join(missing)}`"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    try:
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:  # stale or missing package lists: refresh once, then try again
            subprocess.run([*prefix, "apt-get", "update", "-q"], capture_output=True, env=env, timeout=300)
            done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    except subprocess.TimeoutExpired:
        return f"installing {' '.join(missing)} timed out"
    if done.returncode != 0 or not all(_installed(p) for p in missing):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"could not install {' '.join(missing)}: {' / '.join(tail)}"
    return None


def package_tracks(package: str) -> list[Path]:
    """The package's audio files (Ogg Vorbis or Opus), sorted by path."""
    listing = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=True).stdout
    return sorted(Path(line) for line in listing.splitlines()
                  if line.lower().endswith((".ogg", ".opus")) and Path(line).is_file())


def cut_clips(tracks: list[Path], folder: Path, per_track: int) -> Path:
    """`per_track` 10 s clips evenly spaced over each track (16 kHz mono WAV) and a manifest naming each clip's
    track as its group, so the monitor keeps a track's clips together.

    Only the clips' frames are decoded (soundfile seeks), then mixed down and resampled with the project's
    own functions, so a 10-minute track costs what its clips cost."""
    from mirops.data.audio import resample, to_mono, write_wav

    folder.mkdir(parents=True)
    rows = []
    for track in tracks:
        with sf.SoundFile(str(track)) as f:
            frames, rate = f.frames, f.samplerate
            length = int(CLIP_SECONDS * rate)
            for k in range(per_track):
                start = int(np.clip((k + 0.5) * frames / per_track - length / 2, 0, frames - length))
                f.seek(start)
                wave = resample(to_mono(f.read(length, dtype="float32", always_2d=True)), rate, RATE)
                path = f"audio/{track.stem}-{k}.wav"
                write_wav(folder / path, np.clip(wave, -1.0, 1.0), RATE)
                rows.append({"clip_id": f"{track.stem}-{k}", "path": path, "group": track.stem})
    pd.DataFrame(rows).to_parquet(folder / "manifest.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def soundtracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three folders of 10 s clips: reference and "same" (every other wesnoth track each: disjoint tracks of
    one soundtrack), "different" (warzone2100)."""
    reason = ensure_packages([REFERENCE_PACKAGE, DIFFERENT_PACKAGE])
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("soundtracks")
    orchestral = [t for t in package_tracks(REFERENCE_PACKAGE) if sf.info(str(t)).duration >= 3 * CLIP_SECONDS]
    electronic = package_tracks(DIFFERENT_PACKAGE)
    if len(orchestral) < 20 or len(electronic) < 10:
        pytest.skip(f"too few tracks: {len(orchestral)} of {REFERENCE_PACKAGE}, "
                    f"{len(electronic)} of {DIFFERENT_PACKAGE}")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # resampling clip by clip (see `one_torch_thread`)
    try:
        return {"reference": cut_clips(orchestral[0::2], root / "wesnoth-a", REFERENCE_PER_TRACK),
                "same": cut_clips(orchestral[1::2], root / "wesnoth-b", BATCH_PER_TRACK),
                "different": cut_clips(electronic, root / "warzone2100", 1)}
    finally:
        torch.set_num_threads(threads)


def monitor(root: Path, current: Path, reference: Path) -> dict:
    done = mirops(root, "monitor", "--current", str(current), "--reference", str(reference), "--json")
    return json.loads(done.stdout)


@pytest.fixture
def one_torch_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clip-by-clip inference on a shared 2-core machine: one intra-op thread. Two threads competing with other
    processes ran this test 3-4x slower (YAMNet on 20 patches: 0.06 s on one thread, 1.4 s on two, under load)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # read by torch in the CLI processes


def figures(verdict: dict) -> str:
    return (f"drift share {verdict['drift_share']:.2f} ({len(verdict['drifted_columns'])}/{verdict['n_columns']}: "
            f"{', '.join(verdict['drifted_columns']) or '-'}), embedding AUC {verdict['embedding_drift_score']:.3f} "
            f"(threshold {verdict['embedding_threshold']:.3f}), severity {verdict['severity']}, "
            f"{verdict['reference_rows']} clips of {verdict['reference_groups']} tracks vs "
            f"{verdict['current_rows']} of {verdict['current_groups']}")


@pytest.mark.slow
def test_electronic_music_drifts_from_orchestral_and_more_orchestral_does_not(one_torch_thread, soundtracks, tmp_path,
                                                                                record_property):
    root = make_project(tmp_path / "p")  # no dataset, no champion: the reference is a folder of audio
    different = monitor(root, soundtracks["different"], soundtracks["reference"])
    same = monitor(root, soundtracks["same"], soundtracks["reference"])
    for name, verdict in (("different", different), ("same", same)):
        record_property(name, figures(verdict))
        print(f"{name}: {figures(verdict)}")

    assert different["drift_detected"] is True, figures(different)
    assert different["embedding_drift_detected"] is True, figures(different)
    assert different["severity"] in ("drift", "critical")
    assert same["drift_detected"] is False, figures(same)
    assert same["severity"] == "none"
    # Both verdicts compared against the same reference, recorded under the same id.
    assert different["dataset_version"] == same["dataset_version"] and same["dataset_version"].startswith("folder-")
