"""The lesion mask as a DICOM Segmentation (highdicom, BINARY) referencing the PET series' instances, so that
3D Slicer and OHIF place it on the PET they loaded."""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from model.files import atomic_target

ALGORITHM_NAME = "autoPET whole-body 2D U-Net"
SEGMENT_LABEL = "FDG-avid lesion"
# SNOMED CT 49755003 "Morphologically Altered Structure" (DICOM CID 7150 calls it Morphologically Abnormal
# Structure) and 108369006 "Neoplasm", as the tumour segments of other AI tools are coded.
CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
PROPERTY = codes.SCT.Neoplasm


# Type 2 elements of the Patient and General Study modules: present, possibly empty. Anonymisers drop some;
# highdicom copies them from the first source image.
TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                       "AccessionNumber", "StudyID", "ReferringPhysicianName")


def _with_type2(ds: Dataset) -> Dataset:
    missing = [keyword for keyword in TYPE2_PATIENT_STUDY if keyword not in ds]
    if not missing:
        return ds
    filled = copy.deepcopy(ds)  # a header without pixels: small
    for keyword in missing:
        setattr(filled, keyword, "")
    return filled


def _parameter_key(name: str) -> str:
    # AlgorithmParameters is written as "key=value,key=value": keep those characters out of the key.
    return re.sub(r"[=,\s]+", "_", name)


def build_seg(mask: sitk.Image, pet_headers: Sequence[Dataset], *, algorithm_version: str,
              weights_sha256: Mapping[str, str], series_description: str = "Lesions (AI)",
              series_number: int = 901, manufacturer: str = "autopet-wholebody-unet") -> hd.seg.Segmentation:
    """The Segmentation of ``mask`` (0/1, on the PET grid of ``read_series``: slice k is ``pet_headers[k]``).

    ``weights_sha256`` maps each weights file name to its SHA-256; they go into the algorithm parameters.
    Slices without lesion are left out; an empty mask keeps all its (empty) frames, as a SEG needs one.
    """
    array = sitk.GetArrayViewFromImage(mask)
    if array.shape[0] != len(pet_headers):
        raise ValueError(f"mask has {array.shape[0]} slices, the PET series {len(pet_headers)}")
    first = pet_headers[0]
    if array.shape[1:] != (int(first.Rows), int(first.Columns)):
        raise ValueError(f"mask slices are {array.shape[1:]}, PET images {(first.Rows, first.Columns)}")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=codes.cid7162.ArtificialIntelligence, version=algorithm_version,
        parameters={f"sha256 {_parameter_key(name)}": digest for name, digest in sorted(weights_sha256.items())})
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=SEGMENT_LABEL, segmented_property_category=CATEGORY,
        segmented_property_type=PROPERTY, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm)
    binary = (np.asarray(array) > 0).astype(np.uint8)
    with warnings.catch_warnings():
        # The patient's name is copied as the source has it (anonymisers write one word): not ours to judge.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        return hd.seg.Segmentation(
            source_images=[_with_type2(first), *pet_headers[1:]], pixel_array=binary,
            omit_empty_frames=bool(binary.any()),  # said here: highdicom warns when it has to fall back
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
            series_instance_uid=generate_uid(), series_number=series_number, sop_instance_uid=generate_uid(),
            instance_number=1, manufacturer=manufacturer, manufacturer_model_name=ALGORITHM_NAME,
            software_versions=algorithm_version, device_serial_number="none", series_description=series_description,
            content_description="Lesion segmentation", content_label="LESIONS")


def write_seg(mask: sitk.Image, pet_headers: Sequence[Dataset], path: Path, *, algorithm_version: str,
              weights_sha256: Mapping[str, str]) -> None:
    """Write the DICOM SEG of ``mask`` to ``path`` (whole or not at all)."""
    seg = build_seg(mask, pet_headers, algorithm_version=algorithm_version, weights_sha256=weights_sha256)
    with atomic_target(Path(path), suffix=".dcm") as tmp:
        seg.save_as(tmp)
