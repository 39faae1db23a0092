"""The outbox and the ``mailer`` command against a real SMTP server."""

import asyncio
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from embedded.harness import Process, process_env
from embedded.servers import free_port
from mailer.engine import outbox_send_due
from mailer.models import OutboxMessage, OutboxStatus
from mailer.services import (
    outbox_message_claim,
    outbox_message_create,
    outbox_message_mark_sent,
    outbox_release_expired_leases,
)

pytestmark = pytest.mark.django_db(transaction=True)


def make_messages(count: int) -> list[OutboxMessage]:
    return [
        outbox_message_create(key=f"test-{i}", to=f"user{i}@example.com", subject=f"Message {i}", body="Hello")
        for i in range(count)
    ]


def test_message_is_created_once_per_key():
    first = outbox_message_create(key="k", to="a@example.com", subject="s", body="b")
    again = outbox_message_create(key="k", to="a@example.com", subject="s", body="b")
    assert first.pk == again.pk
    assert OutboxMessage.objects.count() == 1


def test_send_due_sends_with_the_fixed_message_id(smtp):
    [message] = make_messages(1)
    assert outbox_send_due() == 1
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT and message.sent_at is not None
    assert smtp.message_ids() == [message.message_id]
    assert outbox_send_due() == 0


def test_smtp_down_keeps_the_message_and_retries_with_the_same_message_id(settings, smtp):
    [message] = make_messages(1)
    settings.EMAIL_PORT = free_port()  # nothing listens there
    assert outbox_send_due() == 0
    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    assert message.attempts == 1 and message.last_error
    assert message.due_at > timezone.now()  # backoff

    settings.EMAIL_PORT = smtp.port
    OutboxMessage.objects.update(due_at=timezone.now())
    assert outbox_send_due() == 1
    assert smtp.message_ids() == [message.message_id]


def test_permanent_smtp_refusal_fails_the_message(settings, smtp):
    async def refuse(server, session, envelope, address, rcpt_options):
        return "550 no such user"

    smtp.handle_RCPT = refuse
    [message] = make_messages(1)
    assert outbox_send_due() == 0
    message.refresh_from_db()
    assert message.status == OutboxStatus.FAILED
    assert "550" in message.last_error


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_mark_it_sent(smtp):
    [message] = make_messages(1)
    lost = outbox_message_claim(lease_seconds=60)  # a mailer that then died
    assert outbox_message_claim() is None  # leased: no one else takes it
    OutboxMessage.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert outbox_release_expired_leases() == 1
    assert outbox_send_due() == 1
    assert outbox_message_mark_sent(message=lost) is False
    assert smtp.message_ids() == [message.message_id]


def test_two_mailers_draining_one_outbox_send_each_message_once(smtp):
    async def slow_data(server, session, envelope):
        await asyncio.sleep(0.02)  # so both mailers are busy at the same time
        return await type(smtp).handle_DATA(smtp, server, session, envelope)

    smtp.handle_DATA = slow_data
    messages = make_messages(60)
    env = process_env(EMAIL_URL=smtp.url)
    mailers = [Process("mailer", env, command="exec python manage.py mailer --once") for _ in range(2)]
    try:
        assert [mailer.wait(deadline=120) for mailer in mailers] == [0, 0]
        outputs = [mailer.output() for mailer in mailers]
    finally:
        for mailer in mailers:
            mailer.close()
    ids = smtp.message_ids()
    assert sorted(ids) == sorted(message.message_id for message in messages)
    assert len(set(ids)) == 60
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT, attempts=1).count() == 60
    assert all("sent" in output for output in outputs), outputs  # each mailer did part of the work


def test_mailer_command_once(smtp):
    make_messages(3)
    call_command("mailer", "--once", verbosity=0)
    assert len(smtp.messages) == 3
    assert uuid.UUID(smtp.messages[0]["Message-ID"].strip("<>").split("@")[0])


def test_connection_lost_after_the_server_accepted_is_retried_not_resent(smtp):
    """PostgreSQL drops the mailer's connection between the SMTP 250 and "mark sent": the
    mailer reconnects and records it, so the message is not sent a second time."""
    [message] = make_messages(1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        mailer_backend = cursor.fetchone()[0]
    db = connection.settings_dict
    original = type(smtp).handle_DATA

    async def accept_and_drop_the_mailers_connection(server, session, envelope):
        with psycopg.connect(
            host=db["HOST"],
            port=db["PORT"] or None,
            user=db["USER"],
            password=db["PASSWORD"] or None,
            dbname=db["NAME"],
            autocommit=True,
        ) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", [mailer_backend])
        return await original(smtp, server, session, envelope)

    smtp.handle_DATA = accept_and_drop_the_mailers_connection
    assert outbox_send_due() == 1
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert smtp.message_ids() == [message.message_id]
