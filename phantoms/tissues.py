"""Tissue labels and what each looks like: CT HU and FDG uptake ranges."""

from __future__ import annotations

TISSUES = ("air", "fat", "muscle", "soft", "lung", "gas", "cortex", "marrow", "liver", "spleen", "kidney", "urine",
           "bladder", "myocardium", "blood", "grey_matter", "white_matter", "tonsil", "salivary", "vocal_cords",
           "bowel", "stomach", "brown_fat", "table")
(AIR, FAT, MUSCLE, SOFT, LUNG, GAS, CORTEX, MARROW, LIVER, SPLEEN, KIDNEY, URINE, BLADDER, MYOCARDIUM, BLOOD,
 GREY_MATTER, WHITE_MATTER, TONSIL, SALIVARY, VOCAL_CORDS, BOWEL, STOMACH, BROWN_FAT, TABLE) = range(len(TISSUES))

# CT: mean HU and the SD of its smooth texture, per tissue (the mean is jittered per study).
HU = {AIR: (-1000, 0), FAT: (-100, 12), MUSCLE: (50, 8), SOFT: (35, 10), LUNG: (-840, 45), GAS: (-990, 5),
      CORTEX: (800, 120), MARROW: (230, 40), LIVER: (60, 6), SPLEEN: (50, 5), KIDNEY: (35, 6), URINE: (8, 3),
      BLADDER: (8, 3), MYOCARDIUM: (45, 5), BLOOD: (42, 5), GREY_MATTER: (38, 3), WHITE_MATTER: (28, 3),
      TONSIL: (45, 6), SALIVARY: (30, 8), VOCAL_CORDS: (45, 8), BOWEL: (25, 25), STOMACH: (25, 15),
      BROWN_FAT: (-65, 15), TABLE: (-350, 60)}
# Physiological FDG uptake: the range a study's mean SUV is drawn from, per tissue. Urine in the renal
# pelvis and ureters follows the bladder; the myocardium is drawn from a mixture (fasting, diet), see
# MYOCARDIUM_SUV; white matter is a fraction of grey.
SUV_RANGE = {AIR: (0.0, 0.0), FAT: (0.2, 0.5), MUSCLE: (0.5, 1.0), SOFT: (0.6, 1.2), LUNG: (0.3, 0.7),
             GAS: (0.0, 0.0), CORTEX: (0.3, 0.7), MARROW: (0.8, 2.0), LIVER: (1.5, 3.0), SPLEEN: (1.2, 2.6),
             KIDNEY: (2.0, 5.0), URINE: (1.0, 60.0), BLADDER: (5.0, 60.0), MYOCARDIUM: (0.8, 15.0),
             BLOOD: (1.2, 2.4), GREY_MATTER: (5.0, 13.0), WHITE_MATTER: (1.5, 6.0), TONSIL: (2.0, 7.0),
             SALIVARY: (1.3, 4.0), VOCAL_CORDS: (1.0, 5.0), BOWEL: (1.0, 2.5), STOMACH: (1.2, 3.5),
             BROWN_FAT: (2.0, 15.0), TABLE: (0.0, 0.0)}
MYOCARDIUM_SUV = ((0.3, (0.8, 2.5)), (0.4, (2.5, 8.0)), (0.3, (8.0, 15.0)))  # (probability, range)

# Where a false positive lies, by the phantom's own labels (train evaluate --tissues): the organs of FDG's
# physiological uptake that a lesion model must learn to leave alone; every other label is "elsewhere".
FPV_ORGANS = {"brain": (GREY_MATTER, WHITE_MATTER), "myocardium": (MYOCARDIUM,), "kidneys": (KIDNEY, URINE),
              "bladder": (BLADDER,), "liver": (LIVER,)}
NOT_BODY = (AIR, TABLE, GAS)  # where no tissue is: lesions never grow there
