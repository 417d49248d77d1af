"""`build_demo`: plan the variant, render every batch into a temporary sibling folder, and swap the folders
into place only when all are complete, so a failure leaves any existing folders as they were."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mirops.config import DemoParams, Settings
from mirops.data.demo.instruments import plan_batches
from mirops.data.demo.plans import Batch
from mirops.data.demo.render import RenderProgress, write_batch
from mirops.data.demo.tagging import plan_tagging
from mirops.data.gm import check_classes
from mirops.data.manifest import LABELLED_SPLITS
from mirops.data.oneshots import DrumKit, DrumKitsNotFoundError, OneShotPlayer, find_kits, missing_kits_message
from mirops.data.staging import swap_into_place
from mirops.data.synth import find_soundfont

VARIANTS = ("instruments", "tagging")


@dataclass(frozen=True)
class DemoSummary:
    data_dir: Path
    production_dir: Path | None  # None for the tagging variant (no production batch)
    variant: str
    n_clips: dict[str, int]  # labelled clips per split
    n_production: int
    classes: list[str]  # label columns: instrument classes, or tags
    domains: dict[str, int]  # labelled clips per SoundFont
    real_drum_clips: int  # labelled clips whose drums/cymbals are hydrogen one-shots
    seconds: float  # wall-clock time of the build
    clip_seconds: float


def _check_targets(targets: Sequence[Path], overwrite: bool) -> None:
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{', '.join(existing)} already exist(s); pass overwrite=True (`mirops data demo --overwrite`) "
            "to replace them"
        )


def output_dirs(settings: Settings, variant: str, out: str | Path | None) -> tuple[Path, Path | None]:
    """Where the labelled data goes (`out`, default data/ under the project root) and the production
    batch: production/ beside data/, `<out>-production` beside another folder, none for tagging."""
    data_dir = settings.data_dir if out is None else Path(out).resolve()
    if variant == "tagging":
        return data_dir, None
    if data_dir == settings.data_dir.resolve():
        return settings.data_dir, settings.production_dir
    return data_dir, data_dir.with_name(f"{data_dir.name}-production")


def available_kits(params: DemoParams) -> dict[str, DrumKit]:
    """The installed hydrogen kits, or {} with one line on stderr (an error when they are required)."""
    kits = find_kits()
    if kits or not (params.real_drums > 0 or params.require_real_drums):
        return kits
    if params.require_real_drums:
        raise DrumKitsNotFoundError(f"demo.require_real_drums: {missing_kits_message()}")
    print(f"mirops demo: drums and cymbals come from the SoundFonts only; {missing_kits_message()}", file=sys.stderr)
    return {}


def build_demo(
    settings: Settings, overwrite: bool = False, variant: str | None = None, out: str | Path | None = None
) -> DemoSummary:
    """Render the demo (`variant`, default `demo.variant`) into `out` (default data/), and for the
    instruments variant the production batch beside it.

    Every folder is rendered into a temporary sibling and renamed into place only when all are
    complete, so a failure leaves any existing folders as they were."""
    started = time.perf_counter()
    params = settings.demo
    variant = variant or params.variant
    if variant not in VARIANTS:
        raise ValueError(f"demo variant {variant!r}: expected one of {list(VARIANTS)}")
    check_classes(params.classes)  # a class GM cannot play fails before anything is touched
    data_dir, production_dir = output_dirs(settings, variant, out)
    fonts = [*params.soundfonts, *([params.production_soundfont] if production_dir else [])]
    for font in fonts:
        find_soundfont(font)  # a missing SoundFont names its Debian package before anything is touched
    targets = [data_dir, *([production_dir] if production_dir else [])]
    _check_targets(targets, overwrite)
    kits = available_kits(params)
    if variant == "tagging":
        batches: list[Batch] = [plan_tagging(settings, sorted(kits))]
    else:
        batches = list(plan_batches(settings, sorted(kits)))
    drums = OneShotPlayer(kits, params.sample_rate) if kits else None

    staged: list[Path] = []
    try:
        with RenderProgress(sum(len(b.clips) for b in batches)) as progress:
            for batch, final in zip(batches, targets, strict=True):
                final.parent.mkdir(parents=True, exist_ok=True)
                staged.append(Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=final.parent)))
                write_batch(batch, staged[-1], settings, progress, drums)
        for tmp, final in zip(staged, targets, strict=True):
            swap_into_place(tmp, final)
    finally:
        for tmp in staged:
            shutil.rmtree(tmp, ignore_errors=True)

    labelled = batches[0].clips
    domains: dict[str, int] = {}
    for plan in labelled:
        domains[plan.session.soundfont] = domains.get(plan.session.soundfont, 0) + 1
    return DemoSummary(
        data_dir=data_dir,
        production_dir=production_dir,
        variant=variant,
        n_clips={s: sum(p.session.split == s for p in labelled) for s in LABELLED_SPLITS},
        n_production=len(batches[1].clips) if len(batches) > 1 else 0,
        classes=list(batches[0].classes),
        domains=domains,
        real_drum_clips=sum(p.real_drums for p in labelled),
        seconds=time.perf_counter() - started,
        clip_seconds=batches[0].clip_seconds,
    )
