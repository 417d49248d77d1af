"""Real drum and cymbal one-shots (Debian `hydrogen-drumkits`) triggered at the demo's drum-channel notes.

A Hydrogen kit is a folder with a `drumkit.xml` that names each instrument ("Kick", "Hi-Hat Closed",
"Crash Left" ...) and lists its samples as velocity layers. Instruments are sorted into kinds by
name; a General-MIDI drum key (the notes of `compositions.drum_part`, `cymbal_part` ...) is played by the
kit's instrument of the matching kind. Skins (kick, snare, toms) and cymbals (hats, crash, ride) are
separate kinds, so a part built from skin keys sounds only skins and its `drums` label stays exact.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from mirops.data.compositions import (
    CHINA,
    CLOSED_HAT,
    CRASH,
    CRASH_2,
    KICK,
    OPEN_HAT,
    PEDAL_HAT,
    RIDE,
    RIDE_2,
    RIDE_BELL,
    SIDE_STICK,
    SNARE,
    SNARE_2,
    SPLASH,
    TOMS,
    Note,
)

HYDROGEN_DIR = Path("/usr/share/hydrogen/data/drumkits")
DRUMKIT_ENV = "MIROPS_DRUMKIT_DIR"
DEBIAN_PACKAGE = "hydrogen-drumkits"

SKINS = ("kick", "snare", "tom")
CYMBALS = ("hat", "pedal_hat", "open_hat", "crash", "splash", "china", "ride", "ride_bell")
REQUIRED = ("kick", "snare", "tom", "hat", "crash")  # what the demo's patterns need from a kit
# Kits whose instrument names do not describe their samples (Audiophob's "Kick" is a tom sample and
# its "Pedal HH" a shaker): a label taken from their names would be wrong.
MISNAMED_KITS = frozenset({"Audiophob"})

# GM drum key -> kinds that may play it, best first (a kit without a pedal hat plays the closed one).
KEY_KINDS: dict[int, tuple[str, ...]] = {
    KICK: ("kick",),
    35: ("kick",),
    SIDE_STICK: ("snare",),
    SNARE: ("snare",),
    SNARE_2: ("snare",),
    **{tom: ("tom",) for tom in TOMS},
    CLOSED_HAT: ("hat",),
    PEDAL_HAT: ("pedal_hat", "hat"),
    OPEN_HAT: ("open_hat", "hat"),
    CRASH: ("crash", "china", "splash"),
    CRASH_2: ("crash", "china", "splash"),
    SPLASH: ("splash", "crash"),
    CHINA: ("china", "crash"),
    RIDE: ("ride", "ride_bell", "crash"),
    RIDE_2: ("ride", "ride_bell", "crash"),
    RIDE_BELL: ("ride_bell", "ride", "crash"),
}
# Samples of the kinds that are not a drum or a cymbal (rolls, claps, cowbells) are never used.
IGNORED_WORDS = ("roll", "clap", "cowbell", "stick", "rim click", "tambourine", "semi", "swish", "choke")


class DrumKitsNotFoundError(FileNotFoundError):
    """No usable Hydrogen kit is installed; the message names the Debian package."""


@dataclass(frozen=True)
class Layer:
    path: Path
    low: float  # velocity range of the layer, 0..1
    high: float
    gain: float = 1.0


@dataclass(frozen=True)
class KitInstrument:
    name: str
    kind: str
    layers: tuple[Layer, ...]
    volume: float = 1.0

    def layer_for(self, velocity: int) -> Layer:
        """The layer whose velocity range holds `velocity` (1..127), else the nearest one."""
        v = velocity / 127
        return min(self.layers, key=lambda lay: 0.0 if lay.low <= v <= lay.high else min(abs(v - lay.low),
                                                                                           abs(v - lay.high)))


@dataclass(frozen=True)
class DrumKit:
    name: str
    instruments: dict[str, tuple[KitInstrument, ...]]  # kind -> instruments of that kind, in the kit's order

    def instrument_for(self, key: int) -> KitInstrument:
        for kind in KEY_KINDS.get(key, ()):
            found = self.instruments.get(kind)
            if found:
                return found[_tom_index(key, len(found))] if kind == "tom" else found[0]
        raise KeyError(f"drum kit {self.name!r} has nothing to play GM drum key {key}")


def _tom_index(key: int, n_toms: int) -> int:
    """Spread the GM toms (low floor tom .. high tom) over the kit's toms, sorted low to high."""
    return round(TOMS.index(key) / (len(TOMS) - 1) * (n_toms - 1)) if key in TOMS else 0


def kind_of(name: str) -> str | None:
    """The kind of a kit instrument from its name ("Hi-Hat Closed (Paiste 14")" -> "hat"), None if unused."""
    text = re.sub(r"\(.*?\)", " ", name.lower())  # brand and size notes: "Custom" must not read as a tom
    words = set(re.findall(r"[a-z]+", text))
    if not words or any(w in text for w in IGNORED_WORDS):
        return None
    if "hat" in text or "hh" in words:
        if "pedal" in words or "foot" in words:
            return "pedal_hat"
        return "open_hat" if words & {"open", "opened", "op"} else "hat"
    if "ride" in text:
        return "ride_bell" if "bell" in words else "ride"
    for kind in ("crash", "splash", "china"):
        if kind in text:
            return kind
    if "cymbal" in text:
        return "crash"
    if "kick" in text or "bassdrum" in text or "bass drum" in text or "bd" in words:
        return "kick"
    if "snare" in text:
        return "snare"
    if "tom" in text:
        return "tom"
    return None


def _tom_height(name: str) -> int:
    text = name.lower()
    if "floor" in text or "low" in text:
        return 0
    if "mid" in text:
        return 1
    return 2 if "hi" in text else 1


def _text(element: ET.Element, tag: str, default: str = "") -> str:
    found = element.find(tag)
    return found.text.strip() if found is not None and found.text else default


def read_kit(folder: Path) -> DrumKit:
    """Parse `folder/drumkit.xml` (namespaces stripped: Hydrogen wrote several schema versions)."""
    root = ET.parse(folder / "drumkit.xml").getroot()
    for element in root.iter():
        element.tag = element.tag.rsplit("}", 1)[-1]
    kinds: dict[str, list[KitInstrument]] = {}
    for inst in root.iter("instrument"):
        name = _text(inst, "name")
        kind = kind_of(name)
        if kind is None:
            continue
        layers = tuple(
            Layer(folder / _text(lay, "filename"), float(_text(lay, "min", "0")), float(_text(lay, "max", "1")),
                  float(_text(lay, "gain", "1")))
            for lay in inst.iter("layer")
            if _text(lay, "filename") and (folder / _text(lay, "filename")).is_file()
        )
        if not layers and _text(inst, "filename") and (folder / _text(inst, "filename")).is_file():
            layers = (Layer(folder / _text(inst, "filename"), 0.0, 1.0),)  # old single-sample instruments
        if layers:
            kinds.setdefault(kind, []).append(KitInstrument(name, kind, layers, float(_text(inst, "volume", "1"))))
    kinds["tom"] = sorted(kinds.get("tom", []), key=lambda t: _tom_height(t.name))  # stable: kit order within
    return DrumKit(folder.name, {k: tuple(v) for k, v in kinds.items() if v})


def drumkit_dir() -> Path:
    return Path(os.environ.get(DRUMKIT_ENV) or HYDROGEN_DIR)


def find_kits(folder: Path | None = None) -> dict[str, DrumKit]:
    """The installed kits that can play the demo's patterns (kick, snare, toms, hats, crash), by name."""
    folder = folder or drumkit_dir()
    if not folder.is_dir():
        return {}
    kits = {}
    for path in sorted(p for p in folder.iterdir() if (p / "drumkit.xml").is_file()):
        if path.name in MISNAMED_KITS:
            continue
        kit = read_kit(path)
        if all(kind in kit.instruments for kind in REQUIRED):
            kits[kit.name] = kit
    return kits


def missing_kits_message(folder: Path | None = None) -> str:
    folder = folder or drumkit_dir()
    return (f"no Hydrogen drum kit in {folder}: install the Debian package {DEBIAN_PACKAGE!r} "
            f"(apt-get install {DEBIAN_PACKAGE}) or point {DRUMKIT_ENV} at a folder of kits")


class OneShotPlayer:
    """Plays note lists with the samples of installed kits, decoded with soundfile and resampled once per file."""

    def __init__(self, kits: dict[str, DrumKit], sample_rate: int) -> None:
        self.kits = kits
        self.sample_rate = sample_rate
        self._samples: dict[Path, np.ndarray] = {}

    def sample(self, path: Path) -> np.ndarray:
        if path not in self._samples:
            self._samples[path] = self._load(path)
        return self._samples[path]

    def _load(self, path: Path) -> np.ndarray:
        import torch  # lazy, as in data.audio: planning the demo (and a demo without kits) needs no torch
        import torchaudio.functional as AF

        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
        mono = torch.from_numpy(np.ascontiguousarray(wave.mean(axis=1)))
        if rate != self.sample_rate:
            mono = AF.resample(mono, rate, self.sample_rate)
        return mono.numpy().astype(np.float64)

    def render(self, kit_name: str, notes: Sequence[Note], n_samples: int) -> np.ndarray:
        """Mono float32 of exactly `n_samples`: each note starts its sample, scaled by velocity and the
        kit's gains; samples ringing past the end are cut off."""
        kit = self.kits[kit_name]
        out = np.zeros(n_samples, dtype=np.float64)
        for note in notes:
            start = round(note.start * self.sample_rate)
            if start >= n_samples:
                continue
            inst = kit.instrument_for(note.key)
            layer = inst.layer_for(note.velocity)
            wave = self.sample(layer.path)[: n_samples - start]
            out[start : start + len(wave)] += wave * (note.velocity / 127 * inst.volume * layer.gain)
        return out.astype(np.float32)
