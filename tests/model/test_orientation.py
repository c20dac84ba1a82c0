"""One study stored another way (axes flipped, permuted, turned; or oblique) gives the same mask in physical
space: segment shows the network its slices in the checkpoint's orientation and maps the mask back."""

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from model import InputError, Predictor, segment
from model.checkpoint import load_checkpoint, read_config
from model.config import DEFAULT_ORIENTATION, ModelConfig
from model.geometry import orientation_of
from phantoms import PhantomSpec, make_phantom

DEMO_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
SPEC = PhantomSpec(size=96, spacing=4.0728, slices=40, slice_thickness=6.0)  # the demo model's spacing

# name: (permutation, flips): new array axis k is old axis perm[k], reversed where flips[k]. The code is
# what SimpleITK's DICOMOrient calls the result when the canonical study is LPS.
VARIANTS = {
    "x flipped": ((0, 1, 2), (1, 0, 0), "RPS"),
    "y flipped": ((0, 1, 2), (0, 1, 0), "LAS"),
    "slices reversed": ((0, 1, 2), (0, 0, 1), "LPI"),
    "axes permuted": ((2, 0, 1), (0, 0, 0), "SLP"),
    "turned 90 deg in-plane": ((1, 0, 2), (1, 0, 0), "ALS"),
    "permuted and all flipped": ((1, 2, 0), (1, 1, 1), "AIR"),
}


def stored(image: sitk.Image, perm: Sequence[int], flips: Sequence[int]) -> sitk.Image:
    """``image`` written with its array axes permuted and flipped, direction and origin changed to match, so
    that every voxel keeps its physical point. Built with numpy, independently of model.geometry."""
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (x, y, z)
    array = array.transpose(perm)
    for axis, flip in enumerate(flips):
        if flip:
            array = np.flip(array, axis)
    out = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    columns = [direction[:, perm[k]] * (-1.0 if flips[k] else 1.0) for k in range(3)]
    first = [0, 0, 0]  # the old index of the new first voxel
    for k in range(3):
        if flips[k]:
            first[perm[k]] = image.GetSize()[perm[k]] - 1
    out.SetSpacing([image.GetSpacing()[p] for p in perm])
    out.SetDirection(np.stack(columns, axis=1).ravel().tolist())
    out.SetOrigin(image.TransformIndexToPhysicalPoint(first))
    return out


def oblique(image: sitk.Image, degrees: float) -> sitk.Image:
    """``image`` turned by ``degrees`` about the z axis through its first voxel (the voxels as they are)."""
    turned = sitk.Image(image)
    angle = np.radians(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    turned.SetDirection((rotation @ np.array(image.GetDirection()).reshape(3, 3)).ravel().tolist())
    return turned


def on_grid_of(image: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """``image`` taken onto ``reference``'s grid, nearest neighbour: exact where the voxel centres coincide."""
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                                image.GetPixelID()))


def assert_on_grid(mask: sitk.Image, pet: sitk.Image) -> None:
    """Bit-identical geometry, not within a tolerance."""
    assert mask.GetSize() == pet.GetSize() and mask.GetSpacing() == pet.GetSpacing()
    assert mask.GetOrigin() == pet.GetOrigin() and mask.GetDirection() == pet.GetDirection()


@pytest.fixture(scope="module")
def study():
    pet, ct, _ = make_phantom(11, positive=True, spec=SPEC, diagnosis="LYMPHOMA").images()
    return pet[6:-6], ct[6:-6]  # 84 x 96: x and y mixed up would show


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_path(DEMO_WEIGHTS, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def canonical_mask(study, predictor):
    pet, ct = study
    mask = segment(pet, ct, predictor, progress=False)
    assert orientation_of(pet) == DEFAULT_ORIENTATION
    assert sitk.GetArrayViewFromImage(mask).sum() > 50  # lesions found: a flip would move them
    return mask


def test_a_checkpoint_without_the_orientation_field_is_taken_as_the_default(predictor, tmp_path):
    # one written before the field: the shipped one with its orientation taken out
    old = json.loads((DEMO_WEIGHTS / "demo.json").read_text())
    old["model"].pop("orientation", None)
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "old.safetensors").write_bytes((DEMO_WEIGHTS / "demo.safetensors").read_bytes())
    assert read_config(tmp_path / "old.json")[0].orientation == DEFAULT_ORIENTATION == "LPS"
    assert predictor.config.orientation == DEFAULT_ORIENTATION


@pytest.mark.parametrize("name", VARIANTS)
def test_a_study_stored_another_way_gives_the_same_mask(name, study, predictor, canonical_mask):
    perm, flips, code = VARIANTS[name]
    pet, ct = (stored(image, perm, flips) for image in study)
    assert orientation_of(pet) == code
    assert np.array_equal(on_grid_of(pet, study[0]), sitk.GetArrayViewFromImage(study[0]))  # same points
    mask = segment(pet, ct, predictor, progress=False)
    assert_on_grid(mask, pet)
    assert np.array_equal(on_grid_of(mask, study[0]), sitk.GetArrayViewFromImage(canonical_mask))


def test_a_ct_stored_another_way_than_its_pet_gives_the_same_mask(study, predictor, canonical_mask):
    pet = stored(study[0], *VARIANTS["permuted and all flipped"][:2])
    mask = segment(pet, study[1], predictor, progress=False)  # the CT canonical: resampled onto the PET first
    assert_on_grid(mask, pet)
    assert np.array_equal(on_grid_of(mask, study[0]), sitk.GetArrayViewFromImage(canonical_mask))


@pytest.mark.parametrize("degrees", [10.0, -30.0])
def test_an_oblique_study_is_reoriented_to_the_nearest_axes_and_its_grid_stays_oblique(
        degrees, study, predictor, canonical_mask):
    """The nearest axis-aligned arrangement is the canonical one here: the network sees the stored slices
    unchanged (no resampling), so the mask's voxels are the canonical study's on the turned grid; stored
    flipped and permuted as well, it maps back onto them."""
    tilted = [oblique(image, degrees) for image in study]
    assert orientation_of(tilted[0]) == DEFAULT_ORIENTATION
    mask = segment(*tilted, predictor, progress=False)
    assert_on_grid(mask, tilted[0])
    assert np.array_equal(sitk.GetArrayViewFromImage(mask), sitk.GetArrayViewFromImage(canonical_mask))
    perm, flips, _ = VARIANTS["permuted and all flipped"]
    pet, ct = (stored(image, perm, flips) for image in tilted)
    other = segment(pet, ct, predictor, progress=False)
    assert_on_grid(other, pet)
    assert np.array_equal(on_grid_of(other, tilted[0]), sitk.GetArrayViewFromImage(mask))


@pytest.mark.parametrize("value", ["LPX", "LLS", "lps", "LPSR", "", 3, None])
def test_a_checkpoint_with_a_bad_orientation_is_refused_naming_the_key(value, tmp_path):
    for name in ("demo.json", "demo.safetensors"):
        shutil.copy(DEMO_WEIGHTS / name, tmp_path / name)
    document = json.loads((tmp_path / "demo.json").read_text())
    document["model"]["orientation"] = value
    (tmp_path / "demo.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match=r"demo\.json: not a valid checkpoint config: orientation must be"):
        load_checkpoint(tmp_path / "demo.safetensors")


def test_any_orientation_code_is_accepted_and_ensembles_must_share_it():
    config = ModelConfig(orientation="RAI")
    assert ModelConfig.from_dict(json.loads(config.to_json())).orientation == "RAI"
    assert not config.same_input_contract(ModelConfig())
