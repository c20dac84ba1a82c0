"""DICOM as scanners really write it (issue 16): GE's static multi-bed series, what makes a series dynamic,
geometry the headers say or a refusal, and exports with damaged files, unreadable entries and bad studies, in
which each failure stays that file's or that study's one line."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Iterator

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

import process
from model.errors import InputError
from studies.cases import path_case
from studies.dicom import choose_series, convert, load_case, main, read_series, scan_folder, series_in_folder
from tests.studies.dicom_series import (
    Grid,
    StudyIds,
    ct_datasets,
    ge_gaps,
    ge_multi_bed,
    pet_datasets,
    write_series,
)

convert_study_module = importlib.import_module("studies.dicom.convert")  # the package's `convert` is the function
GE_FACTOR = 75_000 / (3.5e8 * 2 ** (-3900 / 6588))  # 09:15 to 10:20, GE's F-18 half-life


def ge_grid(slices: int = 16, rows: int = 6, columns: int = 5, usual: float = 3.27, spacing=(2.0, 3.0)) -> Grid:
    z = np.concatenate([[-900.0], -900.0 + np.cumsum(ge_gaps(slices - 1, usual))])
    return Grid(z=[round(float(v), 2) for v in z], rows=rows, columns=columns, pixel_spacing=spacing)


def values(grid: Grid) -> np.ndarray:
    z, y, x = np.indices((len(grid.z), grid.rows, grid.columns))
    return 1000.0 * (1 + z) + 100.0 * y + 10.0 * x + 5.0


def write_ge_study(root, ids: StudyIds | None = None, grid: Grid | None = None) -> tuple[StudyIds, list]:
    ids = ids or StudyIds()
    grid = grid or ge_grid()
    pet = ge_multi_bed(values(grid), grid, ids)
    write_series(pet, root / ids.patient_id / "PT", pattern="IM{k:05d}")
    ct_grid = Grid(z=list(np.linspace(grid.z[0], grid.z[-1], 12)), rows=grid.rows, columns=grid.columns,
                   pixel_spacing=grid.pixel_spacing)
    write_series(ct_datasets(np.zeros((12, grid.rows, grid.columns)), ct_grid, ids),
                 root / ids.patient_id / "CT", pattern="{uid}")
    return ids, pet


@contextlib.contextmanager
def loose_values() -> Iterator[None]:
    """pydicom refuses to set a value its VR cannot hold; scanners, converters and damage write them anyway."""
    before = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        pydicom.config.settings.writing_validation_mode = before


def edit(paths, change) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        with loose_values():
            change(ds)
            ds.save_as(path)


PLACEHOLDER = "7531"  # a value no builder writes, replaced in the file's bytes by text its VR cannot hold


def write_text_value(paths, keyword: str, text: str, vr: str | None = None) -> None:
    """``keyword`` holding ``text`` (4 bytes, padded) in each file, whatever its VR allows: pydicom refuses to
    set such a value, a damaged or badly converted file holds it anyway."""
    assert len(text) <= 4
    def change(ds):
        if vr is None:
            setattr(ds, keyword, PLACEHOLDER)
        else:
            ds.add_new(pydicom.datadict.tag_for_keyword(keyword), vr, PLACEHOLDER)
    edit(paths, change)
    for path in paths:
        raw = path.read_bytes()
        # The value starts right after its length field (whose last byte is 0 for a 4-byte value, explicit or
        # implicit VR); a random UID may hold the digits too, but never right after a 0 byte.
        at = raw.index(b"\x00" + PLACEHOLDER.encode()) + 1
        assert at < raw.index(b"\xe0\x7f\x10\x00")  # in the header, not the pixels
        path.write_bytes(raw[:at] + text.ljust(4).encode() + raw[at + 4:])


def pet_files(root, ids):
    return sorted((root / ids.patient_id / "PT").iterdir())


# --- 1. Static or dynamic, from what makes a series dynamic
def test_a_ge_static_multi_bed_series_converts_whatever_number_of_time_slices_says(tmp_path, capsys):
    ids, pet = write_ge_study(tmp_path / "export")
    assert pydicom.dcmread(pet_files(tmp_path / "export", ids)[0]).NumberOfTimeSlices == 6
    assert sorted({int(ds.NumberOfTimeSlices) for ds in pet}) == [1, 2, 3, 4, 5, 6]
    assert len({ds.RescaleSlope for ds in pet}) == len(pet)
    assert main([str(tmp_path / "export"), str(tmp_path / "out")]) == 0
    folder = tmp_path / "out" / ids.patient_id / ids.study_uid
    suv = sitk.ReadImage(str(folder / "SUV.nii.gz"))
    grid = ge_grid()
    assert suv.GetSize() == (5, 6, 16)
    assert suv.GetSpacing()[2] == pytest.approx((grid.z[-1] - grid.z[0]) / 15, rel=1e-6)  # NIfTI: float32
    np.testing.assert_allclose(sitk.GetArrayFromImage(suv), values(grid) * GE_FACTOR, rtol=2e-4)
    assert json.loads((folder / "suv.json").read_text())["suv"]["factor"] == pytest.approx(GE_FACTOR, rel=1e-9)
    assert capsys.readouterr().err == ""


def test_a_number_of_time_slices_that_is_no_number_is_not_read(tmp_path):
    ids, _ = write_ge_study(tmp_path)
    # US cannot hold text: written as a (wrong) IS, as a fuzzed or badly converted header may hold it.
    write_text_value(pet_files(tmp_path, ids)[:1], "NumberOfTimeSlices", "abc", vr="IS")
    pet, _ = choose_series(scan_folder(tmp_path)[0])
    assert read_series(pet).image.GetSize()[2] == 16


def test_each_position_imaged_several_times_is_dynamic_whatever_series_type_says(tmp_path):
    ids = StudyIds()
    grid = Grid(z=[0.0, 3.0, 6.0])
    frames = [pet_datasets(np.ones((3, 6, 5)), grid, ids, vendor="siemens") for _ in range(3)]
    uid = frames[0][0].SeriesInstanceUID
    for t, frame in enumerate(frames):
        for ds in frame:
            ds.SeriesInstanceUID, ds.FrameReferenceTime = uid, str(60000 * t)
    write_series([ds for frame in frames for ds in frame], tmp_path / "pet", pattern="{uid}")
    write_series(ct_datasets(np.zeros((3, 6, 5)), grid, ids), tmp_path / "ct")
    with pytest.raises(InputError, match=r"only dynamic or gated PET.*'PET WB AC' \(9 PT images\)"):
        choose_series(scan_folder(tmp_path)[0])
    with pytest.raises(InputError, match="3 of 3 positions imaged up to 3 times"):
        read_series(series_in_folder(tmp_path / "pet", "PT"))


def test_images_that_disagree_on_series_type_are_one_line(tmp_path):
    ids, _ = write_ge_study(tmp_path)
    edit(pet_files(tmp_path, ids)[:3], lambda ds: setattr(ds, "SeriesType", ["DYNAMIC", "IMAGE"]))
    with pytest.raises(InputError, match=r"SeriesType differs .*STATIC in 13 files, DYNAMIC in 3 files"):
        choose_series(scan_folder(tmp_path)[0])


# --- 3. Geometry that the headers say, or a refusal
def test_uneven_gaps_under_the_missing_slice_tolerance_are_refused(tmp_path):
    z = np.concatenate([[0.0], np.cumsum([24.0] * 8 + [35.0] * 7)])
    write_series(pet_datasets(np.ones((16, 6, 5)), Grid(z=list(z)), StudyIds()), tmp_path)
    with pytest.raises(InputError, match=r"uneven slice gaps \(24.00 to 35.00 mm\).*resample") as error:
        read_series(series_in_folder(tmp_path, "PT"))
    assert "\n" not in str(error.value)


def test_slices_at_a_slight_angle_are_refused_not_dropped(tmp_path):
    datasets = ct_datasets(np.zeros((16, 6, 5)), Grid(z=[3.0 * k for k in range(16)]), StudyIds())
    for ds in datasets[-2:]:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9998, 0.02]
    write_series(datasets, tmp_path)
    with pytest.raises(InputError, match=r"2 of 16 images have another ImageOrientationPatient"):
        read_series(series_in_folder(tmp_path, "CT"))


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0.3, 1, 0), (1, 0, 0, 0, 1.01, 0), (2, 0, 0, 0, 2, 0),
                                         (0.99, 0.2, 0, -0.2, 0.99, 0)])
def test_an_orientation_that_is_not_two_unit_vectors_at_right_angles_is_refused(tmp_path, orientation):
    write_series(ct_datasets(np.zeros((4, 6, 5)), Grid(z=[0.0, 3.0, 6.0, 9.0], orientation=orientation),
                             StudyIds()), tmp_path)
    with pytest.raises(InputError, match=r"ImageOrientationPatient .* is not two unit vectors at right angles "
                                         r"\(off by [0-9.e-]+, more than 0\.001\)"):
        read_series(series_in_folder(tmp_path, "CT"))


def test_an_orientation_written_with_few_decimals_is_made_orthonormal(tmp_path):
    turned = (0.98481, 0.17365, 0, -0.17365, 0.98481, 0)  # 10 degrees, five decimals
    write_series(ct_datasets(np.zeros((4, 6, 5)), Grid(z=[0.0, 3.0, 6.0, 9.0], orientation=turned), StudyIds()),
                 tmp_path)
    direction = np.array(read_series(series_in_folder(tmp_path, "CT")).image.GetDirection()).reshape(3, 3)
    assert np.allclose(direction.T @ direction, np.eye(3), atol=1e-12)


def test_a_localizer_in_another_plane_is_dropped_with_a_note(tmp_path):
    ids = StudyIds()
    datasets = ct_datasets(np.zeros((4, 6, 5)), Grid(z=[0.0, 3.0, 6.0, 9.0]), ids)
    scout = ct_datasets(np.zeros((1, 6, 5)), Grid(z=[0.0], orientation=(1, 0, 0, 0, 0, -1)), ids,
                        series_uid=datasets[0].SeriesInstanceUID)[0]
    write_series([*datasets, scout], tmp_path)
    volume = read_series(series_in_folder(tmp_path, "CT"))
    assert volume.image.GetSize()[2] == 4
    assert len(volume.notes) == 1 and "1 image(s) in another plane (localizers?) not used" in volume.notes[0]


@pytest.mark.parametrize("slope", ["0", "-0.5", "nan", "inf", "abc"])
def test_a_rescale_slope_that_is_not_a_positive_number_is_refused(tmp_path, slope):
    datasets = pet_datasets(np.ones((3, 6, 5)) * 1000, Grid(z=[0.0, 3.0, 6.0]), StudyIds(), vendor="ge")
    paths = write_series(datasets, tmp_path)
    write_text_value(paths[1:2], "RescaleSlope", slope)
    with pytest.raises(InputError, match=r"RescaleSlope .* (not a positive number|is not 1 number)"):
        read_series(series_in_folder(tmp_path, "PT"))


# --- 4. One bad file or one bad study never stops the others
def corrupt_vr(path, keyword_tag: bytes = b"\x08\x00\x60\x00") -> None:
    """The VR bytes of an element (Modality by default) replaced by 'XS'."""
    raw = path.read_bytes()
    at = raw.index(keyword_tag, 132)
    path.write_bytes(raw[:at + 4] + b"XS" + raw[at + 6:])


def test_a_file_with_a_corrupt_vr_fails_its_study_alone_with_a_warning(tmp_path, capsys):
    export = tmp_path / "export"
    good, _ = write_ge_study(export, StudyIds(patient_id="A"))
    bad, _ = write_ge_study(export, StudyIds(patient_id="B"))
    corrupt_vr(pet_files(export, bad)[5])
    assert convert(export, tmp_path / "out") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("warning: ") and "IM00005: damaged element(s) Modality" in err[0]
    assert err[1].startswith("error: ") and "1 of its files could not be read" in err[1] and "incomplete" in err[1]
    assert (tmp_path / "out" / "A" / good.study_uid / "suv.json").is_file()
    assert not (tmp_path / "out" / "B").exists()


def test_a_damaged_file_of_another_series_or_an_unused_element_leaves_the_study_running(tmp_path, capsys):
    ids, _ = write_ge_study(tmp_path / "export")
    nac = pet_datasets(np.ones((3, 6, 5)), Grid(z=[0.0, 3.0, 6.0]), ids, description="PET NAC")
    for ds in nac:
        ds.CorrectedImage = ["NORM", "DECY"]
    nac_files = write_series(nac, tmp_path / "export" / ids.patient_id / "NAC")
    corrupt_vr(nac_files[0])
    corrupt_vr(pet_files(tmp_path / "export", ids)[2], b"\x08\x00\x30\x00")  # StudyTime: not used here
    assert convert(tmp_path / "export", tmp_path / "out") == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("warning: ") for line in err)
    document = json.loads((tmp_path / "out" / ids.patient_id / ids.study_uid / "suv.json").read_text())
    assert len(document["warnings"]) == 1 and "NAC" in document["warnings"][0]


@pytest.mark.parametrize("offset, value", [(139, 0xFB), (136, 0x00), (148, 0x41), (153, 0xFB)])
def test_a_damaged_file_meta_group_is_said_not_dropped_quietly(tmp_path, capsys, offset, value):
    """A flipped byte in the file meta group's first elements (the group length's VR or length, the version's
    OB VR or length: bench/fuzz_dicom.py, seed 0) makes pydicom read the whole dataset into one meta element.
    The file was then taken for a non-image and skipped without a word: the CT lost its first slice unsaid."""
    export = tmp_path / "export"
    ids, _ = write_ge_study(export)
    first_ct = min((export / ids.patient_id / "CT").iterdir(), key=lambda p: int(pydicom.dcmread(p).InstanceNumber))
    raw = bytearray(first_ct.read_bytes())
    raw[offset] = value
    first_ct.write_bytes(bytes(raw))
    convert(export, tmp_path / "out")
    err = capsys.readouterr().err.strip().splitlines()
    # The reason given differed between a run of this file alone and the whole suite (pydicom state); that the
    # file is named as skipped is what matters.
    assert any(line.startswith("warning: ") and first_ct.name in line and ("damaged" in line or "skipped" in line)
               for line in err), err


@pytest.mark.parametrize("damage", ["SeriesDate", "PixelSpacing", "InstanceNumber", "ImagePositionPatient",
                                    "Rows"])
def test_a_bad_header_value_fails_its_study_alone(tmp_path, capsys, damage):
    export = tmp_path / "export"
    studies = [write_ge_study(export, StudyIds(patient_id=f"P{k}"))[0] for k in range(3)]
    changes = {"SeriesDate": ("SeriesDate", "20231340", "SeriesDate"), "PixelSpacing": ("PixelSpacing", [0, 0],
               "PixelSpacing"), "InstanceNumber": ("InstanceNumber", "abc", "InstanceNumber"),
               "ImagePositionPatient": ("ImagePositionPatient", "a\\b", "ImagePositionPatient"),
               "Rows": ("Rows", 7, "pixel data")}
    keyword, value, needle = changes[damage]
    if isinstance(value, str) and not value.isdigit():
        write_text_value(pet_files(export, studies[1]), keyword, value)
    else:
        edit(pet_files(export, studies[1]), lambda ds: setattr(ds, keyword, value))
    assert main([str(export), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if not line.startswith("warning: ")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and needle in errors[0], err
    # pydicom's remark on the value ("Invalid value for VR IS"), if any: named, one line for the series
    assert all(line.startswith(f"warning: {export / 'P1' / 'PT'}") for line in err if line not in errors), err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["P0", "P2"]


def test_unreadable_entries_of_the_export_are_skipped_with_a_warning(tmp_path, capsys, monkeypatch):
    export = tmp_path / "export"
    ids, _ = write_ge_study(export)
    (export / "proc_link").symlink_to("/proc/1/cwd")
    (export / "locked").mkdir()
    (export / "broken").symlink_to(tmp_path / "nowhere")
    real_scandir = os.scandir

    def scandir(path=".", *args):
        if str(path).endswith("locked"):  # as a folder without read permission (root reads any)
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    assert main([str(export), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert any("locked: folder cannot be read (Permission denied)" in line for line in err), err
    assert any("proc_link" in line for line in err) and any("broken" in line for line in err)
    assert all(line.startswith("warning: ") for line in err)
    assert (tmp_path / "out" / ids.patient_id / ids.study_uid / "suv.json").is_file()


def test_uids_that_differ_by_a_trailing_dot_get_folders_of_their_own(tmp_path):
    uid = generate_uid()
    write_ge_study(tmp_path / "a", StudyIds(study_uid=uid, patient_id="P"))
    write_ge_study(tmp_path / "b", StudyIds(study_uid=uid + ".", patient_id="P"))
    assert main([str(tmp_path), str(tmp_path / "out")]) == 0
    folders = sorted((tmp_path / "out" / "P").iterdir())
    assert [p.name for p in folders] == [uid, f"{uid}_2"]
    assert {json.loads((p / "suv.json").read_text())["study_uid"] for p in folders} == {uid, uid + "."}
    # Converting again rewrites each study's own folder, and never one that holds another study.
    assert main([str(tmp_path), str(tmp_path / "out")]) == 0
    (tmp_path / "b").rename(tmp_path / "b_gone")
    assert main([str(tmp_path / "a"), str(tmp_path / "out")]) == 0


def test_a_folder_holding_another_study_is_not_overwritten(tmp_path, capsys):
    ids, _ = write_ge_study(tmp_path / "export")
    folder = tmp_path / "out" / ids.patient_id / ids.study_uid
    folder.mkdir(parents=True)
    (folder / "suv.json").write_text(json.dumps({"study_uid": "1.2.3"}))
    assert main([str(tmp_path / "export"), str(tmp_path / "out")]) == 1
    assert "holds study 1.2.3 from an earlier conversion" in capsys.readouterr().err
    assert json.loads((folder / "suv.json").read_text()) == {"study_uid": "1.2.3"}


def test_a_ge_export_segments_end_to_end_and_results_json_counts_skipped_files(tmp_path, tiny_weights):
    grid = ge_grid(slices=24, rows=48, columns=48, usual=8.0, spacing=(8.0, 8.0))
    ids, _ = write_ge_study(tmp_path / "export", grid=grid)
    files = pet_files(tmp_path / "export", ids)
    # A truncated copy that names no series: skipped with a warning, counted in the study's results.json entry.
    (files[0].parent / "truncated").write_bytes(files[0].read_bytes()[:300])

    def run() -> tuple[int, dict]:
        code = process.main(["--input", str(tmp_path / "export"), "--output", str(tmp_path / "out"), "--weights",
                             str(tiny_weights), "--device", "cpu"])
        (entry,) = json.loads((tmp_path / "out" / "results.json").read_text())
        return code, entry

    code, entry = run()
    assert code == 0 and entry["error_messages"] == []
    assert len(entry["warnings"]) == 1 and "truncated: an image without" in entry["warnings"][0]
    assert any(p.name.endswith(".seg.dcm") for p in (tmp_path / "out" / "reports").iterdir())
    # One of the series' own files cut inside its pixels: the study fails, in one line naming the file.
    files[7].write_bytes(files[7].read_bytes()[:-100])
    code, entry = run()
    assert code == 1 and "IM00007" in entry["error_messages"][0] and "pixel data" in entry["error_messages"][0]


def test_files_of_one_study_that_disagree_on_the_patient_are_refused(tmp_path):
    ids, _ = write_ge_study(tmp_path)
    edit(pet_files(tmp_path, ids)[3:4], lambda ds: setattr(ds, "PatientID", "SOMEONE_ELSE"))
    with pytest.raises(InputError, match=r"PatientID differs between its files .*'SOMEONE_ELSE'"):
        choose_series(scan_folder(tmp_path)[0])


# --- Warnings name what they are about (issue 24 item 8)
def shown_on_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    """Python's display of a warning, which pytest replaces with its recorder."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def test_every_warning_names_its_file_or_series(tmp_path, capsys, tiny_weights):
    """pydicom's remark on a value longer than its VR allows ("The value length (18) exceeds the maximum length
    of 16 allowed for VR SH.") names neither the file nor the element: each is said once per series and
    element, naming the first file, and a warning raised while a case is written names the case's file."""
    grid = ge_grid(slices=24, rows=48, columns=48, usual=8.0, spacing=(8.0, 8.0))
    ids, _ = write_ge_study(tmp_path / "export", grid=grid)
    pet = pet_files(tmp_path / "export", ids)
    edit(pet, lambda ds: setattr(ds, "StudyID", "X" * 18))  # SH: 16 at most, in every PET file
    ct = sorted((tmp_path / "export" / ids.patient_id / "CT").iterdir())
    edit(ct[:1], lambda ds: setattr(ds, "StationName", "Y" * 20))  # another element, one file of the CT
    with warnings.catch_warnings():  # shown as a user sees them (pytest records them otherwise)
        warnings.showwarning = shown_on_stderr
        assert process.main(["--input", str(tmp_path / "export"), "--output", str(tmp_path / "out"), "--weights",
                             str(tiny_weights), "--device", "cpu"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    first_pet = min(pet)
    assert [line for line in lines if "StudyID" in line] == [
        f"warning: {first_pet} and {len(pet) - 1} other files of series {pydicom.dcmread(first_pet).SeriesInstanceUID}"
        ": StudyID: The value length (18) exceeds the maximum length of 16 allowed for VR SH."]
    assert [line for line in lines if "StationName" in line] == [
        f"warning: {ct[0]}: StationName: The value length (20) exceeds the maximum length of 16 allowed for VR SH."]
    # The SEG copies the PET's StudyID: highdicom's warning names the file being written.
    (seg,) = [line for line in lines if ".seg.dcm" in line]
    assert "(values copied from the PET's headers): The value length (18)" in seg
    assert len(lines) == 3, lines


def test_python_warnings_during_a_conversion_name_the_study(tmp_path, capsys, monkeypatch):
    ids, _ = write_ge_study(tmp_path / "export")
    real = convert_study_module.convert_study

    def warning_convert(case, *args):
        warnings.warn("a library's remark that names no file", UserWarning, stacklevel=1)
        return real(case, *args)

    monkeypatch.setattr(convert_study_module, "convert_study", warning_convert)
    with warnings.catch_warnings():
        warnings.showwarning = shown_on_stderr
        assert main([str(tmp_path / "export"), str(tmp_path / "out")]) == 0
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert line == (f"warning: study {ids.study_uid} (patient {ids.patient_id}, {ids.study_date}): a library's "
                    "remark that names no file")


# --- Issue 23 item 10: one study's failure stays its own; arguments are checked by their types
def two_studies(root) -> tuple[StudyIds, StudyIds]:
    first, _ = write_ge_study(root, StudyIds(patient_id="A_FIRST"))
    second, _ = write_ge_study(root, StudyIds(patient_id="B_SECOND"))
    return first, second


def test_a_failure_of_one_study_is_its_line_and_the_other_studies_are_written(tmp_path, capsys, monkeypatch):
    first, second = two_studies(tmp_path / "export")
    # Year 1 and an injection before midnight: the decay went back a day past Python's calendar (OverflowError).
    edit(pet_files(tmp_path / "export", first), lambda ds: (
        setattr(ds, "SeriesDate", "00010101"), setattr(ds, "AcquisitionDate", "00010101"),
        setattr(ds.RadiopharmaceuticalInformationSequence[0], "RadiopharmaceuticalStartTime", "235000")))
    assert main([str(tmp_path / "export"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SeriesDate '00010101' is not a plausible date" in err[0], err
    assert [p.parent.name for p in (tmp_path / "out").rglob("suv.json")] == [second.study_uid]
    # Any failure not foreseen (here an ArithmeticError from the reader) is contained the same way.
    converter = importlib.import_module("studies.dicom.convert")  # the package's name "convert" is the function
    real = converter.load_case

    def failing(study, *args):
        if study.patient_id == "B_SECOND":
            raise ZeroDivisionError("float division by zero")
        return real(study, *args)

    monkeypatch.setattr(converter, "load_case", failing)
    edit(pet_files(tmp_path / "export", first), lambda ds: setattr(ds, "SeriesDate", "20200101"))
    edit(pet_files(tmp_path / "export", first), lambda ds: setattr(ds, "AcquisitionDate", "20200101"))
    assert main([str(tmp_path / "export"), str(tmp_path / "out2")]) == 1
    # The first study's injection at 23:50 is now said as a warning (injection taken on the previous day).
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: ")]
    assert len(err) == 1 and "conversion failed (ZeroDivisionError: float division by zero)" in err[0], err
    assert [p.parent.name for p in (tmp_path / "out2").rglob("suv.json")] == [first.study_uid]


@pytest.mark.parametrize(("argv", "needle"), [
    (["{d}/export", "{d}/afile/out"], "lies under {d}/afile, which is a file"),
    (["{d}/export", "{d}/afile"], "is a file, not a folder"),
    (["{d}/nowhere", "{d}/out"], "{d}/nowhere: folder missing"),
    (["{d}/export", "{d}/out", "--weight-kg", "-70"], "--weight-kg: -70: must be a finite number from 1 to 1000"),
])
def test_converter_arguments_are_checked_by_their_types_in_one_line(tmp_path, capsys, argv, needle):
    (tmp_path / "export").mkdir()
    (tmp_path / "afile").write_text("a regular file")
    assert main([arg.format(d=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle.format(d=tmp_path) in err, err


def test_a_study_whose_listing_fails_unforeseen_fails_alone_in_process(tmp_path, tiny_weights, capsys, monkeypatch):
    grid = ge_grid(slices=24, rows=48, columns=48, usual=8.0, spacing=(8.0, 8.0))
    first, _ = write_ge_study(tmp_path / "export", StudyIds(patient_id="A_FIRST"), grid=grid)
    write_ge_study(tmp_path / "export", StudyIds(patient_id="B_SECOND"), grid=grid)
    cases = importlib.import_module("studies.cases")
    real = cases.choose_series

    def failing(study, *args):
        if study.patient_id == "A_FIRST":
            raise OverflowError("date value out of range")
        return real(study, *args)

    monkeypatch.setattr(cases, "choose_series", failing)
    code = process.main(["--input", str(tmp_path / "export"), "--output", str(tmp_path / "out"), "--weights",
                         str(tiny_weights), "--device", "cpu", "--no-report"])
    first_entry, second_entry = json.loads((tmp_path / "out" / "results.json").read_text())
    assert code == 1 and second_entry["error_messages"] == [] and len(second_entry["outputs"]) == 1
    assert first_entry["error_messages"] == [f"study {first.study_uid} (patient A_FIRST, 20200101): series choice "
                                             "failed (OverflowError: date value out of range)"]
    assert "Traceback" not in capsys.readouterr().err


# --- Issue 23 item 7: a CT in another frame of reference is fused only within one study, and said
def test_a_ct_in_another_frame_of_reference_is_noted_within_a_study_and_refused_across_studies(
        tmp_path, tiny_weights, capsys):
    grid = ge_grid(slices=24, rows=48, columns=48, usual=8.0, spacing=(8.0, 8.0))
    first, _ = write_ge_study(tmp_path / "export", StudyIds(patient_id="A_FIRST"), grid=grid)
    second, _ = write_ge_study(tmp_path / "export", StudyIds(patient_id="B_SECOND"), grid=grid)
    ct_files = sorted((tmp_path / "export" / "A_FIRST" / "CT").iterdir())
    edit(ct_files, lambda ds: setattr(ds, "FrameOfReferenceUID", "1.2.3.999"))
    # Within the study: fused, with a note on stderr, in results.json and on the page.
    code = process.main(["--input", str(tmp_path / "export"), "--output", str(tmp_path / "out"), "--weights",
                         str(tiny_weights), "--device", "cpu"])
    noted, plain = json.loads((tmp_path / "out" / "results.json").read_text())
    assert code == 0 and plain.get("warnings") is None
    (note,) = noted["warnings"]
    assert "is in frame of reference 1.2.3.999" in note and f"both are of study {first.study_uid}" in note
    assert "frame of reference 1.2.3.999" in capsys.readouterr().err
    assert "in frame of reference 1.2.3.999" in (tmp_path / "out" / "index.html").read_text()
    # The converter keeps it in suv.json.
    assert main([str(tmp_path / "export"), str(tmp_path / "converted")]) == 0
    record = json.loads(next((tmp_path / "converted" / "A_FIRST").rglob("suv.json")).read_text())
    assert any("frame of reference 1.2.3.999" in line for line in record["warnings"])
    # Across studies (--pet/--ct folders, a manifest row): refused, whether the CT's frame differs or is missing.
    pet_dir, ct_dir = tmp_path / "export" / "B_SECOND" / "PT", tmp_path / "export" / "A_FIRST" / "CT"
    for frame in ("1.2.3.999", None):
        edit(ct_files, lambda ds, frame=frame: setattr(ds, "FrameOfReferenceUID", frame) if frame else
             delattr(ds, "FrameOfReferenceUID"))
        with pytest.raises(InputError, match=f"in frame of reference {frame or '.not given.'}, .* study "
                                             f"{first.study_uid}, the PET in study {second.study_uid}: "
                                             "coordinates of two frames of reference are not comparable"):
            path_case(pet_dir, ct_dir).load()
    # A CT of another study in the PET's own frame of reference is fused as before (same coordinates).
    edit(ct_files, lambda ds: setattr(ds, "FrameOfReferenceUID", second.frame_of_reference))
    assert path_case(pet_dir, ct_dir).load().warnings == []


# --- Issue 23 item 8: two files for one image are one image only when they are the same
def scale_pixels(factor: float):
    def change(ds):
        stored = ds.pixel_array.astype(np.float64) * factor
        ds.RescaleSlope = f"{float(ds.RescaleSlope) * stored.max() / 32000:.10g}"
        ds.PixelData = np.round(stored * factor / stored.max() * 32000 / factor).astype(ds.pixel_array.dtype).tobytes()
    return change


@pytest.mark.parametrize(("modality", "change", "needle"), [
    ("PT", scale_pixels(20.0), "differing in pixel values"),  # the x20 slice
    ("CT", lambda ds: setattr(ds, "PixelData", bytes(len(ds.PixelData))), "differing in pixel values"),
    ("CT", lambda ds: setattr(ds, "ImageType", ["DERIVED", "SECONDARY", "AXIAL"]), "differing in ImageType"),
    ("PT", lambda ds: setattr(ds, "AcquisitionTime", "113000"), "differing in AcquisitionTime"),
])
def test_two_different_images_at_one_slice_position_are_refused_naming_both(tmp_path, modality, change, needle):
    ids, _ = write_ge_study(tmp_path)
    folder = tmp_path / ids.patient_id / modality
    source = sorted(folder.iterdir())[3]
    repeat = pydicom.dcmread(source)
    repeat.SOPInstanceUID = repeat.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    repeat.InstanceNumber = 99  # a later instance: the first is kept, and taking it was silent before
    with loose_values():
        change(repeat)
    repeat.save_as(folder / "zz_repeat")
    series = next(s for s in scan_folder(tmp_path)[0].series.values() if s.modality == modality)
    with pytest.raises(InputError, match=f"{source.name} and zz_repeat are two different images at one slice "
                                         f"position .*{needle}") as error:
        read_series(series)
    assert "\n" not in str(error.value)


def test_an_identical_image_at_one_slice_position_is_dropped_with_a_note(tmp_path):
    ids, _ = write_ge_study(tmp_path)
    source = pet_files(tmp_path, ids)[3]
    edit([source], lambda ds: setattr(ds, "PixelData", (ds.pixel_array // 2 * 2).tobytes()))  # even values
    repeat = pydicom.dcmread(source)
    repeat.SOPInstanceUID = repeat.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    repeat.InstanceNumber = 99
    stored = repeat.pixel_array
    repeat.PixelData = (stored // 2).astype(stored.dtype).tobytes()  # the same values, stored at twice the slope
    repeat.RescaleSlope = f"{float(repeat.RescaleSlope) * 2:.10g}"
    repeat.save_as(source.parent / "zz_repeat")
    volume = read_series(choose_series(scan_folder(tmp_path)[0])[0])
    assert volume.image.GetSize()[2] == 16
    assert any("1 image(s) repeat the position of another, the same image" in note for note in volume.notes)


def copies_of_the_pet(root, ids, count: int = 2) -> list[list]:
    """``count`` more copies of the PET folder (same SOPInstanceUIDs), as an export copied in twice."""
    folder = root / ids.patient_id / "PT"
    copies = []
    for k in range(count):
        target = root / ids.patient_id / f"PT copy {k + 1}"
        shutil.copytree(folder, target)
        copies.append(sorted(target.iterdir()))
    return copies


@pytest.mark.parametrize(("change", "needle"), [
    (lambda copies: edit(copies[0], lambda ds: setattr(ds, "Units", "CNTS")), r"Units \('BQML' / 'CNTS'\)"),
    (lambda copies: edit(copies[1], lambda ds: delattr(ds, "PatientWeight")), r"PatientWeight \('75' / '\(missing"),
    (lambda copies: edit(copies[0][2:3], lambda ds: setattr(ds, "ImagePositionPatient", [-7.5, -6.0, -850.0])),
     "ImagePositionPatient"),
    (lambda copies: edit(copies[1][5:6], scale_pixels(20.0)), "RescaleSlope"),
    (lambda copies: edit(copies[0][4:5], lambda ds: setattr(ds, "PixelData", bytes(len(ds.PixelData)))),
     "pixel data"),
])
def test_copies_of_one_export_that_differ_in_what_suv_or_geometry_reads_are_refused_naming_the_files(
        tmp_path, change, needle):
    ids, _ = write_ge_study(tmp_path)
    change(copies_of_the_pet(tmp_path, ids))
    study = scan_folder(tmp_path)[0]
    pet, _ = choose_series(study)
    assert len(pet.files) == 16  # one file per image, the others compared with it
    with pytest.raises(InputError, match=f"ambiguous series.*/PT/IM0000[0-9] and .*/PT copy [12]/IM0000[0-9] are "
                                         f"copies of one image .*differ in .*{needle}") as error:
        load_case(study)
    assert "\n" not in str(error.value)


def test_identical_copies_of_an_export_are_dropped_with_a_note(tmp_path, capsys):
    ids, _ = write_ge_study(tmp_path)
    copies = copies_of_the_pet(tmp_path, ids)
    # A copy in another transfer syntax (implicit VR) with another description: the same image to the SUV.
    for path in copies[1]:
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = "re-exported"
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    case = load_case(scan_folder(tmp_path)[0])
    assert case.suv.factor == pytest.approx(GE_FACTOR, rel=1e-9)
    (note,) = [note for note in case.pet.notes if "identical copies" in note]
    assert "32 file(s) are identical copies of its images" in note


def test_slices_of_one_series_in_two_frames_of_reference_are_refused(tmp_path):
    ids, _ = write_ge_study(tmp_path)
    edit(pet_files(tmp_path, ids)[5:7], lambda ds: setattr(ds, "FrameOfReferenceUID", "1.2.3.4"))
    with pytest.raises(InputError, match=r"FrameOfReferenceUID differs between the images of the series \("
                                         r".* in 14 files, 1.2.3.4 in 2 files\)"):
        read_series(choose_series(scan_folder(tmp_path)[0])[0])
