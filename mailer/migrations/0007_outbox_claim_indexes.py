"""Expand: the mailer claim's partial indexes, built concurrently (no lock on the outbox's writes)."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("mailer", "0006_outbox_log_context"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="outboxmessage",
            index=models.Index(
                condition=models.Q(("status", "pending")), fields=["due_at", "id"], name="outbox_pending_due"
            ),
        ),
        AddIndexConcurrently(
            model_name="outboxmessage",
            index=models.Index(
                condition=models.Q(("status", "sending")),
                fields=["lease_expires_at", "id"],
                name="outbox_sending_lease",
            ),
        ),
    ]
