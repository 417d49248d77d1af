"""The demo's compositions as notes: chords, melodies, bass lines and drum patterns over one chord progression.

Pure functions of a seeded numpy Generator and a `Song` (key, tempo, progression); they return note
events in seconds. Every part plays from the first bar to the end, so an instrument in a clip's set
is audible throughout it and its label is exact.

Styles (`STYLES`) are generation presets for the tagging variant: which instruments play, with which
GM programs and drum kits, at which tempi, to which groove. A style tag is true of the audio because
the audio was generated from the preset; tempo tags (`tempo_tag`) follow from the generated tempo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

MAJOR = (0, 2, 4, 5, 7, 9, 11)
NATURAL_MINOR = (0, 2, 3, 5, 7, 8, 10)
# Progressions as scale degrees (0 = tonic), one chord per bar, cycled over the clip.
PROGRESSIONS = {
    False: ((0, 4, 5, 3), (0, 3, 4, 3), (1, 4, 0, 5), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 0, 4)),
    True: ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4)),
}
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# GM drum map: skins (the "drums" class) and cymbals (the "cymbals" class) never share a key.
KICK, SIDE_STICK, SNARE, SNARE_2 = 36, 37, 38, 40
TOMS = (41, 43, 45, 47, 48, 50)
CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 42, 44, 46
CRASH, RIDE, RIDE_BELL, SPLASH = 49, 51, 53, 55
CHINA, CRASH_2, RIDE_2 = 52, 57, 59

TIMING_JITTER_S = 0.006  # a few ms: played by people, not a grid


@dataclass(frozen=True, order=True)
class Note:
    start: float  # seconds
    end: float  # seconds
    key: int  # MIDI key
    velocity: int  # 1..127


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class, 0 = C
    minor: bool

    @property
    def scale(self) -> tuple[int, ...]:
        steps = NATURAL_MINOR if self.minor else MAJOR
        return tuple((self.tonic + s) % 12 for s in steps)

    @property
    def name(self) -> str:
        return f"{PITCH_NAMES[self.tonic]} {'minor' if self.minor else 'major'}"

    def triad(self, degree: int) -> tuple[int, int, int]:
        """Pitch classes (root, third, fifth) of the diatonic triad on `degree`."""
        scale = self.scale
        return scale[degree % 7], scale[(degree + 2) % 7], scale[(degree + 4) % 7]


@dataclass(frozen=True)
class Song:
    key: Key
    tempo: float  # beats per minute
    seconds: float
    progression: tuple[int, ...]  # scale degree of the chord of each bar, cycled
    beats_per_bar: int = 4

    @property
    def beat_s(self) -> float:
        return 60.0 / self.tempo

    @property
    def bar_s(self) -> float:
        return self.beat_s * self.beats_per_bar

    @property
    def n_bars(self) -> int:
        return int(np.ceil(self.seconds / self.bar_s))

    def chord(self, bar: int) -> tuple[int, int, int]:
        return self.key.triad(self.progression[bar % len(self.progression)])

    def time(self, bar: int, beat: float) -> float:
        return bar * self.bar_s + beat * self.beat_s


def random_key(rng: np.random.Generator) -> Key:
    return Key(tonic=int(rng.integers(12)), minor=bool(rng.random() < 0.4))


def random_tempo(rng: np.random.Generator) -> float:
    return float(rng.integers(70, 151))


def random_song(rng: np.random.Generator, key: Key, tempo: float, seconds: float) -> Song:
    options = PROGRESSIONS[key.minor]
    progression = options[int(rng.integers(len(options)))]
    return Song(key=key, tempo=tempo, seconds=seconds, progression=progression)


# -- helpers -------------------------------------------------------------------------------------------


def keys_with(pitch_classes: tuple[int, ...], low: int, high: int) -> list[int]:
    """MIDI keys in [low, high] whose pitch class is in `pitch_classes`, ascending."""
    wanted = set(pitch_classes)
    return [k for k in range(low, high + 1) if k % 12 in wanted]


def _note(rng: np.random.Generator, start: float, length: float, key: int, velocity: float) -> Note:
    start = max(0.0, start + float(rng.normal(0.0, TIMING_JITTER_S)))
    vel = int(np.clip(round(velocity + rng.normal(0.0, 6.0)), 1, 127))
    return Note(start=start, end=start + max(length, 0.02), key=int(key), velocity=vel)


def _playable(notes: list[Note], song: Song) -> list[Note]:
    """Notes that start inside the clip, ordered by time (the renderer cuts what rings past the end)."""
    return sorted(n for n in notes if n.start < song.seconds)


def _register(rng: np.random.Generator, low: int, high: int, width: int) -> tuple[int, int]:
    """A random window of `width` semitones inside [low, high]: each part sits somewhere in its range."""
    width = min(width, high - low)
    start = int(rng.integers(low, high - width + 1))
    return start, start + width


# -- pitched parts -------------------------------------------------------------------------------------


CHORD_PATTERNS = ("block", "comp", "arpeggio")
BASS_PATTERNS = ("roots", "root_fifth", "eighths", "walking")


def chord_part(
    rng: np.random.Generator, song: Song, low: int, high: int, patterns: tuple[str, ...] = CHORD_PATTERNS
) -> list[Note]:
    """Block chords, rhythmic comping or arpeggios (one of `patterns`), one chord per bar, in a one-octave window."""
    style = patterns[int(rng.integers(len(patterns)))]
    lo, hi = _register(rng, low, high, 13)
    velocity = float(rng.integers(60, 100))
    comp_rhythm = ((0, 1.5, 2.5), (0, 1, 2, 3), (0, 0.5, 2, 2.5), (0.5, 1.5, 2.5, 3.5))[int(rng.integers(4))]
    notes: list[Note] = []
    for bar in range(song.n_bars):
        voicing = keys_with(song.chord(bar), lo, hi)
        if style == "block":
            for half in (0, 2):
                t = song.time(bar, half)
                notes += [_note(rng, t, 1.9 * song.beat_s, k, velocity) for k in voicing]
        elif style == "comp":
            for beat in comp_rhythm:
                t = song.time(bar, beat)
                notes += [_note(rng, t, 0.45 * song.beat_s, k, velocity) for k in voicing]
        else:
            order = voicing + voicing[-2:0:-1]  # up and back down
            for step in range(2 * song.beats_per_bar):
                key = order[step % len(order)]
                notes.append(_note(rng, song.time(bar, step / 2), 0.5 * song.beat_s, key, velocity))
    return _playable(notes, song)


def melody_part(rng: np.random.Generator, song: Song, low: int, high: int) -> list[Note]:
    """A stepwise walk on the scale with mixed rhythms and a few rests; strong beats land on chord tones."""
    lo, hi = _register(rng, low, high, 19)
    scale_keys = keys_with(song.key.scale, lo, hi)
    velocity = float(rng.integers(70, 110))
    durations = np.array([0.5, 1.0, 1.0, 1.5, 2.0])
    steps = np.array([-3, -2, -1, -1, 0, 1, 1, 2, 3])
    index = len(scale_keys) // 2
    beat, total_beats = 0.0, song.seconds / song.beat_s
    notes: list[Note] = []
    while beat < total_beats:
        length = float(rng.choice(durations))
        bar, in_bar = divmod(beat, song.beats_per_bar)
        if in_bar == 0:  # downbeat: move to the nearest chord tone
            chord = set(song.chord(int(bar)))
            tones = [i for i, k in enumerate(scale_keys) if k % 12 in chord]
            index = min(tones, key=lambda i: abs(i - index))
        else:
            index = int(np.clip(index + rng.choice(steps), 0, len(scale_keys) - 1))
        if in_bar == 0 or rng.random() > 0.12:  # rests never fall on a downbeat: the part stays audible
            t = beat * song.beat_s
            notes.append(_note(rng, t, 0.92 * length * song.beat_s, scale_keys[index], velocity))
        beat += length
    return _playable(notes, song)


def bass_part(
    rng: np.random.Generator, song: Song, low: int, high: int, patterns: tuple[str, ...] = BASS_PATTERNS
) -> list[Note]:
    """Roots, root-fifth, driving eighths or a walking line (one of `patterns`), in the lowest octave and a half."""
    style = patterns[int(rng.integers(len(patterns)))]
    lo, hi = low, min(high, low + 18)
    velocity = float(rng.integers(75, 110))
    notes: list[Note] = []
    for bar in range(song.n_bars):
        root_pc, third_pc, fifth_pc = song.chord(bar)
        root = keys_with((root_pc,), lo, lo + 11)[0]
        fifth = keys_with((fifth_pc,), root, hi)[0]
        if style == "roots":
            line = [(0, 2, root), (2, 2, root)]
        elif style == "root_fifth":
            line = [(0, 1.5, root), (1.5, 0.5, root), (2, 2, fifth)]
        elif style == "eighths":
            line = [(i / 2, 0.5, root) for i in range(2 * song.beats_per_bar)]
        else:
            third = keys_with((third_pc,), root, hi)[0]
            next_root = keys_with((song.chord(bar + 1)[0],), lo, lo + 11)[0]
            approach = next_root - 1 if rng.random() < 0.5 else next_root + 1
            line = [(0, 1, root), (1, 1, third), (2, 1, fifth), (3, 1, approach)]
        for beat, length, key in line:
            t = song.time(bar, beat)
            notes.append(_note(rng, t, 0.9 * length * song.beat_s, key, velocity))
    return _playable(notes, song)


# -- drum-channel parts --------------------------------------------------------------------------------


def drum_part(rng: np.random.Generator, song: Song, low: int = 0, high: int = 127) -> list[Note]:
    """Kick, snare and toms only (no cymbal keys), so a 'drums' label never implies 'cymbals'."""
    kicks = ((0, 2), (0, 1.5, 2), (0, 2.5), (0, 1, 2, 3), (0, 0.75, 2, 2.5))[int(rng.integers(5))]
    snare = SNARE if rng.random() < 0.7 else SNARE_2
    ghost = rng.random() < 0.4
    fill_every = int(rng.choice([2, 4]))
    velocity = float(rng.integers(85, 120))
    notes: list[Note] = []
    for bar in range(song.n_bars):
        fill = bar % fill_every == fill_every - 1
        for beat in kicks:
            notes.append(_note(rng, song.time(bar, beat), 0.2, KICK, velocity))
        for beat in (1, 3):
            if fill and beat == 3:
                continue
            notes.append(_note(rng, song.time(bar, beat), 0.2, snare, velocity))
        if ghost:
            notes.append(_note(rng, song.time(bar, 2.75), 0.1, snare, velocity * 0.5))
        if fill:  # a tom run down over the last beat leads into the next bar
            for i, tom in enumerate(sorted(rng.choice(TOMS, size=4, replace=False), reverse=True)):
                notes.append(_note(rng, song.time(bar, 3 + i / 4), 0.2, int(tom), velocity * 0.9))
    return _playable(notes, song)


def cymbal_part(rng: np.random.Generator, song: Song, low: int = 0, high: int = 127) -> list[Note]:
    """Hi-hats or ride in eighths or sixteenths, a crash at phrase starts: cymbal keys only."""
    timekeeper = (CLOSED_HAT, CLOSED_HAT, RIDE, PEDAL_HAT)[int(rng.integers(4))]
    per_beat = int(rng.choice([2, 2, 4])) if timekeeper != RIDE else 2
    open_on_and = rng.random() < 0.3
    crash_every = int(rng.choice([2, 4]))
    velocity = float(rng.integers(65, 100))
    notes: list[Note] = []
    for bar in range(song.n_bars):
        if bar % crash_every == 0:
            notes.append(_note(rng, song.time(bar, 0), 1.5, CRASH if rng.random() < 0.8 else SPLASH, 110))
        for i in range(per_beat * song.beats_per_bar):
            beat = i / per_beat
            key = OPEN_HAT if open_on_and and i % (2 * per_beat) == per_beat * 2 - 1 else timekeeper
            accent = 1.0 if i % per_beat == 0 else 0.75
            notes.append(_note(rng, song.time(bar, beat), 0.1, key, velocity * accent))
    return _playable(notes, song)


def four_on_floor_drums(rng: np.random.Generator, song: Song, low: int = 0, high: int = 127) -> list[Note]:
    """Dance music: a kick on every beat, the snare on two and four, now and then a kick pickup."""
    snare = SNARE if rng.random() < 0.5 else SNARE_2
    pickup = rng.random() < 0.5
    velocity = float(rng.integers(95, 120))
    notes: list[Note] = []
    for bar in range(song.n_bars):
        for beat in range(song.beats_per_bar):
            notes.append(_note(rng, song.time(bar, beat), 0.2, KICK, velocity))
        for beat in (1, 3):
            notes.append(_note(rng, song.time(bar, beat), 0.2, snare, velocity * 0.9))
        if pickup and bar % 4 == 3:
            notes.append(_note(rng, song.time(bar, 3.5), 0.2, KICK, velocity * 0.8))
    return _playable(notes, song)


def four_on_floor_cymbals(rng: np.random.Generator, song: Song, low: int = 0, high: int = 127) -> list[Note]:
    """Dance music: an open hat on every off-beat over closed sixteenths, a crash every four bars."""
    sixteenths = rng.random() < 0.6
    velocity = float(rng.integers(70, 100))
    notes: list[Note] = []
    for bar in range(song.n_bars):
        if bar % 4 == 0:
            notes.append(_note(rng, song.time(bar, 0), 1.5, CRASH, 110))
        for beat in range(song.beats_per_bar):
            notes.append(_note(rng, song.time(bar, beat + 0.5), 0.2, OPEN_HAT, velocity))
            if sixteenths:
                for quarter in (0.25, 0.75):
                    notes.append(_note(rng, song.time(bar, beat + quarter), 0.05, CLOSED_HAT, velocity * 0.6))
    return _playable(notes, song)


SWING = 2 / 3  # the off-beat eighth of a swing feel falls on the last triplet of the beat


def swing_drums(rng: np.random.Generator, song: Song, low: int = 0, high: int = 127) -> list[Note]:
    """Jazz: a feathered kick on every beat and snare comping on swung off-beats."""
    velocity = float(rng.integers(70, 95))
    notes: list[Note] = []
    for bar in range(song.n_bars):
        for beat in range(song.beats_per_bar):
            notes.append(_note(rng, song.time(bar, beat), 0.2, KICK, velocity * 0.6))
        comps = rng.choice(song.beats_per_bar, size=int(rng.integers(2, 4)), replace=False)
        for beat in sorted(comps):
            notes.append(_note(rng, song.time(bar, beat + SWING), 0.1, SNARE, velocity))
    return _playable(notes, song)


def swing_cymbals(rng: np.random.Generator, song: Song, low: int = 0, high: int = 127) -> list[Note]:
    """Jazz: the ride's "ding, ding-a ding" with the hi-hat foot on two and four."""
    ride = RIDE if rng.random() < 0.8 else RIDE_2
    velocity = float(rng.integers(70, 100))
    notes: list[Note] = []
    for bar in range(song.n_bars):
        for beat in range(song.beats_per_bar):
            notes.append(_note(rng, song.time(bar, beat), 0.3, ride, velocity))
            if beat % 2 == 1:
                notes.append(_note(rng, song.time(bar, beat + SWING), 0.2, ride, velocity * 0.7))
                notes.append(_note(rng, song.time(bar, beat), 0.1, PEDAL_HAT, velocity * 0.8))
    return _playable(notes, song)


PartFn = Callable[[np.random.Generator, Song, int, int], list[Note]]

# A groove is the pair of drum-channel parts a style plays: (skins, cymbals), kept apart so that a
# 'drums' label never implies 'cymbals'.
GROOVES: dict[str, tuple[PartFn, PartFn]] = {
    "backbeat": (drum_part, cymbal_part),
    "four_on_floor": (four_on_floor_drums, four_on_floor_cymbals),
    "swing": (swing_drums, swing_cymbals),
}


def drum_kit_part(
    rng: np.random.Generator, song: Song, low: int = 0, high: int = 127, groove: str = "backbeat"
) -> list[Note]:
    """A full kit (skins and cymbals): the 'drums' part when 'cymbals' is not a class of its own."""
    skins, cymbals = GROOVES[groove]
    return sorted(skins(rng, song, low, high) + cymbals(rng, song, low, high))


PARTS: dict[str, PartFn] = {
    "chords": chord_part,
    "melody": melody_part,
    "bass": bass_part,
    "drums": drum_part,
    "cymbals": cymbal_part,
}


def part_for(
    role: str, rng: np.random.Generator, song: Song, low: int, high: int, style: Style | None = None
) -> list[Note]:
    """The notes of one instrument playing `role` in `song`, within the MIDI keys [low, high]; a `style`
    picks the groove of the drum channel and the chord and bass patterns."""
    if role not in PARTS:
        raise ValueError(f"unknown role {role!r}; expected one of {sorted(PARTS)}")
    if style is None:
        return PARTS[role](rng, song, low, high)
    if role in ("drums", "cymbals"):
        return GROOVES[style.groove][role == "cymbals"](rng, song, low, high)
    if role == "chords":
        return chord_part(rng, song, low, high, style.chord_patterns)
    if role == "bass":
        return bass_part(rng, song, low, high, style.bass_patterns)
    return melody_part(rng, song, low, high)


# -- styles and tempo tags (the tagging variant) -------------------------------------------------------

# Tempo tags by beats per minute: [low, high). Tempi are drawn inside one band, so the tag is exact.
TEMPO_BANDS: dict[str, tuple[int, int]] = {"slow": (60, 90), "medium": (90, 130), "fast": (130, 170)}
TEMPO_TAGS = tuple(TEMPO_BANDS)


def tempo_tag(bpm: float) -> str:
    for tag, (low, high) in TEMPO_BANDS.items():
        if low <= bpm < high:
            return tag
    raise ValueError(f"tempo {bpm} BPM is outside the tagged bands {TEMPO_BANDS}")


def tempo_in(rng: np.random.Generator, tag: str) -> float:
    """A whole-number tempo inside the band of `tag`."""
    low, high = TEMPO_BANDS[tag]
    return float(rng.integers(low, high))


@dataclass(frozen=True)
class Style:
    """A generation preset: what a style's clips play, so that its tag is true of the audio.

    `core` instruments play in every clip of the style, `extras` (most likely first) fill the rest;
    `programs` narrows the GM programs of an instrument class (e.g. distorted guitars for rock) and
    `kits` the bank-128 drum kits. Instruments are OpenMIC class names (see gm.py)."""

    name: str
    core: tuple[str, ...]
    extras: tuple[str, ...]
    tempo_weights: dict[str, float]  # tempo tag -> relative frequency (0: never)
    groove: str  # key of GROOVES: the drum channel's pattern
    chord_patterns: tuple[str, ...] = CHORD_PATTERNS
    bass_patterns: tuple[str, ...] = BASS_PATTERNS
    programs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    kits: tuple[int, ...] = (0,)
    acoustic_drums: bool = True  # may play the real (acoustic) one-shots of a hydrogen kit

    @property
    def instruments(self) -> tuple[str, ...]:
        return self.core + self.extras


STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style(
            "classical",
            core=(),
            extras=("violin", "piano", "cello", "flute", "clarinet", "trumpet", "organ", "trombone", "voice",
                    "mallet_percussion"),
            tempo_weights={"slow": 0.5, "medium": 0.4, "fast": 0.1},
            groove="backbeat",  # unused: no drums in the palette
            chord_patterns=("block", "arpeggio"),
            bass_patterns=("roots", "root_fifth"),
            programs={"piano": (0,), "organ": (19,), "voice": (52,), "mallet_percussion": (9, 12, 13)},
        ),
        Style(
            "electronic",
            core=("synthesizer", "drums"),
            extras=("bass", "cymbals", "piano", "voice"),
            tempo_weights={"slow": 0.0, "medium": 0.4, "fast": 0.6},
            groove="four_on_floor",
            chord_patterns=("comp", "arpeggio"),
            bass_patterns=("eighths", "roots"),
            programs={"bass": (38, 39), "piano": (4, 5)},
            kits=(24, 25),  # the electronic and TR-808 kits: drum machines, never acoustic one-shots
            acoustic_drums=False,
        ),
        Style(
            "rock",
            core=("guitar", "drums", "bass"),
            extras=("voice", "cymbals", "organ", "piano", "synthesizer"),
            tempo_weights={"slow": 0.1, "medium": 0.5, "fast": 0.4},
            groove="backbeat",
            chord_patterns=("block", "comp"),
            bass_patterns=("roots", "root_fifth", "eighths"),
            programs={"guitar": (29, 30), "bass": (33, 34), "organ": (16, 17, 18), "piano": (0, 1),
                      "synthesizer": (80, 81, 88, 89)},
            kits=(0, 8, 16),
        ),
        Style(
            "jazz",
            core=("bass", "cymbals"),
            extras=("saxophone", "piano", "drums", "trumpet", "guitar", "trombone", "clarinet", "voice",
                    "mallet_percussion"),
            tempo_weights={"slow": 0.3, "medium": 0.4, "fast": 0.3},
            groove="swing",
            chord_patterns=("comp",),
            bass_patterns=("walking",),
            programs={"bass": (32,), "guitar": (26,), "piano": (0,), "mallet_percussion": (11,)},
            kits=(32, 40),
        ),
        Style(
            "folk",
            core=("guitar",),
            extras=("voice", "violin", "banjo", "accordion", "bass", "flute"),
            tempo_weights={"slow": 0.3, "medium": 0.5, "fast": 0.2},
            groove="backbeat",  # unused: no drums in the palette
            chord_patterns=("comp", "arpeggio"),
            bass_patterns=("roots", "root_fifth"),
            programs={"guitar": (24, 25), "bass": (32,), "accordion": (21,)},
        ),
    )
}
