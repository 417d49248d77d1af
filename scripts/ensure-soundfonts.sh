#!/usr/bin/env bash
# The demo renders General-MIDI notes through three Debian SoundFonts (three timbre domains) and mixes in
# real drum and cymbal one-shots from hydrogen-drumkits. Install what is missing when allowed (root, or
# password-less sudo; MIROPS_NO_APT=1 forbids it), otherwise say what to install.
set -euo pipefail
need=()
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || need+=(timgm6mb-soundfont)
[ -f /usr/share/sounds/sf3/MuseScore_General_Lite.sf3 ] || need+=(musescore-general-soundfont-small)
[ -d /usr/share/hydrogen/data/drumkits ] || need+=(hydrogen-drumkits)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "${MIROPS_NO_APT:-0}" = 1 ]; then
  echo "demo audio missing: install the Debian packages ${need[*]} (MIROPS_NO_APT=1 forbids doing it here)" >&2
  exit 0
fi
if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
  echo "demo audio missing and no root: run 'sudo apt-get install ${need[*]}'" >&2
  exit 0
fi
echo "installing Debian SoundFonts and drum samples: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
  || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${need[@]}" >/dev/null; }
