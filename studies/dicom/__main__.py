"""``python -m studies.dicom DICOM_DIR OUT_DIR`` (studies.dicom.convert)."""

import sys

from studies.dicom.convert import main

sys.exit(main())
