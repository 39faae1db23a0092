"""Contract: make ``gift_note`` required, once no process of version A is left.

Django backfills the NULLs A wrote and sets NOT NULL: A, which inserts orders without the column,
would fail on every checkout after it. Marked ``contract = True``, so the release phase leaves it
to the post-deploy step (manage.py migrate --contract).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    contract = True

    dependencies = [("version_b_app", "0002_hold")]

    operations = [
        migrations.AlterField(model_name="order", name="gift_note", field=models.TextField(default="")),
    ]
