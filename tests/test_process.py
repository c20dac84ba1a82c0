"""process.py end to end, and every bad input: one-line error naming the file, non-zero exit, no mask."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import process
from tests.conftest import ROOT, write_case

OUT_SLUG = "images/automated-petct-lesion-segmentation"


@pytest.fixture()
def case(tmp_path, small_phantom):
    pet, ct, _ = small_phantom.images()
    write_case(tmp_path / "input", pet, ct)
    return tmp_path / "input", tmp_path / "output"


def run(input_dir, output_dir, weights, *extra) -> int:
    return process.main(["--input", str(input_dir), "--output", str(output_dir), "--weights", str(weights),
                         "--device", "cpu", *extra])


def masks(output_dir: Path) -> list[Path]:
    folder = output_dir / OUT_SLUG
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_writes_the_mask_named_after_the_ct_and_results_json(case, tiny_weights, small_phantom):
    input_dir, output_dir = case
    assert run(input_dir, output_dir, tiny_weights, "--batch-size", "4") == 0
    (mask_path,) = masks(output_dir)
    assert mask_path.name == "case0.mha"
    mask, pet = sitk.ReadImage(str(mask_path)), sitk.ReadImage(str(input_dir / "images/pet/case0_pet.mha"))
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetSize() == pet.GetSize()
    assert mask.GetOrigin() == pet.GetOrigin() and mask.GetSpacing() == pet.GetSpacing()
    assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 1}
    results = json.loads((output_dir / "results.json").read_text())
    assert results[0]["outputs"][0]["filename"] == "case0.mha" and results[0]["error_messages"] == []


def test_several_pairs_and_nifti_inputs(tmp_path, tiny_weights, small_phantom):
    pet, ct, _ = small_phantom.images()
    (tmp_path / "in/images/pet").mkdir(parents=True)
    (tmp_path / "in/images/ct").mkdir(parents=True)
    for stem in ("a", "b"):
        sitk.WriteImage(pet, str(tmp_path / f"in/images/pet/{stem}_pet.nii.gz"))
        sitk.WriteImage(ct, str(tmp_path / f"in/images/ct/{stem}.nii.gz"))
    assert run(tmp_path / "in", tmp_path / "out", tiny_weights) == 0
    assert [p.name for p in masks(tmp_path / "out")] == ["a.nii.gz", "b.nii.gz"]


def _expect_failure(capsys, code, input_dir, output_dir, weights, needle, *extra):
    assert run(input_dir, output_dir, weights, *extra) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert masks(output_dir) == []
    assert not list(output_dir.rglob("*.part")) and not list(output_dir.rglob(".*.mha"))
    return err[0]


def test_missing_ct(capsys, case, tiny_weights):
    input_dir, output_dir = case
    (input_dir / "images/ct/case0.mha").unlink()
    _expect_failure(capsys, 2, input_dir, output_dir, tiny_weights, "images/ct: no CT image")


def test_missing_pet_folder(capsys, tmp_path, tiny_weights):
    (tmp_path / "in/images/ct").mkdir(parents=True)
    _expect_failure(capsys, 2, tmp_path / "in", tmp_path / "out", tiny_weights, "images/pet: PET folder missing")


def test_unequal_counts(capsys, case, tiny_weights):
    input_dir, output_dir = case
    (input_dir / "images/ct/extra.mha").write_bytes((input_dir / "images/ct/case0.mha").read_bytes())
    _expect_failure(capsys, 2, input_dir, output_dir, tiny_weights, "1 PET and 2 CT images")


def test_truncated_pet(capsys, case, tiny_weights):
    input_dir, output_dir = case
    path = input_dir / "images/pet/case0_pet.mha"
    path.write_bytes(path.read_bytes()[:5000])
    line = _expect_failure(capsys, 1, input_dir, output_dir, tiny_weights, "case0_pet.mha")
    assert "unreadable or truncated PET" in line
    assert json.loads((output_dir / "results.json").read_text())[0]["error_messages"]


def test_not_3d(capsys, case, tiny_weights):
    input_dir, output_dir = case
    sitk.WriteImage(sitk.Image([20, 20], sitk.sitkFloat32), str(input_dir / "images/ct/case0.mha"))
    _expect_failure(capsys, 1, input_dir, output_dir, tiny_weights, "CT image is 2D, expected 3D")


def test_pet_and_ct_that_do_not_overlap(capsys, case, tiny_weights):
    input_dir, output_dir = case
    ct = sitk.ReadImage(str(input_dir / "images/ct/case0.mha"))
    ct.SetOrigin((9000.0, 0.0, 0.0))
    sitk.WriteImage(ct, str(input_dir / "images/ct/case0.mha"))
    _expect_failure(capsys, 1, input_dir, output_dir, tiny_weights, "does not overlap")


def test_weights_missing_or_corrupt(capsys, case, tiny_weights, tmp_path):
    input_dir, output_dir = case
    _expect_failure(capsys, 2, input_dir, output_dir, tmp_path / "none.safetensors", "weights not found")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "m.safetensors").write_bytes(b"\x00" * 100)
    (bad / "m.json").write_text(tiny_weights.with_suffix(".json").read_text())
    _expect_failure(capsys, 2, input_dir, output_dir, bad, "corrupt")


def test_one_bad_case_does_not_stop_the_others(capsys, tmp_path, tiny_weights, small_phantom):
    pet, ct, _ = small_phantom.images()
    write_case(tmp_path / "in", pet, ct, "a")
    write_case(tmp_path / "in", pet, ct, "b")
    (tmp_path / "in/images/pet/a_pet.mha").write_bytes(b"garbage")
    assert run(tmp_path / "in", tmp_path / "out", tiny_weights) == 1
    assert [p.name for p in masks(tmp_path / "out")] == ["b.mha"]
    assert "a_pet.mha" in capsys.readouterr().err


def test_command_line_entry_point(case, tiny_weights):
    input_dir, output_dir = case
    result = subprocess.run([sys.executable, str(ROOT / "process.py"), "--input", str(input_dir), "--output",
                             str(output_dir), "--weights", str(tiny_weights), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "case0: 40 slices, lesion volume" in result.stdout
