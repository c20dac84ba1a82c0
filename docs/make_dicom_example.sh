#!/usr/bin/env bash
# The README's DICOM example: a positive phantom written as a Siemens-like DICOM export (a PET series in Bq/ml
# with its SUV tags and a CT series, by the test suite's series builders), then the two DICOM commands.
#   docs/make_dicom_example.sh [WORKDIR]     (default runs/dicom-example; writes docs/dicom_example.png)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
W=${1:-runs/dicom-example}
rm -rf "$W"
$PY - "$W/export/study" <<'EOF'
import sys
from pathlib import Path

from tests.studies.dicom_series import StudyIds
from tests.studies.test_cases import write_phantom_study
from phantoms import PhantomSpec, make_phantom

phantom = make_phantom(3, positive=True, spec=PhantomSpec(size=128, spacing=4.0728, slices=160, slice_thickness=6))
write_phantom_study(Path(sys.argv[1]), phantom, StudyIds(patient_id="PHANTOM_0003"))
EOF
# 1. Segment the export: mask, lesion report, picture and DICOM SEG per study
$PY process.py --input "$W/export" --output "$W/out"
# 2. Convert it for training on one's own data: <patient>/<study>/{SUV,CTres}.nii.gz and suv.json
$PY -m studies.dicom "$W/export" "$W/converted"
cp "$W"/out/reports/*.png docs/dicom_example.png
ls "$W/out/reports" "$W"/converted/*/*
