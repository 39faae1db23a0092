"""Send errors are classified once: those no retry can fix fail the message at once with the
reason and one log line; transient ones make it due again after a backoff."""

import logging
import smtplib

import pytest
from django.utils import timezone

from mailer.engine import outbox_error_classify, outbox_send_due
from mailer.models import OutboxMessage, OutboxStatus
from mailer.services import outbox_message_create

pytestmark = pytest.mark.django_db(transaction=True)


def reply(code_and_text: str):
    async def hook(server, session, envelope, *args):
        return code_and_text

    return hook


@pytest.mark.parametrize(
    ("hook", "answer", "status"),
    [
        ("handle_RCPT", "550 5.1.1 no such user", OutboxStatus.FAILED),
        ("handle_RCPT", "553 5.1.3 bad address syntax", OutboxStatus.FAILED),
        ("handle_MAIL", "550 5.7.1 sender rejected", OutboxStatus.FAILED),
        ("handle_DATA", "554 5.6.0 message refused", OutboxStatus.FAILED),
        ("handle_RCPT", "450 4.2.1 mailbox busy", OutboxStatus.PENDING),
        ("handle_MAIL", "451 4.3.0 try later", OutboxStatus.PENDING),
        ("handle_DATA", "452 4.3.1 insufficient storage", OutboxStatus.PENDING),
    ],
)
def test_smtp_replies_5xx_fail_at_once_4xx_retry(smtp, caplog, hook, answer, status):
    setattr(smtp, hook, reply(answer))
    message = outbox_message_create(key="k", to="user@example.com", subject="s", body="b")
    with caplog.at_level(logging.WARNING, logger="mailer.engine"):
        assert outbox_send_due() == 0
    message.refresh_from_db()
    assert message.status == status
    assert message.attempts == 1
    code, text = answer.split(" ", 1)
    assert code in message.last_error and text in message.last_error
    if status == OutboxStatus.PENDING:
        assert message.due_at > timezone.now()  # backoff
    [record] = [r for r in caplog.records if r.name == "mailer.engine"]
    assert record.exc_info is None  # a known failure is one line, no stack


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("shopper@exa\u200emple.com", "U+200E"),
        ("shopper@exa\uffffmple.com", "U+FFFF"),
        ("shopper@" + "ü" * 60 + ".example", "after the @"),
        ("zoë@example.com", "before the @"),
    ],
)
def test_a_stored_undeliverable_address_fails_after_one_attempt_with_the_reason(smtp, caplog, address, reason):
    # Rows written before checkout validated addresses (legacy data), inserted without validation.
    message = OutboxMessage.objects.create(key="legacy", to_email=address, subject="s", body="b")
    with caplog.at_level(logging.WARNING, logger="mailer.engine"):
        assert outbox_send_due() == 0
    message.refresh_from_db()
    assert message.status == OutboxStatus.FAILED
    assert message.attempts == 1
    assert reason in message.last_error
    assert smtp.messages == []
    [record] = [r for r in caplog.records if r.name == "mailer.engine"]
    assert record.exc_info is None


def test_a_failed_message_does_not_hold_up_the_next_pass(smtp):
    OutboxMessage.objects.create(key="legacy", to_email="shopper@exa\u200emple.com", subject="s", body="b")
    good = outbox_message_create(key="good", to="zoe@bücher.example", subject="s", body="b")
    assert outbox_send_due() == 0  # the pass stops at the failure …
    assert outbox_send_due() == 1  # … and the next one sends the rest
    good.refresh_from_db()
    assert good.status == OutboxStatus.SENT


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"no such user")}), True),
        (smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"no"), "b@example.com": (452, b"full")}), False),
        (smtplib.SMTPDataError(554, b"spam"), True),
        (smtplib.SMTPDataError(451, b"later"), False),
        (smtplib.SMTPAuthenticationError(535, b"bad credentials"), False),  # our account, not the message
        (smtplib.SMTPConnectError(554, b"go away"), False),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), False),
        (TimeoutError("timed out"), False),
        (ConnectionRefusedError(111, "Connection refused"), False),
        (ConnectionResetError(104, "Connection reset by peer"), False),
        (UnicodeEncodeError("idna", "exa\u200emple.com", 3, 4, "Invalid character"), True),
        (RuntimeError("something nobody foresaw"), None),  # unknown: retried, logged with its stack
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_each_error_is_classified_once(error, permanent):
    reason, classified = outbox_error_classify(error)
    assert classified is permanent
    assert reason
