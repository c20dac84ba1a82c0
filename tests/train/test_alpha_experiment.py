"""The alpha experiment at a tiny size: two runs print the same numbers, whatever the number of processes;
its budgets, loss measure, post-processing ablation and stale phantoms."""

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

import process
from model.errors import InputError
from results.outputs import OutputLayout
from train import alpha_experiment
from train.alpha_experiment import Arm, loss_change_last_fifth, main, make_arms, make_phantoms, parse_args

TINY_CONFIG = {"model": {"encoder": "regnety_002", "decoder_channels": [16, 8, 8, 8, 8], "crop_size": 32,
                         "spacing_mm": [8.0, 8.0]},
               "batch_size": 4, "lr": 1e-3, "workers": 0, "beta": 1, "val_max_studies": 1, "val_batch_size": 8,
               "augment": "seed", "weight_decay": 0.01, "dice": "foreground_batch"}
# Training phantoms seed 4: four of six have lesions (seed 1, the default, has one).
TINY = ["--train-cases", "6", "--heldout-cases", "3", "--phantom-seeds", "4", "99", "--size", "48", "--spacing", "8",
        "--slices", "24", "--thickness", "12", "--seeds", "0", "--epochs", "2", "--steps", "2", "--budgets", "steps",
        "--min-lesion-ml", "0", "0.8", "--threads", "1"]


def _run(argv: list[str]) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("alpha")
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    first = _run(["--work", str(root / "a"), "--config", str(config), *TINY, "--jobs", "1"])
    second = _run(["--work", str(root / "b"), "--config", str(config), *TINY, "--jobs", "2", "--check-determinism"])
    return root, first, second


def test_two_runs_print_the_same_numbers_in_one_process_or_two(two_runs):
    root, first, second = two_runs
    *table, determinism = second.rstrip("\n").split("\n")
    assert first.rstrip("\n").split("\n") == table
    assert determinism.endswith("weights are bit-identical")
    a = json.loads((root / "a/results.json").read_text())
    b = json.loads((root / "b/results.json").read_text())
    assert b.pop("deterministic") is True and a == b
    assert set(a["arms"]) == {"steps-alpha1-min0ml", "steps-alpha0-min0ml", "steps-alpha1-min0.8ml",
                              "steps-alpha0-min0.8ml"}
    assert {"steps-min0ml", "steps-min0.8ml"} == set(a["paired"])
    assert a["machine"]["training_precision"] == "float32" or a["machine"]["cpu_bf16"] == "True"
    # Every run exported its last epoch (validated only then) and was trained with the steps asked for.
    for arm in a["arms"].values():
        (run,) = arm["runs"]
        provenance = json.loads((root / "a/runs" / run["run"] / "best/model.json").read_text())["model"]["provenance"]
        assert provenance["epoch"] == 1
        assert run["mean"]["cases"] == 3
    assert "| steps | 1 | 2 |" in first and "| steps | 0 | 2 |" in first


def test_the_ablation_masks_are_process_pys_own(two_runs, tmp_path):
    root = two_runs[0]
    run = next((root / "a/runs").iterdir())
    assert process.main(["--input", str(root / "a/heldout"), "--output", str(tmp_path), "--weights",
                         str(run / "best"), "--device", "cpu", "--min-lesion-ml", "0.8", "--backend", "torch"]) == 0
    produced = sorted(OutputLayout(tmp_path).masks.glob("*.mha"))
    assert len(produced) == 3
    for path in produced:
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(run / "heldout-min0.8ml" / path.name)))
        assert np.array_equal(ours, sitk.GetArrayFromImage(sitk.ReadImage(str(path))))


def test_phantoms_made_otherwise_are_refused(two_runs, monkeypatch, tmp_path):
    root = two_runs[0]
    args = parse_args(["--work", str(root / "a"), *TINY, "--size", "40"])
    with pytest.raises(InputError, match="other size"):
        make_phantoms(root / "a", args)
    changed = tmp_path / "phantoms"  # the generator's package with one module changed
    shutil.copytree(alpha_experiment.PHANTOM_CODE, changed, ignore=shutil.ignore_patterns("__pycache__"))
    (changed / "lesions.py").write_text((changed / "lesions.py").read_text() + "# another generator\n")
    monkeypatch.setattr(alpha_experiment, "PHANTOM_CODE", changed)
    with pytest.raises(InputError, match="other generator_sha256"):
        make_phantoms(root / "a", parse_args(["--work", str(root / "a"), *TINY]))


def test_the_lesion_budget_gives_every_alpha_the_lesion_slices_of_the_largest():
    arms = make_arms(["steps", "lesion"], [1.0, 0.5, 0.0], 25, {1.0: 0.4, 0.5: 0.6, 0.0: 1.0})
    assert arms == [Arm("steps", 1.0, 25, 0.4), Arm("steps", 0.5, 25, 0.6), Arm("steps", 0.0, 25, 1.0),
                    Arm("lesion", 1.0, 25, 0.4), Arm("lesion", 0.5, 17, 0.6), Arm("lesion", 0.0, 10, 1.0)]


def test_loss_change_is_measured_on_the_unweighted_terms(tmp_path):
    rows = ["epoch,loss,dice,lovasz,bce"]
    # The weighted total keeps falling (learned weights), the terms are flat over the last two fifths.
    terms = [3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    rows += [f"{k},{-k},{t},{t},{t}" for k, t in enumerate(terms)]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    assert loss_change_last_fifth(tmp_path / "metrics.csv") == 0.0
    terms[-2:] = [0.5, 0.5]
    rows = ["epoch,loss,dice,lovasz,bce"] + [f"{k},{-k},{t},{t},{t}" for k, t in enumerate(terms)]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    assert loss_change_last_fifth(tmp_path / "metrics.csv") == pytest.approx(-0.5)
    # A log of today's names (issue 24: loss terms named as losses) reads the same.
    rows = ["epoch,loss,loss_dice,loss_lovasz,loss_bce"] + [f"{k},{-k},{t},{t},{t}" for k, t in enumerate(terms)]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    assert loss_change_last_fifth(tmp_path / "metrics.csv") == pytest.approx(-0.5)
