#!/usr/bin/env bash
# Creates .venv with everything the algorithm, the training and the tests need; quick when up to date.
# It ends by importing what a run needs (python -m runner.environment): a venv that cannot run (a torchvision
# built for another torch, say) is one line saying what is wrong and how to fix it, exit 1, and no stamp.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON_FOR_VENV:-python3}
STAMP=.venv/.requirements.sha256
REQUIREMENTS=$(cat requirements.txt train/requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
checked() {
  # The check and what is installed: a package installed or replaced by hand since the last check (another
  # torchvision) makes the stamp's second line stale, and the check runs again.
  { cat runner/environment.py; ls -1 .venv/lib/python3*/site-packages 2>/dev/null | grep -i '\.dist-info$' || true; } |
    sha256sum | cut -d' ' -f1
}
link_repository() {
  # The repository root on the venv's path, so that `python -m train`, `python -m studies.dicom` and the Python
  # API work from any folder (the top-level layout stays: process.py, model/, train/ beside each other).
  .venv/bin/python - "$(pwd)" <<'PY'
import pathlib, sys, sysconfig
pathlib.Path(sysconfig.get_paths()["purelib"], "autopet_repository.pth").write_text(sys.argv[1] + "\n")
PY
}
ready() {  # the check passes: stamp (requirements installed, environment checked) and the one line
  link_repository
  printf '%s\n%s\n' "$REQUIREMENTS" "$(checked)" > "$STAMP"
  echo "bootstrap: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
}
installed=$(sed -n 1p "$STAMP" 2>/dev/null || true)
if [ "$installed" = "$REQUIREMENTS" ] && [ "$(sed -n 2p "$STAMP")" = "$(checked)" ]; then
  link_repository
  exit 0
fi
# These requirements were installed; the check is new or the packages changed since: check before installing.
if [ "$installed" = "$REQUIREMENTS" ] && .venv/bin/python -m runner.environment 2>/dev/null; then
  ready
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
rm -f "$STAMP"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -r requirements-dev.txt
if ! problem=$(.venv/bin/python -m runner.environment 2>&1 | tail -n 1); then
  link_repository
  echo "bootstrap: .venv not ready: ${problem#setup: }" >&2
  exit 1
fi
ready
