"""Where a process stands in a larger run: its part of a job array (``--num-parts``/``--part-id``) and its
rank in a torchrun job, with the device and CPU threads that follow from it. Light to import: PyTorch loads
only when a rank needs it, so that argument errors answer at once."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass

from model.errors import InputError

# Ranks wait for the slowest at the end of a cohort: a part may run for days.
GROUP_TIMEOUT = datetime.timedelta(days=7)


def part_indices(count: int, num_parts: int, part_id: int) -> list[int]:
    """The studies of part ``part_id`` of ``num_parts``: study i goes to part i mod num_parts."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise InputError(f"--num-parts {num_parts} --part-id {part_id}: need num-parts >= 1 and "
                         "0 <= part-id < num-parts")
    return list(range(part_id, count, num_parts))


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a torchrun job."""

    rank: int
    world: int
    local_rank: int
    local_world: int

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> RankInfo | None:
        """RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE as torchrun sets them; None outside torchrun."""
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
        if "RANK" not in environ or "WORLD_SIZE" not in environ:
            return None
        try:
            rank, world, local_rank, local_world = (int(environ.get(name, default)) for name, default in
                                                    zip(names, ("", "", "0", "1"), strict=True))
        except ValueError:
            raise InputError(f"torchrun environment: {', '.join(f'{n}={environ.get(n)!r}' for n in names)} are not "
                             "all integers") from None
        if not (0 <= rank < world and 0 <= local_rank < local_world):
            raise InputError(f"torchrun environment: rank {rank} of {world}, local rank {local_rank} of "
                             f"{local_world} is not a place in the job")
        return cls(rank=rank, world=world, local_rank=local_rank, local_world=local_world)

    def device(self, device: str) -> str:
        """This rank's device: the GPU of its LOCAL_RANK for ``auto`` (when CUDA is there) and ``cuda``; on the
        CPU it takes its share of the cores (torch threads), so that ranks do not oversubscribe them."""
        import torch

        from model.devices import resolve_device

        if device in ("auto", "cuda") and torch.cuda.is_available():
            if self.local_rank >= torch.cuda.device_count():
                raise InputError(f"local rank {self.local_rank}: PyTorch sees {torch.cuda.device_count()} CUDA "
                                 "GPU(s); start at most one process per GPU (--nproc_per_node)")
            torch.cuda.set_device(self.local_rank)
            return f"cuda:{self.local_rank}"
        if resolve_device(device).type == "cpu":
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // self.local_world))
        return device

    def start_group(self) -> None:
        """Join the job's process group (gloo: only Python objects travel, on CPU and GPU machines alike)."""
        import torch.distributed as dist

        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo", timeout=GROUP_TIMEOUT)

    def gather(self, records: list) -> list:
        """Every rank's records, concatenated in rank order, on every rank."""
        import torch.distributed as dist

        if self.world == 1:
            return list(records)
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, records)
        return [record for part in gathered for record in part]

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            with contextlib.suppress(RuntimeError):  # a group already torn down by torchrun
                dist.destroy_process_group()
