"""The seed's per-window normalisation through inference: each tile gets its own statistics, and a
checkpoint whose scheme is "seed" segments a study end to end."""

import dataclasses

import numpy as np
import SimpleITK as sitk
import torch

from model import Predictor, save_checkpoint, segment
from model.inference import load_chunk, tile_chunk
from model.network import build_network
from model.preprocessing import ZSCORE_STD_FLOOR, NormalisationConfig, normalise
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


def _seed_by_where(pet: torch.Tensor, ct: torch.Tensor, norm: NormalisationConfig) -> torch.Tensor:
    """The seed scheme written plainly, masks by where() (what model.preprocessing computes by arithmetic)."""
    def zscore(x, selected, floor):
        chosen = selected.float()
        count = chosen.sum(dim=(1, 2), keepdim=True).clamp(min=1.0)
        mean = (x * chosen).sum(dim=(1, 2), keepdim=True) / count
        std = ((((x - mean) ** 2) * chosen).sum(dim=(1, 2), keepdim=True) / count).sqrt()
        high = torch.where(selected, x, -torch.inf).amax(dim=(1, 2), keepdim=True)
        low = torch.where(selected, x, torch.inf).amin(dim=(1, 2), keepdim=True)
        return (x - mean) / torch.where(high > low, std, torch.full_like(std, floor))

    ct = ct.clamp(*norm.ct_clip)
    pet_floor, ct_floor = ZSCORE_STD_FLOOR
    pet_n = torch.where((pet.amax(dim=(1, 2)) != 0)[:, None, None], zscore(pet, pet != 0, pet_floor), pet)
    ct_min = ct.amin(dim=(1, 2), keepdim=True)
    ct_n = torch.where(ct.amax(dim=(1, 2), keepdim=True) == ct_min, ct - ct_min,
                       zscore(ct, ct != norm.ct_clip[0], ct_floor))
    return torch.stack((pet_n, ct_n), dim=1)


def test_the_seed_windows_are_the_plain_where_rule_bit_for_bit():
    """Windows of every kind the seed's rule branches on: PET absent, negative, of one value (positive or
    negative), a value at the float's limit; CT of one value, only air, air and one value (above or below 0 HU);
    integer CT. The arithmetic extremes and the
    in-place channels give exactly the plain rule's numbers."""
    rng = np.random.default_rng(7)
    norm = NormalisationConfig(scheme="seed")
    big = float(np.finfo(np.float32).max)
    for _ in range(40):
        n, h, w = int(rng.integers(1, 6)), int(rng.integers(1, 24)), int(rng.integers(1, 24))
        pet = (rng.gamma(1.0, 2.0, (n, h, w)) * (rng.random((n, h, w)) < rng.random())).astype(np.float32)
        ct = rng.normal(-200, 700, (n, h, w)).astype(np.float32)
        for i in range(n):
            kind = int(rng.integers(0, 10))
            pet[i] = {0: 0.0, 1: -np.abs(pet[i]), 2: np.where(pet[i] != 0, 3.5, 0.0),
                      7: np.where(pet[i] != 0, -0.5, 0.0)}.get(kind, pet[i])
            if kind == 3:
                pet[i, 0, 0] = big
            ct[i] = {4: 40.0, 5: -1000.0, 6: np.where(ct[i] > 0, 40.0, -1000.0),
                     8: np.where(ct[i] > 0, -600.0, -1000.0)}.get(kind, ct[i])
        ct_t = torch.from_numpy(np.round(ct).astype(np.int16)).float() if rng.random() < 0.3 else torch.from_numpy(ct)
        got = normalise(torch.from_numpy(pet), ct_t, norm)
        # Exactly equal; a value at the float's limit overflows the sums to NaN in both alike.
        torch.testing.assert_close(got, _seed_by_where(torch.from_numpy(pet), ct_t, norm), rtol=0, atol=0,
                                   equal_nan=True)
