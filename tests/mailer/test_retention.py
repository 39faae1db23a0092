"""Sent outbox rows are deleted after MAILER_SENT_RETENTION_DAYS, in bounded batches through an index."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from mailer.jobs import delete_sent
from mailer.models import OutboxMessage
from mailer.services import DELETE_SENT_BATCH_SQL

pytestmark = pytest.mark.django_db

OLD_SENT = 20_000
BATCH = 3_000


def seed() -> None:
    """OLD_SENT rows sent 40 days ago; 10 sent yesterday, 10 failed and 10 pending 40 days old."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO mailer_outboxmessage (key, message_uuid, to_email, subject, body, status, attempts,"
            " due_at, sent_at, last_error, unsettled_attempts, gave_up, created_at)"
            " SELECT 'row-' || n, gen_random_uuid(), 'shopper@example.com', 's', 'b',"
            " CASE WHEN n <= %(old)s + 10 THEN 'sent' WHEN n <= %(old)s + 20 THEN 'failed' ELSE 'pending' END, 1,"
            " now() - interval '40 days',"
            " CASE WHEN n <= %(old)s THEN now() - interval '40 days' + n * interval '1 ms'"
            " WHEN n <= %(old)s + 10 THEN now() - interval '1 day' END,"
            " '', 0, false, now() - interval '40 days' FROM generate_series(1, %(old)s + 30) AS n",
            {"old": OLD_SENT},
        )
        cursor.execute("ANALYZE mailer_outboxmessage")


def test_sent_rows_past_the_retention_are_deleted_in_bounded_batches_and_only_they(settings):
    settings.CLEANUP_BATCH_SIZE = BATCH
    settings.MAILER_SENT_RETENTION_DAYS = 30
    seed()
    with CaptureQueriesContext(connection) as captured:
        assert delete_sent() == OLD_SENT
    statements = [query["sql"].strip() for query in captured.captured_queries]
    deletes = [sql for sql in statements if sql.upper().startswith("DELETE")]
    assert len(deletes) == OLD_SENT // BATCH + 1
    assert all(f"LIMIT {BATCH}" in sql for sql in deletes), deletes
    left = OutboxMessage.objects.values_list("status", flat=True)
    assert sorted(left) == ["failed"] * 10 + ["pending"] * 10 + ["sent"] * 10
    assert any(entry["func"] == "mailer.jobs.delete_sent" for entry in settings.PERIODIC_JOBS)


def test_each_sent_batch_walks_the_sent_at_index_not_the_table():
    seed()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + DELETE_SENT_BATCH_SQL, [30, 10_000])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "outbox_sent_at" in plan and "Tid" in plan, plan
    assert "Seq Scan" not in plan and "Sort" not in plan, plan
