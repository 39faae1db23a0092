"""A busy process is alive, a stuck one is not: the mailer beats while it makes progress, however
long its pass, and stops beating when its loop stops (``manage.py probe mailer``)."""

import asyncio
import io
import signal
import subprocess
import sys
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from embedded.harness import ROOT
from embedded.polling import wait_until
from mailer.models import OutboxMessage, OutboxStatus
from tests import factories
from tests.support.databases import ALL_DATABASES
from tests.support.smtp import start_smtp

pytestmark = [
    pytest.mark.process,
    pytest.mark.faults,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]

SECONDS_PER_MESSAGE = 1.0  # under the tests' EMAIL_TIMEOUT (2 s), as a slow provider answers
MAX_AGE = 4.0  # seconds; the drain below takes three times as long


@pytest.fixture
def slow_smtp():
    """A real SMTP server that takes SECONDS_PER_MESSAGE to accept each message's data."""
    recorder, controller = start_smtp()
    record = recorder.handle_DATA

    async def slow_data(server, session, envelope):
        await asyncio.sleep(SECONDS_PER_MESSAGE)
        return await record(server, session, envelope)

    recorder.handle_DATA = slow_data
    yield recorder
    controller.stop()


def alive(max_age: float = MAX_AGE) -> bool:
    """Run ``probe mailer --max-age`` (in process, the same command); return whether it exits 0."""
    try:
        call_command("probe", "mailer", "--max-age", str(max_age), stdout=io.StringIO())
        return True
    except CommandError:
        return False


def test_a_mailer_draining_a_long_backlog_stays_alive(formation, slow_smtp):
    count = 12  # 12 s of sending in one pass, three times MAX_AGE
    for i in range(count):
        factories.outbox_message(to=f"user{i}@example.com")
    formation.start("mailer", EMAIL_URL=slow_smtp.url, MAILER_HEARTBEAT_SECONDS="1")
    wait_until(lambda: slow_smtp.messages, deadline=15, message="the first message to arrive")
    started = time.monotonic()
    samples: list[tuple[float, bool]] = []
    command_probe_done = False
    while OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() < count:
        elapsed = time.monotonic() - started
        assert elapsed < count * SECONDS_PER_MESSAGE + 30, "the drain did not finish"
        samples.append((round(elapsed, 1), alive()))
        if elapsed > MAX_AGE + 1 and not command_probe_done:
            # Once as the orchestrator runs it: the command line, its own process.
            result = subprocess.run(
                [sys.executable, "manage.py", "probe", "mailer", "--max-age", str(MAX_AGE)],
                cwd=ROOT,
                env=formation.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            samples.append((round(time.monotonic() - started, 1), result.returncode == 0))
            command_probe_done = True
        time.sleep(0.5)
    assert command_probe_done and samples[-1][0] > 2 * MAX_AGE, samples  # the window was sampled
    dead = [at for at, ok in samples if not ok]
    assert not dead, f"probe said 'no live process' at t={dead} s while the mailer was sending"


def test_a_stopped_mailer_is_reported_dead_after_max_age(formation):
    mailer = formation.start("mailer")
    wait_until(alive, deadline=15, message="the mailer's first heartbeat")
    mailer.send_signal(signal.SIGSTOP)  # stuck: the process exists but its loop makes no progress
    stopped = time.monotonic()
    try:
        wait_until(lambda: not alive(), deadline=MAX_AGE + 10, interval=0.2, message="the probe to fail")
        assert time.monotonic() - stopped >= MAX_AGE - 1.5  # not before the age limit (1 s heartbeat)
    finally:
        mailer.send_signal(signal.SIGCONT)
    wait_until(alive, deadline=15, message="the heartbeat after SIGCONT")
