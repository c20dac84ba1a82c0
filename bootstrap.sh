#!/usr/bin/env bash
# Creates .venv with everything the algorithm, the training and the tests need; quick when up to date.
# It ends by importing what a run needs (python -m model.environment): a venv that cannot run (a torchvision
# built for another torch, say) is one line saying what is wrong and how to fix it, exit 1, and no stamp.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON_FOR_VENV:-python3}
STAMP=.venv/.requirements.sha256
want() {
  # The requirements, the check, and what is installed: a package installed or replaced by hand since the
  # last check (another torchvision) makes the stamp stale, so the check runs again.
  { cat requirements.txt train/requirements.txt requirements-dev.txt model/environment.py
    ls -1 .venv/lib/python3*/site-packages 2>/dev/null | grep -i '\.dist-info$' || true; } | sha256sum | cut -d' ' -f1
}
link_repository() {
  # The repository root on the venv's path, so that `python -m train`, `python -m model.dicom` and the Python
  # API work from any folder (the top-level layout stays: process.py, model/, train/ beside each other).
  .venv/bin/python - "$(pwd)" <<'PY'
import pathlib, sys, sysconfig
pathlib.Path(sysconfig.get_paths()["purelib"], "autopet_repository.pth").write_text(sys.argv[1] + "\n")
PY
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(want)" ]; then
  link_repository
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
rm -f "$STAMP"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -r requirements-dev.txt
link_repository
if ! problem=$(.venv/bin/python -m model.environment 2>&1 | tail -n 1); then
  echo "bootstrap: .venv not ready: ${problem#setup: }" >&2
  exit 1
fi
want > "$STAMP"
echo "bootstrap: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
