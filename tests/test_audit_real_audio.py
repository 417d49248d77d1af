"""Real-audio acceptance of the dataset audit: a folder of real recordings raises no critical false alarm, and a
fault planted in it is still caught.

The recordings are the Debian game soundtracks of the drift acceptance (`wesnoth-1.16-music`: `orchestral`;
`warzone2100-music` and `singularity-music`: `electronic`), one 10 s clip from the middle of each track, at the
track's own sample rate, with a CSV naming each clip's class (by package) and its track as its group. The import,
the version and the audit are the functions `mirops data import folder`, `mirops data version` and `mirops audit`
call, in this process (three CLI processes would double the time: each pays the imports of GE, MLflow and
Evidently); the fault is planted as `benchmarks/audit_calibration.py` plants it. The margins of every check, on
more clips and seeds, are in docs/audits.md#measured-false-alarms.

The packages are installed when missing (as root or with password-less sudo; MIROPS_NO_APT=1 forbids it);
without them the test skips and says why. Slow: about a minute on 2 cores once the packages are there.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks.audit_calibration import CLASS_OF_PACKAGE, cut_soundtracks, plant, soundtrack_tracks
from mirops.config import Settings
from mirops.data.importers.folder import import_folder
from mirops.debian import ensure_packages
from mirops.pipeline import audit
from mirops.pipeline.version import version
from tests.conftest import make_project

PER_TRACK = 1  # ~85 clips from ~85 tracks: every split gets both classes from several tracks
FAULT = "the same audio, re-encoded as Ogg, in train and test"


@pytest.fixture(scope="module")
def soundtrack_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A project whose data/ is the soundtrack folder, imported, versioned and audited."""
    reason = ensure_packages(list(CLASS_OF_PACKAGE))
    if reason:
        pytest.skip(reason)
    tracks = soundtrack_tracks()
    if min(len(tracks["wesnoth-1.16-music"]), len(tracks["warzone2100-music"])) < 10:
        pytest.skip(f"too few tracks: {({p: len(t) for p, t in tracks.items()})}")
    base = tmp_path_factory.mktemp("soundtracks")
    labels, silent = cut_soundtracks(tracks, base / "recordings", PER_TRACK)
    # The repository's audit thresholds, not the test projects' relaxed ones (TINY lowers min_positives).
    settings = Settings.load(make_project(base / "p", params={}))
    import_folder(labels.parent, labels, settings.data_dir, settings)
    version(settings, check=False)  # the import has just checked every clip
    summary = audit.audit(settings, raise_on_failure=False)
    return settings.root, asdict(summary) | {"kept_out": [c["path"] for c in silent]}


@pytest.mark.slow
def test_real_recordings_audit_without_a_critical_false_alarm(soundtrack_project, record_property):
    root, summary = soundtrack_project
    record_property("warnings", summary["warnings"])
    print(f"{len(summary['warnings'])} warnings: {summary['warnings']}; kept out: {summary['kept_out']}")
    assert summary["critical_failures"] == [] and summary["success"] is True
    # wesnoth's silence.ogg is the only digitally silent track: kept out of the clean folder (it is a fault).
    assert [Path(p).stem for p in summary["kept_out"]] == ["silence-0"]
    assert not any("integrity" in w for w in summary["warnings"]), summary["warnings"]


@pytest.mark.slow
def test_a_fault_planted_in_real_recordings_is_caught(soundtrack_project, tmp_path):
    root, _ = soundtrack_project
    caught = plant(Settings.load(root), FAULT, tmp_path / "fault")
    print(caught)
    assert caught["caught_as"] == "critical" and caught["training_stops"], caught
    assert caught["message"].startswith("duplicate_audio:")
    # A train clip's audio replaced a test clip's: the two clips, and only they, are named.
    [beyond] = caught["beyond_threshold"]
    assert beyond["observed"] == 2 and len(beyond["offending"]) == 2, beyond
    assert all(clip in caught["message"] for clip in beyond["offending"])
    assert {clip.split("/")[0] for clip in beyond["offending"]} <= set(CLASS_OF_PACKAGE)
