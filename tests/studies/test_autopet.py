"""The autoPET release's file names are named in studies.autopet alone: every module that reads or writes such a
tree (studies.cases, studies.dicom, train/, phantoms/, bench/) takes them from there."""

from __future__ import annotations

import ast

from phantoms.layouts import StudyName, write_tcia
from studies.autopet import AUTOPET_CT, AUTOPET_MASK, AUTOPET_PET
from studies.cases import AUTOPET_FIXED_STEMS, autopet_cases
from tests.test_architecture import sources
from train.layouts import find_tcia
from train.metadata import Diagnoses


def test_the_release_file_names_are_named_once():
    names = {AUTOPET_PET, AUTOPET_CT, AUTOPET_MASK}
    assert names == {"SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz"}
    restated = [f"{path.name}:{node.lineno} {node.value}" for path in sources() if path.name != "autopet.py"
                for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
                and isinstance(node.value, str) and node.value in names]
    assert restated == []
    assert AUTOPET_FIXED_STEMS == {"SUV", "CTres", "SEG", "PET", "CT"}


def test_a_release_tree_written_is_the_one_read(tmp_path, small_phantom):
    pet, ct, mask = small_phantom.images()
    write_tcia(tmp_path, StudyName(0, "PETCT_0a1b", "01-01-2001-NA-PET study-12345"), (pet, ct, mask, None))
    folder = tmp_path / "PETCT_0a1b" / "01-01-2001-NA-PET study-12345"
    assert sorted(path.name for path in folder.iterdir()) == sorted([AUTOPET_CT, AUTOPET_MASK, AUTOPET_PET])
    (case,) = autopet_cases(tmp_path)  # inference reads the tree
    assert case.name == "PETCT_0a1b_01-01-2001-NA-PET_study-12345"
    (study,) = find_tcia(tmp_path, Diagnoses())  # and training does
    assert (study.pet, study.ct, study.mask) == (folder / AUTOPET_PET, folder / AUTOPET_CT, folder / AUTOPET_MASK)
