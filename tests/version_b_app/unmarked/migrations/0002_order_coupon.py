"""An unmarked contract step: a required column, as ``makemigrations`` writes it.

NOT NULL with a one-off default that is dropped at once (``preserve_default=False``): version A
inserts orders without the column, so every checkout of A would fail once it is applied. Not
marked ``contract = True``: the release phase must refuse it.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("version_b_app", "0001_order_gift_note")]

    operations = [
        migrations.AddField(
            model_name="order",
            name="coupon",
            field=models.CharField(max_length=32, default="none"),
            preserve_default=False,
        ),
    ]
