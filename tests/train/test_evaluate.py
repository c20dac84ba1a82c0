import json

import numpy as np
import SimpleITK as sitk

from train.__main__ import main as train_main


def _write(path, array, spacing=(2.0, 2.0, 3.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def test_evaluate_writes_csv_json_and_a_picture_per_case(tmp_path):
    gt, pred = np.zeros((20, 16, 16)), np.zeros((20, 16, 16))
    gt[5:9, 4:8, 4:8] = 1
    pred[5:9, 4:8, 4:6] = 1
    _write(tmp_path / "gt/a.mha", gt)
    _write(tmp_path / "pred/a.mha", pred)
    _write(tmp_path / "gt/neg.mha", np.zeros_like(gt))
    neg_pred = np.zeros_like(gt)
    neg_pred[0, 0, 0] = 1
    _write(tmp_path / "pred/neg.mha", neg_pred)
    # PETs named by other uuids, as on grand-challenge: paired by sorted order.
    _write(tmp_path / "pet/uuid-1.mha", np.full_like(gt, 2.0))
    _write(tmp_path / "pet/uuid-2.mha", np.full_like(gt, 1.0))
    code = train_main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                       "--out", str(tmp_path / "m.csv"), "--figures", str(tmp_path / "fig"),
                       "--pet", str(tmp_path / "pet")])
    assert code == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert np.isclose(result["mean"]["dice"], 2 * 32 / 96) and np.isclose(result["mean"]["fpv_ml"], 0.006)
    assert (tmp_path / "m.csv").read_text().count("\n") == 3
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["a.png", "index.html", "neg.png"]


def test_a_missing_prediction_is_an_error(tmp_path, capsys):
    _write(tmp_path / "gt/a.mha", np.zeros((4, 4, 4)))
    (tmp_path / "pred").mkdir()
    assert train_main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 2
    assert "no prediction for 1 case" in capsys.readouterr().err
