"""Real recorded music installed from Debian packages: the offline real-audio sources of tests and benchmarks.

These machines reach Debian's archive but no dataset host, so real music for drift and audit measurements comes
from game soundtracks packaged by Debian (`wesnoth-1.16-music`: orchestral/folk; `warzone2100-music` and
`singularity-music`: electronic), installed by `mirops.debian.ensure_packages`; `package_tracks` lists a
package's audio files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ORCHESTRAL = "wesnoth-1.16-music"
ELECTRONIC = ("warzone2100-music", "singularity-music")
SOUNDTRACKS = (ORCHESTRAL, *ELECTRONIC)
TRACK_SUFFIXES = (".ogg", ".opus")


def package_tracks(package: str) -> list[Path]:
    """The package's audio files (Ogg Vorbis or Opus), sorted by path."""
    listing = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=True).stdout
    return sorted(Path(line) for line in listing.splitlines()
                  if line.lower().endswith(TRACK_SUFFIXES) and Path(line).is_file())
