import itertools
import json

import numpy as np
import pytest
import torch

from model.checkpoint import FORMAT, read_config
from model.config import NORMALISATION_SCHEMES, ModelConfig, NormalisationConfig
from model.errors import InputError
from model.preprocessing import (
    MIN_BODY_PIXELS,
    NORMALISERS,
    ZSCORE_STD_FLOOR,
    body_boxes,
    normalise,
    pad_to_crop,
    sanitise,
    slices_with_body,
    tile_windows,
    window_starts,
)


@pytest.mark.parametrize("lo,hi,length,crop", [(10, 50, 100, 64), (0, 300, 400, 256), (5, 395, 400, 128),
                                               (0, 64, 64, 64), (100, 520, 600, 256)])
def test_windows_cover_the_span_and_stay_inside(lo, hi, length, crop):
    starts = window_starts(lo, hi, length, crop)
    covered = np.zeros(length, bool)
    for s in starts:
        assert 0 <= s <= length - crop
        covered[s : s + crop] = True
    assert covered[lo:hi].all()
    if hi - lo > crop:  # neighbouring tiles overlap by at least a quarter of the crop
        assert all(b - a <= crop - crop // 4 for a, b in itertools.pairwise(starts))
    else:
        assert len(starts) == 1


def test_tiles_for_a_wide_body():
    windows = tile_windows(np.array([20, 80, 10, 390]), (100, 400), 64)
    assert len({x for _, x in windows}) >= 7 and len({y for y, _ in windows}) == 1


def test_zscore_uses_body_voxels_and_ignores_the_crop():
    norm = NormalisationConfig(scheme="zscore_per_slice")
    g = torch.Generator().manual_seed(0)
    ct = torch.full((2, 80, 80), -1000.0)
    ct[:, 20:60, 10:70] = torch.randn(2, 40, 60, generator=g) * 150
    pet = torch.rand(2, 80, 80, generator=g) * 4
    full = normalise(pet, ct, norm)
    body = ct > norm.body_threshold_hu
    for c in range(2):
        values = full[:, c][body]
        assert abs(float(values.mean())) < 1e-4 and abs(float(values.std(unbiased=False)) - 1) < 1e-3
    cropped = normalise(pet[:, 15:65, 5:75], ct[:, 15:65, 5:75], norm)
    assert torch.allclose(cropped, full[:, :, 15:65, 5:75], atol=1e-5)


def test_fixed_scaling_known_values():
    norm = NormalisationConfig(scheme="fixed", pet_clip=50, pet_scale=5, ct_clip=(-1000, 1000), ct_scale=500)
    out = normalise(torch.tensor([[[10.0, 100.0]]]), torch.tensor([[[-2000.0, 500.0]]]), norm)
    assert out[0, 0].tolist() == [[2.0, 10.0]] and out[0, 1].tolist() == [[-2.0, 1.0]]


def test_sanitise_replaces_non_finite_values():
    pet, ct = sanitise(torch.tensor([np.nan, np.inf, 1.0]), torch.tensor([np.nan, -np.inf, 5.0]))
    assert pet.tolist() == [0.0, 0.0, 1.0] and ct.tolist() == [-1024.0, -1024.0, 5.0]


def test_padding_a_small_matrix_and_finding_the_body():
    pet, ct = torch.zeros(1, 40, 50), torch.full((1, 40, 50), -1000.0)
    ct[0, 10:20, 5:45] = 40
    pet_p, ct_p, (top, left) = pad_to_crop(pet, ct, 64)
    assert pet_p.shape == (1, 64, 64) and (top, left) == (12, 7)
    assert ct_p[0, :top].eq(-1024).all()
    assert body_boxes(ct_p, NormalisationConfig()).tolist() == [[22, 32, 12, 52]]
    assert body_boxes(torch.full((1, 64, 64), -1000.0), NormalisationConfig()).tolist() == [[-1, -1, -1, -1]]


def _bodyless_slices() -> tuple[torch.Tensor, torch.Tensor]:
    """All air; PET beyond the CT's range (a hot brain, no CT); and a sliver of body below MIN_BODY_PIXELS."""
    ct = torch.full((3, 64, 64), -1024.0)
    pet = torch.zeros(3, 64, 64)
    pet[1, 20:40, 20:40] = 8.0
    ct[2, 30, 30 : 30 + MIN_BODY_PIXELS - 1] = 40.0
    pet[2, 30, 30 : 30 + MIN_BODY_PIXELS - 1] = 2.0
    return pet, ct


@pytest.mark.parametrize("scheme", NORMALISATION_SCHEMES)
def test_slices_without_body_normalise_to_finite_bounded_values(scheme):
    pet, ct = _bodyless_slices()
    assert not slices_with_body(ct, NormalisationConfig()).any()
    out = normalise(pet, ct, NormalisationConfig(scheme=scheme))
    assert torch.isfinite(out).all() and out.abs().max() < 20


def test_the_zscore_floor_bounds_a_tiny_uniform_body():
    norm = NormalisationConfig(scheme="zscore_per_slice")
    ct = torch.full((1, 64, 64), -1000.0)
    ct[0, 10:20, 10:20] = 40.0  # 100 pixels of uniform soft tissue: a body, with a standard deviation of 0
    pet = torch.zeros(1, 64, 64)
    pet[0, 10:20, 10:20] = 1.0
    out = normalise(pet, ct, norm)
    pet_floor, ct_floor = ZSCORE_STD_FLOOR
    assert torch.allclose(out[0, 1, 0, 0], torch.tensor((-1000.0 - 40.0) / ct_floor))
    assert torch.allclose(out[0, 0, 0, 0], torch.tensor(-1.0 / pet_floor))
    assert out[0, :, 15, 15].abs().max() == 0


def test_one_function_per_scheme_name_and_unknown_schemes_are_refused(tmp_path):
    assert tuple(NORMALISERS) == NORMALISATION_SCHEMES
    with pytest.raises(ValueError, match="scheme must be one of"):
        NormalisationConfig(scheme="zscore")
    document = {"format": FORMAT, "weights_sha256": "0" * 64,
                "model": {**ModelConfig().to_dict(), "normalisation": {"scheme": "zscore"}}}
    (tmp_path / "m.json").write_text(json.dumps(document))
    with pytest.raises(InputError) as error:
        read_config(tmp_path / "m.json")
    assert "m.json" in str(error.value) and "scheme must be one of" in str(error.value)
    assert "\n" not in str(error.value)
