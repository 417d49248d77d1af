"""Ingest: audio and labels in, a dataset folder (manifest + labels + audio) out, unusable clips quarantined.

Sources: the demo builder, an official download or a folder + CSV (`mirops.data.importers`), or another
dataset folder that data/ mirrors (scheduled retraining). `check_data` decodes every clip once (filling the
cache on the way) and moves unusable ones from the manifest to the quarantine table.
"""

from __future__ import annotations

from pathlib import Path

from mirops.config import Settings
from mirops.data import importers
from mirops.data.cache import ArrayCache, audio_filler, known_seconds
from mirops.data.demo import build_demo
from mirops.data.manifest import read_manifest
from mirops.data.quarantine import CheckPolicy, QuarantineReport, quarantine_dataset
from mirops.data.staging import mirror_into
from mirops.features.logmel import SAMPLE_RATE
from mirops.progress import console, progress


def demo(settings: Settings, overwrite: bool = False, variant: str | None = None, out: Path | None = None):
    """Render the offline demo dataset into data/ (or `out`)."""
    return build_demo(settings, overwrite=overwrite, variant=variant, out=out)


def import_dataset(settings: Settings, source: str, root: Path, out: Path | None = None, overwrite: bool = False,
                   show_progress: bool = True, **options):
    """Build data/ (or `out`) from an official download (`openmic`, `mtat`) or a folder + CSV (`folder`)."""
    builders = {"openmic": importers.import_openmic, "mtat": importers.import_mtat, "folder": importers.import_folder}
    if source not in builders:
        raise ValueError(f"unknown import source {source!r}; choose one of {sorted(builders)}")
    return builders[source](Path(root), out=Path(out) if out else settings.data_dir, settings=settings,
                            overwrite=overwrite, show_progress=show_progress, **options)


def stage_source(settings: Settings, source: str | Path) -> None:
    """Make data/ a copy of the dataset folder `source` (what scheduled retraining trains on)."""
    mirror_into(Path(source), settings.data_dir, settings.ingest.link)
    console.print(f"[bold]source[/] data/ now mirrors {source}")


def check_data(settings: Settings, data_dir: Path | None = None) -> QuarantineReport:
    """Decode every clip of the dataset; unusable ones move from the manifest to the quarantine table.

    The decoded audio goes into the cache on the way, so training does not decode it again, and a clip
    whose content was checked before (by an import or an earlier check) is not decoded again.
    """
    data_dir = Path(data_dir or settings.data_dir)
    cache = ArrayCache(settings.cache_dir)
    n = len(read_manifest(data_dir)[0])
    with progress(f"checking {n} clips", n) as advance:
        report = quarantine_dataset(
            data_dir, CheckPolicy(settings.ingest.min_seconds, settings.ingest.short_fraction),
            settings.ingest.workers, on_wave=audio_filler(cache, SAMPLE_RATE), progress=advance,
            known=known_seconds(cache, SAMPLE_RATE))
    colour = "yellow" if report.quarantined else "green"
    console.print(f"[bold]check[/] [{colour}]{report.line()}[/]"
                  + (f" → {report.table_path}" if report.quarantined else ""))
    return report
