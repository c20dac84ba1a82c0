"""The phantom generator (phantoms.study.make_phantom and the modules it draws from: anatomy, physiology,
lesions, imaging, tissues) keeps its promises: uptake by organ, lesion volumes against the mask, masks only
where lesions are, noise that grows with the counts, reproducibility, and variety actually drawn."""

import dataclasses
import math

import cc3d
import numpy as np
import pytest
from scipy.ndimage import binary_dilation, gaussian_filter

from phantoms import (
    BLADDER,
    CORTEX,
    FAT,
    GAS,
    GREY_MATTER,
    LIVER,
    LUNG,
    MUSCLE,
    MYOCARDIUM,
    SUV_RANGE,
    TABLE,
    TISSUES,
    WHITE_MATTER,
    PhantomSpec,
    make_phantom,
)
from phantoms.physiology import shift_at_diaphragm
from tests.conftest import SMALL_SPEC

# Fine enough for lesion volumes and partial volume, small enough to build in a fraction of a second.
MEDIUM_SPEC = PhantomSpec(size=128, spacing=4.0, slices=170, slice_thickness=6.0)


@pytest.fixture(scope="module")
def small_studies():
    """Twenty-four studies on the tests' small grid, half positive; a quarter of them run to the feet."""
    spec = dataclasses.replace(SMALL_SPEC, feet_fraction=0.25)
    return [make_phantom(seed, positive=seed % 2 == 0, spec=spec) for seed in range(24)]


@pytest.fixture(scope="module")
def medium_positives():
    return [make_phantom(seed, positive=True, spec=MEDIUM_SPEC) for seed in (1, 2, 3, 4)]


def _tissue_median(phantom, tissue):
    where = (phantom.labels == tissue) & (phantom.mask == 0)
    return float(np.median(phantom.activity[where])) if where.any() else None


def test_same_seed_same_study_other_seed_other_study():
    a, b = make_phantom(5, True, SMALL_SPEC), make_phantom(5, True, SMALL_SPEC)
    for name in ("pet", "ct", "mask", "labels", "activity"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.features == b.features and a.diagnosis == b.diagnosis
    c = make_phantom(6, True, SMALL_SPEC)
    assert c.features != a.features and not np.array_equal(c.pet, a.pet)


def test_organ_uptake_is_physiological(small_studies):
    """Median true SUV per tissue (lesions left out) within the ranges a study draws from."""
    seen = {}
    for phantom in small_studies:
        for tissue in (FAT, MUSCLE, LUNG, LIVER, BLADDER, MYOCARDIUM, GREY_MATTER):
            median = _tissue_median(phantom, tissue)
            if median is None:
                continue
            lo, hi = SUV_RANGE[tissue]
            if tissue == MUSCLE and phantom.features["exercise"]:
                hi = 5.0
            # Textures modulate around the drawn mean; urine and myocardium patterns can lower the median.
            assert 0.8 * lo - 0.05 <= median <= 1.15 * hi, (TISSUES[tissue], median, phantom.features)
            seen.setdefault(tissue, []).append(median)
        grey, white = _tissue_median(phantom, GREY_MATTER), _tissue_median(phantom, WHITE_MATTER)
        if grey is not None and white is not None:
            assert white < 0.6 * grey
    assert len(seen[GREY_MATTER]) >= 8 and len(seen[BLADDER]) >= 20  # brains (vertex FOVs) and bladders drawn
    assert min(seen[MYOCARDIUM]) < 2.5 < 8 < max(seen[MYOCARDIUM])  # suppressed to intense hearts
    assert min(seen[BLADDER]) < 12 and max(seen[BLADDER]) > 25


def test_ct_values_by_tissue(small_studies):
    phantom = small_studies[0]
    ct, labels = phantom.ct.astype(float), phantom.labels
    assert phantom.ct.dtype == np.int16
    assert -1020 < np.median(ct[labels == 0]) < -980
    assert -130 < np.median(ct[labels == FAT]) < -60
    assert np.median(ct[labels == LUNG]) < -700 and np.median(ct[labels == CORTEX]) > 300
    assert 25 < np.median(ct[labels == MUSCLE]) < 75
    assert np.std(ct[labels == MUSCLE]) > 3  # texture and noise, not flat


def test_negatives_have_empty_masks_and_positives_lesions(small_studies):
    for seed, phantom in enumerate(small_studies):
        if seed % 2:
            assert phantom.diagnosis == "NEGATIVE" and not phantom.mask.any() and phantom.lesions == []
        else:
            assert phantom.diagnosis != "NEGATIVE" and phantom.mask.any() and len(phantom.lesions) >= 1


def test_mask_only_where_lesions_are(small_studies, medium_positives):
    positives = [p for p in small_studies if p.lesions] + medium_positives
    for phantom in positives:
        labels = phantom.labels[phantom.mask > 0]
        assert not np.isin(labels, (0, TABLE, GAS)).any()  # inside the body
        components = cc3d.connected_components(phantom.mask, connectivity=18)
        spacing_zyx = np.array(phantom.spacing[::-1])
        centres = np.array([lesion.voxel for lesion in phantom.lesions]) * spacing_zyx
        reach = np.array([lesion.diameter_mm for lesion in phantom.lesions])[:, None]
        for label, box in enumerate(cc3d.statistics(components)["bounding_boxes"][1:], start=1):
            lo = np.array([s.start for s in box]) * spacing_zyx
            hi = np.array([s.stop - 1 for s in box]) * spacing_zyx
            near = np.all((centres >= lo - reach) & (centres <= hi + reach), axis=1)
            assert near.any(), f"mask component {label} is near no lesion"


def test_lesion_volumes_agree_with_the_mask(medium_positives):
    for phantom in medium_positives:
        voxel_ml = math.prod(phantom.spacing) / 1000
        mask_ml = phantom.mask.sum() * voxel_ml
        volumes = [lesion.volume_ml for lesion in phantom.lesions]
        assert max(volumes) - 1e-9 <= mask_ml <= sum(volumes) + 1e-9  # the union of the lesions, nothing else
        for lesion in phantom.lesions:
            assert lesion.diameter_mm >= 5
            if not lesion.clipped and lesion.diameter_mm >= 5 * max(phantom.spacing):
                # On the grid, a whole lesion keeps its drawn volume (the deformation changes it a little).
                assert 0.7 < lesion.volume_ml / lesion.nominal_ml < 1.4, lesion


def test_small_lesions_lose_contrast_to_partial_volume(medium_positives):
    """Recovery (PET over the mask, above the local background, against the true uptake) of isolated lesions."""
    recovery = {"small": [], "large": []}
    for phantom in medium_positives:
        components = cc3d.connected_components(phantom.mask, connectivity=18)
        centres = [components[lesion.voxel] for lesion in phantom.lesions]
        for lesion, component in zip(phantom.lesions, centres, strict=True):
            if lesion.necrotic or lesion.clipped or component == 0 or centres.count(component) > 1:
                continue
            where = components == component
            background = float(np.median(phantom.activity[binary_dilation(where, iterations=2) & ~where]))
            if lesion.suv < 2 * background:
                continue
            value = (phantom.pet[where].mean() - background) / (lesion.suv - background)
            if lesion.diameter_mm < 10:
                recovery["small"].append(value)
            elif lesion.diameter_mm > 20:
                recovery["large"].append(value)
    assert len(recovery["small"]) >= 3 and len(recovery["large"]) >= 2
    assert np.median(recovery["small"]) < 0.6 and np.median(recovery["large"]) > 0.7


def test_pet_noise_variance_grows_with_the_counts():
    phantom = make_phantom(4, False, MEDIUM_SPEC)
    sigma_mm = phantom.features["fwhm_mm"] / 2.3548
    expected = gaussian_filter(phantom.activity, [sigma_mm / s for s in phantom.spacing[::-1]], truncate=3.0,
                               mode="constant")
    residual = phantom.pet - expected
    ratios, means = [], []
    for tissue in (LIVER, GREY_MATTER, BLADDER, MUSCLE):
        inner = (phantom.labels == tissue) & (np.abs(expected - np.median(expected[phantom.labels == tissue]))
                                              < 0.15 * np.median(expected[phantom.labels == tissue]))
        if inner.sum() < 200:
            continue
        means.append(expected[inner].mean())
        ratios.append(residual[inner].var() / expected[inner].mean())
    assert len(means) >= 3 and max(means) > 4 * min(means)
    assert max(ratios) < 2.5 * min(ratios)  # variance proportional to the mean, as counts are


def test_misregistration_moves_the_pets_diaphragm():
    class Body:
        dome_right, dome_left, s = 1250.0, 1240.0, 1.0

    class Canvas:
        u = np.arange(1000.0, 1400.0, 4.0, dtype=np.float32) + 2
        spacing = (4.0, 4.0, 4.0)

    activity = np.zeros((len(Canvas.u), 2, 2), dtype=np.float32)
    activity[Canvas.u < 1220] = 2.0  # liver below, lung above
    activity[Canvas.u >= 1220] = 0.4
    shift_at_diaphragm(Body, Canvas, activity, 12.0)
    edge = Canvas.u[np.argmax(activity[:, 0, 0] < 1.2)]
    assert 1228 < edge < 1236  # the edge moved up by about the shift
    assert activity[0, 0, 0] == 2.0 and activity[-1, 0, 0] == np.float32(0.4)  # far from it nothing moves


def test_variety_is_drawn(small_studies):
    # Body, posture, field of view and uptake do not depend on the grid: draw many on a tiny one.
    tiny = PhantomSpec(size=24, spacing=24.0, slices=12, slice_thickness=90.0, feet_fraction=0.25)
    features = [make_phantom(seed, positive=False, spec=tiny).features for seed in range(60)]
    arms = [f["arms"] for f in features]
    assert 10 < arms.count("up") < 50 and 5 < arms.count("down") < 40 and arms.count("one up") >= 2
    fov = [f["fov"] for f in features]
    assert 5 < fov.count("vertex to feet") < 30 and 5 < fov.count("neck to thigh") < 40
    turned = sum(f["head_yaw_deg"] != 0 for f in features)
    assert 5 < turned < 40
    assert sum(bool(f["brown_fat"]) for f in features) >= 2 and sum(bool(f["exercise"]) for f in features) >= 2
    assert 3 < sum(f["misregistration_mm"] > 0 for f in features) < 40
    assert max(f["height_mm"] for f in features) - min(f["height_mm"] for f in features) > 250
    assert max(f["fat_mm"] for f in features) > 3 * min(f["fat_mm"] for f in features)
    myocardium = [f["uptake"]["myocardium"] for f in features]
    assert min(myocardium) < 2.5 and max(myocardium) > 10
    assert {f["sex"] for f in features} == {"F", "M"}

    lesions = [lesion for p in small_studies for lesion in p.lesions]
    assert {"node", "lung", "liver", "bone"} <= {lesion.kind for lesion in lesions}
    assert any(lesion.necrotic for lesion in lesions) and any(lesion.heterogeneous for lesion in lesions)
    counts = [len(p.lesions) for p in small_studies if p.lesions]
    assert min(counts) <= 2 and max(counts) >= 8
    for p in small_studies:
        to_feet = p.features["fov"].endswith("feet")
        assert (p.pet.shape[0] > SMALL_SPEC.slices) if to_feet else (p.pet.shape[0] == SMALL_SPEC.slices)


def test_the_same_study_on_another_grid():
    """The seed alone decides body, posture and uptake; the grid only how they are sampled."""
    small = make_phantom(9, positive=False, spec=SMALL_SPEC).features
    medium = make_phantom(9, positive=False, spec=MEDIUM_SPEC).features
    grid_dependent = {"slices"}
    assert {k: v for k, v in small.items() if k not in grid_dependent} == \
        {k: v for k, v in medium.items() if k not in grid_dependent}


@pytest.mark.parametrize("spec", [PhantomSpec(size=400, spacing=2.0364, slices=12, slice_thickness=3.0),
                                  PhantomSpec(size=128, spacing=5.0, slices=40, slice_thickness=5.0)])
def test_grids_from_the_spec(spec):
    phantom = make_phantom(2, True, spec)
    assert phantom.pet.shape == phantom.ct.shape == phantom.mask.shape == (spec.slices, spec.size, spec.size)
    assert phantom.spacing == (spec.spacing, spec.spacing, spec.slice_thickness)
    assert phantom.pet.dtype == np.float32 and phantom.pet.min() >= 0


def test_large_masses_are_drawn_in_the_limbs_as_well_as_the_trunk():
    """autoPET has bulky heterogeneous masses (100-1000 ml, necrotic cores) in the trunk and in the limbs."""
    from phantoms.body import T_KNOTS, Body
    from phantoms.lesions import _in_limb

    body = Body(np.random.default_rng(0), feet_fraction=0.0)
    h = body.height
    cx, cy, a, _, fat, _ = (float(v) for v in body.trunk(0.6 * h))
    assert _in_limb(body, np.array([cx, cy, 0.3 * h]))  # a thigh: below the crotch
    assert _in_limb(body, np.array([cx + a + fat + 40, cy, 0.6 * h]))  # beside the trunk: an arm
    assert not _in_limb(body, np.array([cx + 0.5 * a, cy, 0.6 * h]))
    assert not _in_limb(body, np.array([cx, cy, (T_KNOTS[0] + 0.01) * h]))

    spec = PhantomSpec(size=96, spacing=5.0, slices=150, slice_thickness=6.0)
    kinds: dict[str, list] = {}
    for seed in range(40):
        phantom = make_phantom(2000 + seed, positive=True, spec=spec, diagnosis="MELANOMA")
        for lesion in phantom.lesions:
            kinds.setdefault(lesion.kind, []).append(lesion)
    limb, trunk = kinds.get("limb_mass", []), kinds.get("mass", [])
    assert limb and trunk
    assert max(lesion.volume_ml for lesion in limb + trunk) >= 100
    assert any(lesion.necrotic for lesion in limb + trunk)
