"""The whole-body strategy: every lesion slice each epoch, plus every slice of a rotating set of patients.

Training patients are shuffled once (seed) and cut into whole-body sets of m patients in all, m chosen so
that a set's slices are about alpha x the lesion slices: m - lap new patients, plus lap = int(set_carry_over x m)
drawn at random from the previous set (the first set draws from the last patients: circular), as the
seed builds them. The set changes every beta epochs, so over the run every training patient's whole body
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


class WholeBodySampler(Sampler[SliceRef]):
    # alpha, beta, set_carry_over and seed have no defaults here: their one home is train.config.FitConfig.
    def __init__(self, studies: list[dict], *, alpha: float, beta: int, set_carry_over: float, seed: int,
                 rank: int = 0, world_size: int = 1, whole_body_negatives: bool = False):
        if beta < 1:
            raise ValueError("beta must be at least 1")
        if not 0.0 <= set_carry_over < 1.0:
            raise ValueError("set_carry_over must lie in [0, 1)")
        self.studies, self.alpha, self.beta, self.set_carry_over = studies, alpha, beta, set_carry_over
        self.seed, self.rank, self.world_size = seed, rank, world_size
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
        self.studies_of = by_patient
        self.sets = self._make_sets()

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
