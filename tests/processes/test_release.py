"""The release's retry rule (processes/release.py) against real PostgreSQL lock contention."""

import psycopg
import pytest
from django.db import ProgrammingError, connection, transaction

from embedded.harness import formation_database_url
from processes.release import ReleaseBlocked, migrations_run, release_session, role_timeout_set

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def report():
    """A long read transaction on orders_order in a session named ``long-report``."""
    session = psycopg.connect(formation_database_url(), application_name="long-report")
    session.execute("SELECT count(*) FROM orders_order")
    yield session
    session.close()


def alter_orders():
    """What a migration does: take orders_order outright, in a transaction."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOCK TABLE orders_order IN ACCESS EXCLUSIVE MODE")


def test_retries_pause_doubling_up_to_30_s_then_stop_naming_the_blocker(report):
    pauses, attempts = [], []

    def run():
        attempts.append(1)
        alter_orders()

    with (
        release_session(connection=connection, lock_wait=0, lock_timeout=0.2) as pid,
        pytest.raises(ReleaseBlocked) as raised,
    ):
        migrations_run(
            run=run, connection=connection, pid=pid, lock_timeout=0.2, retries=8, delay=1, sleep=pauses.append
        )
    # The defaults' schedule: 9 lock waits of MIGRATION_LOCK_TIMEOUT and 121 s of pauses.
    assert pauses == [1, 2, 4, 8, 16, 30, 30, 30]
    assert len(attempts) == 9
    message = str(raised.value)
    assert "\n" not in message
    assert f"pid {report.info.backend_pid} (application_name 'long-report'" in message


def test_a_retry_succeeds_once_the_blocker_ends(report):
    def end_report(seconds):
        report.rollback()

    with release_session(connection=connection, lock_wait=0, lock_timeout=0.2) as pid:
        migrations_run(
            run=alter_orders, connection=connection, pid=pid, lock_timeout=0.2, retries=1, delay=0, sleep=end_report
        )


def test_other_database_errors_are_not_retried():
    attempts = []

    def run():
        attempts.append(1)
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")

    with (
        release_session(connection=connection, lock_wait=0, lock_timeout=0.2) as pid,
        pytest.raises(ProgrammingError),
    ):
        migrations_run(run=run, connection=connection, pid=pid, lock_timeout=0.2, retries=8, delay=0, sleep=print)
    assert len(attempts) == 1


def test_the_session_gets_its_defaults_back_after_the_release():
    with release_session(connection=connection, lock_wait=0, lock_timeout=0.2), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
        assert cursor.fetchone() == ("200ms", "0")
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
        assert cursor.fetchone() == ("0", "10s")


def role_settings(role: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(s.setconfig, '{}') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = current_database() AND r.rolname = %s",
            [role],
        )
        rows = cursor.fetchall()
    return rows[0][0] if rows else []


def test_the_role_timeout_is_written_once_for_this_database_and_new_sessions_read_it():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, current_database()")
        role, database = cursor.fetchone()
    try:
        assert role_timeout_set(connection=connection, role=role, statement_timeout=2.5) is True
        assert "statement_timeout=2500ms" in role_settings(role)
        assert role_timeout_set(connection=connection, role=role, statement_timeout=2.5) is False
        # A session without the `options` startup parameter, as the pooler opens them, reads it.
        with psycopg.connect(formation_database_url()) as fresh:
            assert fresh.execute("SHOW statement_timeout").fetchone() == ("2500ms",)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER ROLE "{role}" IN DATABASE "{database}" RESET statement_timeout')
