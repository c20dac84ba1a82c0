"""What the training store costs: disk and prepare time per study, and for the 1014 studies of the FDG release.

    python -m bench.store [--studies 1] [--keep DIR]

Writes full-size phantoms (400x400x326 at 2.04 mm, PhantomSpec's defaults) in the release's layout, their CT
given sub-HU values as the release's CTres has them (it is resampled with linear interpolation, so the store
keeps it as float32: train.prepare.stored_ct), times ``train prepare`` on them with one worker and prints the
bytes stored per study and the totals for 1014 studies. Prepare time is read and decode bound and scales with
the workers (prepare --workers N) up to the disk's throughput.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bench.peak import print_machine
from phantoms import write_dataset
from studies.autopet import AUTOPET_CT
from train.prepare import load_index, prepare

RELEASE_STUDIES = 1014


def sub_hu_ct(source: Path, seed: int) -> None:
    """Every CTres.nii.gz under ``source`` as float32 with sub-HU values (the release's, interpolated)."""
    rng = np.random.default_rng(seed)
    for path in sorted(source.rglob(AUTOPET_CT)):
        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        array += rng.uniform(-0.5, 0.5, array.shape).astype(np.float32)
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(image)
        sitk.WriteImage(out, str(path), useCompression=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        write_dataset(work / "src", args.studies, seed=0, negative_fraction=0.0, progress=False)
        sub_hu_ct(work / "src", seed=0)
        start = time.perf_counter()
        prepare(work / "src", "tcia", work / "data", workers=1, progress=False)
        seconds = (time.perf_counter() - start) / args.studies
        rows = load_index(work / "data")
        stored = sum(f.stat().st_size for f in (work / "data/studies").rglob("*.npy")) / len(rows)
        source = sum(f.stat().st_size for f in (work / "src").rglob("*.nii.gz")) / len(rows)
        dtypes = {name: str(np.load(work / "data/studies" / rows[0]["study"] / f"{name}.npy", mmap_mode="r").dtype)
                  for name in ("pet", "ct", "mask")}
    print(f"{len(rows)} studies of {rows[0]['shape']} voxels, stored as {dtypes}")
    print(f"per study: {stored / 1e6:.0f} MB stored ({source / 1e6:.0f} MB of .nii.gz read), "
          f"prepare {seconds:.1f} s on one worker")
    print(f"{RELEASE_STUDIES} studies: {RELEASE_STUDIES * stored / 1e9:.0f} GB, prepare "
          f"{RELEASE_STUDIES * seconds / 3600:.1f} h on one worker")


if __name__ == "__main__":
    main()
