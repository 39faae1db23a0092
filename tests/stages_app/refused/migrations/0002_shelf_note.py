"""Expand: a nullable column, which the release still running never writes and never misses."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("stages_app", "0001_initial")]

    operations = [
        migrations.AddField(model_name="shelf", name="note", field=models.CharField(max_length=20, null=True)),
    ]
