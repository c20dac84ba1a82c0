from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from model import Predictor, segment
from model.inference import resolve_precision
from model.postprocessing import remove_small_components
from tests.conftest import dice, oracle_predictor
from train.phantom import PhantomSpec, make_phantom

DEMO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
DEMO_SPEC = PhantomSpec(size=128, spacing=4.0728, slices=48, slice_thickness=6.0)


@pytest.fixture(scope="module")
def demo_case():
    phantom = make_phantom(11, positive=True, spec=DEMO_SPEC, diagnosis="LYMPHOMA")
    pet, ct, _ = phantom.images()
    return pet, ct


def test_bf16_mask_agrees_with_fp32(demo_case):
    """The shipped demo weights on a phantom: bf16 autocast against fp32, mask Dice >= 0.99."""
    pet, ct = demo_case
    masks = {}
    for precision in ("fp32", "bf16"):
        predictor = Predictor.from_path(DEMO_WEIGHTS, device="cpu", precision=precision, batch_size=8)
        masks[precision] = sitk.GetArrayFromImage(segment(pet, ct, predictor))
    assert masks["fp32"].any(), "the demo model finds the hot spots of this phantom"
    assert dice(masks["fp32"], masks["bf16"]) >= 0.99


def test_batch_size_and_tta_do_not_change_an_exact_model(small_phantom):
    pet, ct, _ = small_phantom.images()
    reference = sitk.GetArrayFromImage(segment(pet, ct, oracle_predictor(batch_size=1)))
    for kwargs in ({"batch_size": 7}, {"batch_size": 4, "tta": True}):
        assert np.array_equal(sitk.GetArrayFromImage(segment(pet, ct, oracle_predictor(**kwargs))), reference)


def test_slices_without_body_are_skipped(small_phantom):
    pet, ct, _ = small_phantom.images()
    ct_arr = sitk.GetArrayFromImage(ct)
    ct_arr[:10] = -1000
    empty = sitk.GetImageFromArray(ct_arr)
    empty.CopyInformation(ct)
    pet_arr = sitk.GetArrayFromImage(pet)
    pet_arr[:10] = 20.0  # hot, but no body: not segmented
    hot = sitk.GetImageFromArray(pet_arr)
    hot.CopyInformation(pet)
    mask = sitk.GetArrayFromImage(segment(hot, empty, oracle_predictor()))
    assert not mask[:10].any()


def test_small_components_are_removed():
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[1, 1, 1] = 1
    mask[5:8, 5:8, 5:8] = 1
    cleaned = remove_small_components(mask, (2.0, 2.0, 2.0), min_ml=0.05)  # 1 voxel = 0.008 ml
    assert cleaned.sum() == 27 and cleaned[1, 1, 1] == 0


def test_precision_defaults():
    assert resolve_precision("auto", torch.device("cuda")) == torch.float16
    assert resolve_precision("auto", torch.device("cpu")) in (torch.bfloat16, torch.float32)
    assert resolve_precision("fp32", torch.device("cpu")) == torch.float32


def test_compiled_network_gives_the_same_mask(small_phantom):
    """--compile pads partial batches to one static shape; the mask must not change."""
    pet, ct, _ = small_phantom.images()
    eager = sitk.GetArrayFromImage(segment(pet, ct, oracle_predictor(batch_size=6)))
    compiled = oracle_predictor(batch_size=6)
    compiled.compile()
    assert np.array_equal(sitk.GetArrayFromImage(segment(pet, ct, compiled)), eager)
