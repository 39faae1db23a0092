"""Expand: add a nullable column to orders_order (version A keeps working against it)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("orders", "0007_order_request_id")]

    operations = [
        # A state-only copy of orders.Order (no SQL): the operation below alters its table.
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
    ]
