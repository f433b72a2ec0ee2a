#!/usr/bin/env bash
# One prepared GPU window (see scripts/device/run.py): tests, benchmark, a training run, in a time budget.
#   bash scripts/device/run.sh OUT_DIR                                   # on the GPU machine ($OUT)
#   CSGIS_DEVICE=cpu CSGIS_BUDGET_S=120 bash scripts/device/run.sh OUT   # the dry run on a CPU
# The GPU machine has torch but not this package installed: the repository goes on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" scripts/device/run.py "$@"
