"""`mirops data demo`: OpenMIC- and MagnaTagATune-style datasets rendered offline through General-MIDI SoundFonts.

Each clip mixes instruments whose notes are generated in code, so its labels are known exactly.

- `instruments` (default, OpenMIC-like): 10 s clips of 1..max_instruments of the 18 OpenMIC classes
  General MIDI can play. Class frequencies are long-tailed (Zipf weights over `gm.PREVALENCE`), yet
  every class keeps `min_positives` annotated positives in every split. Labels are soft confidences
  with a share of (clip, class) pairs unannotated (NaN). A group is a recording session (tempo, key,
  GM programs, drum kit and SoundFont shared); splits are drawn by group.
- `tagging` (MTAT-like, for EAsT): 30 s clips, hard 0/1 tags: instruments, tempo (slow/medium/fast,
  from the generated tempo) and style (classical, electronic, rock, jazz, folk: the generation
  presets in `mirops.data.compositions`). A group is an artist: one style, SoundFont and drum kit,
  songs in any key.

Each group is rendered through one of the training SoundFonts (a timbre domain, the manifest's
`domain` column); some groups play their drums and cymbals with real one-shots from hydrogen-drumkits.
The instruments variant also renders a "production" batch through another SoundFont: the same music
in another timbre, for drift monitoring.

Everything is a function of `Settings.seed` (and of which drum kits are installed): the same seed
gives byte-identical files. Plans are cheap (no audio); rendering comes after planning.

The modules, in the order a build runs them:

- `plans`: what a demo is made of before any audio (sessions, clip plans, batches) and its random streams;
- `draws`: long-tailed draws that still give every class (tag, style) its quota in every split;
- `groups`: groups (sessions, artists) and the split each belongs to;
- `instruments`, `tagging`: the plans of the two variants (the instruments variant's production batch too);
- `render`: notes -> stems -> the mix of a clip, and a batch's audio files;
- `records`: the manifest rows and labels.json of a batch;
- `build`: `build_demo`, the entry point: plan, render into temporary folders, swap them into place.
"""

from mirops.data.demo.build import VARIANTS, DemoSummary, build_demo

__all__ = ["VARIANTS", "DemoSummary", "build_demo"]
