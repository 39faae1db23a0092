"""Expand: the sent-rows clean-up's partial index, built concurrently (no lock on the outbox's writes)."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("mailer", "0007_outbox_claim_indexes"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="outboxmessage",
            index=models.Index(condition=models.Q(("status", "sent")), fields=["sent_at"], name="outbox_sent_at"),
        ),
    ]
