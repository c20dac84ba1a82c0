"""run_case and run_images: read -> segment -> write once, with per-stage timings and what a report needs."""

import numpy as np
import pytest
import SimpleITK as sitk

from model import InputError, segment
from runner.pipeline import run_case, run_images
from tests.conftest import oracle_predictor, write_case


def test_run_case_writes_the_mask_and_returns_what_a_report_needs(tmp_path, small_phantom):
    pet, ct, _ = small_phantom.images()
    pet_path, ct_path = write_case(tmp_path / "in", pet, ct)
    out_path = tmp_path / "out" / "case0.mha"
    result = run_case(pet_path, ct_path, out_path, oracle_predictor())
    written = sitk.ReadImage(str(out_path))
    expected = sitk.GetArrayFromImage(segment(pet, ct, oracle_predictor()))
    assert np.array_equal(sitk.GetArrayFromImage(written), expected) and expected.any()
    assert np.array_equal(result.mask_array, expected) and result.out_path == out_path
    assert written.GetOrigin() == pet.GetOrigin() and result.spacing == pet.GetSpacing()
    assert np.array_equal(result.suv, sitk.GetArrayViewFromImage(pet))
    assert result.lesion_volume_ml == pytest.approx(expected.sum() * np.prod(pet.GetSpacing()) / 1000)
    timings = result.timings
    assert min(timings.read, timings.preprocess, timings.network, timings.postprocess, timings.write) > 0
    assert timings.total() == pytest.approx(timings.read + timings.preprocess + timings.network
                                            + timings.postprocess + timings.write)
    assert sorted(p.name for p in out_path.parent.iterdir()) == ["case0.mha"]  # no temporary left


def test_run_images_without_an_output_path_writes_nothing(tmp_path, small_phantom):
    pet, ct, _ = small_phantom.images()
    result = run_images(pet, ct, None, oracle_predictor())
    assert result.out_path is None and result.timings.write == 0.0 and result.timings.read == 0.0
    assert result.mask.GetSize() == pet.GetSize() and not list(tmp_path.iterdir())


def test_each_case_has_its_own_timings(tmp_path, small_phantom):
    pet, ct, _ = small_phantom.images()
    predictor = oracle_predictor()
    first = run_images(pet, ct, tmp_path / "a.mha", predictor)
    seconds = first.timings.total()
    second = run_images(pet, ct, tmp_path / "b.mha", predictor)
    assert first.timings.total() == seconds  # the second case added nothing to the first's
    assert second.timings is not first.timings and second.timings.network > 0


def test_a_bad_file_is_one_line_naming_it_and_no_mask(tmp_path, small_phantom):
    pet, ct, _ = small_phantom.images()
    pet_path, ct_path = write_case(tmp_path / "in", pet, ct)
    pet_path.write_bytes(b"not an image")
    out_path = tmp_path / "out" / "case0.mha"
    with pytest.raises(InputError) as caught:
        run_case(pet_path, ct_path, out_path, oracle_predictor())
    assert str(pet_path) in str(caught.value) and "\n" not in str(caught.value)
    assert not out_path.exists()
