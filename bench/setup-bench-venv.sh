#!/usr/bin/env bash
# The benchmark's environment: a virtualenv that sees this machine's packages (tunefleet, torch)
# and adds NePS, the reference method (PriorBand), without touching the product's environment.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv --system-site-packages .venv-bench
.venv-bench/bin/pip install -q -c bench/constraints.txt -e '.[bench]'
# NePS declares torchvision, and PyPI's torchvision is built for CUDA torch: with the CPU torch it fails
# to import, and transformers (which imports it when present) with it. NePS never imports it.
.venv-bench/bin/pip uninstall -q -y torchvision
.venv-bench/bin/python -c "import neps, transformers.trainer; print('bench environment ready: .venv-bench')"
