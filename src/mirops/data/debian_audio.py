"""Real recorded music installed from Debian packages: the offline real-audio sources of tests and benchmarks.

These machines reach Debian's archive but no dataset host, so real music for drift and audit measurements comes
from game soundtracks packaged by Debian (`wesnoth-1.16-music`: orchestral/folk; `warzone2100-music` and
`singularity-music`: electronic). `ensure_packages` installs what is missing when it may (root or
password-less sudo; MIROPS_NO_APT=1 forbids it) and otherwise says why it cannot; `package_tracks` lists a
package's audio files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ORCHESTRAL = "wesnoth-1.16-music"
ELECTRONIC = ("warzone2100-music", "singularity-music")
SOUNDTRACKS = (ORCHESTRAL, *ELECTRONIC)
TRACK_SUFFIXES = (".ogg", ".opus")


def installed(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip().endswith("installed")


def _apt_prefix() -> list[str] | None:
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def ensure_packages(packages: list[str] | tuple[str, ...]) -> str | None:
    """Install the Debian packages that are missing; None when all are there, else why they cannot be."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-query"):
        return f"needs the Debian packages {' '.join(packages)} and this is not a Debian/Ubuntu machine"
    missing = [p for p in packages if not installed(p)]
    if not missing:
        return None
    if os.environ.get("MIROPS_NO_APT") == "1":
        return f"needs the Debian packages {' '.join(missing)} (MIROPS_NO_APT=1 forbids installing them)"
    prefix = _apt_prefix()
    if prefix is None:
        return f"needs the Debian packages {' '.join(missing)}: run `sudo apt-get install {' '.join(missing)}`"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    try:
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:  # stale or missing package lists: refresh once, then try again
            subprocess.run([*prefix, "apt-get", "update", "-q"], capture_output=True, env=env, timeout=300)
            done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    except subprocess.TimeoutExpired:
        return f"installing {' '.join(missing)} timed out"
    if done.returncode != 0 or not all(installed(p) for p in missing):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"could not install {' '.join(missing)}: {' / '.join(tail)}"
    return None


def package_tracks(package: str) -> list[Path]:
    """The package's audio files (Ogg Vorbis or Opus), sorted by path."""
    listing = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=True).stdout
    return sorted(Path(line) for line in listing.splitlines()
                  if line.lower().endswith(TRACK_SUFFIXES) and Path(line).is_file())
