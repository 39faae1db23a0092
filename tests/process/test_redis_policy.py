"""Redis with a maxmemory-policy other than noeviction evicts RQ's queue and jobs under memory
pressure (RQ's docs; rq/rq#1280): the worker and scheduler refuse to start, saying so in one line,
and web's readiness fails naming the setting."""

import json

import pytest
import redis

from embedded.polling import wait_until
from embedded.shopper import Browser
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]


def answers(browser: Browser, path: str) -> bool:
    try:
        return browser.request(path)[0] == 200
    except OSError:
        return False


@pytest.fixture
def evicting_redis(own_redis):
    redis.Redis.from_url(own_redis.url).config_set("maxmemory-policy", "allkeys-lru")
    return own_redis


@pytest.mark.parametrize("kind", ["worker", "scheduler"])
def test_worker_and_scheduler_refuse_an_evicting_redis(formation, evicting_redis, kind):
    process = formation.start(kind, wait=False)
    assert process.wait(deadline=30) != 0
    lines = [line for line in process.output().splitlines() if "maxmemory-policy" in line]
    assert lines, process.output()
    assert "allkeys-lru" in lines[-1] and "noeviction" in lines[-1]


def test_web_readiness_names_the_policy(formation, evicting_redis):
    web = formation.start("web", wait=False)  # "ready" is what is under test
    browser = Browser(f"http://127.0.0.1:{web.env['PORT']}")
    wait_until(lambda: answers(browser, "/health"), deadline=30, message="web to serve /health")
    status, _, body = browser.request("/ready")
    assert status == 503
    assert "maxmemory-policy is allkeys-lru" in json.loads(body)["checks"]["redis"]
