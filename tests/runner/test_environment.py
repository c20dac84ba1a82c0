"""The setup check (issue 24 item 2): a torchvision built for another torch, simulated by a fake package first
on the path that fails as the real mismatch fails, is one line naming the problem and the fix, both from
``python -m runner.environment`` (bootstrap.sh's last step) and from process.py's start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.environment import pair_fix
from tests.conftest import ROOT

# What the import of a torchvision built for another torch raises (torchvision/_meta_registrations.py
# registering a fake for an operator the installed torch's library lacks), and a torchvision whose compiled
# operators are not there at all.
BROKEN_TORCHVISION = {
    "operator missing": 'raise RuntimeError("operator torchvision::nms does not exist")\n',
    "nms missing": "import types\n__version__ = '0.28.0'\nops = types.SimpleNamespace()\n",
}
BROKEN_TIMM = "raise ImportError(\"cannot import name 'resample_abs_pos_embed' from 'timm.layers'\")\n"


def _with_fake(tmp_path: Path, package: str, source: str) -> dict[str, str]:
    (tmp_path / "fake" / package).mkdir(parents=True)
    (tmp_path / "fake" / package / "__init__.py").write_text(source)
    return {**os.environ, "PYTHONPATH": f"{tmp_path / 'fake'}:{ROOT}"}


@pytest.mark.parametrize("kind", list(BROKEN_TORCHVISION))
def test_a_torchvision_built_for_another_torch_is_one_line_with_its_fix(tmp_path, tiny_weights, kind):
    environment = _with_fake(tmp_path, "torchvision", BROKEN_TORCHVISION[kind])
    check = subprocess.run([sys.executable, "-m", "runner.environment"], cwd=ROOT, env=environment,
                           capture_output=True, text=True, timeout=300)
    (line,) = check.stderr.splitlines()
    assert check.returncode == 1 and line.startswith("setup: torchvision ") and "does not work with torch" in line
    assert ("operator torchvision::nms does not exist" if kind == "operator missing" else "AttributeError") in line
    assert f"{sys.executable} -m pip install --force-reinstall torch torchvision" in line
    # process.py says the same before it loads anything: one line and exit 2, not a 30-line traceback.
    run = subprocess.run([sys.executable, "process.py", "--input", str(tmp_path), "--output", str(tmp_path / "out"),
                          "--weights", str(tiny_weights), "--device", "cpu"], cwd=ROOT, env=environment,
                         capture_output=True, text=True, timeout=300)
    (line,) = run.stderr.splitlines()
    assert run.returncode == 2 and line.startswith("error: setup: torchvision ") and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_another_package_a_run_needs_that_cannot_be_imported_is_one_line(tmp_path):
    check = subprocess.run([sys.executable, "-m", "runner.environment"], cwd=ROOT,
                           env=_with_fake(tmp_path, "timm", BROKEN_TIMM), capture_output=True, text=True, timeout=300)
    (line,) = check.stderr.splitlines()
    assert check.returncode == 1 and line.startswith("setup: timm cannot be imported (ImportError: cannot import")
    assert line.endswith("run ./bootstrap.sh")


def test_the_fix_installs_the_pair_from_the_index_the_torch_came_from():
    assert "--index-url https://download.pytorch.org/whl/cpu (where that index is unreachable" in pair_fix("2.13.0+cpu")
    assert "--index-url https://download.pytorch.org/whl/cu124 " in pair_fix("2.5.1+cu124")
    assert pair_fix("2.5.1") == f"{sys.executable} -m pip install --force-reinstall torch torchvision"


def test_this_environment_passes_the_check():
    check = subprocess.run([sys.executable, "-m", "runner.environment"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert check.returncode == 0 and check.stderr == ""
