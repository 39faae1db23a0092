"""Expand: add to orders_order a nullable column and one with a database default.

Version A inserts orders without naming either column: PostgreSQL stores NULL in ``gift_note``
and 'web' in ``channel`` (Django 5's ``db_default``), so A keeps working against this schema.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("orders", "0007_order_request_id")]

    operations = [
        # A state-only copy of orders.Order (no SQL): the operations below alter its table.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Order",
                    fields=[("id", models.UUIDField(primary_key=True, serialize=False))],
                    options={"db_table": "orders_order"},
                ),
            ],
        ),
        migrations.AddField(model_name="order", name="gift_note", field=models.TextField(null=True)),
        migrations.AddField(
            model_name="order",
            name="channel",
            field=models.CharField(max_length=16, default="web", db_default="web"),
        ),
    ]
