"""A test database that refuses writes as a standby or a provider's disk-full mode does."""

import psycopg
import pytest
from django.db import connection, connections

from embedded.harness import formation_database_url


def set_read_only(on: bool) -> None:
    """Turn ``default_transaction_read_only`` of the test database on or off and end its other
    sessions, so that every connection opened afterwards (Django's, a horse's) has the new mode."""
    name = connection.settings_dict["NAME"]
    # A command-line option outranks the database's setting: this session may write either way.
    with psycopg.connect(
        formation_database_url(), autocommit=True, options="-c default_transaction_read_only=off"
    ) as admin:
        if on:
            admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        else:
            admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
    connections.close_all()


@pytest.fixture
def read_only(transactional_db):
    """Put the test database in read-only mode; the finalizer restores it before the flush."""
    switch = set_read_only
    yield switch
    set_read_only(False)
