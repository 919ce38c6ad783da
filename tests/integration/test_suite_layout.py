"""The suite's own rules, so they hold from now on: test modules live in their area's folder,
no test module imports another (shared code lives in tests/helpers/, fixtures in conftest.py),
and no test function name is defined twice across the suite."""

import ast
import collections
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
AREAS = ("pure", "stateful", "schedules", "distributed", "integration")

def suite_modules() -> list[Path]:
    """Every test module of the suite."""
    return sorted(TESTS.rglob("test_*.py"))


def imported_modules(path: Path) -> set[str]:
    """The top-level names of the modules ``path`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def defined_tests(path: Path) -> list[str]:
    """Names of the module's test functions and of its test classes' test methods."""
    names = []
    for node in ast.parse(path.read_text()).body:
        bodies = node.body if isinstance(node, ast.ClassDef) else [node]
        names += [f.name for f in bodies
                  if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and f.name.startswith("test")]
    return names


def test_every_test_module_lives_in_an_area_folder():
    misplaced = [str(p.relative_to(TESTS)) for p in suite_modules()
                 if p.parent == TESTS or p.parent.relative_to(TESTS).as_posix() not in AREAS]
    assert not misplaced, f"not under tests/{{{','.join(AREAS)}}}/: {misplaced}"
    basenames = collections.Counter(p.name for p in suite_modules())
    assert not [n for n, k in basenames.items() if k > 1], "test module basenames must be unique"


def test_no_test_module_imports_another_or_conftest():
    test_names = {p.stem for p in suite_modules()} | {"conftest"}
    offenders = {
        str(p.relative_to(TESTS)): sorted(imported_modules(p) & test_names)
        for p in suite_modules()
        if imported_modules(p) & test_names
    }
    assert not offenders, f"import from tests/helpers instead: {offenders}"


def test_no_test_name_is_defined_twice():
    where = collections.defaultdict(list)
    for path in suite_modules():
        for name in defined_tests(path):
            where[name].append(str(path.relative_to(TESTS)))
    twice = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not twice, twice


def test_helpers_are_not_collected_as_tests():
    assert not list((TESTS / "helpers").rglob("test_*.py"))
