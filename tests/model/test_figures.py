"""MIP pictures: anatomical orientation whatever the image's direction, outlines in their colours, PNG out."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.image import imread

from model.figures import Outline, Upright, case_figure, mip_figure, mip_grid


def body(direction=None, spacing=(2.0, 2.0, 3.0)) -> tuple[sitk.Image, sitk.Image]:
    """SUV 1 in a box, a hot lesion (SUV 8) near the patient's right, anterior, superior corner."""
    suv = np.zeros((40, 20, 16), np.float32)
    suv[2:38, 3:17, 2:14] = 1.0
    mask = np.zeros(suv.shape, np.uint8)
    mask[33:36, 4:7, 3:6] = 1  # array (z, y, x): high z, low y, low x = superior, anterior, right (LPS)
    suv[mask > 0] = 8.0
    signs = np.ones(3) if direction is None else np.diag(np.array(direction, float).reshape(3, 3))
    # The same patient stored another way: voxel (x, y, z) of an axis with sign -1 is read from the far end.
    flip_axes = tuple(2 - axis for axis in range(3) if signs[axis] < 0)  # (x, y, z) axis to (z, y, x) array axis
    size = np.array(suv.shape[::-1])
    origin = [float(v) for v in np.where(signs < 0, (size - 1) * np.array(spacing), 0.0)]
    images = []
    for array in (suv, mask):
        image = sitk.GetImageFromArray(np.flip(array, flip_axes).copy() if flip_axes else array)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection([float(v) for v in np.diag(signs).ravel()])
        images.append(image)
    return images[0], images[1]


@pytest.mark.parametrize("direction", [None, (-1, 0, 0, 0, -1, 0, 0, 0, 1), (1, 0, 0, 0, 1, 0, 0, 0, -1)])
def test_projections_are_upright_whatever_the_direction(direction):
    suv, _ = body(direction)
    coronal, aspect = Upright(suv).projection("coronal")
    # Head at the top, the patient's right on the viewer's left: the lesion in the top-left corner.
    rows, columns = np.nonzero(coronal == 8.0)
    assert rows.max() < 8 and columns.max() < 8
    assert aspect == pytest.approx(1.5)
    sagittal, _ = Upright(suv).projection("sagittal")
    rows, columns = np.nonzero(sagittal == 8.0)
    assert rows.max() < 8 and columns.max() < 8  # anterior on the left


def test_case_figure_writes_a_png_with_red_outlines(tmp_path):
    suv, mask = body()
    case_figure(tmp_path / "case.png", suv, mask, "case", tmtv_ml=0.324, lesion_count=1)
    picture = imread(tmp_path / "case.png")
    red = (picture[..., 0] > 0.8) & (picture[..., 1] < 0.3) & (picture[..., 2] < 0.3)
    assert red.sum() > 10
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_mip_figure_draws_each_outline_in_its_colour(tmp_path):
    suv, mask = body()
    other = sitk.GetImageFromArray(np.roll(sitk.GetArrayFromImage(mask), 10, axis=0))
    other.CopyInformation(mask)
    mip_figure(tmp_path / "m.png", suv, [Outline(mask, "limegreen", "ground truth"), Outline(other, "blue", "pred")],
               "two outlines")
    picture = imread(tmp_path / "m.png")
    green = (picture[..., 1] > 0.7) & (picture[..., 0] < 0.4) & (picture[..., 2] < 0.4)
    blue = (picture[..., 2] > 0.8) & (picture[..., 0] < 0.3) & (picture[..., 1] < 0.3)
    assert green.sum() > 10 and blue.sum() > 10


def test_mip_grid(tmp_path):
    panels = [(*body(), "a"), (body()[0], None, "b"), (*body(spacing=(4.0, 4.0, 4.0)), "c")]
    mip_grid(tmp_path / "grid.png", panels, columns=2)
    height, width, _ = imread(tmp_path / "grid.png").shape
    assert height > width  # two rows of tall panels
    with pytest.raises(ValueError, match="no panels"):
        mip_grid(tmp_path / "none.png", [])
