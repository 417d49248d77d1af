"""General MIDI: which programs play each OpenMIC-style instrument class, and in which role and register.

The demo renders notes through GM SoundFonts, so a class can only be rendered if General MIDI has
a program for it. Drums and cymbals are notes on the drum channel (MIDI channel 10, bank 128).
"""

from __future__ import annotations

from dataclasses import dataclass

DRUM_CHANNEL = 9  # MIDI channel 10, zero-based
DRUM_BANK = 128
# Drum kits (bank 128 presets) that FluidR3_GM, TimGM6mb and MuseScore_General all provide, with the
# standard GM drum map (the orchestra kit, 48, maps keys differently, so it is left out).
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)

ROLES = ("chords", "melody", "bass", "drums", "cymbals")

# OpenMIC-2018 classes that General MIDI cannot play.
NO_GM_PROGRAM = {
    "mandolin": "General MIDI has no mandolin program",
    "ukulele": "General MIDI has no ukulele program",
}


@dataclass(frozen=True)
class GMInstrument:
    """One instrument class: the GM programs that may play it, its musical role and register."""

    name: str
    programs: tuple[int, ...]
    role: str
    low: int  # lowest MIDI key the part may use
    high: int  # highest MIDI key the part may use
    # Programs among `programs` that play chords whatever `role` says (synth pads, where leads play melodies).
    chord_programs: tuple[int, ...] = ()

    @property
    def is_drum_kit(self) -> bool:
        return self.role in ("drums", "cymbals")

    def role_for(self, program: int) -> str:
        return "chords" if program in self.chord_programs else self.role


def _span(first: int, last: int) -> tuple[int, ...]:
    return tuple(range(first, last + 1))


GM_INSTRUMENTS: dict[str, GMInstrument] = {
    inst.name: inst
    for inst in (
        GMInstrument("accordion", _span(21, 22), "chords", 53, 79),
        GMInstrument("banjo", (105,), "chords", 55, 81),
        GMInstrument("bass", _span(32, 39), "bass", 28, 55),
        GMInstrument("cello", (42,), "melody", 36, 69),
        GMInstrument("clarinet", (71,), "melody", 52, 86),
        GMInstrument("cymbals", DRUM_KITS, "cymbals", 35, 81),
        GMInstrument("drums", DRUM_KITS, "drums", 35, 81),
        GMInstrument("flute", (73,), "melody", 62, 93),
        GMInstrument("guitar", _span(24, 31), "chords", 45, 76),
        GMInstrument("mallet_percussion", _span(8, 13), "melody", 60, 91),
        GMInstrument("organ", _span(16, 20), "chords", 48, 79),
        GMInstrument("piano", _span(0, 7), "chords", 45, 81),
        GMInstrument("saxophone", _span(64, 67), "melody", 49, 80),
        GMInstrument("synthesizer", _span(80, 95), "melody", 48, 84, chord_programs=_span(88, 95)),
        GMInstrument("trombone", (57,), "melody", 40, 70),
        GMInstrument("trumpet", (56,), "melody", 55, 82),
        GMInstrument("violin", (40,), "melody", 55, 91),
        GMInstrument("voice", _span(52, 54), "melody", 52, 76),
    )
}


# The classes from most to least common, for the demo's long-tailed class frequencies: an assumed order
# (voices, drums and guitars everywhere; banjos and accordions rare), not OpenMIC's measured counts.
PREVALENCE = (
    "voice", "drums", "guitar", "piano", "bass", "cymbals", "synthesizer", "violin", "organ", "saxophone",
    "trumpet", "cello", "flute", "mallet_percussion", "clarinet", "trombone", "accordion", "banjo",
)


def prevalence_rank(classes: list[str]) -> list[int]:
    """0 for the most common of `classes`, 1 for the next...; classes not in PREVALENCE come last, in order."""
    order = sorted(range(len(classes)), key=lambda i: (PREVALENCE.index(c) if (c := classes[i]) in PREVALENCE
                                                       else len(PREVALENCE), i))
    ranks = [0] * len(classes)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks


class UnknownInstrumentError(ValueError):
    """A class the demo cannot render; the message says why and which classes it can render."""


def gm_instrument(name: str) -> GMInstrument:
    if name in GM_INSTRUMENTS:
        return GM_INSTRUMENTS[name]
    known = ", ".join(sorted(GM_INSTRUMENTS))
    if name in NO_GM_PROGRAM:
        raise UnknownInstrumentError(
            f"class {name!r} cannot be rendered: {NO_GM_PROGRAM[name]}; pick classes among: {known}"
        )
    raise UnknownInstrumentError(f"class {name!r} has no General MIDI program in mirops; pick among: {known}")


def check_classes(classes: list[str]) -> list[GMInstrument]:
    """The GM instruments for `classes`, or a clear error for the first class that cannot be rendered."""
    if not classes:
        raise UnknownInstrumentError("demo.classes is empty; name at least one instrument class")
    if len(set(classes)) != len(classes):
        dupes = sorted({c for c in classes if classes.count(c) > 1})
        raise UnknownInstrumentError(f"demo.classes lists {dupes} more than once")
    return [gm_instrument(c) for c in classes]
