"""Shared fixtures: real PostgreSQL (pytest-django's test database), real Redis, real SMTP."""

import django_rq
import pytest

from core.queues import DEFAULT_QUEUE
from tests import factories
from tests.support.smtp import start_smtp


@pytest.fixture(autouse=True)
def clean_redis():
    """Empty the Redis database of REDIS_URL before each test (tests own that database)."""
    django_rq.get_connection(DEFAULT_QUEUE).flushdb()
    yield


@pytest.fixture(autouse=True)
def smtp_backend(settings):
    """Send through SMTP as in production: Django's test set-up swaps in an in-memory backend."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


@pytest.fixture
def smtp(settings):
    """A recording SMTP server that Django's SMTP backend sends to for this test."""
    recorder, controller = start_smtp()
    settings.EMAIL_HOST, settings.EMAIL_PORT = recorder.host, recorder.port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    yield recorder
    controller.stop()


@pytest.fixture
def product(db):
    """A product on sale for €12.00 (1200 minor units of EUR)."""
    return factories.product()
