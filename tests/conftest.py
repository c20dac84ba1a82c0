"""Shared fixtures: tiny encoders, small phantoms made by the phantoms package, and an oracle network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from model import ModelConfig, build_network, save_checkpoint
from model.checkpoint import Checkpoint
from model.inference import Predictor
from model.metrics import dice  # noqa: F401  (tests import it from here)
from model.preprocessing import NormalisationConfig
from phantoms import PhantomSpec, make_phantom

ROOT = Path(__file__).resolve().parents[1]
# In CI (.ci/run, CI=true) the system tools that check our output are installed by .ci/install-tools.sh: a
# test that needs one never skips there, so that a missing install step fails instead of passing unseen.
IN_CI = os.environ.get("CI") == "true"


def needs_tool(found: object, what: str) -> pytest.MarkDecorator:
    """Skip where ``found`` is None (a tool missing on a developer's machine), never in CI."""
    return pytest.mark.skipif(found is None and not IN_CI, reason=f"{what} is not installed (.ci/install-tools.sh)")

TINY = ModelConfig(encoder="regnety_002", decoder_channels=(32, 16, 16, 8, 8), crop_size=64, spacing_mm=(8.0, 8.0))
SMALL_SPEC = PhantomSpec(size=72, spacing=8.0, slices=40, slice_thickness=24.0)
ORACLE_SUV = 3.0


class OracleNetwork(torch.nn.Module):
    """Lesion logit = 40 x (normalised SUV - threshold): the right answer is SUV > ORACLE_SUV everywhere.

    With it, every geometric step (crop, tiles, paste-back, resampling) can be checked exactly.
    """

    def __init__(self, norm: NormalisationConfig):
        super().__init__()
        self.cut = ORACLE_SUV / norm.pet_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40.0 * (x[:, :1] - self.cut)


def oracle_predictor(config: ModelConfig = TINY, **kwargs) -> Predictor:
    member = Checkpoint(config=config, network=OracleNetwork(config.normalisation), path=Path("oracle"))
    return Predictor.from_checkpoints([member], device="cpu", precision="fp32", **kwargs)


@pytest.fixture(scope="session", autouse=True)
def runtime_cache(tmp_path_factory):
    """OpenVINO's converted networks (model.openvino_backend) go to the session's own cache, never the user's;
    subprocesses (process.py) inherit it."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("runtime-cache")
        patch.setenv("AUTOPET_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    stem = tmp_path_factory.mktemp("weights") / "tiny"
    return save_checkpoint(build_network(TINY), TINY, stem)


@pytest.fixture(scope="session")
def small_phantom():
    return make_phantom(3, positive=True, spec=SMALL_SPEC)


def write_case(folder: Path, pet: sitk.Image, ct: sitk.Image, stem: str = "case0") -> tuple[Path, Path]:
    (folder / "images" / "pet").mkdir(parents=True, exist_ok=True)
    (folder / "images" / "ct").mkdir(parents=True, exist_ok=True)
    pet_path = folder / "images" / "pet" / f"{stem}_pet.mha"
    ct_path = folder / "images" / "ct" / f"{stem}.mha"
    sitk.WriteImage(pet, str(pet_path))
    sitk.WriteImage(ct, str(ct_path))
    return pet_path, ct_path

