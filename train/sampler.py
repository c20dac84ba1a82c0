"""The whole-body strategy: every lesion slice each epoch, plus every slice of a rotating set of patients.

Training patients are shuffled once (seed) and cut into consecutive whole-body sets of m patients, with m
chosen so that whole-body slices are about alpha x lesion slices. Each set also takes ``overlap`` of its
size at random from the previous set (the first from the last: circular). The set changes every beta
epochs, so over the run every training patient's whole body is seen. alpha = 0 is plain lesion-slice
training. Deterministic for a seed and an epoch, and sharded disjointly across DDP ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

SliceRef = tuple[int, int]  # (study position in the index, slice)


class WholeBodySampler(Sampler[SliceRef]):
    def __init__(self, studies: list[dict], alpha: float = 1.0, beta: int = 5, overlap: float = 0.25,
                 seed: int = 0, rank: int = 0, world_size: int = 1, whole_body_negatives: bool = False):
        if beta < 1:
            raise ValueError("beta must be at least 1")
        self.studies, self.alpha, self.beta, self.overlap = studies, alpha, beta, overlap
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.lesion_slices: list[SliceRef] = [(i, s) for i, row in enumerate(studies) for s in row["lesion_slices"]]
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
        slices = sum(self.studies[i]["slices"] for p in order for i in self.studies_of[p])
        per_patient = slices / len(order)
        size = min(max(math.ceil(self.alpha * len(self.lesion_slices) / per_patient), 1), len(order))
        base = [order[k:k + size] for k in range(0, len(order), size)]
        carried = max(round(self.overlap * size), 0) if len(base) > 1 else 0
        sets = []
        for k, members in enumerate(base):
            previous = base[k - 1]  # k = 0 takes from the last set: circular
            pick = rng.choice(len(previous), size=min(carried, len(previous)), replace=False)
            sets.append(members + [previous[j] for j in sorted(pick) if previous[j] not in members])
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
        whole_body = [(i, s) for p in self.current_set(epoch) for i in self.studies_of[p]
                      for s in range(self.studies[i]["slices"])]
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
