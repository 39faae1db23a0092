"""Expand: fulfilment on orders (shipped_at nullable, tracking_reference with a database default)
and a new table of staff requests (StaffRequest: one row per form sent, so sending it twice acts
once). Nothing the previous release reads or writes changes."""

import django.db.models.deletion
import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0011_product_image"),
    ]

    operations = [
        migrations.AddField(
            model_name="order",
            name="shipped_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="order",
            name="tracking_reference",
            field=models.CharField(blank=True, db_default="", default="", editable=False, max_length=100),
        ),
        migrations.CreateModel(
            name="StaffRequest",
            fields=[
                ("token", models.UUIDField(editable=False, primary_key=True, serialize=False)),
                ("kind", models.CharField(max_length=20)),
                (
                    "created_at",
                    models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), editable=False),
                ),
                (
                    "order",
                    models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="orders.order"),
                ),
            ],
        ),
    ]
