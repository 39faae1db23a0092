"""The release phase: migrations as a one-off process, safe to rerun, loud when it fails."""

import uuid

import psycopg
import pytest
from django.db import connection

from tests.procfile import formation_database_url, process_env, run_release

pytestmark = [pytest.mark.process, pytest.mark.release, pytest.mark.django_db(transaction=True)]


def test_release_is_safe_to_rerun():
    env = process_env()
    for _ in range(2):
        release = run_release(env)
        assert release.returncode == 0, release.stderr
        assert "No migrations to apply" in release.stdout


@pytest.fixture
def scratch_database():
    """An empty database on the test server, dropped afterwards; yields its URL."""
    name = f"release_{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = formation_database_url().rsplit("/", 1)[0] + f"/{name}"
    yield url
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_failing_migration_exits_non_zero_with_the_error(scratch_database):
    with psycopg.connect(scratch_database.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        conn.execute("CREATE TABLE orders_product (id integer)")  # in the way of orders.0001_initial
    release = run_release(process_env(DATABASE_URL=scratch_database))
    assert release.returncode != 0
    assert 'relation "orders_product" already exists' in release.stderr
