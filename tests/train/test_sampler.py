from collections import Counter

import numpy as np
import pytest

from train.sampler import WholeBodySampler


def _studies(n_patients=40, slices=100, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        lesions = sorted(rng.choice(slices, size=int(rng.integers(3, 12)), replace=False).tolist())
        rows.append({"study": f"s{p}", "patient": f"p{p}", "slices": slices, "lesion_slices": lesions})
    return rows


def test_whole_body_slices_are_about_alpha_times_lesion_slices():
    studies = _studies()
    for alpha in (0.5, 1.0, 2.0):
        sampler = WholeBodySampler(studies, alpha=alpha, overlap=0.0)
        n_lesion = len(sampler.lesion_slices)
        n_whole = len(sampler.epoch_items(0)) - n_lesion
        assert abs(n_whole - alpha * n_lesion) <= 100  # within one patient's slices


def test_every_patient_lands_in_a_set_and_sets_overlap_by_a_quarter_circularly():
    sampler = WholeBodySampler(_studies(), alpha=1.0, overlap=0.25)
    assert set().union(*map(set, sampler.sets)) == set(sampler.patients)
    size = len(sampler.sets[0]) - round(0.25 * len(sampler.sets[0]) / 1.25)
    for k in range(len(sampler.sets)):
        shared = set(sampler.sets[k]) & set(sampler.sets[k - 1])  # k = 0 pairs the first with the last
        assert shared, f"set {k} shares nobody with set {k - 1}"
        assert abs(len(shared) / size - 0.25) <= 0.15


def test_the_set_changes_exactly_every_beta_epochs():
    sampler = WholeBodySampler(_studies(), alpha=1.0, beta=3)
    sets = [tuple(sampler.current_set(e)) for e in range(12)]
    assert sets[0] == sets[1] == sets[2] != sets[3] == sets[4] == sets[5] != sets[6]


def test_alpha_zero_is_plain_lesion_slice_training():
    sampler = WholeBodySampler(_studies(), alpha=0.0)
    assert sorted(sampler.epoch_items(0)) == sorted(sampler.lesion_slices)


def test_deterministic_and_disjoint_across_ranks():
    studies = _studies()
    a = list(WholeBodySampler(studies, seed=3))
    assert a == list(WholeBodySampler(studies, seed=3)) and a != list(WholeBodySampler(studies, seed=4))
    ranks = [WholeBodySampler(studies, seed=3, rank=r, world_size=3) for r in range(3)]
    for r in ranks:
        r.set_epoch(2)
    shards = [list(r) for r in ranks]
    assert len({len(s) for s in shards}) == 1
    # Every item of the epoch on exactly one rank; padding repeats at most world_size - 1 of them.
    items, seen = Counter(ranks[0].epoch_items()), Counter(item for shard in shards for item in shard)
    assert not items - seen and sum((seen - items).values()) < 3


@pytest.mark.parametrize("negatives", [False, True])
def test_negative_studies_join_the_pool_only_when_asked(negatives):
    studies = _studies(10) + [{"study": "neg", "patient": "pn", "slices": 100, "lesion_slices": []}]
    sampler = WholeBodySampler(studies, whole_body_negatives=negatives)
    assert ("pn" in sampler.patients) is negatives
