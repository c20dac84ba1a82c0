"""Synthetic whole-body FDG PET/CT studies with lesions, for tests, demos, benchmarks and in-silico
experiments. A package of its own (not under train/) because inference's tests and bench/ use it as much as
training does; of this project it imports only studies.autopet (the file names it writes) and results.figures (the
preview).

Each study is drawn from its seed:

- a body (body.py, anatomy.py): height, frame, fat; arms down, raised above the head or one raised; head
  turned or straight; the field of view from the vertex or from the neck down (to the feet in a fraction of
  studies, when the spec asks for it); a patient table under the body in the CT;
- organs as smooth shapes deformed by random low-frequency fields (geometry.py), with FDG's physiological
  uptake (physiology.py), the hot spots a lesion model must learn to ignore: brain, myocardium (a shell,
  from background to SUV 15), urine in renal pelvis, ureters and bladder (SUV 5-60), patchy bowel, tonsils,
  salivary glands, vocal cords, bone marrow, a textured liver, brown fat in some studies, exercised muscle
  in some;
- lesions as autoPET has them (lesions.py; none in negative studies): lymph-node chains (neck, axilla,
  mediastinum, retroperitoneum, iliac and groin), lung nodules and primaries, liver and bone metastases,
  subcutaneous nodules, large soft-tissue masses with low uptake and necrotic cores; homogeneous or
  heterogeneous, from 5 mm;
- the imaging (imaging.py): PET at the spec's grid, blurred to 5-7 mm FWHM, noise whose variance grows with
  the counts, so small lesions lose contrast to partial volume while the mask keeps their true extent; CT
  with HU texture and noise; in some studies the PET shifted against the CT around the diaphragm (breathing).

study.py puts them together (make_phantom); layouts.py writes sets of them to disk (write_dataset) and
preview.py draws a grid of their MIPs. Coordinates inside are in mm, LPS-like: x towards the patient's left,
y posterior, u the height above the soles; array axes are (z, y, x) with z growing towards the head.
"""

from phantoms.layouts import StudyName, StudyWriter, write_dataset, write_grand_challenge, write_tcia
from phantoms.lesions import DIAGNOSES, Lesion
from phantoms.study import DEFAULT_SPEC, Phantom, PhantomSpec, make_phantom
from phantoms.tissues import (
    AIR,
    BLADDER,
    BLOOD,
    BOWEL,
    BROWN_FAT,
    CORTEX,
    FAT,
    GAS,
    GREY_MATTER,
    HU,
    KIDNEY,
    LIVER,
    LUNG,
    MARROW,
    MUSCLE,
    MYOCARDIUM,
    SALIVARY,
    SOFT,
    SPLEEN,
    STOMACH,
    SUV_RANGE,
    TABLE,
    TISSUES,
    TONSIL,
    URINE,
    VOCAL_CORDS,
    WHITE_MATTER,
)

__all__ = [
    "AIR", "BLADDER", "BLOOD", "BOWEL", "BROWN_FAT", "CORTEX", "DEFAULT_SPEC", "DIAGNOSES", "FAT", "GAS",
    "GREY_MATTER", "HU", "KIDNEY", "LIVER", "LUNG", "MARROW", "MUSCLE", "MYOCARDIUM", "SALIVARY", "SOFT",
    "SPLEEN", "STOMACH", "SUV_RANGE", "TABLE", "TISSUES", "TONSIL", "URINE", "VOCAL_CORDS", "WHITE_MATTER",
    "Lesion", "Phantom", "PhantomSpec", "StudyName", "StudyWriter", "make_phantom", "write_dataset",
    "write_grand_challenge", "write_tcia",
]
