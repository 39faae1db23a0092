"""Liveness probes per process type: ``manage.py probe TYPE`` exits 0 only while one is alive."""

import signal
import subprocess
import sys

import pytest

from tests.conftest import ALL_DATABASES
from tests.procfile import ROOT

pytestmark = [
    pytest.mark.process,
    pytest.mark.startup,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]


def probe(kind: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "probe", kind], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("kind", ["web", "worker", "scheduler", "mailer"])
def test_probe_answers_while_the_process_lives(formation, formation_env, kind):
    before = probe(kind, formation_env)
    assert before.returncode == 1
    assert len(before.stderr.strip().splitlines()) == 1, before.stderr
    process = formation.start(kind)
    alive = probe(kind, formation_env)
    assert alive.returncode == 0, alive.stderr
    assert alive.stdout.startswith(f"{kind}: 1 live")
    process.signal(signal.SIGTERM)
    assert process.wait() == 0
    assert probe(kind, formation_env).returncode == 1  # a graceful stop leaves no live trace
