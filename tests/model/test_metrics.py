import numpy as np
import torch

from model.metrics import aggregate, case_metrics, dice


def test_known_answers():
    gt = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(gt)
    gt[1:3, 1:3, 1:3] = 1  # 8 voxels, found half
    pred[1:3, 1:3, 1:2] = 1
    gt[6:8, 6:8, 6:8] = 1  # 8 voxels, missed
    pred[0, 9, 9] = 1  # 1 voxel false positive
    m = case_metrics(pred, gt, (2.0, 2.0, 2.0))  # 0.008 ml a voxel
    assert np.isclose(m.dice, 2 * 4 / (16 + 5))
    assert np.isclose(m.fpv_ml, 0.008) and np.isclose(m.fnv_ml, 8 * 0.008)


def test_18_connectivity():
    pred = np.zeros((3, 3, 3), np.uint8)
    gt = np.zeros_like(pred)
    gt[0, 0, 0] = 1
    pred[0, 0, 0] = 1
    pred[1, 1, 1] = 1  # touches (0,0,0) by a corner only: a separate component with 18-connectivity
    assert np.isclose(case_metrics(pred, gt, (10, 10, 10)).fpv_ml, 1.0)


def test_negative_cases_count_for_fpv_only():
    neg = case_metrics(np.ones((2, 2, 2)), np.zeros((2, 2, 2)), (10, 10, 10))
    assert neg.dice is None and neg.fnv_ml is None and np.isclose(neg.fpv_ml, 8.0)
    pos = case_metrics(np.ones((2, 2, 2)), np.ones((2, 2, 2)), (10, 10, 10))
    summary = aggregate([neg, pos])
    assert summary["dice"] == 1.0 and summary["fpv_ml"] == 4.0 and summary["fnv_ml"] == 0.0


def test_dice_known_values_any_dtype_and_empty_agreement():
    a = np.zeros((4, 4), np.uint8)
    b = np.zeros((4, 4), np.float32)
    assert dice(a, b) == 1.0  # both empty: they agree
    a[0, :2] = 1
    assert dice(a, b) == 0.0
    b[0, 1:4] = 0.7  # nonzero counts as foreground
    assert np.isclose(dice(a, b), 2 * 1 / (2 + 3))
    assert np.isclose(dice(torch.from_numpy(a), torch.from_numpy(b) > 0), 0.4)


def test_the_seed_crop_dice_is_smoothed_and_counts_only_the_window_centred_on_each_slices_body():
    from model.metrics import seed_crop_dice

    ct = np.full((3, 40, 60), -1000.0)
    ct[:, 10:30, 20:50] = 40.0  # the body: rows 10-29, columns 20-49; a 16 x 16 window is rows 12-27, cols 27-42
    truth = np.zeros(ct.shape, dtype=np.uint8)
    pred = np.zeros(ct.shape, dtype=np.uint8)
    truth[0, 15:18, 30:33] = 1  # 9 voxels inside the window
    pred[0, 15:18, 30:32] = 1  # 6 of them found
    pred[1, 20, 45] = 1  # a false positive outside the window: not counted
    truth[2, 5, 5] = 1  # a lesion outside the window (and the body): not counted either
    assert seed_crop_dice(pred, truth, ct, (16, 16), -500.0) == 2 * (6 + 1) / (6 + 9 + 1)
    # A negative study scores 2 / (P + 1), and an empty prediction of it 2: the smoothing, not the challenge's.
    empty = np.zeros_like(truth)
    assert seed_crop_dice(empty, empty, ct, (16, 16), -500.0) == 2.0
    assert seed_crop_dice(pred, empty, ct, (16, 16), -500.0) == 2 / (6 + 1)
