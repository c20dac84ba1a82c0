"""fit end to end on tiny phantoms: exact resume, the metrics log, the spacing contract, non-finite steps,
encoder initialisation, small datasets from the command line, and two processes under torchrun."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from model import Predictor
from model.errors import InputError
from model.network import build_network, build_training_network
from phantoms import PhantomSpec, write_dataset
from tests.conftest import ROOT, TINY
from train.__main__ import main as train_main
from train.config import FitConfig
from train.fit import METRICS_FIELDS, TrainModule, fit, log_epoch, training_precision
from train.notices import TrainingWarning
from train.prepare import load_index, prepare

SPEC = PhantomSpec(size=72, spacing=8.0, slices=40, slice_thickness=24.0)
TINY_RUN = {"model": TINY.to_dict(), "epochs": 3, "cosine_epochs": 3, "batch_size": 4, "lr": 1e-3,
            "steps_per_epoch": 3, "workers": 0, "alpha": 1.0, "beta": 1, "val_max_studies": 1, "val_batch_size": 8,
            "weight_decay": 0.01, "dice": "foreground_batch"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    write_dataset(root / "src", 10, seed=5, spec=SPEC, negative_fraction=0.2)
    prepare(root / "src", "tcia", root / "data")
    (root / "tiny.json").write_text(json.dumps(TINY_RUN))
    return root


def _config(**changes) -> FitConfig:
    return FitConfig(**{**TINY_RUN, **changes})


class Killed(Exception):
    """Stands for a kill -9 in the middle of an epoch."""


def _kill_at(step: int):
    def on_step(global_step: int) -> None:
        if global_step == step:
            raise Killed

    return on_step


def _weights(run):
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)["module"]


def test_a_run_killed_mid_epoch_and_resumed_matches_an_uninterrupted_one(store, tmp_path):
    data = store / "data"
    fit(data, 0, _config(), tmp_path / "straight", device="cpu")
    with pytest.raises(Killed):
        fit(data, 0, _config(), tmp_path / "killed", device="cpu", on_step=_kill_at(5))  # mid epoch 1
    assert torch.load(tmp_path / "killed/last.pt", weights_only=True)["epoch"] == 0
    fit(data, 0, _config(), tmp_path / "killed", resume=True, device="cpu")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with open(tmp_path / "killed/metrics.csv", newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1", "2"]

    # The exported best checkpoint is a deployment: process.py's predictor loads it as it is.
    predictor = Predictor.from_path(tmp_path / "straight/best", device="cpu")
    provenance = predictor.config.provenance
    assert provenance["fold"] == 0 and "dice" in provenance["metrics"] and provenance["pretrained"] is None
    # Its card says what it was trained on and its figures on the studies it was not trained on (issue 24).
    card = predictor.config.card
    assert card.purpose == "unstated" and "studies of the store data (fold 0's training studies)" in card.trained_on
    assert "validation studies of the store data" in card.held_out["data"] and "dice" in card.held_out
    assert list((tmp_path / "straight/tensorboard").iterdir())
    saved = json.loads((tmp_path / "straight/config.json").read_text())
    assert saved["batch_size"] == 4 and saved["model"]["encoder"] == "regnety_002"


def test_the_training_log_names_losses_as_losses_and_metrics_as_metrics(store, tmp_path, capsys):
    """Issue 24: ``dice 0.994`` (a loss term) printed beside ``val_dice 0.00101`` read as a Dice."""
    fit(store / "data", 0, _config(epochs=1), tmp_path / "run", device="cpu", progress=False)
    logged = capsys.readouterr().out.splitlines()[-1]
    names = [item.split(" ")[0] for item in logged.split(", ")]
    assert {"loss", "loss_dice", "loss_lovasz", "loss_bce", "s_loss_dice", "val_dice", "val_fpv_ml"} <= set(names)
    assert not {"dice", "lovasz", "bce", "s_dice"} & set(names)
    with open(tmp_path / "run/metrics.csv", newline="") as handle:
        header = csv.DictReader(handle).fieldnames
    assert "loss_dice" in header and "dice" not in header and "val_dice" in header
    # A run logged before the rename, resumed now: its rows keep their values under the new names.
    old_header = [{"loss_dice": "dice", "loss_lovasz": "lovasz", "loss_bce": "bce", "s_loss_dice": "s_dice",
                   "s_loss_lovasz": "s_lovasz", "s_loss_bce": "s_bce"}.get(name, name) for name in header]
    with open(tmp_path / "run/metrics.csv", "w", newline="") as handle:
        handle.write(",".join(old_header) + "\n" + ",".join(["0", "3", "1.5", "0.01", "2.5", "0.994", "0.8", "0.2",
                                                            "1.1", "1.2", "1.3", "0"] + [""] * 5) + "\n")
    log_epoch(tmp_path / "run", _Writer(), {"epoch": 1, "loss": 2.0, "loss_dice": 0.9})
    with open(tmp_path / "run/metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["loss_dice"] == "0.994" and rows[0]["s_loss_bce"] == "1.3" and rows[1]["loss_dice"] == "0.9"


class _Writer:
    def add_scalar(self, *args) -> None:
        pass


def test_metrics_csv_has_a_fixed_header_and_the_last_epoch_is_always_validated(store, tmp_path):
    best = fit(store / "data", 0, _config(val_every=2), tmp_path / "run", device="cpu")
    with open(tmp_path / "run/metrics.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames) == METRICS_FIELDS
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["val_dice"] == "" and all(not math.isnan(float(r["val_fpv_ml"])) for r in rows[1:])
    assert float(rows[2]["loss"]) > 0 and rows[2]["nonfinite_steps"] == "0"
    assert best["epoch"] in (1, 2)

    # val_every beyond the run: the last epoch is validated and exported.
    best = fit(store / "data", 0, _config(epochs=2, val_every=5), tmp_path / "late", device="cpu")
    assert best["epoch"] == 1
    assert Predictor.from_path(tmp_path / "late/best", device="cpu").config.provenance["epoch"] == 1


def test_overrides_reach_the_saved_config_and_bad_keys_are_one_line(store, tmp_path, capsys):
    args = ["fit", "--data", str(store / "data"), "--config", str(store / "tiny.json"), "--device", "cpu"]
    assert train_main([*args, "--out", str(tmp_path / "run"), "--set", "epochs=1", "--set", "model.threshold=0.4"]) == 0
    saved = json.loads((tmp_path / "run/config.json").read_text())
    assert saved["epochs"] == 1 and saved["model"]["threshold"] == 0.4 and saved["augment"] == "seed"
    assert train_main([*args, "--out", str(tmp_path / "bad"), "--set", "epochz=1"]) == 2
    assert "unknown training config keys ['epochz']" in capsys.readouterr().err
    assert train_main([*args, "--out", str(tmp_path / "bad"), "--set", "augment=heavy"]) == 2
    assert "augment must be one of" in capsys.readouterr().err


def test_old_configs_load_and_keep_their_meaning():
    assert FitConfig(**{**TINY_RUN, "augment": True}).augment == "light"
    assert FitConfig(**{**TINY_RUN, "augment": False}).augment is False
    assert "pretrained" not in FitConfig(**TINY_RUN).model_config().to_dict()


def test_precision_is_the_configs_when_given():
    cpu = torch.device("cpu")
    assert training_precision(cpu, "fp32") == (torch.float32, False)
    assert training_precision(cpu, "bf16") == (torch.bfloat16, False)
    assert training_precision(cpu, "auto")[0] in (torch.float32, torch.bfloat16)
    with pytest.raises(InputError, match="fp16 trains on CUDA only"):
        training_precision(cpu, "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        FitConfig(**{**TINY_RUN, "precision": "fp8"})


def test_a_store_at_another_spacing_is_refused(store, tmp_path):
    config = _config(model={**TINY.to_dict(), "spacing_mm": [6.0, 6.0]})
    with pytest.raises(InputError, match=r"more than 10% off the config's model.spacing_mm \[6.0, 6.0\]; prepare "
                                         r"the store with --spacing 6.0 6.0"):
        fit(store / "data", 0, config, tmp_path / "run", device="cpu")
    config = _config(model={**TINY.to_dict(), "spacing_mm": [8.6, 8.6]}, epochs=1)  # within inference's 10 %
    fit(store / "data", 0, config, tmp_path / "near", device="cpu")


def _nan_loss_at(monkeypatch, steps: set[int] | None):
    original, calls = TrainModule.forward, []

    def forward(self, image, mask):
        loss, terms = original(self, image, mask)
        calls.append(1)
        return (loss * float("nan"), terms) if steps is None or len(calls) in steps else (loss, terms)

    monkeypatch.setattr(TrainModule, "forward", forward)


def test_a_non_finite_loss_skips_its_step_with_a_warning(store, tmp_path, monkeypatch):
    _nan_loss_at(monkeypatch, {2})
    with pytest.warns(TrainingWarning, match=r"epoch 0: 1 of 3 steps skipped with a non-finite loss"):
        fit(store / "data", 0, _config(epochs=1), tmp_path / "run", device="cpu")
    with open(tmp_path / "run/metrics.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["nonfinite_steps"] == "1" and math.isfinite(float(row["loss"]))
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path / "run").values() if v.is_floating_point())


def test_too_many_non_finite_steps_stop_the_run_with_one_line(store, tmp_path, monkeypatch):
    _nan_loss_at(monkeypatch, None)
    with pytest.raises(InputError, match=r"3 training steps had a non-finite loss, more than max_nonfinite_steps = 2"):
        fit(store / "data", 0, _config(max_nonfinite_steps=2), tmp_path / "run", device="cpu")


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    """A local weights file of the timm encoder, as a machine without internet would be given."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(7)
    source = timm.create_model("regnety_002").state_dict()
    path = tmp_path_factory.mktemp("encoder") / "regnety_002.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, str(path))
    return path, source


def test_a_local_encoder_file_lands_in_the_network_with_timms_stem_rule(encoder_file):
    path, source = encoder_file
    encoder = build_training_network(TINY, str(path)).encoder.model.state_dict()
    assert set(encoder) <= set(source)
    # timm's adapt_input_conv for 2 input channels: the first two of the three, scaled by 3/2.
    assert torch.allclose(encoder["stem.conv.weight"], source["stem.conv.weight"][:, :2] * 1.5)
    assert all(torch.equal(encoder[k], source[k]) for k in encoder if k != "stem.conv.weight")
    random = build_network(TINY).encoder.model.state_dict()
    assert not torch.equal(random["s1.b1.conv1.conv.weight"], source["s1.b1.conv1.conv.weight"])


def test_pretrained_is_training_only_and_recorded(store, tmp_path, encoder_file):
    path, _ = encoder_file
    config = _config(model={**TINY.to_dict(), "pretrained": str(path)}, epochs=1)
    fit(store / "data", 0, config, tmp_path / "run", device="cpu")
    document = json.loads((tmp_path / "run/best/model.json").read_text())
    assert "pretrained" not in document["model"]
    assert document["model"]["provenance"]["pretrained"] == str(path.resolve())
    assert len(document["model"]["provenance"]["pretrained_sha256"]) == 64


def test_a_fit_fine_tunes_a_checkpoint_and_records_which(store, tmp_path):
    """model.pretrained = a checkpoint in the weights format (here the demo configuration's shape on the test
    grid): the run starts from its weights and its provenance names the file and its hash."""
    from model.checkpoint import read_config, save_checkpoint

    torch.manual_seed(5)
    start = save_checkpoint(build_network(TINY), TINY, tmp_path / "start" / "model")
    config = _config(model={**TINY.to_dict(), "pretrained": str(start)}, epochs=1)
    fit(store / "data", 0, config, tmp_path / "run", device="cpu")
    provenance = json.loads((tmp_path / "run/best/model.json").read_text())["model"]["provenance"]
    assert provenance["pretrained"] == str(start.resolve())
    assert provenance["pretrained_sha256"] == read_config(start.with_suffix(".json"))[1]


def test_a_weights_file_of_another_encoder_is_one_line(tmp_path, encoder_file):
    path, _ = encoder_file
    other = TINY.__class__.from_dict({**TINY.to_dict(), "encoder": "regnety_004"})
    with pytest.raises(InputError, match=r"model.pretrained is not a weights file of the timm encoder regnety_004"):
        build_training_network(other, str(path))
    with pytest.raises(ValueError, match=r"model\.pretrained 'missing\.safetensors'"):
        _config(model={**TINY.to_dict(), "pretrained": "missing.safetensors"})


def test_imagenet_offline_fails_at_once_naming_the_setting(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match=r"^model.pretrained \"imagenet\": cannot fetch .*--set model.pretrained="):
        build_training_network(TINY, "imagenet")
    # Online mode with the hub unreachable: one short probe instead of the client's minute of retries.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(InputError, match=r"^model.pretrained \"imagenet\": cannot fetch"):
        build_training_network(TINY, "imagenet")


def test_six_phantom_studies_synth_prepare_fit_from_the_command_line(tmp_path):
    """The README's smallest run; one study has PET slices beyond its CT (air in CTres)."""
    small = ["--size", "64", "--spacing", "8", "--slices", "30", "--thickness", "24"]
    assert train_main(["synth", "--out", str(tmp_path / "src"), "--cases", "6", "--seed", "3", *small]) == 0
    ctres = sorted((tmp_path / "src").rglob("CTres.nii.gz"))[0]
    ct = sitk.ReadImage(str(ctres))
    air = sitk.GetArrayFromImage(ct)
    air[-4:] = -1024
    beyond = sitk.GetImageFromArray(air)
    beyond.CopyInformation(ct)
    sitk.WriteImage(beyond, str(ctres))
    assert train_main(["prepare", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "data")]) == 0
    config = {**TINY_RUN, "model": {**TINY.to_dict(), "normalisation": {"scheme": "zscore_per_slice"}},
              "steps_per_epoch": None, "alpha": 3.0}
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    with pytest.warns(TrainingWarning, match="fewer patients than folds"):
        code = train_main(["fit", "--data", str(tmp_path / "data"), "--config", str(tmp_path / "tiny.json"),
                           "--out", str(tmp_path / "run"), "--device", "cpu", "--set", "epochs=1"])
    assert code == 0
    with open(tmp_path / "run/metrics.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert int(row["steps"]) > 5 and row["nonfinite_steps"] == "0" and np.isfinite(float(row["loss"]))
    assert (tmp_path / "run/best/model.safetensors").is_file()


def test_two_processes_under_torchrun(store, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "train",
               "fit", "--data", str(store / "data"), "--fold", "0", "--config", str(store / "tiny.json"),
               "--out", str(tmp_path / "ddp"), "--device", "cpu", "--set", "epochs=2"]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ddp/best/model.safetensors").is_file()
    assert torch.load(tmp_path / "ddp/last.pt", weights_only=True)["epoch"] == 1


def test_steps_per_epoch_is_exact_and_cycles_short_epochs():
    from train.fit import _cycle

    assert list(_cycle([1, 2], 5)) == [1, 2, 1, 2, 1]
    assert list(_cycle([1, 2, 3], 2)) == [1, 2]
    assert list(_cycle([], 3)) == []


def test_paper_json_names_the_seeds_imagenet_weights_in_the_installed_timm():
    """smp 0.2.1's timm-regnety_160 'imagenet' was timm's regnety_160-d64013cd.pth (the pycls ImageNet-1k
    weights), tagged regnety_160.pycls_in1k today; the untagged name takes timm's default, other weights."""
    import timm

    config = FitConfig.load(ROOT / "train/configs/paper.json", [])
    encoder = config.model_config().encoder
    assert encoder == "regnety_160.pycls_in1k" and config.pretrained == "imagenet"
    chosen = timm.models.get_pretrained_cfg(encoder)
    assert (chosen.tag, chosen.hf_hub_id, chosen.origin_url) == (
        "pycls_in1k", "timm/regnety_160.pycls_in1k", "https://github.com/facebookresearch/pycls")
    assert timm.models.get_pretrained_cfg("regnety_160").tag != "pycls_in1k"
    assert config.model_config().normalisation.scheme == "seed" and config.dice == "two_class_per_sample"
    assert config.weight_decay == 0.0 and config.augment == "seed" and config.beta == 5 and config.lr_min == 1e-8


def test_paper_json_fits_two_epochs_on_phantoms_with_a_tiny_encoder_from_a_local_file(store, tmp_path, encoder_file):
    """paper.json's settings (two-output head, fp32, the global batch, the seed's set size, seed normalisation)
    with a tiny encoder: every epoch writes the loss terms and both validation measures, the official ones of
    the deployment pipeline and the seed authors' crop Dice; the best checkpoint has the two-output head."""
    path, _ = encoder_file
    tiny = ["model.encoder=regnety_002", f"model.pretrained={path}", "model.decoder_channels=[32,16,16,8,8]",
            "model.crop_size=64", "model.spacing_mm=[8.0,8.0]", "epochs=2", "batch_size=4", "steps_per_epoch=2",
            "workers=0", "val_max_studies=2", "val_batch_size=8"]
    args = ["fit", "--data", str(store / "data"), "--config", str(ROOT / "train/configs/paper.json"),
            "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert train_main([*args, *(item for key in tiny for item in ("--set", key))]) == 0
    saved = json.loads((tmp_path / "run/config.json").read_text())
    assert saved["precision"] == "fp32" and saved["set_size"] == "seed" and saved["batch_size"] == 4
    document = json.loads((tmp_path / "run/best/model.json").read_text())
    assert document["model"]["normalisation"]["scheme"] == "seed"
    assert document["model"]["head"] == "two_class_softmax"
    assert document["model"]["provenance"]["pretrained"] == str(path.resolve())
    assert document["model"]["card"]["purpose"] == "research"  # paper.json's card
    with open(tmp_path / "run/metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    for row in rows:
        assert row["nonfinite_steps"] == "0" and np.isfinite(float(row["loss"])) and 0 <= float(row["loss_dice"]) <= 1
        assert 0 <= float(row["val_dice"]) <= 1 and float(row["val_fpv_ml"]) >= 0 and float(row["val_fnv_ml"]) >= 0
        assert 0 < float(row["val_seed_crop_dice"]) <= 2 and row["val_cases"] == "2"
    predictor = Predictor.from_path(tmp_path / "run/best/model.safetensors", device="cpu")
    assert predictor.heads == ("two_class_softmax",)
    mask = predictor.predict_volume(
        *(np.load(store / "data/studies" / json.loads((store / "data/index.json").read_text())[0]["study"]
                  / f"{name}.npy").astype(np.float32) for name in ("pet", "ct")))
    assert set(np.unique(mask).tolist()) <= {0, 1}


def test_validation_runs_the_deployment_pipeline_on_the_source_studies(store, tmp_path, monkeypatch):
    """fit's validation reads each study's source files and runs runner.pipeline.run_case (what process.py
    runs), scoring on the PET's grid: its official metrics equal those of the pipeline's own mask."""
    import train.validation as validation
    from model.metrics import aggregate, case_metrics
    from runner.pipeline import run_case

    calls = []
    monkeypatch.setattr(validation, "run_case", lambda *args, **kwargs: calls.append(args[:2]) or run_case(*args,
                                                                                                          **kwargs))
    best = fit(store / "data", 0, _config(epochs=1, val_max_studies=2), tmp_path / "run", device="cpu")
    index = {row["study"]: row for row in load_index(store / "data")}
    validated = json.loads((store / "data/splits.json").read_text())["folds"][0]["val"]
    sources = [index[s]["source"] for s in validated if index[s]["lesion_slices"]][:2]
    assert [tuple(str(p) for p in call) for call in calls] == [(s["pet"], s["ct"]) for s in sources]
    predictor = Predictor.from_path(tmp_path / "run/best", device="cpu")
    cases = []
    for source in sources:
        result = run_case(Path(source["pet"]), Path(source["ct"]), None, predictor, progress=False)
        truth = sitk.GetArrayFromImage(sitk.ReadImage(source["mask"]))
        cases.append(case_metrics(result.mask_array, truth, result.spacing))
    expected = aggregate(cases)
    assert best["dice"] == pytest.approx(expected["dice"]) and best["fpv_ml"] == pytest.approx(expected["fpv_ml"])


def test_the_config_batch_is_the_global_batch_whatever_the_number_of_ranks():
    from train.fit import Distributed, rank_batch_size

    paper = FitConfig()
    assert paper.batch_size == 24
    assert [rank_batch_size(paper, Distributed(0, world, 0)) for world in (1, 2, 4)] == [24, 12, 6]
    with pytest.raises(InputError, match="global batch: it must divide by the 5 ranks"):
        rank_batch_size(paper, Distributed(0, 5, 0))


def test_a_store_cut_to_the_body_box_is_refused_with_one_line(store, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(store / "data", data)
    rows = load_index(data)
    (data / "index.json").write_text(json.dumps([{k: v for k, v in row.items() if k != "store_format"}
                                                 for row in rows]))
    with pytest.raises(InputError) as error:
        fit(data, 0, _config(epochs=1), tmp_path / "run", device="cpu")
    assert "cut to its body's box" in str(error.value) and "\n" not in str(error.value)


def test_a_fold_whose_validation_studies_are_all_negative_validates_on_fpv_and_exports_best(store, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(store / "data", data)
    index = load_index(data)
    negatives = [row["study"] for row in index if not row["lesion_slices"]]
    positives = [row["study"] for row in index if row["lesion_slices"]]
    assert negatives and positives
    (data / "splits.json").write_text(json.dumps({"seed": 0, "folds": [{"train": positives, "val": negatives}]}))
    with pytest.warns(TrainingWarning, match="validation studies are all negative"):
        best = fit(data, 0, _config(epochs=2, val_max_studies=0), tmp_path / "run", device="cpu")
    assert best is not None and math.isnan(best["dice"]) and best["fpv_ml"] >= 0
    with open(tmp_path / "run/metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(row["val_fpv_ml"] != "" for row in rows)
    assert Predictor.from_path(tmp_path / "run/best", device="cpu").config.provenance["epoch"] in (0, 1)
