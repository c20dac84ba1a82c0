"""The review page without a browser: escaping, the flag rules, parts ending with one page, --no-report, and
train evaluate's worst-first order (tests/results/test_review_page_browser.py opens it in Chromium)."""

from __future__ import annotations

import html
import json
import re

import pytest

import process
from results.review_page import LIMITS, PAGE_NAME, CohortPage, cohort_page, evaluation_page, render
from tests.conftest import write_case


def entry(case: str, tmtv: float | None = None, error: str | None = None, **extra) -> dict:
    found = {"inputs": [], "outputs": [] if error else [{"type": "metaio_image", "filename": f"{case}.mha"}],
             "error_messages": [error] if error else [], "case": case, **extra}
    if tmtv is not None:
        found.update(lesion_count=int(tmtv > 0), tmtv_ml=tmtv, tlg=tmtv, suv_max=5.0, dmax_mm=0.0, seconds=1.0)
    return found


def test_strings_from_data_are_escaped_and_nothing_leaves_the_disk(tmp_path):
    (tmp_path / "reports").mkdir()
    name = 'x"><script>alert(1)<\\script> #1?'  # a file name cannot hold a slash
    (tmp_path / "reports" / f"{name}.png").write_bytes(b"png")
    page = render(cohort_page(tmp_path, [entry(name, 3.0), entry("bad", error="<img src=x onerror=alert(1)>")]))
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'data-picture="reports/x%22%3E%3Cscript%3Ealert%281%29%3C%5Cscript%3E%20%231%3F.png"' in page
    assert "Content-Security-Policy" in page and not re.search(r"(src|href)=\"(https?:)?//", page)


def test_flag_rules_failed_no_lesion_and_tmtv_ten_times_the_median(tmp_path):
    entries = [entry("a", 1.0), entry("b", 2.0), entry("c", 3.0), entry("d", 40.0), entry("e", 0.0),
               entry("f", error="f: unreadable")]
    page = cohort_page(tmp_path, entries)
    flags = {row.values["case"]: row.flags for row in page.rows}
    # Median of the cases with lesions: 2.5 ml; 40 > 25 is flagged, 3 is not; no lesion and failed.
    assert flags == {"a": [], "b": [], "c": [], "d": ["high-tmtv"], "e": ["no-lesion"], "f": ["failed"]}
    assert ("median TMTV of cases with lesions", "2.5 ml") in page.facts
    assert [row.status for row in page.rows] == ["ok"] * 5 + ["failed"]
    assert cohort_page(tmp_path, [entry("a", 1.0) | {"seconds": None}]).rows[0].status == "ok"


def test_absolute_plausibility_flags_whatever_the_other_cases_hold(tmp_path):
    # The cohort: every case 47 to 64 litres. Relative to the median nothing stands out; each is
    # flagged by the absolute rule. Every limit flags just above its value and not at it.
    litres = [entry(f"l{k}", tmtv) for k, tmtv in enumerate((47_000.0, 52_500.0, 64_000.0))]
    page = cohort_page(tmp_path, litres)
    assert all(row.flags == ["over-tmtv_ml"] for row in page.rows)
    for limit in LIMITS:
        at, above = (entry(f"{limit.key}-{k}", 1.0) | {limit.key: value} for k, value in
                     enumerate((limit.above, limit.above * 1.01 + 1)))
        flags = {row.values["case"]: row.flags for row in cohort_page(tmp_path, [at, above]).rows}
        assert flags == {at["case"]: [], above["case"]: [limit.flag]}, limit
    html_text = render(page)
    for limit in LIMITS:  # each rule stated on the page, with its number
        count = 3 if limit.key == "tmtv_ml" else 0
        assert f"{html.escape(limit.name)}: {count}<" in html_text and html.escape(limit.rule) in html_text
    assert "TMTV % body above 5: " in html_text and "lesions above 100: " in html_text


def test_parts_end_with_one_page_and_no_report_removes_it(tmp_path, tiny_weights, small_phantom):
    pet, ct, _ = small_phantom.images()
    for stem in ("a", "b"):
        write_case(tmp_path / "in", pet, ct, stem)
    out = tmp_path / "out"
    common = ["--input", str(tmp_path / "in"), "--output", str(out), "--weights", str(tiny_weights), "--device",
              "cpu", "--num-parts", "2"]
    assert process.main([*common, "--part-id", "0"]) == 0
    assert re.findall(r'data-index="\d+"', (out / PAGE_NAME).read_text()) == ['data-index="0"']
    assert process.main([*common, "--part-id", "1"]) == 0
    page = (out / PAGE_NAME).read_text()
    assert len(re.findall(r'<tr class="ok"', page)) == 2 and ">a</td>" in page and ">b</td>" in page
    assert "finished" in page and 'http-equiv="refresh"' not in page
    part = json.loads((out / "results.part-1-of-2.json").read_text())
    assert part[0]["case"] == "b" and part[0]["slices"] == pet.GetSize()[2] and "seconds" not in part[0]
    assert process.main([*common[:-2], "--no-report"]) == 0
    assert not (out / PAGE_NAME).exists()


def test_cohort_page_reads_each_report_once(tmp_path):
    (tmp_path / "reports").mkdir()
    report = tmp_path / "reports" / "a.report.json"
    report.write_text(json.dumps({"lesions": [{"suv_max": 4.0, "suv_peak": 3.0}, {"suv_max": 9.0, "suv_peak": 7.5}],
                                  "suv": {"method": "qiba"}}))
    writer = CohortPage(tmp_path, {"version": "0.1.0", "weights_sha256": {"w.safetensors": "ab" * 32},
                                   "device": "cpu", "precision": "float32"})
    writer.write([entry("a", 2.0)], (1, 3))
    report.write_text("not json")  # read once per run: the cached summary stays
    writer.write([entry("a", 2.0)])
    page = (tmp_path / PAGE_NAME).read_text()
    assert 'data-sort="7.5"' in page and "qiba (1 cases)" in page and "ab" * 32 in page


def test_evaluation_page_worst_first():
    rows = [{"case": "good", "dice": 0.9, "fpv_ml": 0.0, "fnv_ml": 0.1},
            {"case": "clean negative", "dice": None, "fpv_ml": 0.0, "fnv_ml": None},
            {"case": "bad", "dice": 0.1, "fpv_ml": 5.0, "fnv_ml": 3.0},
            {"case": "noisy negative", "dice": None, "fpv_ml": 12.0, "fnv_ml": None}]
    page = evaluation_page(rows, {"dice": 0.5, "fpv_ml": 4.25, "cases": 4}, {"bad": "bad.png"})
    assert [row.values["case"] for row in page.rows] == ["noisy negative", "bad", "good", "clean negative"]
    assert ("means", "dice 0.500, fpv_ml 4.250, cases 4") in page.facts
    assert page.rows[1].picture == "bad.png"


def test_invisible_characters_in_names_are_shown_escaped_on_the_page_and_links_keep_the_real_name(tmp_path):
    (tmp_path / "reports").mkdir()
    bidi, zero_width = "patient_99\u202e21_tneitap", "case\u200b7"  # issue 23 item 12, and a variant
    (tmp_path / "reports" / f"{bidi}.png").write_bytes(b"png")
    page = render(cohort_page(tmp_path, [entry(bidi, 3.0), entry(zero_width, error=f"{zero_width}\u2066: bad")]))
    assert "\u202e" not in page and "\u200b" not in page and "\u2066" not in page
    assert "patient_99&lt;U+202E&gt;21_tneitap" in page and "case&lt;U+200B&gt;7" in page
    assert 'href="reports/patient_99%E2%80%AE21_tneitap.png"' in page  # the link opens the real file


@pytest.mark.parametrize("backend, shown", [(None, "cpu, bfloat16"), ("openvino", "cpu, bfloat16 on openvino")])
def test_the_header_names_the_runtime_that_made_the_masks(backend, shown):
    """A run on OpenVINO rounds otherwise than PyTorch at the same precision: the page says which ran."""
    from results.review_page import _model_facts

    model = {"version": "0", "encoder": "regnety_002", "ensemble": 1, "device": "cpu", "precision": "bfloat16",
             "min_lesion_ml": 0.0, **({"backend": backend} if backend else {})}
    assert dict(_model_facts(model))["device and precision"] == shown
