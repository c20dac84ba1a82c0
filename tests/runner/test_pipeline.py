"""runner.pipeline: run_case and run_images read -> segment -> write once, with per-stage timings and what a
report needs; every way into a study (the pipeline's and bench/'s) runs the study's checks (issue 25 item 3)."""

import numpy as np
import pytest
import SimpleITK as sitk

from bench.api import run_one_case, segment_images
from model import InputError, segment
from phantoms import make_phantom
from results.outputs import OutputLayout
from runner.pipeline import run_case, run_images, run_study, segment_source
from studies.cases import path_case
from tests.conftest import SMALL_SPEC, oracle_predictor, write_case


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


def _bq_per_ml(pet: sitk.Image, ct: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    return sitk.Cast(pet, sitk.sitkFloat32) * 5000.0, ct


def _two_studies(pet: sitk.Image, ct: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    other = make_phantom(4, positive=False, spec=SMALL_SPEC).images()[1]
    other.SetOrigin((other.GetOrigin()[0] + 150.0, *other.GetOrigin()[1:]))  # another patient, lying elsewhere
    return pet, other


# Every way a caller has into a study: the pipeline's, and bench/'s (bench.api), each writing to ``mask``.
ENTRIES = {
    "run_case": lambda pet, ct, mask, folder: run_case(*write_case(folder, pet, ct), mask, oracle_predictor()),
    "run_images": lambda pet, ct, mask, folder: run_images(pet, ct, mask, oracle_predictor()),
    "segment_source": lambda pet, ct, mask, folder: segment_source(path_case(*write_case(folder, pet, ct)),
                                                                   oracle_predictor()),
    "run_study": lambda pet, ct, mask, folder: run_study(path_case(*write_case(folder, pet, ct)), oracle_predictor(),
                                                         OutputLayout(mask.parent)),
    "bench.api.run_one_case": lambda pet, ct, mask, folder: run_one_case(*write_case(folder, pet, ct), mask,
                                                                         oracle_predictor()),
    "bench.api.segment_images": lambda pet, ct, mask, folder: segment_images(pet, ct, oracle_predictor()),
}


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("make_bad, needle", [(_bq_per_ml, "PET is not in SUV"),
                                              (_two_studies, "look like two different studies")],
                         ids=["PET in Bq/ml", "two studies"])
def test_every_way_into_a_study_runs_its_checks(tmp_path, small_phantom, entry, make_bad, needle):
    pet, ct = make_bad(*small_phantom.images()[:2])
    mask = tmp_path / "out" / "case0.mha"
    with pytest.raises(InputError, match=needle):
        ENTRIES[entry](pet, ct, mask, tmp_path / "in")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.mha"))


def test_the_unchecked_network_part_segments_what_the_checks_refuse(small_phantom):
    # model.inference.segment is the network's part alone (tests of geometry call it): the same study the
    # pipeline refuses goes through it, which is why nothing that runs a study may call it.
    pet, ct = _bq_per_ml(*small_phantom.images()[:2])
    assert segment(pet, ct, oracle_predictor()).GetSize() == pet.GetSize()
