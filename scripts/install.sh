#!/usr/bin/env bash
# Installs sae-translate and its dependencies into the current Python.
# torch first: the pinned CPU build where it is available locally, else the normal wheel for this machine.
set -euo pipefail
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q torch==2.13.0 || "$PY" -m pip install -q torch
fi
"$PY" -m pip install -q -e ".[dev]"
