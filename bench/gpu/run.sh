#!/usr/bin/env bash
# The GPU checks in one go (bench/gpu/checks.py): on one H100 or H200, under 8 minutes, one
# JSON of figures in bench/gpu/results/; with --dry, the same code path at tiny sizes on CPU.
#   bash bench/gpu/run.sh [--dry] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec python3 -m bench.gpu.checks "$@"
