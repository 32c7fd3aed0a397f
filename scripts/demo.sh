#!/usr/bin/env bash
# Install everything, then run the stream job on a slice of the real Online Retail log
# with the bundled broker: replay, train, show lists and online metrics, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m infra.demo "$@"
