"""The DICOM SEG read back with highdicom equals the mask, frame for frame, on the PET instances."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from results.seg import build_seg, write_seg
from studies.dicom import read_series, series_in_folder
from tests.conftest import needs_tool
from tests.studies.dicom_series import DCIODVFY, Grid, StudyIds, dciodvfy, pet_datasets, write_series

WEIGHTS = {"fold0.safetensors": "0" * 63 + "1", "fold1.safetensors": "f" * 64}


@pytest.fixture()
def pet(tmp_path):
    grid = Grid(z=[10.0 - 3.0 * k for k in range(6)], rows=8, columns=7)  # written head first, read feet first
    write_series(pet_datasets(np.full((6, 8, 7), 3000.0), grid, StudyIds(), vendor="ge"), tmp_path / "pet")
    return read_series(series_in_folder(tmp_path / "pet", "PT"))


def mask_on(pet) -> sitk.Image:
    array = np.zeros(sitk.GetArrayViewFromImage(pet.image).shape, np.uint8)
    array[1, 2:5, 3:6] = 1
    array[2, 3, 3] = 1
    array[4, 0, 6] = 1  # slices 0, 3 and 5 stay empty
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(pet.image)
    return mask


def test_seg_reads_back_equal_to_the_mask_frame_by_frame(pet, tmp_path):
    mask = mask_on(pet)
    write_seg(mask, pet.headers, tmp_path / "seg.dcm", algorithm_version="1.2.0", weights_sha256=WEIGHTS)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    expected = sitk.GetArrayFromImage(mask)
    uids = [str(ds.SOPInstanceUID) for ds in pet.headers]
    frames = pydicom.dcmread(tmp_path / "seg.dcm").pixel_array
    frames = frames[None] if frames.ndim == 2 else frames
    assert len(frames) == 3  # only the slices with lesion
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_array_equal(frame, expected[uids.index(source)])
    volume = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1],
                                               assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(volume[..., 0], expected)


def test_seg_describes_segment_algorithm_and_references_the_pet_series(pet, tmp_path):
    write_seg(mask_on(pet), pet.headers, tmp_path / "seg.dcm", algorithm_version="1.2.0", weights_sha256=WEIGHTS)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == pet.headers[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == pet.headers[0].FrameOfReferenceUID
    (segment,) = seg.SegmentSequence
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert algorithm.AlgorithmVersion == "1.2.0"
    assert f"sha256_fold1.safetensors={'f' * 64}" in algorithm.AlgorithmParameters.replace(" ", "_")
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == pet.headers[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} >= {
        str(ds.SOPInstanceUID) for ds in pet.headers[1:3]}


def test_empty_mask_and_wrong_shapes(pet, tmp_path):
    empty = sitk.Image(pet.image.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(pet.image)
    write_seg(empty, pet.headers, tmp_path / "empty.dcm", algorithm_version="1", weights_sha256=WEIGHTS)
    seg = hd.seg.segread(tmp_path / "empty.dcm")
    uids = [str(ds.SOPInstanceUID) for ds in pet.headers]
    volume = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1],
                                               assert_missing_frames_are_empty=True)
    assert not volume.any()
    with pytest.raises(ValueError, match="slices"):
        build_seg(empty, pet.headers[:-1], algorithm_version="1", weights_sha256=WEIGHTS)


@needs_tool(DCIODVFY, "dciodvfy (dicom3tools)")
@pytest.mark.parametrize("lesions", [True, False], ids=["lesions", "empty"])
def test_dciodvfy_finds_the_seg_a_valid_segmentation_iod(pet, tmp_path, lesions):
    """An independent validator of the standard's modules, not highdicom reading its own output."""
    mask = mask_on(pet) if lesions else sitk.Image(pet.image.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(pet.image)
    write_seg(mask, pet.headers, tmp_path / "seg.dcm", algorithm_version="1.2.0", weights_sha256=WEIGHTS)
    errors, warnings = dciodvfy(tmp_path / "seg.dcm")
    assert errors == [] and warnings == []
