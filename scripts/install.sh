#!/usr/bin/env bash
# Installs sae-translate and what it needs into the current Python: `install.sh` for running it,
# `install.sh --dev` also for its tests (dev extras, headless Chromium for the report's browser test).
# torch first: the pinned CPU build where it is available locally, else the normal wheel for this machine.
set -euo pipefail
PY=${PYTHON:-python3}
DEV=$([ "${1:-}" = "--dev" ] && echo 1 || echo 0)

apt_install() {  # Debian packages, only those missing; sudo when not root
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: no apt-get; install ${missing[*]} by hand" >&2
    return 0
  fi
  local sudo; sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q torch==2.13.0 || "$PY" -m pip install -q torch
fi
# WordNet 3.0 for category labels (without apt: python -m nltk.downloader wordnet)
if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/wordnet/index.sense ]; then
  apt_install wordnet-base wordnet-sense-index
fi
# Closed word classes for labels (determiners, pronouns, modal verbs, ...): a Penn Treebank
# part-of-speech lexicon (elsewhere: SAE_TRANSLATE_POS_LEXICON=path/to/Lingua-EN-Tagger/words.yml)
[ -f /usr/share/perl5/Lingua/EN/Tagger/words.yml ] || apt_install liblingua-en-tagger-perl
if [ "$DEV" = 1 ]; then
  [ -x /usr/bin/chromium ] || apt_install chromium
  "$PY" -m pip install -q -e ".[dev]"
else
  "$PY" -m pip install -q -e .
fi
