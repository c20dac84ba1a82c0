import dataclasses

import numpy as np
import SimpleITK as sitk
import torch

from model.inference import load_chunk, onto_model_grid, tile_chunk
from model.preprocessing import NORMALISATION_SCHEMES, NORMALISERS, NormalisationConfig
from phantoms import make_phantom
from tests.conftest import SMALL_SPEC, TINY, oracle_predictor
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
    sampler = WholeBodySampler(index, alpha=1.0, beta=5, set_carry_over=0.25, seed=0, set_size="seed")
    assert not {s for _, s in sampler.epoch_items(0)} & {last - 2, last - 1, last}


# --- the same slice, the same input, in training and in deployment (issue 28, part 1) ----------------------

PARITY_SPEC = SMALL_SPEC  # 72 x 72 at 8 mm: a body with arms wider than a 32-pixel crop, the CT's table under it


def _deployment_like_source(seed: int, quantised: bool, flipped: bool) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """A phantom as a scanner gives it: air with noise (the phantom's CT), a table, arms, and PET background
    noise of 0.02 +- 0.02 SUV outside the body (the phantom's PET is 0 there). ``quantised``: PET rounded to
    float16 and the CT in whole HU (the store keeps it as int16); else a sub-HU CT and float32 PET.
    ``flipped``: stored with x and y reversed, as a RAS NIfTI is, so that both sides reorient it."""
    pet, ct, mask = make_phantom(seed, True, PARITY_SPEC).images()
    rng = np.random.default_rng(seed)
    pet_a = sitk.GetArrayFromImage(pet).astype(np.float32)
    ct_a = sitk.GetArrayFromImage(ct).astype(np.float32)
    background = pet_a == 0
    pet_a[background] = np.abs(rng.normal(0.02, 0.02, int(background.sum())))
    if quantised:
        pet_a = pet_a.astype(np.float16).astype(np.float32)
    else:
        ct_a += rng.uniform(-0.5, 0.5, ct_a.shape).astype(np.float32)
    images = []
    for array, like in ((pet_a, pet), (ct_a, ct), (sitk.GetArrayFromImage(mask), mask)):
        image = sitk.GetImageFromArray(array[:, ::-1, ::-1].copy() if flipped else array)
        image.CopyInformation(like)
        if flipped:
            image.SetDirection((-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
        images.append(image)
    return tuple(images)


def _write_source(folder, images) -> None:
    folder.mkdir(parents=True)
    for image, name in zip(images, ("SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz"), strict=True):
        sitk.WriteImage(image, str(folder / name))


def _largest_difference(tmp_path, quantised: bool) -> dict[str, float]:
    """Per scheme, the largest |training input - deployment input| over every deployment window of two
    phantoms (one stored flipped), with windows of 32 pixels: several per slice where the body is wider."""
    sources = {f"PETCT_{seed}": _deployment_like_source(seed, quantised, flipped=seed % 2 == 1) for seed in (3, 4)}
    for name, images in sources.items():
        _write_source(tmp_path / "src" / name / "study", images)
    prepare(tmp_path / "src", "tcia", tmp_path / "data")
    index = load_index(tmp_path / "data")
    largest = {}
    for scheme in NORMALISATION_SCHEMES:
        config = dataclasses.replace(TINY, crop_size=32, normalisation=NormalisationConfig(scheme=scheme))
        predictor = oracle_predictor(config)
        dataset = SliceDataset(tmp_path / "data", index, config)
        worst, windows, wide = 0.0, 0, 0
        for i, row in enumerate(index):
            pet, ct, _ = sources[row["patient"]]
            study = onto_model_grid(pet, ct, predictor)  # deployment: reoriented, on the model's grid
            pet_a, ct_a = sitk.GetArrayFromImage(study.pet), sitk.GetArrayFromImage(study.ct)
            chunk = load_chunk(pet_a, ct_a, 0, pet_a.shape[0], config.crop_size, torch.device("cpu"))
            tiles = tile_chunk(chunk, config, predictor.settings.tile_overlap, shrink=False)
            wide += len(tiles.windows) - len({w.index for w in tiles.windows})
            for batch, inputs in tiles.batches(64):
                for window, deployed in zip(batch, inputs, strict=True):
                    trained, _ = dataset.window(i, window.index, window.y, window.x)
                    worst = max(worst, float((trained - deployed).abs().max()))
                    windows += 1
        assert windows > 50 and wide > 0  # every slice with body, and bodies wider than the crop
        largest[scheme] = worst
    return largest


def test_training_input_equals_the_deployment_input_for_every_scheme(tmp_path):
    """Air, table, PET background, arms, a body wider than the crop, a flipped storage, float32 PET and a
    sub-HU CT (as the autoPET release's CTres): a training window where deployment puts one gets deployment's
    input, whatever the normalisation; the store's dtypes move nothing."""
    largest = _largest_difference(tmp_path, quantised=False)
    assert set(largest) == set(NORMALISERS)
    assert max(largest.values()) <= 1e-5, largest


def test_a_ct_of_whole_hu_is_stored_as_int16_and_still_gives_the_deployment_input(tmp_path):
    largest = _largest_difference(tmp_path, quantised=True)
    assert max(largest.values()) <= 1e-5, largest
    ct = np.load(next((tmp_path / "data/studies").iterdir()) / "ct.npy", mmap_mode="r")
    assert ct.dtype == np.int16


def test_without_jitter_a_training_window_is_where_inference_puts_its_one_window():
    """Where the body fits in the crop, training centres its window as inference does (jitter aside); that is
    the window the parity test compares."""
    from model.preprocessing import window_starts
    from train.data import training_window_start

    rng = np.random.default_rng(0)
    for _ in range(500):
        length = int(rng.integers(64, 420))
        crop = int(rng.choice([32, 64, 128, 256]))
        if crop > length:
            continue
        lo = int(rng.integers(0, length))
        hi = int(rng.integers(lo + 1, min(lo + crop, length) + 1))
        assert training_window_start(lo, hi, length, crop, rng, jitter=0.0) == window_starts(lo, hi, length, crop,
                                                                                              0.25)[0]
