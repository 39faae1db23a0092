"""bench/run.py and bench/saturation.py outside `make bench` and `make saturation`: one line saying
what to do, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_bench_without_the_shops_settings_says_how_to_run_it_in_one_line():
    env = {key: value for key, value in os.environ.items() if key not in {"SECRET_KEY", "DATABASE_URL"}}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--help"],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "make bench" in lines[0]
    assert "is not set" in lines[0]


def test_the_saturation_run_without_the_test_servers_says_how_to_run_it_in_one_line():
    env = {key: value for key, value in os.environ.items() if key not in {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"}}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "saturation.py"), "--seconds", "1"],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "make saturation" in lines[0]
    assert "are not set" in lines[0]
