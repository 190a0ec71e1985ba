#!/usr/bin/env bash
# Smoke test of the built runner: it starts, knows its version, refuses the hub's commands,
# and writes a runner config. The full end-to-end run is tests/test_frozen_runner.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=dist/semaphore
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" --version
if "$bin" server 2>"$work/err"; then echo "server should not run in the runner build"; exit 1; fi
grep -q "not part of the runner build" "$work/err"
"$bin" runner setup --config "$work/config.runner.json" --non-interactive \
    --web-host http://127.0.0.1:3000 --registration-token smoke --tmp-path "$work/tmp" >/dev/null
test -s "$work/config.runner.json"
echo "smoke test passed: $(du -h "$bin" | cut -f1) $bin"
