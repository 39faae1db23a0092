"""Shared fixtures: real PostgreSQL (pytest-django's test database), real Redis, real SMTP.

The fixtures every package may use are here and in the modules of tests/fixtures/, which
``pytest_plugins`` below registers for the whole suite (pytest allows it in this top-level
conftest only): ``smtp`` and the autouse ``smtp_backend`` (tests.fixtures.smtp); ``formation``,
``formation_env`` and ``own_redis`` (tests.fixtures.formation); ``stages_app``, the test app with
migrations (tests.fixtures.stages); ``release_env``, the release's environment with tests.release_app
(tests.fixtures.release); ``pgbouncer_url`` and ``pooled_env``, the test database through a real
PgBouncer (tests.fixtures.pooling). A package's own conftest.py keeps
what only its tests use. Helpers are in tests/support/, saved rows come from tests/factories.py.
"""

import django_rq
import pytest

from core.queues import DEFAULT_QUEUE
from tests import factories
from tests.support.read_only import read_only  # noqa: F401 (a fixture for every test module)

pytest_plugins = [
    "tests.fixtures.smtp",
    "tests.fixtures.formation",
    "tests.fixtures.stages",
    "tests.fixtures.release",
    "tests.fixtures.pooling",
]


@pytest.fixture(autouse=True)
def clean_redis():
    """Empty the Redis database of REDIS_URL before each test (tests own that database)."""
    django_rq.get_connection(DEFAULT_QUEUE).flushdb()
    yield


@pytest.fixture
def product(db):
    """A product on sale for €12.00 (1200 minor units of EUR)."""
    return factories.product()
