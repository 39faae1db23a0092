"""One clock: processes whose host clocks differ agree on leases and due times, because every
time stored to be compared comes from PostgreSQL (core.dbclock). The offset is real: the process
runs under libfaketime (tests.support.faketime), as a host whose clock is 90 s ahead."""

import asyncio
import subprocess
import sys
from dataclasses import dataclass

import django_rq
import pytest
from aiosmtpd.controller import Controller

from core.queues import DEFAULT_QUEUE
from embedded.polling import wait_until
from embedded.servers import free_port
from mailer.models import OutboxMessage, OutboxStatus
from tests import factories
from tests.support.databases import ALL_DATABASES
from tests.support.faketime import clock_offset_env
from tests.support.smtp import RecordingSMTP

pytestmark = [
    pytest.mark.process,
    pytest.mark.faults,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]

MESSAGES = 60
AHEAD = "+90s"
DATA_SECONDS = 0.1  # each message's DATA is answered this late: a send that takes time, as in production


@dataclass
class SlowRecordingSMTP(RecordingSMTP):
    """A RecordingSMTP that answers each DATA after DATA_SECONDS: a message stays in `sending` that long."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        await asyncio.sleep(DATA_SECONDS)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_smtp():
    recorder = SlowRecordingSMTP(port=free_port())
    controller = Controller(recorder, hostname=recorder.host, port=recorder.port)
    controller.start()
    yield recorder
    controller.stop()


def test_libfaketime_moves_a_python_childs_clock():
    script = "import time; print(time.time())"
    host = float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    ahead = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=clock_offset_env(AHEAD)
    )
    assert 85 < float(ahead.stdout) - host < 95


def test_two_mailers_one_90_s_ahead_send_each_message_exactly_once(formation, slow_smtp):
    messages = [factories.outbox_message(to=f"user{i}@example.com") for i in range(MESSAGES)]
    formation.start("mailer", EMAIL_URL=slow_smtp.url)
    formation.start("mailer", EMAIL_URL=slow_smtp.url, **clock_offset_env(AHEAD))
    wait_until(
        lambda: OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == MESSAGES,
        deadline=60,
        interval=0.2,
        message="every message recorded as sent",
    )
    received = slow_smtp.message_ids()
    assert sorted(received) == sorted(message.message_id for message in messages), received


def test_a_sweep_on_a_host_90_s_ahead_does_not_take_a_fresh_order_for_stuck(formation_env):
    order = factories.order()
    django_rq.get_queue(DEFAULT_QUEUE).empty()  # pending with no job: stuck once ORDER_STUCK_AFTER has passed
    sweep = "from orders.jobs import sweep_pending_orders; print('swept', sweep_pending_orders())"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", sweep],
        env={**formation_env, "ORDER_STUCK_AFTER": "30", **clock_offset_env(AHEAD)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "swept 0" in result.stdout, result.stdout + result.stderr
    order.refresh_from_db()
    assert order.status == "pending"
