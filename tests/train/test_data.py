import dataclasses

import SimpleITK as sitk
import torch

from model.config import NormalisationConfig
from phantoms import make_phantom
from tests.conftest import SMALL_SPEC, TINY
from train.data import SliceDataset
from train.prepare import load_index, prepare
from train.sampler import WholeBodySampler


def test_an_all_air_slice_gives_finite_bounded_inputs_and_is_never_sampled(tmp_path):
    pet, ct, mask = make_phantom(4, True, SMALL_SPEC).images()
    pet_array, ct_array = sitk.GetArrayFromImage(pet), sitk.GetArrayFromImage(ct)
    ct_array[-3:] = -1024  # PET beyond the CT's range: CTres is air there, the PET is not empty
    pet_array[-3:, 20:40, 20:40] = 9.0
    images = []
    for array, like in ((pet_array, pet), (ct_array, ct)):
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(like)
        images.append(image)
    folder = tmp_path / "src" / "PETCT_air" / "study"
    folder.mkdir(parents=True)
    for image, name in zip((*images, mask), ("SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz"), strict=True):
        sitk.WriteImage(image, str(folder / name))
    prepare(tmp_path / "src", "tcia", tmp_path / "data")
    index = load_index(tmp_path / "data")
    last = index[0]["slices"] - 1
    assert index[0]["bodyless_slices"] == [last - 2, last - 1, last]

    for scheme in ("zscore_per_slice", "fixed"):
        config = dataclasses.replace(TINY, normalisation=NormalisationConfig(scheme=scheme))
        image, target = SliceDataset(tmp_path / "data", index, config)[(0, last)]
        assert image.shape == (2, TINY.crop_size, TINY.crop_size) and torch.isfinite(image).all()
        assert image.abs().max() < 20 and not target.any()
    index[0]["lesion_slices"].append(last)  # even a lesion slice is not drawn without body
    sampler = WholeBodySampler(index, alpha=1.0, beta=5, set_carry_over=0.25, seed=0)
    assert not {s for _, s in sampler.epoch_items(0)} & {last - 2, last - 1, last}
