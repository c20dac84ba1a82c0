"""fit end to end on tiny phantoms: resume after a kill is exact, and two processes under torchrun."""

import json
import os
import subprocess
import sys

import pytest
import torch

from model import Predictor
from tests.conftest import ROOT, TINY
from train.fit import KILL_AT_STEP_ENV
from train.phantom import PhantomSpec, write_dataset
from train.prepare import prepare

SPEC = PhantomSpec(size=72, spacing=8.0, slices=40, slice_thickness=24.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    write_dataset(root / "src", 10, seed=5, layout="tcia", spec=SPEC, negative_fraction=0.2)
    prepare(root / "src", "tcia", root / "data")
    config = {"model": TINY.to_dict(), "epochs": 3, "cosine_epochs": 3, "batch_size": 4, "lr": 1e-3,
              "steps_per_epoch": 3, "workers": 0, "alpha": 1.0, "beta": 1, "val_max_studies": 1,
              "val_batch_size": 8}
    (root / "tiny.json").write_text(json.dumps(config))
    return root


def _fit(store, out, *extra, env=None, torchrun=False):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun \
        else [sys.executable]
    command = [*launcher, "-m", "train", "fit", "--data", str(store / "data"), "--fold", "0", "--config",
               str(store / "tiny.json"), "--out", str(out), "--device", "cpu", *extra]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600)


def _weights(run):
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)["module"]


def test_a_run_killed_mid_epoch_and_resumed_matches_an_uninterrupted_one(store, tmp_path):
    straight = _fit(store, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = _fit(store, tmp_path / "killed", env={KILL_AT_STEP_ENV: "5"})  # mid epoch 1
    assert killed.returncode == 137
    assert torch.load(tmp_path / "killed/last.pt", weights_only=True)["epoch"] == 0
    resumed = _fit(store, tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # The exported best checkpoint is a deployment: process.py's predictor loads it as it is.
    predictor = Predictor.from_path(tmp_path / "straight/best", device="cpu")
    provenance = predictor.config.provenance
    assert provenance["fold"] == 0 and "dice" in provenance["metrics"]
    assert (tmp_path / "straight/metrics.csv").read_text().count("\n") == 4
    assert list((tmp_path / "straight/tensorboard").iterdir())
    saved = json.loads((tmp_path / "straight/config.json").read_text())
    assert saved["batch_size"] == 4 and saved["model"]["encoder"] == "regnety_002"


def test_overrides_reach_the_saved_config(store, tmp_path):
    result = _fit(store, tmp_path / "run", "--set", "epochs=1", "--set", "model.threshold=0.4")
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "run/config.json").read_text())
    assert saved["epochs"] == 1 and saved["model"]["threshold"] == 0.4
    bad = _fit(store, tmp_path / "bad", "--set", "epochz=1")
    assert bad.returncode == 2 and "unknown training config keys ['epochz']" in bad.stderr


def test_two_processes_under_torchrun(store, tmp_path):
    result = _fit(store, tmp_path / "ddp", "--set", "epochs=2", torchrun=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ddp/best/model.safetensors").is_file()
    assert torch.load(tmp_path / "ddp/last.pt", weights_only=True)["epoch"] == 1


def test_steps_per_epoch_is_exact_and_cycles_short_epochs():
    from train.fit import _cycle

    assert list(_cycle([1, 2], 5)) == [1, 2, 1, 2, 1]
    assert list(_cycle([1, 2, 3], 2)) == [1, 2]
    assert list(_cycle([], 3)) == []
