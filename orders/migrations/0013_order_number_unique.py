"""Contract (the post-deploy step): Order.number unique, by an index built concurrently.

Every order has a number by now (0010 numbered the existing ones, and the sequence's default
numbers each new one, whatever release inserts it), and a sequence never gives a value twice, so
the previous release cannot break this rule; but a unique index on an existing table is a step the
release phase's check counts as contract (processes/stages.py), and it runs after the rollout.
"""

from django.db import migrations, models

import orders.models


class Migration(migrations.Migration):
    atomic = False
    contract = True  # the post-deploy step applies it (docs/releases.md#expand-and-contract)

    dependencies = [
        ("orders", "0012_staff_actions"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="order",
                    name="number",
                    field=models.BigIntegerField(
                        db_default=orders.models.NextVal("orders_order_number_seq"),
                        editable=False,
                        help_text="Order number.",
                        null=True,
                        unique=True,
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS orders_order_number_key ON orders_order (number)",
                    "DROP INDEX CONCURRENTLY IF EXISTS orders_order_number_key",
                ),
            ],
        ),
    ]
