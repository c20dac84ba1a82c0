"""The cohort page as a user meets it, in a headless Chromium (the system's; CI installs it with
.ci/install-tools.sh): a small run of two phantoms and one broken case."""

from __future__ import annotations

import io
import json
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from matplotlib.image import imread

import process
from phantoms import make_phantom
from tests.conftest import SMALL_SPEC, needs_tool, write_case
from tests.model.browser import Browser, find_chromium

CHROMIUM = find_chromium()
pytestmark = needs_tool(CHROMIUM, "chromium")
BROKEN = "c broken <b>&amp;"  # a name that HTML would swallow if it were not escaped


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_weights):
    root = tmp_path_factory.mktemp("review")
    for seed, stem in ((3, "a"), (4, "b")):
        pet, ct, _ = make_phantom(seed, positive=True, spec=SMALL_SPEC).images()
        write_case(root / "input", pet, ct, stem)
    pet_path, _ = write_case(root / "input", pet, ct, BROKEN)
    pet_path.write_bytes(pet_path.read_bytes()[:200])  # a truncated PET: that case fails alone
    assert process.main(["--input", str(root / "input"), "--output", str(root / "out"), "--weights",
                         str(tiny_weights), "--device", "cpu"]) == 1
    return root / "out"


@pytest.fixture(scope="module")
def browser(run):
    browser = Browser(CHROMIUM, width=1400, height=2000)
    browser.open(run / "index.html")
    yield browser
    browser.close()


def case_order(browser) -> list[str]:
    return browser.evaluate("[...document.querySelectorAll('#cases tbody tr')].filter(r => !r.hidden)"
                            ".map(r => r.cells[0].textContent)")


def test_every_case_has_a_row_and_the_failed_one_shows_its_error(run, browser):
    results = json.loads((run / "results.json").read_text())
    assert sorted(case_order(browser)) == sorted(entry["case"] for entry in results) == ["a", "b", BROKEN]
    failed = browser.evaluate("(() => {const r = [...document.querySelectorAll('#cases tbody tr.failed')];"
                              "return r.map(x => x.textContent);})()")
    (error,) = [entry["error_messages"][0] for entry in results if entry["error_messages"]]
    assert len(failed) == 1 and error in failed[0]
    assert browser.evaluate("document.querySelector('.flags').textContent").count("failed: 1") == 1


def test_every_picture_exists_and_loads(run, browser):
    pictures = browser.evaluate("[...document.images].map(i => [i.src, i.complete && i.naturalWidth > 0])")
    assert len(pictures) == 2 and all(loaded for _, loaded in pictures)
    for source, _ in pictures:
        path = unquote(urlparse(source).path)
        assert path.startswith(str(run / "reports")) and imread(path).shape[0] > 100
    links = browser.evaluate("[...document.querySelectorAll('#cases a')].map(a => a.href)")
    assert links and all(urlparse(link).scheme == "file" for link in links)
    missing = [link for link in links if not (run.parent / unquote(urlparse(link).path)).exists()]
    assert not missing


def test_a_click_on_a_header_sorts_and_the_filter_hides_rows(browser):
    before = case_order(browser)
    browser.click("#cases th:nth-child(1)")  # case, ascending
    assert case_order(browser) == sorted(before, key=str.lower)
    browser.click("#cases th:nth-child(1)")  # again: descending
    assert case_order(browser) == sorted(before, key=str.lower, reverse=True)
    browser.click("#filter")
    browser.type("broken")
    assert case_order(browser) == [BROKEN]
    browser.evaluate("(() => {const f = document.getElementById('filter'); f.value = '';"
                     "f.dispatchEvent(new Event('input')); return 1;})()")
    assert len(case_order(browser)) == 3


def test_no_network_no_console_error_and_a_screenshot_that_is_not_blank(browser):
    urls = [event["params"]["request"]["url"] for event in browser.events
            if event.get("method") == "Network.requestWillBeSent"]
    assert urls and all(url.startswith(("file://", "data:")) for url in urls), urls
    errors = [event for event in browser.events if event.get("method") == "Runtime.exceptionThrown"
              or (event.get("method") == "Runtime.consoleAPICalled" and event["params"]["type"] == "error")
              or (event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error")]
    assert not errors, errors
    shot = imread(io.BytesIO(browser.screenshot()), format="png")
    # Mostly white paper, but text, table and pictures: a blank page has variance 0.
    assert shot.shape[0] > 500 and float(np.var(shot[..., :3])) > 1e-3
    assert (shot[..., :3].min(axis=2) < 0.5).mean() > 0.005
