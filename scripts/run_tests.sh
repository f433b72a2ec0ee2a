#!/usr/bin/env bash
# The README's test command: create/refresh .venv from requirements.txt, then run the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/run_tests.sh tests/test_losses.py -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
exec .venv/bin/python -m pytest "$@"
