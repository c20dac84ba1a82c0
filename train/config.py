"""The training config: FitConfig, its one home of defaults, and reading it from a JSON file with ``--set``.

FitConfig's defaults are the paper's recipe, and train/configs/paper.json writes every one of them out
(tests/train/test_config.py checks that the two agree, field by field): a value is stated once, here, and
paper.json shows it. Other configs (demo.json, a user's) state what differs; a key they leave out takes the
paper's value.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.arguments import MAX_SEED, training_precisions
from model.config import ModelConfig
from model.errors import InputError
from model.network import IMAGENET, PRETRAINED_SUFFIXES
from train.augment import AUGMENTATIONS
from train.loss import DICE_FORMS
from train.sampler import SET_SIZES

# Keys older configs used, read under their new names. "overlap" was the whole-body sets' carry-over, a name
# it shared with inference's tile overlap.
RENAMED = {"overlap": "set_carry_over"}
# The paper's network: regnety_160 from the seed's ImageNet weights, the seed's per-crop normalisation.
# Its head is the seed's training head, two outputs with softmax (their container deploys one sigmoid logit).
PAPER_MODEL = {"encoder": "regnety_160.pycls_in1k", "pretrained": IMAGENET, "card": {"purpose": "research"},
               "decoder_channels": [256, 128, 64, 32, 16],
               "normalisation": {"scheme": "seed", "ct_clip": [-1000, 1000]}, "crop_size": 256,
               "spacing_mm": [2.0364, 2.0364], "threshold": 0.5, "head": "two_class_softmax"}


@dataclass
class FitConfig:
    """Everything a run depends on; saved in RUN/config.json. ``model`` holds ModelConfig fields and the
    training-only ``pretrained`` (null, "imagenet" or a local weights file of the encoder). The defaults are
    the paper's (see the module's docstring)."""

    model: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(PAPER_MODEL)))
    epochs: int = 80
    cosine_epochs: int = 100
    # The global batch: the slices of one optimiser step, split equally over DDP ranks (train.fit.rank_batch_size).
    batch_size: int = 24
    lr: float = 1e-5
    lr_min: float = 1e-8
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    loss_lr: float = 1e-4
    # The Dice term's form (train.loss.DICE_FORMS): the seed code's "two_class_per_sample", or this
    # project's "foreground_batch" (demo.json).
    dice: str = "two_class_per_sample"
    alpha: float = 1.0
    beta: int = 5
    # The share of each whole-body set's patients drawn from the previous set (train.sampler).
    set_carry_over: float = 0.25
    # How many patients a whole-body set holds (train.sampler.SET_SIZES): "seed", the seed code's rule (ceil(alpha
    # x lesion slices / 350) patients in fold order, leftovers unused), which the paper's figures came from; or
    # "slices_per_patient" (alpha x lesion slices / the store's measured slices per patient, patients shuffled,
    # every one used).
    set_size: str = "seed"
    whole_body_negatives: bool = False
    positive_studies_only: bool = True
    # "seed" (the seed's imgaug pipeline, operator by operator), "seed_v1" (the first rebuild of it, which
    # demo.json trained with), "light", or false; true is read as "light", what it meant before.
    augment: str | bool = "seed"
    workers: int = 8
    seed: int = 0
    folds: int = 5
    steps_per_epoch: int | None = None  # exact when set (items are cycled); else one pass over the epoch
    # Validation after every val_every-th epoch and always after the last one, so a run always has a best.
    val_every: int = 1
    val_max_studies: int | None = None
    val_batch_size: int = 16
    # Steps whose loss is not finite are skipped; a run with more than this many stops.
    max_nonfinite_steps: int = 20
    # Autocast: "fp32" (none: the seed trained in fp32, and no measurement here shows bf16 gives its curves),
    # "auto" (bf16 where the device has it, else fp16 with a GradScaler on CUDA, fp32 on CPU), "bf16" or
    # "fp16" (CUDA only), so that one machine can train both ways.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.augment is True:
            self.augment = "light"
        if self.augment not in (False, *AUGMENTATIONS):
            raise ValueError(f"augment must be one of {[*AUGMENTATIONS, False]}, got {self.augment!r}")
        if self.dice not in DICE_FORMS:
            raise ValueError(f"dice must be one of {list(DICE_FORMS)}, got {self.dice!r}")
        if self.set_size not in SET_SIZES:
            raise ValueError(f"set_size must be one of {list(SET_SIZES)}, got {self.set_size!r}")
        if self.precision not in training_precisions():
            raise ValueError(f"precision must be one of {list(training_precisions())}, got {self.precision!r}")
        for name in ("epochs", "val_every", "batch_size", "beta", "max_nonfinite_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            # as --seed (model.arguments.seed): numpy refuses a negative seed deep inside the first epoch
            raise ValueError(f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed!r}")
        if not 0.0 <= self.set_carry_over < 1.0:
            raise ValueError(f"set_carry_over must lie in [0, 1), got {self.set_carry_over}")
        pretrained = self.pretrained
        if pretrained not in (None, IMAGENET) and not (
                isinstance(pretrained, str) and Path(pretrained).suffix in PRETRAINED_SUFFIXES
                and Path(pretrained).is_file()):
            raise ValueError(f"model.pretrained {pretrained!r}: expected null, \"imagenet\" or an existing weights "
                             f"file ({', '.join(PRETRAINED_SUFFIXES)})")
        self.model_config()  # a bad model section fails here, before any work

    @property
    def pretrained(self) -> str | None:
        return self.model.get("pretrained")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "training config") -> FitConfig:
        """A config from its JSON form; old key names are read under their new ones (RENAMED)."""
        data = dict(data)
        for old, new in RENAMED.items():
            if old in data:
                if new in data:
                    raise InputError(f"{source}: {old!r} is the old name of {new!r}; give one of them")
                data[new] = data.pop(old)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InputError(f"{source}: unknown training config keys {sorted(unknown)}")
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        try:
            return cls(**data)
        except (ValueError, TypeError) as error:
            raise InputError(f"{source}: {error}") from None

    @classmethod
    def load(cls, path: Path, overrides: list[str]) -> FitConfig:
        """The config in ``path`` with ``--set KEY=VALUE`` overrides applied."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"{path}: cannot read the training config: {error}") from None
        for item in overrides:
            apply_override(data, item)
        return cls.from_dict(data, str(path))

    def model_config(self, trained_on: str = "", held_out: dict[str, Any] | None = None,
                     **provenance: Any) -> ModelConfig:
        """The checkpoint's architecture and input contract: the model section without ``pretrained``. Its card
        (the section's ``card``: the purpose) gets what the run knows: ``trained_on`` after the config's own
        words, and the ``held_out`` figures."""
        architecture = {k: v for k, v in self.model.items() if k != "pretrained"}
        config = ModelConfig.from_dict(architecture)
        words = "; ".join(filter(None, (config.card.trained_on, trained_on)))
        card = dataclasses.replace(config.card, trained_on=words,
                                   held_out=held_out if held_out is not None else config.card.held_out)
        return dataclasses.replace(config, provenance=provenance, card=card)


def apply_override(data: dict[str, Any], item: str) -> None:
    """``KEY=VALUE`` into ``data``: VALUE as JSON (else as a string), dots in KEY for nested sections."""
    key, sep, raw = item.partition("=")
    if not sep:
        raise InputError(f"--set {item}: expected key=value")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    *sections, name = key.split(".")
    target = data
    for section in sections:
        target = target.setdefault(section, {})
    target[name] = value
