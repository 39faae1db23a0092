"""The database health check (core/postgresql/base.py): a dead pooled connection is found
without a query, a live one is kept without a query."""

import pytest
from django.db import connections

from embedded.polling import wait_until
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


def test_a_live_connection_is_usable_and_checked_without_a_query():
    connection, observer = connections["default"], connections["gateway"]
    last = "SELECT pg_backend_pid() -- the last query before the check"
    with connection.cursor() as cursor:
        cursor.execute(last)
        pid = cursor.fetchone()[0]
    assert connection.is_usable()
    with observer.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        assert cursor.fetchone()[0] == last  # Django's own check would have sent SELECT 1


def test_a_connection_the_server_ended_is_unusable_and_replaced():
    connection, killer = connections["default"], connections["gateway"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with killer.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_until(lambda: not connection.is_usable(), deadline=5, message="the ended connection to be seen as unusable")
    # What Django does before the first query of a request (CONN_HEALTH_CHECKS): a new connection.
    connection.health_check_done = False
    connection.close_if_health_check_failed()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid
