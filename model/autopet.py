"""The autoPET NIfTI release's fixed file names (FDG-PET-CT-Lesions: ``Patient/Study/{SUV,CTres,SEG}.nii.gz``),
named here alone: model.cases reads such a tree, model.dicom writes one, train/ prepares from one, phantoms/ and
bench/ make one. A module of its own, importing nothing, so that model.dicom (which model.cases imports) can
use it too."""

AUTOPET_PET = "SUV.nii.gz"  # the PET in SUV
AUTOPET_CT = "CTres.nii.gz"  # the CT resampled onto the PET's grid
AUTOPET_MASK = "SEG.nii.gz"  # the 0/1 lesion mask (training data)
