"""The whole-body strategy: every lesion slice each epoch, plus every slice of a rotating set of patients.

Training patients are cut into whole-body sets of m patients in all: m - lap new patients, plus lap =
int(set_carry_over x m) drawn at random from the previous set (the first set draws from the last: circular),
as the seed builds them. How m is chosen and which patients are cut is ``set_size`` (SET_SIZES):
``slices_per_patient``: m = round(alpha x lesion slices / the measured body slices per patient), so that a
set's slices are about alpha x the lesion slices; patients shuffled once (seed), every one in some set.
``seed``: the seed code's rule (PETCT_train_v2/petct_main.py and utils/TNSUCI_util.py
get_fold_filelist_4all): m = ceil(alpha x lesion slices / 350), patients in fold order (the order of the
training studies), cut into chunks of exactly m - lap, the patients left over after the last whole chunk
never used. The set changes every beta epochs, so over the run every training patient's whole body
is seen. alpha = 0 is plain lesion-slice training. Slices without body (fewer than
model.preprocessing.MIN_BODY_PIXELS body pixels: the index's ``bodyless_slices``) are never drawn, as
inference never segments them. Deterministic for a seed and an epoch, and sharded disjointly across DDP
ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

SliceRef = tuple[int, int]  # (study position in the index, slice)
SET_SIZES = ("seed", "slices_per_patient")
# The seed code's slices per patient in its set-size rule (a constant there, about an autoPET study's depth).
SEED_SLICES_PER_PATIENT = 350


class WholeBodySampler(Sampler[SliceRef]):
    # alpha, beta, set_carry_over and seed have no defaults here: their one home is train.config.FitConfig.
    def __init__(self, studies: list[dict], *, alpha: float, beta: int, set_carry_over: float, seed: int,
                 set_size: str, rank: int = 0, world_size: int = 1, whole_body_negatives: bool = False):
        if set_size not in SET_SIZES:
            raise ValueError(f"set_size must be one of {list(SET_SIZES)}, got {set_size!r}")
        if beta < 1:
            raise ValueError("beta must be at least 1")
        if not 0.0 <= set_carry_over < 1.0:
            raise ValueError("set_carry_over must lie in [0, 1)")
        self.studies, self.alpha, self.beta, self.set_carry_over = studies, alpha, beta, set_carry_over
        self.seed, self.rank, self.world_size, self.set_size = seed, rank, world_size, set_size
        self.epoch = 0
        self.body_slices = [sorted(set(range(row["slices"])) - set(row.get("bodyless_slices", [])))
                            for row in studies]
        self.lesion_slices: list[SliceRef] = [(i, s) for i, row in enumerate(studies)
                                              for s in sorted(set(row["lesion_slices"]) & set(self.body_slices[i]))]
        pool = [i for i, row in enumerate(studies) if whole_body_negatives or row["lesion_slices"]]
        by_patient: dict[str, list[int]] = {}
        for i in pool:
            by_patient.setdefault(studies[i]["patient"], []).append(i)
        self.patients = sorted(by_patient)
        self.fold_order = list(by_patient)  # first appearance in the training studies
        self.studies_of = by_patient
        self.sets = self._seed_sets() if set_size == "seed" else self._make_sets()

    def _seed_sets(self) -> list[list[str]]:
        """The seed code's sets: m = ceil(alpha x lesion slices / 350), chunks of m - lap patients in fold order
        (leftovers unused), each set plus lap patients drawn from the set before; the first from the last."""
        if self.alpha <= 0 or not self.patients:
            return []
        rng = np.random.default_rng(self.seed)
        order = self.fold_order
        size = min(max(math.ceil(self.alpha * len(self.lesion_slices) / SEED_SLICES_PER_PATIENT), 1), len(order))
        carried = int(self.set_carry_over * size)
        fresh = size - carried
        if fresh >= len(order):
            return [list(order)]  # one set holds every patient: nothing to carry over
        chunks = [order[k:k + fresh] for k in range(0, len(order) - fresh + 1, fresh)]
        sets = [list(chunks[0])]
        for chunk in chunks[1:]:
            sets.append(list(chunk) + self._draw(rng, sets[-1], chunk, carried))
        sets[0] = list(chunks[0]) + self._draw(rng, sets[-1], chunks[0], carried)
        return sets

    @staticmethod
    def _draw(rng: np.random.Generator, previous: list[str], chunk: list[str], count: int) -> list[str]:
        candidates = [p for p in previous if p not in chunk]
        pick = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
        return [candidates[j] for j in sorted(pick)]

    def _make_sets(self) -> list[list[str]]:
        if self.alpha <= 0 or not self.patients:
            return []
        rng = np.random.default_rng(self.seed)
        order = [self.patients[i] for i in rng.permutation(len(self.patients))]
        slices = sum(len(self.body_slices[i]) for p in order for i in self.studies_of[p])
        per_patient = slices / len(order)
        size = min(max(round(self.alpha * len(self.lesion_slices) / per_patient), 1), len(order))
        if size == len(order):
            return [order]  # one set holds every patient: nothing to carry over
        carried = int(self.set_carry_over * size)
        fresh = max(size - carried, 1)
        chunks = [list(c) for c in np.array_split(np.array(order, dtype=object), math.ceil(len(order) / fresh))]
        sets: list[list[str]] = []
        for k, chunk in enumerate(chunks):
            previous = sets[k - 1] if k else chunks[-1]  # the first set draws from the last patients: circular
            candidates = [p for p in previous if p not in chunk]
            pick = rng.choice(len(candidates), size=min(carried, len(candidates)), replace=False)
            sets.append(chunk + [candidates[j] for j in sorted(pick)])
        return sets

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def current_set(self, epoch: int | None = None) -> list[str]:
        if not self.sets:
            return []
        epoch = self.epoch if epoch is None else epoch
        return self.sets[(epoch // self.beta) % len(self.sets)]

    def epoch_items(self, epoch: int | None = None) -> list[SliceRef]:
        """All items of an epoch for all ranks, shuffled deterministically."""
        epoch = self.epoch if epoch is None else epoch
        whole_body = [(i, s) for p in self.current_set(epoch) for i in self.studies_of[p] for s in self.body_slices[i]]
        items = self.lesion_slices + whole_body
        order = np.random.default_rng((self.seed, epoch)).permutation(len(items))
        return [items[j] for j in order]

    def __iter__(self) -> Iterator[SliceRef]:
        items = self.epoch_items()
        per_rank = math.ceil(len(items) / self.world_size)
        items = items + items[: per_rank * self.world_size - len(items)]  # equal shards keep DDP in step
        return iter(items[self.rank::self.world_size])

    def __len__(self) -> int:
        return math.ceil(len(self.epoch_items()) / self.world_size)
