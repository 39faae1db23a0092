"""Expand, after the contract migration it depends on: it waits with 0003 for the post-deploy step,
and once 0003 is applied everywhere it is an expand migration like any other."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("stages_app", "0003_shelf_size")]

    operations = [
        migrations.AddField(model_name="shelf", name="colour", field=models.CharField(max_length=20, null=True)),
    ]
