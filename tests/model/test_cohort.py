"""run_cohort: read-ahead (same masks, at most two studies in memory, reads beside the network), a run killed and
continued with skip_existing, a case's failure leaving none of its files, parts and torchrun's environment."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import threading
import time
import weakref

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import model.pipeline
from model import Predictor
from model.cases import layout_cases
from model.cohort import CohortOptions, check_case_names, run_cohort
from model.distributed import RankInfo, part_indices
from model.errors import InputError, WriteError
from model.outputs import VERSION, OutputLayout, model_info, write_results
from phantoms import make_phantom
from tests.conftest import ROOT, SMALL_SPEC, write_case

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

    real = model.pipeline.segment_study

    def slow_network(study, *args, **kwargs):
        result = real(study, *args, **kwargs)
        time.sleep(0.3)  # a network slower than a read, as on any real study
        events.append(("network done", study.case.name, True))
        return result

    monkeypatch.setattr(model.pipeline, "segment_study", slow_network)
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
    real = model.pipeline.segment_study
    segmented: list[str] = []
    kill_at = {"c3"}  # the first run is stopped (Ctrl-C) during the fourth study

    def segment_study(study, *args, **kwargs):
        name = study.case.name
        if name in kill_at:
            kill_at.clear()
            raise KeyboardInterrupt
        segmented.append(name)
        return real(study, *args, **kwargs)

    monkeypatch.setattr(model.pipeline, "segment_study", segment_study)
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


def test_a_failed_case_leaves_none_of_its_files_and_the_others_go_on(tmp_path, cohort_input, predictor,
                                                                     tiny_weights, monkeypatch, capsys):
    sources = layout_cases(cohort_input)[:3]
    options = local_options(tiny_weights, predictor)
    run_cohort(sources, predictor, tmp_path, options)  # an earlier run: its c1 files are now stale
    real = model.pipeline.write_reports

    def fail_c1(documents, *args, **kwargs):
        if documents.case.name == "c1":
            raise WriteError("reports/c1.png: not written (No space left on device)")
        return real(documents, *args, **kwargs)

    monkeypatch.setattr(model.pipeline, "write_reports", fail_c1)
    capsys.readouterr()
    summary = run_cohort(sources, predictor, tmp_path, options)
    assert [o.status for o in summary.outcomes] == ["written", "failed", "written"]
    assert capsys.readouterr().err == "error: reports/c1.png: not written (No space left on device)\n"
    layout = OutputLayout(tmp_path)
    assert sorted(p.name for p in layout.masks.iterdir()) == ["c0.mha", "c2.mha"]
    assert not any(path.exists() for path in layout.report_paths(sources[1]).values())
    assert summary.entries[1]["outputs"] == [] and "lesion_count" not in summary.entries[1]
    assert all(path.exists() for path in layout.report_paths(sources[2]).values())


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


def test_parts_take_every_nth_study():
    parts = [part_indices(10, 3, k) for k in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert part_indices(2, 4, 3) == []
    for num_parts, part_id in ((0, 0), (2, 2), (2, -1)):
        with pytest.raises(InputError, match="--num-parts"):
            part_indices(5, num_parts, part_id)


def test_rank_info_from_torchruns_environment():
    assert RankInfo.from_environment({}) is None
    info = RankInfo.from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert info == RankInfo(rank=3, world=4, local_rank=1, local_world=2)
    with pytest.raises(InputError, match="not all integers"):
        RankInfo.from_environment({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(InputError, match="rank 2 of 2"):
        RankInfo.from_environment({"RANK": "2", "WORLD_SIZE": "2"})


def test_a_cpu_rank_takes_its_share_of_the_cores():
    threads = torch.get_num_threads()
    try:
        info = RankInfo(rank=0, world=2, local_rank=0, local_world=64)
        assert info.device("cpu") == "cpu" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


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
    (layout.reports / ".c0.k2j_9x0a").mkdir(parents=True)  # model.outputs.write_reports' staging folder
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
    read, segment, write = model.pipeline.read_study, model.pipeline.segment_study, model.pipeline.write_study
    monkeypatch.setattr(model.pipeline, "read_study",
                        lambda case, *args: events.append(("read", case.name)) or read(case, *args))
    monkeypatch.setattr(model.pipeline, "segment_study",
                        lambda study, *args, **kw: events.append(("segment", study.case.name))
                        or segment(study, *args, **kw))
    monkeypatch.setattr(model.pipeline, "write_study",
                        lambda result, *args: events.append(("write", result.study.case.name)) or write(result, *args))
    sources = layout_cases(cohort_input)[:3]
    run_cohort(sources, predictor, tmp_path / "out", CohortOptions(read_ahead=False))
    assert events == [(step, case.name) for case in sources for step in ("read", "segment", "write")]
