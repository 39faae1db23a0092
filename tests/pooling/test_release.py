"""The release phase of a pooled formation: ``migrate`` works through DATABASE_DIRECT_URL, where
its session advisory lock means something; two releases at once still take turns."""

import psycopg
import pytest
from django.db import connection

from embedded.polling import wait_until
from processes.release import RELEASE_LOCK_KEY
from tests.fixtures.pooling import database_url
from tests.support.release_app import MIGRATION, RELEASE_SETTINGS, column_count, recorded

pytestmark = [pytest.mark.process, pytest.mark.release, pytest.mark.django_db(transaction=True)]


def pooled_server_pids(pgbouncer_url: str) -> set[int]:
    """Return the PostgreSQL backend pids of PgBouncer's server connections (SHOW SERVERS)."""
    with psycopg.connect(database_url(pgbouncer_url, "pgbouncer"), autocommit=True) as console:
        cursor = console.execute("SHOW SERVERS")
        column = [description.name for description in cursor.description].index("remote_pid")
        return {row[column] for row in cursor.fetchall()}


def release_lock_holder() -> int | None:
    """Return the backend pid holding the release's advisory lock, or None."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid::bigint = %s AND objid::bigint = %s",
            [RELEASE_LOCK_KEY >> 32, RELEASE_LOCK_KEY & 0xFFFFFFFF],
        )
        row = cursor.fetchone()
        return row[0] if row else None


def test_two_pooled_releases_at_once_take_turns_on_a_lock_held_by_a_direct_session(
    formation, pooled_env, release_env, pgbouncer_url
):
    # The migration holds its transaction open 3 s after the ALTER, so the two overlap whatever
    # their start-up times.
    env = {**pooled_env, "DJANGO_SETTINGS_MODULE": RELEASE_SETTINGS, "RELEASE_APP_HOLD_SECONDS": "3"}
    first = formation.start("release", wait=False, **env)
    second = formation.start("release", wait=False, **env)

    def lock_holder():
        if not (first.alive() or second.alive()):
            raise AssertionError("both releases exited before the lock was seen:\n" + first.output() + second.output())
        return release_lock_holder()

    holder = wait_until(lock_holder, deadline=30, message="a release to take the release lock")
    # Taken on PostgreSQL itself: through the pooler, the next transaction on that server
    # connection could be anyone's, and the lock would go with it.
    assert holder not in pooled_server_pids(pgbouncer_url)
    codes = [first.wait(deadline=60), second.wait(deadline=60)]
    outputs = first.output() + second.output()
    assert codes == [0, 0], outputs
    assert outputs.count(f"Applying {MIGRATION[0]}.{MIGRATION[1]}... OK") == 1, outputs
    assert outputs.count("No migrations to apply.") == 1, outputs
    assert "waiting up to 300 s for another release to finish" in outputs  # took turns, not luck
    assert (column_count(), recorded()) == (1, 1)
    assert release_lock_holder() is None
