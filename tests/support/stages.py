"""The test app tests.stages_app (its migration sets: tests/stages_app/__init__.py) in a database:
what of it is there, and dropping it."""

APP = "stages_app"
TABLE = "stages_app_shelf"
# Its migrations in both sets, in order, and the one only the ``marked`` set has.
INITIAL, NOTE, SIZE = "0001_initial", "0002_shelf_note", "0003_shelf_size"
COLOUR = "0004_shelf_colour"


def shelf_columns(connection) -> list[str]:
    """Return the columns of stages_app_shelf in ``connection``'s database, in order ([] without the table)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
            [TABLE],
        )
        return [name for (name,) in cursor.fetchall()]


def recorded(connection) -> list[str]:
    """Return the migrations of stages_app recorded as applied in ``connection``'s database, in order."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM django_migrations WHERE app = %s ORDER BY name", [APP])
        return [name for (name,) in cursor.fetchall()]


def stages_app_drop(connection) -> None:
    """Drop stages_app_shelf and forget stages_app's migrations in ``connection``'s database."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cursor.execute("DELETE FROM django_migrations WHERE app = %s", [APP])
