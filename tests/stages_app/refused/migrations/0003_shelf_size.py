"""Contract, unmarked: a NOT NULL column without a database default (the one-off default is dropped
once the rows have it), which the release still running does not write: its inserts would fail."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("stages_app", "0002_shelf_note")]

    operations = [
        migrations.AddField(
            model_name="shelf", name="size", field=models.PositiveIntegerField(default=1), preserve_default=False
        ),
    ]
