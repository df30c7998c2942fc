#!/usr/bin/env bash
# Installs sae-translate and its dependencies into the current Python.
# torch first: the pinned CPU build where it is available locally, else the normal wheel for this machine.
set -euo pipefail
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q torch==2.13.0 || "$PY" -m pip install -q torch
fi
# WordNet 3.0 for category labels: Debian's packages where apt exists, else nltk's downloader.
if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/wordnet/index.sense ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index
  else
    echo "install.sh: no apt-get; get WordNet with: $PY -m nltk.downloader wordnet" >&2
  fi
fi
"$PY" -m pip install -q -e ".[dev]"
