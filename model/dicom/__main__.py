"""``python -m model.dicom DICOM_DIR OUT_DIR`` (model.dicom.convert)."""

import sys

from model.dicom.convert import main

sys.exit(main())
