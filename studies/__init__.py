"""Reading a study: the input layouts and case names (cases), image files (readers, nifti), DICOM series
(dicom/) and their SUV conversion (suv/), autoPET's file names (autopet), and the checks a study passes before
it is segmented (checks). Imports model/ only."""
