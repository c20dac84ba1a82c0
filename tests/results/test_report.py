"""Lesion report numbers on images with answers known by hand."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from results.report import (
    body_volume_ml,
    headline_keys,
    lesion_report,
    report_document,
    rounded_headline,
    sphere_offsets,
    write_lesions_csv,
    write_report_json,
)


def image(array: np.ndarray, spacing=(2.0, 2.0, 3.0), origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    result = sitk.GetImageFromArray(array)
    result.SetSpacing(spacing)
    result.SetOrigin(origin)
    if direction is not None:
        result.SetDirection(direction)
    return result


def pair(suv: np.ndarray, mask: np.ndarray, **geometry) -> tuple[sitk.Image, sitk.Image]:
    return image(suv.astype(np.float32), **geometry), image(mask.astype(np.uint8), **geometry)


def test_cube_of_known_suv():
    suv = np.ones((20, 20, 20))
    mask = np.zeros_like(suv)
    suv[5:8, 6:9, 7:10] = 5.0  # a 3x3x3 cube of SUV 5: 27 voxels of 2 x 2 x 3 mm = 0.324 ml
    mask[5:8, 6:9, 7:10] = 1
    report = lesion_report(*pair(suv, mask, origin=(-10.0, 20.0, 100.0)))
    (lesion,) = report.lesions
    assert lesion.voxels == 27
    assert lesion.volume_ml == pytest.approx(0.324)
    assert (lesion.suv_max, lesion.suv_mean) == (5.0, 5.0)
    assert lesion.tlg == pytest.approx(5.0 * 0.324)
    # Centre voxel index (x, y, z) = (8, 7, 6): origin + spacing x index.
    assert lesion.centroid_mm == pytest.approx((-10.0 + 16.0, 20.0 + 14.0, 100.0 + 18.0))
    assert (lesion.bbox_min, lesion.bbox_max) == ((7, 6, 5), (9, 8, 7))
    assert report.tmtv_ml == pytest.approx(0.324) and report.tlg == pytest.approx(1.62)
    assert (report.lesion_count, report.suv_max, report.dmax_mm) == (1, 5.0, 0.0)


def test_peak_counts_voxels_outside_the_lesion_in_a_physical_sphere():
    # Spacing (2, 2, 5) mm: centres within 6.2 mm are 29 in the voxel's own slice (x^2 + y^2 <= 9 voxels)
    # and 9 in each neighbouring slice (4 (x^2 + y^2) + 25 <= 38.44): 47 voxels.
    spacing = (2.0, 2.0, 5.0)
    suv = np.ones((9, 15, 15))
    suv[4, 7, 7] = 48.0
    mask = np.zeros_like(suv)
    mask[4, 7, 7] = 1  # a one-voxel lesion: the other 46 voxels of the sphere lie outside it
    probe = image(suv, spacing=spacing)
    assert len(sphere_offsets(probe)) == 47
    (lesion,) = lesion_report(*pair(suv, mask, spacing=spacing)).lesions
    assert lesion.suv_peak == pytest.approx((48.0 + 46.0) / 47.0)
    assert lesion.suv_mean == 48.0


def test_peak_on_a_uniform_region_equals_its_suv():
    suv = np.full((30, 30, 30), 3.5)
    mask = np.zeros_like(suv)
    mask[10:20, 10:20, 10:20] = 1
    (lesion,) = lesion_report(*pair(suv, mask)).lesions
    assert lesion.suv_peak == pytest.approx(3.5)


def test_peak_sphere_clipped_at_the_image_edge():
    suv = np.full((6, 6, 6), 2.0)
    mask = np.zeros_like(suv)
    mask[0, 0, 0] = 1
    (lesion,) = lesion_report(*pair(suv, mask)).lesions
    assert lesion.suv_peak == pytest.approx(2.0)


def test_two_spheres_a_known_distance_apart_under_a_rotated_direction():
    z, y, x = np.indices((20, 30, 40))
    first = (x - 10) ** 2 + (y - 12) ** 2 + (z - 8) ** 2 <= 9
    second = (x - 30) ** 2 + (y - 20) ** 2 + (z - 12) ** 2 <= 9
    mask = (first | second).astype(np.uint8)
    suv = np.where(first, 4.0, np.where(second, 9.0, 1.0))
    direction = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # x axis along patient y, y axis along -x
    report = lesion_report(*pair(suv, mask, spacing=(2.0, 1.5, 3.0), origin=(5.0, -5.0, 0.0), direction=direction))
    assert report.lesion_count == 2
    centres = {les.suv_max: les.centroid_mm for les in report.lesions}
    # Index (10, 12, 8): x = 5 - 1.5 x 12, y = -5 + 2 x 10, z = 3 x 8.
    assert centres[4.0] == pytest.approx((5.0 - 18.0, -5.0 + 20.0, 24.0))
    assert centres[9.0] == pytest.approx((5.0 - 30.0, -5.0 + 60.0, 36.0))
    # The index offset (20, 8, 4) scaled by the spacing: (40, 12, 12) mm.
    assert report.dmax_mm == pytest.approx(np.sqrt(40.0**2 + 12.0**2 + 12.0**2))
    voxels = int(first.sum())
    assert [les.voxels for les in report.lesions] == [voxels, voxels]
    assert report.tmtv_ml == pytest.approx(2 * voxels * 2.0 * 1.5 * 3.0 / 1000)
    assert report.suv_max == 9.0


def test_components_use_18_connectivity():
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = 1  # corners only: two lesions under 18-connectivity
    assert lesion_report(*pair(np.ones((4, 4, 4)), mask)).lesion_count == 2
    mask[2, 2, 2], mask[2, 2, 1] = 0, 1  # an edge shared: one lesion
    assert lesion_report(*pair(np.ones((4, 4, 4)), mask)).lesion_count == 1


def test_empty_mask_and_writers(tmp_path):
    report = lesion_report(*pair(np.ones((3, 3, 3)), np.zeros((3, 3, 3))))
    assert (report.lesion_count, report.tmtv_ml, report.suv_max, report.dmax_mm) == (0, 0.0, None, 0.0)
    write_lesions_csv(report, tmp_path / "empty.lesions.csv")
    assert (tmp_path / "empty.lesions.csv").read_text().count("\n") == 1


def test_csv_and_json_writers(tmp_path):
    suv = np.ones((10, 10, 10))
    mask = np.zeros_like(suv)
    suv[2:4, 2:4, 2:4], mask[2:4, 2:4, 2:4] = 6.0, 1
    suv[7, 7, 7], mask[7, 7, 7] = 3.0, 1
    report = lesion_report(*pair(suv, mask))
    write_lesions_csv(report, tmp_path / "case.lesions.csv")
    rows = list(csv.DictReader(open(tmp_path / "case.lesions.csv")))
    assert [row["id"] for row in rows] == ["1", "2"] and rows[0]["voxels"] == "8" and rows[1]["suv_max"] == "3.0"
    assert float(rows[0]["tlg"]) == pytest.approx(6.0 * 8 * 0.012)
    suv_block = {"method": "qiba", "factor": 3.2e-4, "units": "BQML"}
    model = {"name": "autopet-unet2d", "weights_sha256": {"fold0.safetensors": "ab" * 32}}
    write_report_json(report, tmp_path / "case.report.json", case="case", suv=suv_block, model=model)
    document = json.loads((tmp_path / "case.report.json").read_text())
    assert document["lesion_count"] == 2 and document["suv"] == suv_block and document["model"] == model
    assert document["tmtv_ml"] == pytest.approx(9 * 0.012)
    assert document["lesions"][1]["centroid_mm"] == [14.0, 14.0, 21.0]
    assert "IBSI" in document["definitions"]["suv_peak"]


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_a_non_finite_suv_never_reaches_a_report(tmp_path, bad):
    suv = np.ones((20, 20, 20))
    mask = np.zeros_like(suv)
    suv[5:8, 6:9, 7:10] = 5.0
    mask[5:8, 6:9, 7:10] = 1
    suv[6, 7, 10] = bad  # next to the lesion: inside the SUVpeak sphere, outside the mask
    with pytest.raises(ValueError, match="not finite"):
        lesion_report(*pair(suv, mask))


def test_json_writers_are_strict(tmp_path):
    from model.files import atomic_write_json, loads_strict

    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            atomic_write_json(tmp_path / "x.json", {"suv_peak": value})
        assert not (tmp_path / "x.json").exists()
    for text in ('{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": 1e400}'):
        with pytest.raises(ValueError):
            loads_strict(text)


def test_every_quantity_reaches_the_csv_and_the_json(tmp_path):
    suv = np.ones((10, 10, 10))
    mask = np.zeros_like(suv)
    suv[2:4, 2:4, 2:4], mask[2:4, 2:4, 2:4] = 6.0, 1
    suv[7, 7, 7], mask[7, 7, 7] = 3.0, 1
    report = lesion_report(*pair(suv, mask))
    # The headline numbers README and results.json promise, and nothing else of the study's.
    assert headline_keys() == ("lesion_count", "tmtv_ml", "tlg", "suv_max", "dmax_mm", "body_ml", "tmtv_body_percent")
    assert set(rounded_headline(report)) == set(headline_keys())
    document = report_document(report, case="c")
    assert {key: document[key] for key in headline_keys()} == rounded_headline(report)
    assert set(document["definitions"]) == {"lesions", "suv_peak", "tlg", "tmtv_ml", "dmax_mm", "body_ml",
                                            "tmtv_body_percent", "centroid_mm", "bbox"}
    write_lesions_csv(report, tmp_path / "c.lesions.csv")
    rows = list(csv.DictReader(open(tmp_path / "c.lesions.csv")))
    for row, lesion, entry in zip(rows, report.lesions, document["lesions"], strict=True):
        assert float(row["suv_peak"]) == pytest.approx(lesion.suv_peak, abs=1e-4) == entry["suv_peak"]
        assert [float(row[f"centroid_{axis}_mm"]) for axis in "xyz"] == entry["centroid_mm"]
        assert [int(row[f"bbox_{axis}1"]) for axis in "xyz"] == entry["bbox_max"] == list(lesion.bbox_max)
        assert int(row["voxels"]) == entry["voxels"] == lesion.voxels


def test_tmtv_as_a_share_of_the_body_from_the_ct():
    # A CT of 10 x 10 x 10 voxels of 2 x 2 x 3 mm (12 ul each) with a body of 4 x 5 x 10 voxels above -500 HU.
    ct = np.full((10, 10, 10), -1000.0)
    ct[:, 2:7, 3:7] = 40.0
    body = body_volume_ml(image(ct.astype(np.int16)))
    assert body == pytest.approx(200 * 0.012)
    suv = np.ones((10, 10, 10))
    mask = np.zeros_like(suv)
    mask[1:3, 3:5, 4:6] = 1  # 8 voxels: 0.096 ml, 4 % of the body
    report = lesion_report(*pair(suv, mask), body_ml=body)
    assert report.body_ml == pytest.approx(2.4) and report.tmtv_body_percent == pytest.approx(4.0)
    assert report.lesion_count == 1 and report.tmtv_ml == pytest.approx(0.096)
    alone = lesion_report(*pair(suv, mask))  # a mask without its CT: no body, no share
    assert alone.body_ml is None and alone.tmtv_body_percent is None
    assert report_document(alone, case="c")["tmtv_body_percent"] is None
