#!/usr/bin/env bash
# Install everything, then run the stream job on a slice of the real Online Retail log
# with the bundled broker: replay, train, show lists and online metrics, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
    if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
        if [[ -x .venv/bin/python ]]; then
            exec .venv/bin/python -m infra.demo --help
        fi
        echo "usage: ./scripts/demo.sh [options of python -m infra.demo]"
        echo "(run it once without --help to install; then --help lists the options)"
        exit 0
    fi
done
bash scripts/setup.sh
exec .venv/bin/python -m infra.demo "$@"
