"""The README's command blocks marked ``<!-- run by tests/test_readme.py -->`` run as written (with this
test's Python for ``.venv/bin/python``), from the repository root."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

MARK = "<!-- run by tests/test_readme.py -->"
BLOCK = re.compile(re.escape(MARK) + r"\n```bash\n(.*?)\n```", re.S)


def marked_blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def test_the_readme_marks_blocks_to_run():
    readme = (ROOT / "README.md").read_text()
    assert marked_blocks() and len(marked_blocks()) == readme.count(MARK)


@pytest.mark.parametrize("block", marked_blocks(), ids=lambda block: block.splitlines()[1][:60])
def test_a_marked_readme_block_runs_as_written(block):
    script = "set -euo pipefail\n" + block.replace(".venv/bin/python", sys.executable)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
