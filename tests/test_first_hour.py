"""A new user's first hour (issue 15, part 3): each a reproduction of what went wrong on a fresh clone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import process
from tests.conftest import ROOT, write_case

PROBE = """
import runpy, sys
sys.argv = ["process.py", *sys.argv[1:]]
try:
    runpy.run_path("process.py", run_name="__main__")
except SystemExit as end:
    print("exit", end.code, "torch imported:", "torch" in sys.modules)
"""


def _lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


def _write(image: sitk.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def test_local_mode_without_output_is_one_line_and_never_writes_to_the_root(capsys, tmp_path):
    for argv in (["--pet", "a.nii.gz", "--ct", "b.nii.gz"], ["--input", str(tmp_path)], ["--manifest", "m.csv"]):
        assert process.main(argv) == 2
        (line,) = _lines(capsys)
        assert line.startswith("error: ") and "give --output OUT" in line


def test_autopet_release_studies_are_named_after_their_folders(tmp_path, small_phantom, tiny_weights):
    pet, ct, _ = small_phantom.images()
    tree = tmp_path / "FDG-PET-CT-Lesions"
    for patient, study in (("PETCT_0af7ffe12a", "08-12-2005-NA-PET-CT Ganzkoerper  primaer mit KM-96698"),
                           ("PETCT_1b2c3d4e5f", "03-01-2004-NA-PET-CT Ganzkoerper  primaer mit KM-10445")):
        _write(pet, tree / patient / study / "SUV.nii.gz")
        _write(ct, tree / patient / study / "CTres.nii.gz")
    # as a manifest of the release's own files, and as the release tree itself
    rows = [f"{folder / 'SUV.nii.gz'},{folder / 'CTres.nii.gz'}" for folder in sorted(tree.glob("*/*"))]
    (tmp_path / "cohort.csv").write_text("pet,ct\n" + "\n".join(rows) + "\n")
    for argv in (["--manifest", str(tmp_path / "cohort.csv")], ["--input", str(tree)]):
        out = tmp_path / f"out-{argv[0][2:]}"
        assert process.main([*argv, "--output", str(out), "--weights", str(tiny_weights), "--device", "cpu",
                             "--no-report"]) == 0
        names = sorted(p.name for p in (out / "images/automated-petct-lesion-segmentation").iterdir())
        assert names == ["PETCT_0af7ffe12a_08-12-2005-NA-PET-CT_Ganzkoerper__primaer_mit_KM-96698.nii.gz",
                         "PETCT_1b2c3d4e5f_03-01-2004-NA-PET-CT_Ganzkoerper__primaer_mit_KM-10445.nii.gz"]


def test_results_json_names_nifti_as_nifti(tmp_path, small_phantom, tiny_weights):
    pet, ct, _ = small_phantom.images()
    pet_path, ct_path = _write(pet, tmp_path / "SUV_a.nii.gz"), _write(ct, tmp_path / "CT_a.nii")
    assert process.main(["--pet", str(pet_path), "--ct", str(ct_path), "--output", str(tmp_path / "out"),
                         "--weights", str(tiny_weights), "--device", "cpu", "--no-report"]) == 0
    (entry,) = json.loads((tmp_path / "out/results.json").read_text())
    assert [item["type"] for item in entry["inputs"] + entry["outputs"]] == ["nifti_image"] * 3


def test_a_ct_covering_the_lowest_slices_says_what_it_covers(capsys, tmp_path, small_phantom, tiny_weights):
    pet, ct, _ = small_phantom.images()
    depth = ct.GetSize()[2]
    write_case(tmp_path / "input", pet, ct[:, :, : max(1, depth // 5)])
    assert process.main(["--input", str(tmp_path / "input"), "--output", str(tmp_path / "out"), "--weights",
                         str(tiny_weights), "--device", "cpu"]) == 1
    (line,) = _lines(capsys)
    share = 100 * max(1, depth // 5) / depth
    assert "overlaps too little of the PET" in line and f"z {share:.0f} %" in line and "at least 50 %" in line


def test_errors_point_to_the_fix(capsys, tmp_path, small_phantom, tiny_weights):
    pet, ct, _ = small_phantom.images()
    write_case(tmp_path / "input", pet, ct)
    common = ["--output", str(tmp_path / "out"), "--device", "cpu"]
    # --input aimed at DIR/images, and at a tree of NIfTI files in no known layout
    assert process.main(["--input", str(tmp_path / "input/images"), *common, "--weights", str(tiny_weights)]) == 2
    assert "holds pet/ and ct/: give its parent folder" in _lines(capsys)[0]
    _write(pet, tmp_path / "nifti/a/pet.nii.gz")
    assert process.main(["--input", str(tmp_path / "nifti"), *common, "--weights", str(tiny_weights)]) == 2
    assert "give one study with --pet/--ct, several with --manifest" in _lines(capsys)[0]
    # --weights at a training run's folder
    (tmp_path / "run/best").mkdir(parents=True)
    for suffix in (".safetensors", ".json"):
        (tmp_path / "run/best" / f"model{suffix}").write_bytes(tiny_weights.with_suffix(suffix).read_bytes())
    assert process.main(["--input", str(tmp_path / "input"), *common, "--weights", str(tmp_path / "run")]) == 2
    assert f"its best weights are in {tmp_path / 'run/best'}" in _lines(capsys)[0]
    # PET and CT given the wrong way round
    swapped = tmp_path / "swapped"
    write_case(swapped, ct, pet)
    assert process.main(["--input", str(swapped), *common, "--weights", str(tiny_weights)]) == 1
    (line,) = _lines(capsys)
    assert "look swapped" in line and "two different studies" not in line


def test_pydicom_remarks_are_one_warning_line_each(tmp_path, small_phantom, tiny_weights):
    from tests.studies.dicom_series import StudyIds
    from tests.studies.test_cases import write_phantom_study

    write_phantom_study(tmp_path / "export", small_phantom, StudyIds(patient_id="P1"))
    for path in (tmp_path / "export").rglob("*"):  # a StudyID longer than SH's 16 characters, as real exports have
        if path.is_file():
            import pydicom

            ds = pydicom.dcmread(path)
            ds.StudyID = "STUDY-ID-LONGER-THAN-16"
            ds.save_as(path)
    done = subprocess.run([sys.executable, "process.py", "--input", str(tmp_path / "export"), "--output",
                           str(tmp_path / "out"), "--weights", str(tiny_weights), "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert all(line.startswith(("warning: ", "error: ")) for line in lines), lines
    assert len(lines) == len(set(lines))


def test_the_modules_run_from_any_folder(tmp_path):
    """bootstrap.sh puts the repository on the venv's path (a .pth file); the test's Python is that venv's."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    for module in ("train", "studies.dicom"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr


def test_help_and_argument_errors_answer_before_torch_is_imported():
    for argv, code in ((["--help"], 0), (["--device", "tpu"], 2), (["--num-parts", "0"], 2),
                       (["--input", "x"], 2), (["--min-lesion-ml", "nan"], 2)):
        done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert f"exit {code} torch imported: False" in done.stdout, (argv, done.stdout, done.stderr)


def test_a_swapped_pair_is_told_apart_from_two_studies():
    from model.errors import InputError
    from studies.checks import check_not_swapped

    hu = np.full((4, 8, 8), -1000.0)
    hu[:, 2:6, 2:6] = 40.0
    suv = np.where(hu > -500, 1.0, 0.0)
    check_not_swapped(suv, hu, "pet", "ct")
    for pet, ct, needle in ((hu, suv, "look swapped"), (hu, hu, "is it the CT?")):
        try:
            check_not_swapped(pet, ct, "pet", "ct")
        except InputError as error:
            assert needle in str(error)
        else:
            raise AssertionError("a PET in HU passed")


def test_a_dicom_studys_notes_are_warning_lines_with_and_without_reports(capsys, tmp_path, small_phantom,
                                                                         tiny_weights):
    """Images not used (a localizer in the CT series) are said on stderr, not only written to results.json."""
    from tests.studies.dicom_series import Grid, StudyIds, ct_datasets, write_series
    from tests.studies.test_cases import phantom_grid, write_phantom_study

    ids = StudyIds(patient_id="P1")
    _, ct = write_phantom_study(tmp_path / "export", small_phantom, ids)
    grid = phantom_grid(small_phantom)
    scout = ct_datasets(np.zeros((1, grid.rows, grid.columns)), Grid(z=[0.0], orientation=(1, 0, 0, 0, 0, -1),
                                                                     rows=grid.rows, columns=grid.columns),
                        ids, series_uid=ct[0].SeriesInstanceUID)
    write_series(scout, tmp_path / "export" / "CT", pattern="scout{k}.dcm")
    for extra in ([], ["--no-report"]):
        out = tmp_path / f"out{len(extra)}"
        assert process.main(["--input", str(tmp_path / "export"), "--output", str(out), "--weights",
                             str(tiny_weights), "--device", "cpu", *extra]) == 0
        notes = [line for line in _lines(capsys) if line.startswith("warning: ")]
        assert any("localizers" in line for line in notes), notes
        (entry,) = json.loads((out / "results.json").read_text())
        assert any("localizers" in note for note in entry["warnings"])
