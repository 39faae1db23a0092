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


def test_the_soak_counts_a_duplicate_email_only_inside_the_documented_window():
    """A copy received again is allowed when the mailer could not record the first copy as sent:
    killed, or PostgreSQL away from it (restart, read-only, frozen link) during the lease after it.
    The frozen link's case is CI's seed 10: received at 6.1 s and again at 32.2 s, the link frozen
    from 1.0 s for 19.9 s by a timer (the injection itself returns at once)."""
    from bench.soak import FROZEN, KILL, PG, READ_ONLY, Fault, mail_window

    lease = 12.0
    frozen = Fault(1.0, FROZEN, "mailer's PostgreSQL for 19.9s", 0.0, 19.9)
    assert mail_window(6.1, 32.2, [frozen], lease) == "the mailer's link to PostgreSQL frozen at 1.0-20.9s"
    assert mail_window(6.1, 32.2, [], lease) is None
    assert mail_window(30.0, 50.0, [frozen], lease) is None  # the link had healed 9 s before
    assert mail_window(6.1, 32.2, [Fault(15.0, PG, "immediate", 2.0)], lease) == "PostgreSQL restarted at 15.0-17.0s"
    assert mail_window(6.1, 32.2, [Fault(19.0, PG, "immediate", 2.0)], lease) is None  # after the lease
    assert mail_window(6.1, 32.2, [Fault(2.0, READ_ONLY, "for 5.3s", 5.3)], lease) is not None
    assert mail_window(6.1, 32.2, [Fault(8.0, KILL, "mailer.1 (pid 1)")], lease) == "mailer killed at 8.0s"
    assert mail_window(6.1, 32.2, [Fault(8.0, KILL, "worker.1 (pid 1)")], lease) is None
