"""The training config: one home of its defaults (FitConfig, written out in full by paper.json), old key names
read under their new ones, and --set."""

import dataclasses
import json

import pytest

from model.errors import InputError
from tests.conftest import ROOT
from train.config import RENAMED, FitConfig, apply_override

CONFIGS = ROOT / "train" / "configs"


def test_paper_json_states_every_default_of_fitconfig_and_nothing_else():
    """FitConfig's defaults are the paper's recipe; paper.json writes each of them out, so that neither can
    change without the other."""
    stated = json.loads((CONFIGS / "paper.json").read_text())
    defaults = json.loads(json.dumps(dataclasses.asdict(FitConfig())))  # tuples as JSON lists
    assert stated == defaults
    assert FitConfig.load(CONFIGS / "paper.json", []) == FitConfig()


def test_demo_json_states_where_it_differs_from_the_paper():
    demo = FitConfig.load(CONFIGS / "demo.json", [])
    assert demo.dice == "foreground_batch" and demo.augment == "seed_v1" and demo.workers == 0
    assert demo.model_config().encoder == "regnety_002" and demo.set_carry_over == 0.25


def test_the_old_name_of_set_carry_over_is_read_and_both_at_once_refused(tmp_path):
    assert RENAMED == {"overlap": "set_carry_over"}
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"overlap": 0.5}))
    assert FitConfig.load(old, []).set_carry_over == 0.5
    with pytest.raises(InputError, match="'overlap' is the old name of 'set_carry_over'; give one of them"):
        FitConfig.load(old, ["set_carry_over=0.1"])
    with pytest.raises(InputError, match=r"set_carry_over must lie in \[0, 1\)"):
        FitConfig.load(old, ["overlap=1.0"])


def test_set_overrides_parse_json_values_and_nested_keys():
    data: dict = {"model": {"encoder": "a"}}
    for item in ("epochs=3", "model.encoder=regnety_002", "model.spacing_mm=[8,8]", "augment=light", "lr=1e-3"):
        apply_override(data, item)
    assert data == {"model": {"encoder": "regnety_002", "spacing_mm": [8, 8]}, "epochs": 3, "augment": "light",
                    "lr": 1e-3}
    with pytest.raises(InputError, match="--set epochs: expected key=value"):
        apply_override(data, "epochs")


@pytest.mark.parametrize("seed", ["-1", "4294967296", "1.5", "true", "\"7\""])
def test_a_seed_that_is_not_one_is_refused_by_the_config_as_by_the_argument(seed):
    """Issue 23 item 10: --seed -1 was a numpy traceback; --set seed=-1 is the same argument."""
    with pytest.raises(InputError, match="seed must be an integer from 0 to 4294967295"):
        FitConfig.load(CONFIGS / "demo.json", [f"seed={seed}"])
