"""Expand: orders get a short number from a sequence (Order.number, "F-1001").

The column is added without a default (no table rewrite: a volatile default such as nextval()
would rewrite the table under an ACCESS EXCLUSIVE lock), then given the sequence as its
default, which numbers every order inserted from then on, by any release. Existing orders are
numbered oldest first in batches, each its own transaction, so that no batch holds the row locks
of orders that workers are processing. Not atomic for that reason. Its unique index comes in the
contract migration 0013.
"""

from django.db import migrations, models

import orders.models

SEQUENCE = "orders_order_number_seq"
BATCH = 5000


def number_existing(apps, schema_editor):
    connection = schema_editor.connection
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE orders_order SET number = numbered.number FROM ("
                f" SELECT id, nextval('{SEQUENCE}') AS number FROM ("
                f"  SELECT id FROM orders_order WHERE number IS NULL ORDER BY created_at, id LIMIT %s FOR UPDATE"
                f" ) AS batch"
                f") AS numbered WHERE orders_order.id = numbered.id",
                [BATCH],
            )
            if cursor.rowcount < BATCH:
                return


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("orders", "0009_db_clock_defaults"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddField(
                    model_name="order",
                    name="number",
                    field=models.BigIntegerField(
                        db_default=orders.models.NextVal(SEQUENCE),
                        editable=False,
                        help_text="Order number.",
                        null=True,
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE} START WITH 1001",
                    f"DROP SEQUENCE IF EXISTS {SEQUENCE}",
                ),
                migrations.RunSQL(
                    "ALTER TABLE orders_order ADD COLUMN IF NOT EXISTS number bigint NULL",
                    "ALTER TABLE orders_order DROP COLUMN IF EXISTS number",
                ),
                migrations.RunSQL(
                    f"ALTER TABLE orders_order ALTER COLUMN number SET DEFAULT nextval('{SEQUENCE}');"
                    f" ALTER SEQUENCE {SEQUENCE} OWNED BY orders_order.number",
                    migrations.RunSQL.noop,
                ),
            ],
        ),
        migrations.RunPython(number_existing, migrations.RunPython.noop, atomic=False),
    ]
