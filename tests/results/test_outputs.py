"""results.outputs: where a run writes (one OutputLayout over the OUTPUTS table), the output folder checked
before any work, other inputs' files in it refused or kept, results.json whole with a killed run's temporary
removed, and the temporaries of a killed run's cases cleaned up (and no one else's)."""

from __future__ import annotations

import json

import pytest

from model.errors import InputError
from results.outputs import (
    OUTPUT_SLUG,
    OUTPUTS,
    OutputLayout,
    check_other_cases,
    prepare_output,
    remove_leftovers,
    write_results,
)
from studies.cases import CaseSource, LoadedCase


def _case(name: str, suffix: str = ".mha", dicom: bool = False) -> CaseSource:
    return CaseSource(name=name, pet_label=f"{name}_pet{suffix}", ct_label=f"{name}{suffix}", mask_suffix=suffix,
                      is_dicom=dicom, load=lambda: LoadedCase(pet=None, ct=None))


@pytest.mark.parametrize("case, reports", [
    (_case("a"), ["a.lesions.csv", "a.report.json", "a.png"]),
    (_case("b", ".nii.gz"), ["b.lesions.csv", "b.report.json", "b.png"]),
    (_case("c", dicom=True), ["c.lesions.csv", "c.report.json", "c.png", "c.seg.dcm"]),
])
def test_every_file_of_a_case_is_named_by_the_outputs_table(tmp_path, case, reports):
    layout = OutputLayout(tmp_path)
    assert layout.mask_path(case) == tmp_path / "images" / OUTPUT_SLUG / f"{case.name}{case.mask_suffix}"
    assert [path.name for path in layout.report_paths(case).values()] == reports
    assert {path.parent for path in layout.report_paths(case).values()} == {tmp_path / "reports"}
    assert list(layout.report_paths(case)) == [o.kind for o in OUTPUTS if o.folder == "reports" and o.applies(case)]


@pytest.mark.parametrize("num_parts, part_id, name", [(1, 0, "results.json"), (2, 1, "results.part-1-of-2.json"),
                                                      (10, 0, "results.part-0-of-10.json")])
def test_each_part_has_its_results_file(tmp_path, num_parts, part_id, name):
    assert OutputLayout(tmp_path).results(num_parts, part_id) == tmp_path / name


@pytest.mark.parametrize("blocked", ["images", f"images/{OUTPUT_SLUG}", "reports"])
def test_an_output_folder_that_is_a_file_stops_the_run_naming_it(tmp_path, blocked):
    layout = OutputLayout(tmp_path / "out")
    (layout.root / blocked).parent.mkdir(parents=True, exist_ok=True)
    (layout.root / blocked).write_text("a file")
    with pytest.raises(InputError, match=f"{blocked.split('/')[-1]}: output folder is a file"):
        prepare_output(layout, reports=True, results=layout.results())


def test_a_results_file_that_is_a_folder_stops_the_run(tmp_path):
    layout = OutputLayout(tmp_path)
    layout.results().mkdir()
    with pytest.raises(InputError, match=r"results\.json: is a folder"):
        prepare_output(layout, reports=False, results=layout.results())
    assert not layout.masks.exists()  # nothing made before the check


def test_files_of_other_inputs_are_refused_unless_kept(tmp_path):
    layout = OutputLayout(tmp_path)
    layout.masks.mkdir(parents=True)
    layout.reports.mkdir()
    (layout.masks / "a.mha").write_text("")  # this run's own: not another input's
    (layout.masks / "old.mha").write_text("")
    (layout.reports / "old.report.json").write_text("")
    (layout.reports / ".a.k2j9x0ab").mkdir()  # hidden staging: never counted
    sources = [_case("a")]
    with pytest.raises(InputError, match=r"2 files of cases not in this input \(old\.mha, old\.report\.json\)"):
        check_other_cases(layout, sources, keep=False)
    assert "kept (--keep-other-cases)" in check_other_cases(layout, sources, keep=True)
    assert check_other_cases(layout, [_case("a"), _case("old")], keep=False) is None


def test_results_json_is_written_whole_and_a_killed_runs_temporary_removed(tmp_path):
    path = OutputLayout(tmp_path).results()
    left = tmp_path / ".results.json.ab12cd34.part"
    left.write_text("[")
    other = tmp_path / ".results.part-0-of-2.json.ab12cd34.part"  # another part's, maybe still being written
    other.write_text("[")
    write_results(path, [{"outputs": [], "error_messages": []}])
    assert json.loads(path.read_text()) == [{"outputs": [], "error_messages": []}]
    assert not left.exists() and other.exists()
    with pytest.raises(ValueError):
        write_results(path, [{"suv": float("nan")}])  # strict JSON: never a NaN in the file
    assert json.loads(path.read_text()) == [{"outputs": [], "error_messages": []}]


def test_a_killed_runs_temporaries_of_these_cases_are_removed_and_no_one_elses(tmp_path):
    layout = OutputLayout(tmp_path)
    layout.masks.mkdir(parents=True)
    layout.reports.mkdir()
    mine = [layout.masks / ".a.mha.ab12cd34.mha", layout.reports / ".a.ab12cd34"]
    theirs = [layout.masks / ".b.mha.ab12cd34.mha", layout.reports / ".b.ab12cd34", layout.masks / ".a.mha.short.mha"]
    for path in mine + theirs:
        path.mkdir() if path.parent == layout.reports else path.write_text("")
    remove_leftovers(layout, [_case("a")])
    assert [path.exists() for path in mine] == [False, False]
    assert all(path.exists() for path in theirs)
