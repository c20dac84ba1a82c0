"""The layout the README's "Where things live" table promises, checked: small modules and functions, no
import cycle, nothing imported upwards (model/ imports none of the other packages; studies/, results/ and
runner/ are floors above it in that order; train/ and bench/ never import the process.py script), no
sys.path edits in bench/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("model", "studies", "results", "runner", "phantoms", "train", "bench")
MAX_MODULE_LINES = 520
MAX_FUNCTION_LINES = 80
# Who may import whom: a package imports only those listed (and itself).
# model/ is what training and inference share; reading studies, their results and running them are floors
# above it, each importing only those below.
FLOORS = ("model", "studies", "results", "runner")
ALLOWED = {"model": set(), "studies": {"model"}, "results": {"model", "studies"},
           "runner": {"model", "studies", "results"}, "phantoms": {"model", "studies", "results"},
           "train": {*FLOORS, "phantoms"}, "bench": {*FLOORS, "phantoms", "train"}, "process": {*FLOORS}}


def sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py")) + [ROOT / "process.py"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_are_small(path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: {', '.join(long)}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_is_imported_upwards(path):
    own = module_name(path).split(".")[0]
    ours = {name.split(".")[0] for name in imports_of(path)} & (set(ALLOWED) | set(PACKAGES))
    assert ours <= ALLOWED[own] | {own}, f"{path.name} imports {sorted(ours - ALLOWED[own] - {own})}"


def test_model_imports_none_of_the_other_packages():
    """model/ stands alone: not even an import inside a function reaches studies/, results/ or runner/."""
    others = set(ALLOWED) - {"model"}
    for path in (ROOT / "model").rglob("*.py"):
        reached = {name.split(".")[0] for name in imports_of(path)} & others
        assert not reached, f"{path.relative_to(ROOT)} imports {sorted(reached)}"


def test_every_package_has_a_floor():
    """A new top-level package is placed on a floor (here and in the README's layout) before it is used."""
    found = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests", "test", "docs"}
    assert found <= set(ALLOWED), f"packages without a floor: {sorted(found - set(ALLOWED))}"
    assert set(PACKAGES) == set(ALLOWED) - {"process"}


def test_bench_never_edits_sys_path():
    for path in (ROOT / "bench").rglob("*.py"):
        assert "sys.path" not in path.read_text(), path.name


def test_no_import_cycle():
    graph = {module_name(path): {name for name in imports_of(path) if name.split(".")[0] in PACKAGES}
             for path in sources()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            assert state.get(target) != 1, f"import cycle: {' -> '.join([*trail, node, target])}"
            if target not in state:
                visit(target, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_the_container_holds_every_package_process_reaches():
    """The Dockerfile copies (and .dockerignore lets through) each package process.py imports, directly or
    through another: a package missing from the image fails only when the container runs."""
    graph = {module_name(path): imports_of(path) for path in sources()}
    reached, todo = set(), ["process"]
    while todo:
        module = todo.pop()
        for name in graph.get(module, ()):
            candidates = [name, *(name.rsplit(".", depth)[0] for depth in (1, 2))]
            for target in (candidate for candidate in candidates if candidate in graph):
                if target not in reached:
                    reached.add(target)
                    todo.append(target)
    packages = {module.split(".")[0] for module in reached} - {"process"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"model", "studies", "results", "runner"} <= packages
    for package in sorted(packages):
        assert f"COPY {package}/ /opt/app/{package}/" in dockerfile, package
        assert f"!{package}/" in ignored, package


# model.inference's ways into a study that skip its checks (studies.checks), and who may call each: the
# pipeline's network stage takes the CT it put on the PET's grid; everything else that segments a study goes
# through runner.pipeline (bench/ through bench.api), so that what is timed and shipped is what runs.
UNCHECKED = {"segment", "segment_on_pet_grid", "lesion_probability", "ct_on_pet_grid"}
# train.quantise compares two runtimes' probability maps (not masks) on its calibration phantoms and the shipped
# case: it needs less than a run, the probability that model.inference builds from the pipeline's own pieces.
UNCHECKED_CALLERS = {"runner.pipeline": {"segment_on_pet_grid", "ct_on_pet_grid"},
                     "train.quantise": {"lesion_probability"}}


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_study_goes_into_inference_one_way(path):
    own = module_name(path)
    reached = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in ("model", "model.inference") and own != "model":
            reached |= {alias.name for alias in node.names} & UNCHECKED
        elif isinstance(node, ast.Attribute) and node.attr in UNCHECKED and own != "model.inference":
            if isinstance(node.value, ast.Name) and node.value.id in ("inference", "model"):
                reached.add(node.attr)
    assert reached <= UNCHECKED_CALLERS.get(own, set()), f"{own} calls {sorted(reached)} (no study checks)"


# Test files that follow one behaviour through several modules, and what they test.
ACROSS_MODULES = {
    "tests/model/test_orientation.py": "one study stored in other orientations: model.geometry, model.inference",
    "tests/model/test_seed_normalisation.py": "the seed's per-window scheme: model.preprocessing, model.inference",
    "tests/train/test_cli.py": "python -m train's arguments: train/__main__.py",
    "tests/train/test_orientation.py": "orientation through training: train.prepare, train.fit, model.inference",
}


def _tested_module(test_file: Path) -> Path | None:
    """What tests/<package>/test_<module>[_<aspect>].py tests: <package>/<module>.py or the subpackage."""
    package, words = test_file.parent.name, test_file.stem.removeprefix("test_").split("_")
    for count in range(len(words), 0, -1):
        name = "_".join(words[:count])
        for candidate in (ROOT / package / f"{name}.py", ROOT / package / name / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def test_tests_mirror_the_packages():
    """A test file is named after the module it tests, in its package's folder: never after a module that is
    not there (tests/model/test_runner.py tested pipeline.py long after runner.py had gone)."""
    ghosts = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "tests").glob("*/test_*.py"))
              if _tested_module(path) is None and str(path.relative_to(ROOT)) not in ACROSS_MODULES]
    assert not ghosts, f"test files named after no module: {ghosts}"
    assert all((ROOT / path).is_file() for path in ACROSS_MODULES)
