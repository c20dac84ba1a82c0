"""A model's card: what its weights are for, what they were trained on and their figures on data they were not
trained on. Part of the checkpoint's config (model.config.ModelConfig.card); a light module (no PyTorch), so
that the review page can describe a model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from model.validation import is_number

# What a model is for, as its card states it, and the line its outputs carry where a reader looks (the console,
# the review page's header, each picture's title, report.json). "unstated": a checkpoint written before cards.
PURPOSE_WARNINGS: dict[str, str | None] = {
    "demo": "demo weights: not for clinical or research use",
    "research": "research weights: not for clinical use",
    "unstated": None,
}


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint is: its purpose (``PURPOSE_WARNINGS``), what it was trained on, and its figures on data
    it was not trained on (``held_out``: ``data`` in words, ``cases`` and the official metrics). Part of the
    config, so that it travels with the weights and their identity."""

    purpose: str = "unstated"
    trained_on: str = ""
    held_out: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSE_WARNINGS:
            raise ValueError(f"card.purpose must be one of {list(PURPOSE_WARNINGS)}, got {self.purpose!r}")
        if not isinstance(self.trained_on, str):
            raise ValueError(f"card.trained_on must be a text, got {self.trained_on!r}")
        if not isinstance(self.held_out, dict) or not all(
                isinstance(value, str) or value is None or is_number(value) for value in self.held_out.values()):
            raise ValueError(f"card.held_out must be an object of texts and numbers, got {self.held_out!r}")

    @property
    def warning(self) -> str | None:
        """The line a reader must see beside the outputs of these weights, or None."""
        return PURPOSE_WARNINGS[self.purpose]

    def summary(self) -> str:
        """One line: purpose, what it was trained on, its held-out Dice, FPV and FNV."""
        parts = [f"{self.purpose} model"]
        if self.trained_on:
            parts.append(f"trained on {self.trained_on}")
        figures = self.held_out
        if figures:
            numbers = ", ".join(f"{label} {figures[key]:.3g}" for key, label in
                                (("dice", "Dice"), ("fpv_ml", "FPV ml"), ("fnv_ml", "FNV ml"))
                                if is_number(figures.get(key)))
            parts.append(f"held out: {numbers or 'no figures'} on {figures.get('data') or 'unnamed data'}")
        return "; ".join(parts)
