#!/usr/bin/env bash
# One prepared run for a GPU machine (under 5 minutes on an H200): bench/gpu.py (measured peaks, its table
# and figures).
#   bench/gpu.sh [OUTDIR]
# Packages the machine lacks can travel as wheels in .whl/ (see the device tool's notes); they are
# installed into /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -m bench.gpu --device cuda 2>&1 | tee "${1:-/tmp}/gpu.txt"
