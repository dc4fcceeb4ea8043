#!/usr/bin/env bash
# The GPU checks in one go (bench/gpu/checks.py): on one H100 or H200, under 8 minutes, one
# JSON of figures in bench/gpu/results/; with --dry, the same code path at tiny sizes on CPU.
#   bash bench/gpu/run.sh [--dry] [--out FILE]
# On a machine without tunefleet's dependencies, the wheels of bench/gpu/fetch-wheels.sh in
# .whl/ are installed first (into /tmp/site: the image's own packages stay as they are).
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -d .whl ] && ! python3 -c "import optuna, bitsandbytes, optuna_dashboard" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec python3 -m bench.gpu.checks "$@"
