#!/usr/bin/env bash
# Creates .venv with everything the algorithm, the training and the tests need; quick when up to date.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON_FOR_VENV:-python3}
STAMP=.venv/.requirements.sha256
WANT=$(cat requirements.txt train/requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
link_repository() {
  # The repository root on the venv's path, so that `python -m train`, `python -m model.dicom` and the Python
  # API work from any folder (the top-level layout stays: process.py, model/, train/ beside each other).
  .venv/bin/python - "$(pwd)" <<'PY'
import pathlib, sys, sysconfig
pathlib.Path(sysconfig.get_paths()["purelib"], "autopet_repository.pth").write_text(sys.argv[1] + "\n")
PY
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  link_repository
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -r requirements-dev.txt
link_repository
echo "$WANT" > "$STAMP"
echo "bootstrap: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
