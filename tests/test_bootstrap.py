"""bootstrap.sh's last step (issue 24 item 2): a venv that cannot run is not declared ready, and a rerun checks
it again. The venv is simulated: a .venv/bin/python that runs this project's Python (the shared venv, never
written: pip and the .pth link are recorded, not run) with a fake package first on the path where the test
breaks one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.runner.test_environment import BROKEN_TORCHVISION

FAKE_PYTHON = """#!/bin/sh
case "$1" in
  -) cat > /dev/null; exit 0;;  # link_repository: the shared venv's site-packages are not written
  -m) if [ "$2" = pip ]; then echo "$*" >> "$PIP_LOG"; exit 0; fi;;
esac
PYTHONPATH="$FAKE_PACKAGES:$REPOSITORY" exec "$REAL_PYTHON" "$@"
"""


@pytest.fixture()
def clone(tmp_path) -> Path:
    """bootstrap.sh with the files it reads, and a venv holding a CPU torch and a CUDA torchvision."""
    repository = tmp_path / "clone"
    (repository / "train").mkdir(parents=True)
    for name in ("bootstrap.sh", "requirements.txt", "requirements-dev.txt", "train/requirements.txt"):
        shutil.copy2(ROOT / name, repository / name)
    (repository / "runner").symlink_to(ROOT / "runner")  # bootstrap.sh hashes runner/environment.py
    python = repository / ".venv/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    site = repository / ".venv/lib/python3.11/site-packages"
    for dist_info in ("torch-2.13.0+cpu.dist-info", "torchvision-0.28.0.dist-info"):
        (site / dist_info).mkdir(parents=True)
    (tmp_path / "fake").mkdir()
    return repository


def bootstrap(clone: Path, broken: str | None = None) -> subprocess.CompletedProcess:
    fake = clone.parent / "fake"
    shutil.rmtree(fake / "torchvision", ignore_errors=True)
    if broken is not None:
        (fake / "torchvision").mkdir()
        (fake / "torchvision" / "__init__.py").write_text(broken)
    environment = {**os.environ, "PIP_LOG": str(clone.parent / "pip.log"), "FAKE_PACKAGES": str(fake),
                   "REPOSITORY": str(ROOT), "REAL_PYTHON": sys.executable}
    (clone.parent / "pip.log").unlink(missing_ok=True)
    return subprocess.run(["bash", str(clone / "bootstrap.sh")], env=environment, capture_output=True, text=True,
                          timeout=300)


def pip_ran(clone: Path) -> bool:
    return (clone.parent / "pip.log").is_file()


def _stamp_of_a_bootstrap_that_did_not_check(clone: Path) -> None:
    old_stamp = subprocess.run("cat requirements.txt train/requirements.txt requirements-dev.txt | sha256sum",
                               shell=True, cwd=clone, capture_output=True, text=True).stdout.split()[0]
    (clone / ".venv/.requirements.sha256").write_text(old_stamp + "\n")


def test_a_venv_that_cannot_run_is_not_declared_ready_and_a_rerun_checks_it_again(clone):
    # The case: a stamp that matched (written by a bootstrap that did not check), a torchvision built
    # for another torch. The rerun checks, installs again, checks again: one line, exit 1, no stamp.
    _stamp_of_a_bootstrap_that_did_not_check(clone)
    result = bootstrap(clone, BROKEN_TORCHVISION["operator missing"])
    (line,) = result.stderr.splitlines()
    assert result.returncode == 1 and pip_ran(clone) and "ready" not in result.stdout
    assert line.startswith("bootstrap: .venv not ready: torchvision ") and "does not work with torch" in line
    assert "operator torchvision::nms does not exist" in line and "--force-reinstall torch torchvision" in line
    assert not (clone / ".venv/.requirements.sha256").exists()
    # Variant: a torchvision without the operator at all; a rerun is never quick while it is broken.
    result = bootstrap(clone, BROKEN_TORCHVISION["nms missing"])
    assert result.returncode == 1 and pip_ran(clone) and "AttributeError" in result.stderr.splitlines()[0]


def test_a_working_venv_stamped_before_the_check_is_checked_without_installing(clone):
    _stamp_of_a_bootstrap_that_did_not_check(clone)
    result = bootstrap(clone)
    assert result.returncode == 0 and "bootstrap: .venv ready (torch " in result.stdout and not pip_ran(clone)
    assert bootstrap(clone).stdout == ""  # and then up to date


def test_a_working_venv_is_ready_and_a_changed_one_is_checked_again(clone):
    result = bootstrap(clone)
    assert result.returncode == 0 and "bootstrap: .venv ready (torch " in result.stdout and pip_ran(clone)
    result = bootstrap(clone)
    assert result.returncode == 0 and not pip_ran(clone) and result.stdout == ""  # up to date: quick
    # Another torchvision installed by hand since: checked again, and refused.
    site = clone / ".venv/lib/python3.11/site-packages"
    (site / "torchvision-0.28.0.dist-info").rename(site / "torchvision-0.27.0.dist-info")
    result = bootstrap(clone, BROKEN_TORCHVISION["operator missing"])
    assert result.returncode == 1 and pip_ran(clone) and "not ready: torchvision" in result.stderr
