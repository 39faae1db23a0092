"""RQ jobs of the mailer app: thin interfaces to one service each."""

from mailer.services import outbox_delete_sent, outbox_release_expired_leases


def release_expired_leases() -> int:
    """Make outbox rows whose lease expired due again; return how many (periodic job)."""
    return outbox_release_expired_leases()


def delete_sent() -> int:
    """Delete sent outbox rows older than settings.MAILER_SENT_RETENTION_DAYS; return how many (periodic job)."""
    return outbox_delete_sent()
