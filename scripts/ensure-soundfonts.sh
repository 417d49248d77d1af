#!/usr/bin/env bash
# The demo renders General-MIDI notes through Debian's SoundFonts. Install them when missing and allowed
# (root, or password-less sudo; MIROPS_NO_APT=1 forbids it), otherwise say what to install.
set -euo pipefail
need=()
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || need+=(timgm6mb-soundfont)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "${MIROPS_NO_APT:-0}" = 1 ]; then
  echo "SoundFonts missing: install the Debian packages ${need[*]} (MIROPS_NO_APT=1 forbids doing it here)" >&2
  exit 0
fi
if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
  echo "SoundFonts missing and no root: run 'sudo apt-get install ${need[*]}'" >&2
  exit 0
fi
echo "installing Debian SoundFonts: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
  || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${need[@]}" >/dev/null; }
