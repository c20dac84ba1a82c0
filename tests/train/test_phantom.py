import numpy as np
import SimpleITK as sitk

from train.phantom import BLADDER, BRAIN, PhantomSpec, make_phantom, write_dataset

SPEC = PhantomSpec(size=96, spacing=5.5, slices=90, slice_thickness=11.0)


def test_hot_organs_are_not_lesions_and_lesions_are_hot():
    positives = [make_phantom(s, True, SPEC) for s in range(4)]
    for p in positives:
        assert p.mask.any() and p.diagnosis != "NEGATIVE"
        assert np.percentile(p.pet[p.mask > 0], 90) > 2.5  # lesions stand out (SUV 3 to 25 before blur)
        body = p.ct > -500
        background = p.pet[body & (p.mask == 0)]
        assert 0.4 < np.median(background) < 1.6
        hot_not_lesion = (p.pet > 5) & (p.mask == 0)
        assert hot_not_lesion.sum() > p.mask.sum() * 0.2  # brain and bladder compete with the lesions
    negative = make_phantom(7, False, SPEC)
    assert not negative.mask.any() and negative.diagnosis == "NEGATIVE"
    head = negative.pet[-8:]
    assert head.max() > 5  # brain
    assert negative.ct.dtype == np.int16 and negative.ct.min() < -900 and negative.ct.max() > 600


def test_organ_tables_are_physiological():
    from train.phantom import HU, SUV_RANGE

    assert SUV_RANGE[BRAIN][0] >= 6 and SUV_RANGE[BLADDER][1] <= 40 and HU[BRAIN] == 35


def test_layouts(tmp_path):
    small = PhantomSpec(size=48, spacing=11.0, slices=30, slice_thickness=33.0)
    rows = write_dataset(tmp_path / "tcia", 3, seed=1, layout="tcia", spec=small)
    first = tmp_path / "tcia" / rows[0]["File Location"]
    assert {p.name for p in first.iterdir()} == {"SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz"}
    assert "diagnosis" in (tmp_path / "tcia" / "Metadata.csv").read_text().splitlines()[0]
    write_dataset(tmp_path / "gc", 2, seed=1, layout="grand-challenge", spec=small)
    pets = sorted((tmp_path / "gc/images/pet").iterdir())
    cts = sorted((tmp_path / "gc/images/ct").iterdir())
    assert len(pets) == len(cts) == len(list((tmp_path / "gc/labels").iterdir())) == 2
    assert sitk.ReadImage(str(pets[0])).GetSize() == (48, 48, 30)
