"""The test app tests.release_app, whose one migration adds a nullable column to orders_order
(ALTER TABLE needs ACCESS EXCLUSIVE on it), as a real release would: what of it is applied."""

from django.db import connection

# The settings of release processes that have it: the project's plus tests.release_app.
RELEASE_SETTINGS = "tests.settings_release"
MIGRATION = ("release_app", "0001_order_release_note")


def column_count() -> int:
    """Return how many ``release_note`` columns orders_order has (0 or 1)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'orders_order' AND column_name = 'release_note'"
        )
        return cursor.fetchone()[0]


def recorded() -> int:
    """Return how many times the test migration is recorded as applied."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_migrations WHERE app = %s AND name = %s", list(MIGRATION))
        return cursor.fetchone()[0]
