"""phantoms.layouts and phantoms.preview: a synthetic dataset written in the autoPET release's layout (with
its metadata CSV and a preview grid) and in grand-challenge's."""

import SimpleITK as sitk

from phantoms import PhantomSpec, write_dataset, write_grand_challenge


def test_layouts_and_preview(tmp_path):
    small = PhantomSpec(size=48, spacing=11.0, slices=30, slice_thickness=33.0)
    rows = write_dataset(tmp_path / "tcia", 6, seed=1, spec=small, preview=tmp_path / "grid.png")
    first = tmp_path / "tcia" / rows[0]["File Location"]
    assert {p.name for p in first.iterdir()} == {"SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz"}
    assert "diagnosis" in (tmp_path / "tcia" / "Metadata.csv").read_text().splitlines()[0]
    diagnoses = [row["diagnosis"] for row in rows]
    assert "NEGATIVE" in diagnoses and set(diagnoses) - {"NEGATIVE"}  # negatives about half by default
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_dataset(tmp_path / "gc", 2, seed=1, writer=write_grand_challenge, spec=small)
    pets = sorted((tmp_path / "gc/images/pet").iterdir())
    cts = sorted((tmp_path / "gc/images/ct").iterdir())
    assert len(pets) == len(cts) == len(list((tmp_path / "gc/labels").iterdir())) == 2
    assert sitk.ReadImage(str(pets[0])).GetSize() == (48, 48, 30)
