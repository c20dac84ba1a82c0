"""Orientation through training: prepare stores studies of any orientation in the default one, fit records it
in the checkpoint, and the trained network gives one mask for a study however it is stored."""

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk

from model import InputError, Predictor, segment
from model.config import DEFAULT_ORIENTATION
from model.geometry import orientation_of
from phantoms import PhantomSpec, write_dataset
from tests.conftest import TINY
from tests.model.test_orientation import VARIANTS, on_grid_of, stored
from train.config import FitConfig
from train.fit import fit
from train.prepare import load_index, prepare

SPEC = PhantomSpec(size=72, spacing=8.0, slices=40, slice_thickness=24.0)
TINY_RUN = {"model": TINY.to_dict(), "epochs": 1, "cosine_epochs": 1, "batch_size": 4, "lr": 1e-3,
            "steps_per_epoch": 2, "workers": 0, "alpha": 1.0, "beta": 1, "folds": 2, "val_max_studies": 1,
            "val_batch_size": 8,
            "weight_decay": 0.01, "dice": "foreground_batch"}
NAMES = ("SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz")


def _store_as(folder, perm, flips) -> None:
    """Rewrite a study's three NIfTI files with their axes permuted and flipped (same physical points)."""
    for name in NAMES:
        image = sitk.ReadImage(str(folder / name))
        sitk.WriteImage(stored(image, perm, flips), str(folder / name), useCompression=True)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The same four phantoms prepared twice: as written, and each rewritten in another orientation."""
    root = tmp_path_factory.mktemp("orientation")
    rows = write_dataset(root / "canonical", 4, seed=4, spec=SPEC, negative_fraction=0.0)
    write_dataset(root / "turned", 4, seed=4, spec=SPEC, negative_fraction=0.0)
    for row, (perm, flips, _) in zip(rows, list(VARIANTS.values())[-4:], strict=True):
        _store_as(root / "turned" / row["File Location"], perm, flips)
    for name in ("canonical", "turned"):
        prepare(root / name, "tcia", root / f"{name}-data")
    return root, rows


def test_prepare_stores_every_orientation_as_the_default_one(stores):
    root, rows = stores
    turned = root / "turned" / rows[-1]["File Location"] / "SUV.nii.gz"
    assert orientation_of(sitk.ReadImage(str(turned))) == "AIR"
    canonical, other = load_index(root / "canonical-data"), load_index(root / "turned-data")
    assert [r["orientation"] for r in other] == [DEFAULT_ORIENTATION] * 4
    for a, b in zip(canonical, other, strict=True):
        assert (a["study"], a["shape"], a["spacing"], a["lesion_slices"]) == (
            b["study"], b["shape"], b["spacing"], b["lesion_slices"])
        for name in ("pet", "ct", "mask"):
            assert np.array_equal(np.load(root / "canonical-data/studies" / a["study"] / f"{name}.npy"),
                                  np.load(root / "turned-data/studies" / b["study"] / f"{name}.npy"))


@pytest.mark.filterwarnings("ignore:diagnoses with fewer patients than folds")
def test_fit_records_the_orientation_and_its_network_gives_one_mask_however_a_study_is_stored(stores, tmp_path):
    root, rows = stores
    fit(root / "turned-data", 0, FitConfig(**TINY_RUN), tmp_path / "run", device="cpu")
    document = json.loads((tmp_path / "run/best/model.json").read_text())
    assert document["model"]["orientation"] == DEFAULT_ORIENTATION
    predictor = Predictor.from_path(tmp_path / "run/best", device="cpu", precision="fp32")
    folder = root / "canonical" / rows[0]["File Location"]
    pet, ct = (sitk.ReadImage(str(folder / name), sitk.sitkFloat32) for name in NAMES[:2])
    # A network trained for two steps decides little at 0.5: threshold at its own 99th percentile in the body,
    # so that the masks compared hold lesions and false positives worth moving.
    probability = predictor.predict_probabilities(sitk.GetArrayViewFromImage(pet), sitk.GetArrayViewFromImage(ct))
    threshold = float(np.quantile(probability[sitk.GetArrayViewFromImage(ct) > -500], 0.99))
    predictor.config = dataclasses.replace(predictor.config, threshold=threshold)
    canonical = sitk.GetArrayFromImage(segment(pet, ct, predictor, progress=False))
    assert canonical.sum() > 20
    for perm, flips, _ in list(VARIANTS.values())[:3]:
        mask = segment(stored(pet, perm, flips), stored(ct, perm, flips), predictor, progress=False)
        assert np.array_equal(on_grid_of(mask, pet), canonical)


def test_fit_refuses_a_store_in_another_orientation_than_the_configs(stores, tmp_path):
    root, _ = stores
    config = FitConfig(**{**TINY_RUN, "model": {**TINY.to_dict(), "orientation": "RAS"}})
    with pytest.raises(InputError, match=r"is stored in orientation LPS, the config's model\.orientation is RAS"):
        fit(root / "turned-data", 0, config, tmp_path / "run", device="cpu")
