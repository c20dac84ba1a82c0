"""One self-contained HTML page to review many cases at once: a header of facts, flag counts, and one row
per case with its numbers, its picture (a thumbnail that opens the full picture) and links to its files;
columns sort on a click, a text box filters. The one page builder: ``process.py``'s cohort page
(``OUT/index.html``, ``cohort_page``) and ``train evaluate``'s held-out page (``evaluation_page``).

It opens from the disk with no network: CSS and JavaScript inline, pictures as relative links to files
beside the page, a Content-Security-Policy that forbids anything else. Every string from data (case names,
errors, file names) is shown through model.errors.one_line (invisible characters such as bidi overrides made
visible) and HTML-escaped, and every link URL-quoted.
"""

from __future__ import annotations

import datetime
import html
import json
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from model.card import ModelCard
from model.errors import WriteError, one_line, shown
from model.files import atomic_write_bytes
from results.report import Quantity, definitions, headline_keys, headline_quantities, lesion_quantities
from results.review_assets import KEYS, PREVIEW, SCRIPT, STYLE

PAGE_NAME = "index.html"
# A case whose TMTV exceeds this many times the median TMTV of the cases with lesions is flagged.
TMTV_FLAG_FACTOR = 10.0


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    digits: int | None = 1  # None: text; else a number shown with this many decimals
    hint: str = ""  # the header's tooltip


@dataclass
class Row:
    values: dict[str, object]  # column key -> value (None: blank, sorted last)
    picture: str | None = None  # relative path of the full picture
    links: list[tuple[str, str]] = field(default_factory=list)  # (text, relative path)
    flags: list[str] = field(default_factory=list)  # keys of Page.flags
    status: str = ""  # "ok", "failed", "already done": the row's status cell (and class)
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # how the case was read (DICOM: files skipped, another frame)


@dataclass
class Page:
    title: str
    facts: list[tuple[str, str]]  # the header: (what, value)
    columns: list[Column]
    rows: list[Row]
    flags: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (name, the rule in words)
    note: str = ""  # a line under the header (the sort order, a run in progress)
    refresh_s: int | None = None  # reload every so often: a run in progress
    warning: str = ""  # under the title, in red: the weights' (a demo model's "not for clinical or research use")


def _html(text: object, quote: bool = False) -> str:
    """Text from data (a case or file name, an error) for the page: every character seen (model.errors.one_line:
    a bidi override U+202E is shown as <U+202E>, not obeyed), then HTML-escaped. Links keep the real bytes
    (``_href``)."""
    return html.escape(one_line(text), quote=quote)


def _href(path: str) -> str:
    # fsencode: a file name that is not UTF-8 (surrogate escapes) links to its real bytes
    return html.escape(quote(os.fsencode(path)), quote=True)


def _number(value: object, digits: int) -> tuple[str, str]:
    """(shown text, sort key) of a numeric cell."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "", ""
    return (f"{value:.{digits}f}" if isinstance(value, float) else str(value)), repr(float(value))


def _cell(row: Row, column: Column) -> str:
    value = row.values.get(column.key)
    if column.key == "status":
        # The error and the notes on the row's one line, cut to fit; whole in their tooltips and in the panel.
        error = (f'<span class="error" title="{_html(row.error, quote=True)}">{_html(row.error)}</span>'
                 if row.error else "")
        error += "".join(f'<span class="note" title="{_html(note, quote=True)}">{_html(note)}</span>'
                         for note in row.notes)
        status = _html(row.status)
        return f'<td data-sort="{status}"><span class="status">{status}</span>{error}</td>'
    if column.digits is None:
        text = "" if value is None else str(value)
        return f'<td data-sort="{_html(text.lower(), quote=True)}">{_html(text)}</td>'
    text, key = _number(value, column.digits)
    return f'<td class="num" data-sort="{key}">{text}</td>'


def _row_html(row: Row, columns: Sequence[Column], index: int, names: Mapping[str, str]) -> str:
    cells = "".join(_cell(row, column) for column in columns)
    # One line of short links: a row stays one text line high (the picture is shown large beside the table).
    links = " ".join(f'<a href="{_href(path)}">{_html(text)}</a>' for text, path in row.links)
    flags = " ".join(row.flags)
    badges = "".join(f'<span class="flag">{_html(names.get(flag, flag))}</span>' for flag in row.flags)
    status = _html(row.status.replace(" ", "-"), quote=True)
    picture = f' data-picture="{_href(row.picture)}"' if row.picture else ""
    return (f'<tr class="{status}" data-index="{index}" data-flags="{_html(flags, quote=True)}"{picture}>'
            f'{cells}<td>{badges}</td><td class="links">{links}</td></tr>')


def _head(page: Page) -> str:
    refresh = f'<meta http-equiv="refresh" content="{page.refresh_s}">' if page.refresh_s else ""
    # Nothing but this file's own style and script and pictures from the disk: no network, ever.
    policy = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">{refresh}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{_html(page.title)}</title><style>{STYLE}</style></head>')


def render(page: Page) -> str:
    """The page as one HTML document."""
    facts = "".join(f"<dt>{_html(k)}</dt><dd>{_html(v)}</dd>" for k, v in page.facts)
    counts = {key: sum(key in row.flags for row in page.rows) for key in page.flags}
    buttons = "".join(f'<button type="button" data-flag="{_html(key, quote=True)}" aria-pressed="false" '
                      f'title="{_html(rule, quote=True)}">{_html(name)}: {counts[key]}</button>'
                      for key, (name, rule) in page.flags.items())
    rules = "".join(f"<li><b>{_html(name)}</b>: {_html(rule)}</li>" for name, rule in page.flags.values())
    flags = (f'<div class="flags">Flags (click to show only those cases): {buttons}'
             f'<ul class="rule">{rules}</ul></div>') if page.flags else ""
    headers = "".join(f'<th data-type="{"text" if c.digits is None else "num"}" aria-sort="none" '
                      f'title="{_html(c.hint, quote=True)}">{_html(c.title)}</th>' for c in page.columns)
    names = {key: name for key, (name, _) in page.flags.items()}
    rows = "\n".join(_row_html(row, page.columns, index, names) for index, row in enumerate(page.rows))
    note = f'<p class="means">{_html(page.note)}</p>' if page.note else ""
    warning = f'<p class="warning" role="alert">{_html(page.warning)}</p>' if page.warning else ""
    return (f"{_head(page)}<body><h1>{_html(page.title)}</h1>{warning}<dl>{facts}</dl>{note}{flags}"
            f'<p><input type="search" id="filter" placeholder="filter: case name, status, error..." '
            f'aria-label="filter the cases"> <span id="shown"></span> <span class="keys">{KEYS}</span></p>'
            f'<div id="layout"><div id="list"><table id="cases"><thead><tr>{headers}<th>flags</th><th>files</th></tr>'
            f"</thead><tbody>\n{rows}\n</tbody></table></div>{PREVIEW}</div><script>{SCRIPT}</script></body></html>\n")


def write_page(path: Path, page: Page) -> None:
    """Write the page whole or not at all (a browser never sees half of it; WriteError)."""
    # backslashreplace: a name that is not UTF-8 is shown escaped (\\udcff), as model.errors.shown does
    atomic_write_bytes(Path(path), render(page).encode("utf-8", "backslashreplace"))


# --- the cohort page: OUT/index.html ---------------------------------------------------------------------

def _quantity_column(quantity: Quantity) -> Column:
    """A column of one of the reports' study numbers: its name, title and definition from results.report."""
    return Column(quantity.name, quantity.title or quantity.name, 0 if quantity.digits is None else 1,
                  definitions().get(quantity.term or quantity.name) or "")


def _title(quantities: tuple[Quantity, ...], name: str) -> str:
    """A quantity's short name on the page (results.report's table)."""
    (quantity,) = (q for q in quantities if q.name == name)
    return quantity.title or quantity.name


def cohort_columns() -> list[Column]:
    """The cohort page's columns: the report's headline quantities (read from results.report's table when the page
    is made) between the case's own."""
    return [Column("case", "case", None), Column("status", "status", None),
            *(_quantity_column(q) for q in headline_quantities()),
            Column("suv_peak", _title(lesion_quantities(), "suv_peak"), 1, "SUVpeak of the lesion with the highest "
                   "SUVmax"),
            Column("slices", "slices", 0), Column("seconds", "seconds", 1, "this run's time for the case")]


@dataclass(frozen=True)
class Limit:
    """An absolute plausibility flag: one of the reports' study numbers above a stated value (whatever the
    other cases of the page hold: a cohort whose every case is implausible is flagged whole)."""

    key: str  # a headline quantity of results.report
    above: float
    why: str

    @property
    def flag(self) -> str:
        return f"over-{self.key}"

    @property
    def name(self) -> str:
        return f"{_title(headline_quantities(), self.key)} > {self.above:g}"

    @property
    def rule(self) -> str:
        return f"{_title(headline_quantities(), self.key)} above {self.above:g}: {self.why}"


LIMITS = (
    Limit("tmtv_ml", 3000.0, "more tumour volume than whole-body studies hold; check the PET's units and the mask"),
    Limit("tmtv_body_percent", 5.0, "lesions over a large part of the body: a PET not in SUV, or normal tissue "
                                    "marked"),
    Limit("lesion_count", 100, "a mask broken into many specks: noise, or a PET not in SUV"),
    Limit("suv_max", 50.0, "hotter than lesions are: a PET not in SUV, or the bladder marked"),
)
COHORT_FLAGS = {
    "failed": ("failed", "the case failed in this run: no mask or reports from it (its error, and the run whose files "
                         "are kept, in the status column)"),
    "notes": ("notes", "the case was read with notes: DICOM files skipped, images not used, a CT from another "
                       "frame of reference (in the status column)"),
    "no-lesion": ("no lesion", "the mask holds no lesion"),
    "high-tmtv": ("TMTV high", f"TMTV above {TMTV_FLAG_FACTOR:g} x the median TMTV of this page's cases that "
                               "have lesions"),
    **{limit.flag: (limit.name, limit.rule) for limit in LIMITS},
}


def entry_case(entry: Mapping) -> str:
    """A results.json entry's case name: its ``case`` (local mode) or its mask's name."""
    if entry.get("case"):
        return str(entry["case"])
    outputs = entry.get("outputs") or entry.get("inputs") or [{}]
    name = str(outputs[-1].get("filename", ""))
    return name.removesuffix(".nii.gz").rsplit(".", 1)[0] if "." in name else name


def _report_summary(path: Path) -> dict:
    """The hottest lesion's SUVpeak and the SUV conversion's method, from a report JSON (empty when the file
    is missing or not a report: the page still shows the row)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        lesions = document.get("lesions") or []
        hottest = max(lesions, key=lambda lesion: lesion["suv_max"], default=None)
        suv = document.get("suv") or {}
        return {"suv_peak": hottest["suv_peak"] if hottest else None,
                "suv_method": suv.get("method") if isinstance(suv, dict) else None}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _cohort_row(root: Path, entry: Mapping, summaries: dict[str, dict], run: Mapping[str, tuple]) -> Row:
    """``run``: case -> (status, seconds) of the cases this process ran (others: another part's or rank's)."""
    # The outputs table names the files; imported here, as it imports PyTorch and train's evaluation page
    # (this module's other page) needs none of it.
    from results.outputs import OutputLayout, output_of, page_links

    name = entry_case(entry)
    errors = entry.get("error_messages") or []
    reports = OutputLayout(root).reports
    state, seconds = run.get(name, ("written", None))
    status = "failed" if errors else "already done" if state == "skipped" else "ok"
    values = {key: entry.get(key) for key in (*headline_keys(), "slices")}
    values.update(case=name, seconds=seconds)
    row = Row(values=values, status=status, error=str(errors[0]) if errors else None,
              notes=[str(note) for note in entry.get("warnings") or []])
    if errors and isinstance(kept := entry.get("kept_outputs"), Mapping):  # an earlier run's files, kept
        row.error += f" (this run failed; the files there are those of the run of {kept.get('run')})"
    if row.notes:
        row.flags.append("notes")
    if errors:
        row.flags.append("failed")
        return row
    report = reports / output_of("report").named(name)
    if name not in summaries and report.is_file():
        summaries[name] = _report_summary(report)
    values["suv_peak"] = summaries.get(name, {}).get("suv_peak")
    for link in page_links():
        if (reports / link.named(name)).is_file():
            row.links.append((link.page_link[1], f"reports/{link.named(name)}"))
    picture = output_of("picture").named(name)
    row.picture = f"reports/{picture}" if (reports / picture).is_file() else None
    if values["lesion_count"] == 0:
        row.flags.append("no-lesion")
    row.flags += [limit.flag for limit in LIMITS
                  if _is_number(values.get(limit.key)) and values[limit.key] > limit.above]
    return row


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flag_high_tmtv(rows: Sequence[Row]) -> float | None:
    """Flag the rows whose TMTV exceeds TMTV_FLAG_FACTOR x the median of the rows with lesions; the median."""
    tmtvs = [row.values["tmtv_ml"] for row in rows if isinstance(row.values.get("tmtv_ml"), (int, float))
             and row.values["tmtv_ml"] > 0]
    if not tmtvs:
        return None
    median = statistics.median(tmtvs)
    for row in rows:
        if isinstance(row.values.get("tmtv_ml"), (int, float)) and row.values["tmtv_ml"] > TMTV_FLAG_FACTOR * median:
            row.flags.append("high-tmtv")
    return median


def _model_facts(model: Mapping | None) -> list[tuple[str, str]]:
    if not model:
        return []
    weights = "; ".join(f"{name}: {digest}" for name, digest in (model.get("weights_sha256") or {}).items())
    identities = "; ".join(f"{name}: {digest}" for name, digest in (model.get("model_sha256") or {}).items())
    described = f"{model.get('encoder')}, {model.get('ensemble')} checkpoint(s)" + (", flip TTA" if model.get("tta")
                                                                                    else "")
    cards = "; ".join(f"{name}: {ModelCard(**card).summary()}" for name, card in (model.get("cards") or {}).items())
    return [("software version", str(model.get("version"))), ("model", described), ("model card", cards or "n/a"),
            ("weights SHA-256", weights or "n/a"), ("model SHA-256 (config and weights)", identities or "n/a"),
            ("device and precision", f"{model.get('device', 'n/a')}, {model.get('precision')}"
                                     + (f" on {model['backend']}" if model.get("backend") else "")),
            ("min lesion ml", str(model.get("min_lesion_ml")))]


def cohort_page(root: Path, entries: Sequence[Mapping], model: Mapping | None = None,
                progress: tuple[int, int] | None = None, _summaries: dict | None = None,
                run: Mapping[str, tuple] | None = None) -> Page:
    """The review page of a run's results.json ``entries`` (reports in ``root/reports``). ``model`` is the
    reports' model block (``results.outputs.model_info``); ``progress`` (done, total) while the run goes on."""
    summaries = {} if _summaries is None else _summaries
    rows = [_cohort_row(Path(root), entry, summaries, run or {}) for entry in entries]
    median = _flag_high_tmtv(rows)
    methods = [summaries.get(row.values["case"], {}).get("suv_method") for row in rows if row.status != "failed"]
    suv = ", ".join(f"{method or 'PET given in SUV'} ({methods.count(method)} cases)"
                    for method in dict.fromkeys(methods)) or "n/a"
    count = {status: sum(row.status == status for row in rows) for status in ("ok", "already done", "failed")}
    state = "finished" if progress is None else f"running: {progress[0]} of {progress[1]} cases of this process done"
    facts = [("date", datetime.datetime.now().astimezone().isoformat(timespec="seconds")), ("run", state),
             *_model_facts(model), ("SUV", suv),
             ("cases", f"{len(rows)}: {count['ok']} ok, {count['failed']} failed, {count['already done']} already "
                       "done earlier (--skip-existing)"),
             ("median TMTV of cases with lesions", "n/a" if median is None else f"{median:.1f} ml")]
    note = "" if progress is None else "This page rewrites itself as cases finish and reloads every 30 s."
    return Page(title="Lesion segmentation: cohort review", facts=facts, columns=cohort_columns(), rows=rows,
                flags=COHORT_FLAGS, note=note, refresh_s=None if progress is None else 30,
                warning=(model or {}).get("warning") or "")


def part_entries(root: Path, num_parts: int, part_id: int) -> list[dict]:
    """The results.json entries of the other parts of a job array (``results.part-K-of-N.json`` of the same
    N) already finished, so that the page of whichever part ends last shows every case."""
    entries: list[dict] = []
    for other in range(num_parts):
        path = Path(root) / f"results.part-{other}-of-{num_parts}.json"
        if other == part_id or not path.is_file():
            continue
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a part's file being replaced: the next rewrite of the page has it
        entries.extend(entry for entry in found if isinstance(entry, dict))
    return entries


def remove_page(root: Path) -> None:
    """``--no-report``: a page of an earlier run would link reports that are gone."""
    path = Path(root) / PAGE_NAME
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        raise WriteError(f"{shown(path)}: the review page of an earlier run cannot be removed "
                         f"({error.strerror})") from None


class CohortPage:
    """``OUT/index.html`` of a local run: rewritten after every case (``runner.cohort.run_cohort``) and once at
    the end over everything (process.py, after results.json; with torchrun rank 0 alone writes it). With
    ``--num-parts`` each part adds the finished parts' results files: the part that ends last shows all."""

    def __init__(self, root: Path, model: Mapping | None, num_parts: int = 1, part_id: int = 0):
        self.root = Path(root)
        self.model = model
        self.num_parts, self.part_id = num_parts, part_id
        self._summaries: dict[str, dict] = {}  # report JSONs read once per run, not once per rewrite
        self._run: dict[str, tuple[str, float | None]] = {}  # this process's cases: (status, seconds)

    def record(self, case: str, status: str, seconds: float | None) -> None:
        """What this run did with a case (results.json keeps no times: they differ from run to run)."""
        self._run[case] = (status, seconds)

    def write(self, entries: Sequence[Mapping], progress: tuple[int, int] | None = None) -> None:
        """The page of ``entries`` (this process's) and the other parts' finished ones (WriteError)."""
        everything = list(entries)
        if self.num_parts > 1:
            everything += part_entries(self.root, self.num_parts, self.part_id)
        write_page(self.root / PAGE_NAME, cohort_page(self.root, everything, self.model, progress, self._summaries,
                                                      self._run))


# --- train evaluate's page: a held-out set ------------------------------------------------------------------

EVALUATION_COLUMNS = [Column("case", "case", None), Column("dice", "Dice", 3), Column("fpv_ml", "FPV ml", 2,
                      "false positive volume: predicted components that touch no true lesion"),
                      Column("fnv_ml", "FNV ml", 2, "false negative volume: true lesions the prediction misses"),
                      Column("gt_ml", "truth ml", 2), Column("pred_ml", "predicted ml", 2)]


def _badness(values: Mapping) -> tuple:
    """Worst first: the lowest Dice; a case without true lesions counts as Dice 1 without false positives and
    0 with any; ties by the larger FPV + FNV."""
    dice = values.get("dice")
    if dice is None:
        dice = 1.0 if not values.get("fpv_ml") else 0.0
    return dice, -((values.get("fpv_ml") or 0.0) + (values.get("fnv_ml") or 0.0))


def evaluation_page(rows: Sequence[Mapping], mean: Mapping, pictures: Mapping[str, str]) -> Page:
    """The held-out page: per case Dice, FPV, FNV and its picture (truth and prediction in two colours),
    worst first, the means on top. ``pictures``: case -> picture path relative to the page."""
    shown = []
    for values in sorted(rows, key=_badness):
        row = Row(values=dict(values), status="ok", picture=pictures.get(str(values["case"])))
        if row.picture:
            row.links.append(("picture", row.picture))
        shown.append(row)
    means = ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                      for key, value in mean.items())
    facts = [("date", datetime.datetime.now().astimezone().isoformat(timespec="seconds")),
             ("cases", str(len(rows))), ("means", means or "n/a")]
    return Page(title="Lesion segmentation: held-out evaluation", facts=facts, columns=EVALUATION_COLUMNS,
                rows=shown, note="Worst first: lowest Dice (a case without true lesions: Dice 1 without false "
                                 "positives, 0 with any), then the largest FPV + FNV. Green: truth; red: prediction.")
