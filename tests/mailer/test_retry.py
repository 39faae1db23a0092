"""The mailer never sends a message twice because an SMTP exchange is slow (the whole exchange has
a deadline inside the lease), and never loses one because the SMTP server is away for a while
(transient errors retry until MAILER_GIVE_UP_AFTER, not up to an attempt count)."""

import logging
import threading
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from embedded.servers import free_port
from embedded.shopper import element
from mailer.engine import outbox_send_due
from mailer.models import OutboxMessage, OutboxStatus
from mailer.services import (
    GAVE_UP_PREFIX,
    outbox_message_claim,
    outbox_message_create,
    outbox_message_mark_sent,
    outbox_release_expired_leases,
)
from orders.services import order_process
from tests import factories
from tests.support.databases import ALL_DATABASES
from tests.support.trickle import TrickleSMTP

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)

LEASE = 12  # seconds, with EMAIL_TIMEOUT = 2: the exchange's budget is 12 - 2 x 2 = 8 s


@pytest.fixture
def trickle(settings):
    server = TrickleSMTP(line_seconds=1.5, trickle_seconds=20).start()
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_TIMEOUT, settings.MAILER_LEASE_SECONDS = 2, LEASE
    yield server
    server.stop()


def one_message() -> OutboxMessage:
    return outbox_message_create(key="k", to="user@example.com", subject="s", body="b")


def test_a_trickling_exchange_is_aborted_before_the_lease_ends_and_retried(trickle, caplog):
    message = one_message()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mailer.engine"):
        assert outbox_send_due() == 0
    elapsed = time.monotonic() - started
    assert 7 <= elapsed < LEASE - 2, elapsed  # the 8 s budget, with time left to record the outcome
    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING and message.due_at > timezone.now()
    assert message.last_error == "SMTP exchange took longer than 8 s; retrying"
    assert trickle.received() == []
    assert [r.getMessage() for r in caplog.records] == [
        f"outbox {message.pk}: will retry in 2 s: SMTP exchange took longer than 8 s; retrying"
    ]


def test_a_fast_server_still_gets_the_message_once(trickle):
    trickle.trickle.clear()
    message = one_message()
    started = time.monotonic()
    assert outbox_send_due() == 1
    assert time.monotonic() - started < 2
    assert trickle.received() == [message.message_id]
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT


def test_no_exchange_starts_when_the_lease_leaves_no_budget(settings, smtp):
    settings.EMAIL_TIMEOUT, settings.MAILER_LEASE_SECONDS = 2, 3  # 3 - 2 x 2 < 0 (the settings check forbids it)
    message = one_message()
    assert outbox_send_due() == 0
    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    assert message.last_error == "the lease ends in under 2 x EMAIL_TIMEOUT, too soon to send; retrying"
    assert smtp.messages == []


def test_the_deadline_also_holds_off_the_main_thread(trickle):
    """Called from another thread (no SIGALRM there), a watchdog shuts the socket down."""
    message = one_message()
    result = {}
    thread = threading.Thread(target=lambda: result.update(sent=outbox_send_due()))
    started = time.monotonic()
    thread.start()
    thread.join(timeout=30)
    assert result == {"sent": 0} and time.monotonic() - started < LEASE - 2
    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    assert message.last_error == "SMTP exchange took longer than 8 s; retrying"


def test_an_smtp_outage_past_max_attempts_keeps_the_message_and_it_is_sent_once_when_back(settings, caplog):
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens there yet
    settings.MAILER_MAX_ATTEMPTS = 3
    message = one_message()
    with caplog.at_level(logging.WARNING, logger="mailer.engine"):
        for attempt in range(1, 7):  # twice the old limit
            OutboxMessage.objects.update(due_at=timezone.now())  # skip the backoff
            assert outbox_send_due() == 0
            message.refresh_from_db()
            assert (message.status, message.attempts) == (OutboxStatus.PENDING, attempt)
            assert "Connection refused" in message.last_error
    assert all("will retry in " in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    server = TrickleSMTP(port=settings.EMAIL_PORT)
    server.trickle.clear()
    server.start()
    try:
        OutboxMessage.objects.update(due_at=timezone.now())
        assert outbox_send_due() == 1
        assert outbox_send_due() == 0
        assert server.received() == [message.message_id]
    finally:
        server.stop()
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT


def test_a_message_older_than_the_give_up_age_fails_with_the_reason(settings, caplog):
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    message = one_message()
    OutboxMessage.objects.update(created_at=timezone.now() - timedelta(seconds=settings.MAILER_GIVE_UP_AFTER + 1))
    with caplog.at_level(logging.WARNING, logger="mailer.engine"):
        assert outbox_send_due() == 0
    message.refresh_from_db()
    assert message.status == OutboxStatus.FAILED and message.attempts == 1 and message.gave_up
    assert message.last_error.startswith(
        f"{GAVE_UP_PREFIX}not delivered within {settings.MAILER_GIVE_UP_AFTER} s of being queued (MAILER_GIVE_UP_AFTER)"
    )
    assert "Connection refused" in message.last_error
    [record] = caplog.records
    assert record.getMessage().startswith(f"outbox {message.pk}: failed for good: {GAVE_UP_PREFIX}")


@pytest.mark.parametrize("released_by", ["claim", "job"])
def test_a_message_whose_lease_keeps_expiring_fails_after_max_attempts(settings, caplog, released_by):
    """Its mailers die mid-send (kill -9): taken over by another mailer's claim, or made due again
    by the release-leases job, it is not re-claimed forever."""
    settings.MAILER_MAX_ATTEMPTS = 3
    message = one_message()
    assert outbox_message_claim(lease_seconds=60) is not None
    for expiry in range(1, 4):
        OutboxMessage.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))  # the holder died
        if released_by == "job":
            assert outbox_release_expired_leases() == 1
        claimed = outbox_message_claim(lease_seconds=60)
        assert (claimed is not None) == (expiry < 3), expiry
    message.refresh_from_db()
    assert message.status == OutboxStatus.FAILED and message.gave_up and message.unsettled_attempts == 3
    assert message.last_error.startswith(f"{GAVE_UP_PREFIX}3 attempts in a row ended with no outcome; the last: ")
    assert "lease expired" in message.last_error
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"outbox {message.pk}: failed for good: {message.last_error}"
    ]


def test_a_send_whose_row_the_lease_job_released_meanwhile_is_still_recorded_sent(caplog):
    """One mailer: its lease ran out while the server was accepting, the release-leases job made the
    row pending; the server did accept, so it is recorded as sent and not sent again."""
    message = one_message()
    leased = outbox_message_claim(lease_seconds=60)
    OutboxMessage.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert outbox_release_expired_leases() == 1
    assert outbox_message_mark_sent(message=leased) is True
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert outbox_message_claim() is None


def test_a_send_whose_row_another_mailer_leased_meanwhile_says_so(caplog):
    message = one_message()
    lost = outbox_message_claim(lease_seconds=60)
    OutboxMessage.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert outbox_message_claim(lease_seconds=60) is not None  # another mailer takes it over
    with caplog.at_level(logging.WARNING, logger="mailer.services"):
        assert outbox_message_mark_sent(message=lost) is False
    [record] = caplog.records
    assert record.getMessage() == (
        f"outbox {message.pk}: the SMTP server accepted {message.message_id}, but the row was not recorded as sent: "
        "this mailer's lease had expired and another mailer leased it again (it may send it once more)"
    )


# The order page tells the two causes of a failed confirmation apart.
def failed_confirmation_sentence(product, last_error: str, *, gave_up: bool) -> tuple[str, str]:
    order = order_process(order_id=factories.order(product=product).pk)  # its confirmation is in the outbox now
    OutboxMessage.objects.filter(key=order.confirmation_key).update(
        status=OutboxStatus.FAILED, last_error=last_error, gave_up=gave_up
    )
    sentence = element(Client().get(f"/orders/{order.pk}/").content.decode(), "#order-confirmation")
    return sentence.attrs["data-state"], sentence.text


def test_order_page_says_the_address_was_refused(product):
    assert failed_confirmation_sentence(product, "recipient refused: 550 5.1.1 no such user", gave_up=False) == (
        "failed",
        "The confirmation could not be sent to shopper@example.com: the mail system did not accept it for that "
        "address. The order itself is not affected: keep this page's address to follow it.",
    )


def test_order_page_says_the_mail_system_gave_up_not_that_the_address_was_bad(product):
    reason = f"{GAVE_UP_PREFIX}not delivered within 432000 s of being queued; the last error: Connection refused"
    assert failed_confirmation_sentence(product, reason, gave_up=True) == (
        "failed",
        "The confirmation could not be sent to shopper@example.com: the mail system could not deliver it and gave "
        "up (the address itself was not refused). The order itself is not affected: keep this page's address to "
        "follow it.",
    )
