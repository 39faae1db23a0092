"""The layering contract (pyproject.toml, [tool.importlinter]) holds, and catches an upward import."""

import shutil
import subprocess
import sys
from pathlib import Path

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


def test_an_import_from_the_shared_core_up_into_the_process_runtime_breaks_the_contract(tmp_path):
    code = copy_of_the_code(tmp_path)
    errors = code / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom processes import worker  # noqa: E402, F401\n")
    result = lint_imports(code)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "core.errors -> processes.worker" in result.stdout


def test_the_shop_importing_a_development_tool_breaks_the_contract(tmp_path):
    code = copy_of_the_code(tmp_path)
    services = code / "orders" / "services.py"
    services.write_text(services.read_text() + "\nimport embedded.harness  # noqa: E402, F401\n")
    result = lint_imports(code)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "orders.services -> embedded.harness" in result.stdout


def test_a_development_tool_importing_the_tests_breaks_the_contract(tmp_path):
    code = copy_of_the_code(tmp_path)
    harness = code / "embedded" / "harness.py"
    harness.write_text(harness.read_text() + "\nimport tests.factories  # noqa: E402, F401\n")
    result = lint_imports(code)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "embedded.harness -> tests.factories" in result.stdout
