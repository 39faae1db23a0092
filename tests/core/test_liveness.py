"""Liveness and readiness of the non-web process types (core/liveness.py), on their METRICS_PORT
server: ``/health`` follows the loop's own heartbeat and nothing else, ``/ready`` the backing
services. The Procfile's own processes are probed in tests/process/test_liveness.py."""

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from core import liveness
from core.liveness import Probes, database_problem, redis_problem
from core.metrics import metrics_serve
from embedded.servers import free_port
from tests.support.metrics import scrape

TOKEN = "test-metrics-token-0123456789"


def get(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def served(settings):
    """Serve a process's metrics and probes (a failing "redis" check, a passing "database" one) with
    METRICS_TOKEN set; yield the server's base URL."""
    settings.METRICS_PORT, settings.METRICS_ADDR, settings.METRICS_TOKEN = free_port(), "127.0.0.1", TOKEN
    probes = Probes(
        process_type="test", max_age=5, checks={"database": lambda: None, "redis": lambda: "ConnectionError: refused"}
    )
    server = metrics_serve(process_type="test", probes=probes)
    yield f"http://127.0.0.1:{settings.METRICS_PORT}"
    server.shutdown()
    server.server_close()


def test_health_answers_200_while_the_loop_beats_without_the_token(served):
    liveness.beat()
    status, body = get(f"{served}/health")
    assert status == 200
    answer = json.loads(body)
    assert (answer["status"], answer["process_type"], answer["max_age_seconds"]) == ("ok", "test", 5)
    assert answer["heartbeat_age_seconds"] < 5
    assert get(f"{served}/health", method="HEAD") == (200, b"")
    # The metrics keep their token.
    assert scrape(f"{served}/metrics")[0] == 401
    assert scrape(f"{served}/metrics", token=TOKEN)[0] == 200


def test_health_answers_503_once_the_heartbeat_is_older_than_its_limit(served, monkeypatch):
    monkeypatch.setattr(liveness, "_last_beat", time.monotonic() - 6)
    status, body = get(f"{served}/health")
    assert status == 503
    assert json.loads(body)["status"] == "stuck"
    liveness.beat()
    assert get(f"{served}/health")[0] == 200


def test_ready_names_the_backing_service_that_failed(served):
    status, body = get(f"{served}/ready")
    assert status == 503
    assert json.loads(body) == {
        "status": "unavailable",
        "checks": {"database": "ok", "redis": "ConnectionError: refused"},
    }


def test_a_check_that_raises_counts_as_failed_in_one_line():
    def broken():
        raise RuntimeError("first line\nsecond line")

    assert Probes(process_type="test", max_age=1, checks={"redis": broken}).readiness() == (
        503,
        {"status": "unavailable", "checks": {"redis": "RuntimeError: first line"}},
    )


@pytest.mark.django_db(transaction=True)
def test_the_readiness_checks_ask_the_services_themselves(settings):
    assert database_problem() is None
    assert redis_problem() is None
    settings.REDIS_URL = "redis://127.0.0.1:9/0?socket_connect_timeout=0.5"
    assert redis_problem().startswith("ConnectionError")


def test_the_readiness_check_of_redis_gives_up_on_a_server_that_never_answers(settings):
    """A listener that accepts and never answers (a frozen Redis): the check ends within its timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    settings.REDIS_URL = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    settings.REDIS_CONNECT_TIMEOUT = 0.5
    started = time.monotonic()
    try:
        assert redis_problem().startswith("TimeoutError")
    finally:
        listener.close()
    assert time.monotonic() - started < 3
