"""run_cohort: read-ahead (same masks, at most two studies in memory, reads beside the network), a run killed and
continued with skip_existing, a case's failure leaving none of its files, parts and torchrun's environment."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import results.outputs
import runner.pipeline
from model import Predictor
from model.checkpoint import save_checkpoint, seal
from model.errors import InputError, WriteError
from model.network import build_network
from phantoms import make_phantom
from results.outputs import MASK_NOTE_KEY, VERSION, OutputLayout, model_info, run_record, write_results
from runner.cohort import CohortOptions, check_case_names, run_cohort
from studies.cases import layout_cases
from tests.conftest import ROOT, SMALL_SPEC, TINY, write_case

NAMES = ["c0", "c1", "c2", "c3", "c4"]


@pytest.fixture(scope="module")
def cohort_input(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort") / "in"
    for seed, name in enumerate(NAMES):
        pet, ct, _ = make_phantom(seed, positive=seed % 2 == 0, spec=SMALL_SPEC).images()
        write_case(folder, pet, ct, name)
    return folder


@pytest.fixture(scope="module")
def predictor(tiny_weights):
    return Predictor.from_path(tiny_weights, device="cpu", precision="fp32")


def local_options(tiny_weights, predictor, **kwargs) -> CohortOptions:
    return CohortOptions(reports=True, model_info=model_info(tiny_weights, predictor), **kwargs)


def mask_arrays(output_dir) -> dict[str, np.ndarray]:
    folder = OutputLayout(output_dir).masks
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.iterdir())}


def test_read_ahead_writes_the_masks_and_entries_of_a_plain_run(tmp_path, cohort_input, predictor):
    sources = layout_cases(cohort_input)
    plain = run_cohort(sources, predictor, tmp_path / "plain", CohortOptions(read_ahead=False))
    ahead = run_cohort(sources, predictor, tmp_path / "ahead", CohortOptions(read_ahead=True))
    assert [o.status for o in ahead.outcomes] == ["written"] * len(NAMES)
    expected, got = mask_arrays(tmp_path / "plain"), mask_arrays(tmp_path / "ahead")
    assert list(got) == [f"{name}.mha" for name in NAMES]
    assert all(np.array_equal(expected[name], got[name]) for name in expected)
    assert any(array.any() for array in got.values())
    assert ahead.entries == plain.entries
    assert 0.0 < ahead.outside_network < 1.0 and ahead.network_s > 0


def test_reads_run_beside_the_network_and_hold_at_most_two_studies(tmp_path, cohort_input, predictor,
                                                                    monkeypatch):
    events: list[tuple[str, str, bool]] = []
    alive: set[str] = set()
    peak = [0]

    def tracked(case):
        def load():
            events.append(("load", case.name, threading.current_thread() is threading.main_thread()))
            loaded = case.load()
            alive.add(case.name)
            peak[0] = max(peak[0], len(alive))
            weakref.finalize(loaded, alive.discard, case.name)  # this study's images are gone
            return loaded
        return dataclasses.replace(case, load=load)

    real = runner.pipeline.segment_study

    def slow_network(study, *args, **kwargs):
        result = real(study, *args, **kwargs)
        time.sleep(0.3)  # a network slower than a read, as on any real study
        events.append(("network done", study.case.name, True))
        return result

    monkeypatch.setattr(runner.pipeline, "segment_study", slow_network)
    summary = run_cohort([tracked(c) for c in layout_cases(cohort_input)], predictor, tmp_path / "out")
    assert summary.count("written") == len(NAMES)
    assert peak[0] == 2 and not alive
    for before, after in itertools.pairwise(NAMES):  # the next study is read while the network runs on this one
        assert events.index(("load", after, False)) < events.index(("network done", before, True))


def test_a_killed_run_continues_with_skip_existing_without_redoing_a_case(tmp_path, cohort_input, predictor,
                                                                         tiny_weights, monkeypatch):
    sources = layout_cases(cohort_input)
    options = local_options(tiny_weights, predictor)
    full = run_cohort(sources, predictor, tmp_path / "full", options)
    real = runner.pipeline.segment_study
    segmented: list[str] = []
    kill_at = {"c3"}  # the first run is stopped (Ctrl-C) during the fourth study

    def segment_study(study, *args, **kwargs):
        name = study.case.name
        if name in kill_at:
            kill_at.clear()
            raise KeyboardInterrupt
        segmented.append(name)
        return real(study, *args, **kwargs)

    monkeypatch.setattr(runner.pipeline, "segment_study", segment_study)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_cohort(sources, predictor, out, options)
    layout = OutputLayout(out)
    # c2's write was under way or queued when the run stopped: it finished, whole.
    assert sorted(p.name for p in layout.masks.iterdir()) == ["c0.mha", "c1.mha", "c2.mha"]
    assert not [p for p in out.rglob(".*")]
    written = {p.name: p.stat().st_mtime_ns for p in [*layout.masks.iterdir(), *layout.reports.iterdir()]}
    (layout.reports / "c1.png").unlink()  # c1 lacks a report now: it is redone
    segmented.clear()
    again = run_cohort(sources, predictor, out, dataclasses.replace(options, skip_existing=True))
    assert segmented == ["c1", "c3", "c4"]
    assert [o.status for o in again.outcomes] == ["skipped", "written", "skipped", "written", "written"]
    assert again.entries == full.entries  # a skipped case's entry keeps its numbers (from its report)
    for name in ("c0.mha", "c2.mha", "c0.report.json", "c2.lesions.csv", "c2.png"):
        assert (layout.masks / name if name.endswith(".mha") else layout.reports / name).stat().st_mtime_ns \
            == written[name]
    continued, expected = mask_arrays(out), mask_arrays(tmp_path / "full")
    assert list(continued) == list(expected)
    assert all(np.array_equal(continued[name], expected[name]) for name in expected)


def test_an_unreadable_mask_is_redone(tmp_path, cohort_input, predictor):
    sources = layout_cases(cohort_input)[:2]
    run_cohort(sources, predictor, tmp_path, CohortOptions())
    (OutputLayout(tmp_path).masks / "c1.mha").write_bytes(b"cut short")
    again = run_cohort(sources, predictor, tmp_path, CohortOptions(skip_existing=True))
    assert [o.status for o in again.outcomes] == ["skipped", "written"]
    assert "outputs" in again.entries[0] and again.entries[0]["outputs"][0]["filename"] == "c0.mha"
    sitk.ReadImage(str(OutputLayout(tmp_path).masks / "c1.mha"))


def _moved_origin(image: sitk.Image) -> sitk.Image:
    moved = sitk.Image(image)
    moved.SetOrigin([o + 500.0 for o in image.GetOrigin()])
    return moved


@pytest.mark.parametrize("fake", [
    lambda ct, mask: ct,  # the int16 CT copied to the mask's name
    lambda ct, mask: sitk.Cast(mask, sitk.sitkFloat32),
    lambda ct, mask: sitk.Cast(mask, sitk.sitkUInt8) * 2,  # uint8 holding 0 and 2
    lambda ct, mask: _moved_origin(mask),  # a mask of another grid
    lambda ct, mask: mask[:, :, 1:],
])
def test_only_a_mask_the_checker_passes_counts_as_done(tmp_path, cohort_input, predictor, fake):
    sources = layout_cases(cohort_input)[:2]
    run_cohort(sources, predictor, tmp_path, CohortOptions())
    mask_path = OutputLayout(tmp_path).masks / "c1.mha"
    ct = sitk.ReadImage(str(cohort_input / "images/ct/c1.mha"))
    sitk.WriteImage(fake(ct, sitk.ReadImage(str(mask_path))), str(mask_path))
    again = run_cohort(sources, predictor, tmp_path, CohortOptions(skip_existing=True))
    assert [o.status for o in again.outcomes] == ["skipped", "written"]
    redone = sitk.ReadImage(str(mask_path))
    pet = sitk.ReadImage(str(cohort_input / "images/pet/c1_pet.mha"))
    assert redone.GetPixelID() == sitk.sitkUInt8 and redone.GetSize() == pet.GetSize()


def _rewrite_mask(path: Path, change) -> None:
    """The mask at ``path`` through ``change``, its header's record kept (a tamperer who knows the format)."""
    mask = sitk.ReadImage(str(path))
    changed = change(mask)
    for key in mask.GetMetaDataKeys():
        changed.SetMetaData(key, mask.GetMetaData(key))
    sitk.WriteImage(changed, str(path), useCompression=True)


def _edit_report(path: Path, **values) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | values))


# How the outputs of the case with the most lesion voxels (``case``) are changed after the run that made them;
# ``other`` is another case's mask.
KEPT_TAMPERING = {
    "mask blanked, report edited to 42 lesions and 9999 ml": lambda layout, case, other: (
        _rewrite_mask(layout.masks / f"{case}.mha", lambda mask: mask * 0),
        _edit_report(layout.reports / f"{case}.report.json", lesion_count=42, tmtv_ml=9999)),
    "report's numbers edited, the mask as it was": lambda layout, case, other: (
        _edit_report(layout.reports / f"{case}.report.json", tmtv_ml=9999.0)),
    "mask blanked, report as it was": lambda layout, case, other: (
        _rewrite_mask(layout.masks / f"{case}.mha", lambda mask: mask * 0)),
    "another case's mask in its place": lambda layout, case, other: (
        _rewrite_mask(layout.masks / f"{case}.mha", lambda mask: sitk.ReadImage(str(layout.masks / f"{other}.mha")))),
}


@pytest.mark.parametrize("tamper", KEPT_TAMPERING)
def test_a_kept_case_whose_report_does_not_agree_with_its_mask_is_redone(tmp_path, cohort_input, predictor,
                                                                        tiny_weights, tamper, capsys):
    sources = layout_cases(cohort_input)[:3]
    options = local_options(tiny_weights, predictor)
    full = run_cohort(sources, predictor, tmp_path, options)
    layout = OutputLayout(tmp_path)
    voxels = {name.removesuffix(".mha"): int(array.sum()) for name, array in mask_arrays(tmp_path).items()}
    case = max(voxels, key=voxels.get)
    other = next(name for name in voxels if voxels[name] != voxels[case])
    assert voxels[case] > 0
    KEPT_TAMPERING[tamper](layout, case, other)
    capsys.readouterr()
    again = run_cohort(sources, predictor, tmp_path, dataclasses.replace(options, skip_existing=True))
    assert [o.status for o in again.outcomes] == ["written" if o.name == case else "skipped" for o in again.outcomes]
    assert again.entries == full.entries  # the numbers of the case's mask, computed in this run
    line = next(line for line in capsys.readouterr().out.splitlines() if "redone" in line)
    assert line.startswith(f"[{NAMES.index(case) + 1}/3] {case}: redone (--skip-existing): its report")
    assert mask_arrays(tmp_path)[f"{case}.mha"].sum() == voxels[case]


def _sealed_copy(tiny_weights: Path, folder: Path, **model_values) -> Path:
    """A copy of the tiny checkpoint with its config edited on purpose (and sealed: a model of its own)."""
    folder.mkdir()
    copy = folder / tiny_weights.name
    copy.write_bytes(tiny_weights.read_bytes())
    document = json.loads(tiny_weights.with_suffix(".json").read_text())
    document["model"].update(model_values)
    copy.with_suffix(".json").write_text(json.dumps(document))
    seal(copy.with_suffix(".json"))
    return copy


def _other_weights(tiny_weights: Path, folder: Path) -> Path:
    torch.manual_seed(1)
    return save_checkpoint(build_network(TINY), TINY, folder / tiny_weights.stem)


# What a rerun changes (the weights it loads, its settings), and what its line names.
RERUN_SETTINGS = {
    "min lesion ml 10": (lambda weights, folder: (weights, {"min_lesion_ml": 10.0}), "min_lesion_ml 0.0 -> 10.0"),
    "flip TTA": (lambda weights, folder: (weights, {"tta": True}), "tta False -> True"),
    "another tile overlap": (lambda weights, folder: (weights, {"tile_overlap": 0.5}), "tile_overlap 0.25 -> 0.5"),
    "other weights of one name": (lambda weights, folder: (_other_weights(weights, folder), {}),
                                  "model tiny.safetensors"),
    "its config's threshold edited and sealed": (
        lambda weights, folder: (_sealed_copy(weights, folder, threshold=0.3), {}), "model tiny.safetensors"),
}


@pytest.mark.parametrize("reports", [True, False], ids=["reports", "masks only"])
@pytest.mark.parametrize("change", RERUN_SETTINGS)
def test_a_kept_case_made_with_another_model_or_other_settings_is_redone(tmp_path, cohort_input, predictor,
                                                                         tiny_weights, change, reports, capsys):
    sources = layout_cases(cohort_input)[:2]
    options = local_options(tiny_weights, predictor) if reports else CohortOptions()
    run_cohort(sources, predictor, tmp_path / "out", options)
    make, named = RERUN_SETTINGS[change]
    weights, settings = make(tiny_weights, tmp_path / "weights")
    rerun = Predictor.from_path(weights, device="cpu", precision="fp32", **settings)
    options = local_options(weights, rerun, skip_existing=True) if reports else CohortOptions(skip_existing=True)
    capsys.readouterr()
    again = run_cohort(sources, rerun, tmp_path / "out", options)
    assert [o.status for o in again.outcomes] == ["written", "written"]
    lines = [line for line in capsys.readouterr().out.splitlines() if "redone" in line]
    assert len(lines) == 2
    assert named in lines[0] if reports else "its mask was made by another model or with other settings" in lines[0]
    fresh = run_cohort(sources, rerun, tmp_path / "fresh", options)
    assert again.entries == fresh.entries
    redone, expected = mask_arrays(tmp_path / "out"), mask_arrays(tmp_path / "fresh")
    assert list(redone) == list(expected) and all(np.array_equal(redone[name], expected[name]) for name in expected)
    if reports:
        report = json.loads((OutputLayout(tmp_path / "out").reports / "c0.report.json").read_text())
        assert report["model"]["model_sha256"] == rerun.identities
        assert report["made_by"]["settings"] == run_record(rerun).settings


def test_a_kept_mask_that_records_no_settings_is_redone(tmp_path, cohort_input, predictor, capsys):
    """A mask of an earlier version (or another program) says nothing of what made it."""
    sources = layout_cases(cohort_input)[:2]
    run_cohort(sources, predictor, tmp_path, CohortOptions())
    mask_path = OutputLayout(tmp_path).masks / "c1.mha"
    mask = sitk.ReadImage(str(mask_path))
    mask.EraseMetaData(MASK_NOTE_KEY)
    sitk.WriteImage(mask, str(mask_path), useCompression=True)
    again = run_cohort(sources, predictor, tmp_path, CohortOptions(skip_existing=True))
    assert [o.status for o in again.outcomes] == ["skipped", "written"]
    assert "[2/2] c1: redone (--skip-existing): its mask records no settings" in capsys.readouterr().out


def test_the_settings_of_a_dicom_study_include_its_suv_conversion(cohort_input, predictor):
    case = layout_cases(cohort_input)[0]
    dicom = dataclasses.replace(case, is_dicom=True)
    default, autopet = run_record(predictor), run_record(predictor, suv_method="autopet")
    weighed = run_record(predictor, weight_kg=70)
    assert default.digest(dicom) != autopet.digest(dicom) != weighed.digest(dicom) != default.digest(dicom)
    assert default.digest(case) == autopet.digest(case) == weighed.digest(case)  # not read for a file in SUV


def case_files(layout: OutputLayout, case) -> dict[str, bytes]:
    """A case's mask and report files as they are on the disk."""
    paths = [layout.mask_path(case), *layout.report_paths(case).values()]
    return {path.name: path.read_bytes() for path in paths if path.is_file()}


def unreadable_pet(case):
    def load():
        raise InputError(f"{case.pet_label}: unreadable PET image (Input/output error)")  # a network share, briefly
    return dataclasses.replace(case, load=load)


def _fail_reports(monkeypatch):
    real = runner.pipeline.write_reports

    def write_reports(documents, *args, **kwargs):
        if documents.case.name == "c1":
            raise WriteError("reports/c1.png: not written (No space left on device)")
        return real(documents, *args, **kwargs)
    monkeypatch.setattr(runner.pipeline, "write_reports", write_reports)


def _fail_mask(monkeypatch):
    real = runner.pipeline.write_image_atomic

    def write_image_atomic(image, path):
        if path.name == "c1.mha":
            raise WriteError(f"{path.name}: not written (No space left on device)")
        return real(image, path)
    monkeypatch.setattr(runner.pipeline, "write_image_atomic", write_image_atomic)


# How a rerun fails c1, and whether the rerun writes reports: the earlier run's files of c1 stay as they were.
RERUN_FAILURES = {
    "its PET unreadable for a moment": (lambda sources, monkeypatch: sources.__setitem__(1, unreadable_pet(sources[1])),
                                        True),
    "the same without reports": (lambda sources, monkeypatch: sources.__setitem__(1, unreadable_pet(sources[1])),
                                 False),
    "its reports not written": (lambda sources, monkeypatch: _fail_reports(monkeypatch), True),
    "its mask not written": (lambda sources, monkeypatch: _fail_mask(monkeypatch), True),
}


@pytest.mark.parametrize("failure", RERUN_FAILURES)
def test_a_failing_rerun_keeps_the_earlier_runs_outputs_and_says_which_run_made_them(
        tmp_path, cohort_input, predictor, tiny_weights, monkeypatch, capsys, failure):
    sources = layout_cases(cohort_input)[:3]
    earlier = dataclasses.replace(run_record(predictor), started="2026-01-02T03:04:05Z")
    run_cohort(sources, predictor, tmp_path, local_options(tiny_weights, predictor, record=earlier))
    layout = OutputLayout(tmp_path)
    before = case_files(layout, sources[1])
    assert len(before) == 4  # mask, lesions CSV, report JSON, picture
    fail, reports = RERUN_FAILURES[failure]
    fail(sources, monkeypatch)
    options = local_options(tiny_weights, predictor) if reports else CohortOptions()
    capsys.readouterr()
    summary = run_cohort(sources, predictor, tmp_path, options)
    assert [o.status for o in summary.outcomes] == ["written", "failed", "written"]
    out = capsys.readouterr()
    assert out.err.startswith("error: ") and len(out.err.splitlines()) == 1
    assert "c1: this run failed it; kept, from the run of 2026-01-02T03:04:05Z" in out.out
    assert case_files(layout, sources[1]) == before  # byte for byte: nothing of the earlier run lost
    entry = summary.entries[1]
    assert entry["outputs"] == [] and entry["error_messages"] and "lesion_count" not in entry
    assert entry["kept_outputs"] == {"run": "2026-01-02T03:04:05Z", "files": list(before)}


def test_a_rerun_that_fails_between_its_mask_and_its_reports_leaves_neither(tmp_path, cohort_input, predictor,
                                                                            tiny_weights, monkeypatch, capsys):
    """The renames of the reports fail after this run's mask is in place: mask and reports would be two runs'."""
    sources = layout_cases(cohort_input)[:1]
    options = local_options(tiny_weights, predictor)
    run_cohort(sources, predictor, tmp_path, options)
    real, reports = os.replace, OutputLayout(tmp_path).reports

    def replace(source, target):
        if Path(target) == reports / "c0.png":  # its final name, not the staged file's
            raise OSError(28, "No space left on device")
        return real(source, target)

    monkeypatch.setattr(results.outputs.os, "replace", replace)
    summary = run_cohort(sources, predictor, tmp_path, options)
    assert summary.outcomes[0].status == "failed" and "kept_outputs" not in summary.entries[0]
    assert case_files(OutputLayout(tmp_path), sources[0]) == {}
    assert "c0.png: not written (No space left on device)" in capsys.readouterr().err


def test_a_write_fails_in_the_worker_and_a_read_fails_alike(tmp_path, cohort_input, predictor, capsys):
    sources = layout_cases(cohort_input)[:3]
    def out_of_memory():
        raise MemoryError

    sources[0] = dataclasses.replace(sources[0], load=out_of_memory)
    (OutputLayout(tmp_path).masks / "c2.mha").mkdir(parents=True)  # the mask cannot take its name
    summary = run_cohort(sources, predictor, tmp_path, CohortOptions())
    assert [o.status for o in summary.outcomes] == ["failed", "written", "failed"]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "c0.mha: case failed (MemoryError)" in lines[0]
    assert "c2.mha" in lines[1] and lines[1].startswith("error: ")


def test_two_cases_of_one_name_are_refused(cohort_input):
    case = layout_cases(cohort_input)[0]
    with pytest.raises(InputError, match="two cases are named c0"):
        check_case_names([case, dataclasses.replace(case, pet_label="other")])


def test_model_info_and_the_version(tiny_weights, predictor):
    info = model_info(tiny_weights, predictor)
    recorded = json.loads(tiny_weights.with_suffix(".json").read_text())["weights_sha256"]
    assert info["weights_sha256"] == {tiny_weights.name: recorded} and info["ensemble"] == 1
    pyproject = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert info["version"] == VERSION == pyproject.group(1)
    assert info["precision"] == "float32" and info["encoder"] == "regnety_002"


def test_temporaries_a_killed_run_left_are_removed_and_nothing_else(tmp_path, cohort_input, predictor,
                                                                     tiny_weights):
    sources = layout_cases(cohort_input)[:1]
    layout = OutputLayout(tmp_path)
    layout.masks.mkdir(parents=True)
    (layout.reports / ".c0.k2j_9x0a").mkdir(parents=True)  # results.outputs.write_reports' staging folder
    (layout.reports / ".c0.k2j_9x0a" / "c0.png").write_bytes(b"half")
    left = [layout.masks / ".c0.mha.ab12cd34.mha", tmp_path / ".results.json.zz99yy88.part"]
    kept = [layout.masks / ".c1.mha.ab12cd34.mha", layout.masks / ".c0.mha.notours", layout.reports / ".c0.x",
            tmp_path / ".results.json.zz99yy88.tmp"]
    for path in left + kept:
        path.write_bytes(b"")
    run_cohort(sources, predictor, tmp_path, local_options(tiny_weights, predictor))
    write_results(layout.results(), [])
    hidden = sorted(p for p in tmp_path.rglob(".*"))
    assert hidden == sorted(kept)


def test_without_read_ahead_each_study_is_read_after_the_last_is_written(tmp_path, cohort_input, predictor,
                                                                         monkeypatch):
    """--no-read-ahead: one study in memory at a time (the next was read before the network ran on this one)."""
    events = []
    read, segment, write = runner.pipeline.read_study, runner.pipeline.segment_study, runner.pipeline.write_study
    monkeypatch.setattr(runner.pipeline, "read_study",
                        lambda case, *args: events.append(("read", case.name)) or read(case, *args))
    monkeypatch.setattr(runner.pipeline, "segment_study",
                        lambda study, *args, **kw: events.append(("segment", study.case.name))
                        or segment(study, *args, **kw))
    monkeypatch.setattr(runner.pipeline, "write_study",
                        lambda result, *args: events.append(("write", result.study.case.name)) or write(result, *args))
    sources = layout_cases(cohort_input)[:3]
    run_cohort(sources, predictor, tmp_path / "out", CohortOptions(read_ahead=False))
    assert events == [(step, case.name) for case in sources for step in ("read", "segment", "write")]
