#!/usr/bin/env bash
# Build the single-file runner: dist/semaphore, from semaphore.spec.
# PyInstaller's own work files go to build/work/ (ignored by git).
# Usage: bash build/build_runner.sh [python]   (default: the python3 on PATH, with
# pyinstaller and the runner's dependencies installed, e.g. `pip install -e '.[test]'`)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-python3}"
"$python" -m PyInstaller --noconfirm --clean --log-level WARN \
    --workpath build/work --distpath dist semaphore.spec
ls -l dist/semaphore
