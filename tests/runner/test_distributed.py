"""runner.distributed: job-array parts (every nth study) and torchrun ranks (from its environment, each CPU
rank with its share of the cores)."""

import pytest
import torch

from model.errors import InputError
from runner.distributed import RankInfo, part_indices


def test_parts_take_every_nth_study():
    parts = [part_indices(10, 3, k) for k in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert part_indices(2, 4, 3) == []
    for num_parts, part_id in ((0, 0), (2, 2), (2, -1)):
        with pytest.raises(InputError, match="--num-parts"):
            part_indices(5, num_parts, part_id)


def test_rank_info_from_torchruns_environment():
    assert RankInfo.from_environment({}) is None
    info = RankInfo.from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert info == RankInfo(rank=3, world=4, local_rank=1, local_world=2)
    with pytest.raises(InputError, match="not all integers"):
        RankInfo.from_environment({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(InputError, match="rank 2 of 2"):
        RankInfo.from_environment({"RANK": "2", "WORLD_SIZE": "2"})


def test_a_cpu_rank_takes_its_share_of_the_cores():
    threads = torch.get_num_threads()
    try:
        info = RankInfo(rank=0, world=2, local_rank=0, local_world=64)
        assert info.device("cpu") == "cpu" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
