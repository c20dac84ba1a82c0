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


def _evaluate(tmp_path, capsys) -> tuple[int, str]:
    code = train_main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                       "--out", str(tmp_path / "m.csv")])
    return code, capsys.readouterr().err


def test_a_prediction_on_another_grid_is_refused_naming_both(tmp_path, capsys):
    gt = np.zeros((8, 8, 8))
    gt[2:4, 2:4, 2:4] = 1
    _write(tmp_path / "gt/a.mha", gt)
    _write(tmp_path / "pred/a.mha", gt)
    moved = sitk.ReadImage(str(tmp_path / "pred/a.mha"))
    moved.SetOrigin((500.0, 0.0, 0.0))  # same size, same voxels, 500 mm away: not Dice 1
    sitk.WriteImage(moved, str(tmp_path / "pred/a.mha"))
    code, err = _evaluate(tmp_path, capsys)
    assert code == 2 and err.count("\n") == 1
    assert "pred/a.mha: its grid" in err and "gt/a.mha" in err and "origin (500.0" in err
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "m.json").exists()


def test_empty_folders_are_one_line_and_leave_no_csv(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    code, err = _evaluate(tmp_path, capsys)
    assert code == 2 and "no ground truth image" in err and err.count("\n") == 1
    assert not (tmp_path / "m.csv").exists()


def test_only_negative_cases_give_strict_json(tmp_path, capsys):
    from model.files import loads_strict

    _write(tmp_path / "gt/n.mha", np.zeros((4, 4, 4)))
    _write(tmp_path / "pred/n.mha", np.zeros((4, 4, 4)))
    assert _evaluate(tmp_path, capsys)[0] == 0
    assert loads_strict((tmp_path / "m.json").read_text())["mean"]["dice"] is None


def test_the_false_positive_volume_is_split_by_the_phantoms_own_organs(tmp_path, capsys):
    """Phantoms written with their tissue labels (synth --tissues); a prediction that marks each organ of FDG's
    physiological uptake, a true lesion and a speck elsewhere: each FP lands in its organ's column, the hit
    lesion in none, and the columns sum to the official FPV, per case and in total."""
    from phantoms.tissues import FPV_ORGANS

    assert train_main(["synth", "--out", str(tmp_path / "src"), "--cases", "2", "--seed", "4", "--size", "64",
                       "--spacing", "8", "--slices", "40", "--thickness", "24", "--negative-fraction", "0",
                       "--layout", "grand-challenge", "--tissues"]) == 0
    expected = {}
    for label in sorted((tmp_path / "src/labels").iterdir()):
        truth = sitk.ReadImage(str(label))
        tissues = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "src/tissues" / label.name)))
        gt = sitk.GetArrayFromImage(truth)
        pred = gt.copy()  # every lesion found
        voxel = np.prod(truth.GetSpacing()) / 1000
        counts = {}
        for organ, labels in FPV_ORGANS.items():
            where = np.isin(tissues, labels) & ~gt.astype(bool)
            zs = np.flatnonzero(where.any(axis=(1, 2)))
            if zs.size:  # one organ voxel far from every lesion: its own component
                z = zs[len(zs) // 2]
                y, x = np.argwhere(where[z])[0]
                if not gt[max(z - 1, 0):z + 2, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].any():
                    pred[z, y, x] = 1
                    counts[organ] = voxel
        air = np.argwhere((tissues == 0) & ~gt.astype(bool))[0]
        pred[tuple(air)] = 1
        image = sitk.GetImageFromArray(pred)
        image.CopyInformation(truth)
        (tmp_path / "pred").mkdir(exist_ok=True)
        sitk.WriteImage(image, str(tmp_path / "pred" / label.name))
        expected[label.name.removesuffix(".mha")] = {**{o: counts.get(o, 0.0) for o in FPV_ORGANS}, "elsewhere": voxel}
    capsys.readouterr()
    assert train_main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "src/labels"),
                       "--tissues", str(tmp_path / "src/tissues"), "--out", str(tmp_path / "m.csv")]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "m.json").read_text())
    assert sum(1 for volumes in expected.values() for v in volumes.values() if v > 0) >= 6
    for row in result["cases"]:
        for organ, volume in expected[row["case"]].items():
            assert np.isclose(row[f"fpv_{organ}_ml"], volume), (row["case"], organ)
        assert np.isclose(sum(row[f"fpv_{o}_ml"] for o in expected[row["case"]]), row["fpv_ml"])
    table = result["mean"]["fpv_by_organ"]
    assert np.isclose(sum(t["total_ml"] for t in table.values()), sum(r["fpv_ml"] for r in result["cases"]))
    assert "myocardium" in printed and "per case" in printed and "elsewhere" in printed
