"""The hourly clean-up of expired sessions works in bounded batches whatever the backlog."""

import pytest
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orders.jobs import clear_expired_sessions
from orders.sessions import CLEAR_BATCH_SQL

pytestmark = pytest.mark.django_db

EXPIRED = 50_000
LIVE = 3
BATCH = 5_000


def seed_sessions() -> None:
    """Insert EXPIRED sessions that expired a day ago and LIVE ones that expire in a day, in two statements."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO django_session (session_key, session_data, expire_date)"
            " SELECT 'expired' || n, '', now() - interval '1 day' + n * interval '1 ms'"
            " FROM generate_series(1, %s) AS n",
            [EXPIRED],
        )
        cursor.execute(
            "INSERT INTO django_session (session_key, session_data, expire_date)"
            " SELECT 'live' || n, '', now() + interval '1 day' FROM generate_series(1, %s) AS n",
            [LIVE],
        )
        cursor.execute("ANALYZE django_session")


def test_expired_sessions_are_deleted_in_bounded_batches_and_all_of_them(settings):
    settings.CLEANUP_BATCH_SIZE = BATCH
    seed_sessions()
    with CaptureQueriesContext(connection) as captured:
        clear_expired_sessions()
    statements = [query["sql"].strip() for query in captured.captured_queries]
    deletes = [sql for sql in statements if sql.upper().startswith("DELETE")]
    assert len(deletes) == EXPIRED // BATCH + 1  # the last batch comes back short (empty here)
    assert all(f"LIMIT {BATCH}" in sql for sql in deletes), deletes
    assert sorted(Session.objects.values_list("pk", flat=True)) == [f"live{n}" for n in range(1, LIVE + 1)]


def test_each_batch_walks_the_expire_date_index_not_the_table(settings):
    seed_sessions()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + CLEAR_BATCH_SQL, [10_000])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "expire_date" in plan and "Index" in plan, plan
    assert "Seq Scan" not in plan, plan
    assert "Sort" not in plan, plan
