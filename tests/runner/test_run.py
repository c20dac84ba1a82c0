"""runner.run: one run, whoever starts it (issue 25 item 2). From Python it writes what process.py writes
(masks, reports, results.json, the review page), checks everything before any study runs, and splits parts
as the command line does."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import process
from model.errors import InputError
from model.inference import InferenceConfig, Predictor
from runner.run import RunNotStarted, RunSettings, run
from studies.cases import InputRequest
from tests.conftest import ROOT, write_case

MASKS = "images/automated-petct-lesion-segmentation"


@pytest.fixture()
def two_studies(tmp_path, small_phantom) -> Path:
    pet, ct, _ = small_phantom.images()
    for stem in ("a", "b"):
        write_case(tmp_path / "input", pet, ct, stem)
    return tmp_path / "input"


def _files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def _without_times(entries: list[dict]) -> list[dict]:
    """results.json's entries less what changes from one run to the next (the page's seconds)."""
    return [{key: value for key, value in entry.items() if key != "seconds"} for entry in entries]


def _settings(inputs: Path, output: Path, weights: Path, **fields) -> RunSettings:
    return RunSettings(request=InputRequest(input=inputs), output=output, weights=weights,
                       inference=InferenceConfig(device="cpu"), **fields)


@pytest.mark.parametrize("reports", [True, False], ids=["reports", "--no-report"])
def test_a_run_from_python_writes_what_the_command_line_writes(tmp_path, two_studies, tiny_weights, reports):
    argv = ["--input", str(two_studies), "--output", str(tmp_path / "cli"), "--weights", str(tiny_weights),
            "--device", "cpu", *(() if reports else ("--no-report",))]
    assert process.main(argv) == 0
    outcome = run(_settings(two_studies, tmp_path / "api", tiny_weights, reports=reports))
    assert not outcome.failed and outcome.results == tmp_path / "api" / "results.json"
    assert _files(tmp_path / "api") == _files(tmp_path / "cli")
    assert ("index.html" in _files(tmp_path / "api")) == reports
    assert any(name.endswith(".lesions.csv") for name in _files(tmp_path / "api")) == reports
    written = json.loads(outcome.results.read_text())
    assert outcome.entries == written
    assert _without_times(written) == _without_times(json.loads((tmp_path / "cli/results.json").read_text()))
    for name in ("a.mha", "b.mha"):
        cli, api = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / side / MASKS / name)))
                    for side in ("cli", "api"))
        assert np.array_equal(cli, api)


def test_the_parts_of_a_run_from_python_are_the_command_lines(tmp_path, two_studies, tiny_weights):
    for part in (0, 1):
        outcome = run(_settings(two_studies, tmp_path / "out", tiny_weights, reports=False, num_parts=2,
                                part_id=part))
        assert outcome.results.name == f"results.part-{part}-of-2.json"
        (entry,) = outcome.entries
        assert entry["outputs"][0]["filename"] == ("a.mha", "b.mha")[part]
    assert sorted(path.name for path in (tmp_path / "out" / MASKS).iterdir()) == ["a.mha", "b.mha"]


@pytest.mark.parametrize("breakage, needle", [
    ("weights missing", "none.safetensors: weights not found"),
    ("input missing", "input folder missing"),
    ("output a file", "output"),
    ("a part that does not exist", "part"),
])
def test_a_run_that_cannot_start_writes_nothing(tmp_path, two_studies, tiny_weights, breakage, needle):
    output, weights, inputs, fields = tmp_path / "out", tiny_weights, two_studies, {}
    if breakage == "weights missing":
        weights = tmp_path / "none.safetensors"
    elif breakage == "input missing":
        inputs = tmp_path / "nowhere"
    elif breakage == "output a file":
        output.write_text("not a folder")
    else:
        fields = {"num_parts": 2, "part_id": 2}
    with pytest.raises(RunNotStarted, match=needle) as caught:
        run(_settings(inputs, output, weights, **fields))
    assert "\n" not in str(caught.value)
    assert not output.is_dir() or _files(output) == []


def test_a_predictor_given_runs_only_with_the_runs_settings(tmp_path, two_studies, tiny_weights):
    # bench/ keeps one warm predictor across runs; one loaded with other settings would make other masks than
    # the run's settings say.
    predictor = Predictor.from_path(tiny_weights, InferenceConfig(device="cpu"))
    outcome = run(_settings(two_studies, tmp_path / "same", tiny_weights, reports=False), predictor)
    assert [entry["outputs"][0]["filename"] for entry in outcome.entries] == ["a.mha", "b.mha"]
    other = RunSettings(request=InputRequest(input=two_studies), output=tmp_path / "other", weights=tiny_weights,
                        inference=InferenceConfig(device="cpu", tta=True), reports=False)
    with pytest.raises(RunNotStarted, match="other settings"):
        run(other, predictor)


def test_grand_challenge_mode_writes_no_reports():
    with pytest.raises(InputError, match="local mode only"):
        RunSettings(request=InputRequest(input=Path("/input"), grand_challenge=True), output=Path("/output"),
                    weights=Path("weights"))


# The modules a run goes back to, and why (the README's "Where things live"): process.py checks the parts
# against each other before PyTorch is imported and runner.run applies them once the studies are counted;
# every console line names its path (model.errors.shown); the output folder is checked before the weights
# load, what the outputs record of the model needs it loaded, results.json comes after the studies; the
# review page is made before the cohort and written after results.json; a Ctrl-C is honoured before
# results.json and after it.
RETURNS = {"runner.distributed": 1, "model.errors": 1, "results.outputs": 2, "results.review_page": 1,
           "runner.interrupts": 1}


def test_a_run_visits_each_module_once_where_it_can(tmp_path, two_studies, tiny_weights):
    """The modules process.py and runner.run call, in order: a stay is one or more calls into one module; a
    return is a stay in a module the run had left."""
    orchestrators = {str(ROOT / "process.py"), str(ROOT / "runner" / "run.py")}
    stays: list[str] = []

    def profile(frame, event, arg):
        caller = frame.f_back.f_code.co_filename if frame.f_back is not None else None
        callee = frame.f_code.co_filename
        if event == "call" and caller in orchestrators and callee != caller and callee.startswith(str(ROOT)):
            module = ".".join(Path(callee).relative_to(ROOT).with_suffix("").parts)
            if not stays or stays[-1] != module:
                stays.append(module)

    sys.setprofile(profile)
    try:
        code = process.main(["--input", str(two_studies), "--output", str(tmp_path / "out"), "--weights",
                             str(tiny_weights), "--device", "cpu"])
    finally:
        sys.setprofile(None)
    assert code == 0
    returns: dict[str, int] = {}
    for i, module in enumerate(stays):
        if module in stays[:i]:
            returns[module] = returns.get(module, 0) + 1
    assert returns == RETURNS, " -> ".join(stays)
