#!/usr/bin/env bash
# Build the single-file runner: dist/semaphore, from semaphore.spec.
# PyInstaller's own work files go to build/work/ (ignored by git).
# Usage: bash build/build_runner.sh [python]   (default: the clone's .venv/bin/python if there
# is one, else python3; it needs pyinstaller and the runner's dependencies, which
# `pip install -e '.[test]'` installs)
# Whatever else that environment holds does not get in: semaphore.spec ships only the standard
# library, agent/, protocol/ and the runner's dependencies (its RUNNER_PACKAGES), so any
# development environment gives the same binary and no fresh one is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
default=python3
[ -x .venv/bin/python ] && default=.venv/bin/python
python="${1:-$default}"
"$python" -m PyInstaller --noconfirm --clean --log-level WARN \
    --workpath build/work --distpath dist semaphore.spec
ls -l dist/semaphore
