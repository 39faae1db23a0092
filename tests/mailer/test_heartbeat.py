"""``probe mailer``'s default age limit covers one message's bounded SMTP exchange."""

import io
import os
import socket
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from mailer.models import MailerHeartbeat

pytestmark = pytest.mark.django_db(transaction=True)


def beat(age: float) -> None:
    now = timezone.now()
    MailerHeartbeat.objects.update_or_create(
        name="probe-test",
        defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": now - timedelta(hours=1),
            "beat_at": now - timedelta(seconds=age),
        },
    )


def probe_mailer(*args: str) -> str:
    out = io.StringIO()
    call_command("probe", "mailer", *args, stdout=out)
    return out.getvalue()


def test_default_max_age_is_the_lease_plus_the_heartbeat_interval(settings):
    settings.EMAIL_TIMEOUT, settings.MAILER_LEASE_SECONDS, settings.MAILER_HEARTBEAT_SECONDS = 10, 60, 5
    # A working mailer may spend 6 x EMAIL_TIMEOUT = 60 s in one message after a beat.
    beat(age=6 * settings.EMAIL_TIMEOUT + 1)
    assert probe_mailer().startswith("mailer: 1 live")
    beat(age=settings.MAILER_LEASE_SECONDS + settings.MAILER_HEARTBEAT_SECONDS + 1)
    with pytest.raises(CommandError, match="no live process"):
        probe_mailer()
    assert probe_mailer("--max-age", "3600").startswith("mailer: 1 live")
