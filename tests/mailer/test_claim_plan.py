"""The mailer's claim reads an index, not the backlog: its plan at 100,000 due messages."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from mailer.models import OutboxMessage
from mailer.services import claim_due_pending_query, claim_expired_lease_query, outbox_message_claim

pytestmark = pytest.mark.django_db

BACKLOG = 100_000
SENDING = 50


def seed_backlog() -> None:
    """Insert BACKLOG pending messages all due (an SMTP outage's backlog), SENDING leased ones, 100 sent."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO mailer_outboxmessage (key, message_uuid, to_email, subject, body, status, attempts,"
            " due_at, lease_token, lease_expires_at, sent_at, last_error, unsettled_attempts, gave_up, created_at)"
            " SELECT 'backlog-' || n, gen_random_uuid(), 'shopper@example.com', 'Your order', 'Thanks',"
            " CASE WHEN n <= %(sending)s THEN 'sending' WHEN n <= %(sending)s + 100 THEN 'sent' ELSE 'pending' END,"
            " 1, now() - interval '1 hour' + n * interval '1 ms',"
            " CASE WHEN n <= %(sending)s THEN gen_random_uuid() END,"
            " CASE WHEN n <= %(sending)s THEN now() + interval '1 minute' END,"
            " CASE WHEN n > %(sending)s AND n <= %(sending)s + 100 THEN now() END,"
            " '', 0, false, now() FROM generate_series(1, %(total)s) AS n",
            {"sending": SENDING, "total": BACKLOG + SENDING + 100},
        )
        cursor.execute("ANALYZE mailer_outboxmessage")


def plan_of(queryset) -> str:
    sql, params = queryset[:1].query.sql_with_params()
    return explain(sql, params)


def explain(sql: str, params=()) -> str:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_each_claim_query_is_an_index_scan_with_no_sort_of_the_backlog():
    seed_backlog()
    now = timezone.now()
    pending = plan_of(claim_due_pending_query(now))
    assert "Index Scan using outbox_pending_due" in pending, pending
    assert "Sort" not in pending and "Seq Scan" not in pending, pending
    expired = plan_of(claim_expired_lease_query(now))
    assert "outbox_sending_lease" in expired, expired
    assert "Seq Scan" not in expired, expired
    # The claim as it runs: every outbox SELECT it issued reads an index and sorts no backlog.
    with CaptureQueriesContext(connection) as captured:
        assert outbox_message_claim().key == f"backlog-{SENDING + 101}"
    selects = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT") and "outbox" in q["sql"]]
    assert selects
    for sql in selects:
        plan = explain(sql.replace("%", "%%"))
        assert "Seq Scan" not in plan and "Sort  " not in plan and "Sort (" not in plan, (sql, plan)
    assert OutboxMessage.objects.filter(status="sending").count() == SENDING + 1
