"""The autoPET NIfTI release's fixed file names (FDG-PET-CT-Lesions: ``Patient/Study/{SUV,CTres,SEG}.nii.gz``),
named here alone: studies.cases reads such a tree, studies.dicom writes one, train/ prepares from one, phantoms/ and
bench/ make one. A module of its own, importing nothing, so that studies.dicom (which studies.cases imports) can
use it too."""

AUTOPET_PET = "SUV.nii.gz"  # the PET in SUV
AUTOPET_CT = "CTres.nii.gz"  # the CT resampled onto the PET's grid
AUTOPET_MASK = "SEG.nii.gz"  # the 0/1 lesion mask (training data)
