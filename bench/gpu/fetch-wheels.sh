#!/usr/bin/env bash
# Wheels of what the lent GPU machine's image lacks (it has torch, transformers, peft and
# accelerate, and no network), for Python 3.12 there, into .whl/ (git-ignored; about 56 MB).
# Run here, then call the device with carry [".whl"]: bench/gpu/run.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/../.."
platforms=()
for n in 17 24 27 28 31 34 35 39; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    optuna==5.0.0 optuna-dashboard==0.21.0 bitsandbytes==0.50.2 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 \
    colorlog==6.12.0 bottle==0.13.4 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 psycopg2-binary==2.9.13
du -sh .whl
