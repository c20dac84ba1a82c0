from collections import Counter

import numpy as np
import pytest

from train.config import FitConfig
from train.sampler import WholeBodySampler

PAPER = FitConfig()


def _sampler(studies: list[dict], **changes) -> WholeBodySampler:
    """A sampler with the config's values (the paper's) but for ``changes``; the set size measured from the
    slices per patient unless asked otherwise (the seed's rule has tests of its own)."""
    settings = {"alpha": PAPER.alpha, "beta": PAPER.beta, "set_carry_over": PAPER.set_carry_over, "seed": PAPER.seed,
                "set_size": "slices_per_patient"}
    return WholeBodySampler(studies, **{**settings, **changes})


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
        sampler = _sampler(studies, alpha=alpha, set_carry_over=0.0)
        n_lesion = len(sampler.lesion_slices)
        n_whole = len(sampler.epoch_items(0)) - n_lesion
        assert abs(n_whole - alpha * n_lesion) <= 100  # within one patient's slices


def test_every_patient_lands_in_a_set_and_sets_carry_a_quarter_of_their_size_circularly():
    sampler = _sampler(_studies(), alpha=1.0, set_carry_over=0.25)
    assert len(sampler.sets) > 2 and set().union(*map(set, sampler.sets)) == set(sampler.patients)
    size = max(len(s) for s in sampler.sets)  # m, carried patients included
    for k in range(len(sampler.sets)):
        shared = set(sampler.sets[k]) & set(sampler.sets[k - 1])  # k = 0 pairs the first with the last
        assert len(shared) == int(0.25 * size), f"set {k} shares {len(shared)} patients with set {k - 1}"
        assert len(sampler.sets[k]) in (size - 1, size)


def test_whole_body_slices_are_about_alpha_times_lesion_slices_carried_patients_included():
    """400 simulated studies (some patients with two), the paper's carry-over: the sets hold m patients in all."""
    rng = np.random.default_rng(1)
    rows, patient = [], 0
    for s in range(400):
        patient += rng.random() > 0.12  # about one patient in nine has a second study
        slices = int(rng.integers(280, 340))
        lesions = sorted(rng.choice(slices, size=int(rng.integers(1, 25)), replace=False).tolist())
        rows.append({"study": f"s{s}", "patient": f"p{patient}", "slices": slices, "lesion_slices": lesions})
    for alpha in (0.5, 1.0, 2.0):
        sampler = _sampler(rows, alpha=alpha, set_carry_over=0.25)
        n_lesion = len(sampler.lesion_slices)
        ratios = [(len(sampler.epoch_items(k * sampler.beta)) - n_lesion) / n_lesion
                  for k in range(len(sampler.sets))]
        assert abs(np.mean(ratios) / alpha - 1) < 0.1, (alpha, np.mean(ratios))
        assert max(abs(r / alpha - 1) for r in ratios) < 0.35


def test_slices_without_body_are_never_drawn():
    studies = _studies(6)
    studies[0]["bodyless_slices"] = list(range(0, 10))
    studies[0]["lesion_slices"] = [5, 50]
    sampler = _sampler(studies, alpha=5.0)  # a set holds everybody: every body slice is drawn
    items = set(sampler.epoch_items(0))
    assert (0, 50) in items and not {(0, s) for s in range(10)} & items
    assert (1, 0) in items


def test_the_set_changes_exactly_every_beta_epochs():
    sampler = _sampler(_studies(), alpha=1.0, beta=3)
    sets = [tuple(sampler.current_set(e)) for e in range(12)]
    assert sets[0] == sets[1] == sets[2] != sets[3] == sets[4] == sets[5] != sets[6]


def test_alpha_zero_is_plain_lesion_slice_training():
    sampler = _sampler(_studies(), alpha=0.0)
    assert sorted(sampler.epoch_items(0)) == sorted(sampler.lesion_slices)


def test_deterministic_and_disjoint_across_ranks():
    studies = _studies()
    a = list(_sampler(studies, seed=3))
    assert a == list(_sampler(studies, seed=3)) and a != list(_sampler(studies, seed=4))
    ranks = [_sampler(studies, seed=3, rank=r, world_size=3) for r in range(3)]
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
    sampler = _sampler(studies, whole_body_negatives=negatives)
    assert ("pn" in sampler.patients) is negatives


def test_the_seed_set_size_rule_takes_ceil_lesion_slices_over_350_in_fold_order_and_drops_leftovers():
    # 23 patients of 326 slices (autoPET's depth), 20 lesion slices each: 460 lesion slices, m = ceil(460 / 350) = 2
    # with no carry-over, so 11 sets of 2 and the 23rd patient unused; the fold order is the studies' order.
    studies = [{**row, "slices": 326, "lesion_slices": list(range(100, 120))}
               for row in _studies(n_patients=23, slices=326)][::-1]
    sampler = _sampler(studies, set_size="seed", set_carry_over=0.0)
    order = [row["patient"] for row in studies]
    assert sampler.sets == [order[k:k + 2] for k in range(0, 22, 2)]
    assert order[22] not in {p for s in sampler.sets for p in s}
    # alpha 3 and a carry-over of 0.25: m = ceil(3 x 460 / 350) = 4, lap 1, chunks of 3 (7 sets, 2 unused);
    # each set holds its chunk and one patient of the set before, the first one of the last set.
    sampler = _sampler(studies, set_size="seed", alpha=3.0, set_carry_over=0.25)
    assert len(sampler.sets) == 7 and all(len(s) == 4 for s in sampler.sets)
    chunks = [order[k:k + 3] for k in range(0, 21, 3)]
    for k, members in enumerate(sampler.sets):
        assert members[:3] == chunks[k] and members[3] in sampler.sets[k - 1]
    assert not {order[21], order[22]} & {p for s in sampler.sets for p in s}


def test_the_paper_config_uses_the_seed_set_size_rule():
    assert PAPER.set_size == "seed"
    with pytest.raises(ValueError, match="set_size must be one of"):
        FitConfig(set_size="fixed")
