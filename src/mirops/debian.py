"""Debian packages a test or benchmark needs (real soundtracks, a browser): installed when missing and allowed.

`ensure_packages` installs what is missing as root or with password-less sudo (MIROPS_NO_APT=1 forbids it) and
otherwise says why it cannot. Two installs at once (tests run in parallel) take turns on dpkg's lock instead of
the second failing at once: apt waits for it up to `LOCK_WAIT_S`.
"""

from __future__ import annotations

import os
import shutil
import subprocess

LOCK_WAIT_S = 900


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
    apt = [*prefix, "apt-get", "-q", "-o", f"DPkg::Lock::Timeout={LOCK_WAIT_S}"]
    install = [*apt, "install", "-y", "--no-install-recommends", *missing]
    try:
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=2 * LOCK_WAIT_S)
        if done.returncode != 0:  # stale or missing package lists: refresh once, then try again
            subprocess.run([*apt, "update"], capture_output=True, env=env, timeout=2 * LOCK_WAIT_S)
            done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=2 * LOCK_WAIT_S)
    except subprocess.TimeoutExpired:
        return f"installing {' '.join(missing)} timed out"
    if done.returncode != 0 or not all(installed(p) for p in missing):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"could not install {' '.join(missing)}: {' / '.join(tail)}"
    return None
