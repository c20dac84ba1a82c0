"""MIP pictures: anatomical orientation whatever the image's direction (letters where the patient really is),
outlines in their colours, a one-voxel lesion findable, and a bounded size, time and memory whatever the study."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.figure import Figure
from matplotlib.image import imread

from results.figures import Outline, Projector, case_figure, mip_figure, mip_grid
from results.report import lesion_report


def stored(canonical: np.ndarray, perm=(0, 1, 2), signs=(1, 1, 1), spacing=(2.0, 2.0, 3.0)) -> sitk.Image:
    """The patient ``canonical`` (array (z, y, x), LPS, identity direction) stored another way: stored index
    axis a runs along patient axis perm[a], backwards where signs[a] < 0. Every voxel keeps its place in space."""
    as_xyz = canonical.transpose(2, 1, 0)
    array = np.transpose(as_xyz, perm)
    for axis, sign in enumerate(signs):
        if sign < 0:
            array = np.flip(array, axis)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing([spacing[p] for p in perm])
    direction = np.zeros((3, 3))
    for axis, (p, sign) in enumerate(zip(perm, signs, strict=True)):
        direction[p, axis] = sign
    image.SetDirection([float(v) for v in direction.ravel()])
    corner = [0.0 if sign > 0 else (as_xyz.shape[p] - 1) * spacing[p] for p, sign in zip(perm, signs, strict=True)]
    origin = np.zeros(3)
    for p, value in zip(perm, corner, strict=True):
        origin[p] = value
    image.SetOrigin([float(v) for v in origin])
    return image


def body() -> tuple[np.ndarray, np.ndarray]:
    """SUV 1 in a box, a hot lesion (SUV 8) near the patient's right, anterior, superior corner."""
    suv = np.zeros((40, 20, 16), np.float32)
    suv[2:38, 3:17, 2:14] = 1.0
    mask = np.zeros(suv.shape, np.uint8)
    mask[33:36, 4:7, 3:6] = 1  # array (z, y, x): high z, low y, low x = superior, anterior, right (LPS)
    suv[mask > 0] = 8.0
    return suv, mask


STORAGES = list(itertools.product(itertools.permutations(range(3)), itertools.product((1, -1), repeat=3)))


@pytest.mark.parametrize(("perm", "signs"), STORAGES)
def test_projections_are_upright_whatever_the_storage(perm, signs):
    suv = stored(body()[0], perm, signs)
    projector = Projector(suv)
    coronal = projector.projection("coronal")
    # Head at the top, the patient's right on the viewer's left: the lesion in the top-left corner.
    rows, columns = np.nonzero(coronal == 8.0)
    assert coronal.shape == (40, 16) and rows.max() < 8 and columns.max() < 8
    sagittal = projector.projection("sagittal")
    rows, columns = np.nonzero(sagittal == 8.0)
    assert sagittal.shape == (40, 20) and rows.max() < 8 and columns.max() < 8  # anterior on the left
    assert projector.size_mm("coronal") == pytest.approx((32.0, 120.0))
    # The same pixels as ITK's own reorientation.
    upright = sitk.GetArrayFromImage(sitk.DICOMOrient(suv, "LPS"))
    np.testing.assert_array_equal(coronal, upright.max(axis=1)[::-1])


def dark_columns(picture: np.ndarray, box) -> np.ndarray:
    """Columns (in the PNG) of the near-black grey pixels inside a panel: the hot voxels (inverted grey)."""
    x0, y0, x1, y1 = (round(v) for v in box)
    panel = picture[y0:y1, x0:x1, :3]
    grey = (panel.max(axis=2) - panel.min(axis=2)) < 0.05
    return np.nonzero(grey & (panel.mean(axis=2) < 0.35))[1] + x0


@pytest.mark.parametrize(("perm", "signs"), [((0, 1, 2), (1, 1, 1)), ((0, 1, 2), (-1, 1, -1)),
                                             ((2, 0, 1), (1, -1, 1)), ((1, 2, 0), (-1, -1, -1))])
def test_the_hot_left_side_shows_beside_the_letter_l(tmp_path, perm, signs):
    canonical = np.zeros((60, 30, 40), np.float32)
    canonical[4:56, 6:24, 4:36] = 1.0
    canonical[20:40, 8:14, 26:34] = 9.0  # high x: the patient's left (LPS); low y: anterior
    rendered = mip_figure(tmp_path / "left.png", stored(canonical, perm, signs))
    picture = imread(tmp_path / "left.png")
    assert picture.shape[1::-1] == rendered.size_px
    for view, hot_letter, cold_letter in (("coronal", "L", "R"), ("sagittal", "A", "P")):
        hot = dark_columns(picture, rendered.panels[view]).mean()
        letters = rendered.letters[view]
        assert abs(hot - letters[hot_letter][0]) < abs(hot - letters[cold_letter][0]), view


def red_pixels(path) -> int:
    picture = imread(path)
    return int(((picture[..., 0] > 0.8) & (picture[..., 1] < 0.3) & (picture[..., 2] < 0.3)).sum())


def test_case_figure_outlines_in_red_with_numbers_and_title(tmp_path):
    suv_array, mask_array = body()
    suv, mask = stored(suv_array), stored(mask_array)
    report = lesion_report(suv, mask)
    rendered = case_figure(tmp_path / "case.png", suv, mask, "case", report)
    assert red_pixels(tmp_path / "case.png") > 10
    assert set(rendered.panels) == {"coronal", "sagittal"}
    assert set(rendered.letters["coronal"]) == {"R", "L", "H", "F"}
    assert set(rendered.letters["sagittal"]) == {"A", "P", "H", "F"}
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_a_one_voxel_lesion_is_ringed(tmp_path):
    suv_array = np.zeros((300, 120, 200), np.float32)
    suv_array[10:290, 20:100, 30:170] = 1.0
    mask_array = np.zeros(suv_array.shape, np.uint8)
    mask_array[150, 60, 100] = 1
    suv_array[150, 60, 100] = 3.0
    suv, mask = stored(suv_array, spacing=(2.0, 2.0, 2.0)), stored(mask_array, spacing=(2.0, 2.0, 2.0))
    case_figure(tmp_path / "one.png", suv, mask, "one voxel", lesion_report(suv, mask))
    # A contour of one (pooled) pixel is a few red pixels; the ring around it, about 2 x pi x 9 px per view.
    assert red_pixels(tmp_path / "one.png") > 60
    mip_figure(tmp_path / "none.png", suv)
    assert red_pixels(tmp_path / "none.png") == 0


def test_mip_figure_draws_each_outline_in_its_colour(tmp_path):
    suv_array, mask_array = body()
    suv, mask = stored(suv_array), stored(mask_array)
    other = stored(np.roll(mask_array, 10, axis=0))
    mip_figure(tmp_path / "m.png", suv, [Outline(mask, "limegreen", "ground truth"), Outline(other, "blue", "pred")],
               "two outlines")
    picture = imread(tmp_path / "m.png")
    green = (picture[..., 1] > 0.7) & (picture[..., 0] < 0.4) & (picture[..., 2] < 0.4)
    blue = (picture[..., 2] > 0.8) & (picture[..., 0] < 0.3) & (picture[..., 1] < 0.3)
    assert green.sum() > 10 and blue.sum() > 10


def test_the_picture_is_bounded_whatever_the_study(tmp_path):
    """Issue 17 item 8: 3000 x 3000 x 2 voxels at 0.5 mm once made a 300000 x 670 PNG (44 s, 5.2 GB)."""
    suv_array = np.zeros((2, 3000, 3000), np.float32)
    suv_array[:, 500:2500, 400:2600] = 1.0
    suv_array[1, 1500, 1500] = 9.0
    suv = stored(suv_array, spacing=(0.5, 0.5, 0.5))
    mask_array = (suv_array > 5).astype(np.uint8)
    mask = stored(mask_array, spacing=(0.5, 0.5, 0.5))
    del suv_array, mask_array
    tracemalloc.start()
    rendered = mip_figure(tmp_path / "flat.png", suv, [Outline(mask, "red")], "flat")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    width, height = rendered.size_px
    assert imread(tmp_path / "flat.png").shape[:2] == (height, width)
    assert width <= 1500 and height <= 800
    assert rendered.stretched["coronal"] and rendered.stretched["sagittal"]
    assert peak < 40e6  # Python-side allocations well under the 72 MB volume: no copy of it is made
    assert red_pixels(tmp_path / "flat.png") > 20  # the one hot voxel is still ringed after pooling


def test_mip_grid(tmp_path):
    suv_array, mask_array = body()
    panels = [(stored(suv_array), stored(mask_array), "a"), (stored(suv_array), None, "b"),
              (stored(suv_array, spacing=(4.0, 4.0, 4.0)), stored(mask_array, spacing=(4.0, 4.0, 4.0)), "c")]
    mip_grid(tmp_path / "grid.png", panels, columns=2)
    height, width, _ = imread(tmp_path / "grid.png").shape
    assert height > width  # two rows of tall panels
    with pytest.raises(ValueError, match="no panels"):
        mip_grid(tmp_path / "none.png", [])


def test_invisible_characters_in_a_title_are_drawn_escaped_not_obeyed(tmp_path, monkeypatch):
    drawn = []
    real = Figure.suptitle

    def suptitle(self, text, **kwargs):
        drawn.append((text, kwargs.get("parse_math")))
        return real(self, text, **kwargs)

    monkeypatch.setattr(Figure, "suptitle", suptitle)
    suv_array, mask_array = body()
    suv, mask = stored(suv_array), stored(mask_array)
    case_figure(tmp_path / "case.png", suv, mask, "patient_99\u202e21_tneitap", lesion_report(suv, mask))
    mip_figure(tmp_path / "eval.png", suv, [Outline(mask, "red")], "a$b$\u2067c\nDice 1.000")
    (case_title, case_math), (eval_title, eval_math) = drawn
    assert case_title.startswith("patient_99<U+202E>21_tneitap\nTMTV") and case_math is False
    assert eval_title == "a$b$<U+2067>c\nDice 1.000" and eval_math is False  # '$' is not TeX either
