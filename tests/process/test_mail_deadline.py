"""A slow SMTP server never gets the same message twice: two mailers from the Procfile, a
scheduler whose release-leases job runs every second, and an SMTP server that answers EHLO one
line every 1.5 s for 20 s (no socket read waits EMAIL_TIMEOUT, the exchange outlasts the lease).
Each exchange is aborted at its deadline, inside the lease; once the server is fast again each
message arrives exactly once."""

import time

import pytest

from embedded.polling import wait_until
from mailer.models import OutboxMessage, OutboxStatus
from tests import factories
from tests.support.databases import ALL_DATABASES
from tests.support.trickle import TrickleSMTP

pytestmark = [
    pytest.mark.process,
    pytest.mark.faults,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]

SLOW_PHASE = 40  # seconds the server trickles: long enough for three leases of 12 s


@pytest.fixture
def trickle():
    server = TrickleSMTP(line_seconds=1.5, trickle_seconds=20).start()
    yield server
    server.stop()


def test_two_mailers_and_the_lease_job_never_send_a_message_twice_through_a_slow_server(formation, trickle):
    messages = [factories.outbox_message(to=f"user{i}@example.com") for i in range(2)]
    env = {"EMAIL_URL": trickle.url, "EMAIL_TIMEOUT": "2", "MAILER_LEASE_SECONDS": "12", "ORDER_SWEEP_INTERVAL": "1"}
    formation.start("worker", **env)  # runs the periodic release-leases job
    formation.start("scheduler", command="exec python manage.py rqscheduler --interval 1", **env)
    mailers = [formation.start("mailer", **env) for _ in range(2)]
    ids = [message.message_id for message in messages]
    end = time.monotonic() + SLOW_PHASE
    while time.monotonic() < end:  # bounded; fails as soon as a message arrives twice
        received = trickle.received()
        assert all(received.count(i) <= 1 for i in ids), received
        time.sleep(0.5)
    assert not trickle.received(), "no exchange can finish while the server trickles"
    assert any("SMTP exchange took longer than" in mailer.output() for mailer in mailers)
    for message in messages:
        message.refresh_from_db()
        assert message.status in (OutboxStatus.PENDING, OutboxStatus.SENDING), message
        assert message.attempts >= 2, message  # retried, never failed for it

    trickle.trickle.clear()  # the server is fast again
    wait_until(
        lambda: OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == len(messages),
        deadline=60,
        interval=0.5,
        message="both messages recorded as sent",
    )
    received = trickle.received()
    assert sorted(received) == sorted(ids), received  # each exactly once
    outputs = "".join(mailer.output() for mailer in mailers)
    assert "lease had expired" not in outputs and "another mailer" not in outputs, outputs
