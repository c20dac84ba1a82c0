import itertools
import json

import numpy as np
import pytest
import torch

from model.checkpoint import FORMAT, read_config
from model.config import ModelConfig
from model.errors import InputError
from model.preprocessing import (
    MIN_BODY_PIXELS,
    NORMALISATION_SCHEMES,
    NORMALISERS,
    ZSCORE_STD_FLOOR,
    NormalisationConfig,
    Normaliser,
    body_boxes,
    normalise,
    pad_to_crop,
    sanitise,
    slice_input,
    slices_with_body,
    window_input,
    window_starts,
)


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("lo,hi,length,crop", [(10, 50, 100, 64), (0, 300, 400, 256), (5, 395, 400, 128),
                                               (0, 64, 64, 64), (100, 520, 600, 256)])
def test_windows_cover_the_span_and_stay_inside(lo, hi, length, crop, overlap):
    starts = window_starts(lo, hi, length, crop, overlap)
    covered = np.zeros(length, bool)
    for s in starts:
        assert 0 <= s <= length - crop
        covered[s : s + crop] = True
    assert covered[lo:hi].all()
    if hi - lo > crop:  # neighbouring tiles overlap by at least the asked share of the crop
        assert all(b - a <= crop - round(overlap * crop) for a, b in itertools.pairwise(starts))
    else:
        assert len(starts) == 1


def test_a_wider_overlap_takes_more_windows_across_a_wide_body():
    counts = [len(window_starts(10, 390, 400, 64, overlap)) for overlap in (0.0, 0.25, 0.5)]
    assert counts[0] >= 6 and counts[0] < counts[1] < counts[2]


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
    # The seed's rule has no bound where its statistics degenerate (one PET value, 8 SUV: -8 / the 0.1 floor;
    # air and one tissue value: -1040 / the 20 HU floor); the floors keep it finite; such slices are not segmented.
    assert torch.isfinite(out).all() and out.abs().max() < (100 if scheme == "seed" else 20)


def _seed_rule(pet: np.ndarray, ct: np.ndarray) -> np.ndarray:
    """The seed's own lines (ZZZsn/MICCAI2022-autopet docker/test_loader.py), in numpy, on one window."""
    pet, ct = pet.astype(np.float32).copy(), ct.astype(np.float32).copy()
    ct[ct < -1000] = -1000
    ct[ct > 1000] = 1000
    if pet.max() != 0:
        pet = (pet - np.mean(pet[pet != 0])) / np.std(pet[pet != 0])
    if ct.max() - ct.min() == 0:
        ct = ct - ct.min()
    else:
        ct = (ct - np.mean(ct[ct != -1000])) / np.std(ct[ct != -1000])
    return np.stack((pet, ct))


def _seed_test_slices() -> tuple[np.ndarray, np.ndarray]:
    """A chest with lungs, one with a metal implant, a body with an empty PET, and a constant CT."""
    rng = np.random.default_rng(0)
    ct = np.full((4, 96, 96), -1024.0, dtype=np.float32)
    pet = np.zeros((4, 96, 96), dtype=np.float32)
    yy, xx = np.mgrid[:96, :96]
    body = (yy - 48) ** 2 / 35**2 + (xx - 48) ** 2 / 42**2 < 1
    for i in range(3):
        ct[i][body] = rng.normal(30, 40, body.sum())
        pet[i][body] = rng.gamma(2.0, 0.6, body.sum())
    lungs = ((yy - 45) ** 2 / 20**2 + (np.abs(xx - 48) - 18) ** 2 / 12**2) < 1
    ct[0][lungs] = rng.normal(-850, 60, lungs.sum())  # lung: below -500 HU but above the -1000 clip
    ct[0, 40:44, 40:44] = -1000.0  # a pocket of air inside: excluded like the air outside
    ct[1, 60:66, 30:36] = 3000.0  # metal, clipped to 1000
    pet[1, 20:24, 60:64] = 15.0  # a lesion
    pet[2] = 0.0  # no PET on this slice
    ct[3] = 40.0  # a constant CT (and an empty PET)
    return pet, ct


def test_the_seed_scheme_is_the_seed_codes_rule_window_by_window():
    pet, ct = _seed_test_slices()
    norm = NormalisationConfig(scheme="seed")
    got = normalise(torch.from_numpy(pet), torch.from_numpy(ct), norm).numpy()
    for i in range(len(pet)):
        np.testing.assert_allclose(got[i], _seed_rule(pet[i], ct[i]), rtol=1e-4, atol=1e-4)
    assert (got[2, 0] == 0).all() and (got[3, 1] == 0).all()  # empty PET left as is; constant CT: ct - min
    # Statistics per window: a 64x64 window of slice 1 is the seed's rule on that window, not a cut of the slice.
    window = normalise(torch.from_numpy(pet[1:2, 10:74, 20:84]), torch.from_numpy(ct[1:2, 10:74, 20:84]), norm)
    np.testing.assert_allclose(window[0].numpy(), _seed_rule(pet[1, 10:74, 20:84], ct[1, 10:74, 20:84]),
                               rtol=1e-4, atol=1e-4)
    assert not np.allclose(window[0].numpy(), got[1, :, 10:74, 20:84], atol=1e-2)


def test_per_window_schemes_normalise_windows_and_the_others_whole_slices():
    pet, ct = (torch.from_numpy(a[:2]) for a in _seed_test_slices())
    for scheme in NORMALISATION_SCHEMES:
        norm = NormalisationConfig(scheme=scheme)
        cut = window_input(slice_input(pet, ct, norm)[:, :, 8:72, 16:80], norm)
        expected = (normalise(pet[:, 8:72, 16:80], ct[:, 8:72, 16:80], norm) if scheme == "seed"
                    else normalise(pet, ct, norm)[:, :, 8:72, 16:80])
        assert norm.per_window == (scheme == "seed")
        assert torch.equal(cut, expected)


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


def test_a_scheme_is_one_entry(monkeypatch):
    def halves(pet, ct, norm):
        return torch.stack((pet / 2, ct / 2), dim=1)

    def no_high_clip(norm):
        if norm.ct_clip[1] > 500:
            raise ValueError("halves: ct_clip above 500 HU")

    monkeypatch.setitem(NORMALISERS, "halves", Normaliser(halves, per_window=True, check=no_high_clip))
    norm = NormalisationConfig(scheme="halves", ct_clip=(-1000.0, 400.0))
    assert norm.per_window
    pet, ct = torch.full((1, 4, 4), 2.0), torch.full((1, 4, 4), 1000.0)
    assert torch.equal(window_input(slice_input(pet, ct, norm), norm)[0, :, 0, 0], torch.tensor([1.0, 200.0]))
    with pytest.raises(ValueError, match="above 500"):
        NormalisationConfig(scheme="halves")


def test_unknown_schemes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="scheme must be one of"):
        NormalisationConfig(scheme="zscore")
    document = {"format": FORMAT, "weights_sha256": "0" * 64,
                "model": {**ModelConfig().to_dict(), "normalisation": {"scheme": "zscore"}}}
    (tmp_path / "m.json").write_text(json.dumps(document))
    with pytest.raises(InputError) as error:
        read_config(tmp_path / "m.json")
    assert "m.json" in str(error.value) and "scheme must be one of" in str(error.value)
    assert "\n" not in str(error.value)


def test_the_seed_scheme_floors_the_std_only_where_the_seeds_would_divide_by_zero():
    """A window of quiet PET (0.02 SUV noise, a hot pixel) and a thin CT: the seed's own numbers, however large;
    the floor only where the seed divides by zero (one PET value; air and one uniform tissue value)."""
    rng = np.random.default_rng(3)
    norm = NormalisationConfig(scheme="seed")
    pet = np.abs(rng.normal(1.0, 0.02, (1, 32, 32))).astype(np.float32)
    pet[0, 5, 5] = 1.07
    ct = np.full((1, 32, 32), -1000.0, dtype=np.float32)
    ct[0, 8:24, 8:24] = rng.normal(40, 3, (16, 16))  # 3 HU of spread: below the 20 HU floor
    got = normalise(torch.from_numpy(pet), torch.from_numpy(ct), norm)[0].numpy()
    np.testing.assert_allclose(got, _seed_rule(pet[0], ct[0]), rtol=1e-4, atol=1e-3)
    assert got[0].max() > 3.0  # the seed's 3.4, not 0.7 with the 0.1 SUV floor
    uniform_pet = np.where(ct > -1000, 2.0, 0.0).astype(np.float32)
    uniform_ct = np.where(ct > -1000, 40.0, -1000.0).astype(np.float32)
    got = normalise(torch.from_numpy(uniform_pet), torch.from_numpy(uniform_ct), norm)[0]
    pet_floor, ct_floor = ZSCORE_STD_FLOOR
    assert torch.isfinite(got).all() and got[0, 10, 10] == 0 and got[1, 10, 10] == 0
    assert torch.isclose(got[0, 0, 0], torch.tensor(-2.0 / pet_floor))
    assert torch.isclose(got[1, 0, 0], torch.tensor((-1000.0 - 40.0) / ct_floor))
