"""Each extension point is one entry of one table: an image format (studies.readers.IMAGE_FORMATS), an input
layout (studies.cases.INPUT_LAYOUTS), an output (results.outputs.OUTPUTS) and a report quantity
(results.report.QUANTITIES); and the pipeline's stages are the one path of a study."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import results.figures
import results.outputs
import results.report
import studies.cases
import studies.readers
from model.errors import InputError
from results.outputs import CaseOutput, OutputLayout, file_entry
from results.report import Quantity
from results.review_page import cohort_page, render
from runner.pipeline import StudyOptions, run_case, run_study
from studies.cases import InputLayout, InputRequest, find_cases, layout_cases, path_case
from studies.readers import ImageFormat
from tests.conftest import oracle_predictor, write_case


def test_a_new_image_format_is_one_entry(tmp_path, small_phantom, monkeypatch):
    checked: list[str] = []

    def check(path: Path, role: str) -> None:
        checked.append(f"{role} {path.name}")

    entry = ImageFormat(".nrrd", "nrrd_image", ".nrrd", check)
    monkeypatch.setattr(studies.readers, "IMAGE_FORMATS", (*studies.readers.IMAGE_FORMATS, entry))
    # IMAGE_SUFFIXES is derived from the table when the module loads; an entry in the source needs no more.
    monkeypatch.setattr(studies.readers, "IMAGE_SUFFIXES", (*studies.readers.IMAGE_SUFFIXES, ".nrrd"))
    pet, ct, _ = small_phantom.images()
    for role, image in (("pet", pet), ("ct", ct)):
        (tmp_path / "images" / role).mkdir(parents=True)
        sitk.WriteImage(image, str(tmp_path / "images" / role / f"case.{role}.nrrd"))
    (case,) = layout_cases(tmp_path)
    assert case.name == "case.ct" and case.mask_suffix == ".nrrd"
    loaded = case.load()
    assert checked == ["PET case.pet.nrrd", "CT case.ct.nrrd"]
    assert np.array_equal(sitk.GetArrayViewFromImage(loaded.ct), sitk.GetArrayViewFromImage(ct))
    assert file_entry(case.ct_label) == {"type": "nrrd_image", "filename": "case.ct.nrrd"}


def test_a_new_input_layout_is_one_entry(tmp_path, small_phantom, monkeypatch):
    pet, ct, _ = small_phantom.images()
    pet_path, ct_path = write_case(tmp_path / "files", pet, ct)
    folder = tmp_path / "listed"
    folder.mkdir()
    (folder / "pair.txt").write_text(f"{pet_path}\n{ct_path}\n")
    with pytest.raises(InputError, match="no DICOM images or image files"):  # not a layout yet
        find_cases(InputRequest(input=folder))
    listed = InputLayout("a pair.txt naming a PET and a CT",
                         lambda request: request.input is not None and (request.input / "pair.txt").is_file(),
                         lambda request: [path_case(*(Path(line) for line in
                                                      (request.input / "pair.txt").read_text().split()))])
    monkeypatch.setattr(studies.cases, "INPUT_LAYOUTS", (listed, *studies.cases.INPUT_LAYOUTS))
    (case,) = find_cases(InputRequest(input=str(folder)))
    assert case.name == "case0" and case.load().pet.GetSize() == pet.GetSize()


def test_the_layouts_are_recognised_in_order(tmp_path, small_phantom):
    pet, ct, _ = small_phantom.images()
    write_case(tmp_path / "gc", pet, ct)
    (case,) = find_cases(InputRequest(input=tmp_path / "gc"))
    assert case.name == "case0"
    with pytest.raises(InputError, match="images/pet: PET folder missing"):  # the container's /input is given
        find_cases(InputRequest(input=tmp_path / "empty", grand_challenge=True))
    with pytest.raises(InputError, match="input folder missing"):
        find_cases(InputRequest(input=tmp_path / "empty"))
    with pytest.raises(InputError, match="--suv-method: applies to DICOM PET only"):
        find_cases(InputRequest(input=tmp_path / "gc", suv_method="qiba"))


def test_a_new_output_is_one_entry(tmp_path, small_phantom, monkeypatch):
    def write_volume(documents: results.outputs.CaseDocuments, path: Path) -> None:
        path.write_text(f"{documents.report.tmtv_ml}\n")

    entry = CaseOutput("volume", "reports", ".tmtv.txt", lambda case: True, write_volume, page_link=(4, "tmtv"))
    monkeypatch.setattr(results.outputs, "OUTPUTS", (*results.outputs.OUTPUTS, entry))
    pet, ct, _ = small_phantom.images()
    case = path_case(*write_case(tmp_path / "in", pet, ct))
    layout = OutputLayout(tmp_path / "out")
    layout.reports.mkdir(parents=True)
    options = StudyOptions(reports=True, model_info={"version": "0", "weights_sha256": {}})
    result, headline = run_study(case, oracle_predictor(), layout, options)
    assert float(layout.report_paths(case)["volume"].read_text()) == pytest.approx(headline["tmtv_ml"], abs=1e-3)
    assert sorted(p.name for p in layout.reports.iterdir()) == [
        "case0.lesions.csv", "case0.png", "case0.report.json", "case0.tmtv.txt"]
    assert layout.mask_path(case).is_file() and result.out_path == layout.mask_path(case)
    page = cohort_page(layout.root, [{"case": "case0", **headline}])  # its link, after the table's others
    assert page.rows[0].links == [("png", "reports/case0.png"), ("csv", "reports/case0.lesions.csv"),
                                  ("json", "reports/case0.report.json"), ("tmtv", "reports/case0.tmtv.txt")]


def test_a_study_by_its_files_is_checked_as_process_checks_it(tmp_path, small_phantom):
    pet, ct, _ = small_phantom.images()
    far = sitk.Image(ct)
    far.SetOrigin(tuple(v + 2000.0 for v in ct.GetOrigin()))  # another place in space: not this PET's CT
    pet_path, ct_path = write_case(tmp_path / "in", pet, far)
    with pytest.raises(InputError, match="CT"):
        run_case(pet_path, ct_path, tmp_path / "mask.mha", oracle_predictor())
    assert not (tmp_path / "mask.mha").exists()


def test_a_new_report_quantity_is_one_entry(tmp_path, small_phantom, monkeypatch):
    # A lesion quantity inside the table (a header kept apart from it would put every later column under the
    # wrong name) and a headline study quantity at its end (results.json, report.json, the review page).
    suv_min = Quantity("suv_min", "lesion", lambda les: float(les.values.min()),
                       definition="the lowest SUV of the lesion's voxels")
    hottest_sum = Quantity("suv_max_sum", "study", lambda lesions: float(sum(les.suv_max for les in lesions)),
                           headline=True, title="SUVmax sum", definition="the lesions' SUVmax summed",
                           picture=lambda suv: f"SUVmax sum {suv:.2f}", picture_place=3)
    table = list(results.report.QUANTITIES)
    table.insert([q.name for q in table].index("suv_peak"), suv_min)
    monkeypatch.setattr(results.report, "QUANTITIES", (*table, hottest_sum))
    titles: list[str] = []
    real_figure = results.figures.mip_figure
    monkeypatch.setattr(results.figures, "mip_figure", lambda path, suv, outlines, title, **kwargs: (
        titles.append(title), real_figure(path, suv, outlines, title, **kwargs))[1])
    pet, ct, _ = small_phantom.images()
    case = path_case(*write_case(tmp_path / "in", pet, ct))
    layout = OutputLayout(tmp_path / "out")
    layout.reports.mkdir(parents=True)
    options = StudyOptions(reports=True, model_info={"version": "0", "weights_sha256": {}})
    _, headline = run_study(case, oracle_predictor(), layout, options)

    with open(layout.reports / "case0.lesions.csv", newline="") as file:
        header, *rows = list(csv.reader(file))
    assert header[:8] == ["id", "voxels", "volume_ml", "suv_max", "suv_mean", "suv_min", "suv_peak", "tlg"]
    assert header[8:] == ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
                          "bbox_x0", "bbox_y0", "bbox_z0", "bbox_x1", "bbox_y1", "bbox_z1"]
    document = json.loads((layout.reports / "case0.report.json").read_text())
    assert rows and len(rows) == len(document["lesions"])
    for row, lesion in zip(rows, document["lesions"], strict=True):
        cells = dict(zip(header, row, strict=True))  # each value under its own name
        assert float(cells["suv_min"]) <= float(cells["suv_mean"]) <= float(cells["suv_max"])
        assert float(cells["suv_min"]) == pytest.approx(lesion["suv_min"], abs=1e-4)
        assert float(cells["suv_peak"]) == pytest.approx(lesion["suv_peak"], abs=1e-4)
        assert int(cells["bbox_x1"]) == lesion["bbox_max"][0]
    assert document["definitions"]["suv_min"] == "the lowest SUV of the lesion's voxels"
    expected_sum = sum(lesion["suv_max"] for lesion in document["lesions"])
    assert document["suv_max_sum"] == headline["suv_max_sum"] == pytest.approx(expected_sum, abs=1e-3)
    count = document["lesion_count"]
    assert titles == [f"case0\nTMTV {document['tmtv_ml']:.1f} ml, {count} lesion{'s' if count != 1 else ''}, "
                      f"SUVmax {document['suv_max']:.1f}, SUVmax sum {expected_sum:.2f}"]

    page = cohort_page(layout.root, [{"case": "case0", **headline}])
    (column,) = (c for c in page.columns if c.key == "suv_max_sum")
    assert (column.title, column.hint) == ("SUVmax sum", "the lesions' SUVmax summed")
    assert page.rows[0].values["suv_max_sum"] == headline["suv_max_sum"]
    assert ">SUVmax sum</th>" in render(page)
