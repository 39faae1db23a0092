"""``manage.py check`` in a fresh process, with a valid environment changed as a test says."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5/formation",
    "REDIS_URL": "redis://127.0.0.1:6/0",
    "EMAIL_URL": "smtp://127.0.0.1:25",
    "SECRET_KEY": "x" * 50,
}


def manage_check(**changes: str | None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in GOOD and key != "DEBUG"}
    env.update(GOOD)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def assert_check_fails_with_one_line_naming(variable: str, **changes: str | None) -> None:
    """Assert that ``manage.py check`` with ``changes`` exits non-zero with one stderr line naming ``variable``."""
    result = manage_check(**changes)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
