"""Render note events through a General-MIDI SoundFont with tinysoundfont: one loaded synth, many clips.

Loading a large SoundFont takes about a second, so a renderer keeps its synth and silences it between
clips (all sounds off, controllers reset, tails flushed); a clip then renders exactly as it would on
a freshly loaded synth, whatever was rendered before it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirops.data.compositions import Note
from mirops.data.gm import DRUM_BANK

SOUNDFONT_DIRS = (Path("/usr/share/sounds/sf2"), Path("/usr/share/sounds/sf3"))
SOUNDFONT_ENV = "MIROPS_SOUNDFONT_DIR"
# Where Debian ships the SoundFonts mirops knows by name.
DEBIAN_PACKAGES = {
    "FluidR3_GM.sf2": "fluid-soundfont-gm",
    "TimGM6mb.sf2": "timgm6mb-soundfont",
    "MuseScore_General_Lite.sf3": "musescore-general-soundfont-small",
    "MuseScore_General.sf3": "musescore-general-soundfont",
}
FLUSH_BLOCK = 1024  # frames rendered per step while waiting for released voices to die out
MAX_FLUSH_BLOCKS = 2000  # ~2 min of audio at 16 kHz: more means a voice that never ends


class SoundFontNotFoundError(FileNotFoundError):
    """The SoundFont is not installed; the message names the Debian package that ships it."""


def soundfont_dirs() -> list[Path]:
    """Search order: $MIROPS_SOUNDFONT_DIR (if set), then the Debian SoundFont folders."""
    env = os.environ.get(SOUNDFONT_ENV)
    return ([Path(env)] if env else []) + list(SOUNDFONT_DIRS)


def find_soundfont(name: str) -> Path:
    """Locate a SoundFont by file name (or take a path as is) or raise naming what to install."""
    given = Path(name)
    if given.is_absolute() or len(given.parts) > 1:
        if given.is_file():
            return given
        raise SoundFontNotFoundError(f"SoundFont {given} does not exist")
    dirs = soundfont_dirs()
    for folder in dirs:
        if (folder / name).is_file():
            return folder / name
    package = DEBIAN_PACKAGES.get(name)
    hint = (
        f"install the Debian package {package!r} (apt-get install {package})"
        if package
        else (f"put it in one of these folders or point {SOUNDFONT_ENV} at its folder")
    )
    searched = ", ".join(str(d) for d in dirs)
    raise SoundFontNotFoundError(f"SoundFont {name!r} not found in {searched}: {hint}")


@dataclass(frozen=True)
class Part:
    """One instrument of a clip: the notes it plays on a MIDI channel with a bank/program."""

    channel: int
    program: int
    notes: Sequence[Note]
    bank: int = 0
    volume: int = 100  # MIDI CC 7, 0..127: the part's level in the mix

    @property
    def is_drums(self) -> bool:
        return self.bank == DRUM_BANK


class SoundFontRenderer:
    """A loaded SoundFont that renders lists of parts to mono float32 arrays of an exact length."""

    def __init__(self, path: Path, sample_rate: int = 16000) -> None:
        import tinysoundfont  # lazy: a compiled extension only the demo needs

        self.path = Path(path)
        self.sample_rate = sample_rate
        self._synth = tinysoundfont.Synth(samplerate=sample_rate)
        try:
            self._sfid = self._synth.sfload(str(self.path))
        except Exception as exc:  # tinysoundfont raises a bare Exception on unreadable files
            raise ValueError(f"{self.path}: cannot load as a SoundFont ({exc})") from exc

    def has_preset(self, bank: int, program: int) -> bool:
        return self._synth.sfpreset_name(self._sfid, bank, program) is not None

    def render(self, parts: Sequence[Part], n_samples: int) -> np.ndarray:
        """Mono float32 of exactly `n_samples`; notes still sounding at the end are cut off."""
        self._silence()
        for part in parts:
            self._select(part)
        stereo = memoryview(bytearray(n_samples * 2 * 4))  # interleaved float32 pairs
        done = 0
        for at, _is_on, channel, key, velocity in self._events(parts, n_samples):
            done = self._generate(stereo, done, at)
            if velocity:
                self._synth.noteon(channel, key, velocity)
            else:
                self._synth.noteoff(channel, key)
        self._generate(stereo, done, n_samples)
        self._silence()  # leaves no tail for the next clip (and frees the voices now)
        return np.frombuffer(stereo, dtype=np.float32).reshape(-1, 2).mean(axis=1)

    def render_stems(self, parts: Sequence[Part], n_samples: int) -> list[np.ndarray]:
        """Each part rendered alone (the synth has no shared effects, so the stems sum to the mix)."""
        return [self.render([part], n_samples) for part in parts]

    def _select(self, part: Part) -> None:
        try:
            self._synth.program_select(part.channel, self._sfid, part.bank, part.program, is_drums=part.is_drums)
        except RuntimeError as exc:
            raise ValueError(
                f"{self.path.name}: no preset for bank {part.bank}, program {part.program} ({exc})"
            ) from exc
        self._synth.control_change(part.channel, 7, int(np.clip(part.volume, 0, 127)))

    def _events(self, parts: Sequence[Part], n_samples: int) -> list[tuple[int, int, int, int, int]]:
        """(sample, is_on, channel, key, velocity) sorted: at the same sample note-offs come first,
        so a repeated key is released before it is struck again."""
        events = []
        for part in parts:
            for note in part.notes:
                start = round(note.start * self.sample_rate)
                end = max(start + 1, round(note.end * self.sample_rate))
                events.append((start, 1, part.channel, note.key, note.velocity))
                events.append((end, 0, part.channel, note.key, 0))
        return sorted(e for e in events if e[0] < n_samples)

    def _generate(self, stereo: memoryview, done: int, until: int) -> int:
        """Render frames [done, until) into the stereo buffer; returns the new position."""
        if until > done:
            self._synth.generate(until - done, buffer=stereo[done * 8 : until * 8])
        return max(done, until)

    def _silence(self) -> None:
        """Stop every voice, reset every controller and render until the released voices are gone."""
        synth = self._synth
        synth.sounds_off()
        for channel in range(16):
            synth.control_change(channel, 121, 0)  # reset all controllers (pitch bend, volume, ...)
        block = memoryview(bytearray(FLUSH_BLOCK * 2 * 4))
        for _ in range(MAX_FLUSH_BLOCKS):
            synth.generate(FLUSH_BLOCK, buffer=block)
            if not np.frombuffer(block, dtype=np.float32).any():
                return
        raise RuntimeError(f"{self.path.name}: voices still sounding after sounds_off; cannot reset the synth")
