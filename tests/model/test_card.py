"""The model card (issue 24 item 1): what the weights are, carried in the checkpoint's config."""

from __future__ import annotations

import pytest

from model.card import ModelCard
from model.config import ModelConfig
from tests.conftest import TINY


def test_a_card_travels_in_the_config_and_says_what_the_weights_are():
    card = ModelCard(purpose="demo", trained_on="30 phantoms",
                     held_out={"data": "10 phantoms", "cases": 10, "dice": 0.1654, "fpv_ml": 45.6, "fnv_ml": None})
    config = ModelConfig.from_dict({**TINY.to_dict(), "card": {"purpose": "demo", "trained_on": "30 phantoms",
                                                               "held_out": dict(card.held_out)}})
    assert config.card == card and ModelConfig.from_dict(config.to_dict()) == config
    assert card.warning == "demo weights: not for clinical or research use"
    assert card.summary() == "demo model; trained on 30 phantoms; held out: Dice 0.165, FPV ml 45.6 on 10 phantoms"
    # A checkpoint from before cards: its purpose is unstated, and its outputs carry no warning.
    assert ModelConfig.from_dict(TINY.to_dict() | {"card": {}}).card.summary() == "unstated model"
    assert ModelCard().warning is None
    assert ModelCard(purpose="research").warning == "research weights: not for clinical use"


@pytest.mark.parametrize(("card", "needle"), [
    ({"purpose": "clinical"}, "card.purpose must be one of"),
    ({"trained_on": 3}, "card.trained_on must be a text"),
    ({"held_out": {"dice": [0.5]}}, "card.held_out must be an object of texts and numbers"),
    ({"held_out": [0.5]}, "card.held_out must be an object"),
])
def test_a_card_that_is_not_one_is_refused(card, needle):
    with pytest.raises(ValueError, match=needle):
        ModelConfig.from_dict({**TINY.to_dict(), "card": card})
