"""The review page of a large cohort in headless Chromium: its size, its time to open and how many rows a screen
holds, and the README's screenshot (docs/review_page_300.png).

    .venv/bin/python -m bench.review_page [--cases 300] [--phantoms 6] [--shot docs/review_page_300.png]

Segments a few phantoms of ``python -m train synth`` with the shipped weights (one of them a truncated PET, which
fails), then makes a review folder of ``--cases`` cases from them, each a copy of one phantom's outputs under
its own name (hard links: the page links as many pictures as a real cohort of that size), and writes its page
with results.review_page as process.py does. Prints one line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from results.outputs import page_links
from results.review_page import PAGE_NAME, cohort_page, entry_case, write_page


def copied_cohort(source: Path, out: Path, count: int) -> list[dict]:
    """``count`` results.json entries in ``out`` made from the finished run in ``source`` (its results.json and
    reports): case k is a source case (the failed ones once), its report files hard-linked as ``<name>-<k>``."""
    originals = json.loads((Path(source) / "results.json").read_text())
    (Path(out) / "reports").mkdir(parents=True, exist_ok=True)
    # A failed case once, as a cohort has a few: the copies cycle through the cases that were written.
    written = [entry for entry in originals if not entry["error_messages"]] or originals
    entries = []
    for k in range(count):
        original = originals[k] if k < len(originals) else written[k % len(written)]
        name, copy = entry_case(original), f"{entry_case(original)}-{k:03d}"
        for link in page_links():
            found = Path(source) / "reports" / link.named(name)
            if found.is_file():
                os.link(found, Path(out) / "reports" / link.named(copy))
        entries.append({**original, "case": copy})
    return entries


def write_cohort_page(out: Path, entries: Sequence[Mapping]) -> Path:
    path = Path(out) / PAGE_NAME
    write_page(path, cohort_page(Path(out), entries, None))
    return path


# The page's figures as the browser sees them: navigation to load event, the rows a screen holds.
OPEN_FIGURES = """(() => {const n = performance.getEntriesByType('navigation')[0];
const rows = [...document.querySelectorAll('#cases tbody tr')];
const first = rows[0].getBoundingClientRect();
return {load_ms: n.loadEventEnd - n.startTime, dom_ms: n.domContentLoadedEventEnd - n.startTime,
        row_px: first.height, rows_per_screen: Math.floor(innerHeight / first.height)};})()"""


def open_page(browser, page: Path) -> dict:
    """Open ``page`` in ``browser`` (tests.results.browser.Browser): the browser's own timings and the wall time."""
    start = time.perf_counter()
    browser.open(page)
    figures = browser.evaluate(OPEN_FIGURES)
    figures["wall_s"] = time.perf_counter() - start
    figures["bytes"] = Path(page).stat().st_size
    return figures


def _segment_phantoms(work: Path, phantoms: int) -> Path:
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "train", "synth", "--out", str(work / "in"), "--cases", str(phantoms),
                    "--seed", "5", "--layout", "grand-challenge", "--size", "96", "--spacing", "6", "--slices", "64",
                    "--thickness", "12", "--negative-fraction", "0.2"], check=True, stdout=subprocess.DEVNULL)
    pet = sorted((work / "in" / "images" / "pet").iterdir())[-1]
    pet.write_bytes(pet.read_bytes()[:300])  # a truncated PET: one case that fails
    # process.py as a user runs it (bench imports no entry point); exit 1: the truncated case failed.
    subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "process.py"), "--input",
                    str(work / "in"), "--output", str(work / "run"), "--device", "cpu"], stdout=subprocess.DEVNULL)
    return work / "run"


def main(argv: list[str] | None = None) -> None:
    from tests.results.browser import Browser, find_chromium

    parser = argparse.ArgumentParser(prog="python -m bench.review_page", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--phantoms", type=int, default=6)
    parser.add_argument("--shot", type=Path, default=None, help="a screenshot of the page, a case chosen")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="review-bench-"))
    try:
        entries = copied_cohort(_segment_phantoms(work, args.phantoms), work / "cohort", args.cases)
        page = write_cohort_page(work / "cohort", entries)
        browser = Browser(find_chromium() or parser.exit(1, "no chromium\n"), width=1400, height=900)
        try:
            figures = open_page(browser, page)
            if args.shot is not None:
                browser.click("#cases tbody tr:nth-child(2) td:nth-child(3)")
                args.shot.write_bytes(browser.screenshot())
        finally:
            browser.close()
        print(f"{args.cases} cases: page {figures['bytes'] / 1024:.0f} KiB, opened in {figures['load_ms']:.0f} ms "
              f"(DOM ready {figures['dom_ms']:.0f} ms, {figures['wall_s']:.2f} s wall with Chromium's protocol), "
              f"rows {figures['row_px']:.0f} px: {figures['rows_per_screen']} a 900 px screen", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
