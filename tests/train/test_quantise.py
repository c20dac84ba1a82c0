"""train.quantise's acceptance, as code: an int8 model is offered only if no voxel whose fp32 probability lies
further than the margin from the threshold changes side and each study's Dice against fp32 is >= 0.99."""

from __future__ import annotations

import numpy as np
import pytest

from train.quantise import KEEP_PATTERNS, MARGIN, MIN_DICE, agreement, build_parser, passes


def study(changes: dict[float, int]) -> tuple[np.ndarray, np.ndarray]:
    """A fp32 probability with 1000 lesion voxels at 0.9, and the int8 one with ``changes``: {fp32 value of the
    voxels that flip: how many}."""
    reference = np.full(10_000, 0.1, np.float32)
    reference[:1000] = 0.9
    candidate = reference.copy()
    start = 1000
    for value, count in changes.items():
        reference[start:start + count] = value
        candidate[start:start + count] = value
        flipped = 1.0 - value  # the other side of 0.5
        candidate[start:start + count] = flipped
        start += count
    return reference, candidate


@pytest.mark.parametrize(("changes", "accepted"), [
    ({}, True),
    ({0.5 + MARGIN / 2: 3}, True),                    # near the threshold: rounding's, allowed
    ({0.5 + MARGIN * 1.5: 1}, False),                 # one voxel beyond the margin changed
    ({0.48: 30}, False),                              # all near the threshold, but Dice below 0.99
], ids=["equal", "near the threshold", "one beyond the margin", "dice below"])
def test_the_acceptance_refuses_any_change_beyond_the_margin_and_a_low_dice(changes, accepted):
    reference, candidate = study(changes)
    figures = {"a study": agreement(reference, candidate, 0.5), "another": agreement(reference, reference, 0.5)}
    assert passes(figures) is accepted
    assert figures["another"] == {"dice": 1.0, "changed_beyond_margin": 0, "changed": 0,
                                  "lesion_voxels_fp32": int((reference >= 0.5).sum())}
    assert (figures["a study"]["dice"] >= MIN_DICE) == (not changes or 0.48 not in changes)


def test_an_empty_study_agrees_and_the_kept_layers_are_named():
    empty = np.zeros(100, np.float32)
    assert agreement(empty, empty, 0.5)["dice"] == 1.0
    args = build_parser().parse_args(["int8", "--weights", __file__, "--keep", *KEEP_PATTERNS])
    assert args.keep == ["first_conv", "head", "decoder_last", "decoder"]
