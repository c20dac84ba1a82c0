"""process.py end to end, and every bad input: one-line error naming the file, non-zero exit, no mask."""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import process
import results.outputs
import runner.pipeline
import studies.readers
from phantoms import make_phantom
from tests.conftest import ROOT, SMALL_SPEC, write_case
from tests.model.test_files import fill, small_tmpfs

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
    assert "truncated PET" in line
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


# --- issue 8: bad input, full disks, odd names, tampered weights --------------------------------------------

def _lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err.strip().splitlines()


def _no_temporary_files(output_dir: Path) -> None:
    assert [p.name for p in output_dir.rglob(".*")] == []


def _process_subprocess(input_dir, output_dir, weights, *extra, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "process.py"), "--input", str(input_dir), "--output",
                           str(output_dir), "--weights", str(weights), "--device", "cpu", *extra],
                          capture_output=True, text=True, timeout=300, **kwargs)


# Local mode writes the reports (the picture is larger than the mask) before the mask; --no-report the mask alone.
@pytest.mark.parametrize(("extra", "first_cut"), [(("--no-report",), "case0.mha: "), ((), "case0.png: ")])
def test_a_mask_cut_short_by_ulimit_is_that_cases_failure(case, tiny_weights, tmp_path, extra, first_cut):
    input_dir, output_dir = case
    assert run(input_dir, tmp_path / "first", tiny_weights) == 0
    size = (tmp_path / "first" / OUT_SLUG / "case0.mha").stat().st_size
    result = run_with_file_size_limit_of_process(input_dir, output_dir, tiny_weights, max(size - 1, 64), *extra)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert all(line.startswith("error: ") for line in result.stderr.strip().splitlines())
    assert first_cut in result.stderr and masks(output_dir) == []
    _no_temporary_files(output_dir)


def run_with_file_size_limit_of_process(input_dir, output_dir, weights, limit: int,
                                        *extra) -> subprocess.CompletedProcess:
    return _process_subprocess(input_dir, output_dir, weights, *extra,
                               preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))


def test_a_full_disk_leaves_no_mask_and_says_so(capsys, case, tiny_weights, tmp_path):
    input_dir, _ = case
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        fill(disk)
        assert run(input_dir, disk / "out", tiny_weights) == 1
        lines = _lines(capsys)
        assert all(line.startswith("error: ") for line in lines) and len(lines) == 2, lines
        # the reports are made before the mask is written (the earlier run's files stay until all are made)
        assert "case0.lesions.csv: not written" in lines[0] and "results.json: not written" in lines[1]
        assert masks(disk / "out") == [] and not (disk / "out" / "results.json").exists()
        _no_temporary_files(disk / "out")


def test_a_corrupt_compressed_pet_is_refused(capsys, case, tiny_weights, small_phantom):
    input_dir, output_dir = case
    path = input_dir / "images/pet/case0_pet.mha"
    sitk.WriteImage(small_phantom.images()[0], str(path), useCompression=True)
    data = path.read_bytes()
    start = data.index(b"ElementDataFile = LOCAL\n") + 24
    path.write_bytes(data[:start] + bytes(len(data) - start))
    line = _expect_failure(capsys, 1, input_dir, output_dir, tiny_weights, "case0_pet.mha: corrupt or truncated PET")
    assert "its compressed voxels" in line  # found before ITK reads it (ITK itself says "Uncompress failed")


@pytest.mark.parametrize("failure", [MemoryError(), RuntimeError("Exception thrown in SimpleITK Resample:\n"
                                                                  "sitk::ERROR: Failed to allocate memory"),
                                     PermissionError(13, "Permission denied"), struct.error("unpack requires"),
                                     ValueError("cannot convert float NaN to integer")])
def test_every_failure_of_a_case_is_its_line_and_the_others_go_on(capsys, tmp_path, tiny_weights, small_phantom,
                                                                  monkeypatch, failure):
    pet, ct, _ = small_phantom.images()
    for stem in ("a", "b", "c"):
        write_case(tmp_path / "in", pet, ct, stem)
    real = runner.pipeline.segment_study

    def segment_study(study, *args, **kwargs):
        if study.case.name == "b":
            raise failure
        return real(study, *args, **kwargs)

    monkeypatch.setattr(runner.pipeline, "segment_study", segment_study)
    assert run(tmp_path / "in", tmp_path / "out", tiny_weights) == 1
    lines = _lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "images/ct/b.mha: case failed (" in lines[0]
    assert type(failure).__name__ in lines[0]
    assert [p.name for p in masks(tmp_path / "out")] == ["a.mha", "c.mha"]
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert [bool(entry["error_messages"]) for entry in results] == [False, True, False]


def test_malformed_nifti_fails_its_case_only(capsys, tmp_path, tiny_weights, small_phantom):
    pet, ct, _ = small_phantom.images()
    write_case(tmp_path / "in", pet, ct, "a")
    write_case(tmp_path / "in", pet, ct, "b")
    (tmp_path / "in/images/pet/a_pet.mha").unlink()
    (tmp_path / "in/images/pet/a_pet.nii").write_bytes(b"")  # zero bytes: struct.error before
    assert run(tmp_path / "in", tmp_path / "out", tiny_weights) == 1
    assert [p.name for p in masks(tmp_path / "out")] == ["b.mha"]
    (line,) = _lines(capsys)
    assert "a_pet.nii: unreadable or truncated PET image" in line


def test_a_name_that_is_not_utf8_is_refused_not_a_crash(case, tiny_weights):
    input_dir, output_dir = case
    ct_folder = os.fsencode(input_dir / "images/ct")
    os.rename(ct_folder + b"/case0.mha", ct_folder + b"/case\xff.mha")
    result = _process_subprocess(input_dir, output_dir, tiny_weights)
    assert result.returncode == 1, (result.returncode, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "case\\xff.mha: CT file name is not valid UTF-8" in line
    assert masks(output_dir) == []


@pytest.mark.parametrize("data_file", ["/dev/urandom", "../../pet/case0_pet.mha", "/etc/hostname"])
def test_a_header_that_names_a_file_elsewhere_is_refused(capsys, case, tiny_weights, data_file):
    input_dir, output_dir = case
    path = input_dir / "images/ct/case0.mha"
    header = path.read_bytes().split(b"ElementDataFile = LOCAL\n")[0]
    path.write_bytes(header + f"ElementDataFile = {data_file}\n".encode())
    _expect_failure(capsys, 1, input_dir, output_dir, tiny_weights, "case0.mha: CT header names the data file")


def _make_readonly_output(tmp_path: Path) -> Path:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        (out / "probe").write_bytes(b"")
    except PermissionError:
        return out
    (out / "probe").unlink()
    out.chmod(0o755)
    pytest.skip("chmod does not stop this user from writing (root): the read-only mount test covers it")


@pytest.mark.parametrize("kind", ["file", "slug_is_file", "images_is_file", "chmod"])
def test_an_unusable_output_folder_stops_the_run_before_any_work(capsys, case, tmp_path, kind):
    input_dir, _ = case
    output_dir = tmp_path / "out"
    if kind == "file":
        output_dir.write_bytes(b"")
    elif kind == "slug_is_file":
        (output_dir / "images").mkdir(parents=True)
        (output_dir / OUT_SLUG).write_bytes(b"")
    elif kind == "images_is_file":
        output_dir.mkdir()
        (output_dir / "images").write_bytes(b"")
    else:
        output_dir = _make_readonly_output(tmp_path)
    # Weights that do not exist: the output folder must be refused first, before any weights load.
    assert run(input_dir, output_dir, tmp_path / "none.safetensors") == 2
    (line,) = _lines(capsys)
    assert line.startswith("error: ") and ("output folder" in line or "--output" in line) and "weights" not in line


def test_a_read_only_file_system_stops_the_run_before_any_work(capsys, case, tmp_path):
    input_dir, _ = case
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                             capture_output=True, check=False) if os.geteuid() == 0 else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        assert run(input_dir, folder, tmp_path / "none.safetensors") == 2
        (line,) = _lines(capsys)
        assert "output folder cannot be made (Read-only file system)" in line
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_two_cts_of_one_case_name_are_refused(capsys, tmp_path, tiny_weights, small_phantom):
    pet, ct, _ = small_phantom.images()
    write_case(tmp_path / "in", pet, ct, "x")
    sitk.WriteImage(pet, str(tmp_path / "in/images/pet/y_pet.mha"))
    sitk.WriteImage(ct, str(tmp_path / "in/images/ct/x.nii"))
    _expect_failure(capsys, 2, tmp_path / "in", tmp_path / "out", tiny_weights,
                    "x.mha and x.nii are both case x")


def test_nii_input_gives_nii_gz_output(tmp_path, tiny_weights, small_phantom):
    pet, ct, _ = small_phantom.images()
    (tmp_path / "in/images/pet").mkdir(parents=True)
    (tmp_path / "in/images/ct").mkdir(parents=True)
    sitk.WriteImage(pet, str(tmp_path / "in/images/pet/a.nii"))
    sitk.WriteImage(ct, str(tmp_path / "in/images/ct/a.nii"))
    assert run(tmp_path / "in", tmp_path / "out", tiny_weights) == 0
    assert [p.name for p in masks(tmp_path / "out")] == ["a.nii.gz"]
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert results[0]["outputs"][0]["filename"] == "a.nii.gz"


# How a rerun's PET is broken (a network share that returned garbage, a copy cut short).
BROKEN_PET = {"garbage": lambda data: b"garbage", "cut short": lambda data: data[:300],
              "its voxels cut short": lambda data: data[:-1000]}


@pytest.mark.parametrize("broken", BROKEN_PET)
def test_a_failed_rerun_keeps_the_earlier_runs_outputs_and_says_which_run_made_them(capsys, case, tiny_weights,
                                                                                     broken):
    input_dir, output_dir = case
    assert run(input_dir, output_dir, tiny_weights) == 0
    files = [output_dir / OUT_SLUG / "case0.mha", *(output_dir / "reports").glob("case0.*")]
    before = {path: path.read_bytes() for path in files}
    assert len(before) == 4
    made_by = json.loads((output_dir / "reports/case0.report.json").read_text())["made_by"]["run"]
    pet = input_dir / "images/pet/case0_pet.mha"
    pet.write_bytes(BROKEN_PET[broken](pet.read_bytes()))
    capsys.readouterr()
    assert run(input_dir, output_dir, tiny_weights) == 1
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and "case0_pet.mha" in err and len(err.splitlines()) == 1
    assert f"case0: this run failed it; kept, from the run of {made_by}" in out
    assert {path: path.read_bytes() for path in files} == before
    (entry,) = json.loads((output_dir / "results.json").read_text())
    assert entry["outputs"] == [] and "case0_pet.mha" in entry["error_messages"][0]
    assert entry["kept_outputs"] == {"run": made_by, "files": ["case0.mha", "case0.lesions.csv", "case0.report.json",
                                                               "case0.png"]}
    assert f"(this run failed; the files there are those of the run of {made_by})" in \
        (output_dir / "index.html").read_text()


def test_a_pet_in_bq_per_ml_is_refused(capsys, case, tiny_weights, small_phantom):
    input_dir, output_dir = case
    pet = small_phantom.images()[0]
    sitk.WriteImage(sitk.Cast(pet, sitk.sitkFloat32) * 5000.0, str(input_dir / "images/pet/case0_pet.mha"))
    _expect_failure(capsys, 1, input_dir, output_dir, tiny_weights, "case0_pet.mha: PET is not in SUV")


def test_pet_and_ct_of_two_studies_are_refused(capsys, tmp_path, tiny_weights, small_phantom):
    pet = small_phantom.images()[0]
    ct = make_phantom(4, positive=False, spec=SMALL_SPEC).images()[1]
    ct.SetOrigin((ct.GetOrigin()[0] + 150.0, *ct.GetOrigin()[1:]))  # another patient, lying elsewhere
    write_case(tmp_path / "in", pet, ct)
    _expect_failure(capsys, 1, tmp_path / "in", tmp_path / "out", tiny_weights, "look like two different studies")


def test_an_implausible_spacing_is_refused_per_case(capsys, case, tiny_weights):
    input_dir, output_dir = case
    for name in ("pet/case0_pet.mha", "ct/case0.mha"):
        image = sitk.ReadImage(str(input_dir / "images" / name))
        image.SetSpacing((50.0, 50.0, 24.0))
        sitk.WriteImage(image, str(input_dir / "images" / name))
    _expect_failure(capsys, 1, input_dir, output_dir, tiny_weights,
                    "voxel spacing (50.0, 50.0, 24.0) mm is implausible")


@pytest.mark.parametrize(("extra", "needle"), [
    (["--device", "gpu"], "--device: 'gpu': expected auto, cpu, cuda or cuda:N"),
    (["--device", "foo"], "--device: 'foo': expected auto, cpu, cuda or cuda:N"),
    (["--min-lesion-ml", "inf"], "--min-lesion-ml: inf: must be a finite number"),
    (["--min-lesion-ml", "nan"], "--min-lesion-ml: nan: must be a finite number"),
    (["--min-lesion-ml", "-1"], "--min-lesion-ml: -1: must be a finite number from 0 to 100000"),
    (["--min-lesion-ml", "1e308"], "--min-lesion-ml: 1e308: must be a finite number from 0 to 100000"),
    (["--batch-size", "0"], "--batch-size: 0: must be a finite number from 1 to 1024"),
    (["--batch-size", str(2 ** 40)], "--batch-size: 1099511627776: must be a finite number"),
    (["--weight-kg", "nan"], "--weight-kg: nan: must be a finite number"),
    (["--weight-kg", "1e300"], "--weight-kg: 1e300: must be a finite number from 1 to 1000"),
    (["--min-lesion-ml", "abc"], "invalid float value: 'abc'"),
    (["--precision", "fp8"], "invalid choice: 'fp8'"),
    # Issue 23 item 10: a path under a regular file, parts out of range: the argument's type refuses them.
    (["--output", "{file}/sub"], "--output: {file}/sub: lies under {file}, which is a file, not a folder"),
    (["--num-parts", "-2"], "--num-parts: -2: must be a finite number from 1"),
    (["--part-id", "-1"], "--part-id: -1: must be a finite number from 0"),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, case, tiny_weights, extra, needle):
    input_dir, output_dir = case
    afile = input_dir.parent / "afile"
    afile.write_text("a regular file")
    _expect_failure(capsys, 2, input_dir, output_dir, tiny_weights, needle.format(file=afile),
                    *(arg.format(file=afile) for arg in extra))


def test_cuda_without_a_gpu_is_one_line(capsys, case, tiny_weights):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    input_dir, output_dir = case
    assert run(input_dir, output_dir, tiny_weights, "--device", "cuda:0") == 2  # the later --device wins
    (line,) = _lines(capsys)
    assert "no CUDA GPU is visible" in line


@pytest.mark.parametrize(("document", "needle"), [
    ([], "a JSON object is expected"),
    ({"model": {"encoder": "no_such_net"}}, "unknown encoder 'no_such_net'"),
    ({"model": {"encoder": "hf-hub:timm/resnet18.a1_in1k"}}, "no 'hf-hub:' names"),
    ({"model": {"crop_size": 0}}, "crop_size must be a positive multiple of 32"),
    ({"model": {"crop_size": -32}}, "crop_size must be a positive multiple of 32"),
    ({"model": {"spacing_mm": [0, 0]}}, "spacing_mm must be two positive finite numbers"),
    ({"weights_sha256": None}, "a checkpoint without its hash is not loaded"),
    # The model card (issue 24): a purpose the outputs would not know how to warn about, figures that are not.
    ({"model": {"card": {"purpose": "clinical"}}}, "card.purpose must be one of ['demo', 'research', 'unstated']"),
    ({"model": {"card": {"held_out": {"dice": [0.5]}}}}, "card.held_out must be an object of texts and numbers"),
    ({"model": {"card": {"purpose": "demo", "owner": "x"}}}, "card must be an object with purpose, trained_on"),
])
def test_bad_weights_json_is_one_line_and_exit_2(capsys, case, tiny_weights, tmp_path, document, needle):
    input_dir, output_dir = case
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "m.safetensors").write_bytes(tiny_weights.read_bytes())
    original = json.loads(tiny_weights.with_suffix(".json").read_text())
    if isinstance(document, dict):
        original["model"].update(document.pop("model", {}))
        original.update(document)
        document = original
    (folder / "m.json").write_text(json.dumps(document))
    _expect_failure(capsys, 2, input_dir, output_dir, folder, needle)


def test_ctrl_c_is_one_line_exit_130_and_leaves_nothing_half_written(capsys, case, tiny_weights, monkeypatch):
    input_dir, output_dir = case
    real_write = sitk.WriteImage

    def write_then_interrupt(image, name, *args, **kwargs):
        real_write(image, name, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(studies.readers.sitk, "WriteImage", write_then_interrupt)
    assert run(input_dir, output_dir, tiny_weights) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    assert masks(output_dir) == [] and not (output_dir / "results.json").exists()
    _no_temporary_files(output_dir)


def test_a_training_pickle_is_named_as_such(capsys, case, tmp_path):
    input_dir, output_dir = case
    (tmp_path / "last.pt").write_bytes(b"\x80\x04")
    _expect_failure(capsys, 2, input_dir, output_dir, tmp_path / "last.pt", "last.pt: not a .safetensors checkpoint")


def test_the_folder_error_lists_every_suffix_read(capsys, case, tiny_weights):
    input_dir, output_dir = case
    (input_dir / "images/ct/case0.mha").unlink()
    line = _expect_failure(capsys, 2, input_dir, output_dir, tiny_weights, "no CT image")
    assert "(*.mha, *.nii.gz, *.nii)" in line


def test_hidden_and_appledouble_files_are_not_images(case, tiny_weights):
    input_dir, output_dir = case
    (input_dir / "images/ct/._case0.mha").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (input_dir / "images/pet/.case0_pet.mha.swp").write_bytes(b"")
    assert run(input_dir, output_dir, tiny_weights) == 0
    assert [p.name for p in masks(output_dir)] == ["case0.mha"]


def test_a_newline_in_a_name_never_splits_an_error(capsys, case, tiny_weights):
    input_dir, output_dir = case
    (input_dir / "images/ct/case0.mha").rename(input_dir / "images/ct/case\n0.mha")
    (input_dir / "images/ct/case\n0.mha").write_bytes(b"garbage")
    line = _expect_failure(capsys, 1, input_dir, output_dir, tiny_weights, "case\\n0.mha: unreadable CT image")
    assert "\n" not in line


# --- issue 9 and 10: local mode's inputs and reports, cohorts (parts, skip-existing, torchrun) ------------------

HEADLINE = {"lesion_count", "tmtv_ml", "tlg", "suv_max", "dmax_mm"}


def test_grand_challenge_mode_writes_masks_and_results_json_only(case, tiny_weights, monkeypatch):
    input_dir, output_dir = case
    monkeypatch.setattr(process, "GRAND_CHALLENGE_INPUT", input_dir)
    assert process.main(["--output", str(output_dir), "--weights", str(tiny_weights), "--device", "cpu"]) == 0
    assert sorted(str(p.relative_to(output_dir)) for p in output_dir.rglob("*")) == [
        "images", OUT_SLUG, f"{OUT_SLUG}/case0.mha", "results.json"]
    (entry,) = json.loads((output_dir / "results.json").read_text())
    assert set(entry) == {"inputs", "outputs", "error_messages"}
    assert entry["inputs"] == [{"type": "metaio_image", "filename": "case0_pet.mha"},
                               {"type": "metaio_image", "filename": "case0.mha"}]


def test_local_mode_writes_reports_beside_the_masks_and_no_report_turns_them_off(case, tiny_weights, tmp_path):
    input_dir, output_dir = case
    assert run(input_dir, output_dir, tiny_weights) == 0
    assert sorted(p.name for p in (output_dir / "reports").iterdir()) == [
        "case0.lesions.csv", "case0.png", "case0.report.json"]
    (entry,) = json.loads((output_dir / "results.json").read_text())
    report = json.loads((output_dir / "reports/case0.report.json").read_text())
    assert HEADLINE <= set(entry) and all(entry[key] == report[key] for key in HEADLINE)
    assert report["model"]["weights_sha256"] == {tiny_weights.name: json.loads(
        tiny_weights.with_suffix(".json").read_text())["weights_sha256"]}
    assert run(input_dir, tmp_path / "bare", tiny_weights, "--no-report") == 0
    assert not (tmp_path / "bare" / "reports").exists()
    assert not HEADLINE & set(json.loads((tmp_path / "bare" / "results.json").read_text())[0])
    # --no-report over an earlier run's reports: they would no longer match the masks, so they go.
    assert run(input_dir, output_dir, tiny_weights, "--no-report") == 0
    assert list((output_dir / "reports").iterdir()) == []


def test_one_study_given_by_pet_and_ct(tmp_path, tiny_weights, small_phantom):
    pet, ct, _ = small_phantom.images()
    sitk.WriteImage(pet, str(tmp_path / "p7_pet.nii.gz"))
    sitk.WriteImage(ct, str(tmp_path / "p7_ct.nii.gz"))
    assert process.main(["--pet", str(tmp_path / "p7_pet.nii.gz"), "--ct", str(tmp_path / "p7_ct.nii.gz"),
                         "--output", str(tmp_path / "out"), "--weights", str(tiny_weights), "--device", "cpu"]) == 0
    assert [p.name for p in masks(tmp_path / "out")] == ["p7_ct.nii.gz"]  # named after its CT (issue 24)
    assert (tmp_path / "out/reports/p7_ct.report.json").is_file()


def _manifest(tmp_path, small_phantom, rows: str) -> Path:
    pet, ct, _ = small_phantom.images()
    (tmp_path / "studies").mkdir()
    for stem in ("x", "y"):
        sitk.WriteImage(pet, str(tmp_path / f"studies/{stem}_suv.mha"))
        sitk.WriteImage(ct, str(tmp_path / f"studies/{stem}_hu.mha"))
    path = tmp_path / "cohort.csv"
    path.write_text(rows)
    return path


def test_a_manifest_pairs_explicitly_and_a_bad_row_fails_alone(capsys, tmp_path, tiny_weights, small_phantom):
    manifest = _manifest(tmp_path, small_phantom, "pet,ct,name\n"
                         "studies/x_suv.mha,studies/x_hu.mha,patient_x\n"
                         f"{tmp_path}/studies/y_suv.mha,studies/y_hu.mha,\n"
                         "studies/missing.mha,studies/x_hu.mha,z\n")
    assert process.main(["--manifest", str(manifest), "--output", str(tmp_path / "out"), "--weights",
                         str(tiny_weights), "--device", "cpu"]) == 1
    assert [p.name for p in masks(tmp_path / "out")] == ["patient_x.mha", "y_hu.mha"]  # no name: after its CT
    (line,) = _lines(capsys)
    assert "studies/missing.mha: PET file missing" in line
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert [bool(entry["error_messages"]) for entry in results] == [False, False, True]


@pytest.mark.parametrize(("rows", "needle"), [
    ("pet;ct\na;b\n", "lacks the column(s) pet, ct"),
    ("pet,ct,name\nstudies/x_suv.mha,studies/x_hu.mha,a\nstudies/y_suv.mha,studies/y_hu.mha,a\n",
     "lines 2 and 3 are both case a"),
    ("pet,ct\nstudies/x_suv.mha,\n", "line 2: both pet and ct must name a path"),
    ("pet,ct,name\nstudies/x_suv.mha,studies/x_hu.mha,../up\n", "name '../up' is not a file name"),
    ("pet,ct\n", "manifest lists no case"),
    ("pet,ct\nstudies/x_suv.mha\0x,studies/x_hu.mha\n", "line 2: a path holds a NUL byte"),
])
def test_a_manifest_that_cannot_be_used_stops_the_run(capsys, tmp_path, tiny_weights, small_phantom, rows,
                                                       needle):
    manifest = _manifest(tmp_path, small_phantom, rows)
    assert process.main(["--manifest", str(manifest), "--output", str(tmp_path / "out"), "--weights",
                         str(tiny_weights), "--device", "cpu"]) == 2
    (line,) = _lines(capsys)
    assert line.startswith(f"error: {manifest}: ") and needle in line


def test_a_fifo_manifest_is_refused_not_waited_on(capsys, tmp_path, tiny_weights):
    import signal

    os.mkfifo(tmp_path / "cohort.csv")
    signal.alarm(60)  # a regression would block on the FIFO: fail instead of hanging the suite
    try:
        assert process.main(["--manifest", str(tmp_path / "cohort.csv"), "--output", str(tmp_path / "out"),
                             "--weights", str(tiny_weights), "--device", "cpu"]) == 2
    finally:
        signal.alarm(0)
    (line,) = _lines(capsys)
    assert "cohort.csv: manifest is not a regular file" in line


def test_a_dicom_export_end_to_end(tmp_path, tiny_weights, small_phantom):
    import highdicom as hd

    from tests.studies.dicom_series import StudyIds
    from tests.studies.test_cases import write_phantom_study

    pet_datasets, _ = write_phantom_study(tmp_path / "export" / "study", small_phantom, StudyIds(patient_id="P1"))
    assert run(tmp_path / "export", tmp_path / "out", tiny_weights, "--suv-method", "autopet") == 0
    (mask_path,) = masks(tmp_path / "out")
    name = mask_path.name.removesuffix(".nii.gz")
    assert name.startswith("P1_20200101_") and mask_path.name.endswith(".nii.gz")
    assert sorted(p.name for p in (tmp_path / "out/reports").iterdir()) == sorted(
        f"{name}{suffix}" for suffix in (".lesions.csv", ".png", ".report.json", ".seg.dcm"))
    mask = sitk.ReadImage(str(mask_path))
    assert mask.GetSize() == small_phantom.images()[0].GetSize()
    seg = hd.seg.segread(tmp_path / "out/reports" / f"{name}.seg.dcm")
    uids = [str(ds.SOPInstanceUID) for ds in sorted(pet_datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1],
                                               assert_missing_frames_are_empty=True)
    assert np.array_equal(frames[..., 0], sitk.GetArrayFromImage(mask)) and frames.any()
    report = json.loads((tmp_path / "out/reports" / f"{name}.report.json").read_text())
    assert report["suv"]["method"] == "autopet"
    (entry,) = json.loads((tmp_path / "out/results.json").read_text())
    assert entry["inputs"][0]["type"] == "dicom_series" and entry["lesion_count"] == report["lesion_count"]


def test_skip_existing_on_a_dicom_export_takes_its_suv_conversion_as_a_setting(capsys, tmp_path, tiny_weights,
                                                                              small_phantom):
    from tests.studies.dicom_series import StudyIds
    from tests.studies.test_cases import write_phantom_study

    write_phantom_study(tmp_path / "export" / "study", small_phantom, StudyIds(patient_id="P1"))
    out = tmp_path / "out"
    assert run(tmp_path / "export", out, tiny_weights, "--suv-method", "autopet") == 0
    first = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert run(tmp_path / "export", out, tiny_weights, "--suv-method", "autopet", "--skip-existing") == 0
    assert ": already done (--skip-existing)" in capsys.readouterr().out  # a NIfTI mask, its note in descrip
    assert json.loads((out / "results.json").read_text()) == first
    assert run(tmp_path / "export", out, tiny_weights, "--skip-existing") == 0
    assert "redone (--skip-existing): made with other settings (dicom {'suv_method': 'autopet'" in \
        capsys.readouterr().out
    (report,) = (out / "reports").glob("*.report.json")
    assert json.loads(report.read_text())["suv"]["method"] == "qiba"


@pytest.mark.parametrize(("extra", "needle"), [
    (["--pet-series", "1.2.3"], "--pet-series: chooses a series of a DICOM --input folder"),
    (["--suv-method", "qiba"], "--suv-method: applies to DICOM PET only"),
    (["--weight-kg", "70"], "--weight-kg: applies to DICOM PET only"),
    (["--pet", "a.mha"], "--input and --pet/--ct: give one input"),
    (["--num-parts", "2", "--part-id", "2"], "--num-parts 2 --part-id 2"),
])
def test_options_that_do_not_fit_the_input_are_one_line_and_exit_2(capsys, case, tiny_weights, extra, needle):
    input_dir, output_dir = case
    _expect_failure(capsys, 2, input_dir, output_dir, tiny_weights, needle, *extra)


def test_pet_without_ct_and_no_report_in_grand_challenge_mode_are_refused(capsys, tmp_path):
    assert process.main(["--pet", str(tmp_path / "a.mha"), "--output", str(tmp_path)]) == 2
    assert process.main(["--no-report", "--output", str(tmp_path)]) == 2
    lines = _lines(capsys)
    assert "--pet and --ct: give both" in lines[0] and "--no-report: reports are written in local mode" in lines[1]


@pytest.fixture()
def cohort(tmp_path, small_phantom):
    pet, ct, _ = small_phantom.images()
    for stem in ("a", "b", "c"):
        write_case(tmp_path / "in", pet, ct, stem)
    return tmp_path / "in"


def test_parts_write_their_studies_and_their_own_results_file(cohort, tmp_path, tiny_weights):
    assert run(cohort, tmp_path / "out", tiny_weights, "--num-parts", "2", "--part-id", "0") == 0
    assert run(cohort, tmp_path / "out", tiny_weights, "--num-parts", "2", "--part-id", "1") == 0
    assert [p.name for p in masks(tmp_path / "out")] == ["a.mha", "b.mha", "c.mha"]
    part0 = json.loads((tmp_path / "out/results.part-0-of-2.json").read_text())
    part1 = json.loads((tmp_path / "out/results.part-1-of-2.json").read_text())
    assert [e["outputs"][0]["filename"] for e in part0] == ["a.mha", "c.mha"]
    assert [e["outputs"][0]["filename"] for e in part1] == ["b.mha"]
    assert not (tmp_path / "out/results.json").exists()


def test_skip_existing_redoes_only_what_is_missing(capsys, cohort, tmp_path, tiny_weights):
    out = tmp_path / "out"
    assert run(cohort, out, tiny_weights) == 0
    first = json.loads((out / "results.json").read_text())
    (out / OUT_SLUG / "b.mha").unlink()  # as if the run had been killed before b
    stamps = {p.name: p.stat().st_mtime_ns for p in masks(out)}
    capsys.readouterr()
    assert run(cohort, out, tiny_weights, "--skip-existing") == 0
    stdout = capsys.readouterr().out
    assert "a: already done" in stdout and "c: already done" in stdout and "b: 40 slices" in stdout
    assert {p.name: p.stat().st_mtime_ns for p in masks(out) if p.name != "b.mha"} == stamps
    assert json.loads((out / "results.json").read_text()) == first


def test_skip_existing_takes_no_number_it_did_not_compute(capsys, cohort, tmp_path, tiny_weights):
    """The issue's rerun: a kept mask blanked and its report edited to 42 lesions, 9999 ml."""
    out = tmp_path / "out"
    assert run(cohort, out, tiny_weights) == 0
    first = json.loads((out / "results.json").read_text())
    mask = sitk.ReadImage(str(out / OUT_SLUG / "b.mha"))
    blank = mask * 0
    for key in mask.GetMetaDataKeys():
        blank.SetMetaData(key, mask.GetMetaData(key))
    sitk.WriteImage(blank, str(out / OUT_SLUG / "b.mha"), useCompression=True)
    report = out / "reports/b.report.json"
    report.write_text(json.dumps(json.loads(report.read_text()) | {"lesion_count": 42, "tmtv_ml": 9999}))
    capsys.readouterr()
    assert run(cohort, out, tiny_weights, "--skip-existing") == 0
    stdout = capsys.readouterr().out
    assert "a: already done" in stdout and "c: already done" in stdout
    assert "b: redone (--skip-existing): its report describes another mask than the one there" in stdout
    assert json.loads((out / "results.json").read_text()) == first
    assert not re.search(r">(42|9999(\.0)?)</td>", (out / "index.html").read_text())


@pytest.mark.parametrize(("extra", "named"), [(("--min-lesion-ml", "10"), "min_lesion_ml 0.0 -> 10.0"),
                                              (("--tta",), "tta False -> True")])
def test_skip_existing_redoes_what_other_settings_made(capsys, cohort, tmp_path, tiny_weights, extra, named):
    out = tmp_path / "out"
    assert run(cohort, out, tiny_weights) == 0
    capsys.readouterr()
    assert run(cohort, out, tiny_weights, "--skip-existing", *extra) == 0
    stdout = capsys.readouterr().out
    assert ": already done" not in stdout and stdout.count(f"redone (--skip-existing): made with other settings "
                                                          f"({named})") == 3
    assert run(cohort, tmp_path / "fresh", tiny_weights, *extra) == 0
    assert json.loads((out / "results.json").read_text()) == json.loads((tmp_path / "fresh/results.json").read_text())
    models = [json.loads((out / f"reports/{name}.report.json").read_text())["model"] for name in "abc"]
    assert all(model == models[0] for model in models) and models[0]["min_lesion_ml"] == float(
        "10" if "--min-lesion-ml" in extra else 0) and models[0]["tta"] == ("--tta" in extra)


def test_an_edited_weights_config_is_refused_and_a_sealed_one_is_its_own_model(capsys, case, tiny_weights, tmp_path):
    input_dir, output_dir = case
    folder = tmp_path / "edited"
    folder.mkdir()
    (folder / "m.safetensors").write_bytes(tiny_weights.read_bytes())
    document = json.loads(tiny_weights.with_suffix(".json").read_text())
    document["model"]["threshold"] = 0.01
    (folder / "m.json").write_text(json.dumps(document))
    _expect_failure(capsys, 2, input_dir, output_dir, folder, "m.json: its model config differs from the one its "
                                                              "model_sha256 records")
    assert not (output_dir / "results.json").exists()
    assert subprocess.run([sys.executable, "-m", "model.checkpoint", "--seal", str(folder / "m.json")],
                          capture_output=True, text=True, cwd=ROOT).returncode == 0
    assert run(input_dir, output_dir, folder) == 0
    assert run(input_dir, tmp_path / "original", tiny_weights) == 0
    edited, original = (json.loads((out / "reports/case0.report.json").read_text())["model"]
                        for out in (output_dir, tmp_path / "original"))
    assert edited["weights_sha256"] == {"m.safetensors": document["weights_sha256"]}  # the same tensors
    assert edited["model_sha256"]["m.safetensors"] != original["model_sha256"]["tiny.safetensors"]
    assert edited["model_sha256"]["m.safetensors"] in (output_dir / "index.html").read_text()


def test_two_torchrun_ranks_write_what_one_process_writes(cohort, tmp_path, tiny_weights):
    assert run(cohort, tmp_path / "one", tiny_weights) == 0
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(ROOT / "process.py"), "--input", str(cohort), "--output", str(tmp_path / "two"),
                             "--weights", str(tiny_weights), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(re.findall(r"\b([abc]): 40 slices", result.stdout)) == ["a", "b", "c"]
    one, two = masks(tmp_path / "one"), masks(tmp_path / "two")
    assert [p.name for p in two] == [p.name for p in one] == ["a.mha", "b.mha", "c.mha"]
    for first, second in zip(one, two, strict=True):
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(first))),
                              sitk.GetArrayFromImage(sitk.ReadImage(str(second))))
    assert json.loads((tmp_path / "two/results.json").read_text()) == \
        json.loads((tmp_path / "one/results.json").read_text())
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["images", "index.html", "reports", "results.json"]


def test_an_output_folder_of_other_cases_is_refused_unless_asked_to_keep_them(capsys, cohort, tmp_path, tiny_weights,
                                                                              small_phantom):
    """Issue 24: a folder reused for another input kept the old cases' masks and reports without a word, while
    results.json and the page left them out. Variants: other case names, and a case of this input whose mask
    of an earlier run has another format (a.nii.gz beside the a.mha this run writes)."""
    out = tmp_path / "out"
    assert run(cohort, out, tiny_weights) == 0
    pet, ct, _ = small_phantom.images()
    write_case(tmp_path / "other", pet, ct, "d")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    capsys.readouterr()
    assert run(tmp_path / "other", out, tiny_weights) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {out}: 12 files of cases not in this input (a.lesions.csv, a.mha, a.png, ")
    assert "--keep-other-cases" in line and sorted(p.relative_to(out) for p in out.rglob("*")) == before
    # Asked to keep them: one line says so, the run goes on.
    assert run(tmp_path / "other", out, tiny_weights, "--keep-other-cases") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "12 files of cases not in this input" in warnings[0] and "kept" in warnings[0]
    assert [entry["case"] for entry in json.loads((out / "results.json").read_text())] == ["d"]
    # The same input again is no other input; a mask of its case in another format is another run's output.
    only_d = tmp_path / "only_d"
    assert run(tmp_path / "other", only_d, tiny_weights) == 0 and run(tmp_path / "other", only_d, tiny_weights) == 0
    sitk.WriteImage(sitk.ReadImage(str(only_d / OUT_SLUG / "d.mha")), str(only_d / OUT_SLUG / "d.nii.gz"))
    capsys.readouterr()
    assert run(tmp_path / "other", only_d, tiny_weights) == 2
    assert "1 file of cases not in this input (d.nii.gz)" in capsys.readouterr().err


def test_invisible_characters_in_a_file_name_are_shown_escaped_in_every_line_and_on_the_page(
        tmp_path, capsys, small_phantom, tiny_weights):
    """Issue 23 item 12: ``patient_99<U+202E>21_tneitap`` displayed as "patient_99patient_12"; a zero-width
    space in a broken file's name is the variant. results.json keeps the real names (programs match on them)."""
    pet, ct, _ = small_phantom.images()
    bidi = "patient_99\u202e21_tneitap"
    pet_path, ct_path = write_case(tmp_path / "in", pet, ct)
    ct_path = ct_path.rename(ct_path.with_name(f"{bidi}.mha"))  # a case is named after its CT
    broken = tmp_path / "in" / "broken\u200b.mha"
    broken.write_bytes(b"not an image")
    other_ct = tmp_path / "in" / "other_ct.mha"
    other_ct.write_bytes(ct_path.read_bytes())
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"pet,ct\n{pet_path},{ct_path}\n{broken},{other_ct}\n", encoding="utf-8")
    code = process.main(["--manifest", str(manifest), "--output", str(tmp_path / "out"), "--weights",
                         str(tiny_weights), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    for text in (captured.out, captured.err, (tmp_path / "out" / "index.html").read_text(encoding="utf-8")):
        assert not any(ch in text for ch in "\u202e\u200b"), text
    assert "patient_99<U+202E>21_tneitap:" in captured.out and "broken<U+200B>.mha" in captured.err
    written, failed = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert written["case"] == bidi and (tmp_path / "out" / "reports" / f"{bidi}.png").is_file()
    assert "broken<U+200B>.mha" in failed["error_messages"][0]


# --- issue 24: what a new user sees on the first day -------------------------------------------------------

def _weights_with_card(folder: Path, tiny_weights: Path, members: dict[str, dict]) -> Path:
    """A folder of checkpoints (the tiny network's weights), each member's card as given."""
    from model.checkpoint import update_card

    folder.mkdir()
    for name, card in members.items():
        shutil.copy2(tiny_weights, folder / f"{name}.safetensors")
        shutil.copy2(tiny_weights.with_suffix(".json"), folder / f"{name}.json")
        if card:
            update_card(folder / f"{name}.json", **card)
    return folder


DEMO_CARD = {"purpose": "demo", "trained_on": "4 phantoms", "held_out": {"data": "2 phantoms", "dice": 0.25}}


@pytest.mark.parametrize("members, warning", [
    ({"demo": DEMO_CARD}, "demo weights: not for clinical or research use"),
    ({"a": {"purpose": "research"}, "b": DEMO_CARD}, "research weights: not for clinical use; demo weights: not for "
                                                    "clinical or research use"),
    ({"old": {}}, None),  # a checkpoint written before cards: no warning, and its card says its purpose is unstated
])
def test_the_outputs_say_what_the_weights_are_where_a_reader_looks(capsys, case, tmp_path, tiny_weights,
                                                                   monkeypatch, members, warning):
    input_dir, output_dir = case
    weights = _weights_with_card(tmp_path / "weights", tiny_weights, members)
    titles = []

    def recorded(*args, **kwargs):
        titles.append(real_figure(*args, **kwargs).title)

    real_figure = results.outputs.case_figure
    monkeypatch.setattr(results.outputs, "case_figure", recorded)
    assert run(input_dir, output_dir, weights) == 0
    out, err = capsys.readouterr()
    card_line = next(line for line in out.splitlines() if line.startswith("model card: "))
    report = json.loads((output_dir / "reports/case0.report.json").read_text())
    page = (output_dir / "index.html").read_text()
    if warning is None:
        assert card_line == "model card: unstated model" and "warning" not in err and report["warning"] is None
        assert 'role="alert"' not in page and titles[0].count("\n") == 1
        return
    assert f"model card: {'demo' if len(members) == 1 else 'research'} model" in card_line
    assert f"warning: {weights}: {warning}" in err.splitlines()  # the console
    demo_member = "b.safetensors" if len(members) > 1 else "demo.safetensors"
    assert report["warning"] == warning and report["model"]["cards"][demo_member] == {
        "purpose": "demo", "trained_on": "4 phantoms", "held_out": {"data": "2 phantoms", "dice": 0.25}}
    assert f'<p class="warning" role="alert">{warning}</p>' in page  # the page's header
    assert "trained on 4 phantoms; held out: Dice 0.25 on 2 phantoms" in page
    assert titles == [f"case0\nTMTV {report['tmtv_ml']:.1f} ml, {report['lesion_count']} lesion"
                      f"{'s' if report['lesion_count'] != 1 else ''}, SUVmax {report['suv_max']:.1f}\n{warning}"]


def test_the_shipped_weights_say_they_are_a_demo():
    from model.checkpoint import cards_warning, model_cards

    (card,) = model_cards(ROOT / "weights").values()
    assert card.purpose == "demo" and "phantoms" in card.trained_on and card.held_out["cases"] == 30
    assert cards_warning({"demo": card}) == "demo weights: not for clinical or research use"


def test_a_cohort_prints_cases_done_and_the_time_left(capsys, cohort, tmp_path, tiny_weights):
    assert run(cohort, tmp_path / "out", tiny_weights) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert [line.split("] ")[1].split(":")[0] for line in lines] == ["a", "b", "c"]
    assert all(re.fullmatch(rf"\[{k}/3 done, ETA \d\d:\d\d\]", line.split(" a:")[0].split(" b:")[0].split(" c:")[0])
               for k, line in enumerate(lines, 1))
    assert lines[-1].startswith("[3/3 done, ETA 00:00] c: ")
    # Variant: a continued run whose cases are all done ran none: no time to estimate from.
    assert run(cohort, tmp_path / "out", tiny_weights, "--skip-existing") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert lines == ["[1/3 done] a: already done (--skip-existing)", "[2/3 done] b: already done (--skip-existing)",
                     "[3/3 done] c: already done (--skip-existing)"]


def test_help_shows_every_options_default(capsys):
    parser = process.build_parser()
    with pytest.raises(SystemExit):
        process.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for action in parser._actions:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            continue  # a flag (off), or an option whose help says what happens without it
        help_text = " ".join(process._HelpFormatter("x")._get_help_string(action).split())
        assert "default" in help_text and help_text % {"default": action.default} in shown, action.option_strings
    assert "--min-lesion-ml MIN_LESION_ML drop components smaller than this (default: 0.0)" in shown
    assert "(default: weights/ beside process.py)" in shown and "--part-id PART_ID run part K" in shown


# Ctrl-C (issue 24 item 4): wherever SIGINT lands, exit 130, the line "interrupted", complete cases only.

def _sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)


class _InterruptsWhenCollected:
    """Sends SIGINT from its __del__: Python runs the handler inside it and has to ignore its KeyboardInterrupt
    (the issue's "Exception ignored in: ... WeakKeyDictionary ... KeyboardInterrupt", then exit 0)."""

    def __del__(self) -> None:
        _sigint()
        sum(range(1000))  # the handler runs in here


def _on_call(module, name: str, call: int, action, monkeypatch) -> None:
    """``module.name`` that does ``action`` before its ``call``-th call."""
    real, calls = getattr(module, name), []

    def hooked(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            action()
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, hooked)


def _interrupt_in_callback() -> None:
    _InterruptsWhenCollected()  # collected at once


INTERRUPT_POINTS = {
    # where: (module, function, which call, what happens there)
    "reading the next case (read-ahead thread)": ("studies.cases", "read_images", 2, _sigint),
    "the network": ("runner.pipeline", "segment_on_pet_grid", 2, _sigint),
    "writing reports": ("results.outputs", "write_lesions_csv", 1, _sigint),
    "a garbage-collector callback": ("runner.pipeline", "segment_on_pet_grid", 2, _interrupt_in_callback),
    "results.json": ("runner.run", "write_results", 1, _sigint),
}


@pytest.mark.parametrize("read_ahead", [True, False], ids=["read-ahead", "no-read-ahead"])
@pytest.mark.parametrize("where", list(INTERRUPT_POINTS))
def test_ctrl_c_anywhere_ends_the_run_with_130_and_leaves_complete_cases(capsys, cohort, tmp_path, tiny_weights,
                                                                        monkeypatch, where, read_ahead):
    import importlib

    module_name, function, call, action = INTERRUPT_POINTS[where]
    _on_call(importlib.import_module(module_name), function, call, action, monkeypatch)
    if where == "writing reports":  # and a second Ctrl-C while the first is being handled
        _on_call(results.outputs, "write_report_json", 1, _sigint, monkeypatch)
    out, handler = tmp_path / "out", signal.getsignal(signal.SIGINT)
    code = run(cohort, out, tiny_weights, *([] if read_ahead else ["--no-read-ahead"]))
    err = capsys.readouterr().err
    assert code == 130 and err.splitlines() == ["interrupted"], err  # no "Exception ignored", no traceback
    assert not (out / "results.json").exists()
    for mask in masks(out):  # every case there is whole: its mask and all its reports
        assert {p.name for p in (out / "reports").glob(f"{mask.stem}.*")} == {
            f"{mask.stem}.lesions.csv", f"{mask.stem}.report.json", f"{mask.stem}.png"}
    _no_temporary_files(out)
    assert signal.getsignal(signal.SIGINT) is handler  # the handler before the run is back


def test_ctrl_c_at_several_moments_of_a_real_run(tmp_path, small_phantom, tiny_weights):
    pet, ct, _ = small_phantom.images()
    for k in range(24):  # enough cases that the run is still going at the last moment (2 s), even on a fast CPU
        write_case(tmp_path / "in", pet, ct, f"c{k:02d}")
    for delay in (0.0, 0.7, 2.0):
        out = tmp_path / f"out-{delay}"
        child = subprocess.Popen([sys.executable, "process.py", "--input", str(tmp_path / "in"), "--output", str(out),
                                  "--weights", str(tiny_weights), "--device", "cpu"], cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        for line in child.stdout:
            if line.startswith("model card: "):  # the weights are loaded: the cohort starts
                break
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=300)
        assert child.returncode == 130 and err.splitlines() == ["interrupted"], (delay, err)
        assert not (out / "results.json").exists()
        for mask in masks(out):
            assert len(list((out / "reports").glob(f"{mask.stem}.*"))) == 3
        _no_temporary_files(out)
