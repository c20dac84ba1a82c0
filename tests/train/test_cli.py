"""``python -m train``: every subcommand's arguments are checked first, one line and exit 2, never a traceback."""

import pytest

from train.__main__ import main as train_main


@pytest.mark.parametrize(("argv", "needle"), [
    (["synth", "--out", "{d}/s", "--size", "0"], "--size: 0: must be a finite number from 16 to 2048"),
    (["synth", "--out", "{d}/s", "--cases", "-1"], "--cases: -1: must be a finite number from 1"),
    (["synth", "--out", "{d}/s", "--cases", "0"], "--cases: 0: must be a finite number from 1"),
    (["synth", "--out", "{d}/s", "--negative-fraction", "2"],
     "--negative-fraction: 2: must be a finite number from 0 to 1"),
    (["synth", "--out", "{d}/s", "--feet-fraction", "nan"], "--feet-fraction: nan: must be a finite number"),
    (["synth", "--out", "{d}/s", "--spacing", "inf"], "--spacing: inf: must be a finite number"),
    (["synth", "--out", "{d}/s", "--slices", "100000"], "--slices: 100000: must be a finite number"),
    (["synth", "--out", "{d}/s", "--thickness", "-3"], "--thickness: -3: must be a finite number"),
    (["synth", "--out", "{d}/file"], "is a file, not a folder"),
    (["synth", "--out", "{d}/s", "--size", "abc"], "invalid int value: 'abc'"),
    (["synth"], "the following arguments are required: --out"),
    (["prepare", "--source", "{d}/nowhere", "--out", "{d}/p"], "--source: {d}/nowhere: folder missing"),
    (["prepare", "--source", "{d}", "--out", "{d}/p", "--workers", "0"], "--workers: 0: must be a finite number"),
    (["prepare", "--source", "{d}", "--out", "{d}/p", "--spacing", "0", "2"], "--spacing: 0: must be a finite number"),
    (["prepare", "--source", "{d}", "--out", "{d}/file"], "is a file, not a folder"),
    (["splits", "--data", "{d}", "--folds", "1"], "--folds: 1: must be a finite number from 2"),
    (["splits", "--data", "{d}/nowhere"], "folder missing"),
    (["fit", "--data", "{d}", "--out", "{d}/r", "--fold", "-1"], "--fold: -1: must be a finite number from 0"),
    (["evaluate", "--pred", "{d}/nowhere", "--gt", "{d}"], "--pred: {d}/nowhere: folder missing"),
    (["nosuch"], "invalid choice: 'nosuch'"),
    # Issue 23 item 10: every argument is checked by its type, a seed and a path under a file included.
    (["synth", "--out", "{d}/s", "--seed", "-1"], "--seed: -1: must be a finite number from 0 to 4294967295"),
    (["splits", "--data", "{d}", "--seed", "-5"], "--seed: -5: must be a finite number from 0"),
    (["splits", "--data", "{d}", "--seed", "1" + "0" * 400], "must be a finite number from 0 to 4294967295"),
    (["synth", "--out", "{d}/file/sub"], "--out: {d}/file/sub: lies under {d}/file, which is a file"),
    (["prepare", "--source", "{d}", "--out", "{d}/file/a/b"], "lies under {d}/file, which is a file"),
    (["fit", "--data", "{d}", "--out", "{d}/file/run"], "lies under {d}/file, which is a file"),
    (["evaluate", "--pred", "{d}", "--gt", "{d}", "--out", "{d}/file/x.csv"], "lies under {d}/file, which is a file"),
    (["evaluate", "--pred", "{d}", "--gt", "{d}", "--figures", "{d}/file/figs"], "lies under {d}/file"),
    (["synth", "--out", "{d}/s", "--preview", "{d}/file/p.png"], "lies under {d}/file, which is a file"),
    (["fit", "--data", "{d}", "--out", "{d}/r", "--config", "{d}/nowhere.json"], "--config: {d}/nowhere.json: file"),
    (["synth", "--out", "{d}/s", "--layout", "nnunet"], "invalid choice: 'nnunet'"),
    (["prepare", "--source", "{d}", "--out", "{d}/p", "--layout", "grand-challenge"], "invalid choice"),
    (["prepare", "--source", "{d}", "--out", "{d}/p", "--layout", "nnU-Net"], "invalid choice"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "file").write_text("a file")
    code = train_main([arg.format(d=tmp_path) for arg in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert needle.format(d=tmp_path) in err
    assert not (tmp_path / "s").exists()  # nothing was written


def test_a_layout_is_refused_where_it_has_no_part_never_read_as_another(tmp_path):
    """One table of training layouts: prepare reads only those that can be found, synth writes only those that
    can be written, and a name outside the table is refused (it once meant nnunet to prepare)."""
    from model.errors import InputError
    from train.layouts import LAYOUTS, layouts_for, training_layout
    from train.prepare import find_studies

    assert set(LAYOUTS) == {"tcia", "nnunet", "grand-challenge"}
    assert layouts_for("find") == ["tcia", "nnunet"] and layouts_for("write") == ["tcia", "grand-challenge"]
    for name, use in (("NNUNET", "find"), ("grand-challenge", "find"), ("nnunet", "write"), ("", "write")):
        with pytest.raises(InputError, match=f"layout {name!r}"):
            training_layout(name, use)
    with pytest.raises(InputError, match="layout 'nnU-Net': prepare reads only tcia, nnunet"):
        find_studies(tmp_path, "nnU-Net")


@pytest.mark.parametrize(("argv", "needle"), [
    (["--seeds", "0", "-1"], "--seeds: -1: must be a finite number from 0 to 4294967295"),
    (["--phantom-seeds", "1", "-99"], "--phantom-seeds: -99: must be a finite number from 0"),
    (["--work", "{d}/file/run"], "--work: {d}/file/run: lies under {d}/file, which is a file"),
    (["--threads", "0"], "--threads: 0: must be a finite number from 1"),
    (["--alphas", "1", "1"], "--alphas needs at least two different values"),
])
def test_the_alpha_experiment_checks_its_arguments_by_the_same_types(tmp_path, capsys, argv, needle):
    """Issue 23 item 10: every train command parses its arguments with model.arguments' checked types."""
    from train.alpha_experiment import main as alpha_main

    (tmp_path / "file").write_text("a file")
    code = alpha_main(["--work", str(tmp_path / "w"), *(arg.format(d=tmp_path) for arg in argv)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert needle.format(d=tmp_path) in err and not (tmp_path / "w").exists()
