"""Rendering a planned clip: notes for each instrument, one stem per part (SoundFont or hydrogen one-shots),
stems levelled to equal loudness and mixed; and a whole batch's audio files with its manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirops.config import Settings
from mirops.data.audio import write_wav
from mirops.data.compositions import STYLES, drum_kit_part, part_for, random_song
from mirops.data.demo.plans import LABELLED, NOTES, PRODUCTION, Batch, ClipPlan, stream
from mirops.data.demo.records import label_spec, manifest_frame
from mirops.data.gm import DRUM_BANK, DRUM_CHANNEL, GM_INSTRUMENTS
from mirops.data.manifest import write_manifest
from mirops.data.oneshots import OneShotPlayer
from mirops.data.synth import Part, SoundFontRenderer, find_soundfont
from mirops.progress import progress

PEAK_RANGE = (0.3, 0.9)  # clips come at different levels, never clipped
MIX_RANGE_DB = (-8.0, 0.0)  # each instrument's level in the mix, relative to equal loudness


def clip_parts(plan: ClipPlan, classes: list[str], rng: np.random.Generator, seconds: float) -> list[Part]:
    """One MIDI part per instrument of the clip, in `plan.instruments` order (drums and cymbals share
    the drum channel: they are rendered as separate stems, so they never collide)."""
    style = STYLES[plan.session.style] if plan.session.style else None
    song = random_song(rng, plan.key, plan.tempo, seconds)
    pitched = (c for c in range(16) if c != DRUM_CHANNEL)
    parts: list[Part] = []
    for name in plan.instruments:
        inst, program = GM_INSTRUMENTS[name], plan.session.programs[name]
        if inst.is_drum_kit:
            # Without a 'cymbals' class, the drummer plays the whole kit, cymbals included.
            if name == "drums" and "cymbals" not in classes:
                notes = drum_kit_part(rng, song, groove=style.groove if style else "backbeat")
            else:
                notes = part_for(inst.role, rng, song, inst.low, inst.high, style)
            parts.append(Part(DRUM_CHANNEL, program, notes, bank=DRUM_BANK))
        else:
            notes = part_for(inst.role_for(program), rng, song, inst.low, inst.high, style)
            parts.append(Part(next(pitched), program, notes))
    return parts


def mix(plan: ClipPlan, stems: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Level each stem to equal loudness, then a random gain within MIX_RANGE_DB: presets differ by
    30 dB or more, and a label must not claim an instrument buried under the others."""
    out = np.zeros_like(stems[0], dtype=np.float64)
    for name, stem in zip(plan.instruments, stems, strict=True):
        rms = float(np.sqrt(np.mean(np.square(stem, dtype=np.float64))))
        if not np.isfinite(rms) or rms == 0.0:
            raise RuntimeError(f"{plan.clip_id}: {name} (program {plan.session.programs[name]}) rendered silence")
        out += stem * (10 ** (rng.uniform(*MIX_RANGE_DB) / 20) / rms)
    return out


def render_clip(
    renderer: SoundFontRenderer,
    plan: ClipPlan,
    classes: list[str],
    seed: int,
    batch: int,
    seconds: float,
    drums: OneShotPlayer | None = None,
) -> np.ndarray:
    """The clip's mix, float32 mono; drum-channel parts of a session with a hydrogen kit play its one-shots."""
    rng = stream(seed, batch, NOTES, plan.index)
    n_samples = int(round(seconds * renderer.sample_rate))
    stems = []
    for part in clip_parts(plan, classes, rng, seconds):
        if part.is_drums and plan.session.drum_kit is not None and drums is not None:
            stems.append(drums.render(plan.session.drum_kit, part.notes, n_samples))
        else:
            stems.append(renderer.render([part], n_samples))  # alone: the stems sum to the mix
    wave = mix(plan, stems, rng)
    return (wave * (rng.uniform(*PEAK_RANGE) / np.abs(wave).max())).astype(np.float32)


class RenderProgress:
    """Progress of the rendering on stderr (human output never goes to stdout): a bar on a terminal, log lines
    elsewhere (`mirops.progress`)."""

    def __init__(self, total: int) -> None:
        self._context = progress("rendering demo clips", total)
        self._description: str | None = None

    def __enter__(self) -> RenderProgress:
        self._advance = self._context.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)

    def describe(self, text: str) -> None:
        self._description = text

    def advance(self) -> None:
        self._advance(1, self._description)


def write_batch(
    batch: Batch, out_dir: Path, settings: Settings, progress: RenderProgress, drums: OneShotPlayer | None
) -> None:
    """Render every clip and write the manifest. One synth per SoundFont (loading one takes seconds),
    released before the next is loaded."""
    params = settings.demo
    batch_id = LABELLED if batch.name == "labelled" else PRODUCTION
    by_font: dict[str, list[ClipPlan]] = {}
    for plan in batch.clips:
        by_font.setdefault(plan.session.soundfont, []).append(plan)
    for font, plans in by_font.items():
        progress.describe(f"rendering {batch.name} clips ({font})")
        renderer = SoundFontRenderer(find_soundfont(font), params.sample_rate)
        for plan in plans:
            wave = render_clip(renderer, plan, params.classes, settings.seed, batch_id, batch.clip_seconds, drums)
            write_wav(out_dir / "audio" / f"{plan.clip_id}.wav", wave, params.sample_rate)
            progress.advance()
        del renderer
    write_manifest(out_dir, manifest_frame(batch, params), label_spec(batch, settings))
