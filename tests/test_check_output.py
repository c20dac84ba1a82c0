"""test/check_output.py: the shipped case passes at every precision this CPU can run (PyTorch emulates bf16
and fp16 where the CPU lacks them) and a wrong mask fails, whatever the CPU."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import process
from tests.conftest import ROOT

TEST = ROOT / "test"
SLUG = "images/automated-petct-lesion-segmentation"
NAME = "00000000-0000-47e8-8000-000000000002.mha"


def _checker():
    spec = importlib.util.spec_from_file_location("check_output", TEST / "check_output.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_output = _checker()


def run_shipped_case(out: Path, *extra: str) -> None:
    assert process.main(["--input", str(TEST / "input"), "--output", str(out), "--no-report", *extra]) == 0


@pytest.fixture(scope="module")
def fp32_output(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fp32")
    run_shipped_case(out, "--precision", "fp32", "--device", "cpu")
    return out


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_the_shipped_case_passes_at_every_precision(tmp_path, precision):
    run_shipped_case(tmp_path, "--precision", precision, "--device", "cpu")
    assert check_output.main(tmp_path, TEST / "expected_output", TEST / "input") == []


def test_fp32_gives_the_expected_mask_exactly(fp32_output):
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(fp32_output / SLUG / NAME)))
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(TEST / "expected_output" / SLUG / NAME)))
    assert np.array_equal(written, expected)


def _replace_mask(output: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "changed"
    shutil.copytree(output, copy)
    image = sitk.ReadImage(str(copy / SLUG / NAME))
    changed = sitk.GetImageFromArray(change(sitk.GetArrayFromImage(image)).astype(np.uint8))
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(copy / SLUG / NAME), useCompression=True)
    return copy


@pytest.mark.parametrize("change", [
    pytest.param(lambda mask: np.roll(mask, 2, axis=2), id="shifted-2-voxels-in-x"),
    pytest.param(lambda mask: np.roll(mask, -2, axis=0), id="shifted-2-slices"),
    pytest.param(np.zeros_like, id="empty"),
    pytest.param(np.ones_like, id="everything"),
])
def test_a_wrong_mask_fails(fp32_output, tmp_path, change):
    changed = _replace_mask(fp32_output, tmp_path, change)
    problems = check_output.main(changed, TEST / "expected_output", TEST / "input")
    assert any("differ from the expected mask" in line for line in problems), problems


def test_the_mask_of_other_weights_fails(tmp_path, tiny_weights):
    out = tmp_path / "other"
    run_shipped_case(out, "--precision", "fp32", "--weights", str(tiny_weights))
    problems = check_output.main(out, TEST / "expected_output", TEST / "input")
    assert any("differ from the expected mask" in line for line in problems), problems


def test_the_reference_is_the_shipped_masks_probability():
    """The stored probability thresholds to the stored fp32 mask (make_reference.py's own check, kept true)."""
    reference = check_output.json.loads((TEST / "expected_output" / "reference.json").read_text())
    probability = sitk.GetArrayFromImage(sitk.ReadImage(str(TEST / "expected_output/probability" / NAME)))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(TEST / "expected_output" / SLUG / NAME)))
    assert np.array_equal(probability >= reference["threshold"], mask.astype(bool))
    assert 0 < reference["margin"] < reference["threshold"] - reference["floor"]
