"""The IBSI SUV manual's digital reference objects (oncoray/suv_computation, docs/DRO_list.csv), rebuilt from their
descriptions as synthetic series (tests/studies/dicom_series.py DRO_BUILDERS), read by ``studies.dicom.read_pet_suv``:
how many come out with SUVbw 0.20 / 1.00 / 4.00 (min / median / max; right = each within 0.1 %, the manual
rounds to 2 decimals). Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.suv_reference_objects

With an older ``model/`` first on PYTHONPATH it measures that version (the DROs are built by this checkout's tests).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from model.errors import InputError
from studies.dicom import read_pet_suv, scan_folder
from tests.studies.dicom_series import DRO_BUILDERS, write_series

EXPECTED = (0.2, 1.0, 4.0)
TOLERANCE = 1e-3


def measure(name: str, root: Path) -> tuple[bool, str]:
    """(right, what came out) of one reference object."""
    write_series(DRO_BUILDERS[name][1](), root / name)
    (study,) = scan_folder(root / name)
    (pet,) = study.series.values()
    try:
        volume, _ = read_pet_suv(pet)
    except InputError as error:
        return False, f"refused: {str(error).split(': ', 2)[-1][:110]}"
    values = sitk.GetArrayFromImage(volume.image)
    found = (float(values.min()), float(np.median(values)), float(values.max()))
    right = all(abs(got / want - 1) <= TOLERANCE for got, want in zip(found, EXPECTED, strict=True))
    return right, " / ".join(f"{v:.4g}" for v in found)


def main() -> int:
    right = 0
    with tempfile.TemporaryDirectory() as folder:
        for name, (description, _) in DRO_BUILDERS.items():
            ok, shown = measure(name, Path(folder))
            right += ok
            print(f"{'ok  ' if ok else 'WRONG'} {name:8s} {shown:40s} {description}")
    print(f"{right} of {len(DRO_BUILDERS)} reference objects right (SUVbw 0.20 / 1.00 / 4.00 within {TOLERANCE:.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
