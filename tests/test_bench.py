"""bench/run.py and bench/saturation.py outside `make bench` and `make saturation`: one line saying
what to do, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("script", "unset", "target", "says"),
    [
        (["run.py", "--help"], {"SECRET_KEY", "DATABASE_URL"}, "make bench", "is not set"),
        (
            ["saturation.py", "--seconds", "1"],
            {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"},
            "make saturation",
            "are not set",
        ),
    ],
)
def test_a_bench_without_its_servers_says_how_to_run_it_in_one_line(script, unset, target, says):
    env = {key: value for key, value in os.environ.items() if key not in unset}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script[0]), *script[1:]],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert target in lines[0]
    assert says in lines[0]
