"""Real-audio acceptance of the drift monitor: Debian game soundtracks as a user points the monitor at them.

Whole tracks, not clips: the reference and the "same" batch are every other track of `wesnoth-1.16-music`
(orchestral/folk; a folder of links to the package's files each, as a user would give a folder), the
"different" batch tracks of `warzone2100-music` (electronic). The monitor cuts each file into clip-length
windows (`monitor.windows_per_file`, 3 here to bound the time) and decides over files
(`monitor.decision`). Through the CLI as a user runs it: `mirops monitor --current DIR --reference DIR --json`.

Then a small version of `benchmarks/drift_calibration.py` on the same cached features: many random
group-disjoint splits of wesnoth's tracks (no drift) and orchestral vs electronic (drift), counted.

The packages are installed when missing (as root or with password-less sudo; MIROPS_NO_APT=1 forbids it);
without them the test skips and says why. Slow: ~240 MB to download the first time, then a few minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from mirops.data.debian_audio import package_tracks
from mirops.debian import ensure_packages
from tests.conftest import make_project
from tests.test_cli import mirops

REFERENCE_PACKAGE, DIFFERENT_PACKAGE = "wesnoth-1.16-music", "warzone2100-music"
CLIP_SECONDS = 10.0
WINDOWS_PER_FILE = 3
DIFFERENT_TRACKS = 12  # warzone2100's tracks are 3-14 minutes: a dozen is enough to see the change


def link_folder(tracks: list[Path], folder: Path) -> Path:
    """A folder of the tracks themselves (symbolic links), as a user's folder of files."""
    folder.mkdir(parents=True)
    for track in tracks:
        (folder / track.name).symlink_to(track)
    return folder


@pytest.fixture(scope="module")
def soundtracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three folders of whole tracks: reference and "same" (every other wesnoth track each: disjoint tracks of
    one soundtrack, 17 or more files each), "different" (warzone2100); and the project that reads them."""
    reason = ensure_packages([REFERENCE_PACKAGE, DIFFERENT_PACKAGE])
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("soundtracks")
    orchestral = [t for t in package_tracks(REFERENCE_PACKAGE) if sf.info(str(t)).duration >= 2 * CLIP_SECONDS]
    electronic = package_tracks(DIFFERENT_PACKAGE)[:DIFFERENT_TRACKS]
    if len(orchestral) < 34 or len(electronic) < 10:
        pytest.skip(f"too few tracks: {len(orchestral)} of {REFERENCE_PACKAGE}, "
                    f"{len(electronic)} of {DIFFERENT_PACKAGE}")
    project = make_project(root / "p", {"monitor": {"windows_per_file": WINDOWS_PER_FILE}})
    return {"project": project,
            "reference": link_folder(orchestral[0::2], root / "wesnoth-a"),
            "same": link_folder(orchestral[1::2], root / "wesnoth-b"),
            "different": link_folder(electronic, root / "warzone2100")}


def monitor(root: Path, current: Path, reference: Path) -> dict:
    done = mirops(root, "monitor", "--current", str(current), "--reference", str(reference), "--json")
    return json.loads(done.stdout)


@pytest.fixture
def one_torch_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Window-by-window inference on a shared 2-core machine: one intra-op thread. Two threads competing with other
    processes ran this test 3-4x slower (YAMNet on 20 patches: 0.06 s on one thread, 1.4 s on two, under load)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # read by torch in the CLI processes


def figures(verdict: dict) -> str:
    return (f"p = {verdict['p_value']:.4f} (alpha {verdict['alpha']}), drifted {len(verdict['drifted_columns'])}/"
            f"{verdict['n_columns']}: {', '.join(verdict['drifted_columns']) or '-'}; embedding p "
            f"{verdict['embedding_p_value']:.4f}, AUC {verdict['embedding_drift_score']:.3f}; window-level share "
            f"{verdict['window_drift_share']:.2f}; severity {verdict['severity']}; {verdict['current_files']} files "
            f"({verdict['current_rows']} windows) vs {verdict['reference_files']} ({verdict['reference_rows']})")


@pytest.mark.slow
def test_whole_tracks_of_one_soundtrack_do_not_drift_and_electronic_music_does(one_torch_thread, soundtracks,
                                                                               record_property):
    root = soundtracks["project"]  # no dataset, no champion: the reference is a folder of audio
    same = monitor(root, soundtracks["same"], soundtracks["reference"])
    different = monitor(root, soundtracks["different"], soundtracks["reference"])
    for name, verdict in (("same", same), ("different", different)):
        record_property(name, figures(verdict))
        print(f"{name}: {figures(verdict)}")

    assert same["current_files"] >= 17 and same["reference_files"] >= 17
    assert same["current_rows"] == WINDOWS_PER_FILE * same["current_files"]  # every track is long enough
    assert same["drift_detected"] is False, figures(same)
    assert same["severity"] == "none"
    assert different["drift_detected"] is True, figures(different)
    assert different["embedding_drift_detected"] is True, figures(different)
    assert different["severity"] in ("drift", "critical")
    # Both verdicts compared against the same reference, recorded under the same id.
    assert different["dataset_version"] == same["dataset_version"] and same["dataset_version"].startswith("folder-")


@pytest.mark.slow
def test_false_alarm_and_detection_rates_on_random_splits(one_torch_thread, soundtracks):
    """The small calibration: 100 random splits of wesnoth's tracks into 10 current files and the rest, and 40
    draws of 10 warzone2100 files against wesnoth; the features are the CLI's, read back from the cache."""
    import torch
    from scipy.stats import binom

    from mirops.config import Settings
    from mirops.features.descriptors import DESCRIPTOR_COLUMNS
    from mirops.models.clip_embedding import EMBEDDING_PREFIX
    from mirops.monitor.calibration import Scenario, measure
    from mirops.pipeline.monitor import batch_features

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        settings = Settings.load(soundtracks["project"])
        tables = {name: batch_features(settings, soundtracks[name])[0] for name in ("reference", "same", "different")}
    finally:
        torch.set_num_threads(threads)
    orchestral = pd.concat([tables["reference"], tables["same"]], ignore_index=True)
    embedding = [c for c in orchestral.columns if c.startswith(EMBEDDING_PREFIX)]
    common = {"columns": list(DESCRIPTOR_COLUMNS), "embedding_columns": embedding, "alpha": 0.05,
              "permutations": 999}

    null = measure(Scenario("wesnoth files", False, 10, None, None), orchestral, None, splits=100, **common)
    clips = measure(Scenario("wesnoth clips", False, 20, None, 2), orchestral, None, splits=100, seed=1, **common)
    drift = measure(Scenario("wesnoth vs warzone2100", True, 10, None, None), orchestral, tables["different"],
                    splits=40, **common)
    print(null["rate"], clips["rate"], drift["rate"])
    limit = binom.ppf(0.99, 100, 0.05)  # a 5 % test fires more often than this in 1 % of runs of 100 splits
    assert null["rate"]["alarms"] <= limit, null
    assert clips["rate"]["alarms"] <= limit, clips
    assert drift["rate"]["rate"] >= 0.95, drift
