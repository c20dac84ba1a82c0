"""The seed's per-window normalisation through inference: each tile gets its own statistics, and a
checkpoint whose scheme is "seed" segments a study end to end."""

import dataclasses

import numpy as np
import SimpleITK as sitk
import torch

from model import Predictor, save_checkpoint, segment
from model.inference import load_chunk, tile_chunk
from model.network import build_network
from model.preprocessing import NormalisationConfig, normalise
from phantoms import make_phantom
from tests.conftest import SMALL_SPEC, TINY

SEED_TINY = dataclasses.replace(TINY, normalisation=NormalisationConfig(scheme="seed"))


def test_every_tile_is_normalised_with_its_own_statistics():
    phantom = make_phantom(3, positive=True, spec=SMALL_SPEC)
    pet, ct, _ = phantom.images()
    pet_a, ct_a = sitk.GetArrayFromImage(pet), sitk.GetArrayFromImage(ct)
    config = dataclasses.replace(SEED_TINY, crop_size=32)  # smaller than the body: several tiles per slice
    chunk = load_chunk(pet_a, ct_a, 0, pet_a.shape[0], config.crop_size, torch.device("cpu"))
    tiles = tile_chunk(chunk, config, overlap=0.25, shrink=False)
    assert len({w.index for w in tiles.windows}) < len(tiles.windows)  # some slices need several tiles
    checked = 0
    for batch, inputs in tiles.batches(8):
        for window, got in zip(batch, inputs, strict=True):
            cut = (slice(window.index, window.index + 1), slice(window.y, window.y + window.height),
                   slice(window.x, window.x + window.width))
            expected = normalise(chunk.pet[cut], chunk.ct[cut], config.normalisation)[0]
            assert torch.equal(got, expected)
            checked += 1
    assert checked == len(tiles.windows)


def test_a_seed_scheme_checkpoint_segments_a_study_end_to_end(tmp_path):
    torch.manual_seed(0)
    weights = save_checkpoint(build_network(SEED_TINY), SEED_TINY, tmp_path / "seed")
    predictor = Predictor.from_path(weights, device="cpu", precision="fp32")
    assert predictor.config.normalisation.scheme == "seed"
    phantom = make_phantom(3, positive=True, spec=SMALL_SPEC)
    pet, ct, _ = phantom.images()
    mask = segment(pet, ct, predictor, progress=False)
    array = sitk.GetArrayFromImage(mask)
    assert mask.GetSize() == pet.GetSize() and mask.GetSpacing() == pet.GetSpacing()
    assert set(np.unique(array).tolist()) <= {0, 1}
    probability = predictor.predict_probabilities(sitk.GetArrayFromImage(pet), sitk.GetArrayFromImage(ct))
    assert np.isfinite(probability).all() and probability.max() > 0
