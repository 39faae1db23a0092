"""An SMTP server that goes silent without closing the connection (a vanished host, an expired NAT
entry) holds no mailer: the mailer from the Procfile line, with its METRICS_PORT probed exactly as
the Kubernetes manifest declares, cuts each held exchange within EMAIL_TIMEOUT (the socket's read
timeout; the send deadline, mailer.engine._Deadline, bounds the whole exchange behind it), logs one
line per cut send and retries; its loop keeps beating, so liveness stays 200 and its heartbeat
never gets older than one cut send; once the server answers again the message arrives once."""

import time

import pytest

from embedded.harness import FAST
from embedded.polling import wait_until
from mailer.models import OutboxStatus
from tests import factories
from tests.process.test_liveness import heartbeat_age, kubelet_probe, start_as_deployed
from tests.support.databases import ALL_DATABASES
from tests.support.silent_smtp import SilentSMTP

pytestmark = [
    pytest.mark.process,
    pytest.mark.faults,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]

EMAIL_TIMEOUT = float(FAST["EMAIL_TIMEOUT"])  # seconds
SILENT_PHASE = 7.0  # seconds: at least two held exchanges, each cut


@pytest.mark.parametrize("silent_at", ["greeting", "data"])
def test_a_silent_smtp_server_is_cut_within_email_timeout_and_the_message_arrives_once(formation, silent_at):
    server = SilentSMTP(silent_at=silent_at).start()
    try:
        message = factories.outbox_message(to="silent@example.com")
        mailer = start_as_deployed(formation, "mailer", EMAIL_URL=server.url)
        wait_until(server.held.is_set, deadline=30, interval=0.1, message="the server to hold an exchange")
        held = time.monotonic()
        retry_line = f"outbox {message.pk}: will retry in"
        mailer.wait_for_output(retry_line, deadline=EMAIL_TIMEOUT + 3, interval=0.1)
        cut_after = time.monotonic() - held

        ages: list[float] = []
        while time.monotonic() - held < SILENT_PHASE:
            ok, what = kubelet_probe("mailer", "livenessProbe", mailer)
            assert ok, f"liveness failed while the SMTP server was silent: {what}"
            ages.append(heartbeat_age(mailer))
            time.sleep(0.5)
        assert max(ages) <= EMAIL_TIMEOUT + 1.5, ages  # the loop waits one cut send at most
        assert server.received() == []

        server.silent.clear()
        wait_until(
            lambda: type(message).objects.get(pk=message.pk).status == OutboxStatus.SENT,
            deadline=30,
            interval=0.2,
            message="the message recorded as sent once the server answers",
        )
        assert server.received() == [message.message_id]  # exactly once
        output = mailer.output()
        lines = [line for line in output.splitlines() if f"outbox {message.pk}:" in line]
        retries = [line for line in lines if "will retry in" in line]
        assert len(lines) == len(retries) + 1 and len(retries) >= 2, lines  # one line per cut send, then "sent"
        assert all("timed out" in line for line in retries), retries
        assert "Traceback" not in output, output
        print(f"silent at {silent_at}: first exchange cut after {cut_after:.1f} s, {len(retries)} cut sends")
    finally:
        server.stop()
