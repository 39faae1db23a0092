"""Add a nullable column to orders_order: the ALTER needs ACCESS EXCLUSIVE on the table.

``RELEASE_APP_HOLD_SECONDS`` (test knob, default 0) keeps the migration's transaction, and so its
lock, open that long after the ALTER, so two releases started at once overlap for certain.
"""

import os

from django.db import migrations


def hold(apps, schema_editor):
    seconds = float(os.environ.get("RELEASE_APP_HOLD_SECONDS", "0"))
    if seconds:
        schema_editor.execute("SELECT pg_sleep(%s)", [seconds])


class Migration(migrations.Migration):
    dependencies = [("orders", "0002_demo_catalogue")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE orders_order ADD COLUMN release_note text NULL",
            reverse_sql="ALTER TABLE orders_order DROP COLUMN release_note",
        ),
        migrations.RunPython(hold, migrations.RunPython.noop),
    ]
