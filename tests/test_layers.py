"""The layering contract (pyproject.toml, [tool.importlinter]) holds, and catches an upward import."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("project", "processes", "orders", "mailer", "core", "embedded", "bench", "tests")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def copy_of_the_code(destination: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, destination / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", destination / "pyproject.toml")
    return destination


def test_the_code_keeps_the_layers():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


# An import against each contract: (file of the copy, the line added, the import the linter must name).
UPWARD_IMPORTS = {
    "shared core up into the process runtime": (
        "core/errors.py",
        "from processes import worker",
        "core.errors -> processes.worker",
    ),
    "the shop importing a development tool": (
        "orders/services.py",
        "import embedded.harness",
        "orders.services -> embedded.harness",
    ),
    "a development tool importing the tests": (
        "embedded/harness.py",
        "import tests.factories",
        "embedded.harness -> tests.factories",
    ),
}


@pytest.mark.parametrize(("module", "line", "named"), UPWARD_IMPORTS.values(), ids=UPWARD_IMPORTS.keys())
def test_an_import_against_the_direction_breaks_a_contract(tmp_path, module, line, named):
    code = copy_of_the_code(tmp_path)
    path = code / module
    path.write_text(path.read_text() + f"\n{line}  # noqa: E402, F401\n")
    result = lint_imports(code)
    assert result.returncode == 1, result.stdout + result.stderr
    assert named in result.stdout
